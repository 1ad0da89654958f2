"""PNG plots of a report: QoE CDF per algorithm, mean bitrate against rebuffer ratio, and one
session's timeline.

Each function saves the PNG to ``path`` and returns the path, or, without a path, returns the
PNG's bytes (for embedding in the HTML report).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import overload

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from streambed.reports.sessionlog import ChunkRecord  # noqa: E402
from streambed.reports.summary import SessionMetrics  # noqa: E402
from streambed.traces import Trace  # noqa: E402

TIMELINE_SIZE_IN = (7.0, 2.6)
TIMELINE_DPI = 80
# Bandwidth and throughput spikes (a small chunk fetched in a burst) would flatten everything
# else: the timeline's kbps axis stops at this factor over the larger of the top bitrate chosen
# and the 95th percentiles, and points above it are drawn at the edge as triangles.
_KBPS_HEADROOM = 1.3


def _finish(fig: Figure, path: Path | None, dpi: int) -> Path | bytes:
    try:
        if path is not None:
            fig.savefig(path, dpi=dpi)
            return path
        buf = io.BytesIO()
        fig.savefig(buf, dpi=dpi, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


@overload
def plot_qoe_cdf(metrics: Sequence[SessionMetrics], path: Path, *, dpi: int = ...) -> Path: ...
@overload
def plot_qoe_cdf(
    metrics: Sequence[SessionMetrics], path: None = ..., *, dpi: int = ...
) -> bytes: ...
def plot_qoe_cdf(
    metrics: Sequence[SessionMetrics], path: Path | None = None, *, dpi: int = 110
) -> Path | bytes:
    """CDF over traces of each algorithm's per-trace QoE."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for algorithm in dict.fromkeys(m.algorithm for m in metrics):
        qoe = np.sort([m.qoe for m in metrics if m.algorithm == algorithm])
        ax.step(
            qoe,
            np.arange(1, len(qoe) + 1) / len(qoe),
            where="post",
            label=f"{algorithm} (mean {qoe.mean():.3f})",
        )
    ax.set_xlabel("QoE per trace (mean per-chunk QoE, chunks 2..N)")
    ax.set_ylabel("CDF over traces")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return _finish(fig, path, dpi)


@overload
def plot_bitrate_rebuffer(
    metrics: Sequence[SessionMetrics], path: Path, *, dpi: int = ...
) -> Path: ...
@overload
def plot_bitrate_rebuffer(
    metrics: Sequence[SessionMetrics], path: None = ..., *, dpi: int = ...
) -> bytes: ...
def plot_bitrate_rebuffer(
    metrics: Sequence[SessionMetrics], path: Path | None = None, *, dpi: int = 110
) -> Path | bytes:
    """Each algorithm's mean bitrate against its rebuffer ratio (means and per trace)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for algorithm in dict.fromkeys(m.algorithm for m in metrics):
        rows = [m for m in metrics if m.algorithm == algorithm]
        rebuf = np.array([m.rebuffer_ratio for m in rows]) * 100
        rate = np.array([m.bitrate_mean_kbps for m in rows])
        (line,) = ax.plot(rebuf.mean(), rate.mean(), "o", markersize=9, label=algorithm)
        ax.scatter(rebuf, rate, s=6, alpha=0.2, color=line.get_color())
    ax.set_xlabel("rebuffer ratio (%)")
    ax.set_ylabel("mean bitrate (kbps)")
    ax.set_title("mean over traces (large) and per trace (small)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _finish(fig, path, dpi)


def looped_bandwidth(trace: Trace, until_s: float) -> tuple[np.ndarray, np.ndarray]:
    """``(t_s, kbps)`` of ``trace`` from its first line, looped until ``until_s``, for a
    ``where="pre"`` step plot: ``kbps[i]`` holds over ``(t_s[i-1], t_s[i]]`` (the Pensieve
    convention, as the simulator and the emulated links replay it)."""
    rel = trace.times_s - trace.times_s[0]
    period = float(rel[-1])
    loops = max(1, math.ceil(until_s / period)) if until_s > 0 else 1
    t = np.concatenate([[0.0], *(rel[1:] + k * period for k in range(loops))])
    kbps = np.concatenate([[trace.mbps[1]], np.tile(trace.mbps[1:], loops)]) * 1000
    keep = int(np.searchsorted(t, until_s, side="left")) + 1  # the interval holding until_s
    return t[:keep], kbps[:keep]


@overload
def plot_timeline(
    records: Sequence[ChunkRecord],
    trace: Trace | None = ...,
    path: None = ...,
    *,
    dpi: int = ...,
) -> bytes: ...
@overload
def plot_timeline(
    records: Sequence[ChunkRecord], trace: Trace | None, path: Path, *, dpi: int = ...
) -> Path: ...
def plot_timeline(
    records: Sequence[ChunkRecord],
    trace: Trace | None = None,
    path: Path | None = None,
    *,
    dpi: int = TIMELINE_DPI,
) -> Path | bytes:
    """One session against session seconds: the bitrate chosen (step), each chunk's measured
    throughput (at its last byte), the trace's bandwidth (looped, when given), and the buffer
    (right axis), with stalls shaded (the first chunk's start-up wait in grey)."""
    fig, ax = plt.subplots(figsize=TIMELINE_SIZE_IN)
    end_s = max(r.request_end_s + r.sleep_s for r in records)
    starts = np.array([r.request_start_s for r in records])
    rates = np.array([r.bitrate_kbps for r in records], dtype=np.float64)
    ends = np.array([r.request_end_s for r in records])
    throughput = np.array([r.throughput_kbps for r in records])
    tops = [float(rates.max()), float(np.percentile(throughput, 95))]
    if trace is not None:
        bw_t, bw_kbps = looped_bandwidth(trace, end_s)
        tops.append(float(np.percentile(bw_kbps, 95)))
        ax.step(bw_t, bw_kbps, where="pre", color="0.55", lw=0.9, label="trace bandwidth")
    top = max(tops) * _KBPS_HEADROOM
    ax.step(
        np.append(starts, end_s),
        np.append(rates, rates[-1]),
        where="post",
        color="C0",
        lw=1.8,
        zorder=4,
        label="bitrate chosen",
    )
    inside = throughput <= top
    ax.plot(ends[inside], throughput[inside], ".", color="C1", ms=4, zorder=5, label="throughput")
    if not inside.all():
        ax.plot(ends[~inside], np.full((~inside).sum(), top), "^", color="C1", ms=4)
    # A stall shorter than a pixel is still drawn, as a band of the smallest visible width.
    min_width = end_s / 250
    for i, r in enumerate(records):
        if r.rebuffer_s > 0:
            color = "0.8" if i == 0 else "red"
            width = max(r.rebuffer_s, min_width)
            ax.axvspan(r.request_end_s - width, r.request_end_s, color=color, alpha=0.35)
    ax.set_xlim(0, end_s)
    ax.set_ylim(0, top)
    ax.set_xlabel("session time (s)", fontsize=8)
    ax.set_ylabel("kbps", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.25)

    buf_ax = ax.twinx()
    buf_t, buf_s = _buffer_curve(records)
    buf_ax.plot(buf_t, buf_s, color="C2", lw=0.8, alpha=0.75, label="buffer (s)")
    buf_ax.set_ylim(0, max(float(buf_s.max()), 1.0) * 1.1)
    buf_ax.set_ylabel("buffer (s)", fontsize=8)
    buf_ax.tick_params(labelsize=7)

    handles, labels = ax.get_legend_handles_labels()
    more_h, more_l = buf_ax.get_legend_handles_labels()
    handles, labels = handles + more_h, labels + more_l
    if any(r.rebuffer_s > 0 for r in records[1:]):
        handles.append(Patch(color="red", alpha=0.35))
        labels.append("stall")
    fig.legend(
        handles,
        labels,
        loc="upper center",
        ncol=5,
        fontsize=7,
        frameon=False,
        borderaxespad=0.2,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return _finish(fig, path, dpi)


def _buffer_curve(records: Sequence[ChunkRecord]) -> tuple[np.ndarray, np.ndarray]:
    """The buffer level over the session: draining during each download, the chunk's seconds
    added at its last byte, then any wait over the cap."""
    t: list[float] = []
    level: list[float] = []
    for r in records:
        drained = max(r.buffer_before_s - r.download_s, 0.0)
        t += [r.request_start_s, r.request_end_s, r.request_end_s]
        level += [r.buffer_before_s, drained, r.buffer_s + r.sleep_s]
        if r.sleep_s > 0:
            t.append(r.request_end_s + r.sleep_s)
            level.append(r.buffer_s)
    return np.array(t), np.array(level)
