"""Many traces in flat arrays, with vectorised "download S bytes from position tau".

Instead of walking trace intervals one by one, each trace's cumulative deliverable bytes
``cum`` (at every line's time) is inverted with ``searchsorted``. Positions ``tau`` are seconds
since the trace's first line, in ``[0, period]``; the trace repeats with period
``times[-1] - times[0]``. Traces are laid end to end in one array with gaps between them so one
``searchsorted`` serves every session whatever its trace; a local fix-up afterwards makes the
interval exact despite the large global offsets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streambed.traces import Trace


class TraceBank:
    """Flat per-line arrays of a list of traces (index ``i`` = interval ending at line ``i``)."""

    def __init__(self, traces: Sequence[Trace], payload_factor: float) -> None:
        times, rates, cums, starts = [], [], [], []
        offset = 0
        for trace in traces:
            t = np.asarray(trace.times_s, np.float64) - float(trace.times_s[0])
            rate = np.asarray(trace.mbps, np.float64) * 1e6 / 8 * payload_factor
            rate[0] = 0.0  # line 0 starts the clock; its bandwidth is never used
            cum = np.concatenate([[0.0], np.cumsum(rate[1:] * np.diff(t))])
            times.append(t)
            rates.append(rate)
            cums.append(cum)
            starts.append(offset)
            offset += len(t)
        self.start = np.asarray(starts, np.int64)
        self.stop = self.start + np.asarray([len(t) for t in times], np.int64)
        self.time = np.concatenate(times)
        self.rate = np.concatenate(rates)
        self.cum = np.concatenate(cums)
        self.period = np.asarray([t[-1] for t in times])
        self.total_bytes = np.asarray([c[-1] for c in cums])
        # Global, strictly separated copies for one searchsorted over all traces.
        time_base = np.concatenate([[0.0], np.cumsum(self.period + 1.0)[:-1]])
        byte_base = np.concatenate([[0.0], np.cumsum(self.total_bytes + 1.0)[:-1]])
        trace_of_line = np.repeat(np.arange(len(times)), self.stop - self.start)
        self.time_base = time_base
        self.byte_base = byte_base
        self._time_g = self.time + time_base[trace_of_line]
        self._cum_g = self.cum + byte_base[trace_of_line]

    def __len__(self) -> int:
        return len(self.start)

    def line_after(self, trace: np.ndarray, tau: np.ndarray) -> np.ndarray:
        """Global index i of the interval holding ``tau``: time[i-1] <= tau < time[i]."""
        i = np.searchsorted(self._time_g, tau + self.time_base[trace], side="right")
        return np.clip(i, self.start[trace] + 1, self.stop[trace] - 1)

    def advance_bytes(
        self,
        trace: np.ndarray,
        tau: np.ndarray,
        nbytes: np.ndarray,
        line: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Deliver ``nbytes`` from position ``tau``; return (position, trace seconds, line).

        ``line`` is each position's interval (:meth:`line_after`) when the caller tracks it.
        The download ends at the last instant the trace has delivered no more than the target
        (so it passes over zero-bandwidth lines that follow an exact fit, as Pensieve's loop
        does).
        """
        i0 = self.line_after(trace, tau) if line is None else line
        delivered = self.cum[i0 - 1] + self.rate[i0] * (tau - self.time[i0 - 1])
        target = delivered + nbytes
        total = self.total_bytes[trace]
        loops = np.floor(target / total)
        rem = target - loops * total
        over = rem >= total
        loops = np.where(over, loops + 1, loops)
        rem = np.where(over, rem - total, rem)

        lo = self.start[trace] + 1
        hi = self.stop[trace] - 1
        i = np.where(loops > 0, lo, i0)
        # Walk forward to the first line with cum > rem: a chunk crosses few lines, so this
        # beats a cache-missing binary search; stragglers fall back to searchsorted below.
        active = np.flatnonzero((self.cum[i] <= rem) & (i < hi))
        for _ in range(self.WALK_STEPS):
            if not active.size:
                break
            i[active] += 1
            ia = i[active]
            active = active[(self.cum[ia] <= rem[active]) & (ia < hi[active])]
        if active.size:
            i[active] = self._search(trace[active], rem[active], lo[active], hi[active])
        new_tau = self.time[i - 1] + (rem - self.cum[i - 1]) / self.rate[i]
        elapsed = loops * self.period[trace] + new_tau - tau
        return new_tau, elapsed, i

    WALK_STEPS = 6

    def _search(
        self, trace: np.ndarray, rem: np.ndarray, lo: np.ndarray, hi: np.ndarray
    ) -> np.ndarray:
        i = np.clip(np.searchsorted(self._cum_g, rem + self.byte_base[trace], side="right"), lo, hi)
        while True:  # exact interval despite the global offsets: cum[i-1] <= rem < cum[i]
            up = (rem >= self.cum[i]) & (i < hi)
            down = (rem < self.cum[i - 1]) & (i > lo)
            if not (up.any() or down.any()):
                return i
            i = i + up - down

    def advance_time(self, trace: np.ndarray, tau: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        """Position after ``seconds`` more of the trace (wrapping at its period)."""
        period = self.period[trace]
        moved = tau + seconds
        return moved - np.floor(moved / period) * period
