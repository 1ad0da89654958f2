"""One headless DASH session in real time: the player's semantics, independent of any CLI.

``play_session(config)`` plays the MPD at ``config.mpd_url`` from its first chunk:

1. GET the MPD (:func:`streambed.server.mpd.parse_mpd`). Then for every chunk k = 0, 1, ...:
2. ask the decision service for k's level with what was measured for chunk k-1
   (:mod:`streambed.player.decisions`; a service that cannot answer is replaced by local BBA for that
   chunk);
3. before chunk 0 only, GET the init segment of the level chosen (timed and counted in
   ``session.json``, not a chunk);
4. GET chunk k over the origin's keep-alive connection (:mod:`streambed.player.downloads`: bounded
   retries), timed on the session clock from the request to the last byte;
5. append it to the real-time buffer (:mod:`streambed.player.buffer`): the stall since the previous
   chunk's append is chunk k's ``rebuffer_s``;
6. if the buffer is above ``buffer_cap_s``, wait, as Pensieve's simulator does, a whole number
   of ``sleep_step_s`` (500 ms) steps until it is at most the cap (not after the last chunk);
7. write chunk k's :class:`streambed.reports.sessionlog.ChunkRecord` line to ``chunks.jsonl`` (flushed, so
   a killed session keeps every finished chunk).

The session clock is ``time.monotonic()`` minus the session's start, in seconds. Times in the
log are on it; ``download_s`` = ``request_end_s - request_start_s`` of the successful attempt.
``buffer_before_s`` is the buffer when that request was sent, ``buffer_s`` the buffer after the
chunk was appended and after any wait, ``sleep_s`` the wait measured. Chunk 0's
``rebuffer_s`` is its start-up time (from its decision request to its last byte: the buffer is
empty until then), as the simulator's first chunk; the reports leave chunk 0 out of QoE.
``qoe`` is the chunk's QoE under ``config.qoe`` (no switch penalty on chunk 0).

Files under ``config.log_dir`` (created): ``chunks.jsonl`` (one record per chunk, written as it
happens), ``pensieve.log`` (Pensieve's format, :func:`streambed.reports.sessionlog.write_pensieve_log`,
written at the end, also after a failure, for the chunks done) and ``session.json`` (written
with status ``running`` at the start and replaced at the end: see :meth:`_Player.summary`).

Outcomes (``SessionResult.status`` / ``exit_code``): ``done`` 0 (every chunk, or
``max_chunks``); ``failed`` 3 (the origin: MPD, init or a chunk could not be fetched after the
retries, or the MPD is malformed); ``interrupted`` 130 (SIGINT) or 143 (SIGTERM, raised by
the CLI as :class:`Terminated`), files written and the exception re-raised; ``no_service`` 4
(every chunk played, but not one decision came from the decision service: local BBA decided
them all, so the session does not measure the algorithm asked; a wrong ``abr_url`` does
this); ``error`` 1 (a bug), files written and the exception re-raised. Invalid configuration raises
:class:`streambed.core.errors.ConfigError` before anything is fetched (the CLI's exit status 2).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from streambed.abr_service.qoe import QoEMetric, qoe_window
from streambed.core.errors import ConfigError, ContentError
from streambed.player.base import (
    CHUNKS_JSONL,
    EXIT_DONE,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NO_SERVICE,
    EXIT_ORIGIN,
    EXIT_TERMINATED,
    EXIT_USAGE,
    PENSIEVE_LOG,
    PLAYERS,
    SESSION_FORMAT,
    SESSION_JSON,
    UNKNOWN_ALGORITHM,
    PlayerConfig,
    SessionFiles,
    SessionResult,
    Terminated,
    link_from_env,
    new_session_id,
)
from streambed.player.buffer import PlaybackBuffer
from streambed.player.decisions import Decider, LocalFallback, Measured
from streambed.player.downloads import DownloadFailed, fetch
from streambed.player.metric import player_metric
from streambed.reports.sessionlog import ChunkRecord
from streambed.reports.summary import session_metrics
from streambed.server.mpd import Manifest, parse_mpd

log = logging.getLogger(__name__)

CLIENT_KEEP_ALIVE_S = 60.0
"""Seconds the player keeps an idle connection (below the servers' 75 s keep-alive)."""


class SessionFailed(Exception):
    """The origin could not be used; the message is the session's exit reason."""


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class _Player:
    def __init__(
        self,
        config: PlayerConfig,
        transport: httpx.BaseTransport | None,
        decision_transport: httpx.BaseTransport | None,
    ) -> None:
        self.config = config
        self.session_id = config.session_id or new_session_id()
        self.transport = transport
        self.decision_transport = decision_transport or transport
        self.algorithm = config.algorithm
        self.records: list[ChunkRecord] = []
        self.facts: dict[str, Any] = {}  # MPD, init and start-up measurements for session.json
        self.manifest: Manifest | None = None
        self.decider: Decider | None = None
        self.started_at = datetime.now(timezone.utc)
        self.t0 = time.monotonic()
        self.files = SessionFiles(config.log_dir) if config.log_dir is not None else None

    def clock(self) -> float:
        return time.monotonic() - self.t0

    # --- the session ---------------------------------------------------------------------

    def run(self) -> SessionResult:
        if self.files is not None:
            self.files.write_summary(self.summary("running", None, None))
        try:
            with self._clients() as (origin, service):
                manifest = self._load_manifest(origin)
                self._play(manifest, origin, service)
        except SessionFailed as exc:
            log.error("session %s failed: %s", self.session_id, exc)
            return self._finish("failed", EXIT_ORIGIN, str(exc))
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, Terminated)
            self._finish(
                "interrupted",
                EXIT_TERMINATED if terminated else EXIT_INTERRUPTED,
                "terminated (SIGTERM)" if terminated else "interrupted (SIGINT)",
            )
            raise
        except BaseException as exc:
            self._finish("error", EXIT_ERROR, f"{type(exc).__name__}: {exc}")
            raise
        decider = self.decider
        if self.records and decider is not None and decider.answered == 0:
            # Never fatal mid-session (the service may come back); afterwards, loud.
            reason = (
                f"no decision came from the decision service at {self.config.abr_url}: all "
                f"{len(self.records)} chunks were decided by local BBA ({decider.first_failure})"
            )
            log.error("session %s: %s", self.session_id, reason)
            return self._finish("no_service", EXIT_NO_SERVICE, reason)
        return self._finish("done", EXIT_DONE, None)

    @contextmanager
    def _clients(self) -> Iterator[tuple[httpx.Client, httpx.Client]]:
        # Separate clients: the origin's keep-alive connection carries only media, and each
        # has its own timeouts. identity: the bytes counted are the bytes on the wire.
        # Idle connections are kept below Streambed's servers' keep-alive (75 s) so that a
        # request never races the server closing them; browsers keep theirs for minutes too.
        limits = httpx.Limits(keepalive_expiry=CLIENT_KEEP_ALIVE_S)
        origin = httpx.Client(
            transport=self.transport,
            timeout=httpx.Timeout(self.config.origin_timeout_s),
            headers={"Accept-Encoding": "identity"},
            limits=limits,
        )
        service = httpx.Client(
            transport=self.decision_transport,
            timeout=httpx.Timeout(self.config.decision_timeout_s),
            limits=limits,
        )
        with origin, service:
            yield origin, service

    def _fetch(self, client: httpx.Client, url: str, what: str, keep_body: bool = False) -> Any:
        try:
            return fetch(
                client,
                url,
                self.clock,
                attempts=self.config.download_attempts,
                backoff_s=self.config.retry_backoff_s,
                keep_body=keep_body,
            )
        except DownloadFailed as exc:
            raise SessionFailed(f"{what}: {exc}") from None

    def _load_manifest(self, origin: httpx.Client) -> Manifest:
        got = self._fetch(origin, self.config.mpd_url, "MPD", keep_body=True)
        try:
            manifest = parse_mpd(got.content or b"", self.config.mpd_url)
        except ContentError as exc:
            raise SessionFailed(str(exc)) from None
        self.manifest = manifest
        self.facts.update(
            mpd_download_s=got.download_s, mpd_attempts=got.attempts, mpd_bytes=got.size_bytes
        )
        return manifest

    def _metric(self, origin: httpx.Client, ladder: Sequence[int]) -> QoEMetric:
        """The records' metric; ssim and vmaf read the video.json beside the MPD first."""

        def fetch_text(url: str) -> str:
            got = self._fetch(origin, url, "video description", keep_body=True)
            return (got.content or b"").decode("utf-8", errors="replace")

        try:
            return player_metric(self.config.qoe, ladder, self.config.mpd_url, fetch_text)
        except ContentError as exc:
            raise SessionFailed(str(exc)) from None

    def _play(self, manifest: Manifest, origin: httpx.Client, service: httpx.Client) -> None:
        cfg = self.config
        total = manifest.num_segments
        limit = min(total, cfg.max_chunks or total)
        ladder = manifest.bitrates_kbps
        qoe = self._metric(origin, ladder)
        decider = Decider(
            service,
            cfg.abr_url,
            self.session_id,
            LocalFallback(ladder, manifest.segment_duration_s, total),
            timeout_s=cfg.decision_timeout_s,
            first_quality=cfg.first_quality,
            algorithm=cfg.algorithm,
            video=cfg.video,
            params=cfg.params,
        )
        self.decider = decider
        buffer = PlaybackBuffer(self.clock())
        last: Measured | None = None
        for k in range(limit):
            decision = decider.decide(k, buffer.advance(self.clock()), last)
            if self.algorithm is None and decision.algorithm is not None:
                self.algorithm = decision.algorithm
            q = decision.quality
            if k == 0:
                init = self._fetch(origin, manifest.init_url(q), f"init segment of level {q}")
                self.facts.update(
                    init_level=q,
                    init_bytes=init.size_bytes,
                    init_download_s=init.download_s,
                    init_attempts=init.attempts,
                )
            got = self._fetch(origin, manifest.chunk_url(q, k), f"chunk {k} at level {q}")
            buffer_before = buffer.level_at(got.start_s)
            rebuffer = buffer.append(got.end_s, self._chunk_s(manifest, k))
            if k == 0:
                self.facts["startup_s"] = got.end_s
            sleep_s = self._wait_below_cap(buffer) if k < limit - 1 else 0.0
            buffer_after = buffer.advance(self.clock())
            record = ChunkRecord.measured(
                qoe=qoe,
                bitrates_kbps=ladder,
                quality=q,
                previous_quality=last.quality if last is not None else None,
                chunk_bytes=got.size_bytes,
                request_start_s=got.start_s,
                request_end_s=got.end_s,
                download_s=got.download_s,
                rebuffer_s=rebuffer,
                run_id=cfg.run_id,
                session_id=self.session_id,
                trace=cfg.trace,
                algorithm=self.algorithm or UNKNOWN_ALGORITHM,
                chunk_index=k,
                buffer_before_s=buffer_before,
                buffer_s=buffer_after,
                sleep_s=sleep_s,
                decision_ms=decision.decision_ms,
                fallback=decision.fallback,
                fallback_reason=decision.reason,
                attempts=got.attempts,
                retry_s=got.retry_s,
            )
            self.records.append(record)
            if self.files is not None:
                self.files.append(record)
            self._log_chunk(record, limit, decision.local)
            last = Measured(k, q, got.size_bytes, got.download_s, buffer_after, rebuffer)
            decider.on_chunk(last)

    @staticmethod
    def _chunk_s(manifest: Manifest, k: int) -> float:
        """Content seconds in chunk ``k`` (the last one may be shorter)."""
        seg = manifest.segment_duration_s
        remaining = manifest.duration_s - k * seg
        return remaining if 1e-6 < remaining < seg else seg

    def _wait_below_cap(self, buffer: PlaybackBuffer) -> float:
        """Wait whole steps until the buffer is at most the cap; the wait measured, seconds."""
        cap, step = self.config.buffer_cap_s, self.config.sleep_step_s
        start = self.clock()
        level = buffer.advance(start)
        if level <= cap:
            return 0.0
        deadline = start + math.ceil((level - cap) / step - 1e-9) * step
        while (left := deadline - self.clock()) > 0:
            time.sleep(left)
        return self.clock() - start

    def _log_chunk(self, r: ChunkRecord, limit: int, local: bool) -> None:
        decided = "service"
        if r.fallback:
            decided = f"{'local BBA' if local else 'service fallback'} ({r.fallback_reason})"
        log.info(
            "session %s chunk %d/%d: level %d %d kbps, download %.3f s, buffer %.2f s, "
            "rebuffer %.3f s, fallback %s, decided by %s",
            self.session_id,
            r.chunk_index + 1,
            limit,
            r.quality,
            r.bitrate_kbps,
            r.download_s,
            r.buffer_s,
            r.rebuffer_s,
            "yes" if r.fallback else "no",
            decided,
        )

    # --- the end ---------------------------------------------------------------------------

    def summary(self, status: str, exit_code: int | None, reason: str | None) -> dict[str, Any]:
        """``session.json``: the outcome, the configuration and the session's totals.

        ``status``/``exit_code``/``reason`` as :class:`SessionResult`; ``duration_s`` the
        session clock at the end; ``mpd_download_s``, ``init_level``, ``init_bytes``,
        ``init_download_s`` once fetched; ``startup_s`` the session clock when playback started;
        ``rebuffer_s_total`` the stall after start-up (chunks 1..N-1); ``fallbacks`` (of which
        ``fallbacks_local``: the player decided, ``fallbacks_service``: the service's own
        fallback); ``download_retries``; ``service_decisions`` (levels
        the service gave); ``warnings`` (e.g. the service's ladder is not the MPD's); ``metrics`` as :func:`streambed.reports.summary.session_metrics`
        (chunks 2..N; null when undefined).
        """
        cfg = self.config
        records = self.records
        manifest = self.manifest
        local = sum(1 for r in records if r.fallback and not _by_service(r))
        metrics: dict[str, Any] | None = None
        if records and manifest is not None:
            found = asdict(session_metrics(records, manifest.segment_duration_s))
            metrics = {k: _finite(v) if isinstance(v, float) else v for k, v in found.items()}
        return {
            "format": SESSION_FORMAT,
            "player": cfg.player,
            "status": status,
            "exit_code": exit_code,
            "reason": reason,
            "session_id": self.session_id,
            "run_id": cfg.run_id,
            "trace": cfg.trace,
            "algorithm": self.algorithm or UNKNOWN_ALGORITHM,
            "mpd_url": cfg.mpd_url,
            "abr_url": cfg.abr_url,
            "started_at": self.started_at.isoformat(timespec="milliseconds"),
            "duration_s": self.clock(),
            "clock_zero_monotonic_s": self.t0,
            "link": link_from_env(self.t0),
            "config": {
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in asdict(cfg).items()
                if k not in ("mpd_url", "abr_url", "session_id", "run_id", "trace")
            },
            "ladder_kbps": list(manifest.bitrates_kbps) if manifest else None,
            "chunk_s": manifest.segment_duration_s if manifest else None,
            "num_chunks": manifest.num_segments if manifest else None,
            "chunks": len(records),
            **self.facts,
            "chunk_bytes_total": sum(r.chunk_bytes for r in records),
            "rebuffer_s_total": sum(r.rebuffer_s for r in qoe_window(records)),
            "sleep_s_total": sum(r.sleep_s for r in records),
            "fallbacks": sum(1 for r in records if r.fallback),
            "fallbacks_local": local,
            "fallbacks_service": sum(1 for r in records if r.fallback and _by_service(r)),
            "download_retries": sum(r.attempts - 1 for r in records),
            "service_decisions": self.decider.answered if self.decider is not None else 0,
            "warnings": list(self.decider.warnings) if self.decider is not None else [],
            "metrics": metrics,
            "files": {"chunks": CHUNKS_JSONL, "pensieve_log": PENSIEVE_LOG}
            if self.files is not None
            else None,
        }

    def _finish(self, status: str, exit_code: int, reason: str | None) -> SessionResult:
        summary = self.summary(status, exit_code, reason)
        if self.files is not None:
            try:
                self.files.close(self.records)
                self.files.write_summary(summary)
            except OSError as exc:  # the result still says what happened
                log.error(
                    "session %s: cannot write to %s: %s", self.session_id, self.files.directory, exc
                )
        return SessionResult(
            session_id=self.session_id,
            status=status,
            exit_code=exit_code,
            reason=reason,
            records=list(self.records),
            summary=summary,
            log_dir=self.config.log_dir,
        )


def _by_service(record: ChunkRecord) -> bool:
    return (record.fallback_reason or "").startswith("service:")


def play_session(
    config: PlayerConfig,
    transport: httpx.BaseTransport | None = None,
    *,
    decision_transport: httpx.BaseTransport | None = None,
) -> SessionResult:
    """Play one session (see the module docstring); ``transport`` carries every request
    (default: real connections), ``decision_transport`` the decision requests if given.
    A config whose ``player`` is ``dashjs`` is played by :func:`streambed.player.browser.play_browser`
    (real connections only)."""
    if config.player == "dashjs":
        if transport is not None or decision_transport is not None:
            raise ConfigError("the dashjs player makes its own connections: no transport")
        from streambed.player.browser import play_browser

        return play_browser(config)
    return _Player(config, transport, decision_transport).run()


__all__ = [
    "CHUNKS_JSONL",
    "EXIT_DONE",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_NO_SERVICE",
    "EXIT_ORIGIN",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "PENSIEVE_LOG",
    "PLAYERS",
    "SESSION_JSON",
    "PlayerConfig",
    "SessionResult",
    "Terminated",
    "new_session_id",
    "play_session",
]
