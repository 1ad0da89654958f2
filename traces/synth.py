"""Seeded synthetic traces: a Markov-modulated generator and simple deterministic shapes."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streambed.core.errors import TraceError
from streambed.traces.formats import PathLike, Trace, save_pensieve


@dataclass(frozen=True)
class SynthParams:
    """Parameters of the Markov-modulated generator; invalid values raise ``TraceError``."""

    duration_s: float = 320.0
    """Trace length in seconds (rounded to a whole number of intervals, at least one)."""

    interval_s: float = 1.0
    """Length of one interval; the trace has one line per interval plus the time-0 line."""

    states_mbps: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 4.5, 6.0)
    """Mean throughput of each hidden state, in Mbit/s (ordered: neighbours are adjacent)."""

    switch_prob: float = 0.05
    """Per-interval probability of leaving the state; it moves to a neighbouring state."""

    noise_cv: float = 0.25
    """Coefficient of variation of the per-interval multiplicative log-normal noise (mean 1)."""

    min_mbps: float = 0.05
    """Floor applied to every noisy value outside outages."""

    outage_prob: float = 0.0
    """Per-interval probability of starting an outage (zero bandwidth); must be < 1."""

    outage_s: tuple[float, float] = (2.0, 8.0)
    """Outage length range in seconds, drawn uniformly (at least one interval)."""

    def __post_init__(self) -> None:
        def bad(msg: str) -> TraceError:
            return TraceError(f"synthetic trace parameters: {msg}")

        if not (math.isfinite(self.duration_s) and self.duration_s > 0):
            raise bad(f"duration_s must be > 0, got {self.duration_s}")
        if not (math.isfinite(self.interval_s) and 0 < self.interval_s <= self.duration_s):
            raise bad(f"interval_s must be in (0, duration_s], got {self.interval_s}")
        if len(self.states_mbps) == 0:
            raise bad("states_mbps must not be empty")
        if not all(math.isfinite(s) and s > 0 for s in self.states_mbps):
            raise bad(f"states_mbps must all be > 0, got {self.states_mbps}")
        if not 0 <= self.switch_prob <= 1:
            raise bad(f"switch_prob must be in [0, 1], got {self.switch_prob}")
        if not (math.isfinite(self.noise_cv) and self.noise_cv >= 0):
            raise bad(f"noise_cv must be >= 0, got {self.noise_cv}")
        if not (math.isfinite(self.min_mbps) and self.min_mbps >= 0):
            raise bad(f"min_mbps must be >= 0, got {self.min_mbps}")
        if not 0 <= self.outage_prob < 1:
            raise bad(f"outage_prob must be in [0, 1), got {self.outage_prob}")
        if len(self.outage_s) != 2:
            raise bad(f"outage_s must be a (min, max) pair, got {self.outage_s}")
        lo, hi = self.outage_s
        if not (math.isfinite(hi) and 0 < lo <= hi):
            raise bad(f"outage_s must satisfy 0 < min <= max, got {self.outage_s}")


def generate_trace(params: SynthParams, seed: int, name: str) -> Trace:
    """Generate one trace; the same ``seed`` always gives the same trace.

    Every random number is drawn up front from ``np.random.default_rng(seed)``, so turning
    outages on keeps the same state sequence and noise, only zeroing the outage intervals.
    """
    rng = np.random.default_rng(seed)
    n = max(1, round(params.duration_s / params.interval_s))
    states = np.asarray(params.states_mbps, dtype=np.float64)
    k = len(states)
    switch_u = rng.random(n)
    direction_u = rng.random(n)
    noise_z = rng.standard_normal(n)
    outage_u = rng.random(n)
    outage_len_s = rng.uniform(params.outage_s[0], params.outage_s[1], size=n)
    state = int(rng.integers(k))

    state_idx = np.empty(n, dtype=np.int64)
    in_outage = np.zeros(n, dtype=bool)
    outage_left = 0
    for i in range(n):
        if i > 0 and k > 1 and switch_u[i] < params.switch_prob:
            # Move to a neighbour; at either end the only neighbour is inward.
            step = 1 if direction_u[i] < 0.5 else -1
            if state + step < 0 or state + step >= k:
                step = -step
            state += step
        state_idx[i] = state
        if outage_left == 0 and outage_u[i] < params.outage_prob:
            outage_left = max(1, round(outage_len_s[i] / params.interval_s))
        if outage_left > 0:
            in_outage[i] = True
            outage_left -= 1

    # Log-normal with mean 1 and the requested coefficient of variation.
    sigma2 = math.log1p(params.noise_cv**2)
    factor = np.exp(math.sqrt(sigma2) * noise_z - sigma2 / 2)
    rates = np.maximum(states[state_idx] * factor, params.min_mbps)
    rates[in_outage] = 0.0

    times = np.arange(n + 1, dtype=np.float64) * params.interval_s
    mbps = np.concatenate((rates[:1], rates))
    return Trace(name=name, times_s=times, mbps=mbps)


def trace_seeds(seed: int, n: int) -> list[int]:
    """The seeds of traces ``0..n-1`` of a set generated with ``seed``: spawned from
    ``np.random.SeedSequence(seed)``, so trace ``i``'s seed does not depend on ``n``."""
    return [
        int(child.generate_state(1, dtype=np.uint64)[0])
        for child in np.random.SeedSequence(seed).spawn(n)
    ]


def generate_set(out_dir: PathLike, n: int, params: SynthParams, seed: int) -> list[Path]:
    """Write ``n`` Pensieve files ``synth_000``... into ``out_dir``; return their paths.

    Trace ``i`` uses a seed spawned from ``np.random.SeedSequence(seed)``, so trace ``i`` is
    the same whatever ``n`` is.
    """
    if n < 1:
        raise TraceError(f"trace count must be >= 1, got {n}")
    return write_set(out_dir, n, seed, "synth", lambda s, name: generate_trace(params, s, name))


def write_set(
    out_dir: PathLike, n: int, seed: int, prefix: str, make: Callable[[int, str], Trace]
) -> list[Path]:
    """Write traces ``make(seed_i, "<prefix>_<i>")`` for i < ``n`` as Pensieve files into
    ``out_dir`` (created); return their paths. ``seed_i``: :func:`trace_seeds`."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TraceError(f"{out}: cannot create directory: {exc.strerror or exc}") from None
    paths = []
    for i, child_seed in enumerate(trace_seeds(seed, n)):
        name = f"{prefix}_{i:03d}"
        path = out / name
        save_pensieve(make(child_seed, name), path)
        paths.append(path)
    return paths


def constant_trace(mbps: float, duration_s: float, name: str, interval_s: float = 1.0) -> Trace:
    """A trace at ``mbps`` throughout, one line per ``interval_s`` (last line at duration)."""
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise TraceError(f"{name}: duration_s must be > 0, got {duration_s}")
    if not (math.isfinite(interval_s) and interval_s > 0):
        raise TraceError(f"{name}: interval_s must be > 0, got {interval_s}")
    n = max(1, math.ceil(duration_s / interval_s - 1e-9))
    times = np.minimum(np.arange(n + 1, dtype=np.float64) * interval_s, duration_s)
    return Trace(name=name, times_s=times, mbps=np.full(n + 1, float(mbps)))


def step_trace(levels_mbps: Sequence[float], step_s: float, name: str) -> Trace:
    """Level ``j`` holds on ``(j*step_s, (j+1)*step_s]``; times ``0, step_s, ...``."""
    if len(levels_mbps) == 0:
        raise TraceError(f"{name}: levels_mbps must not be empty")
    if not (math.isfinite(step_s) and step_s > 0):
        raise TraceError(f"{name}: step_s must be > 0, got {step_s}")
    levels = np.asarray(levels_mbps, dtype=np.float64)
    times = np.arange(len(levels) + 1, dtype=np.float64) * step_s
    return Trace(name=name, times_s=times, mbps=np.concatenate((levels[:1], levels)))


DEFAULT_TRACE_COUNT = 24
"""Traces in the embedded default set (``streambed eval`` and the demo without ``--traces``)."""
DEFAULT_SEED = 0
DEFAULT_TRACE_PARAMS = SynthParams(duration_s=320.0, outage_prob=0.003)
DEMO_TRACE_PARAMS = SynthParams(
    duration_s=320.0,
    states_mbps=(0.2, 0.4, 0.8, 1.5, 2.5, 4.0, 6.0),
    switch_prob=0.12,
    noise_cv=0.45,
    outage_prob=0.025,
    outage_s=(3.0, 10.0),
)
"""The demo's traces, cellular-like (0.2 to 6 Mbit/s, frequent deep fades, outages of 3 to
10 s as in tunnels): on the default set every algorithm played without a stall and scored
about the same, so the demo showed no difference between them."""


def default_traces(
    count: int = DEFAULT_TRACE_COUNT,
    seed: int = DEFAULT_SEED,
    params: SynthParams = DEFAULT_TRACE_PARAMS,
) -> list[Trace]:
    """The embedded default trace set: Markov-modulated synthetic traces (0.5 to 6 Mbit/s
    states, rare short outages; ``params`` to change them), generated here (no data, no
    network)."""
    return [
        generate_trace(params, seed=seed * 1000 + i, name=f"synth_{i:03d}") for i in range(count)
    ]
