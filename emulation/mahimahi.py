"""The mahimahi link: Mahimahi's own ``mm-delay`` and ``mm-link`` shells, as Pensieve ran them.

The command line is ``mm-delay D mm-link UPLINK DOWNLINK [queue options] -- sh -c ... COMMAND``:
mm-delay outside (D ms each way), mm-link inside, both traces in Mahimahi format (1504 bytes per
listed millisecond; the trace repeats). A bounded queue becomes mm-link's ``droptail`` queue on
both directions. The small ``sh -c`` wrapper exports ``$STREAMBED_HOST`` as mm-link's
``$MAHIMAHI_BASE`` (the host as seen from inside) and then execs the command, whose exit
status mm-link returns.

Mahimahi is Ubuntu's ``mahimahi`` package (in Streambed's Docker image); it is not a Python
dependency, so ``require_mahimahi`` says clearly when it is absent.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

from streambed.core.errors import ConfigError

TOOLS = ("mm-delay", "mm-link")

# POSIX sh: export the base address under Streambed's name, then become the command.
_WRAPPER = 'STREAMBED_HOST="${MAHIMAHI_BASE:-$STREAMBED_HOST}"; export STREAMBED_HOST; exec "$@"'


def mahimahi_missing() -> list[str]:
    """The Mahimahi programs not found on PATH."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def require_mahimahi() -> None:
    missing = mahimahi_missing()
    if missing:
        raise ConfigError(
            f"the mahimahi link needs {' and '.join(missing)} on PATH, not found; install "
            "Mahimahi (Ubuntu: apt-get install mahimahi; else scripts/install-mahimahi.sh) or "
            "use --kind netns (root) or --kind proxy"
        )
    if os.geteuid() == 0:
        # mm-delay checks the real uid and exits ("please run as non-root"): say it up front,
        # so that "auto" moves on to a kind that runs here.
        raise ConfigError(
            "the mahimahi link cannot run as root (Mahimahi's tools refuse it): run streambed "
            "as an unprivileged user, or use --kind netns (root) or --kind proxy"
        )


def _format_delay(delay_ms: float) -> str:
    if delay_ms != int(delay_ms):
        raise ConfigError(f"delay_ms={delay_ms}: mm-delay takes whole milliseconds")
    return str(int(delay_ms))


def mahimahi_argv(
    argv: Sequence[str],
    downlink_mm: str,
    uplink_mm: str,
    delay_ms: float = 0.0,
    queue_packets: int | None = None,
    queue_bytes: int | None = None,
) -> list[str]:
    """The full command line that runs ``argv`` behind mm-delay and mm-link."""
    queue: list[str] = []
    if queue_packets is not None or queue_bytes is not None:
        args = ",".join(
            f"{key}={value}"
            for key, value in (("packets", queue_packets), ("bytes", queue_bytes))
            if value is not None
        )
        for direction in ("uplink", "downlink"):
            queue += [f"--{direction}-queue=droptail", f"--{direction}-queue-args={args}"]
    return [
        "mm-delay",
        _format_delay(delay_ms),
        "mm-link",
        uplink_mm,
        downlink_mm,
        *queue,
        "--",
        "sh",
        "-c",
        _WRAPPER,
        "streambed-link",
        *argv,
    ]
