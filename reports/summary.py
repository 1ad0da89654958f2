"""Per-session metrics, per-algorithm summaries, and the files ``streambed eval`` writes.

Every metric is over chunks 2..N, the window of Pensieve's QoE mean:

* ``qoe``: mean per-chunk QoE;
* ``bitrate_mean_kbps``: mean bitrate;
* ``rebuffer_s``: total stall; ``rebuffer_ratio``: stall / (stall + content played);
* ``switches_per_chunk``: level changes (from chunk 1 on) per chunk.

``summary.json`` holds, per algorithm, the means over traces of those (``qoe_mean`` ...).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streambed.abr_service.qoe import qoe_window
from streambed.reports.rundir import RunDir
from streambed.reports.sessionlog import ChunkRecord


@dataclass(frozen=True)
class SessionMetrics:
    algorithm: str
    trace: str
    qoe: float
    bitrate_mean_kbps: float
    rebuffer_s: float
    rebuffer_ratio: float
    switches_per_chunk: float
    chunks: int


def session_metrics(records: Sequence[ChunkRecord], chunk_s: float) -> SessionMetrics:
    window = qoe_window(records)
    n = len(window)
    qualities = [r.quality for r in records]
    stall = float(sum(r.rebuffer_s for r in window))
    switches = sum(1 for a, b in zip(qualities, qualities[1:], strict=False) if a != b)
    nan = float("nan")
    return SessionMetrics(
        algorithm=records[0].algorithm,
        trace=records[0].trace,
        qoe=float(np.mean([r.qoe for r in window])) if n else nan,
        bitrate_mean_kbps=float(np.mean([r.bitrate_kbps for r in window])) if n else nan,
        rebuffer_s=stall,
        rebuffer_ratio=stall / (stall + n * chunk_s) if n else nan,
        switches_per_chunk=switches / n if n else nan,
        chunks=len(records),
    )


def summarize(metrics: Sequence[SessionMetrics]) -> dict[str, dict[str, float | int]]:
    out: dict[str, dict[str, float | int]] = {}
    for algorithm in dict.fromkeys(m.algorithm for m in metrics):
        rows = [m for m in metrics if m.algorithm == algorithm]
        out[algorithm] = {
            "qoe_mean": float(np.mean([m.qoe for m in rows])),
            "bitrate_mean_kbps": float(np.mean([m.bitrate_mean_kbps for m in rows])),
            "rebuffer_ratio": float(np.mean([m.rebuffer_ratio for m in rows])),
            "switches_per_chunk": float(np.mean([m.switches_per_chunk for m in rows])),
            "rebuffer_s_mean": float(np.mean([m.rebuffer_s for m in rows])),
            "traces": len(rows),
        }
    return out


def write_report(
    out: Path, metrics: Sequence[SessionMetrics], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``summary.json`` and ``per_trace.csv``; return the summary.

    Each algorithm's entry and the summary record their ``chunk_window``
    (:func:`streambed.reports.provenance.chunk_window`; ``extra["video_chunks"]`` when known)."""
    from streambed.reports.provenance import chunk_window

    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"algorithms": summarize(metrics), **(extra or {})}
    total = summary.get("video_chunks")
    for name, entry in summary["algorithms"].items():
        entry["chunk_window"] = chunk_window([m for m in metrics if m.algorithm == name], total)
    summary["chunk_window"] = chunk_window(metrics, total)
    run = RunDir(out)
    run.summary_json.write_text(json.dumps(summary, indent=2) + "\n")
    with open(run.per_trace_csv, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(SessionMetrics.__dataclass_fields__))
        writer.writeheader()
        for m in metrics:
            writer.writerow(asdict(m))
    return summary
