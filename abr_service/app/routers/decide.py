"""``POST /decide``: the level of the next chunk."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from streambed.abr_service.app.deps import body_schema, parse_body, state
from streambed.abr_service.app.schemas import DecideRequest, DecideResponse

router = APIRouter(tags=["decisions"])

ERRORS = {
    404: {"description": "Unknown algorithm or video; the detail lists the valid names."},
    409: {"description": "The session or the model cannot serve this request."},
    413: {"description": "Body too large."},
    422: {"description": "Malformed JSON, or a missing or out-of-range field (named)."},
    503: {"description": "Too many decisions running or queued; retry (Retry-After)."},
}


@router.post(
    "/decide",
    response_model=DecideResponse,
    responses=ERRORS,  # type: ignore[arg-type]
    openapi_extra=body_schema(DecideRequest),
    summary="Decide the level of the next chunk",
)
async def decide(request: Request) -> Response:
    """Report the chunk just downloaded and get the level of ``chunk_index``.

    The body is JSON whatever the ``Content-Type`` (``text/plain`` lets browsers skip the CORS
    preflight).
    """
    req = parse_body(DecideRequest, await request.body())
    app = state(request)
    # In a worker thread: a slow algorithm must not stall other clients or /healthz.
    response = await app.runner.run(req.session_id, lambda: app.engine.decide(req))
    return Response(response.model_dump_json(), media_type="application/json")
