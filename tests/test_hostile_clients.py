"""Hostile and careless clients against real uvicorn servers on loopback: a slow decision does
not stall other clients, drip-fed requests are cut off, and neither starves /healthz."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from service_helpers import TOKEN

from streambed.abr_service.app.decision_log import DecisionLog
from streambed.abr_service.app.main import create_app
from streambed.abr_service.app.settings import Settings
from streambed.abr_service.video import default_video, generate_video
from streambed.cli import build_parser
from streambed.commands.serve import settings_from_args
from streambed.core.servers import serve_in_thread
from streambed.server.app import create_app as create_origin
from streambed.server.build import build_synthetic

LIMITS = {"head_timeout_s": 1.0, "body_timeout_s": 2.0}
CUT_OFF_WITHIN_S = 20.0  # generous: the bound is 1-2 s, the machine may be loaded


def _decision_app(tmp_path: Path, **overrides: Any) -> Any:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    settings = Settings(models_dir=tmp_path / "models", token_file=token, **overrides)
    return create_app(settings, videos=[default_video()])


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The decision service and the origin, both with short read deadlines."""
    tmp = tmp_path_factory.mktemp("hostile")
    root = tmp / "content"
    build_synthetic(generate_video(seed=1, num_chunks=2, bitrates_kbps=(300, 750)), root)
    with (
        serve_in_thread(_decision_app(tmp), **LIMITS) as service,
        serve_in_thread(create_origin(root), **LIMITS) as origin,
    ):
        yield {"service": service, "origin": origin}


def _connect(url: str) -> socket.socket:
    host, port = urlsplit(url).netloc.split(":")
    sock = socket.create_connection((host, int(port)), timeout=CUT_OFF_WITHIN_S + 10)
    return sock


def _read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    started = time.monotonic()
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data, time.monotonic() - started


@pytest.mark.parametrize("which", ["service", "origin"])
def test_drip_fed_requests_are_cut_off_and_healthz_answers(
    servers: dict[str, str], which: str
) -> None:
    url = servers[which]
    half_heads = [_connect(url) for _ in range(6)]
    for sock in half_heads:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    silent = _connect(url)  # connects and sends nothing at all
    body = _connect(url)  # a complete head, then a body that never finishes
    body.sendall(
        b"POST /decide HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b'{"session_id"'
    )
    try:
        for _ in range(3):  # while they hang, the server answers others
            r = httpx.get(f"{url}/healthz", timeout=10)
            assert r.status_code == 200
        for sock in half_heads:
            data, took = _read_until_closed(sock)
            assert took < CUT_OFF_WITHIN_S
            assert data.startswith(b"HTTP/1.1 408"), data
        data, took = _read_until_closed(silent)
        assert took < CUT_OFF_WITHIN_S
        data, took = _read_until_closed(body)
        assert took < CUT_OFF_WITHIN_S and b" 200 " not in data
    finally:
        for sock in (*half_heads, silent, body):
            sock.close()


@pytest.mark.parametrize("which", ["service", "origin"])
def test_idle_keep_alive_outlives_the_head_deadline(servers: dict[str, str], which: str) -> None:
    """The head deadline runs from a request's first byte, not between requests."""
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    with _connect(servers[which]) as sock:
        for _ in range(2):
            sock.sendall(request)
            data = sock.recv(65536)
            assert data.startswith(b"HTTP/1.1 200"), data
            time.sleep(LIMITS["head_timeout_s"] * 2.5)  # idle longer than the head deadline


@pytest.mark.parametrize("which", ["service", "origin"])
def test_an_endless_head_is_refused(servers: dict[str, str], which: str) -> None:
    with _connect(servers[which]) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        try:
            for _ in range(200):  # 200 KiB of headers, never ending the head
                sock.sendall(b"X-Pad: " + b"a" * 1000 + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            data, took = _read_until_closed(sock)
        except ConnectionResetError:
            data, took = b"", 0.0
    assert took < CUT_OFF_WITHIN_S
    assert data == b"" or data.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400")), data[:80]


def test_a_slow_decision_does_not_block_others(tmp_path: Path) -> None:
    """A session whose algorithm is stuck holds only itself up: /healthz, /metrics and other
    sessions answer, and its own next request waits for it (never runs beside it)."""
    app = _decision_app(tmp_path, algorithm="bba", first_quality=-1)
    engine = app.state.streambed.engine
    original = engine._select
    entered, release = threading.Event(), threading.Event()
    calls: list[tuple[str, int]] = []
    running: dict[str, int] = {}
    overlap: list[str] = []
    guard = threading.Lock()

    def select(session: Any, req: Any, active: Any) -> tuple[int, str | None]:
        with guard:
            running[req.session_id] = running.get(req.session_id, 0) + 1
            if running[req.session_id] > 1:
                overlap.append(req.session_id)
            calls.append((req.session_id, req.chunk_index))
        try:
            if req.session_id == "stuck":
                entered.set()
                release.wait(timeout=60)  # bounded, so old code fails rather than hangs
            return original(session, req, active)  # type: ignore[no-any-return]
        finally:
            with guard:
                running[req.session_id] -= 1

    engine._select = select
    first = {"session_id": "stuck", "chunk_index": 0, "buffer_s": 0.0}
    second = {
        **first,
        "chunk_index": 1,
        "last_quality": 0,
        "last_chunk_bytes": 100_000,
        "last_chunk_download_s": 0.5,
        "buffer_s": 4.0,
    }
    with serve_in_thread(app) as url, ThreadPoolExecutor(2) as pool:
        slow = pool.submit(httpx.post, f"{url}/decide", json=first, timeout=90)
        assert entered.wait(timeout=30), "the stuck decision never started"
        queued = pool.submit(httpx.post, f"{url}/decide", json=second, timeout=90)
        try:
            assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
            assert httpx.get(f"{url}/metrics", timeout=10).status_code == 200
            r = httpx.post(
                f"{url}/decide",
                json={"session_id": "other", "chunk_index": 0, "buffer_s": 0.0},
                timeout=10,
            )
            assert r.status_code == 200, r.text
            time.sleep(0.5)
            assert ("stuck", 1) not in calls  # waits behind the stuck one of its session
        finally:
            release.set()
        assert slow.result().status_code == 200
        assert queued.result().status_code == 200, queued.result().text
    assert calls.index(("stuck", 0)) < calls.index(("stuck", 1))
    assert overlap == []


def test_too_many_pending_decisions_get_503(tmp_path: Path) -> None:
    app = _decision_app(tmp_path, algorithm="bba", first_quality=-1, max_pending_decisions=1)
    engine = app.state.streambed.engine
    original = engine._select
    entered, release = threading.Event(), threading.Event()

    def select(session: Any, req: Any, active: Any) -> tuple[int, str | None]:
        entered.set()
        release.wait(timeout=60)
        return original(session, req, active)  # type: ignore[no-any-return]

    engine._select = select
    body = {"session_id": "a", "chunk_index": 0, "buffer_s": 0.0}
    with serve_in_thread(app) as url, ThreadPoolExecutor(1) as pool:
        slow = pool.submit(httpx.post, f"{url}/decide", json=body, timeout=90)
        assert entered.wait(timeout=30)
        try:
            r = httpx.post(f"{url}/decide", json={**body, "session_id": "b"}, timeout=10)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert "--max-pending-decisions" in r.json()["detail"]
        finally:
            release.set()
        assert slow.result().status_code == 200


def test_decision_log_writes_in_order_and_drops_when_full(tmp_path: Path) -> None:
    writer = DecisionLog(tmp_path, max_queued=100_000)
    for i in range(500):
        writer.write("s", f'{{"i": {i}}}')
    writer.close()
    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    assert lines == [f'{{"i": {i}}}' for i in range(500)]
    full = DecisionLog(tmp_path, max_queued=1)  # one slot: a burst outruns the writer
    for _ in range(1000):
        full.write("x", "line")
    full.close()
    assert full.dropped > 0
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 1000 - full.dropped


def test_timeouts_are_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser("serve").parse_args(
        ["serve", "--head-timeout-s", "3", "--body-timeout-s", "7", "--max-connections", "50"]
    )
    settings = settings_from_args(args)
    assert (settings.head_timeout_s, settings.body_timeout_s) == (3.0, 7.0)
    assert settings.max_connections == 50
    monkeypatch.setenv("STREAMBED_HEAD_TIMEOUT_S", "4.5")
    assert settings_from_args(build_parser("serve").parse_args(["serve"])).head_timeout_s == 4.5
    defaults = Settings()
    assert (defaults.body_timeout_s, defaults.max_connections) == (30.0, 1000)
