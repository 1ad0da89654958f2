"""FastMPC and RobustMPC (Yin et al., SIGCOMM '15) as in Pensieve's baselines.

The throughput prediction is the harmonic mean of the last 5 measurements; RobustMPC divides
it by 1 + the largest relative prediction error of the last 5 chunks. Every plan of
``horizon`` levels (6^5 = 7,776) is scored at once with numpy over the plan tree: the buffer evolves by
``- size / prediction`` (stall below zero) ``+ chunk_s`` per chunk, and the plan's QoE is the
metric's sum over the horizon (switch from the last level included). The first level of the
best plan is chosen; ties go to the plan enumerated last, as in Pensieve's loop.

"fastmpc" here is exact MPC without the error discount (what Pensieve calls MPC); the
original FastMPC replaces the search by a precomputed table of it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from streambed.abr_service.algorithms.base import ABRAlgorithm, ChunkFeedback, PlayerState
from streambed.abr_service.algorithms.rate_based import harmonic_mean
from streambed.abr_service.qoe import make_qoe
from streambed.abr_service.video import Video


@dataclass(frozen=True)
class MPCParams:
    horizon: int = 5
    """Chunks planned ahead."""
    window: int = 5
    """Past throughputs in the harmonic mean, and past errors in the robust bound."""
    qoe: str = "lin"
    """QoE metric the plans are scored with (lin, log, hd)."""


@lru_cache(maxsize=64)
def _plans(num_levels: int, horizon: int) -> np.ndarray:
    return np.asarray(list(itertools.product(range(num_levels), repeat=horizon)), dtype=np.int64)


@lru_cache(maxsize=64)
def _plan_terms(
    utility: tuple[float, ...], horizon: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per plan: utility sum, switches inside the plan, and the first level's utility."""
    plans = _plans(len(utility), horizon)
    u = np.asarray(utility)[plans]
    inner = np.abs(np.diff(u, axis=1)).sum(axis=1) if horizon > 1 else np.zeros(len(plans))
    return u.sum(axis=1), inner, u[:, 0]


class MPC(ABRAlgorithm):
    """Model predictive control over the next ``horizon`` chunks."""

    name = "fastmpc"
    Params = MPCParams
    params: MPCParams
    robust = False

    def __init__(self, video: Video, params: MPCParams | None = None) -> None:
        super().__init__(video, params)
        metric = make_qoe(self.params.qoe, video.bitrates_kbps)
        self._utility = np.asarray(metric.utilities)
        self._rebuffer_penalty = metric.rebuffer_penalty
        self._smooth_penalty = metric.smooth_penalty
        self._errors: list[float] = []
        self._estimate_bps: float | None = None

    def on_chunk(self, feedback: ChunkFeedback) -> None:
        super().on_chunk(feedback)
        measured = feedback.throughput_bps
        error = 0.0
        if self._estimate_bps is not None:
            error = abs(self._estimate_bps - measured) / measured
        self._errors.append(error)
        self._estimate_bps = harmonic_mean(self.throughputs_bps(self.params.window))

    def predicted_bps(self) -> float:
        estimate = self._estimate_bps or 0.0
        if self.robust and self._errors:
            estimate /= 1.0 + max(self._errors[-self.params.window :])
        return estimate

    def select(self, state: PlayerState) -> int:
        horizon = min(self.params.horizon, self.video.num_chunks - state.next_chunk)
        prediction = self.predicted_bps()
        if horizon <= 0 or prediction <= 0:
            return state.last_quality
        levels = self.video.num_levels
        columns = np.arange(state.next_chunk, state.next_chunk + horizon)
        download_s = self.video.chunk_bytes[:, columns] / prediction  # (levels, horizon)
        # Walk the plan tree level by level (plans share prefixes): 6 + 36 + ... + 7,776
        # nodes; the last level is in itertools.product order, the first level slowest.
        buffer = np.array([state.buffer_s])
        stall = np.zeros(1)
        for j in range(horizon):
            d = np.tile(download_s[:, j], len(buffer))
            b = np.repeat(buffer, levels)
            stall = np.repeat(stall, levels) + np.maximum(d - b, 0.0)
            buffer = np.maximum(b - d, 0.0) + self.video.chunk_s
        total, inner, first = _plan_terms(tuple(self._utility), horizon)
        switches = inner + np.abs(first - self._utility[state.last_quality])
        reward = total - self._rebuffer_penalty * stall - self._smooth_penalty * switches
        plans = _plans(levels, horizon)
        best = len(plans) - 1 - int(np.argmax(reward[::-1]))
        return int(plans[best, 0])


class RobustMPC(MPC):
    name = "robustmpc"
    robust = True
