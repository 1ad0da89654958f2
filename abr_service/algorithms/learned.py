"""A learned policy as an ABR algorithm: its checkpoint's observation into a PyTorch actor.

The observation (``self.obs``) is the one the checkpoint records (``obs_version``), kept up
to date by :class:`~streambed.abr_service.algorithms.base.ABRAlgorithm`'s ``on_chunk``.

Greedy (argmax) by default; ``sample=True`` draws the level from the policy's distribution
with its own seeded generator, as Pensieve-PPO's published test run did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streambed.abr_service.algorithms.base import RANGE, ABRAlgorithm, PlayerState
from streambed.abr_service.video import Video
from streambed.core.errors import ConfigError, ModelError

if TYPE_CHECKING:  # torch is imported with the first policy, not with the algorithm registry
    from streambed.abr_service.policies import LoadedPolicy


@dataclass(frozen=True)
class LearnedParams:
    model: str = ""
    """Checkpoint path (``--model``)."""
    sample: bool = False
    """Sample the level from the policy instead of taking the most likely one."""
    seed: int = field(default=0, metadata={RANGE: (0, 2**32 - 1)})
    """Seed of the sampling generator."""


@lru_cache(maxsize=8)
def _cached_policy(path: str, mtime_ns: int, num_levels: int) -> LoadedPolicy:
    # One load per checkpoint version, however many sessions use it.
    from streambed.abr_service.policies import load_policy

    return load_policy(path, num_levels)


class LearnedPolicy(ABRAlgorithm):
    name = "ppo"
    Params = LearnedParams
    params: LearnedParams

    def __init__(
        self, video: Video, params: LearnedParams | None = None, policy: LoadedPolicy | None = None
    ) -> None:
        super().__init__(video, params)
        if policy is None:
            if not self.params.model:
                raise ConfigError("the learned policy needs a checkpoint: give --model PATH")
            path = Path(self.params.model)
            mtime = path.stat().st_mtime_ns if path.is_file() else 0
            policy = _cached_policy(str(path), mtime, video.num_levels)
        self.policy = policy
        self.use_observation(policy.obs_version)
        self._rng = np.random.default_rng(self.params.seed)

    def probabilities(self) -> np.ndarray:
        import torch

        with torch.no_grad():
            logits = self.policy.actor(torch.as_tensor(self.obs, dtype=torch.float32)[None])
        probs = torch.softmax(logits[0], dim=-1).double().numpy()
        if not np.isfinite(probs).all():
            raise ModelError(f"the {self.policy.arch} policy produced non-finite probabilities")
        return probs

    def select(self, state: PlayerState) -> int:
        probs = self.probabilities()
        if self.params.sample:
            return int(self._rng.choice(len(probs), p=probs / probs.sum()))
        return int(np.argmax(probs))
