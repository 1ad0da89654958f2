"""Pensieve's dash.js protocol on POST /: the same decisions as /decide, plain-text answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import replay_body, running_service

from streambed.abr_service.video import default_video
from streambed.traces.synth import default_traces
from streambed.trainer.evaluate import evaluate

VIDEO = default_video()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with running_service(tmp_path_factory.mktemp("legacy"), algorithm="robustmpc") as url:
        yield url


def legacy_body(records: list[Any], k: int, start_ms: float) -> dict[str, Any]:
    """What Pensieve's dash.js posts after downloading chunk ``k - 1`` (cumulative stall, ms)."""
    prev = records[k - 1]
    return {
        "lastRequest": k - 1,
        "lastquality": prev.quality,
        "buffer": prev.buffer_s,
        "RebufferTime": 1000.0 * sum(r.rebuffer_s for r in records[:k]),
        "lastChunkStartTime": start_ms,
        "lastChunkFinishTime": start_ms + 1000.0 * prev.download_s,
        "lastChunkSize": prev.chunk_bytes,
        "bandwidthEst": 1234,  # extra fields the player sends are ignored
        "nextChunkSize": 1,
    }


def test_legacy_answers_equal_decide(service: str) -> None:
    trace = default_traces(count=2, seed=3)[1]
    records = evaluate([trace], VIDEO, ["robustmpc"], progress=False).sessions[
        ("robustmpc", trace.name)
    ]
    with httpx.Client(base_url=service) as client:
        legacy, modern = [], []
        for k in range(1, len(records)):
            r = client.post("/?session=p1", content=json.dumps(legacy_body(records, k, 0.0)))
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), (
                r.text
            )
            assert r.headers["access-control-allow-origin"] == "*"
            legacy.append(int(r.text))
            modern.append(
                client.post("/decide", json=replay_body(records, k, "m1")).json()["quality"]
            )
        assert legacy == modern == [rec.quality for rec in records[1:]]
        # after the last chunk the player is told to reload
        r = client.post("/?session=p1", json=legacy_body(records, len(records), 1.8e12))
        assert r.text == "REFRESH"
        assert client.get("/sessions/legacy-p1").status_code == 404  # REFRESH ends the session


def test_rebuffer_is_the_difference_of_cumulative_times(service: str) -> None:
    body = {
        "lastRequest": 0,
        "lastquality": 1,
        "buffer": 2.0,
        "RebufferTime": 1500,
        "lastChunkStartTime": 0,
        "lastChunkFinishTime": 900,
        "lastChunkSize": 380_000,
    }
    with httpx.Client(base_url=service) as client:
        assert client.post("/?session=rb", json=body).status_code == 200
        assert (
            client.post(
                "/?session=rb", json={**body, "lastRequest": 1, "RebufferTime": 2000}
            ).status_code
            == 200
        )
        # the service turned 1500 ms then +500 ms into per-chunk stalls (GET /sessions shows 2 chunks)
        assert client.get("/sessions/legacy-rb").json()["chunks_reported"] == 2


def test_summary_and_bad_bodies(service: str) -> None:
    r = httpx.post(service + "/", json={"pastThroughput": [1, 2], "lastquality": 3})
    assert r.status_code == 200 and r.text == ""
    r = httpx.post(service + "/", content=b"lastquality=3")
    assert r.status_code == 422
    r = httpx.post(
        service + "/",
        json={
            "lastRequest": 3,
            "lastquality": 9,
            "buffer": 1,
            "RebufferTime": 0,
            "lastChunkStartTime": 0,
            "lastChunkFinishTime": 5,
            "lastChunkSize": 1,
        },
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "lastquality"]
    huge = {
        "lastRequest": 3,
        "lastquality": 1,
        "buffer": 1,
        "RebufferTime": 1e300,
        "lastChunkStartTime": 0,
        "lastChunkFinishTime": 5,
        "lastChunkSize": 1,
    }
    r = httpx.post(service + "/?session=huge", json=huge)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "RebufferTime"]
    # the 500 the property-based run once found: a zero-byte chunk (RobustMPC's error term)
    r = httpx.post(service + "/?session=zero", json={**huge, "RebufferTime": 0, "lastChunkSize": 0})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "lastChunkSize"]
    # every number of Pensieve's body is bounded, timestamps included
    for field, value in (
        ("lastChunkStartTime", -1e308),
        ("lastChunkFinishTime", 1e308),
        ("lastChunkStartTime", 1e14),
        ("RebufferTime", 1e11),
    ):
        r = httpx.post(service + "/?session=bounds", json={**huge, "RebufferTime": 0, field: value})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", field], field
    r = httpx.post(service + "/", json={"lastRequest": 3})
    missing = {e["loc"][-1] for e in r.json()["detail"]}
    assert {"lastquality", "buffer", "RebufferTime"} <= missing


RECORDING = Path(__file__).with_name("data") / "pensieve_dashjs_session.json"


def test_a_recorded_pensieve_dashjs_session(tmp_path: Path) -> None:
    """A whole session of the requests Pensieve's modified dash.js sends (its exact body, posted
    as its synchronous XHR does: a string body, ``text/plain``, no session parameter, the player
    known by its address), replayed: the answers are those recorded, and ``/decide`` given the
    same measurements decides the same (``tests/data/make_pensieve_recording.py`` made it)."""
    recording = json.loads(RECORDING.read_text())
    requests, answers = recording["requests"], recording["answers"]
    assert len(requests) == len(answers) == VIDEO.num_chunks and answers[-1] == "REFRESH"
    with running_service(tmp_path, algorithm="robustmpc") as url, httpx.Client(base_url=url) as c:
        legacy = []
        for body in requests:
            r = c.post("/", content=json.dumps(body), headers={"Content-Type": "text/plain"})
            assert r.status_code == 200, r.text
            legacy.append(r.text)
        assert legacy == answers
        assert c.post("/", content=json.dumps({"pastThroughput": [1.0]})).text == ""
        rebuffer_ms = 0.0
        for body, answer in zip(requests[:-1], answers[:-1], strict=True):
            decide = {
                "session_id": "recorded",
                "chunk_index": body["lastRequest"] + 1,
                "last_quality": body["lastquality"],
                "buffer_s": body["buffer"],
                "last_chunk_bytes": body["lastChunkSize"],
                "last_chunk_download_s": (body["lastChunkFinishTime"] - body["lastChunkStartTime"])
                / 1000.0,
                "rebuffer_s": (body["RebufferTime"] - rebuffer_ms) / 1000.0,
            }
            rebuffer_ms = body["RebufferTime"]
            assert c.post("/decide", json=decide).json()["quality"] == int(answer), decide
