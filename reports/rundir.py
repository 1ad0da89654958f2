"""The run-directory layout, defined once: every file and folder name that ``streambed eval``,
``streambed emulate``, ``streambed play --log`` and the simulation-vs-emulation comparison write.

A run directory (eval and emulate write the same one)::

    summary.json            per-algorithm means (reports.summary)
    per_trace.csv           one row per (algorithm, trace) session
    failed.json             sessions that failed (emulate; absent after eval)
    repeats.csv             run-to-run spread per (algorithm, trace) (emulate --repeat R > 1)
    qoe_cdf.png, bitrate_vs_rebuffer.png
    sim_vs_emu.csv/.json/.png   the comparison, when one was made
    logs/<algorithm>/log_<algorithm>_<trace>     Pensieve's log of a session
    sessions/<algorithm>/<trace>/               one session's directory (SessionDir):
        chunks.jsonl        one ChunkRecord per line
        session.json        the player's description and status (emulated sessions)
        pensieve.log        the player's own Pensieve log (emulated sessions)
        browser.jsonl       the browser player's events (dash.js sessions)
        play.log            the player's output (emulated sessions)
    links.csv               one row per shared link (emulate --clients-per-link N > 1)
    links/<link>/                               one shared link's directory (LinkDir):
        link.json           its players (session dirs), trace, kind, cross traffic, counters
        group.json          the player group's spec and each player's exit status
        delivery.log        the downlink's per-packet log (mm-link --downlink-log format)
        cross.json          the cross-traffic downloader's bytes and times
        timeline.pdf        the trace, each player's bitrate/throughput and the queue
        group.log           the group's output

With players sharing a link, a player's session is ``sessions/<algorithm>/<trace>-p<i>[-rR]/``
(``i`` from 1: its place on the link), so the per-session report reads it as any other.

Before issue 18, eval wrote a session's records to ``sessions/<algorithm>/<trace>.jsonl``;
:meth:`RunDir.chunk_records` still finds those.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SUMMARY_JSON = "summary.json"
PER_TRACE_CSV = "per_trace.csv"
FAILED_JSON = "failed.json"
SESSIONS_DIR = "sessions"
LOGS_DIR = "logs"
QOE_CDF_PNG = "qoe_cdf.png"
BITRATE_VS_REBUFFER_PNG = "bitrate_vs_rebuffer.png"
SIM_VS_EMU_CSV = "sim_vs_emu.csv"
SIM_VS_EMU_JSON = "sim_vs_emu.json"
SIM_VS_EMU_PNG = "sim_vs_emu.png"
REPEATS_CSV = "repeats.csv"
LINKS_CSV = "links.csv"
LINKS_DIR = "links"
LINK_JSON = "link.json"
GROUP_JSON = "group.json"
DELIVERY_LOG = "delivery.log"
CROSS_JSON = "cross.json"
TIMELINE_PDF = "timeline.pdf"
GROUP_LOG = "group.log"

CHUNKS_JSONL = "chunks.jsonl"
SESSION_JSON = "session.json"
PENSIEVE_LOG = "pensieve.log"
BROWSER_EVENTS_JSONL = "browser.jsonl"
PLAY_LOG = "play.log"

LEGACY_SESSION_SUFFIX = ".jsonl"
"""Eval's old layout: ``sessions/<algorithm>/<trace>.jsonl`` (read, never written)."""


def pensieve_log_name(algorithm: str, trace: str) -> str:
    """Pensieve's name for a session's log (``log_<algorithm>_<trace>``)."""
    return f"log_{algorithm}_{trace}"


@dataclass(frozen=True)
class SessionDir:
    """One session's directory: ``sessions/<algorithm>/<trace>/`` of a run, or ``play --log``."""

    path: Path

    @property
    def chunks_jsonl(self) -> Path:
        return self.path / CHUNKS_JSONL

    @property
    def session_json(self) -> Path:
        return self.path / SESSION_JSON

    @property
    def pensieve_log(self) -> Path:
        return self.path / PENSIEVE_LOG

    @property
    def browser_events(self) -> Path:
        return self.path / BROWSER_EVENTS_JSONL

    @property
    def play_log(self) -> Path:
        return self.path / PLAY_LOG


def player_label(trace: str, index: int, repeat: int | None = None) -> str:
    """A shared link's player's session label: ``<trace>-p<index>[-r<repeat>]`` (1-based)."""
    return f"{trace}-p{index}" + ("" if repeat is None else f"-r{repeat}")


@dataclass(frozen=True)
class LinkDir:
    """One shared link's directory: ``links/<link>/`` of a run."""

    path: Path

    @property
    def link_json(self) -> Path:
        return self.path / LINK_JSON

    @property
    def group_json(self) -> Path:
        return self.path / GROUP_JSON

    @property
    def delivery_log(self) -> Path:
        return self.path / DELIVERY_LOG

    @property
    def cross_json(self) -> Path:
        return self.path / CROSS_JSON

    @property
    def timeline_pdf(self) -> Path:
        return self.path / TIMELINE_PDF

    @property
    def group_log(self) -> Path:
        return self.path / GROUP_LOG


@dataclass(frozen=True)
class RunDir:
    """One run directory (an eval or emulate output); every path is derived here."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def summary_json(self) -> Path:
        return self.path / SUMMARY_JSON

    @property
    def per_trace_csv(self) -> Path:
        return self.path / PER_TRACE_CSV

    @property
    def failed_json(self) -> Path:
        return self.path / FAILED_JSON

    @property
    def repeats_csv(self) -> Path:
        return self.path / REPEATS_CSV

    @property
    def sessions_dir(self) -> Path:
        return self.path / SESSIONS_DIR

    @property
    def logs_dir(self) -> Path:
        return self.path / LOGS_DIR

    @property
    def qoe_cdf_png(self) -> Path:
        return self.path / QOE_CDF_PNG

    @property
    def bitrate_vs_rebuffer_png(self) -> Path:
        return self.path / BITRATE_VS_REBUFFER_PNG

    @property
    def sim_vs_emu_csv(self) -> Path:
        return self.path / SIM_VS_EMU_CSV

    @property
    def sim_vs_emu_json(self) -> Path:
        return self.path / SIM_VS_EMU_JSON

    @property
    def sim_vs_emu_png(self) -> Path:
        return self.path / SIM_VS_EMU_PNG

    @property
    def links_csv(self) -> Path:
        return self.path / LINKS_CSV

    @property
    def links_dir(self) -> Path:
        return self.path / LINKS_DIR

    def link(self, label: str) -> LinkDir:
        return LinkDir(self.links_dir / label)

    def algorithm_dir(self, algorithm: str) -> Path:
        return self.sessions_dir / algorithm

    def session(self, algorithm: str, trace: str) -> SessionDir:
        return SessionDir(self.algorithm_dir(algorithm) / trace)

    def session_dir(self, algorithm: str, trace: str) -> Path:
        return self.session(algorithm, trace).path

    def pensieve_log(self, algorithm: str, trace: str) -> Path:
        return self.logs_dir / algorithm / pensieve_log_name(algorithm, trace)

    def legacy_chunks_jsonl(self, algorithm: str, trace: str) -> Path:
        """Where eval wrote a session's records before the layouts were unified."""
        return self.algorithm_dir(algorithm) / f"{trace}{LEGACY_SESSION_SUFFIX}"

    def chunk_records(self, algorithm: str, trace: str) -> Path | None:
        """The session's chunk-record file in the current or the old layout (None: neither)."""
        for candidate in (
            self.session(algorithm, trace).chunks_jsonl,
            self.legacy_chunks_jsonl(algorithm, trace),
        ):
            if candidate.is_file():
                return candidate
        return None
