"""``/healthz`` and ``/metrics`` (Prometheus text format)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from streambed.abr_service.app.deps import state
from streambed.abr_service.app.metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(request: Request) -> dict[str, object]:
    app = state(request)
    return {
        "status": "ok",
        "sessions": len(app.engine.sessions),
        "default_algorithm": app.engine.default_algorithm,
        "videos": sorted(app.engine.videos),
        "active_models": app.store.active_labels(),
        "uploads_enabled": app.token is not None,
    }


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> PlainTextResponse:
    app = state(request)
    labels = app.store.active_labels()
    with app.engine.lock:  # the session table changes under worker threads
        body = app.metrics.render(len(app.engine.sessions), labels)
    return PlainTextResponse(body, media_type=CONTENT_TYPE)
