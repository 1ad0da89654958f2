"""The ``streambed play`` command line for a :class:`~streambed.player.session.PlayerConfig`.

:data:`FLAGS` is shared by the command's parser (:mod:`streambed.commands.play`) and by
:func:`play_argv`, which an orchestrator (``streambed emulate``) uses to start a session in a
new process, e.g. behind an emulated link.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from streambed.core.errors import ConfigError

if TYPE_CHECKING:
    from streambed.player.session import PlayerConfig

# flag -> PlayerConfig field, for the flags that pass straight through (also to a re-run
# behind a link).
FLAGS: dict[str, str] = {
    "mpd": "mpd_url",
    "abr": "abr_url",
    "algorithm": "algorithm",
    "video": "video",
    "session_id": "session_id",
    "run_id": "run_id",
    "trace_name": "trace",
    "buffer_cap_s": "buffer_cap_s",
    "sleep_step_s": "sleep_step_s",
    "decision_timeout_s": "decision_timeout_s",
    "first_quality": "first_quality",
    "max_chunks": "max_chunks",
    "qoe": "qoe",
    "attempts": "download_attempts",
    "retry_backoff_s": "retry_backoff_s",
    "origin_timeout_s": "origin_timeout_s",
    "log": "log_dir",
}


def play_argv(
    config: PlayerConfig, *, via_link: bool = True, python: str = sys.executable
) -> list[str]:
    """The command line that plays ``config`` (a ``PlayerConfig`` with a ``log_dir``) in a new
    process, e.g. behind a link (``via_link``: re-point the URLs there)."""
    if config.log_dir is None:
        raise ConfigError("a session run as a command needs a log directory (log_dir)")
    argv = [python, "-m", "streambed", "play"] + (["--via-link"] if via_link else [])
    for flag, field in FLAGS.items():
        value = getattr(config, field)
        if value is not None:
            argv += [f"--{flag.replace('_', '-')}", str(value)]
    for key, value in (config.params or {}).items():
        argv += ["--param", f"{key}={value}"]
    if config.player == "dashjs":
        argv.append("--browser")
    return argv
