"""Cross traffic's server: a bulk TCP sender on the host, reached through a link like the origin.

``bulk_server()`` listens on 0.0.0.0 (a free port) and sends every client bytes as fast as TCP
takes them until the client closes; the downloader (``streambed.player.group``) connects behind
the link at a window's start and closes at its end. Bounded whatever a client does: at most
``max_connections`` at once (more are closed on accept) and each connection ends after
``max_duration_s`` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 32
MAX_DURATION_S = 900.0
_BLOCK = b"\0" * (1 << 16)


class BulkServer:
    """The server; ``port`` once started, ``sent`` bytes per finished connection."""

    def __init__(
        self,
        host: str = "0.0.0.0",
        max_connections: int = MAX_CONNECTIONS,
        max_duration_s: float = MAX_DURATION_S,
    ) -> None:
        self.max_connections = max_connections
        self.max_duration_s = max_duration_s
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._active = threading.Semaphore(max_connections)
        self.sent: list[int] = []
        self.refused = 0
        self._thread = threading.Thread(target=self._accept, name="cross-traffic", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._active.acquire(blocking=False):
                self.refused += 1
                conn.close()
                continue
            threading.Thread(target=self._send, args=(conn,), daemon=True).start()

    def _send(self, conn: socket.socket) -> None:
        sent = 0
        deadline = time.monotonic() + self.max_duration_s
        try:
            conn.settimeout(1.0)
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    sent += conn.send(_BLOCK)
                except TimeoutError:
                    continue
                except OSError:  # the client closed (reset, broken pipe): the normal end
                    break
        finally:
            conn.close()
            self.sent.append(sent)
            self._active.release()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(2.0)


@contextlib.contextmanager
def bulk_server(
    max_connections: int = MAX_CONNECTIONS, max_duration_s: float = MAX_DURATION_S
) -> Iterator[BulkServer]:
    """A started ``BulkServer`` on 0.0.0.0, closed on exit."""
    server = BulkServer("0.0.0.0", max_connections, max_duration_s)
    log.info("cross-traffic server on port %d", server.port)
    try:
        yield server
    finally:
        server.close()
