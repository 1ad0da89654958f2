"""Pensieve's dash.js protocol, adapted onto the decision engine (which knows nothing of it).

One Pensieve request becomes one :class:`DecideRequest` of the session ``legacy-<client>``, and
the engine's answer becomes the level as text, or ``REFRESH`` after the last chunk.
``lastRequest`` is the index of the chunk just downloaded (Pensieve's dash.js sends the next
chunk's size as ``next_chunk_size(lastRequested+1)``); ``RebufferTime`` is the session's
cumulative stall in ms, and the chunk times are ms. Errors name Pensieve's fields.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from pydantic import ValidationError

from streambed.abr_service.app.engine import DecisionEngine
from streambed.abr_service.app.errors import FieldProblem, InvalidRequest
from streambed.abr_service.app.schemas import DecideRequest, LegacyRequest

REFRESH = "REFRESH"
SESSION_PREFIX = "legacy-"

LEGACY_FIELDS = {
    "chunk_index": "lastRequest",
    "last_quality": "lastquality",
    "buffer_s": "buffer",
    "last_chunk_bytes": "lastChunkSize",
    "last_chunk_download_s": "lastChunkFinishTime",
    "rebuffer_s": "RebufferTime",
}
"""The engine's fields and the Pensieve fields they come from."""


def session_id(client: str) -> str:
    return f"{SESSION_PREFIX}{client}"


class PensieveAdapter:
    """Translates Pensieve's requests for ``engine`` and keeps what the protocol needs across
    requests: each session's cumulative stall as last reported (Pensieve sends a running
    total; the engine takes each chunk's own stall)."""

    def __init__(self, engine: DecisionEngine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        # Only sessions the engine still holds count; the oldest go first beyond the engine's
        # own limit, so the table stays bounded however many clients come and go.
        self._rebuffer_ms: OrderedDict[str, float] = OrderedDict()

    def decide(self, client: str, body: LegacyRequest) -> str:
        """The level of the next chunk as text, ``REFRESH`` after the last chunk."""
        video = self.engine.default_video
        sid = session_id(client)
        next_chunk = body.lastRequest + 1
        if next_chunk >= video.num_chunks:
            self.engine.end_session(sid)
            with self._lock:
                self._rebuffer_ms.pop(sid, None)
            return REFRESH
        with self._lock:
            known = sid in self.engine.sessions
            total_ms = self._rebuffer_ms.get(sid, 0.0) if known else 0.0
        download_ms = body.lastChunkFinishTime - body.lastChunkStartTime
        try:
            req = DecideRequest(
                session_id=sid,
                chunk_index=next_chunk,
                last_quality=body.lastquality,
                buffer_s=body.buffer,
                last_chunk_bytes=body.lastChunkSize,
                # Pensieve's server skipped a zero fetch time; a millisecond keeps the history.
                last_chunk_download_s=max(download_ms, 1.0) / 1000.0,
                rebuffer_s=max(body.RebufferTime - total_ms, 0.0) / 1000.0,
            )
        except ValidationError as exc:
            raise _renamed(
                [
                    FieldProblem(tuple(e["loc"]), e["msg"], e.get("type", "value_error"))
                    for e in exc.errors(include_url=False)
                ]
            ) from None
        try:
            response = self.engine.decide(req)
        except InvalidRequest as exc:
            raise _renamed(exc.problems) from None
        with self._lock:
            if sid in self.engine.sessions:  # else evicted meanwhile by another session
                self._rebuffer_ms[sid] = body.RebufferTime
                self._rebuffer_ms.move_to_end(sid)
                while len(self._rebuffer_ms) > self.engine.max_sessions:
                    self._rebuffer_ms.popitem(last=False)
        return str(response.quality)


def _renamed(problems: list[FieldProblem]) -> InvalidRequest:
    """Problems with the engine's fields renamed to the fields Pensieve's player sent."""
    out = []
    for problem in problems:
        name = str(problem.loc[-1]) if problem.loc else ""
        field_name = LEGACY_FIELDS.get(name, name)
        msg = f"{problem.msg} (as {name})" if field_name != name else problem.msg
        out.append(FieldProblem((field_name,), msg, problem.type))
    return InvalidRequest(out)
