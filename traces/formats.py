"""The ``Trace`` type and the two on-disk trace formats (Pensieve and Mahimahi).

Pensieve format: one ``time_s throughput_Mbps`` pair per line. Line ``i``'s throughput is the
rate over the interval ``(times[i-1], times[i]]``; the first line's throughput is not used.

Mahimahi format: one integer millisecond timestamp per line, each a delivery opportunity for
one 1500-byte packet; a repeated timestamp means several packets in that millisecond. The
trace loops with a period equal to its last timestamp.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from streambed.core.errors import TraceError

PACKET_BYTES = 1500
PACKET_BITS = PACKET_BYTES * 8

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
PathLike = str | Path

# A packet boundary computed as 11999.9999999 bits instead of 12000 must still count; the
# tolerance is far below one bit, so it never changes a real count.
_PACKET_EPS = 1e-6


@dataclass(frozen=True, repr=False)
class Trace:
    """A throughput trace in the Pensieve convention (see the module docstring)."""

    name: str
    times_s: FloatArray = field(compare=False)
    mbps: FloatArray = field(compare=False)
    source: str | None = None

    def __post_init__(self) -> None:
        # Copy and freeze the arrays so a Trace really is immutable and never aliases the
        # caller's buffers.
        times = np.array(self.times_s, dtype=np.float64, copy=True)
        mbps = np.array(self.mbps, dtype=np.float64, copy=True)
        where = self.source or self.name
        if times.ndim != 1 or mbps.ndim != 1 or times.shape != mbps.shape:
            raise TraceError(f"{where}: times_s and mbps must be 1-D arrays of equal length")
        if len(times) < 2:
            raise TraceError(f"{where}: a trace needs at least 2 lines (one interval)")
        if not (np.all(np.isfinite(times)) and np.all(np.isfinite(mbps))):
            raise TraceError(f"{where}: times and throughputs must be finite numbers")
        if np.any(np.diff(times) < 0):
            raise TraceError(f"{where}: times must be non-decreasing")
        if np.any(mbps < 0):
            raise TraceError(f"{where}: throughput must be >= 0")
        if times[-1] <= times[0]:
            raise TraceError(f"{where}: trace has zero duration")
        if not np.any(mbps[1:][np.diff(times) > 0] > 0):
            raise TraceError(f"{where}: bandwidth is zero on every interval (delivers nothing)")
        times.setflags(write=False)
        mbps.setflags(write=False)
        object.__setattr__(self, "times_s", times)
        object.__setattr__(self, "mbps", mbps)

    @property
    def duration_s(self) -> float:
        """Last time minus first time, in seconds."""
        return float(self.times_s[-1] - self.times_s[0])

    @property
    def mean_mbps(self) -> float:
        """Time-weighted mean throughput over all intervals (first line's value unused)."""
        dt = np.diff(self.times_s)
        return float(np.sum(self.mbps[1:] * dt) / self.duration_s)

    def __len__(self) -> int:
        return len(self.times_s)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trace):
            return NotImplemented
        return (
            self.name == other.name
            and self.source == other.source
            and np.array_equal(self.times_s, other.times_s)
            and np.array_equal(self.mbps, other.mbps)
        )

    def __hash__(self) -> int:
        return hash((self.name, self.source, self.times_s.tobytes(), self.mbps.tobytes()))

    def __repr__(self) -> str:
        return (
            f"Trace(name={self.name!r}, lines={len(self)}, duration_s={self.duration_s:.3f}, "
            f"mean_mbps={self.mean_mbps:.3f}, source={self.source!r})"
        )


# ---------------------------------------------------------------------------------------------
# Reading helpers


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TraceError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TraceError(f"{path}: is a directory, not a trace file") from None
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not a text file") from None
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _data_lines(text: str) -> list[tuple[int, list[str]]]:
    """Non-blank lines as ``(1-based line number, fields)``."""
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if fields:
            rows.append((lineno, fields))
    return rows


def _parse_float(path: Path, lineno: int, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{path}: line {lineno}: {what} is not a number ({text!r})") from None
    if not math.isfinite(value):
        raise TraceError(f"{path}: line {lineno}: {what} is not a finite number ({text!r})")
    return value


# ---------------------------------------------------------------------------------------------
# Pensieve


def load_pensieve(path: PathLike) -> Trace:
    """Load a Pensieve ``time_s throughput_Mbps`` file; ``TraceError`` names file and line."""
    p = Path(path)
    rows = _data_lines(_read_text(p))
    if not rows:
        raise TraceError(f"{p}: empty trace (no data lines)")
    times = np.empty(len(rows), dtype=np.float64)
    mbps = np.empty(len(rows), dtype=np.float64)
    prev_t = -math.inf
    for i, (lineno, fields) in enumerate(rows):
        if len(fields) != 2:
            raise TraceError(
                f"{p}: line {lineno}: expected 2 columns (time_s throughput_Mbps), "
                f"got {len(fields)}"
            )
        t = _parse_float(p, lineno, fields[0], "time")
        m = _parse_float(p, lineno, fields[1], "throughput")
        if t < 0:
            raise TraceError(f"{p}: line {lineno}: negative time ({fields[0]})")
        if m < 0:
            raise TraceError(f"{p}: line {lineno}: negative bandwidth ({fields[1]})")
        if t < prev_t:
            raise TraceError(
                f"{p}: line {lineno}: time goes backwards ({fields[0]} after {rows[i - 1][1][0]})"
            )
        prev_t = t
        times[i] = t
        mbps[i] = m
    if len(rows) < 2:
        raise TraceError(f"{p}: only 1 data line; a trace needs at least 2 (one interval)")
    if times[-1] <= times[0]:
        raise TraceError(f"{p}: zero duration (every line has time {times[0]!r})")
    if not np.any(mbps[1:][np.diff(times) > 0] > 0):
        raise TraceError(f"{p}: bandwidth is zero on every interval (delivers nothing)")
    return Trace(name=p.name, times_s=times, mbps=mbps, source=str(p))


def save_pensieve(trace: Trace, path: PathLike) -> None:
    """Write ``trace`` in Pensieve format (tab separated, shortest exact float repr)."""
    p = Path(path)
    lines = [
        f"{float(t)!r}\t{float(m)!r}\n" for t, m in zip(trace.times_s, trace.mbps, strict=True)
    ]
    _write_text(p, "".join(lines))


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"{path}: cannot write: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------------------------------
# Mahimahi

# Two non-blank tokens on one line, i.e. a line with more than one column.
_MULTI_COLUMN = re.compile(r"\S[^\S\r\n]+\S")
_INTEGER = re.compile(r"[+-]?[0-9]+")


def _mahimahi_fast(text: str) -> IntArray | None:
    """Parse a well-formed file at C speed; ``None`` means "find the error line by line"."""
    if "_" in text or _MULTI_COLUMN.search(text):
        return None
    tokens = text.split()
    try:
        return np.fromiter(map(int, tokens), dtype=np.int64, count=len(tokens))
    except (ValueError, OverflowError):
        return None


def _mahimahi_slow(path: Path, text: str) -> tuple[IntArray, list[int]]:
    """Parse line by line, raising the first per-line error; also returns line numbers."""
    values: list[int] = []
    linenos: list[int] = []
    for lineno, fields in _data_lines(text):
        if len(fields) != 1:
            raise TraceError(
                f"{path}: line {lineno}: expected 1 column (timestamp_ms), got {len(fields)}"
            )
        if not _INTEGER.fullmatch(fields[0]):
            raise TraceError(
                f"{path}: line {lineno}: timestamp is not an integer number of ms ({fields[0]!r})"
            )
        values.append(int(fields[0]))
        linenos.append(lineno)
    try:
        return np.array(values, dtype=np.int64), linenos
    except OverflowError:
        raise TraceError(f"{path}: timestamp out of range") from None


def load_mahimahi(path: PathLike) -> IntArray:
    """Load a Mahimahi trace as an int64 array of ms timestamps; ``TraceError`` names the line."""
    p = Path(path)
    text = _read_text(p)
    ms = _mahimahi_fast(text)
    linenos: list[int] | None = None
    if ms is None:
        ms, linenos = _mahimahi_slow(p, text)
    if len(ms) == 0:
        raise TraceError(f"{p}: empty trace (no data lines)")
    bad_neg = np.flatnonzero(ms < 0)
    bad_back = np.flatnonzero(np.diff(ms) < 0) + 1
    if len(bad_neg) or len(bad_back):
        # Only the error path needs line numbers, so the fast path does not track them.
        if linenos is None:
            linenos = [lineno for lineno, _ in _data_lines(text)]
        first = min(int(i) for i in (*bad_neg[:1], *bad_back[:1]))
        if len(bad_neg) and bad_neg[0] == first:
            raise TraceError(f"{p}: line {linenos[first]}: negative timestamp ({ms[first]})")
        raise TraceError(
            f"{p}: line {linenos[first]}: time goes backwards "
            f"({ms[first]} ms after {ms[first - 1]} ms)"
        )
    if ms[-1] <= 0:
        raise TraceError(f"{p}: last timestamp is 0 ms; the trace period must be > 0")
    return ms


def _check_ms(ms: npt.ArrayLike, where: str) -> IntArray:
    arr = np.asarray(ms)
    if arr.ndim != 1 or len(arr) == 0:
        raise TraceError(f"{where}: Mahimahi timestamps must be a non-empty 1-D sequence")
    if not np.issubdtype(arr.dtype, np.integer):
        raise TraceError(f"{where}: Mahimahi timestamps must be integers")
    arr = arr.astype(np.int64)
    if np.any(arr < 0):
        raise TraceError(f"{where}: negative Mahimahi timestamp")
    if np.any(np.diff(arr) < 0):
        raise TraceError(f"{where}: Mahimahi timestamps must be non-decreasing")
    if arr[-1] <= 0:
        raise TraceError(f"{where}: last timestamp is 0 ms; the trace period must be > 0")
    return arr


def save_mahimahi(ms: npt.ArrayLike, path: PathLike) -> None:
    """Write integer ms timestamps, one per line."""
    p = Path(path)
    arr = _check_ms(ms, str(p))
    # Timestamps repeat (several packets per ms at high rates), so build each distinct line
    # once and repeat it: several times faster than formatting millions of ints one by one.
    values, counts = np.unique(arr, return_counts=True)
    pairs = zip(values.tolist(), counts.tolist(), strict=True)
    _write_text(p, "".join(f"{v}\n" * k for v, k in pairs))


# ---------------------------------------------------------------------------------------------
# Conversion


def pensieve_to_mahimahi(trace: Trace) -> IntArray:
    """Integrate throughput into 1500-byte delivery opportunities, one entry per packet.

    A packet is emitted at the first millisecond boundary at which the running credit of bits
    reaches it (the remainder carries over, so there is no drift). The period equals the trace
    duration rounded to whole ms: if the last millisecond has no packet, the final packet is
    delayed to it (the packet count is unchanged). A trace delivering less than one packet
    gives the single line ``[duration_ms]``.
    """
    t_ms = (trace.times_s - trace.times_s[0]) * 1000.0
    dt_ms = np.diff(t_ms)
    # bits per ms = Mbit/s * 1e6 / 1e3
    cum_bits = np.concatenate(([0.0], np.cumsum(trace.mbps[1:] * 1000.0 * dt_ms)))
    # np.interp needs increasing x; a zero-length interval adds no bits, so drop its start.
    keep = np.concatenate((dt_ms > 0, [True]))
    period = max(1, round(float(t_ms[-1])))
    grid = np.arange(period + 1, dtype=np.float64)
    cum = np.interp(grid, t_ms[keep], cum_bits[keep])
    whole = np.floor(cum / PACKET_BITS + _PACKET_EPS).astype(np.int64)
    counts = np.diff(whole)
    counts[counts < 0] = 0  # cannot happen for a valid trace; guards float noise
    ms = np.repeat(np.arange(1, period + 1, dtype=np.int64), counts)
    if len(ms) == 0:
        return np.array([period], dtype=np.int64)
    if ms[-1] != period:
        ms[-1] = period
    return ms


def mahimahi_to_pensieve(ms: npt.ArrayLike, name: str, bin_s: float = 1.0) -> Trace:
    """Bin delivery opportunities into ``bin_s`` intervals of throughput (Pensieve convention).

    An opportunity at ms ``t`` counts for the interval ``(t-1, t]`` (t = 0 counts in the first
    bin). Times are ``0, bin_s, 2*bin_s, ...``; if the period (last timestamp) is not a whole
    number of bins, the last time is the period itself and its rate uses the partial bin's
    length, so total bits and duration are exact. Line 0 copies line 1's rate.
    """
    arr = _check_ms(ms, name)
    if not (math.isfinite(bin_s) and bin_s > 0):
        raise TraceError(f"{name}: bin_s must be a positive number, got {bin_s}")
    period_ms = int(arr[-1])
    bin_ms = bin_s * 1000.0
    n_bins = max(1, math.ceil(period_ms / bin_ms - 1e-9))
    idx = np.ceil(arr / bin_ms - 1e-9).astype(np.int64) - 1
    idx = np.clip(idx, 0, n_bins - 1)
    packets = np.bincount(idx, minlength=n_bins).astype(np.float64)
    edges = np.minimum(np.arange(n_bins + 1, dtype=np.float64) * bin_s, period_ms / 1000.0)
    widths = np.diff(edges)
    rates = packets * PACKET_BITS / widths / 1e6
    mbps = np.concatenate((rates[:1], rates))
    return Trace(name=name, times_s=edges, mbps=mbps)


# ---------------------------------------------------------------------------------------------
# Autodetection


def detect_format(path: PathLike) -> Literal["pensieve", "mahimahi"]:
    """Guess the format from the first data line: 1 column = Mahimahi, 2 = Pensieve."""
    p = Path(path)
    if p.is_dir():
        raise TraceError(f"{p}: is a directory, not a trace file")
    try:
        # Only the first data line matters; do not read a multi-megabyte Mahimahi file twice.
        with p.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) == 1:
                    return "mahimahi"
                if len(fields) == 2:
                    return "pensieve"
                raise TraceError(
                    f"{p}: line {lineno}: expected 1 column (Mahimahi) or 2 columns "
                    f"(Pensieve), got {len(fields)}"
                )
    except FileNotFoundError:
        raise TraceError(f"{p}: no such file") from None
    except UnicodeDecodeError:
        raise TraceError(f"{p}: not a text file") from None
    except OSError as exc:
        raise TraceError(f"{p}: cannot read: {exc.strerror or exc}") from None
    raise TraceError(f"{p}: empty trace (no data lines)")


def load_trace(path: PathLike, bin_s: float = 1.0) -> Trace:
    """Load either format as a ``Trace`` (Mahimahi is binned into ``bin_s`` intervals)."""
    p = Path(path)
    if detect_format(p) == "pensieve":
        return load_pensieve(p)
    trace = mahimahi_to_pensieve(load_mahimahi(p), name=p.name, bin_s=bin_s)
    return Trace(name=trace.name, times_s=trace.times_s, mbps=trace.mbps, source=str(p))
