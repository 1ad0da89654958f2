"""``/sessions``: what the service remembers per player."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request, Response

from streambed.abr_service.app.deps import state
from streambed.abr_service.app.errors import UnknownSession
from streambed.abr_service.app.schemas import SESSION_ID_PATTERN, SessionInfo, SessionList

router = APIRouter(prefix="/sessions", tags=["sessions"])
SessionId = Path(pattern=SESSION_ID_PATTERN)


@router.get("", response_model=SessionList)
async def list_sessions(request: Request) -> SessionList:
    app = state(request)
    engine = app.engine
    recent = list(engine.sessions)[-100:][::-1]
    return SessionList(
        count=len(engine.sessions),
        max_sessions=engine.max_sessions,
        idle_timeout_s=engine.session_idle_s,
        recent=recent,
    )


@router.get("/{session_id}", response_model=SessionInfo, responses={404: {}})
async def get_session(request: Request, session_id: str = SessionId) -> SessionInfo:
    engine = state(request).engine
    session = engine.sessions.get(session_id)
    if session is None:
        raise UnknownSession(f"no session {session_id!r}")
    return SessionInfo(
        session_id=session.session_id,
        video=session.video.name,
        algorithm=session.algorithm,
        params=session.params,
        chunks_reported=len(session.history),
        decisions=session.decisions,
        last_chunk_index=session.history[-1].chunk_index if session.history else None,
        idle_s=max(engine.clock() - session.last_seen, 0.0),
    )


@router.delete("/{session_id}", status_code=204, responses={404: {}})
async def end_session(request: Request, session_id: str = SessionId) -> Response:
    """End a session: the service forgets its history."""
    if not state(request).engine.end_session(session_id):
        raise UnknownSession(f"no session {session_id!r}")
    return Response(status_code=204)
