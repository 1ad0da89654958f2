"""The proxy link: a userspace TCP relay that paces byte streams by a trace (no privileges).

``python -m streambed.emulation.proxy --port P ...`` listens on ``127.0.0.1`` on a free port for each host
port ``P`` and relays every connection to ``TARGET:P``. It prints one JSON line,
``{"ports": {"P": listening_port, ...}}``, when it is ready. ``streambed.emulation.link`` exports that
mapping to the command as ``STREAMBED_PORT_<P>`` (with ``STREAMBED_HOST=127.0.0.1``).

The relay's own connections run over loopback (no RTT, no loss), so the TCP dynamics that cost
time on a real Mahimahi link are emulated here, at the byte-stream level:

* **Link.** Bytes of each direction wait the one-way delay, then share their direction's
  schedule across all connections in arrival order: each trace opportunity releases up to
  1451 payload bytes (what 1504 bytes of full 1500-byte packets carry: 1448 of every 1500 are
  payload, the TCP/IP overhead is charged as a fluid), and credit unused while nothing waits is
  lost; the trace repeats shifted by its last timestamp.
* **Handshake.** A new connection is not read until its SYN-ACK would have reached the client:
  the SYN leaves at the first uplink opportunity, takes the delay to the server, the SYN-ACK
  the delay back and the first downlink opportunity after that. The request then takes the
  uplink (delay and opportunity), so a response's first byte arrives after 4 delays plus 4
  opportunity waits, as on a real link.
* **Slow start.** Per connection and direction, the sender may have at most ``cwnd`` bytes
  released to the link and not yet acknowledged. ``cwnd`` starts at 10 x 1448 bytes (Linux's
  initial window). A chunk delivered to the receiver at ``t`` is acknowledged at the sender at
  the first opportunity of the reverse direction after ``t`` plus the delay (acknowledgements
  take no capacity), and each acknowledged byte frees its byte and, while the sender uses at
  least half its window (Linux's cwnd-limited rule), adds one byte to ``cwnd``: the window
  doubles every emulated round trip until it covers the pipe, after which only the trace
  limits. There is no congestion avoidance: the emulated queue is unbounded and loses nothing.
* **Slow start after idle** (Linux's default, ``tcp_slow_start_after_idle=1``): when a sender
  with nothing in flight sends after an idle time longer than its RTO, here the base round
  trip (2 delays and the two directions' mean opportunity waits) plus Linux's 200 ms minimum,
  its window halves for every RTO idle, down to the initial window.
* End-of-stream is relayed in order after the bytes before it (half-close is kept).

What it does not emulate: packets (no segment boundaries, no small-packet overhead, Nagle or
delayed acknowledgements), losses, retransmissions and drop-tail queues (the link refuses queue
limits), queueing delay in the RTO, receive windows, and congestion-control variants other than
slow start. Transfer times follow ``streambed.emulation.analytic.proxy_transfer_s``, which is within a
few per cent of ``tcp_transfer_s`` (the model real Mahimahi and the netns link match).

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
from collections import deque
from collections.abc import Hashable
from typing import Any

from streambed.core.linkkinds import FIRST_PACKET
from streambed.emulation.analytic import INITIAL_WINDOW_BYTES, PROXY_PAYLOAD_PER_OPPORTUNITY
from streambed.emulation.schedule import (
    ByteLink,
    Schedule,
    add_helper_arguments,
    write_epoch_file,
)
from streambed.emulation.shaper import read_mahimahi

_HIGH_WATER = 1 << 20  # buffered bytes of one stream at which its sender stops being read
_LOW_WATER = 1 << 18
RTO_MIN_MS = 200.0  # Linux's TCP_RTO_MIN: the RTO is about the RTT plus this when RTTs are stable


class Flow:
    """One direction of one connection: bytes waiting for the sender's congestion window."""

    __slots__ = ("backlog", "backlog_bytes", "cwnd", "inflight", "last_send_ms", "offset", "peak")

    def __init__(self) -> None:
        self.backlog: deque[bytes | None] = deque()
        self.offset = 0  # bytes of the head chunk already released
        self.backlog_bytes = 0
        self.cwnd = INITIAL_WINDOW_BYTES
        self.inflight = 0  # released to the link, not yet acknowledged
        self.peak = 0  # most bytes in flight since the window last restarted
        self.last_send_ms = 0.0


def _mean_wait_ms(ms: list[int]) -> float:
    return 0.5 * max(1.0, ms[-1] / len(ms))


class Relay:
    """Both directions' schedules, the connections' windows and the timer that drives them."""

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
        credit = PROXY_PAYLOAD_PER_OPPORTUNITY
        self.links = {
            "down": ByteLink(Schedule(down_ms, epoch_s * 1000.0), credit),
            "up": ByteLink(Schedule(up_ms, epoch_s * 1000.0), credit),
        }
        self.down, self.up = self.links["down"], self.links["up"]
        self.rto_ms = 2 * delay_ms + _mean_wait_ms(down_ms) + _mean_wait_ms(up_ms) + RTO_MIN_MS
        # Acknowledgements on their way back to each direction's sender: (due_ms, conn, bytes),
        # due times non-decreasing within a direction.
        self._acks: dict[str, deque[tuple[float, Conn, int]]] = {"down": deque(), "up": deque()}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._paused: set[tuple[str, Conn]] = set()
        self.connections = 0
        self.restarts = 0
        self.started = True
        self.epoch_s = epoch_s
        self.epoch_file: str | None = None

    def start_clock(self, now_ms: float) -> None:
        """Trace time 0 is now (first-packet: the command's first connection)."""
        self.started = True
        self.epoch_s = now_ms / 1000.0
        self.down.schedule.restart(now_ms)
        self.up.schedule.restart(now_ms)
        if self.epoch_file:
            write_epoch_file(self.epoch_file, self.epoch_s)

    def handshake_done_ms(self, now_ms: float) -> float:
        """When a SYN sent at ``now_ms`` has its SYN-ACK back at the client."""
        syn_at_server = self.up.schedule.first_after(now_ms) + self.delay_ms
        return self.down.schedule.first_after(syn_at_server + self.delay_ms)

    def push(self, direction: str, conn: Conn, data: bytes | None) -> None:
        flow = conn.flows[direction]
        flow.backlog.append(data)
        if data:
            flow.backlog_bytes += len(data)
        self._send(direction, conn, flow, time.monotonic() * 1000.0)
        if data and self._buffered(direction, conn) > _HIGH_WATER:
            conn.pause_source(direction)
            self._paused.add((direction, conn))
        self._arm()

    def _buffered(self, direction: str, conn: Conn) -> int:
        return conn.flows[direction].backlog_bytes + self.links[direction].queued.get(conn, 0)

    def _send(self, direction: str, conn: Conn, flow: Flow, now_ms: float) -> None:
        """Release what the window allows of ``flow``'s backlog to the link, sent at ``now_ms``."""
        backlog = flow.backlog
        if not backlog:
            return
        link = self.links[direction]
        ready = now_ms + self.delay_ms
        if not flow.inflight and flow.cwnd > INITIAL_WINDOW_BYTES:
            idle = now_ms - flow.last_send_ms
            if idle > self.rto_ms:
                self.restarts += 1
                while idle > self.rto_ms and flow.cwnd > INITIAL_WINDOW_BYTES:
                    flow.cwnd //= 2
                    idle -= self.rto_ms
                flow.cwnd = max(flow.cwnd, INITIAL_WINDOW_BYTES)
                flow.peak = 0
        sent = False
        while backlog:
            head = backlog[0]
            if head is None:
                backlog.popleft()
                link.push(conn, None, ready)
                continue
            room = flow.cwnd - flow.inflight
            if room <= 0:
                break
            left = len(head) - flow.offset
            if left <= room and not flow.offset:
                piece = head
            else:
                piece = head[flow.offset : flow.offset + room]
            n = len(piece)
            if n == left:
                backlog.popleft()
                flow.offset = 0
            else:
                flow.offset += n
            flow.backlog_bytes -= n
            flow.inflight += n
            link.push(conn, piece, ready)
            sent = True
        if sent:
            flow.last_send_ms = now_ms
            if flow.inflight > flow.peak:
                flow.peak = flow.inflight

    def _acked(self, direction: str, conn: Conn, nbytes: int, at_ms: float) -> None:
        flow = conn.flows[direction]
        flow.inflight -= nbytes
        if flow.cwnd < 2 * flow.peak:  # slow start while cwnd-limited
            flow.cwnd += nbytes
        self._send(direction, conn, flow, at_ms)

    def discard(self, conn: Conn) -> None:
        self.down.discard(conn)
        self.up.discard(conn)
        self._paused = {item for item in self._paused if item[1] is not conn}

    def _arm(self) -> None:
        times = [t for t in (self.down.next_event_ms(), self.up.next_event_ms()) if t is not None]
        times += [acks[0][0] for acks in self._acks.values() if acks]
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
        for direction, acks in self._acks.items():
            while acks and acks[0][0] <= now_ms:
                at_ms, conn, nbytes = acks.popleft()
                if not conn.closed:
                    self._acked(direction, conn, nbytes, at_ms)
        out: list[tuple[Hashable, bytes | None]] = []
        for direction, link in self.links.items():
            link.advance(now_ms, out)
            if not out:
                continue
            delivered: dict[Conn, int] = {}
            for key, data in out:
                assert isinstance(key, Conn)
                if direction == "down":
                    key.to_client(data)
                else:
                    key.to_server(data)
                if data:
                    delivered[key] = delivered.get(key, 0) + len(data)
            out.clear()
            if delivered:
                reverse = self.up if direction == "down" else self.down
                due = reverse.schedule.first_after(now_ms) + self.delay_ms
                acks = self._acks[direction]
                acks.extend((due, key, n) for key, n in delivered.items())
        for item in list(self._paused):
            direction, conn = item
            if self._buffered(direction, conn) < _LOW_WATER:
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
        self.flows = {"down": Flow(), "up": Flow()}

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
        now_ms = time.monotonic() * 1000.0
        if not relay.started:
            relay.start_clock(now_ms)
        # The client's connect returned at once; hold its bytes back for the handshake.
        ready_ms = relay.handshake_done_ms(now_ms)
        relay.loop.call_at(ready_ms / 1000.0, self._start_reading)
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
    relay.epoch_file = args.epoch_file
    if args.trace_start == FIRST_PACKET:
        relay.started = False
    elif args.epoch_file:
        write_epoch_file(args.epoch_file, args.epoch)
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
        "window_restarts": relay.restarts,
        "epoch": relay.epoch_s if relay.started else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m streambed.emulation.proxy",
        description="Trace-paced TCP relay (started by the proxy link).",
    )
    p.add_argument("--port", type=int, action="append", required=True, help="host port to relay")
    p.add_argument("--listen-host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--target-host", default="127.0.0.1", help="where the host's servers are")
    add_helper_arguments(p, epoch_required=True)
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
