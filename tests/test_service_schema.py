"""Property-based run against the service's own OpenAPI schema: no input gets a 5xx.

Schemathesis generates valid and invalid requests for every operation (bodies, path and query
parameters) from the schema the app publishes, and sends them to a real uvicorn on loopback,
with and without the upload token. Hypothesis drives it directly: schemathesis' pytest plugin
does not run under pytest 9. ``SCHEMA_EXAMPLES=300`` runs a longer search (80 per operation
and mode by default).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from service_helpers import TOKEN, checkpoint_bytes, running_service

from streambed.abr_service.app.main import create_app
from streambed.abr_service.video import default_video

# (method, path, mode): negative data only where there is an input to get wrong
OPERATIONS = [
    (method.upper(), path, mode)
    for path, item in create_app(videos=[default_video()]).openapi()["paths"].items()
    for method, spec in item.items()
    for mode in GenerationMode
    if mode is GenerationMode.POSITIVE or spec.get("parameters") or spec.get("requestBody")
]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    tmp: Path = tmp_path_factory.mktemp("schema")
    with running_service(tmp) as url:
        # a model serving ppo, so learned decisions are exercised too
        httpx.put(
            f"{url}/models/base?activate=true",
            content=checkpoint_bytes(),
            headers={"Authorization": f"Bearer {TOKEN}"},
        ).raise_for_status()
        yield url, schemathesis.openapi.from_url(f"{url}/openapi.json")


@pytest.mark.parametrize(
    "method, path, mode", OPERATIONS, ids=[f"{m} {p} {g.value}" for m, p, g in OPERATIONS]
)
def test_no_server_errors(live: tuple[str, Any], method: str, path: str, mode: Any) -> None:
    url, schema = live
    operation = schema[path][method]
    headers = {"Authorization": f"Bearer {TOKEN}"}
    seen: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=int(os.environ.get("SCHEMA_EXAMPLES", "80")),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: Any) -> None:
        for extra in (None, headers):
            response = case.call_and_validate(
                base_url=url, headers=extra, checks=[not_a_server_error]
            )
            seen.append(response.status_code)

    run()
    assert seen and max(seen) < 500
