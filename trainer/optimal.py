"""Offline-optimal reference: dynamic programming with knowledge of the whole trace.

The noise-free simulator's state after a chunk is (trace position, buffer, last level); the
QoE still to come depends only on it. The planner expands every state by every level with
the batched trace arithmetic, then merges states: among states with the same last level
whose trace positions fall in the same ``time_bin_s`` bin, it keeps only those not dominated
in (buffer, QoE so far) (see :func:`_undominated`). Kept states are exact (never rounded), so the returned plan's QoE is
achieved exactly in the simulator; merging makes it a lower bound of the true optimum that
tightens as the bin shrinks. The first chunk is fixed at ``default_quality`` like every
algorithm's, and its QoE is not counted (Pensieve's window).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streambed.abr_service.algorithms.base import ABRAlgorithm, PlayerState
from streambed.abr_service.qoe import QoEMetric
from streambed.abr_service.video import Video
from streambed.traces import Trace
from streambed.trainer.simulator import SimConfig, buffer_after_download
from streambed.trainer.tracebank import TraceBank


class FixedPlan(ABRAlgorithm):
    """Replays a precomputed level per chunk."""

    name = "optimal"

    def __init__(self, video: Video, plan: Sequence[int]) -> None:
        super().__init__(video)
        self.plan = list(plan)

    def select(self, state: PlayerState) -> int:
        return self.plan[state.next_chunk]


def _undominated(
    group: np.ndarray, buffer: np.ndarray, reward: np.ndarray, penalty: float
) -> np.ndarray:
    """Indices of states no other state of their group dominates.

    Within a group (same last level, same trace position up to the bin), the QoE still to
    come ``f(b)`` never decreases with the buffer b, and ``f(b) - penalty * b`` never
    increases (extra buffer saves at most that much stall). So s dominates s' when
    ``b >= b'`` and ``r >= r'``, or when ``b <= b'`` and ``r + penalty*b >= r' + penalty*b'``.
    """
    rows = np.unique(
        np.stack([group.astype(np.float64), buffer, reward]), axis=1, return_index=True
    )[1]
    group, buffer, reward = group[rows], buffer[rows], reward[rows]
    order = np.lexsort((reward, buffer, group))
    g, b, r = group[order], buffer[order], reward[order]
    first = np.r_[True, g[1:] != g[:-1]]
    seg = np.cumsum(first) - 1

    def beats_all_before(values: np.ndarray, seg: np.ndarray, first: np.ndarray) -> np.ndarray:
        floor = float(values.min()) - 1.0
        prior = np.r_[floor, values[:-1]]
        prior[first] = floor
        lift = seg * (float(values.max()) - floor + 1.0)  # groups apart, in order
        return values > np.maximum.accumulate(prior + lift) - lift

    # Against states with less buffer (earlier in the order): compare r + penalty * b.
    ok_low = beats_all_before(r + penalty * b, seg, first)
    # Against states with more buffer (later): compare r, scanning the order backwards.
    last_rev = np.r_[True, g[::-1][1:] != g[::-1][:-1]]
    ok_high = beats_all_before(r[::-1], np.cumsum(last_rev) - 1, last_rev)[::-1]
    return rows[order[ok_low & ok_high]]


def plan_optimal(
    trace: Trace,
    video: Video,
    qoe: QoEMetric,
    config: SimConfig | None = None,
    time_bin_s: float = 1.0,
    max_states: int = 200_000,
) -> list[int]:
    """The best level sequence found for ``trace`` (one level per chunk)."""
    cfg = config or SimConfig()
    bank = TraceBank([trace], cfg.payload_factor)
    levels = video.num_levels
    sizes = video.chunk_bytes.astype(np.float64)

    def advance(tau: np.ndarray, buf: np.ndarray, level: np.ndarray, chunk: int):
        zeros = np.zeros(len(tau), np.int64)
        tau, trace_s, _ = bank.advance_bytes(zeros, tau, sizes[level, chunk])
        delay = trace_s + cfg.rtt_s
        rebuffer, buf, sleep = buffer_after_download(buf, delay, video.chunk_s, cfg)
        tau = bank.advance_time(zeros, tau, sleep)
        return tau, buf, rebuffer

    first = cfg.default_quality
    tau, buf, _ = advance(np.zeros(1), np.zeros(1), np.array([first]), 0)
    last = np.array([first])
    reward = np.zeros(1)
    parents: list[np.ndarray] = []
    actions: list[np.ndarray] = []
    for chunk in range(1, video.num_chunks):
        n = len(tau)
        parent = np.repeat(np.arange(n), levels)
        action = np.tile(np.arange(levels), n)
        new_tau, new_buf, rebuffer = advance(tau[parent], buf[parent], action, chunk)
        new_reward = reward[parent] + qoe.transition(action, last[parent], rebuffer, chunk)
        group = action * 10_000_000 + np.floor(new_tau / time_bin_s).astype(np.int64)
        keep = _undominated(group, new_buf, new_reward, qoe.rebuffer_penalty)
        if len(keep) > max_states:
            # Memory bound only (not reached on the Norway traces): best by QoE so far.
            score = new_reward[keep]
            keep = keep[np.argsort(-score)[:max_states]]
        tau, buf, reward = new_tau[keep], new_buf[keep], new_reward[keep]
        last = action[keep]
        parents.append(parent[keep])
        actions.append(action[keep])

    plan = [first] * video.num_chunks
    state = int(np.argmax(reward)) if len(reward) else 0
    for chunk in range(video.num_chunks - 1, 0, -1):
        plan[chunk] = int(actions[chunk - 1][state])
        state = int(parents[chunk - 1][state])
    return plan
