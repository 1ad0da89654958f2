"""Shared pieces of the routers: the app's state, the bearer-token check, body reading."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from streambed.abr_service.app.decisions import DecisionRunner
from streambed.abr_service.app.engine import DecisionEngine
from streambed.abr_service.app.metrics import Metrics
from streambed.abr_service.app.models_store import ModelStore
from streambed.abr_service.app.settings import Settings


@dataclass
class AppState:
    settings: Settings
    engine: DecisionEngine
    store: ModelStore
    metrics: Metrics
    token: str | None
    runner: DecisionRunner = field(default_factory=lambda: DecisionRunner(4, 256))


def state(request: Request) -> AppState:
    app_state: AppState = request.app.state.streambed
    return app_state


def require_token(request: Request) -> None:
    """Bearer-token check for anything that changes the models being served."""
    token = state(request).token
    if token is None:
        raise HTTPException(
            403,
            "model changes are disabled: start the service with --token-file or STREAMBED_TOKEN",
        )
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise HTTPException(
            401,
            "missing bearer token (Authorization: Bearer TOKEN)",
            {"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise HTTPException(403, "wrong token")


def parse_body(model: type[BaseModel], body: bytes) -> Any:
    """Validate a raw JSON body whatever its content type (browsers send text/plain)."""
    try:
        return model.model_validate_json(body or b"null")
    except ValidationError as exc:
        raise RequestValidationError(
            [
                {"loc": ("body", *err["loc"]), "msg": err["msg"], "type": err["type"]}
                for err in exc.errors(include_url=False)
            ]
        ) from None


def body_schema(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    """``openapi_extra`` declaring a JSON body that the route reads itself."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": schema}},
        }
    }
