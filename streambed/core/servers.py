"""Run an ASGI app under a real uvicorn server on a loopback port, in a background thread.

Used by tests and in-process tools that need a live HTTP endpoint; ``streambed serve`` and the
benchmarks run uvicorn in its own process instead.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

KEEP_ALIVE_S = 75
"""Seconds an idle keep-alive connection stays open in every server Streambed runs (uvicorn's
default is 5). A player idles longer than 5 s between requests whenever its buffer is full or a
chunk downloads slowly; a shorter server timeout than the client's races with the client's next
request, which then fails with "Server disconnected" (measured: 70 of 6,816 decisions in a
32-session emulation fell back to local BBA that way)."""


def run_server(app: Any, host: str, port: int, access_log: bool = False) -> None:
    """Serve ``app`` under uvicorn in the foreground until SIGINT/SIGTERM (the CLIs' servers)."""
    uvicorn.run(
        app,
        host=host,
        port=port,
        access_log=access_log,
        log_level="info",
        timeout_keep_alive=KEEP_ALIVE_S,
    )


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Yield the base URL (``http://host:port``) while ``app`` is served; stop it afterwards."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on {host}:{port}")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()
    try:
        yield f"http://{host}:{bound[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (for starting a server process on it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_healthy(
    url: str, proc: subprocess.Popen[Any] | None = None, timeout_s: float = 60.0
) -> str | None:
    """Poll ``url/healthz`` until it answers 200: None then, else why not (the process exited,
    or no answer within ``timeout_s``). For a server process started on a known port."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return None
        except httpx.HTTPError:
            pass
        if proc is not None and proc.poll() is not None:
            return f"exited with status {proc.returncode} at start-up"
        if time.monotonic() > deadline:
            return f"did not answer {url}/healthz within {timeout_s:.0f} s"
        time.sleep(0.1)
