"""POST /decide against a real uvicorn on loopback: replay equality, validation, sessions."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import auth, checkpoint_bytes, replay_body, running_service

from streambed.abr_service.algorithms import CLASSIC
from streambed.abr_service.video import default_video
from streambed.traces.synth import default_traces
from streambed.trainer.evaluate import evaluate

VIDEO = default_video()
TRACES = default_traces(count=3, seed=7)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("service")
    with running_service(tmp, algorithm="bba") as url:
        yield url


def post(client: httpx.Client, body: Any, **kw: Any) -> httpx.Response:
    return client.post("/decide", json=body, **kw)


# ------------------------------------------------------------------------------------------
# Replay: a session from the simulator log gets the offline algorithm's decisions


@pytest.mark.parametrize("algorithm", CLASSIC)
def test_replay_matches_offline_classic(service: str, algorithm: str) -> None:
    result = evaluate(TRACES, VIDEO, [algorithm], progress=False)
    with httpx.Client(base_url=service) as client:
        for trace in TRACES:
            records = result.sessions[(algorithm, trace.name)]
            sid = f"replay-{algorithm}-{trace.name}"
            decided = []
            for k in range(len(records)):
                body = replay_body(records, k, sid)
                body["algorithm"] = algorithm
                r = post(client, body)
                assert r.status_code == 200, r.text
                answer = r.json()
                assert answer["algorithm"] == algorithm and answer["fallback"] is False
                decided.append(answer["quality"])
            assert decided == [rec.quality for rec in records], (algorithm, trace.name)
            assert len(set(decided)) > 1  # the comparison is not vacuous


@pytest.mark.parametrize("sample", [False, True])
def test_replay_matches_offline_learned(tmp_path: Path, sample: bool) -> None:
    ckpt = tmp_path / "policy.pt"
    ckpt.write_bytes(checkpoint_bytes(seed=3))
    result = evaluate(
        TRACES,
        VIDEO,
        ["ppo"],
        params={"ppo": {"model": str(ckpt), "sample": sample}},
        progress=False,
        seed=5,
    )
    with running_service(tmp_path, model=ckpt) as url, httpx.Client(base_url=url) as client:
        for trace in TRACES:
            records = result.sessions[("ppo", trace.name)]
            decided = []
            for k in range(len(records)):
                body = replay_body(records, k, f"ppo-{trace.name}")
                body["algorithm"] = "ppo"
                if sample:
                    body["params"] = {"sample": True, "seed": 5}
                answer = post(client, body).json()
                assert answer["model_version"] == "policy@v1", answer
                decided.append(answer["quality"])
            assert decided == [rec.quality for rec in records]


def test_replay_of_shared_pensieve_model(tmp_path: Path) -> None:
    shared = Path(__file__).resolve().parents[1].parent / "shared"
    model = shared / "models" / "pensieve-ppo-ep155400.pth"
    if not model.is_file():
        pytest.skip(f"{model} is absent")
    from streambed.abr_service.video import load_video
    from streambed.traces import load_traceset

    video = load_video(shared / "data" / "video" / "envivio")
    traces = load_traceset(shared / "data" / "traces" / "norway-test")[:4]
    result = evaluate(traces, video, ["ppo"], params={"ppo": {"model": str(model)}}, progress=False)
    with (
        running_service(tmp_path, video=video, model=model) as url,
        httpx.Client(base_url=url) as client,
    ):
        for trace in traces:
            records = result.sessions[("ppo", trace.name)]
            decided = [
                post(client, {**replay_body(records, k, trace.name), "algorithm": "ppo"}).json()[
                    "quality"
                ]
                for k in range(len(records))
            ]
            assert decided == [rec.quality for rec in records]


# ------------------------------------------------------------------------------------------
# Strict input: 422 naming the field, 404 listing names, 413 for big bodies

GOOD = {
    "session_id": "strict",
    "chunk_index": 3,
    "last_quality": 2,
    "buffer_s": 8.0,
    "last_chunk_bytes": 500_000,
    "last_chunk_download_s": 1.2,
}


@pytest.mark.parametrize(
    "change, field",
    [
        ({"buffer_s": -1.0}, "buffer_s"),
        ({"last_quality": 6}, "last_quality"),
        ({"last_quality": -1}, "last_quality"),
        ({"chunk_index": 48}, "chunk_index"),
        ({"chunk_index": "three"}, "chunk_index"),
        ({"session_id": ""}, "session_id"),
        ({"session_id": "a/b"}, "session_id"),
        ({"last_chunk_download_s": 0}, "last_chunk_download_s"),
        ({"last_chunk_download_s": None}, "last_chunk_download_s"),
        ({"last_chunk_bytes": None}, "last_chunk_bytes"),
        ({"rebuffer_s": -0.5}, "rebuffer_s"),
        ({"last_chunk_bytes": 0}, "last_chunk_bytes"),
        ({"last_chunk_download_s": 1e-300}, "last_chunk_download_s"),
        (
            {
                "last_chunk_download_s": None,
                "last_chunk_start_ms": 1.0,
                "last_chunk_end_ms": 1.00001,
            },
            "last_chunk_end_ms",
        ),
        ({"bogus": 1}, "bogus"),
        ({"chunk_index": 0}, "last_quality"),
        (
            {"last_chunk_download_s": None, "last_chunk_start_ms": 10, "last_chunk_end_ms": 5},
            "last_chunk_end_ms",
        ),
        ({"params": {"reservoir_s": "lots"}}, "params"),
        ({"params": {"no_such": 1}}, "params"),
        # timestamps are bounded, and so is the download time derived from them
        (
            {"last_chunk_download_s": None, "last_chunk_start_ms": 0, "last_chunk_end_ms": 1e308},
            "last_chunk_end_ms",
        ),
        (
            {"last_chunk_download_s": None, "last_chunk_start_ms": 0, "last_chunk_end_ms": 9e12},
            "last_chunk_end_ms",
        ),
        ({"last_chunk_start_ms": 1e300}, "last_chunk_start_ms"),
        ({"last_chunk_download_s": 86_401}, "last_chunk_download_s"),
        # zeros are only forgiven before the first chunk
        ({"last_chunk_bytes": 0, "last_chunk_download_s": 0}, "last_chunk_bytes"),
    ],
)
def test_invalid_fields_get_422_naming_them(
    service: str, change: dict[str, Any], field: str
) -> None:
    body = {**GOOD, **change}
    body = {k: v for k, v in body.items() if v is not None}
    r = httpx.post(f"{service}/decide", json=body)
    assert r.status_code == 422, r.text
    locs = [tuple(e["loc"]) for e in r.json()["detail"]]
    assert any(field in loc for loc in locs), locs


def test_first_request_may_send_zeros(service: str) -> None:
    """Simple players send every measurement as 0 before the first chunk: accepted, ignored."""
    zeros = {
        "session_id": "zeros",
        "chunk_index": 0,
        "last_quality": None,
        "buffer_s": 0,
        "last_chunk_bytes": 0,
        "last_chunk_download_s": 0,
        "last_chunk_start_ms": 0,
        "last_chunk_end_ms": 0,
        "rebuffer_s": 0,
    }
    with httpx.Client(base_url=service) as client:
        r = post(client, zeros)
        assert r.status_code == 200, r.text
        assert r.json()["quality"] == 1 and r.json()["fallback"] is False
        r = post(client, {k: v for k, v in zeros.items() if k != "last_quality"})
        assert r.status_code == 200, r.text
        # only zeros are forgiven: a negative size is still wrong
        r = post(client, {**zeros, "last_chunk_bytes": -5})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "last_chunk_bytes"]
        paths = client.get("/openapi.json").json()["paths"]
        schema = paths["/decide"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert "sent as 0" in schema["properties"]["last_quality"]["description"]


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_422(service: str, token: str) -> None:
    raw = json.dumps({**GOOD, "buffer_s": 1.0}).replace("1.0", token, 1)
    assert token in raw
    r = httpx.post(f"{service}/decide", content=raw)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "buffer_s"]


@pytest.mark.parametrize("raw", [b"", b"{", b"[1, 2]", b"null", b"\xff\xfe", b'{"session_id": 1}'])
def test_malformed_bodies_are_422(service: str, raw: bytes) -> None:
    r = httpx.post(f"{service}/decide", content=raw)
    assert r.status_code == 422, r.text
    assert isinstance(r.json()["detail"], list)


def test_missing_required_fields_are_named(service: str) -> None:
    r = httpx.post(f"{service}/decide", json={"chunk_index": 1})
    missing = {e["loc"][-1] for e in r.json()["detail"] if e["type"] == "missing"}
    assert missing == {"session_id", "buffer_s"}


def test_start_and_end_times_replace_download_time(service: str) -> None:
    body = {
        **GOOD,
        "session_id": "times",
        "last_chunk_start_ms": 1000.0,
        "last_chunk_end_ms": 2200.0,
    }
    del body["last_chunk_download_s"]
    r = httpx.post(f"{service}/decide", json=body)
    assert r.status_code == 200, r.text


def test_unknown_algorithm_404_lists_valid_names(service: str) -> None:
    r = httpx.post(f"{service}/decide", json={**GOOD, "session_id": "u", "algorithm": "pensive"})
    assert r.status_code == 404
    detail = r.json()["detail"]
    assert "pensive" in detail and all(n in detail for n in ("bba", "robustmpc", "bola"))


def test_unknown_video_404(service: str) -> None:
    r = httpx.post(f"{service}/decide", json={**GOOD, "session_id": "v", "video": "nope"})
    assert r.status_code == 404 and VIDEO.name in r.json()["detail"]


def test_ppo_without_model_is_409(service: str) -> None:
    r = httpx.post(f"{service}/decide", json={**GOOD, "session_id": "p", "algorithm": "ppo"})
    assert r.status_code == 409 and "activate" in r.json()["detail"]


def test_body_limit(service: str) -> None:
    big = {**GOOD, "session_id": "big", "algorithm": "x" * 10, "pad": "y" * 70_000}
    r = httpx.post(f"{service}/decide", json=big)
    assert r.status_code == 413

    # streamed without Content-Length: refused as well
    def chunks() -> Any:
        for _ in range(100):
            yield b" " * 1024

    r = httpx.post(f"{service}/decide", content=chunks())
    assert r.status_code == 413


def test_text_plain_body_is_accepted(service: str) -> None:
    r = httpx.post(
        f"{service}/decide",
        content=json.dumps({**GOOD, "session_id": "plain"}),
        headers={"Content-Type": "text/plain"},
    )
    assert r.status_code == 200


# ------------------------------------------------------------------------------------------
# Sessions


def session_info(url: str, sid: str) -> httpx.Response:
    return httpx.get(f"{url}/sessions/{sid}")


def test_first_chunk_is_level_one_and_fields_carry_units(service: str) -> None:
    r = httpx.post(
        f"{service}/decide", json={"session_id": "first", "chunk_index": 0, "buffer_s": 0}
    )
    answer = r.json()
    assert answer["quality"] == 1 and answer["bitrate_kbps"] == 750.0
    assert answer["algorithm"] == "bba" and answer["model_version"] is None
    assert answer["decision_ms"] >= 0 and answer["fallback"] is False


def test_retried_request_gets_the_same_answer_and_is_counted_once(service: str) -> None:
    body = {**GOOD, "session_id": "retry"}
    first = httpx.post(f"{service}/decide", json=body).json()
    again = httpx.post(f"{service}/decide", json=body).json()
    assert first == again
    assert session_info(service, "retry").json()["chunks_reported"] == 1


def test_algorithm_is_fixed_unless_named_again(service: str) -> None:
    sid = "switch"
    with httpx.Client(base_url=service) as client:
        assert (
            post(client, {**GOOD, "session_id": sid, "algorithm": "bola"}).json()["algorithm"]
            == "bola"
        )
        body = {**GOOD, "session_id": sid, "chunk_index": 4, "buffer_s": 9.0}
        assert post(client, body).json()["algorithm"] == "bola"
        body = {**body, "chunk_index": 5, "algorithm": "robustmpc"}
        assert post(client, body).json()["algorithm"] == "robustmpc"
        info = client.get(f"/sessions/{sid}").json()
        assert info["algorithm"] == "robustmpc" and info["chunks_reported"] == 3


def test_delete_session(service: str) -> None:
    httpx.post(f"{service}/decide", json={**GOOD, "session_id": "gone"})
    assert session_info(service, "gone").status_code == 200
    assert httpx.delete(f"{service}/sessions/gone").status_code == 204
    assert session_info(service, "gone").status_code == 404
    assert httpx.delete(f"{service}/sessions/gone").status_code == 404


def test_idle_sessions_expire_and_lru_cap(tmp_path: Path) -> None:
    import time

    with running_service(tmp_path, session_idle_s=0.3, max_sessions=3) as url:
        for i in range(4):
            httpx.post(f"{url}/decide", json={**GOOD, "session_id": f"s{i}"})
        assert session_info(url, "s0").status_code == 404  # least recently used
        assert all(session_info(url, f"s{i}").status_code == 200 for i in (1, 2, 3))
        time.sleep(0.4)
        httpx.post(f"{url}/decide", json={**GOOD, "session_id": "fresh"})
        assert httpx.get(f"{url}/sessions").json()["count"] == 1
        metrics = httpx.get(f"{url}/metrics").text
        assert 'streambed_sessions_evicted_total{reason="capacity"} 1' in metrics
        assert 'streambed_sessions_evicted_total{reason="idle"} 3' in metrics


def test_decision_log_per_session(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    with running_service(tmp_path, log_dir=logs, run_id="run-7") as url:
        for k in range(3):
            body = {"session_id": "logged", "chunk_index": k, "buffer_s": 2.0 * k}
            if k:
                body.update(last_quality=1, last_chunk_bytes=400_000, last_chunk_download_s=0.8)
            httpx.post(f"{url}/decide", json=body)
    lines = [json.loads(x) for x in (logs / "logged.jsonl").read_text().splitlines()]
    assert [x["chunk_index"] for x in lines] == [0, 1, 2]
    assert all(x["run_id"] == "run-7" and x["algorithm"] == "robustmpc" for x in lines)
    assert all(math.isfinite(x["decision_ms"]) for x in lines)


def test_healthz_metrics_algorithms_videos(service: str) -> None:
    health = httpx.get(f"{service}/healthz").json()
    assert health["status"] == "ok" and health["videos"] == [VIDEO.name]
    httpx.post(f"{service}/decide", json={**GOOD, "session_id": "m"})
    metrics = httpx.get(f"{service}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'streambed_decisions_total{algorithm="bba",fallback="false"}' in metrics.text
    assert 'streambed_decision_seconds_bucket{algorithm="bba",le="+Inf"}' in metrics.text
    assert "streambed_active_sessions " in metrics.text
    algos = {a["name"]: a for a in httpx.get(f"{service}/algorithms").json()}
    assert algos["bba"]["params"] == {"reservoir_s": 5.0, "cushion_s": 10.0}
    videos = httpx.get(f"{service}/videos").json()
    assert videos[0]["num_chunks"] == VIDEO.num_chunks and videos[0]["default"]


def test_docs_and_examples(service: str) -> None:
    assert httpx.get(f"{service}/docs").status_code == 200
    schema = httpx.get(f"{service}/openapi.json").json()
    body = schema["paths"]["/decide"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["examples"][0]["session_id"] == "player-42"


def test_cors_for_browser_players(service: str) -> None:
    r = httpx.post(
        f"{service}/decide",
        content=json.dumps({**GOOD, "session_id": "cors"}),
        headers={"Origin": "http://player.example", "Content-Type": "text/plain"},
    )
    assert r.headers["access-control-allow-origin"] == "*"


# ------------------------------------------------------------------------------------------
# Fallback when a learned model fails at inference


def test_model_failing_at_inference_falls_back_to_bba(tmp_path: Path) -> None:
    with running_service(tmp_path) as url, httpx.Client(base_url=url) as client:
        r = client.put(
            "/models/overflow?activate=true",
            content=checkpoint_bytes(overflow=True),
            headers=auth(),
        )
        assert r.status_code == 201, r.text
        answers = []
        for k in range(4):
            body = {"session_id": "nan", "chunk_index": k, "buffer_s": 3.0 * k, "algorithm": "ppo"}
            if k:
                body.update(last_quality=1, last_chunk_bytes=400_000, last_chunk_download_s=0.8)
            r = post(client, body)
            assert r.status_code == 200, r.text
            answers.append(r.json())
        later = answers[1:]
        assert all(a["fallback"] for a in later), later
        assert all("non-finite" in (a["reason"] or "") for a in later)
        # Pensieve's BBA: level floor((buffer - 5 s) * 5 / 10 s) above the reservoir, else 0
        assert [a["quality"] for a in later] == [0, 0, 2]
        assert 'streambed_fallbacks_total{algorithm="ppo"' in client.get("/metrics").text


def test_an_algorithm_failing_on_feedback_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Engine unit test: an exception inside on_chunk becomes a fallback decision, not a 500."""
    import tempfile

    from streambed.abr_service.algorithms.mpc import RobustMPC
    from streambed.abr_service.app.engine import DecisionEngine
    from streambed.abr_service.app.models_store import ModelStore
    from streambed.abr_service.app.schemas import DecideRequest

    def broken(self: RobustMPC, feedback: object) -> None:
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(RobustMPC, "on_chunk", broken)
    with tempfile.TemporaryDirectory() as tmp:
        engine = DecisionEngine([VIDEO], ModelStore(Path(tmp), 6, set()))
        engine.decide(DecideRequest(session_id="x", chunk_index=0, buffer_s=0))
        answer = engine.decide(DecideRequest(**{**GOOD, "session_id": "x", "chunk_index": 1}))
    assert (
        answer.fallback and answer.reason == "on_chunk: ZeroDivisionError: float division by zero"
    )
    assert answer.quality == 1  # BBA at 8 s of buffer: floor((8 - 5) * 5 / 10)
