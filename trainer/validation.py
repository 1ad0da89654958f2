"""Validation: a policy's greedy test-mode QoE, the same number as ``streambed eval``."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from streambed.abr_service.observation import Observation
from streambed.abr_service.qoe import QoEMetric
from streambed.abr_service.video import Video
from streambed.traces import Trace
from streambed.trainer.batched import BatchedSimulator
from streambed.trainer.simulator import SimConfig


@torch.no_grad()
def evaluate_actor(
    actor: nn.Module,
    traces: list[Trace],
    video: Video,
    qoe: QoEMetric,
    device: str = "cpu",
    starts: int = 1,
    observation: Observation | None = None,
    config: SimConfig | None = None,
) -> float:
    """Greedy test-mode ``qoe_mean`` over ``traces`` (no noise), the actor reading
    ``observation`` (default: Pensieve's).

    ``starts`` = 1 plays each trace from its beginning, exactly as ``streambed eval``; more
    also plays it from ``starts - 1`` further evenly spaced lines, a steadier estimate from
    the same traces.
    """
    n = len(traces) * starts
    sim = BatchedSimulator(
        traces,
        video,
        n,
        config or SimConfig(),
        mode="test",
        obs_dtype=np.float64,
        observation=observation,
    )
    trace_idx = np.repeat(np.arange(len(traces)), starts)
    lengths = sim.bank.stop[trace_idx] - sim.bank.start[trace_idx]
    offset = np.tile(np.arange(starts), len(traces))
    sim.reset(trace=trace_idx, start_line=(offset * (lengths - 1)) // starts)
    assert sim.obs is not None
    default = SimConfig().default_quality
    quality = np.full(n, default, np.int64)
    prev = quality.copy()
    total = np.zeros(n)
    sim.step(quality)
    for _ in range(video.num_chunks - 1):
        obs = torch.as_tensor(sim.obs, dtype=torch.float32, device=torch.device(device))
        quality = actor(obs).argmax(-1).cpu().numpy()
        step = sim.step(quality)
        total += step.reward(qoe, prev)
        prev = quality
    return float(np.mean(total / (video.num_chunks - 1)))
