"""Run-to-run spread: the same session emulated several times (``streambed emulate --repeat R``).

An emulated session is not deterministic: the host's scheduling moves a chunk's last byte by
milliseconds, and a stall lands or does not land before an outage. Repeating every session and
reporting how far the repeats of one (algorithm, trace) lie apart bounds every emulated figure:
two algorithms (or the simulator and the emulation) that differ by less than the spread are not
told apart by one run.

Repeated sessions are labelled ``<trace>-r<R>`` (R from 1). Per (algorithm, trace):
``n`` repeats, the mean, standard deviation (``ddof=1``), minimum, maximum and range
(max - min) of the session QoE. Per algorithm (``run_to_run`` in summary.json): the mean and
largest range, and the mean standard deviation, over its traces.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streambed.reports.summary import SessionMetrics

REPEAT_LABEL = re.compile(r"^(?P<trace>.+)-r(?P<repeat>[1-9][0-9]*)$")


def base_trace(label: str) -> str:
    """The trace of a repeated session's label (``norway_bus_1-r3`` -> ``norway_bus_1``)."""
    found = REPEAT_LABEL.match(label)
    return found["trace"] if found else label


@dataclass(frozen=True)
class TraceSpread:
    """The repeats of one algorithm on one trace (QoE per chunk, over the session's window)."""

    algorithm: str
    trace: str
    n: int
    qoe_mean: float
    qoe_std: float
    qoe_min: float
    qoe_max: float
    qoe_range: float


def trace_spreads(metrics: Sequence[SessionMetrics]) -> list[TraceSpread]:
    """One row per (algorithm, trace) with at least two finite repeats, in first-seen order."""
    groups: dict[tuple[str, str], list[float]] = {}
    for m in metrics:
        if np.isfinite(m.qoe):
            groups.setdefault((m.algorithm, base_trace(m.trace)), []).append(m.qoe)
    rows = []
    for (algorithm, trace), values in groups.items():
        if len(values) < 2:
            continue
        q = np.asarray(values)
        rows.append(
            TraceSpread(
                algorithm,
                trace,
                len(q),
                float(q.mean()),
                float(q.std(ddof=1)),
                float(q.min()),
                float(q.max()),
                float(q.max() - q.min()),
            )
        )
    return rows


def spread_summary(rows: Sequence[TraceSpread]) -> dict[str, dict[str, Any]]:
    """Per algorithm: traces, repeats per trace (min), mean and max range, mean std."""
    out: dict[str, dict[str, Any]] = {}
    for algorithm in dict.fromkeys(r.algorithm for r in rows):
        mine = [r for r in rows if r.algorithm == algorithm]
        ranges = [r.qoe_range for r in mine]
        out[algorithm] = {
            "traces": len(mine),
            "repeats": min(r.n for r in mine),
            "qoe_range_mean": float(np.mean(ranges)),
            "qoe_range_max": float(np.max(ranges)),
            "qoe_std_mean": float(np.mean([r.qoe_std for r in mine])),
        }
    return out


def write_repeats_csv(path: Path, rows: Sequence[TraceSpread]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(TraceSpread.__dataclass_fields__))
        writer.writeheader()
        for row in rows:
            writer.writerow(asdict(row))


def spread_lines(summary: dict[str, dict[str, Any]]) -> list[str]:
    """What ``emulate`` prints: one line per algorithm."""
    return [
        f"{name}: run-to-run QoE range over {s['repeats']} repeats of {s['traces']} traces: "
        f"mean {s['qoe_range_mean']:.4f}, max {s['qoe_range_max']:.4f} "
        f"(std {s['qoe_std_mean']:.4f})"
        for name, s in summary.items()
    ]
