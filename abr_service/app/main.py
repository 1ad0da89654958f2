"""Build the decision service's FastAPI app from a ``Settings``."""

from __future__ import annotations

import atexit
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streambed import __version__
from streambed.abr_service.algorithms import available_algorithms, rule_names
from streambed.abr_service.algorithms.mpc import set_max_horizon
from streambed.abr_service.app.decisions import DecisionRunner
from streambed.abr_service.app.deps import AppState
from streambed.abr_service.app.engine import DecisionEngine
from streambed.abr_service.app.errors import (
    InvalidName,
    InvalidRequest,
    LadderMismatch,
    ModelRejected,
    ModelUnservable,
    NoActiveModel,
    NotAllowed,
    NotAuthenticated,
    NothingToRollBack,
    Overloaded,
    ServiceError,
    SessionConflict,
    StorageFailed,
    UnknownAlgorithm,
    UnknownModel,
    UnknownSession,
    UnknownVideo,
)
from streambed.abr_service.app.metrics import Metrics
from streambed.abr_service.app.models_store import DEFAULT_SLOT, ModelStore
from streambed.abr_service.app.routers import catalog, decide, health, legacy, models, sessions
from streambed.abr_service.app.settings import Settings
from streambed.abr_service.video import Video, load_video
from streambed.core.errors import ConfigError

log = logging.getLogger(__name__)

DESCRIPTION = """\
Streambed's ABR decision service. A player reports each downloaded chunk and asks for the
level of the next one (`POST /decide`); the service keeps each session's history and answers
with BBA, RB, BOLA, FastMPC, RobustMPC or a learned policy. Pensieve's dash.js protocol is
served on `POST /`. Checkpoints are uploaded with a bearer token and hot-swapped.
"""

ERROR_STATUS: dict[type[ServiceError], int] = {
    InvalidRequest: 422,
    InvalidName: 422,
    ModelRejected: 422,
    UnknownAlgorithm: 404,
    UnknownVideo: 404,
    UnknownSession: 404,
    UnknownModel: 404,
    NoActiveModel: 409,
    LadderMismatch: 409,
    SessionConflict: 409,
    ModelUnservable: 409,
    NothingToRollBack: 409,
    StorageFailed: 507,
    Overloaded: 503,
    NotAuthenticated: 401,
    NotAllowed: 403,
}
"""The one place a domain error becomes an HTTP status; the body is ``{"detail": ...}`` (a
subclass not listed takes its nearest listed base's status, else 400)."""


def error_response(exc: ServiceError) -> JSONResponse:
    """The HTTP answer to a refused request: :data:`ERROR_STATUS`'s code, the detail, and the
    headers some errors need."""
    status = next((ERROR_STATUS[c] for c in type(exc).__mro__ if c in ERROR_STATUS), 400)
    headers: dict[str, str] = {}
    if isinstance(exc, NotAuthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(exc.retry_after_s)
    detail: Any = exc.detail
    if isinstance(exc, InvalidRequest):  # shaped like FastAPI's own 422s, naming each field
        detail = [{"loc": ["body", *p.loc], "msg": p.msg, "type": p.type} for p in exc.problems]
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


class BodyLimit:
    """Refuse bodies over a limit with 413, before they are read whole."""

    def __init__(self, app: ASGIApp, limit: int, upload_limit: int) -> None:
        self.app, self.limit, self.upload_limit = app, limit, upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        limit = self.upload_limit if path.startswith("/models/") else self.limit
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    too_big = int(value) > limit
                except ValueError:
                    too_big = False
                if too_big:
                    await _too_large(send, limit)
                    return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await _too_large(send, limit)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = JSONResponse({"detail": f"request body larger than {limit} bytes"}).body
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def load_videos(paths: list[Path]) -> list[Video]:
    if not paths:
        from streambed.abr_service.video import default_video

        return [default_video()]
    videos = [load_video(p) for p in paths]
    names = [v.name for v in videos]
    if len(set(names)) != len(names):
        raise ConfigError(f"two videos share a name: {', '.join(names)}")
    return videos


def create_app(settings: Settings | None = None, videos: list[Video] | None = None) -> FastAPI:
    settings = settings or Settings()
    videos = videos or load_videos(settings.videos)
    token = settings.read_token()
    models_dir = settings.models_dir
    if models_dir is None:
        models_dir = Path(tempfile.mkdtemp(prefix="streambed-models-"))
        atexit.register(shutil.rmtree, models_dir, ignore_errors=True)
        log.warning("models are kept in %s until exit; give --models-dir to keep them", models_dir)
    set_max_horizon(settings.max_mpc_horizon)  # before the engine warms MPC's plan cache
    ladder = videos[0].num_levels
    # Plug-ins are discovered here, once: a broken one is logged as a warning and skipped.
    plugins = [i for i in available_algorithms().values() if not i.builtin]
    for info in plugins:
        log.info("algorithm plug-in %r from %s", info.name, info.source)
    store = ModelStore(models_dir, ladder, reserved=set(rule_names()))
    if settings.model is not None:
        _preload(store, settings.model)
    metrics = Metrics()
    engine = DecisionEngine(
        videos,
        store,
        default_algorithm=settings.algorithm,
        fallback_algorithm=settings.fallback_algorithm,
        first_quality=settings.first_quality,
        session_idle_s=settings.session_idle_s,
        max_sessions=settings.max_sessions,
        log_dir=settings.log_dir,
        run_id=settings.run_id,
        metrics=metrics,
    )
    engine.warm_up()
    if settings.algorithm not in rule_names() and settings.algorithm not in store.active:
        if settings.algorithm not in engine.algorithm_names():
            raise ConfigError(
                f"default algorithm {settings.algorithm!r} is unknown; rule-based ones are "
                f"{', '.join(rule_names())}, learned ones need --model or an activated upload"
            )
        log.warning(
            "no model serves the default algorithm %r yet: sessions that name no algorithm get "
            "409 until one is activated (PUT /models/NAME?activate=true)",
            settings.algorithm,
        )

    if engine.decision_log is not None:
        atexit.register(engine.decision_log.close)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if engine.decision_log is not None:
            engine.decision_log.close()  # writes what is queued

    # FastAPIOffline: /docs and /redoc from assets in the wheel (fastapi-offline), not a CDN.
    app = FastAPIOffline(
        title="Streambed ABR decision service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    runner = DecisionRunner(settings.decision_threads, settings.max_pending_decisions)
    app.state.streambed = AppState(settings, engine, store, metrics, token, runner)
    for router in (decide.router, sessions.router, models.router, catalog.router, health.router):
        app.include_router(router)
    app.include_router(legacy.router)
    app.add_middleware(
        CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST"], allow_headers=["*"]
    )
    app.add_middleware(
        BodyLimit, limit=settings.max_body_bytes, upload_limit=settings.max_model_bytes
    )
    _install_error_handlers(app)
    log.info(
        "decision service: default %s, fallback %s, videos %s, models in %s, uploads %s",
        settings.algorithm,
        settings.fallback_algorithm,
        ", ".join(v.name for v in videos),
        models_dir,
        "enabled" if token else "disabled",
    )
    return app


def _preload(store: ModelStore, path: Path) -> None:
    """Store and activate ``--model`` for ``ppo`` (bad files stop start-up with a clear error)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"--model {path}: {exc.strerror}") from exc
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in path.stem).lstrip("._-")
    try:
        info, _ = store.put(name or "model", data)
        store.activate(info.name, info.version, DEFAULT_SLOT)
    except ServiceError as exc:
        raise ConfigError(f"--model {path}: {exc}") from exc


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Only loc/msg/type: echoing the input could carry NaN, which JSON cannot.
        detail = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(ServiceError)
    async def _service(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error (logged)"}, status_code=500)


def app_from_env() -> Any:
    """``uvicorn abr_service.app.main:app_from_env --factory``: settings from the environment."""
    return create_app(Settings())
