"""Run an ASGI app under a real uvicorn server on a loopback port, in a background thread.

Used by tests and in-process tools that need a live HTTP endpoint; ``streambed serve`` and the
benchmarks run uvicorn in its own process instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import h11
import httpx
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from streambed.core.errors import ConfigError

log = logging.getLogger(__name__)

KEEP_ALIVE_S = 75
"""Seconds an idle keep-alive connection stays open in every server Streambed runs (uvicorn's
default is 5). A player idles longer than 5 s between requests whenever its buffer is full or a
chunk downloads slowly; a shorter server timeout than the client's races with the client's next
request, which then fails with "Server disconnected" (measured: 70 of 6,816 decisions in a
32-session emulation fell back to local BBA that way)."""


HEAD_TIMEOUT_S = 10.0
"""Default seconds from a connection's start, or a request's first byte, to its complete head."""
BODY_TIMEOUT_S = 30.0
"""Default seconds from a request's complete head to its complete body."""
MAX_CONNECTIONS = 1000
"""Default connections (and running requests) at once; beyond it requests get 503."""
MAX_HEAD_BYTES = 64 * 1024
"""Largest request head (request line and headers); larger is refused with 431."""

_TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 24\r\nconnection: close\r\n\r\nrequest was not complete"
)
_TOO_LARGE_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8"
    b"\r\ncontent-length: 22\r\nconnection: close\r\n\r\nrequest head too large"
)


class _ReadDeadline:
    """Closes a connection whose request head or body does not arrive in time.

    uvicorn has no such timeout: its keep-alive timer stops at the first byte, so a client that
    drip-feeds a header holds the connection (and its memory) for ever. Mixed into uvicorn's
    protocol classes; ``head_timeout_s`` runs from the connection's start or the first byte of
    a request, ``body_timeout_s`` from the end of the head to the end of the body. While the
    app works on a request, no deadline runs.
    """

    head_timeout_s: float = HEAD_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S
    max_head_bytes: int = MAX_HEAD_BYTES
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    cycle: Any

    _deadline: asyncio.TimerHandle | None = None
    _phase = "idle"  # idle (or the app runs), head, body
    _head_bytes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm("head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self, phase: str) -> None:
        self._disarm()
        self._phase = phase
        self._head_bytes = 0
        timeout = self.head_timeout_s if phase == "head" else self.body_timeout_s
        self._deadline = self.loop.call_later(timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = "idle"

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        log.info("closing a connection whose request %s took too long", self._phase)
        if self._phase == "head" and (self.cycle is None or self.cycle.response_complete):
            self.transport.write(_TIMEOUT_408)
        self.transport.close()

    def _before_data(self, size: int) -> None:
        if self._phase == "idle":
            self._arm("head")
        if self._phase == "head":
            self._head_bytes += size

    def _head_too_large(self) -> bool:
        """After the data is parsed: refuse a head still incomplete past the limit."""
        if self._phase != "head" or self._head_bytes <= self.max_head_bytes:
            return False
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(_TOO_LARGE_431)
            self.transport.close()
        return True


class GuardedH11Protocol(_ReadDeadline, H11Protocol):
    def data_received(self, data: bytes) -> None:
        self._before_data(len(data))
        super().data_received(data)
        self._follow_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_state()

    def _follow_state(self) -> None:
        if self.transport.is_closing() or self._head_too_large():
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY and self._phase != "body":
            self._arm("body")
        elif state is h11.IDLE and self._phase == "idle" and self.conn.trailing_data[0]:
            self._arm("head")  # part of a pipelined head waits in h11's buffer
        elif state is not h11.IDLE and state is not h11.SEND_BODY:
            self._disarm()


def _httptools_protocol() -> type | None:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # httptools is not installed: h11 only
        return None

    class GuardedHttpToolsProtocol(_ReadDeadline, HttpToolsProtocol):
        def data_received(self, data: bytes) -> None:
            self._before_data(len(data))
            super().data_received(data)
            if not self.transport.is_closing():
                self._head_too_large()

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._arm("body")

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._disarm()

    return GuardedHttpToolsProtocol


def http_protocol(
    head_timeout_s: float = HEAD_TIMEOUT_S,
    body_timeout_s: float = BODY_TIMEOUT_S,
    max_head_bytes: int = MAX_HEAD_BYTES,
) -> type:
    """uvicorn's fastest HTTP/1.1 protocol class with the read deadlines of :class:`_ReadDeadline`
    (``uvicorn.Config(http=...)``)."""
    base = _httptools_protocol() or GuardedH11Protocol
    return type(
        base.__name__,
        (base,),
        {
            "head_timeout_s": head_timeout_s,
            "body_timeout_s": body_timeout_s,
            "max_head_bytes": max_head_bytes,
        },
    )


def server_config(
    app: Any,
    host: str,
    port: int,
    *,
    access_log: bool = False,
    log_level: str = "info",
    head_timeout_s: float = HEAD_TIMEOUT_S,
    body_timeout_s: float = BODY_TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
) -> uvicorn.Config:
    """The uvicorn configuration every Streambed server runs with: keep-alive, read deadlines,
    a bounded head and a bounded number of connections."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=access_log,
        log_level=log_level,
        timeout_keep_alive=KEEP_ALIVE_S,
        http=http_protocol(head_timeout_s, body_timeout_s),
        limit_concurrency=max_connections,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
    )


def run_server(
    app: Any,
    host: str,
    port: int,
    access_log: bool = False,
    *,
    head_timeout_s: float = HEAD_TIMEOUT_S,
    body_timeout_s: float = BODY_TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
) -> None:
    """Serve ``app`` under uvicorn in the foreground until SIGINT/SIGTERM (the CLIs' servers)."""
    config = server_config(
        app,
        host,
        port,
        access_log=access_log,
        head_timeout_s=head_timeout_s,
        body_timeout_s=body_timeout_s,
        max_connections=max_connections,
    )
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises it after shutting down
        uvicorn.Server(config).run()


@contextmanager
def serve_in_thread(
    app: Any, host: str = "127.0.0.1", port: int = 0, **limits: Any
) -> Iterator[str]:
    """Yield the base URL (``http://host:port``) while ``app`` is served; stop it afterwards.
    ``limits``: ``head_timeout_s``, ``body_timeout_s``, ``max_connections`` of
    :func:`server_config`."""
    config = server_config(app, host, port, log_level="warning", **limits)
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


def check_bindable(host: str, port: int) -> None:
    """Raise ConfigError (one line) unless a server could listen on ``host:port`` now: checked
    before a command logs "listening" or loads anything, rather than uvicorn failing later
    with a traceback-like report. Port 0 (any free port) always can."""
    if port == 0:
        return
    if not 0 < port <= 65535:
        raise ConfigError(f"port {port}: must be 0..65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: unknown address ({exc})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        # As uvicorn binds: SO_REUSEADDR, so a port in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            why = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            raise ConfigError(f"cannot listen on {host}:{port}: {why}") from None


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
