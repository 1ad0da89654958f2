"""Confidence intervals over traces and paired per-trace comparisons of algorithms.

Definitions (the report's captions repeat them):

* :func:`bootstrap_ci` is the percentile bootstrap of the mean: draw ``resamples`` samples of
  ``n`` values with replacement from the ``n`` values (a seeded ``numpy.random.Generator``),
  take each resample's mean, and return the sample mean with the ``(1 - confidence) / 2`` and
  ``(1 + confidence) / 2`` quantiles of those means.
* :func:`paired_comparison` of A and B keeps the traces both have a finite value for; A wins a
  trace when ``a - b > tie_tolerance``, loses it when ``b - a > tie_tolerance``, else it is a
  tie; ``mean_diff`` is the mean of ``a - b`` over those traces, with its bootstrap interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# Resample means are computed in batches of at most this many drawn values, so that thousands
# of traces times thousands of resamples do not need one huge index array.
_BATCH_VALUES = 1 << 20


def bootstrap_ci(
    values: Sequence[float] | npt.NDArray[np.float64],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its percentile-bootstrap interval.

    ``values`` must be non-empty and finite. One value gives a zero-width interval. The bounds
    are clipped to the values' range (no resample mean can leave it; the clip only removes
    rounding, so that a constant sample gives exactly ``(c, c, c)``).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("bootstrap_ci needs a non-empty 1-D sample")
    if not np.all(np.isfinite(x)):
        raise ValueError("bootstrap_ci needs finite values")
    if resamples < 1:
        raise ValueError("resamples must be >= 1")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    lo_x, hi_x = float(x.min()), float(x.max())
    mean = min(max(float(x.mean()), lo_x), hi_x)
    n = x.size
    if n == 1 or lo_x == hi_x:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    per_batch = max(1, _BATCH_VALUES // n)
    for start in range(0, resamples, per_batch):
        count = min(per_batch, resamples - start)
        means[start : start + count] = x[rng.integers(0, n, size=(count, n))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return mean, min(max(float(low), lo_x), hi_x), min(max(float(high), lo_x), hi_x)


@dataclass(frozen=True)
class PairedComparison:
    """A against B over their common traces (see the module docstring)."""

    traces: int
    """Traces both have a finite value for."""
    wins: int
    """Traces where A's value is higher than B's by more than the tie tolerance."""
    ties: int
    losses: int
    mean_diff: float
    """Mean of A - B over the common traces (NaN when there are none)."""
    low: float
    high: float
    """Bootstrap interval of ``mean_diff`` (NaN when there are no common traces)."""

    @property
    def win_fraction(self) -> float:
        return self.wins / self.traces if self.traces else math.nan

    @property
    def tie_fraction(self) -> float:
        return self.ties / self.traces if self.traces else math.nan

    @property
    def loss_fraction(self) -> float:
        return self.losses / self.traces if self.traces else math.nan


def paired_comparison(
    a: Mapping[str, float],
    b: Mapping[str, float],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    tie_tolerance: float = 1e-9,
) -> PairedComparison:
    """Compare A's and B's per-trace values (``trace -> value``) on the traces both have.

    Non-finite values drop their trace. The differences are taken in sorted trace order, so
    the interval does not depend on the mappings' order.
    """
    common = sorted(t for t in a.keys() & b.keys() if math.isfinite(a[t]) and math.isfinite(b[t]))
    if not common:
        nan = math.nan
        return PairedComparison(0, 0, 0, 0, nan, nan, nan)
    diff = np.array([a[t] - b[t] for t in common], dtype=np.float64)
    wins = int(np.sum(diff > tie_tolerance))
    losses = int(np.sum(diff < -tie_tolerance))
    mean, low, high = bootstrap_ci(diff, resamples=resamples, confidence=confidence, seed=seed)
    return PairedComparison(
        traces=len(common),
        wins=wins,
        ties=len(common) - wins - losses,
        losses=losses,
        mean_diff=mean,
        low=low,
        high=high,
    )
