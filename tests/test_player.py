"""The headless player against real servers on loopback: the origin app, the decision service
(or small apps standing in for a broken one), and the ``streambed play`` command.

The content is 12 synthetic chunks of 0.5 s; a 1 s buffer cap makes the player wait in real
time, so a whole paced session lasts about 5 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from streambed.abr_service.algorithms.buffer_based import bba_level
from streambed.abr_service.app.main import create_app as create_service
from streambed.abr_service.app.schemas import DecideRequest
from streambed.abr_service.app.settings import Settings
from streambed.abr_service.qoe import make_qoe
from streambed.abr_service.video import generate_video
from streambed.core.errors import ConfigError
from streambed.core.servers import free_port, serve_in_thread
from streambed.player.buffer import PlaybackBuffer
from streambed.player.session import (
    CHUNKS_JSONL,
    EXIT_ORIGIN,
    PENSIEVE_LOG,
    SESSION_JSON,
    PlayerConfig,
    SessionResult,
    play_session,
)
from streambed.reports.sessionlog import ChunkRecord, read_jsonl
from streambed.reports.summary import session_metrics
from streambed.server.app import create_app as create_origin
from streambed.server.build import build_synthetic
from streambed.server.mpd import MPD_NAME

CHUNK_S = 0.5
NUM_CHUNKS = 12
CAP_S = 1.0
VIDEO = generate_video(seed=7, num_chunks=NUM_CHUNKS, chunk_s=CHUNK_S, name="player-test")
LEVELS = VIDEO.num_levels
STREAMBED = Path(sys.executable).with_name("streambed")


@pytest.fixture(scope="module")
def content(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic(VIDEO, tmp_path_factory.mktemp("player") / "content")


@pytest.fixture(scope="module")
def origin(content: Path) -> Iterator[str]:
    with serve_in_thread(create_origin(content)) as url:
        yield url


def service_app(tmp: Path, **settings: Any) -> Any:
    values: dict[str, Any] = {"models_dir": tmp / "models", **settings}
    return create_service(Settings(**values), videos=[VIDEO])


def make_config(mpd_base: str, abr: str, log_dir: Path | None, **kw: Any) -> PlayerConfig:
    values: dict[str, Any] = {"buffer_cap_s": 60.0, "retry_backoff_s": 0.05, **kw}
    return PlayerConfig(mpd_url=f"{mpd_base}/{MPD_NAME}", abr_url=abr, log_dir=log_dir, **values)


def lines(path: Path) -> int:
    try:
        return len(path.read_text().splitlines())
    except FileNotFoundError:
        return 0


def when_logged(
    path: Path, count: int, action: Callable[[], object], timeout_s: float = 30
) -> None:
    """Run ``action`` as soon as the chunk log at ``path`` has ``count`` lines."""
    deadline = time.monotonic() + timeout_s
    while lines(path) < count and time.monotonic() < deadline:
        time.sleep(0.005)
    action()


def check_files(result: SessionResult, log_dir: Path) -> dict[str, Any]:
    """The three files agree with the result; returns session.json."""
    assert read_jsonl(log_dir / CHUNKS_JSONL) == result.records
    pensieve = (log_dir / PENSIEVE_LOG).read_text().strip().splitlines()
    assert len(pensieve) == len(result.records)
    for line, r in zip(pensieve, result.records, strict=True):
        cols = line.split("\t")
        assert float(cols[0]) == pytest.approx(r.request_end_s + r.sleep_s)
        assert (int(cols[1]), int(cols[4])) == (r.bitrate_kbps, r.chunk_bytes)
    summary = json.loads((log_dir / SESSION_JSON).read_text())
    assert summary == json.loads(json.dumps(result.summary))
    assert summary["status"] == result.status and summary["exit_code"] == result.exit_code
    assert summary["chunks"] == len(result.records)
    return summary


def check_records(records: list[ChunkRecord], cap_s: float) -> None:
    """What holds for any session on this content."""
    qoe = make_qoe("lin", VIDEO.bitrates_kbps)
    previous_end = 0.0
    for k, r in enumerate(records):
        assert r.chunk_index == k
        assert 0 <= r.quality < LEVELS
        assert r.bitrate_kbps == VIDEO.bitrates_kbps[r.quality]
        assert r.chunk_bytes == VIDEO.chunk_bytes[r.quality, k]  # every byte, nothing more
        assert previous_end <= r.request_start_s < r.request_end_s
        assert r.download_s == pytest.approx(r.request_end_s - r.request_start_s)
        assert r.throughput_kbps == pytest.approx(r.chunk_bytes * 8 / r.download_s / 1000)
        assert 0 <= r.buffer_before_s <= cap_s + 1e-6
        assert 0 < r.buffer_s <= cap_s + CHUNK_S + 1e-6
        assert r.rebuffer_s >= 0 and r.sleep_s >= 0 and r.decision_ms > 0
        previous = records[k - 1].quality if k else r.quality
        assert r.qoe == pytest.approx(float(qoe.transition(r.quality, previous, r.rebuffer_s)))
        previous_end = r.request_end_s + r.sleep_s
    # Chunk 0's stall is the start-up: everything before its last byte.
    assert 0 < records[0].rebuffer_s <= records[0].request_end_s


# ---------------------------------------------------------------------------------------------
# Pure parts


def test_buffer_drains_in_real_time_and_counts_stalls() -> None:
    buf = PlaybackBuffer(now_s=10.0)
    assert buf.advance(10.4) == 0.0  # not playing yet: start-up stall
    assert buf.append(10.5, 4.0) == pytest.approx(0.5)
    assert buf.started_at_s == 10.5
    assert buf.level_at(11.5) == pytest.approx(3.0)
    assert buf.append(12.5, 4.0) == 0.0  # 2 s drained, none stalled
    assert buf.advance(12.5) == pytest.approx(6.0)
    assert buf.append(20.0, 4.0) == pytest.approx(1.5)  # empty from 18.5 to 20.0
    assert buf.level_at(21.0) == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("buffer_cap_s", 0.0),
        ("buffer_cap_s", 0.2),  # below one 500 ms step
        ("decision_timeout_s", -1.0),
        ("download_attempts", 0),
        ("max_chunks", 0),
        ("qoe", "nope"),
        ("session_id", "has space"),
        ("mpd_url", "ftp://x/manifest.mpd"),
    ],
)
def test_config_refuses_bad_values(field: str, value: Any) -> None:
    values: dict[str, Any] = {"mpd_url": "http://127.0.0.1:1/m.mpd", "abr_url": "http://x:2"}
    values[field] = value
    with pytest.raises(ConfigError, match=field.split("_")[0]):
        PlayerConfig(**values)


# ---------------------------------------------------------------------------------------------
# Whole sessions


@pytest.mark.slow
def test_complete_session_follows_the_service_and_waits_at_the_cap(
    origin: str, content: Path, tmp_path: Path
) -> None:
    decisions = tmp_path / "decisions"
    with serve_in_thread(service_app(tmp_path, log_dir=decisions)) as abr:
        cfg = make_config(
            origin, abr, tmp_path / "log", buffer_cap_s=CAP_S, session_id="full-1", run_id="r7"
        )
        result = play_session(cfg)
    assert (result.status, result.exit_code, result.reason) == ("done", 0, None)
    records = result.records
    assert len(records) == NUM_CHUNKS
    check_records(records, CAP_S)
    summary = check_files(result, tmp_path / "log")

    # The levels are the service's decisions, asked with what the player measured.
    asked = [json.loads(line) for line in (decisions / "full-1.jsonl").read_text().splitlines()]
    assert [a["chunk_index"] for a in asked] == list(range(NUM_CHUNKS))
    assert [r.quality for r in records] == [a["quality"] for a in asked]
    assert records[0].quality == 1  # the service's first level
    for k in range(1, NUM_CHUNKS):
        prev = records[k - 1]
        assert asked[k]["last_quality"] == prev.quality
        assert asked[k]["last_chunk_bytes"] == prev.chunk_bytes
        assert asked[k]["last_chunk_download_s"] == prev.download_s
        assert asked[k]["rebuffer_s"] == prev.rebuffer_s
        assert 0 <= asked[k]["buffer_s"] - records[k].buffer_before_s < 0.1
    assert {r.algorithm for r in records} == {"robustmpc"}
    assert {(r.session_id, r.run_id, r.trace) for r in records} == {("full-1", "r7", "")}
    assert not any(r.fallback for r in records) and {r.attempts for r in records} == {1}

    # The cap: waits of whole 500 ms steps, buffer at most the cap after them.
    waited = [r for r in records if r.sleep_s > 0]
    assert len(waited) >= NUM_CHUNKS - 4
    for r in waited:
        steps = round(r.sleep_s / 0.5)
        assert steps >= 1 and r.sleep_s == pytest.approx(steps * 0.5, abs=0.1)
    assert all(r.buffer_s <= CAP_S + 1e-6 for r in records[:-1])
    assert sum(r.rebuffer_s for r in records[1:]) < 0.1  # loopback is fast: no stall
    # Real time: 6 s of content appended, at most cap + one chunk left in the buffer.
    played = records[-1].request_end_s - summary["startup_s"]
    assert played >= NUM_CHUNKS * CHUNK_S - CAP_S - CHUNK_S - 0.05

    assert summary["init_level"] == 1
    assert summary["init_bytes"] == (content / "init-1.mp4").stat().st_size
    assert summary["chunk_bytes_total"] == sum(r.chunk_bytes for r in records)
    metrics = session_metrics(records, CHUNK_S)
    assert summary["metrics"]["qoe"] == pytest.approx(metrics.qoe)
    assert summary["fallbacks"] == 0


def test_every_decide_body_fits_the_service_schema(origin: str, tmp_path: Path) -> None:
    """An injected transport stands in for the service: bodies validate as DecideRequest and
    carry the previous chunk's measurements; the answers are followed."""
    bodies: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        k = body["chunk_index"]
        return httpx.Response(200, json={"chunk_index": k, "quality": (k * 5) % LEVELS})

    cfg = make_config(origin, "http://abr.invalid", tmp_path, algorithm="bola", video="v1")
    result = play_session(cfg, decision_transport=httpx.MockTransport(answer))
    assert result.ok
    assert [r.quality for r in result.records] == [(k * 5) % LEVELS for k in range(NUM_CHUNKS)]
    for k, body in enumerate(bodies):
        req = DecideRequest.model_validate(body)
        assert (req.session_id, req.chunk_index) == (result.session_id, k)
        assert (req.algorithm, req.video) == ("bola", "v1")
        if k == 0:
            assert req.last_quality is None
            continue
        prev = result.records[k - 1]
        assert (req.last_quality, req.last_chunk_bytes) == (prev.quality, prev.chunk_bytes)
        assert req.last_chunk_download_s == pytest.approx(prev.download_s, abs=1e-4)
        assert req.rebuffer_s == prev.rebuffer_s
        assert prev.buffer_s >= req.buffer_s >= prev.buffer_s - 0.1
    check_records(result.records, 60.0)


def test_a_kept_alive_connection_closed_under_the_request_is_asked_again(
    origin: str, tmp_path: Path
) -> None:
    """The server closing an idle connection as the player reuses it (``Server disconnected``,
    70 decisions of a 32-session emulation before this was handled) costs a second request,
    not a fallback. Any other request error still falls back at once."""
    calls: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        k = json.loads(request.content)["chunk_index"]
        calls.append(k)
        if k in (2, 5) and calls.count(k) == 1:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
        if k == 7:
            raise httpx.ReadError("connection reset")
        return httpx.Response(200, json={"chunk_index": k, "quality": 1})

    cfg = make_config(origin, "http://abr.invalid", tmp_path)
    result = play_session(cfg, decision_transport=httpx.MockTransport(answer))
    assert result.ok
    assert calls.count(2) == calls.count(5) == 2 and calls.count(7) == 1
    assert [r.chunk_index for r in result.records if r.fallback] == [7]


def test_service_down_from_the_start_bba_decides(origin: str, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = play_session(make_config(origin, dead, tmp_path, algorithm="robustmpc"))
    # Played to the end, yet not one decision came from the service: not a success (status 4).
    assert (result.status, result.exit_code) == ("no_service", 4)
    assert f"no decision came from the decision service at {dead}" in (result.reason or "")
    assert "all 12 chunks were decided by local BBA (ConnectError" in (result.reason or "")
    records = result.records
    assert len(records) == NUM_CHUNKS
    check_records(records, 60.0)
    assert all(r.fallback and "ConnectError" in (r.fallback_reason or "") for r in records)
    assert records[0].quality == 1  # the service's first level, decided locally
    for prev, r in zip(records, records[1:], strict=False):
        # BBA on the buffer when it asked: between the last buffer and the request's.
        candidates = {bba_level(b, LEVELS, 5.0, 10.0) for b in (prev.buffer_s, r.buffer_before_s)}
        assert r.quality in candidates
    assert max(r.quality for r in records) >= 1  # the buffer grew past BBA's reservoir
    assert {r.algorithm for r in records} == {"robustmpc"}
    summary = check_files(result, tmp_path)
    assert summary["fallbacks_local"] == NUM_CHUNKS and summary["fallbacks_service"] == 0
    assert summary["service_decisions"] == 0 and summary["status"] == "no_service"


@pytest.mark.slow
def test_service_killed_mid_session_then_back(origin: str, tmp_path: Path) -> None:
    port = free_port()
    log_dir = tmp_path / "log"
    first, second = tmp_path / "dec1", tmp_path / "dec2"
    stack = ExitStack()
    stack.enter_context(serve_in_thread(service_app(tmp_path, log_dir=first), port=port))

    def choreography() -> None:
        when_logged(log_dir / CHUNKS_JSONL, 3, stack.close)  # kill after chunk 2
        when_logged(
            log_dir / CHUNKS_JSONL,
            7,
            lambda: stack.enter_context(
                serve_in_thread(service_app(tmp_path, log_dir=second), port=port)
            ),
        )

    thread = threading.Thread(target=choreography)
    thread.start()
    try:
        cfg = make_config(
            origin, f"http://127.0.0.1:{port}", log_dir, buffer_cap_s=CAP_S, session_id="kill-1"
        )
        result = play_session(cfg)
    finally:
        thread.join()
        stack.close()
    assert (result.status, result.exit_code) == ("done", 0)
    records = result.records
    check_records(records, CAP_S)
    flags = [r.fallback for r in records]
    assert flags[:3] == [False] * 3
    assert flags[-2:] == [False, False]  # the restarted service decides again
    middle = [k for k, f in enumerate(flags) if f]
    assert middle and middle == list(range(middle[0], middle[-1] + 1))  # one outage
    assert all(3 <= k <= 8 for k in middle)
    # Each service logged exactly the chunks it decided, and those are the levels played.
    for directory in (first, second):
        for line in (directory / "kill-1.jsonl").read_text().splitlines():
            answer = json.loads(line)
            assert not records[answer["chunk_index"]].fallback
            assert records[answer["chunk_index"]].quality == answer["quality"]
    decided = {
        json.loads(line)["chunk_index"]
        for d in (first, second)
        for line in (d / "kill-1.jsonl").read_text().splitlines()
    }
    assert decided == {k for k, f in enumerate(flags) if not f}
    assert check_files(result, log_dir)["fallbacks_local"] == len(middle)


def garbage_service() -> Starlette:
    """A /decide that answers each chunk with another kind of nonsense (or a valid level)."""

    async def decide(request: Request) -> Response:
        k = json.loads(await request.body())["chunk_index"]
        if k == 1:
            return PlainTextResponse("level three please")
        if k == 2:
            return JSONResponse({"chunk_index": k, "quality": 99})
        if k == 3:
            return JSONResponse({"detail": "boom"}, status_code=503)
        if k == 4:
            await asyncio.sleep(1.0)  # past the player's timeout
            return JSONResponse({"chunk_index": k, "quality": 5})
        if k == 5:
            return JSONResponse({"chunk_index": k, "quality": "3"})
        if k == 6:  # the service's own fallback: followed, but marked
            return JSONResponse(
                {"chunk_index": k, "quality": 3, "fallback": True, "reason": "model NaN"}
            )
        if k == 7:
            return JSONResponse({"chunk_index": 99, "quality": 1})
        if k == 8:
            return JSONResponse([1, 2, 3])
        return JSONResponse({"chunk_index": k, "quality": 2 if k == 0 else 4})

    return Starlette(routes=[Route("/decide", decide, methods=["POST"])])


def test_service_answering_garbage_falls_back_chunk_by_chunk(origin: str, tmp_path: Path) -> None:
    with serve_in_thread(garbage_service()) as abr:
        cfg = make_config(origin, abr, tmp_path, decision_timeout_s=0.3)
        result = play_session(cfg)
    assert result.ok
    records = result.records
    check_records(records, 60.0)
    reasons = {r.chunk_index: r.fallback_reason for r in records}
    expected = {
        1: "not JSON",
        2: "quality 99 outside",
        3: "HTTP 503",
        4: "no answer within 0.3 s",
        5: "no integer quality",
        6: "service: model NaN",
        7: "answer is for chunk 99",
        8: "not a JSON object",
    }
    for k, needle in expected.items():
        assert records[k].fallback and needle in (reasons[k] or ""), (k, reasons[k])
    for k in (0, 9, 10, 11):
        assert not records[k].fallback and records[k].fallback_reason is None
    assert [records[k].quality for k in (0, 6, 9, 10, 11)] == [2, 3, 4, 4, 4]
    assert 300 <= records[4].decision_ms < 900
    summary = check_files(result, tmp_path)
    assert (summary["fallbacks_local"], summary["fallbacks_service"]) == (7, 1)
    assert summary["algorithm"] == "service-default"  # the service never named it


class Flaky:
    """Wraps the origin: answers given paths with a list of failures before passing through."""

    def __init__(self, app: ASGIApp, plan: dict[str, list[str]], delay_s: float = 0.0) -> None:
        self.app = app
        self.plan = plan
        self.delay_s = delay_s
        self.hits: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        failures = self.plan.get(path, [])
        hit = self.hits.get(path, 0)
        self.hits[path] = hit + 1
        what = failures[hit] if hit < len(failures) else "ok"
        if what == "500":
            await JSONResponse({"detail": "try again"}, status_code=500)(scope, receive, send)
        elif what == "short":  # promise 1000 bytes, send 10, end the response
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"1000")],
                }
            )
            await send({"type": "http.response.body", "body": b"x" * 10, "more_body": False})
        elif what == "slow":
            await asyncio.sleep(self.delay_s)
            await self.app(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def test_origin_failures_are_retried(content: Path, tmp_path: Path) -> None:
    chunk3 = [f"/chunk-{q}-00004.m4s" for q in range(LEVELS)]
    flaky = Flaky(
        create_origin(content),
        {f"/{MPD_NAME}": ["500"], **{p: ["500", "short"] for p in chunk3}},
    )
    with serve_in_thread(flaky) as url:
        result = play_session(make_config(url, f"http://127.0.0.1:{free_port()}", tmp_path))
    # Every chunk played; no service was asked (local BBA), which the status says.
    assert (result.status, result.exit_code) == ("no_service", 4)
    check_records(result.records, 60.0)
    r = result.records[3]
    assert r.attempts == 3 and r.retry_s >= 0.05 + 0.1  # two failures, backoff 0.05 then 0.1
    assert r.chunk_bytes == VIDEO.chunk_bytes[r.quality, 3]
    assert {x.attempts for x in result.records if x.chunk_index != 3} == {1}
    summary = check_files(result, tmp_path)
    assert summary["mpd_attempts"] == 2 and summary["download_retries"] == 2


def test_origin_unreachable_fails_with_exit_3(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = play_session(make_config(dead, dead, tmp_path))
    assert (result.status, result.exit_code) == ("failed", EXIT_ORIGIN)
    assert result.reason is not None and result.reason.startswith("MPD: GET")
    assert "gave up after 3 attempts" in result.reason and "ConnectError" in result.reason
    assert result.records == []
    summary = check_files(result, tmp_path)
    assert summary["reason"] == result.reason and summary["num_chunks"] is None


@pytest.mark.slow
def test_origin_gone_mid_session_keeps_the_log(content: Path, tmp_path: Path) -> None:
    stack = ExitStack()
    url = stack.enter_context(serve_in_thread(create_origin(content)))
    log_dir = tmp_path / "log"
    thread = threading.Thread(target=when_logged, args=(log_dir / CHUNKS_JSONL, 4, stack.close))
    thread.start()
    try:
        dead_abr = f"http://127.0.0.1:{free_port()}"
        result = play_session(make_config(url, dead_abr, log_dir, buffer_cap_s=CAP_S))
    finally:
        thread.join()
        stack.close()
    assert (result.status, result.exit_code) == ("failed", EXIT_ORIGIN)
    k = len(result.records)
    assert 4 <= k < NUM_CHUNKS
    assert result.reason is not None
    assert result.reason.startswith(f"chunk {k} at level ")
    assert "gave up after 3 attempts" in result.reason
    check_records(result.records, CAP_S)
    summary = check_files(result, log_dir)
    assert summary["status"] == "failed" and summary["chunks"] == k


@pytest.mark.slow
def test_stall_is_measured_in_real_time(content: Path, tmp_path: Path) -> None:
    delay_s, stalled = 2.0, 5
    slow = {f"/chunk-{q}-{stalled + 1:05d}.m4s": ["slow"] for q in range(LEVELS)}
    with serve_in_thread(Flaky(create_origin(content), slow, delay_s=delay_s)) as url:
        dead_abr = f"http://127.0.0.1:{free_port()}"
        result = play_session(make_config(url, dead_abr, tmp_path, buffer_cap_s=CAP_S))
    assert (result.status, result.exit_code) == ("no_service", 4)  # played to the end, BBA
    records = result.records
    check_records(records, CAP_S)
    r = records[stalled]
    assert delay_s <= r.download_s < delay_s + 0.3
    # By hand: the buffer held buffer_before_s when the request left; the chunk arrived
    # delay_s (+ a loopback transfer) later, so the video stood still for the difference.
    assert 0.3 < r.buffer_before_s <= CAP_S
    assert r.rebuffer_s == pytest.approx(delay_s - r.buffer_before_s, abs=0.15)
    assert r.rebuffer_s == pytest.approx(r.download_s - r.buffer_before_s, abs=0.01)
    assert r.buffer_s == pytest.approx(CHUNK_S, abs=0.05) and r.sleep_s == 0.0  # from empty
    others = sum(x.rebuffer_s for x in records[1:] if x is not r)
    assert others < 0.1  # no other stall
    summary = check_files(result, tmp_path)
    assert summary["rebuffer_s_total"] == pytest.approx(r.rebuffer_s + others)
    assert summary["metrics"]["rebuffer_s"] == pytest.approx(r.rebuffer_s + others)


# ---------------------------------------------------------------------------------------------
# The command


def run_cli(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(STREAMBED), "play", *args], capture_output=True, text=True, timeout=60, **kw
    )


def test_cli_help_names_every_flag() -> None:
    out = run_cli("--help")
    assert out.returncode == 0
    for flag in (
        "--mpd",
        "--abr",
        "--algorithm",
        "--session-id",
        "--run-id",
        "--buffer-cap-s",
        "--decision-timeout-s",
        "--max-chunks",
        "--qoe",
        "--log",
        "--trace",
        "--link",
        "--delay-ms",
    ):
        assert flag in out.stdout


@pytest.mark.slow
def test_cli_end_to_end(origin: str, tmp_path: Path) -> None:
    with serve_in_thread(service_app(tmp_path, algorithm="bba")) as abr:
        out = run_cli(
            "--mpd",
            f"{origin}/{MPD_NAME}",
            "--abr",
            abr,
            "--session-id",
            "cli-1",
            "--run-id",
            "run-9",
            "--max-chunks",
            "6",
            "--log",
            str(tmp_path / "ok"),
        )
        assert out.returncode == 0, out.stderr
        assert "session cli-1 done: 6 of 12 chunks" in out.stdout
        info = [line for line in out.stderr.splitlines() if "session cli-1 chunk" in line]
        assert len(info) == 6 and "chunk 6/6: level" in info[-1] and "fallback no" in info[-1]
        records = read_jsonl(tmp_path / "ok" / CHUNKS_JSONL)
        assert [r.chunk_index for r in records] == list(range(6))
        assert {(r.algorithm, r.run_id) for r in records} == {("bba", "run-9")}

        # SIGTERM mid-session: the chunks done are logged, session.json says so, status 143.
        log_dir = tmp_path / "term"
        proc = subprocess.Popen(
            [str(STREAMBED), "play", "--mpd", f"{origin}/{MPD_NAME}", "--abr", abr]
            + ["--buffer-cap-s", str(CAP_S), "--log", str(log_dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            when_logged(log_dir / CHUNKS_JSONL, 3, lambda: proc.send_signal(signal.SIGTERM))
            assert proc.wait(timeout=30) == 143
        finally:
            if proc.poll() is None:
                proc.kill()
    summary = json.loads((log_dir / SESSION_JSON).read_text())
    done = read_jsonl(log_dir / CHUNKS_JSONL)
    assert summary["status"] == "interrupted" and summary["exit_code"] == 143
    assert 3 <= summary["chunks"] == len(done) < NUM_CHUNKS
    assert len((log_dir / PENSIEVE_LOG).read_text().strip().splitlines()) == len(done)


def test_cli_exit_statuses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from streambed.cli import main

    dead = f"http://127.0.0.1:{free_port()}"
    base = ["play", "--mpd", f"{dead}/{MPD_NAME}", "--abr", dead, "--log", str(tmp_path)]
    assert main([*base, "--buffer-cap-s", "0"]) == 2
    assert "streambed play: error: buffer_cap_s=0.0" in capsys.readouterr().err
    assert main([*base, "--param", "oops"]) == 2
    assert main([*base, "--attempts", "1"]) == 3
    err = capsys.readouterr().err
    assert "streambed play: MPD: GET" in err
    assert json.loads((tmp_path / SESSION_JSON).read_text())["exit_code"] == 3


@pytest.mark.slow
def test_trace_flags_run_the_session_behind_a_link(origin: str, tmp_path: Path) -> None:
    """--trace re-runs the command behind an emulated link (the unprivileged proxy kind): the
    chunks cross a 2 Mbit/s trace, so each takes about its size / 2 Mbit/s."""
    pytest.importorskip("streambed.emulation.link")
    trace = tmp_path / "flat.txt"
    trace.write_text("".join(f"{t}\t2.0\n" for t in range(0, 60)))
    with serve_in_thread(service_app(tmp_path, algorithm="bba")) as abr:
        out = run_cli(
            "--mpd",
            f"{origin}/{MPD_NAME}",
            "--abr",
            abr,
            "--max-chunks",
            "3",
            "--trace",
            str(trace),
            "--link",
            "proxy",
            "--log",
            str(tmp_path / "log"),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    assert out.returncode == 0, out.stderr
    records = read_jsonl(tmp_path / "log" / CHUNKS_JSONL)
    assert len(records) == 3 and {r.trace for r in records} == {"flat"}
    summary = json.loads((tmp_path / "log" / SESSION_JSON).read_text())
    assert summary["mpd_url"] != f"{origin}/{MPD_NAME}"  # re-pointed at the proxy's port
    # The trace started at the player's first request (the MPD), just after its clock's zero.
    link = summary["link"]
    assert link["kind"] == "proxy" and -1.0 < link["trace_offset_s"] <= 0, link
    rates = np.array([r.throughput_kbps for r in records])
    assert (rates < 2000 * 1.1).all() and (rates > 2000 * 0.5).all(), rates


def test_a_player_process_stays_light(tmp_path: Path) -> None:
    """``streambed play`` is one process per session, two with ``--trace`` (the command and its
    re-run behind the link), so neither may import torch, matplotlib or the service's stack
    (pydantic included: the service's request models, about 0.5 s of start-up alone):
    they cost over 2 s of CPU per process to import and to tear down. With them, the test
    above ran past its 60 s timeout on a busy 2-core machine, right after the session behind
    the link had printed "done": two interpreters starting and exiting at a few percent of a
    core, not a hang."""
    url = "http://127.0.0.1:1"
    argv = ["play", "--mpd", f"{url}/m.mpd", "--abr", url, "--attempts", "1", "--log"]
    code = (
        "import sys\n"
        "from streambed.cli import main\n"
        f"played = main({[*argv, str(tmp_path / 'a')]!r})\n"
        f"linked = main({[*argv, str(tmp_path / 'b'), '--trace', str(tmp_path / 'none.txt')]!r})\n"
        "heavy = ('torch', 'matplotlib', 'fastapi', 'uvicorn', 'gymnasium', 'pydantic', 'pandas',"
        " 'streambed.trainer', 'streambed.abr_service.app.schemas')\n"
        "print(played, linked, sorted(set(heavy) & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.splitlines()[-1] == "3 2 []", out.stdout + out.stderr


def test_play_argv_round_trips_a_config(tmp_path: Path) -> None:
    from streambed.cli import build_parser
    from streambed.commands.play import config_from_args
    from streambed.player.argv import play_argv

    config = PlayerConfig(
        mpd_url="http://127.0.0.1:8080/manifest.mpd",
        abr_url="http://127.0.0.1:8333",
        algorithm="bba",
        params={"reservoir_s": "8"},
        session_id="s-1",
        run_id="r",
        trace="norway_1",
        buffer_cap_s=30.5,
        sleep_step_s=0.25,
        decision_timeout_s=0.7,
        max_chunks=9,
        qoe="log",
        download_attempts=5,
        log_dir=tmp_path / "x",
    )
    argv = play_argv(config, via_link=False)
    assert argv[1:4] == ["-m", "streambed", "play"]
    assert config_from_args(build_parser().parse_args(argv[3:])) == config
    assert "--via-link" in play_argv(config)


def test_trace_without_the_emulation_package_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from streambed.cli import main

    monkeypatch.setitem(sys.modules, "streambed.emulation.link", None)  # import fails
    url = "http://127.0.0.1:1"
    argv = ["play", "--mpd", f"{url}/m.mpd", "--abr", url, "--log", str(tmp_path)]
    assert main([*argv, "--trace", str(tmp_path / "t.txt")]) == 2
    assert "--trace needs the emulation package" in capsys.readouterr().err


def test_cli_says_loudly_when_no_decision_came_from_the_service(
    origin: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A typo in --abr used to exit 0 with every chunk decided by local BBA.
    from streambed.cli import main

    typo = f"http://127.0.0.1:{free_port()}"
    argv = ["play", "--mpd", f"{origin}/{MPD_NAME}", "--abr", typo, "--max-chunks", "3"]
    assert main([*argv, "--log", str(tmp_path)]) == 4
    err = capsys.readouterr().err
    assert f"streambed play: no decision came from the decision service at {typo}" in err
    summary = json.loads((tmp_path / SESSION_JSON).read_text())
    assert (summary["status"], summary["exit_code"], summary["chunks"]) == ("no_service", 4, 3)
    assert "4 played to the end but no decision" in " ".join(run_cli("--help").stdout.split())


def test_service_with_another_video_is_a_warning(origin: str, tmp_path: Path) -> None:
    other = generate_video(
        seed=7,
        num_chunks=NUM_CHUNKS,
        chunk_s=CHUNK_S,
        name="other",
        bitrates_kbps=(200, 500, 900, 1500, 2500, 4000),
    )
    app = create_service(Settings(models_dir=tmp_path / "models"), videos=[other])
    with serve_in_thread(app) as abr:
        result = play_session(make_config(origin, abr, tmp_path, max_chunks=4))
    assert (result.status, result.exit_code) == ("done", 0)  # followed, but flagged
    summary = check_files(result, tmp_path)
    assert summary["service_decisions"] == 4
    [warning] = summary["warnings"]
    assert "the decision service's video differs from the MPD's" in warning


def test_refused_behind_a_netns_link_names_the_listening_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Behind a netns link, servers bound to 127.0.0.1 refuse: say where they must listen.
    monkeypatch.setenv("STREAMBED_LINK_KIND", "netns")
    monkeypatch.setenv("STREAMBED_HOST", "10.64.0.1")
    dead = f"http://127.0.0.1:{free_port()}"
    result = play_session(make_config(dead, dead, tmp_path, download_attempts=1))
    assert result.exit_code == 3
    assert "ConnectError" in (result.reason or "")
    assert "must listen on 0.0.0.0 or on 10.64.0.1" in (result.reason or "")
