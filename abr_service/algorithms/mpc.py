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
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from streambed.abr_service.algorithms.base import (
    CHOICES,
    RANGE,
    ABRAlgorithm,
    Bounds,
    ChunkFeedback,
    PlayerState,
)
from streambed.abr_service.algorithms.rate_based import harmonic_mean
from streambed.abr_service.qoe import QOE_NAMES, QoEMetric, make_qoe
from streambed.abr_service.video import Video
from streambed.core.errors import ConfigError

DEFAULT_MAX_HORIZON = 5
"""Longest horizon a client may ask for: 6^5 = 7,776 plans keep a decision under a millisecond
(horizon 6 takes about 6 times as long, and the plan set grows 6-fold per chunk)."""
HARD_MAX_HORIZON = 8
"""Longest an operator may allow (``streambed serve --max-mpc-horizon``): 6^8 = 1.7 M plans,
seconds a decision and hundreds of MB of cached plans."""

_max_horizon = DEFAULT_MAX_HORIZON


def max_horizon() -> int:
    """The longest horizon this process accepts."""
    return _max_horizon


def set_max_horizon(horizon: int) -> None:
    """Let this process accept horizons up to ``horizon`` (an operator's choice, not a
    client's); ``ConfigError`` beyond :data:`HARD_MAX_HORIZON`."""
    global _max_horizon
    if not 1 <= horizon <= HARD_MAX_HORIZON:
        raise ConfigError(f"max MPC horizon {horizon}: must be in [1, {HARD_MAX_HORIZON}]")
    _max_horizon = horizon
    _plans.cache_clear()
    _plan_terms.cache_clear()


def horizon_range() -> Bounds:
    return (1, _max_horizon)


HISTORY_SCOPES = ("session", "process")


@dataclass(frozen=True)
class MPCParams:
    horizon: int = field(default=5, metadata={RANGE: horizon_range})
    """Chunks planned ahead."""
    window: int = field(default=5, metadata={RANGE: (1, 1000)})
    """Past throughputs in the harmonic mean, and past errors in the robust bound."""
    qoe: str = field(default="lin", metadata={CHOICES: QOE_NAMES})
    """QoE metric the plans are scored with (lin, log, hd; ssim and vmaf, as Puffer's MPC
    plans on SSIM, need a video description with the measurements)."""
    history: str = field(default="session", metadata={CHOICES: HISTORY_SCOPES})
    """Where the prediction-error history lives: ``session`` (each session its own), or
    ``process``: carried from one session to the next in this process, as Pensieve's mpc.py does
    with module globals (its published 0.925 on norway-test comes from that; sessions must then
    run one after another, as ``streambed eval`` runs them, and in the service every session
    that asks for it shares one history)."""


@dataclass
class _History:
    """Relative prediction errors (the last ``window`` kept) and the last estimate, bits/s."""

    errors: list[float] = field(default_factory=list)
    estimate_bps: float | None = None


_process_histories: dict[tuple[str, int], _History] = {}
"""``history=process``: one per (algorithm, window), shared by every session of the process."""


# Bounded twice: horizons up to max_horizon() (so each entry's size), and few entries (a
# session near the end of a video asks for every shorter horizon, per ladder and metric).
@lru_cache(maxsize=32)
def _plans(num_levels: int, horizon: int) -> np.ndarray:
    if horizon > _max_horizon:  # Params refuse it already; this keeps the cache bounded
        raise ConfigError(f"MPC horizon {horizon} beyond the limit {_max_horizon}")
    return np.asarray(list(itertools.product(range(num_levels), repeat=horizon)), dtype=np.int64)


@lru_cache(maxsize=32)
def _plan_terms(
    utility: tuple[float, ...], horizon: int, metric: QoEMetric
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per plan of a level-only metric: utility sum, the change penalties inside the plan,
    and the first level's utility. (``utility`` is in the key: the metric's hash leaves its
    table out.)"""
    plans = _plans(len(utility), horizon)
    return _score_plans(metric, np.asarray(utility)[plans])


def _score_plans(metric: QoEMetric, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``u``: (plans, horizon) utilities; as ``_plan_terms``."""
    if u.shape[1] > 1:
        inner = metric.change_penalty(np.diff(u, axis=1)).sum(axis=1)
    else:
        inner = np.zeros(len(u))
    return metric.scale * u.sum(axis=1), inner, u[:, 0]


class MPC(ABRAlgorithm):
    """Model predictive control over the next ``horizon`` chunks."""

    name = "fastmpc"
    Params = MPCParams
    params: MPCParams
    robust = False

    def __init__(self, video: Video, params: MPCParams | None = None) -> None:
        super().__init__(video, params)
        self._metric = make_qoe(self.params.qoe, video)
        if self.params.history == "process":
            key = (self.name, self.params.window)
            self._history = _process_histories.setdefault(key, _History())
        else:
            self._history = _History()

    def on_chunk(self, feedback: ChunkFeedback) -> None:
        super().on_chunk(feedback)
        measured = feedback.throughput_bps
        history = self._history
        error = 0.0
        if history.estimate_bps is not None:
            error = abs(history.estimate_bps - measured) / measured
        history.errors.append(error)
        del history.errors[: -self.params.window]  # only the last window is ever read
        history.estimate_bps = harmonic_mean(self.throughputs_bps(self.params.window))

    def predicted_bps(self) -> float:
        estimate = self._history.estimate_bps or 0.0
        if self.robust and self._history.errors:
            estimate /= 1.0 + max(self._history.errors)
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
        metric = self._metric
        plans = _plans(levels, horizon)
        if metric.per_chunk:
            total, inner, first = _score_plans(metric, metric.utility(plans, columns[None, :]))
        else:
            total, inner, first = _plan_terms(tuple(metric.utilities), horizon, metric)
        before = metric.utility(state.last_quality, max(state.next_chunk - 1, 0))
        changes = inner + metric.change_penalty(first - before)
        reward = total - metric.rebuffer_penalty * stall - changes
        best = len(plans) - 1 - int(np.argmax(reward[::-1]))
        return int(plans[best, 0])


class RobustMPC(MPC):
    name = "robustmpc"
    robust = True
