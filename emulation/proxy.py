"""The proxy link: a userspace TCP relay that paces byte streams by a trace (no privileges).

``python -m emulation.proxy --port P ...`` listens on ``127.0.0.1`` on a free port for each host
port ``P`` and relays every connection to ``TARGET:P``. It prints one JSON line,
``{"ports": {"P": listening_port, ...}}``, when it is ready. ``emulation.link`` exports that
mapping to the command as ``STREAMBED_PORT_<P>`` (with ``STREAMBED_HOST=127.0.0.1``).

Semantics, an approximation of the trace at the byte-stream level (no packets, no losses, no
TCP dynamics on the shaped path):

* server -> client bytes (downlink) and client -> server bytes (uplink) each wait the one-way
  delay, then share their direction's schedule across all connections in arrival order: each
  trace opportunity releases up to 1504 bytes of payload (no header overhead is charged), and
  credit unused while nothing waits is lost; the trace repeats shifted by its last timestamp;
* a new connection is not read for two one-way delays after it is accepted, standing in for
  the TCP handshake the client did not wait for, so a request's first byte arrives after
  4 x delay, as on a real link;
* end-of-stream is relayed in order after the bytes before it (half-close is kept).

It stops when the control fd reaches end-of-file or on SIGTERM, and writes its counters and CPU
time as JSON to ``--stats``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import resource
import signal
import sys
import time
from collections.abc import Hashable
from typing import Any

from emulation.schedule import ByteLink, Schedule
from emulation.shaper import read_mahimahi

_HIGH_WATER = 1 << 20  # queued bytes of one stream at which its sender stops being read
_LOW_WATER = 1 << 18


class Relay:
    """Both directions' schedules and the timer that drives them."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        down_ms: list[int],
        up_ms: list[int],
        delay_ms: float,
        epoch_s: float,
        target_host: str,
    ) -> None:
        self.loop = loop
        self.delay_ms = delay_ms
        self.target_host = target_host
        self.down = ByteLink(Schedule(down_ms, epoch_s * 1000.0))
        self.up = ByteLink(Schedule(up_ms, epoch_s * 1000.0))
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._paused: set[tuple[str, Conn]] = set()
        self.connections = 0

    def push(self, direction: str, conn: Conn, data: bytes | None) -> None:
        link = self.down if direction == "down" else self.up
        link.push(conn, data, time.monotonic() * 1000.0 + self.delay_ms)
        if data and link.queued.get(conn, 0) > _HIGH_WATER:
            conn.pause_source(direction)
            self._paused.add((direction, conn))
        self._arm()

    def discard(self, conn: Conn) -> None:
        self.down.discard(conn)
        self.up.discard(conn)
        self._paused = {item for item in self._paused if item[1] is not conn}

    def _arm(self) -> None:
        times = [t for t in (self.down.next_event_ms(), self.up.next_event_ms()) if t is not None]
        if not times:
            return
        when = min(times) / 1000.0
        if self._timer is not None:
            if self._timer_at <= when:
                return
            self._timer.cancel()
        self._timer_at = when
        self._timer = self.loop.call_at(when, self._tick)

    def _tick(self) -> None:
        self._timer = None
        now_ms = time.monotonic() * 1000.0
        out: list[tuple[Hashable, bytes | None]] = []
        self.down.advance(now_ms, out)
        for conn, data in out:
            assert isinstance(conn, Conn)
            conn.to_client(data)
        out.clear()
        self.up.advance(now_ms, out)
        for conn, data in out:
            assert isinstance(conn, Conn)
            conn.to_server(data)
        for item in list(self._paused):
            direction, conn = item
            link = self.down if direction == "down" else self.up
            if link.queued.get(conn, 0) < _LOW_WATER:
                conn.resume_source(direction)
                self._paused.discard(item)
        self._arm()


class Conn:
    """One relayed connection: the accepted client transport and the upstream one."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.client: asyncio.Transport | None = None
        self.server: asyncio.Transport | None = None
        self.pending: list[bytes | None] = []  # uplink bytes due before the upstream connected
        self.closed = False
        self.eofs = 0

    def pause_source(self, direction: str) -> None:
        source = self.server if direction == "down" else self.client
        if source is not None and not source.is_closing():
            source.pause_reading()

    def resume_source(self, direction: str) -> None:
        source = self.server if direction == "down" else self.client
        if source is not None and not source.is_closing():
            source.resume_reading()

    def to_client(self, data: bytes | None) -> None:
        self._deliver(self.client, data)

    def to_server(self, data: bytes | None) -> None:
        if self.server is None:
            self.pending.append(data)
        else:
            self._deliver(self.server, data)

    def _deliver(self, transport: asyncio.Transport | None, data: bytes | None) -> None:
        if transport is None or transport.is_closing():
            return
        if data is not None:
            transport.write(data)
            return
        self.eofs += 1
        if self.eofs == 2 or not transport.can_write_eof():
            self.close()
        else:
            transport.write_eof()

    def server_connected(self, transport: asyncio.Transport) -> None:
        self.server = transport
        for data in self.pending:
            self._deliver(transport, data)
        self.pending.clear()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.relay.discard(self)
        for transport in (self.client, self.server):
            if transport is not None:
                transport.close()


class ClientSide(asyncio.Protocol):
    def __init__(self, relay: Relay, target_port: int) -> None:
        self.conn = Conn(relay)
        self.target_port = target_port

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        relay = self.conn.relay
        relay.connections += 1
        self.conn.client = transport
        transport.pause_reading()
        # The client's connect returned at once; hold its bytes back for the handshake's RTT.
        relay.loop.call_later(2 * relay.delay_ms / 1000.0, self._start_reading)
        task = relay.loop.create_task(self._connect_upstream())
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    def _start_reading(self) -> None:
        client = self.conn.client
        if client is not None and not client.is_closing():
            client.resume_reading()

    async def _connect_upstream(self) -> None:
        relay = self.conn.relay
        try:
            transport, _ = await relay.loop.create_connection(
                lambda: ServerSide(self.conn), relay.target_host, self.target_port
            )
        except OSError:
            self.conn.close()
            return
        if self.conn.closed:
            transport.close()
            return
        assert isinstance(transport, asyncio.Transport)
        self.conn.server_connected(transport)

    def data_received(self, data: bytes) -> None:
        self.conn.relay.push("up", self.conn, data)

    def eof_received(self) -> bool:
        self.conn.relay.push("up", self.conn, None)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.close()


class ServerSide(asyncio.Protocol):
    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def data_received(self, data: bytes) -> None:
        self.conn.relay.push("down", self.conn, data)

    def eof_received(self) -> bool:
        self.conn.relay.push("down", self.conn, None)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        # Deliver what is still queued, then end the client's stream.
        if not self.conn.closed and exc is not None:
            self.conn.relay.push("down", self.conn, None)


async def serve(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    relay = Relay(
        loop,
        read_mahimahi(args.down),
        read_mahimahi(args.up),
        args.delay_ms,
        args.epoch,
        args.target_host,
    )
    servers = []
    mapping: dict[str, int] = {}
    for port in args.port:
        server = await loop.create_server(
            functools.partial(ClientSide, relay, port), args.listen_host, 0
        )
        servers.append(server)
        mapping[str(port)] = server.sockets[0].getsockname()[1]
    print(json.dumps({"ports": mapping}), flush=True)

    stop = asyncio.Event()

    def on_control() -> None:
        if not os.read(args.control_fd, 4096):
            stop.set()

    loop.add_reader(args.control_fd, on_control)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for server in servers:
        server.close()
    return {
        "down": {"bytes": relay.down.bytes_out},
        "up": {"bytes": relay.up.bytes_out},
        "connections": relay.connections,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m emulation.proxy",
        description="Trace-paced TCP relay (started by the proxy link).",
    )
    p.add_argument("--port", type=int, action="append", required=True, help="host port to relay")
    p.add_argument("--listen-host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--target-host", default="127.0.0.1", help="where the host's servers are")
    p.add_argument("--control-fd", type=int, required=True, help="stop at end-of-file")
    p.add_argument("--down", required=True, help="downlink Mahimahi trace")
    p.add_argument("--up", required=True, help="uplink Mahimahi trace")
    p.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay per direction")
    p.add_argument("--epoch", type=float, required=True, help="time.monotonic() of trace start")
    p.add_argument("--stats", help="write counters as JSON here on exit")
    args = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when the link ends
    start = time.monotonic()
    stats = asyncio.run(serve(args))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stats["cpu_s"] = usage.ru_utime + usage.ru_stime
    stats["wall_s"] = time.monotonic() - start
    if args.stats:
        with contextlib.suppress(OSError), open(args.stats, "w") as fh:
            json.dump(stats, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
