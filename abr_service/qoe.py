"""Quality of experience, defined once (Pensieve's three metrics).

Per chunk k: ``QoE_k = q(R_k) - rebuffer_penalty * T_k - smooth_penalty * |q(R_k) - q(R_{k-1})|``
with R_k the chunk's bitrate, T_k the stall in seconds while fetching it, and no switch penalty
on the first chunk. A session's QoE is the mean over chunks 2..N (the first chunk, fetched at
a fixed level with the start-up stall, is left out), as Pensieve's and Pensieve-PPO's reports do.

* ``lin``: q(R) = R in Mbit/s, rebuffer penalty 4.3 (the top bitrate of 4.3 Mbit/s).
* ``log``: q(R) = ln(R / R_min), penalty 2.66.
* ``hd``: q(R) = an HD score per level (1, 2, 3, 12, 15, 20 for Pensieve's ladder), penalty 8.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from streambed.core.errors import ConfigError

PENSIEVE_HD_SCORES: tuple[float, ...] = (1.0, 2.0, 3.0, 12.0, 15.0, 20.0)

QOE_WINDOW_START = 1
"""Index of the first chunk a session's QoE counts: chunks 2..N (Pensieve's window)."""

_T = TypeVar("_T")


def qoe_window(chunks: Sequence[_T]) -> Sequence[_T]:
    """The chunks a session's QoE and its other per-session metrics count (chunks 2..N)."""
    return chunks[QOE_WINDOW_START:]


@dataclass(frozen=True)
class QoEMetric:
    """A QoE metric: per-level utilities and the two penalties."""

    name: str
    utilities: tuple[float, ...]
    rebuffer_penalty: float
    smooth_penalty: float = 1.0

    def transition(
        self,
        quality: np.ndarray | int,
        previous_quality: np.ndarray | int,
        rebuffer_s: np.ndarray | float,
    ) -> np.ndarray:
        """QoE of chunks fetched at ``quality`` after ``previous_quality`` (element-wise)."""
        u = np.asarray(self.utilities, dtype=np.float64)
        now, before = u[quality], u[previous_quality]
        return (
            now
            - self.rebuffer_penalty * np.asarray(rebuffer_s, np.float64)
            - self.smooth_penalty * np.abs(now - before)
        )

    def chunk_qoe(
        self,
        qualities: Sequence[int] | np.ndarray,
        rebuffer_s: Sequence[float] | np.ndarray,
        previous_quality: int | None = None,
    ) -> np.ndarray:
        """Per-chunk QoE of a sequence; ``previous_quality`` is the level before the first one."""
        q = np.asarray(qualities, dtype=np.int64)
        prev = np.empty_like(q)
        prev[1:] = q[:-1]
        if len(q):
            prev[0] = q[0] if previous_quality is None else previous_quality
        return self.transition(q, prev, np.asarray(rebuffer_s, np.float64))

    def session_qoe(self, qualities: Sequence[int], rebuffer_s: Sequence[float]) -> float:
        """Mean per-chunk QoE over chunks 2..N (NaN for a session of one chunk)."""
        window = self.chunk_qoe(qualities, rebuffer_s)[QOE_WINDOW_START:]
        return float(np.mean(window)) if len(window) else float("nan")


def make_qoe(
    name: str, bitrates_kbps: Sequence[float], hd_scores: Sequence[float] | None = None
) -> QoEMetric:
    """The metric ``name`` (lin, log or hd) for a ladder."""
    rates = np.asarray(bitrates_kbps, dtype=np.float64)
    if name == "lin":
        return QoEMetric("lin", tuple(float(r) for r in rates / 1000.0), 4.3)
    if name == "log":
        return QoEMetric("log", tuple(float(r) for r in np.log(rates / rates[0])), 2.66)
    if name == "hd":
        scores = tuple(hd_scores) if hd_scores is not None else PENSIEVE_HD_SCORES
        if len(scores) != len(rates):
            raise ConfigError(
                f"qoe 'hd' needs one score per level: {len(scores)} scores for {len(rates)} levels"
            )
        return QoEMetric("hd", tuple(float(s) for s in scores), 8.0)
    raise ConfigError(f"unknown QoE metric {name!r}; choose lin, log or hd")


QOE_NAMES = ("lin", "log", "hd")
