"""Shared pieces of the routers: the app's state, the bearer-token check, body reading."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError

from streambed.abr_service.app.decisions import DecisionRunner
from streambed.abr_service.app.engine import DecisionEngine
from streambed.abr_service.app.errors import NotAllowed, NotAuthenticated
from streambed.abr_service.app.legacy import PensieveAdapter
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
    pensieve: PensieveAdapter = field(init=False)

    def __post_init__(self) -> None:
        self.pensieve = PensieveAdapter(self.engine)


def state(request: Request) -> AppState:
    app_state: AppState = request.app.state.streambed
    return app_state


# auto_error=False: the answers for a missing or wrong token are ours (main.ERROR_STATUS); the
# scheme still appears in the OpenAPI schema, so /docs offers "Authorize".
bearer = HTTPBearer(
    auto_error=False,
    description="The service's token (--token-file or STREAMBED_TOKEN); needed to change models.",
)


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Bearer-token check for anything that changes the models being served."""
    token = state(request).token
    if token is None:
        raise NotAllowed(
            "model changes are disabled: start the service with --token-file or STREAMBED_TOKEN"
        )
    if credentials is None:
        raise NotAuthenticated("missing bearer token (Authorization: Bearer TOKEN)")
    if not secrets.compare_digest(credentials.credentials.encode(), token.encode()):
        raise NotAllowed("wrong token")


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
