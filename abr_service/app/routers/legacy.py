"""``POST /``: Pensieve's modified dash.js protocol, answered in plain text (the translation is
:mod:`streambed.abr_service.app.legacy`)."""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from streambed.abr_service.app.deps import body_schema, parse_body, state
from streambed.abr_service.app.legacy import session_id
from streambed.abr_service.app.schemas import LegacyRequest

router = APIRouter(tags=["legacy"])
log = logging.getLogger(__name__)


@router.post(
    "/",
    response_class=PlainTextResponse,
    openapi_extra=body_schema(LegacyRequest),
    summary="Pensieve's ABR server protocol",
    responses={
        422: {"description": "A field of Pensieve's body is missing or invalid."},
        503: {"description": "Too many decisions running or queued; retry (Retry-After)."},
    },
)
async def legacy(request: Request) -> PlainTextResponse:
    """The level index as text, ``REFRESH`` after the last chunk, empty for the end summary.

    A player is identified by its address, or by ``?session=ID`` when several share one.
    """
    raw = await request.body()
    headers = {"Access-Control-Allow-Origin": "*"}
    try:
        data = json.loads(raw or b"null")
    except ValueError:
        data = None
    if isinstance(data, dict) and "pastThroughput" in data:
        log.info("legacy end-of-video summary from %s", request.client)
        return PlainTextResponse("", headers=headers)
    body = parse_body(LegacyRequest, raw)
    client = request.query_params.get("session") or (
        request.client.host if request.client else "unknown"
    )
    app = state(request)
    text = await app.runner.run(session_id(client), lambda: app.pensieve.decide(client, body))
    return PlainTextResponse(text, headers=headers)
