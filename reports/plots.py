"""PNG plots of a report: QoE CDF per algorithm, and mean bitrate against rebuffer ratio."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from reports.summary import SessionMetrics  # noqa: E402


def plot_qoe_cdf(metrics: Sequence[SessionMetrics], path: Path) -> Path:
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bitrate_rebuffer(metrics: Sequence[SessionMetrics], path: Path) -> Path:
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
