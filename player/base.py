"""What both players share: a session's configuration, its outcome and its files.

The headless player (:mod:`streambed.player.session`) and dash.js in Chromium
(:mod:`streambed.player.browser`) both build on this module; neither imports the other's
definitions, so ``session`` may hand a ``dashjs`` config to ``browser`` without an import cycle.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from streambed.abr_service.qoe import QOE_NAMES
from streambed.abr_service.video import FIRST_QUALITY
from streambed.abr_service.wire import SESSION_ID_PATTERN
from streambed.core.errors import ConfigError
from streambed.core.fileio import atomic_write_bytes
from streambed.reports.rundir import CHUNKS_JSONL, PENSIEVE_LOG, SESSION_JSON
from streambed.reports.sessionlog import ChunkRecord, write_pensieve_log

EXIT_DONE = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_ORIGIN = 3
EXIT_NO_SERVICE = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

SESSION_FORMAT = "streambed-play/1"
PLAYERS = ("streambed", "dashjs")
"""The players a session can be played by (``PlayerConfig.player``)."""
UNKNOWN_ALGORITHM = "service-default"
"""The records' ``algorithm`` when none was configured and the service never named one."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by the CLI's handler so the session's files are
    finished before the process exits."""


@dataclass(frozen=True)
class PlayerConfig:
    """What one session plays, where it asks, and how it behaves (units in the names)."""

    mpd_url: str
    """The MPD's absolute http(s) URL."""
    abr_url: str
    """Base URL of the decision service (``POST {abr_url}/decide``)."""
    algorithm: str | None = None
    """Algorithm asked of the service (None: the service's default)."""
    video: str | None = None
    """Video name in the service's catalogue (None: its default)."""
    params: dict[str, str | int | float | bool] | None = None
    """Algorithm parameters sent to the service."""
    session_id: str | None = None
    """Session id at the service and in the log (None: ``play-`` and 12 random hex digits)."""
    run_id: str = ""
    """Tag written into every record."""
    trace: str = ""
    """Trace name written into every record (the network the session runs over)."""
    buffer_cap_s: float = 60.0
    """Above this buffer the player waits before the next request."""
    sleep_step_s: float = 0.5
    """The wait is a whole number of these steps."""
    decision_timeout_s: float = 1.0
    """Limit on each phase (connect, send, answer) of a decision request."""
    first_quality: int = FIRST_QUALITY
    """Level of chunk 0 when the player decides it itself (the service's default too)."""
    max_chunks: int | None = None
    """Stop after this many chunks (None: the whole MPD)."""
    qoe: str = "lin"
    """QoE metric of the records' ``qoe`` (lin, log, hd)."""
    download_attempts: int = 3
    """Attempts per download (MPD, init, chunk) before the session gives up."""
    retry_backoff_s: float = 0.25
    """Wait before the second attempt; doubled before each further one."""
    origin_timeout_s: float = 30.0
    """Limit on each phase of an origin request (connect, each read), seconds."""
    log_dir: Path | None = None
    """Directory for chunks.jsonl, pensieve.log and session.json (None: no files)."""
    player: str = "streambed"
    """Which player plays the session: ``streambed`` (this headless player) or ``dashjs``
    (dash.js in headless Chromium, :func:`streambed.player.browser.play_browser`)."""

    def __post_init__(self) -> None:
        for name in ("mpd_url", "abr_url"):
            url = urlsplit(getattr(self, name))
            if url.scheme not in ("http", "https") or not url.netloc:
                raise ConfigError(f"{name} {getattr(self, name)!r}: need an http(s):// URL")
        if self.session_id is not None and not re.match(SESSION_ID_PATTERN, self.session_id):
            raise ConfigError(f"session id {self.session_id!r}: 1-128 of A-Z a-z 0-9 . _ : @ -")
        positive = ("buffer_cap_s", "sleep_step_s", "decision_timeout_s", "origin_timeout_s")
        for name in positive:
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name}={value}: must be a positive number")
        if self.buffer_cap_s < self.sleep_step_s:
            # A wait of whole steps could then overshoot the cap down into a stall.
            raise ConfigError(
                f"buffer_cap_s={self.buffer_cap_s} must be at least sleep_step_s="
                f"{self.sleep_step_s}"
            )
        if not (self.retry_backoff_s >= 0 and math.isfinite(self.retry_backoff_s)):
            raise ConfigError(f"retry_backoff_s={self.retry_backoff_s}: must be >= 0")
        if self.download_attempts < 1:
            raise ConfigError(f"download_attempts={self.download_attempts}: must be >= 1")
        if self.max_chunks is not None and self.max_chunks < 1:
            raise ConfigError(f"max_chunks={self.max_chunks}: must be >= 1")
        if self.first_quality < 0:
            raise ConfigError(f"first_quality={self.first_quality}: must be >= 0")
        if self.qoe not in QOE_NAMES:
            raise ConfigError(f"qoe {self.qoe!r}: choose {', '.join(QOE_NAMES)}")
        if self.player not in PLAYERS:
            raise ConfigError(f"player {self.player!r}: choose {', '.join(PLAYERS)}")


@dataclass(frozen=True)
class SessionResult:
    session_id: str
    status: str
    """done, failed, interrupted or error (see the module docstring)."""
    exit_code: int
    reason: str | None
    """Why the session did not finish (None when done)."""
    records: list[ChunkRecord] = field(repr=False)
    summary: dict[str, Any] = field(repr=False)
    """What ``session.json`` holds."""
    log_dir: Path | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == EXIT_DONE


def new_session_id() -> str:
    return f"play-{uuid.uuid4().hex[:12]}"


class SessionFiles:
    """The session's files; the chunk log is appended and flushed line by line."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._chunks = open(self.directory / CHUNKS_JSONL, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise ConfigError(f"log directory {directory}: cannot write: {exc}") from None

    def append(self, record: ChunkRecord) -> None:
        self._chunks.write(record.to_json() + "\n")
        self._chunks.flush()

    def write_summary(self, summary: dict[str, Any]) -> None:
        text = json.dumps(summary, indent=1, allow_nan=False) + "\n"
        atomic_write_bytes(self.directory / SESSION_JSON, text.encode())

    def close(self, records: list[ChunkRecord]) -> None:
        self._chunks.close()
        write_pensieve_log(records, self.directory / PENSIEVE_LOG)


def link_from_env(t0: float) -> dict[str, Any] | None:
    """The emulated link this process runs behind, from what ``streambed.emulation.link`` exports (None
    outside one): ``kind``, ``host``, ``epoch_monotonic_s`` (the trace's time 0, from
    ``$STREAMBED_LINK_EPOCH_FILE`` or ``$STREAMBED_LINK_EPOCH``; null for mahimahi, and before
    the session's first request on a first-packet link: call it when the session ends) and ``trace_offset_s``: the trace position, in seconds
    (not wrapped at the trace's period), of the session clock's zero ``t0``, so that a record's
    time ``t`` happened at trace time ``t + trace_offset_s``."""
    kind = os.environ.get("STREAMBED_LINK_KIND")
    if not kind:
        return None
    epoch: float | None = None
    with contextlib.suppress(KeyError, ValueError):
        epoch = float(os.environ["STREAMBED_LINK_EPOCH"])
    epoch_file = os.environ.get("STREAMBED_LINK_EPOCH_FILE")
    if epoch_file:  # written when the trace started: the session's first packet
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            epoch = float(json.loads(Path(epoch_file).read_text())["epoch"])
    return {
        "kind": kind,
        "host": os.environ.get("STREAMBED_HOST"),
        "epoch_monotonic_s": epoch,
        "trace_offset_s": None if epoch is None else t0 - epoch,
    }
