"""Mahimahi's link semantics: a delivery schedule and the queues that consume it.

Times are milliseconds (floats) on one monotonic clock; sizes are bytes.

A Mahimahi trace is a list of integer millisecond timestamps. Each timestamp is one delivery
opportunity of ``OPPORTUNITY_BYTES`` (1504) bytes, counted from the link's start. The schedule
repeats forever, each repetition shifted by the last timestamp (the period), so a trace
``[0, 5, 10]`` gives opportunities at 0, 5, 10, 10, 15, 20, 20, ... (the repeated 0 lands on 10).

A packet queue (``PacketLink``) consumes the schedule as mm-link does:

* an opportunity at time ``T`` serves only packets that arrived before ``T`` (strictly; mm-link
  burns the opportunities of the current millisecond before it enqueues a packet);
* it carries 1504 bytes: a 1500-byte packet leaves in one opportunity, a larger one spans
  several, and the bytes left over serve the next packets in the queue (several small packets
  leave in one opportunity);
* a packet leaves at the opportunity that carries its last byte;
* credit unused while the queue is empty is lost (opportunities are never banked);
* an optional drop-tail limit in packets and/or bytes applies to the waiting packets (not the one
  being transmitted), as mm-link's ``droptail`` queue.

``ByteLink`` applies the same schedule to byte streams (the userspace proxy): each opportunity
releases up to 1504 bytes (or a given payload credit) from a FIFO of chunks that belong to
several connections.

Only the standard library is imported: the shaper process starts fast and stays small.
"""

from __future__ import annotations

import argparse
import json
import os
from bisect import bisect_right
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from streambed.core.linkkinds import READY, TRACE_STARTS

#: Bytes delivered per trace opportunity: a 1500-byte MTU plus the 4 bytes mm-link adds.
OPPORTUNITY_BYTES = 1504


def add_helper_arguments(parser: argparse.ArgumentParser, *, epoch_required: bool) -> None:
    """The flags both link helpers (the netns shaper and the proxy) take from the link."""
    parser.add_argument("--control-fd", type=int, required=True, help="stop at end-of-file")
    parser.add_argument("--down", required=True, help="downlink Mahimahi trace")
    parser.add_argument("--up", required=True, help="uplink Mahimahi trace")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay per direction")
    parser.add_argument(
        "--epoch",
        type=float,
        required=epoch_required,
        help="time.monotonic() of trace start" + ("" if epoch_required else " (default: ready)"),
    )
    parser.add_argument(
        "--trace-start",
        choices=TRACE_STARTS,
        default=READY,
        help="trace time 0: --epoch or when ready, or the command's first packet (connection)",
    )
    parser.add_argument("--epoch-file", help="write trace time 0 (monotonic s) here as JSON")
    parser.add_argument("--stats", help="write counters as JSON here on exit")


def write_epoch_file(path: str, epoch_s: float) -> None:
    """Publish trace time 0 (``time.monotonic()`` seconds) for the command behind the link."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump({"epoch": epoch_s}, fh)
    os.replace(tmp, path)


class Schedule:
    """The repeating delivery opportunities of a Mahimahi trace, consumed in order."""

    __slots__ = ("_base", "_i", "_ms", "_n", "_period", "_start")

    def __init__(self, ms: Sequence[int], start_ms: float = 0.0) -> None:
        if not ms:
            raise ValueError("a Mahimahi trace needs at least one timestamp")
        if any(b < a for a, b in zip(ms, ms[1:], strict=False)) or ms[0] < 0:
            raise ValueError("Mahimahi timestamps must be non-negative and non-decreasing")
        if ms[-1] <= 0:
            raise ValueError("the last Mahimahi timestamp (the period) must be > 0 ms")
        self._ms = list(ms)
        self._n = len(self._ms)
        self._period = self._ms[-1]
        self._start = float(start_ms)
        self._base = self._start
        self._i = 0

    @property
    def period_ms(self) -> int:
        return self._period

    @property
    def next_ms(self) -> float:
        """Time of the next unused opportunity."""
        return self._base + self._ms[self._i]

    def first_after(self, t_ms: float) -> float:
        """Time of the first opportunity strictly after ``t_ms``, used or not (consumes nothing).

        For packets too small to matter for the link's capacity (handshakes, acknowledgements).
        """
        rel = t_ms - self._start
        if rel < self._ms[0]:
            return self._start + self._ms[0]
        cycles = int(rel // self._period)
        rel -= cycles * self._period
        i = bisect_right(self._ms, rel)
        while i == self._n:  # past the period's last opportunity: the next repetition
            cycles += 1
            rel -= self._period
            i = bisect_right(self._ms, rel)
        return self._start + cycles * self._period + self._ms[i]

    def restart(self, start_ms: float) -> None:
        """Move trace time 0 to ``start_ms`` (before any opportunity was used)."""
        self._start = self._base = float(start_ms)
        self._i = 0

    def advance(self) -> None:
        """Consume the next opportunity."""
        self._i += 1
        if self._i == self._n:
            self._i = 0
            self._base += self._period

    def skip_past(self, t_ms: float) -> None:
        """Drop every opportunity at or before ``t_ms`` (they pass while the link is idle)."""
        if self.next_ms > t_ms:
            return
        rel = t_ms - self._base
        cycles = int(rel // self._period)
        if cycles > 0:
            self._base += cycles * self._period
            rel -= cycles * self._period
        i = bisect_right(self._ms, rel)
        # rel < period == ms[-1] normally; the loop guards float rounding at the boundary.
        while i == self._n:
            self._base += self._period
            rel -= self._period
            i = bisect_right(self._ms, rel)
        self._i = i


class DeliveryLog:
    """One direction's events in mm-link's ``--downlink-log`` format, so one parser
    (``streambed.reports.delivery``) reads the shaper's and Mahimahi's logs.

    Header comment lines (``# base timestamp: T``: trace time 0, ms, on the log's clock), then
    one line per event, ``t`` in whole milliseconds on the same clock: ``t # 1504`` a delivery
    opportunity (also while the queue is idle), ``t + B`` a B-byte packet's arrival at the
    queue, ``t - B D`` its departure after D ms in the queue, ``t d N B`` N packets (B bytes)
    dropped on arrival (after their ``+`` line, as mm-link). The shaper's
    clock is ``time.monotonic()`` in ms, so ``# base monotonic s`` repeats T in seconds.
    """

    __slots__ = ("_fh",)

    def __init__(self, path: str, base_ms: float, title: str = "downlink") -> None:
        self._fh = open(path, "w", buffering=1 << 16)  # noqa: SIM115 (closed by close())
        base = int(base_ms)
        self._fh.write(
            f"# streambed shaper ({title})\n# init timestamp: {base}\n"
            f"# base timestamp: {base}\n# base monotonic s: {base_ms / 1000.0!r}\n"
        )

    def opportunity(self, t_ms: float) -> None:
        self._fh.write(f"{int(t_ms)} # {OPPORTUNITY_BYTES}\n")

    def arrival(self, t_ms: float, size: int) -> None:
        self._fh.write(f"{int(t_ms)} + {size}\n")

    def departure(self, t_ms: float, size: int, arrival_ms: float) -> None:
        self._fh.write(f"{int(t_ms)} - {size} {int(t_ms) - int(arrival_ms)}\n")

    def drop(self, t_ms: float, size: int) -> None:
        self._fh.write(f"{int(t_ms)} d 1 {size}\n")

    def close(self) -> None:
        self._fh.close()


@dataclass
class QueueCounters:
    """What one direction of a link carried."""

    packets: int = 0
    bytes: int = 0
    dropped_packets: int = 0
    dropped_bytes: int = 0
    max_packet_bytes: int = 0
    max_queue_packets: int = 0


class PacketLink:
    """One direction of an mm-link: a FIFO of packets drained by a ``Schedule``."""

    __slots__ = (
        "_queue",
        "_queued_bytes",
        "_transit",
        "_transit_arrival",
        "_transit_left",
        "counters",
        "events",
        "limit_bytes",
        "limit_packets",
        "schedule",
    )

    def __init__(
        self,
        schedule: Schedule,
        limit_packets: int | None = None,
        limit_bytes: int | None = None,
    ) -> None:
        self.schedule = schedule
        self.limit_packets = limit_packets
        self.limit_bytes = limit_bytes
        self._queue: deque[tuple[float, bytes]] = deque()
        self._queued_bytes = 0
        self._transit: bytes = b""
        self._transit_left = 0
        self._transit_arrival = 0.0
        self.counters = QueueCounters()
        self.events: DeliveryLog | None = None
        """When set, every event is written to it (opportunities idle ones included)."""

    def __len__(self) -> int:
        return len(self._queue) + (1 if self._transit_left else 0)

    def enqueue(self, packet: bytes, arrival_ms: float) -> bool:
        """Queue ``packet``, arrived at ``arrival_ms`` (never earlier than the last call's).

        Returns False when the drop-tail limit dropped it.
        """
        size = len(packet)
        c = self.counters
        if (self.limit_packets is not None and len(self._queue) + 1 > self.limit_packets) or (
            self.limit_bytes is not None and self._queued_bytes + size > self.limit_bytes
        ):
            c.dropped_packets += 1
            c.dropped_bytes += size
            if self.events is not None:
                self.events.arrival(arrival_ms, size)
                self.events.drop(arrival_ms, size)
            return False
        if not self._queue and not self._transit_left:
            if self.events is None:
                self.schedule.skip_past(arrival_ms)
            else:  # the same opportunities pass, each logged, as mm-link logs them
                sched = self.schedule
                while sched.next_ms <= arrival_ms:
                    self.events.opportunity(sched.next_ms)
                    sched.advance()
        if self.events is not None:
            self.events.arrival(arrival_ms, size)
        self._queue.append((arrival_ms, packet))
        self._queued_bytes += size
        if size > c.max_packet_bytes:
            c.max_packet_bytes = size
        if len(self._queue) > c.max_queue_packets:
            c.max_queue_packets = len(self._queue)
        return True

    def next_event_ms(self) -> float | None:
        """When the next opportunity must be processed; None while the link is idle."""
        if self._queue or self._transit_left:
            return self.schedule.next_ms
        return None

    def advance(self, now_ms: float, out: list[tuple[float, bytes]]) -> None:
        """Use every opportunity at or before ``now_ms``; append ``(departure_ms, packet)``."""
        sched = self.schedule
        queue = self._queue
        c = self.counters
        events = self.events
        while (queue or self._transit_left) and sched.next_ms <= now_ms:
            t = sched.next_ms
            sched.advance()
            if events is not None:
                events.opportunity(t)
            credit = OPPORTUNITY_BYTES
            while credit > 0:
                if not self._transit_left:
                    if not queue or queue[0][0] >= t:
                        break
                    arrived, packet = queue.popleft()
                    self._queued_bytes -= len(packet)
                    if not packet:
                        continue
                    self._transit_arrival = arrived
                    self._transit = packet
                    self._transit_left = len(packet)
                used = min(credit, self._transit_left)
                credit -= used
                self._transit_left -= used
                if not self._transit_left:
                    out.append((t, self._transit))
                    if events is not None:
                        events.departure(t, len(self._transit), self._transit_arrival)
                    c.packets += 1
                    c.bytes += len(self._transit)
                    self._transit = b""


class ByteLink:
    """One direction of a shaped byte-stream relay: chunks of many streams share a schedule.

    ``push(key, data, ready_ms)`` queues bytes for stream ``key`` that may leave after
    ``ready_ms``; ``data=None`` is an end-of-stream marker that leaves (taking no credit) once
    the bytes before it have. Each opportunity releases up to ``credit`` bytes (default 1504;
    the proxy passes the payload a 1504-byte opportunity carries in full TCP segments).
    """

    __slots__ = ("_offset", "_queue", "bytes_out", "credit", "queued", "schedule")

    def __init__(self, schedule: Schedule, credit: int = OPPORTUNITY_BYTES) -> None:
        self.schedule = schedule
        self.credit = credit
        self._queue: deque[tuple[float, Hashable, bytes | None]] = deque()
        self._offset = 0  # bytes of the head chunk already sent
        self.queued: dict[Hashable, int] = {}
        self.bytes_out = 0

    def push(self, key: Hashable, data: bytes | None, ready_ms: float) -> None:
        if not self._queue:
            self.schedule.skip_past(ready_ms)
        self._queue.append((ready_ms, key, data))
        if data:
            self.queued[key] = self.queued.get(key, 0) + len(data)

    def discard(self, key: Hashable) -> None:
        """Forget every chunk of ``key`` (its receiver is gone)."""
        if self._queue and self._queue[0][1] == key:
            self._offset = 0
        self._queue = deque(item for item in self._queue if item[1] != key)
        self.queued.pop(key, None)

    def next_event_ms(self) -> float | None:
        return self.schedule.next_ms if self._queue else None

    def advance(self, now_ms: float, out: list[tuple[Hashable, bytes | None]]) -> None:
        """Use every opportunity at or before ``now_ms``; append ``(key, bytes or None)``."""
        sched = self.schedule
        queue = self._queue
        while queue and sched.next_ms <= now_ms:
            t = sched.next_ms
            sched.advance()
            credit = self.credit
            while queue and queue[0][0] < t:
                _, key, data = queue[0]
                if data is None:
                    queue.popleft()
                    out.append((key, None))
                    continue
                if not credit:
                    break
                take = min(credit, len(data) - self._offset)
                out.append((key, data[self._offset : self._offset + take]))
                credit -= take
                self._offset += take
                self.bytes_out += take
                left = self.queued[key] - take
                if left:
                    self.queued[key] = left
                else:
                    del self.queued[key]
                if self._offset == len(data):
                    queue.popleft()
                    self._offset = 0
