"""Stress trace sets: seeded traces of conditions a policy trained on one network may never see.

Each kind is a frozen parameter dataclass (a subclass of :class:`StressParams`) whose every field
carries a unit and an inclusive valid range in its metadata (``streambed traces stress KIND
--help`` lists them); out-of-range values raise ``TraceError`` naming the flag, the value and
the range. :meth:`StressParams.trace` makes one trace from a seed, and
:func:`generate_stress_set` writes a set ``<kind>_000``, ``<kind>_001``... in Pensieve format.
The same parameters and seed always give the same bytes, and trace ``i`` does not depend on how
many traces the set has.

The kinds:

* ``outage``: the Markov-modulated base of ``streambed traces generate`` (floored at
  ``floor_mbps``) with outages of near-zero bandwidth at random times;
* ``onoff``: short high and low (or zero) periods, alternating;
* ``cliff``: long good periods with sudden drops (6 to 0.3 Mbit/s by default) and recoveries;
* ``fast``, ``slow``, ``variable``: the Markov-modulated generator with its states spread
  evenly in log scale over a range (20-200, 0.2-1 and 0.2-10 Mbit/s by default) and every value
  clipped into that range; ``variable`` switches state often and has heavy noise.

Traces are 400 s long by default. The simulator loops a trace at its end, so any length plays
the whole video; 400 s covers the 48-chunk Envivio video (192 s of play) with room for stalls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from streambed.core.errors import TraceError
from streambed.traces.formats import FloatArray, PathLike, Trace
from streambed.traces.synth import SynthParams, generate_trace, write_set

UNIT = "unit"
"""Field metadata key: the value's unit (``""`` for a pure number)."""
RANGE = "range"
"""Field metadata key: ``(low, high)``, both inclusive, for the value (each value of a tuple)."""
NARGS = "nargs"
"""Field metadata key of tuple fields: ``2`` for a ``(min, max)`` pair, ``"+"`` for a list."""

MAX_TRACES = 100_000


def param(default: Any, unit: str, low: float, high: float, nargs: int | str | None = None) -> Any:
    """A dataclass field with its unit and its valid range (and, for tuples, its shape)."""
    meta: dict[str, Any] = {UNIT: unit, RANGE: (low, high)}
    if nargs is not None:
        meta[NARGS] = nargs
    return field(default=default, metadata=meta)


def flag_name(name: str) -> str:
    """The command-line flag of field ``name`` (``outage_s`` -> ``--outage-s``)."""
    return "--" + name.replace("_", "-")


def describe_range(low: float, high: float, unit: str) -> str:
    """``[1, 10] s``: the range in words, for help and errors."""
    return f"[{low:g}, {high:g}]" + (f" {unit}" if unit else "")


@dataclass(frozen=True)
class StressParams:
    """What every kind has: the trace's length and its time step."""

    kind: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    duration_s: float = param(400.0, "s", 10.0, 86_400.0)
    """Trace length (a whole number of intervals; the simulator loops a trace at its end)."""
    interval_s: float = param(1.0, "s", 0.1, 60.0)
    """Seconds per trace line: every value holds for one interval."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            values = value if isinstance(value, tuple) else (value,)
            low, high = f.metadata[RANGE]
            shown = " ".join(f"{v:g}" for v in values)
            where = f"stress {self.kind}: {flag_name(f.name)} {shown}"
            nargs = f.metadata.get(NARGS)
            if nargs == 2 and len(values) != 2:
                raise TraceError(f"{where}: want two values, MIN MAX")
            if nargs == "+" and len(values) == 0:
                raise TraceError(f"{where}: want at least one value")
            if not all(math.isfinite(v) and low <= v <= high for v in values):
                raise TraceError(
                    f"{where}: must be in {describe_range(low, high, f.metadata[UNIT])}"
                )
            if nargs == 2 and values[0] > values[1]:
                raise TraceError(f"{where}: MIN must not exceed MAX")
        if self.interval_s > self.duration_s:
            raise TraceError(
                f"stress {self.kind}: --interval-s {self.interval_s:g} exceeds "
                f"--duration-s {self.duration_s:g}"
            )
        self.check()

    def check(self) -> None:
        """Refuse combinations of fields (``TraceError``); each field's range is checked already."""

    @property
    def intervals(self) -> int:
        """Number of intervals (trace lines after the time-0 line)."""
        return max(1, round(self.duration_s / self.interval_s))

    def trace(self, seed: int, name: str) -> Trace:
        """One trace of this kind; the same ``seed`` always gives the same trace."""
        raise NotImplementedError

    def _trace(self, rates: FloatArray, name: str) -> Trace:
        times = np.arange(len(rates) + 1, dtype=np.float64) * self.interval_s
        return Trace(name=name, times_s=times, mbps=np.concatenate((rates[:1], rates)))


def _lognormal_factors(rng: np.random.Generator, cv: float, n: int) -> FloatArray:
    """``n`` multiplicative noise factors, log-normal with mean 1 and coefficient ``cv``."""
    sigma2 = math.log1p(cv**2)
    return np.exp(math.sqrt(sigma2) * rng.standard_normal(n) - sigma2 / 2)


@dataclass(frozen=True)
class OutageParams(StressParams):
    """A realistic base with outages of near-zero bandwidth at random times."""

    kind: ClassVar[str] = "outage"
    summary: ClassVar[str] = "Markov-modulated base (0.5-6 Mbit/s) with 1-10 s outages"

    states_mbps: tuple[float, ...] = param((0.5, 1.0, 2.0, 3.0, 4.5, 6.0), "Mbit/s", 0.01, 1e5, "+")
    """Mean throughput of each hidden state of the base (the Markov-modulated generator of
    ``streambed traces generate``; neighbours are adjacent)."""
    switch_prob: float = param(0.05, "per interval", 0.0, 1.0)
    """Probability of the base moving to a neighbouring state at each interval."""
    noise_cv: float = param(0.25, "", 0.0, 5.0)
    """Coefficient of variation of the base's log-normal per-interval noise (mean 1)."""
    floor_mbps: float = param(0.2, "Mbit/s", 0.0, 1e5)
    """Floor of the base outside outages; above the outages' top, so that every stretch below it
    is an outage."""
    outage_mbps: tuple[float, float] = param((0.0, 0.05), "Mbit/s", 0.0, 1e5, 2)
    """Bandwidth during an outage, drawn uniformly per interval."""
    outage_s: tuple[float, float] = param((1.0, 10.0), "s", 0.1, 3600.0, 2)
    """Outage length, drawn uniformly per outage and rounded to whole intervals (at least one)."""
    outages_per_min: float = param(1.0, "1/min", 0.0, 60.0)
    """Outage rate: the base stretch before each outage lasts an exponential time of mean
    60/rate seconds (at least one interval), so outages never touch."""

    def check(self) -> None:
        if self.floor_mbps <= self.outage_mbps[1]:
            raise TraceError(
                f"stress outage: --floor-mbps {self.floor_mbps:g} must exceed the top of "
                f"--outage-mbps ({self.outage_mbps[1]:g}), or outages would not stand out"
            )

    def trace(self, seed: int, name: str) -> Trace:
        base = generate_trace(
            SynthParams(
                duration_s=self.duration_s,
                interval_s=self.interval_s,
                states_mbps=self.states_mbps,
                switch_prob=self.switch_prob,
                noise_cv=self.noise_cv,
                min_mbps=self.floor_mbps,
            ),
            seed,
            name,
        )
        rates = np.array(base.mbps[1:])
        n = len(rates)
        # A stream of its own, so the base is the same whatever the outage flags are.
        rng = np.random.default_rng((seed, 1))
        i = 0
        while self.outages_per_min > 0:
            i += max(1, round(rng.exponential(60.0 / self.outages_per_min) / self.interval_s))
            if i >= n:
                break
            length = max(1, round(rng.uniform(*self.outage_s) / self.interval_s))
            end = min(n, i + length)
            rates[i:end] = rng.uniform(*self.outage_mbps, size=end - i)
            i = end
        return self._trace(rates, name)


@dataclass(frozen=True)
class AlternatingParams(StressParams):
    """High and low periods in turn, starting high; each period holds a level drawn uniformly
    from its range, times per-interval log-normal noise, clipped back into that range."""

    high_mbps: tuple[float, float] = param((2.0, 5.0), "Mbit/s", 0.01, 1e5, 2)
    """Level of a high period, drawn uniformly per period."""
    low_mbps: tuple[float, float] = param((0.0, 0.1), "Mbit/s", 0.0, 1e5, 2)
    """Level of a low period, drawn uniformly per period; below the high range."""
    high_s: tuple[float, float] = param((2.0, 12.0), "s", 0.1, 3600.0, 2)
    """Length of a high period, drawn uniformly and rounded to whole intervals (at least one)."""
    low_s: tuple[float, float] = param((2.0, 12.0), "s", 0.1, 3600.0, 2)
    """Length of a low period, drawn uniformly and rounded to whole intervals (at least one)."""
    noise_cv: float = param(0.15, "", 0.0, 5.0)
    """Coefficient of variation of the per-interval log-normal noise (mean 1)."""

    def check(self) -> None:
        if self.low_mbps[1] >= self.high_mbps[0]:
            raise TraceError(
                f"stress {self.kind}: --low-mbps {self.low_mbps[0]:g} {self.low_mbps[1]:g} must "
                f"lie below --high-mbps {self.high_mbps[0]:g} {self.high_mbps[1]:g}"
            )

    def trace(self, seed: int, name: str) -> Trace:
        rng = np.random.default_rng(seed)
        n = self.intervals
        rates = np.empty(n)
        high = True
        i = 0
        while i < n:
            span, levels = (self.high_s, self.high_mbps) if high else (self.low_s, self.low_mbps)
            end = min(n, i + max(1, round(rng.uniform(*span) / self.interval_s)))
            noisy = rng.uniform(*levels) * _lognormal_factors(rng, self.noise_cv, end - i)
            rates[i:end] = np.clip(noisy, *levels)
            i = end
            high = not high
        return self._trace(rates, name)


@dataclass(frozen=True)
class OnOffParams(AlternatingParams):
    """Short high and near-zero periods in turn."""

    kind: ClassVar[str] = "onoff"
    summary: ClassVar[str] = "2-12 s periods at 2-5 Mbit/s and at 0-0.1 Mbit/s, alternating"


@dataclass(frozen=True)
class CliffParams(AlternatingParams):
    """Long good periods with sudden drops to a fraction of a megabit, and recoveries."""

    kind: ClassVar[str] = "cliff"
    summary: ClassVar[str] = "20-60 s at 4-8 Mbit/s, then sudden 5-30 s drops to 0.2-0.4 Mbit/s"

    high_mbps: tuple[float, float] = param((4.0, 8.0), "Mbit/s", 0.01, 1e5, 2)
    low_mbps: tuple[float, float] = param((0.2, 0.4), "Mbit/s", 0.0, 1e5, 2)
    high_s: tuple[float, float] = param((20.0, 60.0), "s", 0.1, 3600.0, 2)
    low_s: tuple[float, float] = param((5.0, 30.0), "s", 0.1, 3600.0, 2)
    noise_cv: float = param(0.1, "", 0.0, 5.0)


@dataclass(frozen=True)
class RangeParams(StressParams):
    """The Markov-modulated generator of ``streambed traces generate`` with ``levels`` states
    spread evenly in log scale over ``range_mbps``, every value clipped into that range."""

    range_mbps: tuple[float, float] = param((20.0, 200.0), "Mbit/s", 0.01, 1e5, 2)
    """Lowest and highest throughput: the end states, and the clip."""
    levels: int = param(6, "states", 1, 64)
    """Number of hidden states (one: the range's geometric mean)."""
    switch_prob: float = param(0.05, "per interval", 0.0, 1.0)
    """Probability of moving to a neighbouring state at each interval."""
    noise_cv: float = param(0.3, "", 0.0, 5.0)
    """Coefficient of variation of the log-normal per-interval noise (mean 1)."""

    def trace(self, seed: int, name: str) -> Trace:
        low, high = self.range_mbps
        states = (
            np.geomspace(low, high, self.levels) if self.levels > 1 else [math.sqrt(low * high)]
        )
        base = generate_trace(
            SynthParams(
                duration_s=self.duration_s,
                interval_s=self.interval_s,
                states_mbps=tuple(float(s) for s in states),
                switch_prob=self.switch_prob,
                noise_cv=self.noise_cv,
                min_mbps=low,
            ),
            seed,
            name,
        )
        return self._trace(np.minimum(base.mbps[1:], high), name)


@dataclass(frozen=True)
class FastParams(RangeParams):
    """Very fast links: far above the top bitrate."""

    kind: ClassVar[str] = "fast"
    summary: ClassVar[str] = "20-200 Mbit/s links with variability"


@dataclass(frozen=True)
class SlowParams(RangeParams):
    """Slow links: around the lowest bitrates."""

    kind: ClassVar[str] = "slow"
    summary: ClassVar[str] = "0.2-1 Mbit/s links"

    range_mbps: tuple[float, float] = param((0.2, 1.0), "Mbit/s", 0.01, 1e5, 2)
    levels: int = param(4, "states", 1, 64)
    noise_cv: float = param(0.25, "", 0.0, 5.0)


@dataclass(frozen=True)
class VariableParams(RangeParams):
    """High variance: frequent state changes over a wide range, heavy noise."""

    kind: ClassVar[str] = "variable"
    summary: ClassVar[str] = "0.2-10 Mbit/s, frequent state changes, heavy noise"

    range_mbps: tuple[float, float] = param((0.2, 10.0), "Mbit/s", 0.01, 1e5, 2)
    levels: int = param(8, "states", 1, 64)
    switch_prob: float = param(0.25, "per interval", 0.0, 1.0)
    noise_cv: float = param(0.8, "", 0.0, 5.0)


STRESS_KINDS: dict[str, type[StressParams]] = {
    cls.kind: cls
    for cls in (OutageParams, OnOffParams, CliffParams, FastParams, SlowParams, VariableParams)
}
"""Every stress kind by name, in the order ``--help`` lists them."""


def generate_stress_set(out_dir: PathLike, params: StressParams, n: int, seed: int) -> list[Path]:
    """Write ``n`` Pensieve files ``<kind>_000``... into ``out_dir``; return their paths.

    Trace ``i`` uses the ``i``-th seed spawned from ``np.random.SeedSequence(seed)``
    (:func:`~streambed.traces.synth.trace_seeds`), so it is the same whatever ``n`` is.
    """
    if not 1 <= n <= MAX_TRACES:
        raise TraceError(f"stress {params.kind}: --count {n}: must be in [1, {MAX_TRACES}]")
    if seed < 0:
        raise TraceError(f"stress {params.kind}: --seed {seed}: must be >= 0")
    return write_set(out_dir, n, seed, params.kind, params.trace)
