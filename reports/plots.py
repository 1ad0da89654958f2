"""Plots of a report: QoE CDF per algorithm, mean bitrate against rebuffer ratio, and one
session's timeline, in the paper style of :mod:`streambed.reports.style`.

Each function saves the PNG to ``path`` and a PDF of the same stem next to it, and returns the
path, or, without a path, returns the PNG's bytes (for embedding in the HTML report).
``styles`` maps a series label (the metrics' ``algorithm``) to its colour and line style;
without it, a label's colour is its algorithm's (see :func:`~streambed.reports.style.series_style`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from streambed.reports.sessionlog import ChunkRecord  # noqa: E402
from streambed.reports.style import (  # noqa: E402
    COLUMN_IN,
    SeriesStyle,
    paper_style,
    save_figure,
    series_style,
)
from streambed.reports.summary import SessionMetrics  # noqa: E402
from streambed.traces import Trace  # noqa: E402

TIMELINE_SIZE_IN = (COLUMN_IN, 2.3)
TIMELINE_DPI = 160
SUMMARY_SIZE_IN = (COLUMN_IN, 2.6)
# Bandwidth and throughput spikes (a small chunk fetched in a burst) would flatten everything
# else: the timeline's kbps axis stops at this factor over the larger of the top bitrate chosen
# and the 95th percentiles, and points above it are drawn at the edge as triangles.
_KBPS_HEADROOM = 1.3


def qoe_label(qoe_name: str | None, what: str) -> str:
    """A QoE axis label with its unit: QoE is per chunk, in the QoE function's scale."""
    scale = f"{qoe_name}, " if qoe_name else ""
    return f"QoE ({scale}per chunk), {what}"


def _style(styles: Mapping[str, SeriesStyle] | None, label: str) -> SeriesStyle:
    if styles is not None and label in styles:
        return styles[label]
    return series_style(label)


def _finish(fig: Figure, path: Path | None, dpi: int) -> Path | bytes:
    try:
        if path is not None:
            return save_figure(fig, path, dpi)
        buf = io.BytesIO()
        fig.savefig(buf, dpi=dpi, format="png")
        return buf.getvalue()
    finally:
        plt.close(fig)


@overload
def plot_qoe_cdf(
    metrics: Sequence[SessionMetrics],
    path: Path,
    *,
    dpi: int = ...,
    styles: Mapping[str, SeriesStyle] | None = ...,
    qoe_name: str | None = ...,
) -> Path: ...
@overload
def plot_qoe_cdf(
    metrics: Sequence[SessionMetrics],
    path: None = ...,
    *,
    dpi: int = ...,
    styles: Mapping[str, SeriesStyle] | None = ...,
    qoe_name: str | None = ...,
) -> bytes: ...
def plot_qoe_cdf(
    metrics: Sequence[SessionMetrics],
    path: Path | None = None,
    *,
    dpi: int = 200,
    styles: Mapping[str, SeriesStyle] | None = None,
    qoe_name: str | None = None,
) -> Path | bytes:
    """CDF over traces of each algorithm's per-trace QoE; the x axis spans every value."""
    with paper_style():
        fig, ax = plt.subplots(figsize=SUMMARY_SIZE_IN)
        finite: list[float] = []
        for algorithm in dict.fromkeys(m.algorithm for m in metrics):
            qoe = np.sort([m.qoe for m in metrics if m.algorithm == algorithm])
            qoe = qoe[np.isfinite(qoe)]
            if not len(qoe):
                continue
            finite += qoe.tolist()
            style = _style(styles, algorithm)
            # Start at 0 left of the smallest value, so each curve is drawn from its first step.
            ax.step(
                np.concatenate([qoe[:1], qoe]),
                np.concatenate([[0.0], np.arange(1, len(qoe) + 1) / len(qoe)]),
                where="post",
                color=style.color,
                linestyle=style.linestyle,
                label=f"{algorithm} (mean {qoe.mean():.2f})",
            )
        if finite:
            low, high = min(finite), max(finite)
            pad = 0.03 * (high - low or 1.0)
            ax.set_xlim(low - pad, high + pad)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(qoe_label(qoe_name, "session mean"))
        ax.set_ylabel("CDF over traces")
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        fig.tight_layout()
        return _finish(fig, path, dpi)


@overload
def plot_bitrate_rebuffer(
    metrics: Sequence[SessionMetrics],
    path: Path,
    *,
    dpi: int = ...,
    styles: Mapping[str, SeriesStyle] | None = ...,
) -> Path: ...
@overload
def plot_bitrate_rebuffer(
    metrics: Sequence[SessionMetrics],
    path: None = ...,
    *,
    dpi: int = ...,
    styles: Mapping[str, SeriesStyle] | None = ...,
) -> bytes: ...
def plot_bitrate_rebuffer(
    metrics: Sequence[SessionMetrics],
    path: Path | None = None,
    *,
    dpi: int = 200,
    styles: Mapping[str, SeriesStyle] | None = None,
) -> Path | bytes:
    """Each algorithm's mean bitrate against its rebuffer ratio (means and per trace)."""
    with paper_style():
        fig, ax = plt.subplots(figsize=SUMMARY_SIZE_IN)
        for algorithm in dict.fromkeys(m.algorithm for m in metrics):
            rows = [m for m in metrics if m.algorithm == algorithm]
            rebuf = np.array([m.rebuffer_ratio for m in rows]) * 100
            rate = np.array([m.bitrate_mean_kbps for m in rows]) / 1000
            style = _style(styles, algorithm)
            ax.plot(
                np.nanmean(rebuf),
                np.nanmean(rate),
                style.marker,
                color=style.color,
                markersize=7,
                markeredgecolor="black",
                markeredgewidth=0.5,
                label=algorithm,
            )
            ax.scatter(rebuf, rate, s=5, alpha=0.25, color=style.color, marker=style.marker)
        ax.set_xlabel("rebuffer ratio (%)")
        ax.set_ylabel("mean bitrate (Mbit/s)")
        ax.set_title("mean over traces (large), per trace (small)")
        ax.grid(alpha=0.3)
        ax.legend()
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


@dataclass(frozen=True)
class TimelineLimits:
    """The y-limits of a timeline: timelines shown side by side share them (the largest)."""

    kbps_top: float
    buffer_top_s: float

    def union(self, other: TimelineLimits) -> TimelineLimits:
        return TimelineLimits(
            max(self.kbps_top, other.kbps_top), max(self.buffer_top_s, other.buffer_top_s)
        )


def timeline_limits(records: Sequence[ChunkRecord], trace: Trace | None = None) -> TimelineLimits:
    """The y-limits :func:`plot_timeline` draws this session with on its own."""
    end_s = max(r.request_end_s + r.sleep_s for r in records)
    rates = [r.bitrate_kbps for r in records]
    throughput = [r.throughput_kbps for r in records]
    tops = [float(max(rates)), float(np.percentile(throughput, 95))]
    if trace is not None:
        tops.append(float(np.percentile(looped_bandwidth(trace, end_s)[1], 95)))
    _, buf_s = _buffer_curve(records)
    return TimelineLimits(max(tops) * _KBPS_HEADROOM, max(float(buf_s.max()), 1.0) * 1.1)


@overload
def plot_timeline(
    records: Sequence[ChunkRecord],
    trace: Trace | None = ...,
    path: None = ...,
    *,
    dpi: int = ...,
    limits: TimelineLimits | None = ...,
    style: SeriesStyle | None = ...,
) -> bytes: ...
@overload
def plot_timeline(
    records: Sequence[ChunkRecord],
    trace: Trace | None,
    path: Path,
    *,
    dpi: int = ...,
    limits: TimelineLimits | None = ...,
    style: SeriesStyle | None = ...,
) -> Path: ...
def plot_timeline(
    records: Sequence[ChunkRecord],
    trace: Trace | None = None,
    path: Path | None = None,
    *,
    dpi: int = TIMELINE_DPI,
    limits: TimelineLimits | None = None,
    style: SeriesStyle | None = None,
) -> Path | bytes:
    """One session against session seconds: the bitrate chosen (step, in the algorithm's
    colour and the source's line style), each chunk's measured throughput (at its last byte),
    the trace's bandwidth (looped, when given), and the buffer (right axis), with stalls shaded
    (the first chunk's start-up wait in grey). ``limits`` (default: this session's own, see
    :func:`timeline_limits`) fixes both y axes, so timelines side by side compare."""
    style = style or series_style(records[0].algorithm)
    limits = limits or timeline_limits(records, trace)
    with paper_style():
        fig, ax = plt.subplots(figsize=TIMELINE_SIZE_IN)
        end_s = max(r.request_end_s + r.sleep_s for r in records)
        starts = np.array([r.request_start_s for r in records])
        rates = np.array([r.bitrate_kbps for r in records], dtype=np.float64)
        ends = np.array([r.request_end_s for r in records])
        throughput = np.array([r.throughput_kbps for r in records])
        if trace is not None:
            bw_t, bw_kbps = looped_bandwidth(trace, end_s)
            ax.step(bw_t, bw_kbps, where="pre", color="0.6", lw=0.8, label="trace bandwidth")
        top = limits.kbps_top
        ax.step(
            np.append(starts, end_s),
            np.append(rates, rates[-1]),
            where="post",
            color=style.color,
            linestyle=style.linestyle,
            lw=1.5,
            zorder=4,
            label="bitrate chosen",
        )
        inside = throughput <= top
        ax.plot(
            ends[inside], throughput[inside], ".", color="0.2", ms=3, zorder=5, label="throughput"
        )
        if not inside.all():
            ax.plot(ends[~inside], np.full((~inside).sum(), top), "^", color="0.2", ms=3)
        # A stall shorter than a pixel is still drawn, as a band of the smallest visible width.
        min_width = end_s / 250
        for i, r in enumerate(records):
            if r.rebuffer_s > 0:
                color = "0.8" if i == 0 else "red"
                width = max(r.rebuffer_s, min_width)
                ax.axvspan(r.request_end_s - width, r.request_end_s, color=color, alpha=0.35)
        ax.set_xlim(0, end_s)
        ax.set_ylim(0, top)
        ax.set_xlabel("session time (s)")
        ax.set_ylabel("kbit/s")
        ax.grid(alpha=0.25)

        buf_ax = ax.twinx()
        buf_t, buf_s = _buffer_curve(records)
        buf_ax.plot(buf_t, buf_s, color="#009E73", lw=0.8, alpha=0.75, label="buffer (s)")
        buf_ax.set_ylim(0, limits.buffer_top_s)
        buf_ax.set_ylabel("buffer (s)")

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
            ncol=3,
            frameon=False,
            borderaxespad=0.1,
            handlelength=1.5,
            columnspacing=1.0,
        )
        fig.tight_layout(rect=(0, 0, 1, 0.86))
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
