"""Trace sets (a directory of trace files) and their summary statistics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from streambed.core.errors import TraceError
from streambed.traces.formats import PathLike, Trace, load_trace


def trace_files(directory: PathLike) -> list[Path]:
    """Regular, non-hidden files of ``directory`` sorted by name; ``TraceError`` if none."""
    d = Path(directory)
    if not d.is_dir():
        raise TraceError(f"{d}: trace set directory does not exist")
    files = sorted(
        (p for p in d.iterdir() if p.is_file() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )
    if not files:
        raise TraceError(f"{d}: trace set directory has no trace files")
    return files


def load_traceset(directory: PathLike, bin_s: float = 1.0) -> list[Trace]:
    """Load every trace file of ``directory`` (sorted by name, either format)."""
    return [load_trace(p, bin_s=bin_s) for p in trace_files(directory)]


@dataclass
class TraceSetSummary:
    """Summary of a trace set.

    Percentiles are time-weighted over intervals: ``p50_mbps`` is the smallest throughput ``v``
    such that the traces spend at least half of their total time at a throughput <= ``v``.
    """

    count: int
    total_duration_s: float
    mean_duration_s: float
    mean_mbps: float
    """Mean over traces of each trace's time-weighted mean (every trace counts equally)."""
    p10_mbps: float
    p50_mbps: float
    p90_mbps: float
    min_trace_mean_mbps: float
    max_trace_mean_mbps: float

    def to_dict(self) -> dict[str, float | int]:
        """Plain JSON-serialisable dict, field names as keys."""
        return asdict(self)


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    keep = weights > 0  # zero-length intervals carry no time
    values, weights = values[keep], weights[keep]
    order = np.argsort(values, kind="stable")
    cdf = np.cumsum(weights[order])
    # Tolerance so that e.g. exactly half the time at <= v gives v for q = 0.5.
    i = int(np.searchsorted(cdf, q * cdf[-1] * (1 - 1e-12), side="left"))
    return float(values[order][min(i, len(values) - 1)])


def summarize(traces: Sequence[Trace]) -> TraceSetSummary:
    """Summary statistics of ``traces`` (at least one)."""
    if len(traces) == 0:
        raise TraceError("cannot summarize an empty trace set")
    durations = np.array([t.duration_s for t in traces])
    means = np.array([t.mean_mbps for t in traces])
    values = np.concatenate([t.mbps[1:] for t in traces])
    weights = np.concatenate([np.diff(t.times_s) for t in traces])
    return TraceSetSummary(
        count=len(traces),
        total_duration_s=float(durations.sum()),
        mean_duration_s=float(durations.mean()),
        mean_mbps=float(means.mean()),
        p10_mbps=_weighted_quantile(values, weights, 0.10),
        p50_mbps=_weighted_quantile(values, weights, 0.50),
        p90_mbps=_weighted_quantile(values, weights, 0.90),
        min_trace_mean_mbps=float(means.min()),
        max_trace_mean_mbps=float(means.max()),
    )
