"""The decision engine: sessions, algorithms and models behind ``POST /decide``.

A session owns one algorithm instance (the same classes the simulator drives) and the feedback
it has been given. A request for chunk k carries what the player measured for chunk k-1; the
engine turns that into ``on_chunk`` and then asks ``select`` for chunk k, exactly as
:func:`streambed.trainer.evaluate.run_session` does offline, so a replayed simulator log gets the same
decisions. Chunk 0 is fetched at ``first_quality`` (Pensieve's harness: level 1) unless that is
-1.

Decisions run in worker threads (abr_service.app.decisions), one at a time per session: the
session table and the metrics are guarded by ``lock``, held only for bookkeeping, never while an
algorithm selects. A model swap is one reference assignment that a running decision never sees
half-done. Decision logs are written by a background thread (abr_service.app.decision_log).
A request the engine refuses raises one of :mod:`streambed.abr_service.app.errors`; the app
turns it into an HTTP answer.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from streambed.abr_service.algorithms import (
    ALGORITHMS,
    ABRAlgorithm,
    ChunkFeedback,
    PlayerState,
    available_algorithms,
    make_algorithm,
    parse_params,
    rule_names,
)
from streambed.abr_service.algorithms.base import ParamError
from streambed.abr_service.algorithms.learned import LearnedParams, LearnedPolicy
from streambed.abr_service.app.decision_log import DecisionLog
from streambed.abr_service.app.errors import (
    InvalidRequest,
    LadderMismatch,
    NoActiveModel,
    SessionConflict,
    UnknownAlgorithm,
    UnknownVideo,
)
from streambed.abr_service.app.metrics import Metrics
from streambed.abr_service.app.models_store import ActiveModel, ModelStore
from streambed.abr_service.app.schemas import (
    MAX_DOWNLOAD_S,
    MIN_DOWNLOAD_S,
    DecideRequest,
    DecideResponse,
)
from streambed.abr_service.video import FIRST_QUALITY, Video
from streambed.core.errors import ConfigError, VideoError

log = logging.getLogger(__name__)

# The built-in rules: the fallback is one of them. Plug-in rules come from rule_names().
CLASSIC_NAMES = tuple(sorted(n for n, c in ALGORITHMS.items() if c is not LearnedPolicy))


def field_error(loc: tuple[str | int, ...], msg: str) -> InvalidRequest:
    """The request's field at ``loc`` is wrong: ``msg`` says why."""
    return InvalidRequest.field(loc, msg)


@dataclass
class Session:
    session_id: str
    video: Video
    algorithm: str
    params: dict[str, Any]
    algo: ABRAlgorithm
    created: float
    last_seen: float
    history: list[ChunkFeedback] = field(default_factory=list)
    fallback_algo: ABRAlgorithm | None = None
    decisions: int = 0
    last_quality: int | None = None
    last_key: tuple[Any, ...] | None = None
    last_response: DecideResponse | None = None


class DecisionEngine:
    def __init__(
        self,
        videos: list[Video],
        store: ModelStore,
        *,
        default_algorithm: str = "robustmpc",
        fallback_algorithm: str = "bba",
        first_quality: int = FIRST_QUALITY,
        session_idle_s: float = 600.0,
        max_sessions: int = 10_000,
        log_dir: Path | None = None,
        run_id: str = "",
        metrics: Metrics | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        if not videos:
            raise ConfigError("the decision service needs at least one video")
        self.videos = {v.name: v for v in videos}
        self.default_video = videos[0]
        self.store = store
        self.default_algorithm = default_algorithm
        if fallback_algorithm not in CLASSIC_NAMES:
            raise ConfigError(
                f"fallback algorithm {fallback_algorithm!r} must be a classic one: "
                f"{', '.join(CLASSIC_NAMES)}"
            )
        self.fallback_algorithm = fallback_algorithm
        self.first_quality = first_quality
        self.session_idle_s = session_idle_s
        self.max_sessions = max_sessions
        self.log_dir = log_dir
        self.decision_log: DecisionLog | None = None
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            self.decision_log = DecisionLog(log_dir)
        self.lock = threading.Lock()
        self.run_id = run_id
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.sessions: OrderedDict[str, Session] = OrderedDict()

    def warm_up(self) -> None:
        """Build the classic algorithms' caches (MPC's plan tree) before the first request."""
        video = self.default_video
        for name in CLASSIC_NAMES:
            algo = make_algorithm(name, video)
            sizes = video.sizes_at(0)
            algo.on_chunk(ChunkFeedback(0, 1, int(sizes[1]), 1.0, 4.0))
            algo.select(PlayerState(next_chunk=1, buffer_s=4.0, last_quality=1))

    # --- algorithms --------------------------------------------------------------------------

    def algorithm_names(self) -> list[str]:
        return sorted({*rule_names(), *self.store.active, "ppo"})

    def _make(self, name: str, video: Video, params: dict[str, Any]) -> ABRAlgorithm:
        active = self.store.active.get(name)
        if active is not None:
            learned = self._params(LearnedParams, params, name)
            if learned.model:
                raise field_error(
                    ("params", "model"),
                    "a learned algorithm's model is chosen with POST /models/{name}/activate",
                )
            self._check_ladder(name, active, video)
            return LearnedPolicy(video, learned, policy=active.policy)
        if name in rule_names():  # built-in or plug-in; parameters checked once, while built
            try:
                return make_algorithm(name, video, params, from_text=False)
            except ParamError as exc:
                raise field_error(("params", exc.param), str(exc)) from None
            except ConfigError as exc:
                raise field_error(("params",), str(exc)) from None
            except VideoError as exc:  # a metric scored from measurements the video lacks
                raise field_error(("params", "qoe"), str(exc)) from None
        if name in available_algorithms():  # a learned one without a model
            raise NoActiveModel(
                f"no model is active for algorithm {name!r}: upload one with PUT /models/NAME "
                f"and POST /models/NAME/activate",
            )
        raise UnknownAlgorithm(
            f"unknown algorithm {name!r}; valid: {', '.join(self.algorithm_names())}"
        )

    @staticmethod
    def _params(cls: type, params: dict[str, Any], name: str) -> Any:
        """``params`` (JSON values: no coercion) checked against ``cls``'s declared types and
        ranges; :class:`InvalidRequest` naming the parameter, its value and its range."""
        try:
            return parse_params(cls, params, from_text=False, owner=name)
        except ParamError as exc:
            raise field_error(("params", exc.param), str(exc)) from None
        except ConfigError as exc:
            raise field_error(("params",), str(exc)) from None

    @staticmethod
    def _check_ladder(name: str, active: ActiveModel, video: Video) -> None:
        if active.policy.num_levels != video.num_levels:
            raise LadderMismatch(
                f"algorithm {name!r} is served by {active.info.label} for "
                f"{active.policy.num_levels} levels; video {video.name!r} has {video.num_levels}",
            )

    # --- sessions ----------------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        limit = now - self.session_idle_s
        expired = 0
        while self.sessions:
            first = next(iter(self.sessions.values()))
            if first.last_seen >= limit:
                break
            self.sessions.popitem(last=False)
            expired += 1
        if expired:
            self.metrics.observe_eviction("idle", expired)
            log.debug("expired %d idle sessions", expired)

    def _session(self, req: DecideRequest, video: Video, now: float) -> Session:
        session = self.sessions.get(req.session_id)
        params = dict(req.params or {})
        if session is None:
            name = req.algorithm or self.default_algorithm
            session = Session(
                session_id=req.session_id,
                video=video,
                algorithm=name,
                params=params,
                algo=self._make(name, video, params),
                created=now,
                last_seen=now,
            )
            if len(self.sessions) >= self.max_sessions:
                evicted, _ = self.sessions.popitem(last=False)
                self.metrics.observe_eviction("capacity")
                log.debug("session limit %d: evicted %s", self.max_sessions, evicted)
            self.sessions[req.session_id] = session
            log.debug("session %s: %s on %s", req.session_id, name, video.name)
            return session
        if session.video is not video:
            raise SessionConflict(
                f"session {req.session_id!r} plays video {session.video.name!r}; "
                f"end it with DELETE /sessions/{req.session_id} to play {video.name!r}",
            )
        wanted = req.algorithm
        if (wanted is not None and wanted != session.algorithm) or (
            req.params is not None and params != session.params
        ):
            name = wanted or session.algorithm
            algo = self._make(name, video, params)
            for feedback in session.history:  # the new algorithm learns what the old one knew
                algo.on_chunk(feedback)
            log.info("session %s switches %s -> %s", req.session_id, session.algorithm, name)
            session.algorithm, session.algo, session.params = name, algo, params
        session.last_seen = now
        self.sessions.move_to_end(req.session_id)
        return session

    def end_session(self, session_id: str) -> bool:
        with self.lock:
            return self.sessions.pop(session_id, None) is not None

    # --- deciding ----------------------------------------------------------------------------

    def _feedback(self, req: DecideRequest, video: Video) -> ChunkFeedback | None:
        if req.last_quality is None:
            return None
        if req.chunk_index == 0:
            raise field_error(
                ("last_quality",), "must be null for chunk 0: no chunk has been downloaded yet"
            )
        if req.last_quality >= video.num_levels:
            raise field_error(
                ("last_quality",),
                f"level {req.last_quality} is outside video {video.name!r}'s ladder "
                f"(0..{video.num_levels - 1})",
            )
        if req.last_chunk_bytes is None:
            raise field_error(("last_chunk_bytes",), "required when last_quality is given")
        download_s = req.last_chunk_download_s
        if download_s is None:
            if req.last_chunk_start_ms is None or req.last_chunk_end_ms is None:
                raise field_error(
                    ("last_chunk_download_s",),
                    "required when last_quality is given "
                    "(or both last_chunk_start_ms and last_chunk_end_ms)",
                )
            download_s = (req.last_chunk_end_ms - req.last_chunk_start_ms) / 1000.0
            if not MIN_DOWNLOAD_S <= download_s <= MAX_DOWNLOAD_S:
                raise field_error(
                    ("last_chunk_end_ms",),
                    "must be 0.1 ms to a day (86,400,000 ms) after last_chunk_start_ms",
                )
        return ChunkFeedback(
            chunk_index=req.chunk_index - 1,
            quality=req.last_quality,
            chunk_bytes=req.last_chunk_bytes,
            download_s=download_s,
            buffer_s=req.buffer_s,
            rebuffer_s=req.rebuffer_s,
        )

    def decide(self, req: DecideRequest) -> DecideResponse:
        started = time.perf_counter()
        now = self.clock()
        with self.lock:
            self._expire(now)
        video = self.default_video if req.video is None else self.videos.get(req.video)
        if video is None:
            raise UnknownVideo(
                f"unknown video {req.video!r}; valid: {', '.join(sorted(self.videos))}"
            )
        if req.chunk_index >= video.num_chunks:
            raise field_error(
                ("chunk_index",),
                f"chunk {req.chunk_index} is past the end of video {video.name!r} "
                f"({video.num_chunks} chunks, 0..{video.num_chunks - 1})",
            )
        feedback = self._feedback(req, video)
        with self.lock:
            session = self._session(req, video, now)
        key = (
            req.chunk_index,
            req.last_quality,
            req.last_chunk_bytes,
            feedback.download_s if feedback else None,
            req.buffer_s,
            req.rebuffer_s,
        )
        if key == session.last_key and session.last_response is not None:
            return session.last_response  # a retried request: same answer, history untouched
        last_fed = session.history[-1].chunk_index if session.history else -1
        feed_error = None
        if feedback is not None and feedback.chunk_index > last_fed:
            session.history.append(feedback)
            if session.fallback_algo is not None:
                session.fallback_algo.on_chunk(feedback)
            try:
                session.algo.on_chunk(feedback)
            except Exception as exc:  # the algorithm's bug must not fail the request
                feed_error = f"on_chunk: {type(exc).__name__}: {str(exc)[:200]}"
        active = self.store.active.get(session.algorithm)
        if feed_error is None:
            quality, reason = self._select(session, req, active)
        else:
            quality, reason = -1, feed_error
        fallback = reason is not None
        if fallback:
            quality = self._fallback(session, req)
            with self.lock:
                self.metrics.observe_fallback(session.algorithm, reason or "")
            log.warning(
                "session %s chunk %d: %s failed (%s); %s decided",
                session.session_id,
                req.chunk_index,
                session.algorithm,
                reason,
                self.fallback_algorithm,
            )
        session.decisions += 1
        session.last_quality = quality
        elapsed = time.perf_counter() - started
        response = DecideResponse(
            session_id=session.session_id,
            chunk_index=req.chunk_index,
            quality=quality,
            bitrate_kbps=float(video.bitrates_kbps[quality]),
            algorithm=session.algorithm,
            model_version=active.info.label if active is not None else None,
            decision_ms=elapsed * 1000.0,
            fallback=fallback,
            reason=reason,
        )
        session.last_key, session.last_response = key, response
        with self.lock:
            self.metrics.observe_decision(session.algorithm, elapsed, fallback)
        if self.decision_log is not None:
            self._log(req, response)
        return response

    def _state(self, session: Session, req: DecideRequest) -> PlayerState:
        last = req.last_quality
        if last is None:
            last = session.last_quality if session.last_quality is not None else self.first_quality
        return PlayerState(
            next_chunk=req.chunk_index, buffer_s=req.buffer_s, last_quality=max(last, 0)
        )

    def _select(
        self, session: Session, req: DecideRequest, active: ActiveModel | None
    ) -> tuple[int, str | None]:
        """(level, None) from the session's algorithm, or (-1, why it failed)."""
        levels = session.video.num_levels
        if req.chunk_index == 0 and self.first_quality >= 0:
            return min(self.first_quality, levels - 1), None
        if isinstance(session.algo, LearnedPolicy):
            if active is None:
                return -1, "model no longer active"
            if active.policy.num_levels != levels:
                return -1, f"{active.info.label} has {active.policy.num_levels} levels"
            if active.policy.obs_version != session.algo.obs_version:
                # the session's history was observed for another model's network
                return -1, f"{active.info.label} reads observation {active.policy.obs_version}"
            session.algo.policy = active.policy
        try:
            quality = session.algo.select(self._state(session, req))
        except Exception as exc:  # a failing algorithm or model must not fail the request
            return -1, f"{type(exc).__name__}: {str(exc)[:200]}"
        if not isinstance(quality, int | np.integer) or not 0 <= int(quality) < levels:
            return -1, f"level {quality!r} is outside the ladder"
        return int(quality), None

    def _fallback(self, session: Session, req: DecideRequest) -> int:
        if session.fallback_algo is None:
            algo = make_algorithm(self.fallback_algorithm, session.video)
            for feedback in session.history:
                algo.on_chunk(feedback)
            session.fallback_algo = algo
        if req.chunk_index == 0:
            return min(max(self.first_quality, 0), session.video.num_levels - 1)
        quality = session.fallback_algo.select(self._state(session, req))
        return min(max(int(quality), 0), session.video.num_levels - 1)

    def _log(self, req: DecideRequest, response: DecideResponse) -> None:
        assert self.decision_log is not None
        line = {
            "ts": time.time(),
            "run_id": self.run_id,
            **req.model_dump(exclude_none=True),
            **response.model_dump(),
        }
        self.decision_log.write(req.session_id, json.dumps(line))


def params_of(cls: type) -> dict[str, Any]:
    """An algorithm's parameter defaults."""
    params = cls.Params()  # type: ignore[attr-defined]
    return {f.name: getattr(params, f.name) for f in fields(params)}
