"""The netns link's packet shaper: a process that forwards IP packets between two TUN devices.

``python -m streambed.emulation.shaper`` is started by ``streambed.emulation.netns`` with two TUN file descriptors:
the host side (the host's end of the link, address ``$STREAMBED_HOST``) and the namespace side
(the default route of the command's network namespace). Every packet read from one is written to
the other after passing Mahimahi's stages, in mm-delay-outside-mm-link order:

* downlink (host -> namespace): one-way delay, then the downlink ``PacketLink``;
* uplink (namespace -> host): the uplink ``PacketLink``, then the one-way delay.

All stage times are virtual: a packet's departure is the exact opportunity time and its release
from the delay is exactly ``delay_ms`` later, whenever the process actually wakes. A late wake-up
(the event loop sleeps in whole milliseconds) delays writes a little but never shifts the
schedule, so throughput follows the trace exactly.

The loop sleeps in ``epoll`` until a TUN fd is readable or the next stage event is due; it never
busy-waits. It ends when the control fd reaches end-of-file (the parent closed it or died) or on
SIGTERM, then writes its counters and CPU time as JSON to ``--stats``, among them
``down_by_port``: per TCP source port, the IP and TCP payload bytes the downlink delivered
(IPv4 and TCP header lengths parsed), so that players sharing a link can be checked against
what the origin's port sent. ``--downlink-log`` writes the downlink queue's events in mm-link's
``--downlink-log`` format (``streambed.emulation.schedule.DeliveryLog``). It prints one JSON
line on stdout when it forwards packets.

Only IPv4 packets are forwarded, and uplink packets only to the host address: the namespace
reaches the host and nothing else. Only the standard library is imported.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from streambed.core.linkkinds import FIRST_PACKET
from streambed.emulation.schedule import (
    DeliveryLog,
    PacketLink,
    Schedule,
    add_helper_arguments,
    write_epoch_file,
)

_READ_BATCH = 256  # packets read from one fd per wake-up before the others get a turn
_MAX_PACKET = 65536


def read_mahimahi(path: str) -> list[int]:
    """Timestamps of a Mahimahi trace file (already validated by the parent)."""
    return [int(tok) for tok in Path(path).read_text().split()]


class Shaper:
    """Both directions of one link and the counters the parent reads afterwards."""

    def __init__(
        self,
        down_ms: list[int],
        up_ms: list[int],
        delay_ms: float,
        start_ms: float | None,
        host_addr: bytes,
        limit_packets: int | None = None,
        limit_bytes: int | None = None,
        downlink_log: str | None = None,
    ) -> None:
        self.delay_ms = delay_ms
        self.downlink_log = downlink_log
        self.by_port: dict[int, list[int]] = {}
        """Downlink TCP traffic delivered per source port: [IP bytes, TCP payload bytes]."""
        self.host_addr = host_addr
        zero = 0.0 if start_ms is None else start_ms
        self.down = PacketLink(Schedule(down_ms, zero), limit_packets, limit_bytes)
        self.up = PacketLink(Schedule(up_ms, zero), limit_packets, limit_bytes)
        self.down_delay: deque[tuple[float, bytes]] = deque()
        self.up_delay: deque[tuple[float, bytes]] = deque()
        self.started = start_ms is not None
        """False until trace time 0 (``start_ms=None``: the first packet forwarded sets it)."""
        self.start_ms = start_ms
        self.on_start: Callable[[float], None] | None = None
        self.filtered = 0
        self.write_errors = 0
        self.wakeups = 0
        self.late_sum_ms = 0.0
        self.late_max_ms = 0.0
        if start_ms is not None:
            self._open_log(start_ms)

    def _open_log(self, start_ms: float) -> None:
        if self.downlink_log is not None:
            self.down.events = DeliveryLog(self.downlink_log, start_ms)

    def close_log(self) -> None:
        if self.down.events is not None:
            self.down.events.close()

    def count_delivered(self, packet: bytes) -> None:
        """Add a delivered downlink packet to its TCP source port's counters (IPv4 + TCP
        header lengths parsed; other protocols are not counted)."""
        if len(packet) < 20 or packet[9] != 6:
            return
        ihl = (packet[0] & 0x0F) * 4
        if len(packet) < ihl + 20:
            return
        total = int.from_bytes(packet[2:4], "big")
        sport = int.from_bytes(packet[ihl : ihl + 2], "big")
        doff = (packet[ihl + 12] >> 4) * 4
        counters = self.by_port.get(sport)
        if counters is None:
            counters = self.by_port[sport] = [0, 0]
        counters[0] += total
        counters[1] += max(0, total - ihl - doff)

    def start_clock(self, now_ms: float) -> None:
        """Trace time 0 is now: the session's first packet (both directions restart)."""
        self.started = True
        self.start_ms = now_ms
        self.down.schedule.restart(now_ms)
        self.up.schedule.restart(now_ms)
        self._open_log(now_ms)
        if self.on_start is not None:
            self.on_start(now_ms)

    def from_host(self, packet: bytes, now_ms: float) -> None:
        if not packet or packet[0] >> 4 != 4:
            self.filtered += 1
            return
        if not self.started:
            self.start_clock(now_ms)
        if self.delay_ms > 0:
            self.down_delay.append((now_ms + self.delay_ms, packet))
        else:
            self.down.enqueue(packet, now_ms)

    def from_namespace(self, packet: bytes, now_ms: float) -> None:
        if len(packet) < 20 or packet[0] >> 4 != 4 or packet[16:20] != self.host_addr:
            self.filtered += 1
            return
        if not self.started:
            self.start_clock(now_ms)
        self.up.enqueue(packet, now_ms)

    def step(self, now_ms: float, to_host: list[bytes], to_namespace: list[bytes]) -> None:
        """Run every stage up to ``now_ms``; collect the packets to write."""
        dd = self.down_delay
        while dd and dd[0][0] <= now_ms:
            ready, packet = dd.popleft()
            self.down.enqueue(packet, ready)
        out: list[tuple[float, bytes]] = []
        self.down.advance(now_ms, out)
        for _, packet in out:
            self.count_delivered(packet)
        to_namespace.extend(p for _, p in out)
        out.clear()
        self.up.advance(now_ms, out)
        if self.delay_ms > 0:
            self.up_delay.extend((t + self.delay_ms, p) for t, p in out)
            ud = self.up_delay
            while ud and ud[0][0] <= now_ms:
                to_host.append(ud.popleft()[1])
        else:
            to_host.extend(p for _, p in out)

    def next_event_ms(self) -> float | None:
        times = [
            t
            for t in (
                self.down_delay[0][0] if self.down_delay else None,
                self.down.next_event_ms(),
                self.up.next_event_ms(),
                self.up_delay[0][0] if self.up_delay else None,
            )
            if t is not None
        ]
        return min(times) if times else None


def _write_all(fd: int, packets: list[bytes], shaper: Shaper) -> None:
    for packet in packets:
        try:
            os.write(fd, packet)
        except OSError:  # the stack refused it (e.g. no route yet): a lost packet, as on a wire
            shaper.write_errors += 1
    packets.clear()


def _read_batch(fd: int, now_ms: float, sink: Callable[[bytes, float], None]) -> None:
    for _ in range(_READ_BATCH):
        try:
            packet = os.read(fd, _MAX_PACKET)
        except BlockingIOError:
            return
        sink(packet, now_ms)


def run(args: argparse.Namespace) -> int:
    start_wall = time.monotonic()
    down = read_mahimahi(args.down)
    # Trace time 0: the parent's; or now, when forwarding is about to start and the command
    # is started right after the ready line; or (first-packet) the command's first packet.
    first_packet = args.trace_start == FIRST_PACKET
    epoch = time.monotonic() if args.epoch is None else args.epoch
    shaper = Shaper(
        down,
        down if args.up == args.down else read_mahimahi(args.up),
        args.delay_ms,
        None if first_packet else epoch * 1000.0,
        socket.inet_aton(args.host_addr),
        args.queue_packets,
        args.queue_bytes,
        args.downlink_log,
    )
    if args.epoch_file:
        epoch_file = args.epoch_file

        def publish(start_ms: float) -> None:
            write_epoch_file(epoch_file, start_ms / 1000.0)

        shaper.on_start = publish
        if not first_packet:
            publish(epoch * 1000.0)
    host_fd, ns_fd, control_fd = args.host_fd, args.ns_fd, args.control_fd
    for fd in (host_fd, ns_fd):
        os.set_blocking(fd, False)
    ep = select.epoll()
    ep.register(host_fd, select.EPOLLIN)
    ep.register(ns_fd, select.EPOLLIN)
    ep.register(control_fd, select.EPOLLIN | select.EPOLLHUP)

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when the link ends
    to_host: list[bytes] = []
    to_ns: list[bytes] = []
    clock = time.monotonic
    # The parent starts the command only now: packets sent before would wait in the TUN queue.
    print(json.dumps({"ready": True, "epoch": None if first_packet else epoch}), flush=True)
    try:
        while True:
            due = shaper.next_event_ms()
            timeout = -1.0 if due is None else max(0.0, due / 1000.0 - clock())
            events = ep.poll(timeout)
            now_ms = clock() * 1000.0
            shaper.wakeups += 1
            if not events and due is not None:
                late = now_ms - due
                shaper.late_sum_ms += late
                shaper.late_max_ms = max(shaper.late_max_ms, late)
            for fd, _ in events:
                if fd == host_fd:
                    _read_batch(host_fd, now_ms, shaper.from_host)
                elif fd == ns_fd:
                    _read_batch(ns_fd, now_ms, shaper.from_namespace)
                elif not os.read(control_fd, 4096):
                    return 0
            shaper.step(now_ms, to_host, to_ns)
            if to_ns:
                _write_all(ns_fd, to_ns, shaper)
            if to_host:
                _write_all(host_fd, to_host, shaper)
    finally:
        shaper.close_log()
        if args.stats:
            _write_stats(args.stats, shaper, time.monotonic() - start_wall, args.host_dev)


def _tun_drops(dev: str | None) -> int | None:
    """Packets the host's TUN device dropped because this process read too slowly."""
    if dev is None:
        return None
    try:
        return int(Path(f"/sys/class/net/{dev}/statistics/tx_dropped").read_text())
    except (OSError, ValueError):
        return None


def _write_stats(path: str, shaper: Shaper, wall_s: float, host_dev: str | None) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    timed = max(1, shaper.wakeups)
    stats = {
        "down": asdict(shaper.down.counters),
        "up": asdict(shaper.up.counters),
        "filtered_packets": shaper.filtered,
        "write_errors": shaper.write_errors,
        "host_tun_drops": _tun_drops(host_dev),
        "wakeups": shaper.wakeups,
        "late_mean_ms": shaper.late_sum_ms / timed,
        "late_max_ms": shaper.late_max_ms,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "wall_s": wall_s,
        "epoch": None if shaper.start_ms is None else shaper.start_ms / 1000.0,
        "down_by_port": {
            str(port): {"ip_bytes": c[0], "payload_bytes": c[1]}
            for port, c in sorted(shaper.by_port.items())
        },
    }
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(stats, fh)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m streambed.emulation.shaper",
        description="Packet shaper between two TUN fds (started by the netns link).",
    )
    p.add_argument("--host-fd", type=int, required=True, help="TUN fd of the host side")
    p.add_argument("--ns-fd", type=int, required=True, help="TUN fd of the namespace side")
    p.add_argument("--host-addr", required=True, help="host address (uplink destination)")
    p.add_argument("--host-dev", help="host TUN device name (its drop counter goes in the stats)")
    add_helper_arguments(p, epoch_required=False)
    p.add_argument("--queue-packets", type=int, help="drop-tail limit in packets")
    p.add_argument("--queue-bytes", type=int, help="drop-tail limit in bytes")
    p.add_argument(
        "--downlink-log", help="write the downlink's events here (mm-link --downlink-log format)"
    )
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
