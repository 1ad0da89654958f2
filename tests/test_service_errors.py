"""HTTP only at the edge: domain errors in the engine and the store, one status table in the app,
the Pensieve protocol as an adapter beside the engine, the token as an OpenAPI bearer scheme."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from service_helpers import TOKEN, running_service

from streambed.abr_service.app import errors
from streambed.abr_service.app.engine import DecisionEngine, Session
from streambed.abr_service.app.errors import (
    InvalidRequest,
    NotAuthenticated,
    Overloaded,
    ServiceError,
)
from streambed.abr_service.app.legacy import PensieveAdapter
from streambed.abr_service.app.main import ERROR_STATUS, create_app, error_response
from streambed.abr_service.app.models_store import ModelStore
from streambed.abr_service.app.schemas import LegacyRequest
from streambed.abr_service.video import default_video

CHANGES = [("put", "/models/{name}"), ("post", "/models/{name}/activate")]
CHANGES.append(("post", "/models/{name}/rollback"))


def test_every_domain_error_has_a_status() -> None:
    classes: list[type[ServiceError]] = [
        c
        for _, c in inspect.getmembers(errors, inspect.isclass)
        if issubclass(c, ServiceError) and c is not ServiceError
    ]
    assert classes and set(classes) == set(ERROR_STATUS)
    for cls in classes:  # no HTTP in the domain: the status lives in ERROR_STATUS only
        instance = InvalidRequest([]) if cls is InvalidRequest else cls("x")
        assert not hasattr(instance, "status") and not hasattr(instance, "status_code")


def test_error_headers() -> None:
    r = error_response(Overloaded("busy", retry_after_s=3))
    assert r.status_code == 503 and r.headers["retry-after"] == "3"
    r = error_response(NotAuthenticated("no token"))
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = error_response(InvalidRequest.field(("params", "horizon"), "too big"))
    assert r.status_code == 422
    assert json.loads(r.body) == {
        "detail": [{"loc": ["body", "params", "horizon"], "msg": "too big", "type": "value_error"}]
    }


def test_engine_store_and_adapter_import_no_web_framework() -> None:
    code = (
        "import sys\n"
        "import streambed.abr_service.app.engine, streambed.abr_service.app.models_store\n"
        "import streambed.abr_service.app.decisions, streambed.abr_service.app.legacy\n"
        "web = sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette'))\n"
        "assert not web, web\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_engine_knows_nothing_of_pensieve() -> None:
    source = inspect.getsource(sys.modules[DecisionEngine.__module__])
    for word in ("legacy", "Legacy", "REFRESH", "lastRequest", "RebufferTime"):
        assert word not in source, word
    assert not hasattr(DecisionEngine, "legacy")
    assert not any("legacy" in name for name in Session.__dataclass_fields__)


def _legacy(last: int, rebuffer_ms: float) -> LegacyRequest:
    return LegacyRequest(
        lastquality=1,
        buffer=4.0,
        RebufferTime=rebuffer_ms,
        lastRequest=last,
        lastChunkStartTime=0.0,
        lastChunkFinishTime=500.0,
        lastChunkSize=400_000,
    )


def test_the_adapter_turns_cumulative_stalls_into_each_chunks(tmp_path: Path) -> None:
    engine = DecisionEngine([default_video()], ModelStore(tmp_path, 6, set()), max_sessions=2)
    adapter = PensieveAdapter(engine)
    assert adapter.decide("a", _legacy(0, 500.0)).isdigit()
    assert adapter.decide("a", _legacy(1, 800.0)).isdigit()
    stalls = [f.rebuffer_s for f in engine.sessions["legacy-a"].history]
    assert stalls == pytest.approx([0.5, 0.3])
    # the adapter's table is bounded by the engine's session limit, however many clients
    for client in "bcdef":
        adapter.decide(client, _legacy(0, 100.0))
    assert len(adapter._rebuffer_ms) <= 2
    # an evicted session starts again from the cumulative time it reports
    adapter.decide("a", _legacy(2, 900.0))
    assert engine.sessions["legacy-a"].history[-1].rebuffer_s == pytest.approx(0.9)
    last = engine.default_video.num_chunks - 1
    assert adapter.decide("a", _legacy(last, 900.0)) == "REFRESH"
    assert "legacy-a" not in engine.sessions and "legacy-a" not in adapter._rebuffer_ms


def test_openapi_declares_the_bearer_scheme_on_model_changes() -> None:
    schema = create_app(videos=[default_video()]).openapi()
    schemes = schema["components"]["securitySchemes"]
    assert list(schemes) == ["HTTPBearer"]
    assert schemes["HTTPBearer"]["type"] == "http" and schemes["HTTPBearer"]["scheme"] == "bearer"
    for method, path in CHANGES:
        assert schema["paths"][path][method]["security"] == [{"HTTPBearer": []}], path
    for method, path in [("get", "/models"), ("post", "/decide"), ("post", "/")]:
        assert "security" not in schema["paths"][path][method], path


def test_bearer_scheme_and_spacing_as_before(tmp_path: Path) -> None:
    with running_service(tmp_path) as url, httpx.Client(base_url=url) as client:
        for header in (f"bearer {TOKEN}", f"BEARER   {TOKEN}"):
            r = client.post("/models/none/activate", headers={"Authorization": header})
            assert r.status_code == 404, (header, r.text)  # past the token check
        r = client.post("/models/none/activate", headers={"Authorization": "Bearer"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = client.get("/sessions/nobody")
        assert r.status_code == 404 and r.json() == {"detail": "no session 'nobody'"}
