"""Expected transfer times over trace-driven links: the yardstick for tests and benchmarks.

Units: bytes, milliseconds for link parameters, seconds for results.

``tcp_transfer_s`` models one HTTP exchange over a Mahimahi link with a constant trace of
``opps_per_ms`` opportunities per millisecond (1: 12.032 Mbit/s of IP bytes; 0.25: one every
4 ms) and a one-way delay ``delay_ms`` in each direction:

* every IP packet costs its size in opportunity bytes (1504 per opportunity), so a backlogged
  link moves ``1504 * opps_per_ms`` IP bytes per ms; a full TCP segment is a 1500-byte packet
  carrying ``mss`` = 1448 payload bytes (20 IP + 20 TCP + 12 timestamp option bytes);
* a packet reaching an idle link waits for the next opportunity (on average half the spacing
  of opportunities, which fall on whole milliseconds);
* ``legs`` one-way trips (SYN, SYN-ACK, then the request) precede the first response byte,
  each one delay plus one opportunity wait;
* the sender starts with ``initial_window`` segments and grows its window by one segment per
  acknowledged segment (slow start, doubling per round trip, never leaving it: the queue is
  unbounded); acknowledgements return after one delay plus one opportunity wait;
* the response carries a header packet of ``head_bytes`` before the body.

``proxy_transfer_s`` is the proxy's model (``streambed.emulation.proxy``): the same three legs and
slow start, on a fluid link that releases ``PROXY_PAYLOAD_PER_OPPORTUNITY`` payload bytes per
opportunity, acknowledged per released chunk. ``drain_s`` walks any Mahimahi trace.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Sequence
from http.server import ThreadingHTTPServer

from streambed.emulation.schedule import OPPORTUNITY_BYTES

MTU = 1500
MSS = 1448  # with TCP timestamps
HEADER_BYTES = MTU - MSS
INITIAL_WINDOW_BYTES = 10 * MSS  # Linux's initial congestion window, in payload bytes
#: Payload a 1504-byte opportunity carries in full segments: the proxy's fluid TCP/IP overhead.
PROXY_PAYLOAD_PER_OPPORTUNITY = OPPORTUNITY_BYTES * MSS // MTU


def _opportunity_wait_ms(opps_per_ms: float) -> float:
    return 0.5 * max(1.0, 1.0 / opps_per_ms)


def tcp_transfer_s(
    payload_bytes: int,
    opps_per_ms: float,
    delay_ms: float = 0.0,
    *,
    ack_opps_per_ms: float | None = None,
    legs: int = 3,
    head_bytes: int = 200,
    initial_window: int = 10,
    endpoint_ms: float = 1.0,
) -> float:
    """Seconds from the client's connect to the last payload byte (module docstring).

    ``ack_opps_per_ms`` is the reverse direction's rate (default: the same); ``endpoint_ms``
    covers the endpoints' own processing (accept, parse, first write).
    """
    ack_rate = opps_per_ms if ack_opps_per_ms is None else ack_opps_per_ms
    wait = _opportunity_wait_ms(opps_per_ms)
    ack_leg = delay_ms + _opportunity_wait_ms(ack_rate)
    # Legs alternate direction starting with the client's SYN; the data direction is the
    # last leg's opposite. Count each leg with the wait of its own direction.
    t = endpoint_ms
    for leg in range(legs):
        towards_data_sender = (legs - leg) % 2 == 1
        t += delay_ms + (_opportunity_wait_ms(ack_rate) if towards_data_sender else wait)
    sizes = [head_bytes + HEADER_BYTES] if head_bytes else []
    full, rest = divmod(payload_bytes, MSS)
    sizes += [MTU] * full + ([rest + HEADER_BYTES] if rest else [])
    rate = OPPORTUNITY_BYTES * opps_per_ms  # IP bytes per ms
    link_free = 0.0
    received: list[float] = []
    for i, size in enumerate(sizes):
        send = t
        if i >= initial_window:
            # cwnd = initial_window + acked: segment i waits for ack number (i - iw) // 2 + 1.
            acked_needed = (i - initial_window) // 2 + 1
            send = max(send, received[acked_needed - 1] + ack_leg)
        arrive = send + delay_ms
        done = max(arrive + wait, link_free + size / rate)
        link_free = done
        received.append(done)
    return received[-1] / 1000.0


def proxy_transfer_s(
    payload_bytes: int,
    opps_per_ms: float,
    delay_ms: float = 0.0,
    *,
    head_bytes: int = 120,
    initial_window_bytes: int = INITIAL_WINDOW_BYTES,
    endpoint_ms: float = 1.0,
) -> float:
    """Seconds from connect to the last byte through the proxy link (module docstring).

    The response (``head_bytes`` of HTTP header, then the payload) leaves in chunks of one
    opportunity's payload credit; byte ``x`` may be released once ``2 * acked > x -
    initial_window_bytes`` (slow start: each acknowledged byte frees itself and adds one).
    """
    wait = _opportunity_wait_ms(opps_per_ms)
    ack_leg = delay_ms + wait
    t = endpoint_ms + 3 * (delay_ms + wait)  # SYN, SYN-ACK, request
    credit = PROXY_PAYLOAD_PER_OPPORTUNITY
    rate = credit * opps_per_ms  # payload bytes per ms
    total = head_bytes + payload_bytes
    ends = list(range(credit, total, credit)) + [total]  # each chunk's end offset
    link_free = 0.0
    start = 0
    received: list[float] = []
    for end in ends:
        send = t
        needed = end - initial_window_bytes  # 2 * acked >= needed
        if needed > 0:
            # The first chunk whose delivery brings the acknowledged bytes that far.
            k = min(len(received) - 1, max(0, math.ceil((needed / 2) / credit) - 1))
            send = max(send, received[k] + ack_leg)
        done = max(send + delay_ms + wait, link_free + (end - start) / rate)
        link_free, start = done, end
        received.append(done)
    return received[-1] / 1000.0


def ip_bytes(payload_bytes: int, head_bytes: int = 200) -> int:
    """IP bytes of a response: full segments, the remainder, and a header packet."""
    full, rest = divmod(payload_bytes, MSS)
    return full * MTU + (rest + HEADER_BYTES if rest else 0) + head_bytes + HEADER_BYTES


def drain_s(ms: Sequence[int], start_ms: float, nbytes: int) -> float:
    """Seconds from ``start_ms`` until the opportunities after it carry ``nbytes``.

    ``ms`` is a Mahimahi trace starting at time 0 and repeating with its last timestamp; a
    fluid backlog (each opportunity fully used) starting at ``start_ms``.
    """
    period = ms[-1]
    needed = math.ceil(nbytes / OPPORTUNITY_BYTES)
    per_period = len(ms)
    base = math.floor(start_ms / period) * period
    count = 0
    while True:
        # Skip whole periods at once when far from the end.
        if count + per_period < needed and base + ms[0] > start_ms:
            count += per_period
            base += period
            continue
        for t in ms:
            if base + t > start_ms:
                count += 1
                if count >= needed:
                    return (base + t - start_ms) / 1000.0
        base += period


class ModelSenderServer(ThreadingHTTPServer):
    """An HTTP server whose TCP sender is the one these models assume: Reno's slow start
    (hosts differ in their default, BBR here, and CUBIC's HyStart leaves slow start early when
    CPU contention makes round trips jitter, which would move the yardstick, not the link), and
    a backlog for clients that all connect at one instant (no SYN may be dropped). For the
    link tests and benchmark, bound on 0.0.0.0 so clients behind a link reach it."""

    daemon_threads = True
    request_queue_size = 1024

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"reno")
        super().server_bind()
