"""A link's delivery log: mm-link's ``--downlink-log`` format, read the same for both writers
(Mahimahi's mm-link and Streambed's netns shaper, ``streambed.emulation.schedule.DeliveryLog``).

The format: ``#`` comment lines, among them ``# base timestamp: T`` (the link's time 0, ms),
then one event per line, times ``t`` in whole ms on the log's clock:

* ``t # S``: a delivery opportunity of S bytes (1504), also while the queue is idle;
* ``t + B``: a B-byte packet arrived at the queue;
* ``t - B D``: a B-byte packet departed (delivered) after D ms in the queue;
* ``t d N B``: N packets, B bytes, dropped on arrival (after their ``+`` lines).

``read_delivery_log`` turns it into per-second series from the base timestamp: bytes delivered,
capacity offered (the opportunities), and the queue's bytes over time (arrivals minus
departures and drops).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from streambed.core.errors import ConfigError


@dataclass(frozen=True)
class Delivery:
    """What one direction of a link carried, from its delivery log."""

    base_ms: int
    """The log's time 0 (``# base timestamp``), ms on its own clock."""
    base_monotonic_s: float | None
    """``time.monotonic()`` of the base (the shaper writes it; None for mm-link's logs)."""
    delivered_bytes: int
    """Bytes departed (IP packets as the link saw them)."""
    capacity_bytes: int
    """Bytes the logged opportunities could have carried."""
    arrived_bytes: int
    dropped_bytes: int
    delivered_per_s: list[int] = field(default_factory=list)
    """Bytes departed in second ``i`` after the base (``[i, i+1)``)."""
    capacity_per_s: list[int] = field(default_factory=list)
    """Bytes offered by the opportunities in second ``i`` after the base."""
    queue: list[tuple[float, int]] = field(default_factory=list)
    """``(seconds after the base, bytes queued)`` after each change (at most one point per ms)."""

    @property
    def utilisation(self) -> float | None:
        """Delivered over offered bytes, over the logged opportunities (None: none logged)."""
        return self.delivered_bytes / self.capacity_bytes if self.capacity_bytes else None

    @property
    def queue_max_bytes(self) -> int:
        return max((q for _, q in self.queue), default=0)


def _bad(path: Path, number: int, line: str, why: str) -> ConfigError:
    return ConfigError(f"{path}:{number}: {why}: {line.strip()[:60]!r}")


def parse_delivery_log(lines: Iterable[str], path: Path = Path("<log>")) -> Delivery:
    """Parse a delivery log's lines (``path`` names it in errors: one line, file:line)."""
    base: int | None = None
    base_mono: float | None = None
    delivered = capacity = arrived = dropped = 0
    per_s: dict[int, int] = {}
    cap_s: dict[int, int] = {}
    queue: list[tuple[int, int]] = []
    level = 0
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        if text.startswith("#"):
            key, _, value = text[1:].partition(":")
            key = key.strip()
            try:
                if key == "base timestamp":
                    base = int(value.strip())
                elif key == "base monotonic s":
                    base_mono = float(value.strip())
            except ValueError:
                raise _bad(path, number, line, "unreadable header value") from None
            continue
        parts = text.split()
        try:
            t = int(parts[0])
            op = parts[1]
            size = int(parts[2]) if op != "d" else int(parts[3])
        except (IndexError, ValueError):
            raise _bad(
                path, number, line, "expected 't # S', 't + B', 't - B D' or 't d N B'"
            ) from None
        if base is None:
            raise _bad(path, number, line, "event before '# base timestamp'")
        second = (t - base) // 1000
        if op == "#":
            capacity += size
            cap_s[second] = cap_s.get(second, 0) + size
            continue
        if op == "+":
            arrived += size
            level += size
        elif op == "-":
            delivered += size
            per_s[second] = per_s.get(second, 0) + size
            level -= size
        elif op == "d":
            dropped += size
            level -= size
        else:
            raise _bad(path, number, line, f"unknown event {op!r}")
        rel = t - base
        if queue and queue[-1][0] == rel:
            queue[-1] = (rel, level)
        else:
            queue.append((rel, level))
    if base is None:
        raise ConfigError(f"{path}: no '# base timestamp' line: not a delivery log")
    seconds = max([*per_s, *cap_s], default=-1) + 1  # events before the base: totals only
    return Delivery(
        base_ms=base,
        base_monotonic_s=base_mono,
        delivered_bytes=delivered,
        capacity_bytes=capacity,
        arrived_bytes=arrived,
        dropped_bytes=dropped,
        delivered_per_s=[per_s.get(i, 0) for i in range(seconds)],
        capacity_per_s=[cap_s.get(i, 0) for i in range(seconds)],
        queue=[(ms / 1000.0, q) for ms, q in queue],
    )


def read_delivery_log(path: Path) -> Delivery:
    """Read the delivery log at ``path`` (``ConfigError``, one line, when unreadable)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return parse_delivery_log(fh, path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the delivery log: {exc.strerror}") from None
