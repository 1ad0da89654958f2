"""A small policy architecture: an MLP over the flattened Pensieve observation.

Registered in ``pyproject.toml`` as::

    [project.entry-points."streambed.policies"]
    tiny-mlp = "streambed_example.tiny:TinyActorCritic"

after which ``streambed train ppo --arch tiny-mlp`` trains it, and its checkpoints (which name
``tiny-mlp``) load in ``streambed serve --model`` and ``streambed eval --model``. The contract
is described in ``abr_service.architectures``: a class with ``name``, ``obs_version``,
``actor(num_levels)``, ``critic(num_levels)`` and optional ``defaults``.
"""

from __future__ import annotations

from torch import nn

from abr_service.observation import OBS_VERSION, S_INFO, S_LEN

HIDDEN = 64


def mlp(out_dim: int) -> nn.Module:
    """(batch, S_INFO, S_LEN) -> (batch, out_dim): flatten, two 64-unit tanh layers, linear."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(S_INFO * S_LEN, HIDDEN),
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

    def actor(self, num_levels: int) -> nn.Module:
        return mlp(num_levels)

    def critic(self, num_levels: int) -> nn.Module:
        return mlp(1)
