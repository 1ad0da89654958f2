"""``/models``: stored checkpoints, uploads, activation and rollback (token required to change)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from streambed.abr_service.app.deps import body_schema, parse_body, require_token, state
from streambed.abr_service.app.errors import ServiceError
from streambed.abr_service.app.models_store import ActiveModel, ModelStore, check_name
from streambed.abr_service.app.schemas import (
    ActivateRequest,
    ActivationOut,
    ModelList,
    ModelOut,
    RollbackRequest,
)

router = APIRouter(prefix="/models", tags=["models"])
log = logging.getLogger(__name__)

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No bearer token."},
    403: {"description": "Wrong token, or model changes are disabled."},
}


def _listing(store: ModelStore) -> ModelList:
    serving: dict[str, list[str]] = {}
    for algorithm, active in store.active.items():
        serving.setdefault(active.info.label, []).append(algorithm)
    return ModelList(
        models=[
            ModelOut(**info.model_dump(), active_for=sorted(serving.get(info.label, [])))
            for info in store.list()
        ],
        active=store.active_labels(),
    )


@router.get("", response_model=ModelList)
async def list_models(request: Request) -> ModelList:
    # reads every version's file: in a worker thread, so /decide and /healthz never wait on it
    return await run_in_threadpool(_listing, state(request).store)


@router.put(
    "/{name}",
    status_code=201,
    response_model=ModelOut,
    dependencies=[Depends(require_token)],
    responses={
        **AUTH_ERRORS,
        200: {"description": "The same bytes are already stored: that version."},
        413: {"description": "Larger than the upload limit."},
        422: {"description": "Not a valid checkpoint for this ladder (the detail says why)."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload_model(
    request: Request, name: str, activate: bool = False, algorithm: str = "ppo"
) -> Response:
    """Store a checkpoint as the next version of ``name`` (validated first).

    ``?activate=true`` also makes it serve ``algorithm`` (default ``ppo``).
    """
    app = state(request)
    try:
        check_name(name)
        data = await request.body()
        info, created = await run_in_threadpool(app.store.put, name, data)
        if activate:
            await run_in_threadpool(app.store.activate, name, info.version, algorithm)
    except ServiceError as exc:
        app.metrics.observe_upload("refused")
        log.warning("upload of %r refused: %s", name, exc)
        raise
    app.metrics.observe_upload("stored" if created else "duplicate")
    serving = [a for a, m in app.store.active.items() if m.info.label == info.label]
    body = ModelOut(**info.model_dump(), active_for=sorted(serving))
    return Response(
        body.model_dump_json(), status_code=201 if created else 200, media_type="application/json"
    )


def _activation(algorithm: str, active: ActiveModel) -> ActivationOut:
    return ActivationOut(
        algorithm=algorithm, model_version=active.info.label, sha256=active.info.sha256
    )


async def _optional_body(request: Request, model: type) -> object:
    raw = await request.body()
    return model() if not raw.strip() else parse_body(model, raw)


@router.post(
    "/{name}/activate",
    response_model=ActivationOut,
    dependencies=[Depends(require_token)],
    responses={**AUTH_ERRORS, 404: {}, 409: {}, 422: {}},
    openapi_extra=body_schema(ActivateRequest, required=False),
)
async def activate_model(request: Request, name: str) -> ActivationOut:
    """Serve ``name`` (a version, default the latest) for an algorithm (default ``ppo``).

    Decisions already running finish on the previous model; the next ones use this one.
    """
    body = await _optional_body(request, ActivateRequest)
    assert isinstance(body, ActivateRequest)
    active = await run_in_threadpool(
        state(request).store.activate, name, body.version, body.algorithm
    )
    return _activation(body.algorithm, active)


@router.post(
    "/{name}/rollback",
    response_model=ActivationOut,
    dependencies=[Depends(require_token)],
    responses={**AUTH_ERRORS, 409: {}, 422: {}},
    openapi_extra=body_schema(RollbackRequest, required=False),
)
async def rollback_model(request: Request, name: str) -> ActivationOut:
    """Serve again whatever served the algorithm before ``name`` was activated for it."""
    body = await _optional_body(request, RollbackRequest)
    assert isinstance(body, RollbackRequest)
    algorithm, active = await run_in_threadpool(state(request).store.rollback, name, body.algorithm)
    return _activation(algorithm, active)
