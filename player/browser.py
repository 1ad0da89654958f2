"""A session played by a real player: dash.js 5 in headless Chromium (``streambed play --browser``).

``play_browser(config)`` plays ``config.mpd_url`` with the page the origin serves at
``/player.html`` (``player/web``): dash.js with every built-in ABR rule off and Streambed's
remote rule on, which asks ``POST {abr}/decide`` for every segment with the body the headless
player sends (:mod:`streambed.player.decisions`). ``node player/web/drive.mjs`` runs the page in the
system's Chromium through playwright-core (no browser download; no network but the hosts of
the URLs and loopback) and writes every page event as a JSON line; this module turns them into
the headless player's files, so that the same reports read both players:

* ``chunks.jsonl``: one :class:`streambed.reports.sessionlog.ChunkRecord` per segment downloaded, with
  ``player="dashjs"``, ``quality_rendered`` (the level of the frames presented while the
  segment played: by frame size when every level has its own, else dash.js's rendered-quality
  events) and ``dropped_frames``. Times are on the page's clock (seconds from the page's
  start). ``rebuffer_s`` is the stall (the video element's ``waiting`` to ``playing``, after the
  first frame) between the previous segment's last byte and this one's; chunk 0's is its
  start-up time (from its decision request to its last byte), as in the headless player.
  ``sleep_s`` is the gap before the next request when the buffer was at dash.js's target.
  ``fallback`` marks a level not decided by the session's algorithm: the rule's local BBA (the
  service could not answer in time), the service's own fallback (``service: ...``), or a
  segment dash.js fetched at another level than the one decided.
* ``pensieve.log``; ``session.json``: the headless player's keys where they apply, with
  ``player: "dashjs"`` and a ``browser`` object (Chromium and dash.js versions, decisions by
  how they were obtained, start-up, stalls, frames, ``currentTime`` reached, ``ended``, console
  errors and the hosts the browser requested).
* ``browser.jsonl``: the raw page and driver events, written as they are collected; the other
  files are written when the session ends (``session.json`` says ``running`` until then).

What ``PlayerConfig`` sets for dash.js: the session, algorithm, video and params sent to the
service; ``buffer_cap_s`` as dash.js's buffer targets (it requests the next segment below it);
``decision_timeout_s`` as the rule's deadline per decision (counted from when the request was
sent); ``first_quality`` for chunk 0 when the service cannot answer; ``max_chunks``; ``qoe``.
``download_attempts``, ``retry_backoff_s``, ``origin_timeout_s`` and ``sleep_step_s`` do not
apply: dash.js's own retries (3) and segment timeout (20 s) do.

Statuses as the headless player: ``done`` 0; ``failed`` 3 (the page gave up: MPD, segments,
decoding); ``error`` 1 (the browser could not start, crashed or the session timed out);
``interrupted`` 130/143 (files written, the exception re-raised). Missing Node.js, the npm
packages or Chromium is a :class:`streambed.core.errors.ConfigError` naming ``scripts/setup.sh``
and ``streambed play --install-browser``. The page, the rule and the driver are run from the
folder :func:`streambed.server.web.resolve_web_dir` picks, as the origin's page is served from
it: ``player/web`` in a checkout, else the copy ``--install-browser`` made.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx

from streambed.abr_service.qoe import MEASURED, qoe_window
from streambed.core.errors import ConfigError
from streambed.player.base import (
    CHUNKS_JSONL,
    EXIT_DONE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NO_SERVICE,
    EXIT_ORIGIN,
    EXIT_TERMINATED,
    PENSIEVE_LOG,
    SESSION_FORMAT,
    UNKNOWN_ALGORITHM,
    PlayerConfig,
    SessionFiles,
    SessionResult,
    Terminated,
    link_from_env,
    new_session_id,
)
from streambed.player.decisions import json_params
from streambed.player.metric import player_metric, video_json_url
from streambed.reports.rundir import BROWSER_EVENTS_JSONL
from streambed.reports.sessionlog import ChunkRecord
from streambed.reports.summary import session_metrics
from streambed.server.web import (
    INSTALL_COMMAND,
    NODE_PACKAGES,
    PACKAGE_WEB_DIR,
    page_files,
    resolve_web_dir,
)

log = logging.getLogger(__name__)

PLAYER = "dashjs"
WEB_DIR = PACKAGE_WEB_DIR
"""The shipped page, rule and driver (``player/web``); in a checkout ``npm ci`` installs
node_modules there (:func:`streambed.server.web.resolve_web_dir` says which folder is used)."""
DRIVER = "drive.mjs"
SETUP = "scripts/setup.sh"
PAGE_PATH = "/player.html"
EVENTS_JSONL = BROWSER_EVENTS_JSONL
PAGE_FILES_JSON = "page-files.json"
"""Beside the events: what the driver serves from disk for the page (see ``drive.mjs``)."""
DEFAULT_CHROMIUM = "/usr/bin/chromium"
DEFAULT_TIMEOUT_S = 3600.0
"""Limit on a whole browser session, seconds (beyond it: status error)."""
IDLE_TIMEOUT_S = 120.0
"""The driver gives up on a page that records nothing for this long (it records its progress
every 500 ms while alive)."""
STOP_GRACE_S = 15.0
DRIVER_EXIT = {0: "done", 2: "usage", 3: "failed", 4: "timeout", 5: "browser"}
TARGET_SLACK_S = 0.5
"""A gap before the next request counts as a wait at the buffer target when the buffer after
the segment was within this of the target (dash.js requests again below it)."""


# ---------------------------------------------------------------------------------------------
# What the browser needs


def find_chromium(chromium: str | None = None) -> str | None:
    """The Chromium to drive: ``chromium``, ``$STREAMBED_CHROMIUM``, /usr/bin/chromium or one on
    PATH (None when there is none)."""
    for candidate in (chromium, os.environ.get("STREAMBED_CHROMIUM"), DEFAULT_CHROMIUM):
        if candidate:
            found = shutil.which(candidate)
            if found:
                return found
            if chromium is not None:
                return None  # an explicit choice that is not there
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def missing_requirements(
    node: str = "node", chromium: str | None = None, web_dir: Path | None = None
) -> list[str]:
    """What ``play_browser`` lacks here, each with where it was looked for (empty: nothing);
    ``web_dir`` default: the folder ``resolve_web_dir`` picks."""
    missing = []
    if shutil.which(node) is None:
        missing.append(f"Node.js ({node!r} is not on PATH)")
    if web_dir is None:
        try:
            web_dir = resolve_web_dir()
        except ConfigError as exc:
            missing.append(str(exc))
    if web_dir is not None:
        if not (web_dir / DRIVER).is_file():
            missing.append(f"the driver {web_dir / DRIVER}")
        for package in NODE_PACKAGES:
            if not (web_dir / "node_modules" / package / "package.json").is_file():
                missing.append(f"the npm package {package} in {web_dir / 'node_modules'}")
    if find_chromium(chromium) is None:
        missing.append(f"Chromium ({chromium or DEFAULT_CHROMIUM})")
    return missing


def require_browser(node: str = "node", chromium: str | None = None) -> tuple[str, str]:
    """(node, chromium) executables, or ``ConfigError`` naming what is missing and the fix."""
    missing = missing_requirements(node, chromium)
    if missing:
        raise ConfigError(
            f"streambed play --browser needs {'; '.join(missing)}: in a checkout run {SETUP} "
            f"(as root it installs Node.js and npm, then the npm packages with npm ci in "
            f"player/web; {SETUP} --dev, or apt-get install chromium, adds Chromium); from an "
            f"installed package run {INSTALL_COMMAND} (it needs Node.js and npm) and install "
            f"Chromium"
        )
    found_node = shutil.which(node)
    found_chromium = find_chromium(chromium)
    assert found_node is not None and found_chromium is not None
    return found_node, found_chromium


# ---------------------------------------------------------------------------------------------
# The page


def page_url(
    config: PlayerConfig,
    session_id: str,
    page: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> str:
    """The player page's URL for ``config``: ``page`` (default ``/player.html`` on the MPD's
    origin) with the session's settings in its query, and ``extra`` query parameters (e.g.
    ``{"decider": "xhr"}``, see ``player/web/streambed-player.js``)."""
    if page is None:
        parts = urlsplit(config.mpd_url)
        page = urlunsplit((parts.scheme, parts.netloc, PAGE_PATH, "", ""))
    query: dict[str, str] = {
        "mpd": config.mpd_url,
        "abr": config.abr_url,
        "session": session_id,
        "buffer": f"{config.buffer_cap_s:g}",
        "timeout": f"{config.decision_timeout_s:g}",
        "first": str(config.first_quality),
    }
    if config.algorithm is not None:
        query["algorithm"] = config.algorithm
    if config.video is not None:
        query["video"] = config.video
    if config.params:
        query["params"] = json.dumps(json_params(config.params), separators=(",", ":"))
    if config.max_chunks is not None:
        query["max"] = str(config.max_chunks)
    query.update(extra or {})
    return f"{page}?{urlencode(query)}"


def driver_command(
    node: str,
    chromium: str,
    url: str,
    out: Path,
    hosts: Iterable[str],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
    web_dir: Path | None = None,
    page_files: Path | None = None,
) -> list[str]:
    """``node drive.mjs ...`` for one page: events to ``out``, only ``hosts`` reachable; the
    driver from ``web_dir`` (default: the folder ``resolve_web_dir`` picks), whose node_modules
    Node.js resolves its imports from."""
    web = resolve_web_dir() if web_dir is None else web_dir
    cmd = [node, str(web / DRIVER), "--url", url, "--out", str(out)]
    cmd += ["--timeout-s", f"{timeout_s:g}", "--idle-timeout-s", f"{idle_timeout_s:g}"]
    cmd += ["--chromium", chromium]
    for host in sorted(set(hosts)):
        cmd += ["--allow-host", host]
    if page_files is not None:
        cmd += ["--page-files", str(page_files)]
    return cmd


def read_events(path: Path) -> list[dict[str, Any]]:
    """The driver's JSON lines (a last line cut short by a kill is skipped)."""
    events = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            if lineno == len(lines):
                continue
            raise
        if isinstance(event, dict):
            events.append(event)
    return events


# ---------------------------------------------------------------------------------------------
# From the page's events to the session's files


def _num(value: Any, default: float = 0.0) -> float:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else default


class BrowserSession:
    """The page's and the driver's events of one session, read into records and facts."""

    def __init__(self, events: list[dict[str, Any]], config: PlayerConfig, session_id: str):
        self.config = config
        self.session_id = session_id
        self.events = events
        self.video_text = ""
        """The video.json beside the MPD, read before the session (qoe ssim and vmaf only)."""
        by_type: dict[str, list[dict[str, Any]]] = {}
        for event in events:
            by_type.setdefault(str(event.get("type")), []).append(event)
        self.by_type = by_type
        self.start = self._first("start")
        self.manifest = self._first("manifest")
        self.done = self._last("done")
        self.driver_done = next(
            (e for e in reversed(by_type.get("driver", [])) if e.get("what") == "done"), None
        )
        self.launched = next(
            (e for e in by_type.get("driver", []) if e.get("what") == "launched"), None
        )
        self.decisions = {int(e["chunk_index"]): e for e in by_type.get("decision", [])}
        self.sent = {int(e["chunk_index"]): e for e in by_type.get("decide_sent", [])}
        self.answers: dict[int, dict[str, Any]] = {}
        for e in by_type.get("answer", []):
            k = int(e["chunk_index"])
            if e.get("ok") or k not in self.answers:
                self.answers[k] = e
        self.chunks: dict[int, dict[str, Any]] = {}
        for e in by_type.get("chunk", []):
            self.chunks[int(e["chunk_index"])] = e  # a retried segment: the one that arrived
        self.played = {int(e["chunk_index"]): e for e in by_type.get("segment_played", [])}

    def _first(self, kind: str) -> dict[str, Any] | None:
        found = self.by_type.get(kind)
        return found[0] if found else None

    def _last(self, kind: str) -> dict[str, Any] | None:
        found = self.by_type.get(kind)
        return found[-1] if found else None

    @property
    def ladder(self) -> tuple[int, ...] | None:
        if self.manifest is None:
            return None
        return tuple(round(float(k)) for k in self.manifest["ladder_kbps"])

    @property
    def chunk_s(self) -> float | None:
        return None if self.manifest is None else float(self.manifest["chunk_s"])

    def algorithm(self) -> str:
        for k in sorted(self.answers):
            answer = self.answers[k].get("answer") or {}
            if isinstance(answer.get("algorithm"), str):
                return str(answer["algorithm"])
        return self.config.algorithm or UNKNOWN_ALGORITHM

    def _decision(self, k: int, fetched: int) -> tuple[bool, str | None, float]:
        """(fallback, reason, decision_ms) of chunk ``k`` fetched at level ``fetched``."""
        decision = self.decisions.get(k)
        if decision is None:
            return True, "dash.js fetched it without asking the rule", 0.0
        answer_event = self.answers.get(k) or {}
        answer = answer_event.get("answer") or {}
        sent_ms = _num(decision.get("sent_ms"))
        applied_ms = _num(decision.get("applied_ms"))
        having_ms = applied_ms
        if answer_event.get("ok") and _num(answer_event.get("t_ms"), applied_ms) <= applied_ms:
            having_ms = _num(answer_event.get("t_ms"))
        decision_ms = max(having_ms - sent_ms, 0.0)
        if decision.get("fallback"):
            # The answer event says why in full (the rule may have seen only "failed").
            why = answer_event.get("error") or decision.get("reason") or "no usable answer"
            return True, str(why), decision_ms
        if int(decision["quality"]) != fetched:
            return (
                True,
                f"dash.js fetched level {fetched}, the rule decided {decision['quality']}",
                decision_ms,
            )
        if answer.get("fallback") is True:
            return True, f"service: {answer.get('reason')}", decision_ms
        return False, None, decision_ms

    def records(self) -> list[ChunkRecord]:
        ladder = self.ladder
        if ladder is None or not self.chunks:
            return []
        qoe = player_metric(
            self.config.qoe, ladder, self.config.mpd_url, lambda url: self.video_text
        )
        algorithm = self.algorithm()
        limit = self.config.max_chunks
        indices = sorted(k for k in self.chunks if limit is None or k < limit)
        records = []
        previous: int | None = None
        for pos, k in enumerate(indices):
            c = self.chunks[k]
            q = int(c["quality"]) if c.get("quality") is not None else -1
            if not 0 <= q < len(ladder):
                log.warning(
                    "session %s chunk %d: level %r is not in the MPD", self.session_id, k, q
                )
                continue
            start_s = _num(c.get("start_ms")) / 1000.0
            end_s = _num(c.get("end_ms")) / 1000.0
            rebuffer_s = _num(c.get("rebuffer_ms")) / 1000.0
            buffer_s = _num(c.get("buffer_s"))
            sleep_s = 0.0
            following = self.chunks.get(indices[pos + 1]) if pos + 1 < len(indices) else None
            if following is not None and buffer_s >= self.config.buffer_cap_s - TARGET_SLACK_S:
                sleep_s = max(_num(following.get("start_ms")) / 1000.0 - end_s, 0.0)
            fallback, reason, decision_ms = self._decision(k, q)
            played = self.played.get(k) or {}
            rendered = played.get("quality_by_size")
            if rendered is None:
                rendered = played.get("quality_dashjs")
            dropped = played.get("dropped_frames")
            records.append(
                ChunkRecord.measured(
                    qoe=qoe,
                    bitrates_kbps=ladder,
                    quality=q,
                    previous_quality=previous,
                    chunk_bytes=int(_num(c.get("bytes"))),
                    request_start_s=start_s,
                    request_end_s=end_s,
                    rebuffer_s=rebuffer_s,
                    run_id=self.config.run_id,
                    session_id=self.session_id,
                    trace=self.config.trace,
                    algorithm=algorithm,
                    chunk_index=k,
                    buffer_before_s=_num(c.get("buffer_before_s")),
                    buffer_s=buffer_s,
                    sleep_s=sleep_s,
                    decision_ms=decision_ms,
                    fallback=fallback,
                    fallback_reason=reason,
                    attempts=int(_num(c.get("attempts"), 1.0)),
                    quality_rendered=int(rendered) if isinstance(rendered, int) else None,
                    dropped_frames=int(dropped) if isinstance(dropped, int) else None,
                    player=PLAYER,
                )
            )
            previous = q
        return records

    def outcome(self, interrupted: int | None = None) -> tuple[str, int, str | None]:
        """(status, exit code, reason) of the session."""
        if interrupted is not None:
            why = (
                "terminated (SIGTERM)" if interrupted == EXIT_TERMINATED else "interrupted (SIGINT)"
            )
            return "interrupted", interrupted, why
        driver = self.driver_done or {}
        if self.done is not None and self.done.get("status") == "done":
            if self.chunks and not any(a.get("ok") for a in self.answers.values()):
                # As the headless player: played to the end, but never by the service.
                return (
                    "no_service",
                    EXIT_NO_SERVICE,
                    f"no decision came from the decision service at {self.config.abr_url}: "
                    f"every chunk was decided by the rule's local BBA",
                )
            return "done", EXIT_DONE, None
        if self.done is not None:
            return "failed", EXIT_ORIGIN, str(self.done.get("reason") or "the page failed")
        reason = driver.get("reason") or "the driver ended without a result"
        return "error", EXIT_ERROR, f"browser: {reason}"

    def browser_facts(self) -> dict[str, Any]:
        """session.json's ``browser`` object."""
        start = self.start or {}
        done = self.done or {}
        sources: dict[str, int] = {}
        for decision in self.decisions.values():
            source = str(decision.get("source"))
            sources[source] = sources.get(source, 0) + 1
        waits = [_num(d.get("waited_ms")) for d in self.decisions.values()]
        applied = sum(
            1
            for k, c in self.chunks.items()
            if k in self.decisions
            and not self.decisions[k].get("fallback")
            and self.decisions[k].get("quality") == c.get("quality")
        )
        requests = self.by_type.get("request", [])
        first_playing = next((e for e in self.by_type.get("playing", []) if e.get("first")), None)
        console_errors = [
            str(e.get("text")) for e in self.by_type.get("console", []) if e.get("level") == "error"
        ]
        page_errors = [
            str(e.get("message"))
            for e in self.by_type.get("error", []) + self.by_type.get("page_error", [])
        ]
        stalls = self.by_type.get("stall", [])
        return {
            "chromium": (self.launched or {}).get("version"),
            "user_agent": start.get("user_agent"),
            "dashjs_version": start.get("dashjs_version"),
            "cross_origin_isolated": start.get("cross_origin_isolated"),
            "h264": start.get("h264"),
            "page_status": done.get("status"),
            "driver_status": (self.driver_done or {}).get("status"),
            "decision_mode": done.get("decision_mode"),
            "decisions": len(self.decisions),
            "decisions_applied": applied,
            "decisions_by_source": dict(sorted(sources.items())),
            "decisions_blocking": sources.get("waited", 0) + sources.get("asked", 0),
            "decision_wait_ms_max": max(waits) if waits else None,
            "startup_s": _num(first_playing.get("t_ms")) / 1000.0 if first_playing else None,
            "stalls": len(stalls),
            "stall_s_total": sum(_num(s.get("duration_ms")) for s in stalls) / 1000.0,
            "current_time_s": done.get("current_time"),
            "duration_s": done.get("duration"),
            "ended": bool(done.get("ended")),
            "frames_decoded": done.get("frames_decoded"),
            "frames_dropped": done.get("frames_dropped"),
            "segments_played": len(self.played),
            "requests": len(requests),
            "hosts": sorted({str(r.get("host")) for r in requests}),
            "failed_requests": [
                f"{e.get('url')}: {e.get('error')}" for e in self.by_type.get("request_failed", [])
            ],
            "console_errors": console_errors,
            "errors": page_errors,
        }

    def facts(self) -> dict[str, Any]:
        """The headless player's measurements that apply (MPD, init, start-up)."""
        facts: dict[str, Any] = {}
        if self.manifest is not None:
            facts["mpd_download_s"] = _num(self.manifest.get("download_ms")) / 1000.0
        init = self._first("init")
        if init is not None:
            facts.update(
                init_level=init.get("quality"),
                init_bytes=init.get("bytes"),
                init_download_s=max(_num(init.get("end_ms")) - _num(init.get("start_ms")), 0.0)
                / 1000.0,
                init_segments=len(self.by_type.get("init", [])),
            )
        if 0 in self.chunks:
            facts["startup_s"] = _num(self.chunks[0].get("end_ms")) / 1000.0
        return facts

    def clock_s(self) -> float:
        """The page's clock at its last event, seconds."""
        times = [_num(e.get("t_ms")) for e in self.events if "t_ms" in e]
        return max(times) / 1000.0 if times else 0.0

    def clock_zero_monotonic_s(self, fallback: float) -> float:
        """``time.monotonic()`` at the page clock's zero (``fallback`` when unknown)."""
        epoch_ms = (self.start or {}).get("clock_zero_epoch_ms")
        if not isinstance(epoch_ms, int | float):
            return fallback
        return time.monotonic() - (time.time() - float(epoch_ms) / 1000.0)


def _finite(value: Any) -> Any:
    return value if not isinstance(value, float) or math.isfinite(value) else None


def summary_of(
    session: BrowserSession,
    records: list[ChunkRecord],
    status: str,
    exit_code: int | None,
    reason: str | None,
    started_at: datetime,
    t0: float,
    files: bool,
) -> dict[str, Any]:
    """``session.json``: the headless player's keys (see ``streambed.player.session``), ``player`` and
    ``browser``."""
    cfg = session.config
    ladder = session.ladder
    chunk_s = session.chunk_s
    metrics: dict[str, Any] | None = None
    if records and chunk_s:
        found = asdict(session_metrics(records, chunk_s))
        metrics = {k: _finite(v) for k, v in found.items()}
    by_service = [
        r for r in records if r.fallback and (r.fallback_reason or "").startswith("service:")
    ]
    return {
        "format": SESSION_FORMAT,
        "player": PLAYER,
        "status": status,
        "exit_code": exit_code,
        "reason": reason,
        "session_id": session.session_id,
        "run_id": cfg.run_id,
        "trace": cfg.trace,
        "algorithm": session.algorithm() if records else cfg.algorithm or UNKNOWN_ALGORITHM,
        "mpd_url": cfg.mpd_url,
        "abr_url": cfg.abr_url,
        "started_at": started_at.isoformat(timespec="milliseconds"),
        "duration_s": session.clock_s(),
        "clock_zero_monotonic_s": t0,
        "link": link_from_env(t0),
        "config": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in asdict(cfg).items()
            if k not in ("mpd_url", "abr_url", "session_id", "run_id", "trace")
        },
        "ladder_kbps": list(ladder) if ladder else None,
        "chunk_s": chunk_s,
        "num_chunks": session.manifest.get("num_chunks") if session.manifest else None,
        "chunks": len(records),
        **session.facts(),
        "chunk_bytes_total": sum(r.chunk_bytes for r in records),
        "rebuffer_s_total": sum(r.rebuffer_s for r in qoe_window(records)),
        "sleep_s_total": sum(r.sleep_s for r in records),
        "fallbacks": sum(1 for r in records if r.fallback),
        "fallbacks_local": sum(1 for r in records if r.fallback) - len(by_service),
        "fallbacks_service": len(by_service),
        "download_retries": sum(r.attempts - 1 for r in records),
        "metrics": metrics,
        "browser": {k: _finite(v) for k, v in session.browser_facts().items()},
        "files": {"chunks": CHUNKS_JSONL, "pensieve_log": PENSIEVE_LOG, "events": EVENTS_JSONL}
        if files
        else None,
    }


# ---------------------------------------------------------------------------------------------
# Running it


def _forward(stream: IO[str], session_id: str) -> None:
    for line in stream:
        line = line.rstrip()
        if line:
            log.info("session %s (dash.js): %s", session_id, line.removeprefix("drive.mjs: "))


def _stop(proc: subprocess.Popen[str]) -> None:
    """SIGTERM (the driver closes the browser and writes its last events), then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _measured_video_text(config: PlayerConfig) -> str:
    """The video.json beside the MPD when the metric scores measurements (else "")."""
    if config.qoe not in MEASURED:
        return ""
    url = video_json_url(config.mpd_url)
    try:
        response = httpx.get(url, timeout=config.origin_timeout_s)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise ConfigError(f"qoe {config.qoe!r} needs {url}: {exc}") from None
    return response.text


def play_browser(
    config: PlayerConfig,
    *,
    node: str = "node",
    chromium: str | None = None,
    page: str | None = None,
    page_params: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
) -> SessionResult:
    """Play ``config`` with dash.js in headless Chromium (see the module docstring).

    ``page``: the player page's URL (default ``/player.html`` on the MPD's origin);
    ``page_params``: more query parameters for it;
    ``timeout_s``: limit on the whole session; ``idle_timeout_s``: on a page that stops
    recording. Raises ``ConfigError`` before starting anything when Node.js, the npm packages
    or Chromium are missing.
    """
    node_path, chromium_path = require_browser(node, chromium)
    video_text = _measured_video_text(config)
    session_id = config.session_id or new_session_id()
    started_at = datetime.now(timezone.utc)
    t_start = time.monotonic()
    files = SessionFiles(config.log_dir) if config.log_dir is not None else None
    scratch = None
    if files is not None:
        events_path = files.directory / EVENTS_JSONL
    else:
        scratch = tempfile.TemporaryDirectory(prefix="streambed-browser-")
        events_path = Path(scratch.name) / EVENTS_JSONL
    url = page_url(config, session_id, page, page_params)
    hosts = {urlsplit(u).hostname or "" for u in (config.mpd_url, config.abr_url, url)} - {""}
    files_json = None
    if page is None:  # Streambed's own page: served from disk, so the link sees only the session
        files_json = events_path.with_name(PAGE_FILES_JSON)
        web = resolve_web_dir()
        files_json.write_text(json.dumps(page_files(web)))
    cmd = driver_command(
        node_path,
        chromium_path,
        url,
        events_path,
        hosts,
        timeout_s,
        idle_timeout_s,
        page_files=files_json,
    )
    empty = BrowserSession([], config, session_id)
    if files is not None:
        files.write_summary(summary_of(empty, [], "running", None, None, started_at, t_start, True))
    log.info("session %s: dash.js in %s, page %s", session_id, chromium_path, url)
    interrupted: int | None = None
    pending: BaseException | None = None
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    reader = threading.Thread(target=_forward, args=(proc.stderr, session_id), daemon=True)
    reader.start()
    try:
        try:
            rc = proc.wait()
        except KeyboardInterrupt as exc:
            interrupted = EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
            pending = exc
            _stop(proc)
            rc = proc.returncode
        except BaseException as exc:
            pending = exc
            _stop(proc)
            rc = proc.returncode
        reader.join(5)
        session = BrowserSession(read_events(events_path), config, session_id)
        session.video_text = video_text
        records = session.records()
        status, exit_code, reason = session.outcome(interrupted)
        if pending is not None and interrupted is None:
            status, exit_code, reason = "error", EXIT_ERROR, f"{type(pending).__name__}: {pending}"
        if status == "error" and rc not in DRIVER_EXIT:
            reason = f"{reason} (driver exit status {rc})"
        t0 = session.clock_zero_monotonic_s(t_start)
        summary = summary_of(
            session, records, status, exit_code, reason, started_at, t0, files is not None
        )
        for record in records:
            _log_chunk(record, session_id, len(records))
        if files is not None:
            try:
                for record in records:
                    files.append(record)
                files.close(records)
                files.write_summary(summary)
            except OSError as exc:
                log.error("session %s: cannot write to %s: %s", session_id, files.directory, exc)
        browser = summary["browser"]
        log.info(
            "session %s (dash.js) %s: %d chunks, %d decisions applied, %d blocking, "
            "currentTime %s of %s s, ended %s%s",
            session_id,
            status,
            len(records),
            browser["decisions_applied"],
            browser["decisions_blocking"],
            browser["current_time_s"],
            browser["duration_s"],
            browser["ended"],
            f", reason: {reason}" if reason else "",
        )
    finally:
        if files_json is not None:
            files_json.unlink(missing_ok=True)
        if scratch is not None:
            scratch.cleanup()
    if pending is not None:
        raise pending
    return SessionResult(
        session_id=session_id,
        status=status,
        exit_code=exit_code,
        reason=reason,
        records=records,
        summary=summary,
        log_dir=config.log_dir,
    )


def _log_chunk(r: ChunkRecord, session_id: str, total: int) -> None:
    log.info(
        "session %s chunk %d/%d: level %d %d kbps, rendered %s, download %.3f s, buffer %.2f s, "
        "rebuffer %.3f s, fallback %s%s",
        session_id,
        r.chunk_index + 1,
        total,
        r.quality,
        r.bitrate_kbps,
        r.quality_rendered,
        r.download_s,
        r.buffer_s,
        r.rebuffer_s,
        "yes" if r.fallback else "no",
        f" ({r.fallback_reason})" if r.fallback else "",
    )


__all__ = [
    "EVENTS_JSONL",
    "PLAYER",
    "WEB_DIR",
    "BrowserSession",
    "driver_command",
    "find_chromium",
    "missing_requirements",
    "page_url",
    "play_browser",
    "read_events",
    "require_browser",
]
