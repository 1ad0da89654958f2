"""Small policy architectures: MLPs over a flattened observation.

Registered in ``pyproject.toml`` as::

    [project.entry-points."streambed.policies"]
    tiny-mlp = "streambed_example.tiny:TinyActorCritic"
    tiny-mlp-throughput = "streambed_example.tiny:TinyThroughputActorCritic"

after which ``streambed train ppo --arch tiny-mlp`` trains one, and its checkpoints (which name
the architecture and its observation) load in ``streambed serve --model`` and ``streambed eval
--model``. The contract is described in ``streambed.abr_service.architectures``: a class with ``name``,
``obs_version``, ``actor(num_levels)``, ``critic(num_levels)`` and optional ``defaults``.

``tiny-mlp`` reads the built-in Pensieve observation (6 x 8); ``tiny-mlp-throughput`` reads
this package's own ``example-throughput/1`` (3 x 8, :mod:`streambed_example.throughput`).
"""

from __future__ import annotations

from math import prod

from torch import nn

from streambed.abr_service.observation import OBS_VERSION, S_INFO, S_LEN
from streambed_example.throughput import ThroughputObservation

HIDDEN = 64


def mlp(out_dim: int, in_shape: tuple[int, ...] = (S_INFO, S_LEN)) -> nn.Module:
    """(batch, *in_shape) -> (batch, out_dim): flatten, two 64-unit tanh layers, linear."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(prod(in_shape), HIDDEN),
        nn.Tanh(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.Tanh(),
        nn.Linear(HIDDEN, out_dim),
    )


class TinyActorCritic:
    """Separate 64-unit MLPs for the actor (logits over the levels) and the critic (value)."""

    name = "tiny-mlp"
    obs_version = OBS_VERSION
    defaults = {"learning_rate": 1e-3}
    """Suggested for trainers with a single --learning-rate (small networks take larger steps)."""
    in_shape: tuple[int, ...] = (S_INFO, S_LEN)

    def actor(self, num_levels: int) -> nn.Module:
        return mlp(num_levels, self.in_shape)

    def critic(self, num_levels: int) -> nn.Module:
        return mlp(1, self.in_shape)


class TinyThroughputActorCritic(TinyActorCritic):
    """The same MLPs over the example's throughput observation."""

    name = "tiny-mlp-throughput"
    obs_version = ThroughputObservation.version
    in_shape = ThroughputObservation.shape
