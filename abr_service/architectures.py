"""Policy architectures: actor-critic networks over an observation, as plug-ins.

The contract
------------
An architecture is an object with:

* ``name: str``: the name checkpoints and ``--arch`` use. For a plug-in it must equal the
  entry point's name.
* ``obs_version: str``: the version of the observation its networks read, any registered one
  (:mod:`streambed.abr_service.observation`: the built-in ``pensieve-6x8/1``, or a plug-in's). Trainers
  build that observation in their simulator and checkpoints record it.
* ``actor(num_levels) -> torch.nn.Module``: maps observations of shape ``(batch, *shape)``
  (float32; the observation's shape) to logits of shape ``(batch, num_levels)``. The service
  serves the argmax (or samples the softmax); DQN uses the same module's outputs as Q-values.
* ``critic(num_levels) -> torch.nn.Module``: maps the same observations to values
  ``(batch, 1)``.
* ``defaults: Mapping[str, float]`` (optional): hyperparameters it suggests, by the name of a
  trainer argument (``learning_rate``, ``actor_lr``, ``critic_lr``, ``gamma``, ...).
  ``streambed train ALGO --arch NAME`` applies a suggestion only where ALGO has an argument of
  that name and the command line did not give it (never on ``--resume``, which keeps the run's
  own arguments). So ``--arch pensieve`` gives ``train a3c`` the paper's learning rates (its
  own defaults already are) and leaves PPO's single ``--learning-rate`` and DQN's as they are.

Both networks must be deterministic functions of their weights: a checkpoint stores only the
actor's ``state_dict`` and rebuilds the module with ``actor(num_levels)``.

Plug-ins
--------
A package registers an architecture in the entry-point group ``streambed.policies``; the entry
point names a class (instantiated without arguments) or a zero-argument factory returning such
an object::

    [project.entry-points."streambed.policies"]
    tiny-mlp = "streambed_example.tiny:TinyActorCritic"

Discovery runs once per process (:func:`architectures`; :func:`clear_cache` forgets it). Each
plug-in is loaded, built for a 6-level ladder and run on a zero batch of its observation's
shape; one that fails to import, to build, reads an unknown observation, or returns the wrong
shapes is named in a logging warning and skipped, as is one that reuses a built-in's name.
Nothing a plug-in does can break the service or ``eval``.

Built in: ``pensieve-ppo`` (Pensieve-PPO's network, the shared checkpoint's) and ``pensieve``
(the original Pensieve network of Mao et al., SIGCOMM 2017).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from streambed.abr_service.observation import OBS_VERSION, S_INFO, S_LEN, get_observation
from streambed.abr_service.plugins import PluginRegistry, Refused, instantiate

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "streambed.policies"
FILTERS = 128
KERNEL = 4
FEATURES = 128


class Architecture(Protocol):
    """What an entry point in ``streambed.policies`` provides (see the module docstring)."""

    @property
    def name(self) -> str: ...

    @property
    def obs_version(self) -> str: ...

    def actor(self, num_levels: int) -> nn.Module: ...

    def critic(self, num_levels: int) -> nn.Module: ...


def suggested_defaults(arch: Architecture) -> dict[str, float]:
    """The architecture's suggested hyperparameters (``{}`` when it has none)."""
    return dict(getattr(arch, "defaults", None) or {})


# ------------------------------------------------------------------------------------------
# Built-in: Pensieve-PPO
#
# One 128-unit branch per observation row (Linear over the newest value of rows 0, 1 and 5;
# Linear over the 8-chunk history of rows 2 and 3; Linear over the next-chunk sizes of row 4),
# concatenated, a 128-unit layer, then the head: ``pi_head`` (logits over levels) for the
# actor, ``val_head`` for the critic. Layer names follow Pensieve-PPO's so its public
# checkpoints load as they are.


class PensievePPONet(nn.Module):
    """Pensieve-PPO's trunk with one linear head named ``head_name``."""

    def __init__(self, num_levels: int, out_dim: int, head_name: str) -> None:
        super().__init__()
        self.num_levels = num_levels
        self.fc1_actor = nn.Linear(1, FEATURES)
        self.fc2_actor = nn.Linear(1, FEATURES)
        self.conv1_actor = nn.Linear(S_LEN, FEATURES)
        self.conv2_actor = nn.Linear(S_LEN, FEATURES)
        self.conv3_actor = nn.Linear(num_levels, FEATURES)
        self.fc3_actor = nn.Linear(1, FEATURES)
        self.fc4_actor = nn.Linear(FEATURES * S_INFO, FEATURES)
        self._head_name = head_name
        self.add_module(head_name, nn.Linear(FEATURES, out_dim))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        merged = torch.cat(
            [
                F.relu(self.fc1_actor(obs[:, 0:1, -1])),
                F.relu(self.fc2_actor(obs[:, 1:2, -1])),
                F.relu(self.conv1_actor(obs[:, 2, :])),
                F.relu(self.conv2_actor(obs[:, 3, :])),
                F.relu(self.conv3_actor(obs[:, 4, : self.num_levels])),
                F.relu(self.fc3_actor(obs[:, 5:6, -1])),
            ],
            dim=1,
        )
        hidden = F.relu(self.fc4_actor(merged))
        head: nn.Module = getattr(self, self._head_name)
        return head(hidden)


class PensievePPOActor(PensievePPONet):
    """Logits over the ladder's levels."""

    def __init__(self, num_levels: int) -> None:
        super().__init__(num_levels, num_levels, "pi_head")


class PensievePPOCritic(PensievePPONet):
    """State value."""

    def __init__(self, num_levels: int) -> None:
        super().__init__(num_levels, 1, "val_head")


@dataclass(frozen=True)
class PensievePPOArchitecture:
    """Pensieve-PPO's network (:class:`PensievePPOActor`); no suggestions: each trainer's own
    hyperparameters apply."""

    name: str = "pensieve-ppo"
    obs_version: str = OBS_VERSION
    defaults: Mapping[str, float] = field(default_factory=dict)

    def actor(self, num_levels: int) -> nn.Module:
        return PensievePPOActor(num_levels)

    def critic(self, num_levels: int) -> nn.Module:
        return PensievePPOCritic(num_levels)


# ------------------------------------------------------------------------------------------
# Built-in: the original Pensieve network


class PensieveNet(nn.Module):
    """The original Pensieve network with ``out_dim`` outputs.

    1D convolutions (128 filters of size 4, stride 1, no padding, ReLU) over the throughput and
    download-time histories (rows 2 and 3) and over the next chunk's sizes (row 4, all S_LEN
    columns: beyond the ladder they are zero, so the weights' shapes do not depend on it);
    128-unit dense branches (ReLU) over the newest last bitrate, buffer and chunks left (rows
    0, 1, 5); everything concatenated into a 128-unit hidden layer (ReLU), then a linear head.
    Actor and critic are two separate instances, as in the paper.
    """

    def __init__(self, num_levels: int, out_dim: int) -> None:
        super().__init__()
        self.num_levels = num_levels
        self.fc_bitrate = nn.Linear(1, FILTERS)
        self.fc_buffer = nn.Linear(1, FILTERS)
        self.conv_throughput = nn.Conv1d(1, FILTERS, KERNEL)
        self.conv_download = nn.Conv1d(1, FILTERS, KERNEL)
        self.conv_sizes = nn.Conv1d(1, FILTERS, KERNEL)
        self.fc_left = nn.Linear(1, FILTERS)
        conv_out = FILTERS * (S_LEN - KERNEL + 1)
        self.hidden = nn.Linear(3 * FILTERS + 3 * conv_out, FILTERS)
        self.head = nn.Linear(FILTERS, out_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        merged = torch.cat(
            [
                F.relu(self.fc_bitrate(obs[:, 0:1, -1])),
                F.relu(self.fc_buffer(obs[:, 1:2, -1])),
                F.relu(self.conv_throughput(obs[:, 2:3, :])).flatten(1),
                F.relu(self.conv_download(obs[:, 3:4, :])).flatten(1),
                F.relu(self.conv_sizes(obs[:, 4:5, :])).flatten(1),
                F.relu(self.fc_left(obs[:, 5:6, -1])),
            ],
            dim=1,
        )
        return self.head(F.relu(self.hidden(merged)))


@dataclass(frozen=True)
class PensieveArchitecture:
    """The original Pensieve network; suggests the paper's actor lr 1e-4, critic lr 1e-3 and
    discount 0.99."""

    name: str = "pensieve"
    obs_version: str = OBS_VERSION
    defaults: Mapping[str, float] = field(
        default_factory=lambda: {"actor_lr": 1e-4, "critic_lr": 1e-3, "gamma": 0.99}
    )

    def actor(self, num_levels: int) -> nn.Module:
        return PensieveNet(num_levels, num_levels)

    def critic(self, num_levels: int) -> nn.Module:
        return PensieveNet(num_levels, 1)


BUILTIN: dict[str, Architecture] = {
    "pensieve-ppo": PensievePPOArchitecture(),
    "pensieve": PensieveArchitecture(),
}


# ------------------------------------------------------------------------------------------
# Discovery


def _build(point: EntryPoint, taken: Mapping[str, Architecture]) -> tuple[str, Architecture]:
    if point.name in taken:
        raise Refused("the name is already taken")
    return point.name, _load(point.name, point.load())


_registry: PluginRegistry[Architecture] = PluginRegistry(
    ENTRY_POINT_GROUP, "policy architecture", BUILTIN, _build, log
)


def architectures() -> dict[str, Architecture]:
    """Every usable architecture by name: the built-ins, then the plug-ins (cached)."""
    return _registry.all()


def load_errors() -> dict[str, str]:
    """Plug-ins that were skipped, by entry-point name, with the reason (as the warning)."""
    return _registry.errors()


def clear_cache() -> None:
    """Forget the discovered plug-ins (the next :func:`architectures` looks again)."""
    _registry.clear()


def _load(name: str, target: Any) -> Architecture:
    """Instantiate an entry point's target and check it against the contract."""
    arch = instantiate(target)
    for attr in ("actor", "critic"):
        if not callable(getattr(arch, attr, None)):
            raise TypeError(f"it has no {attr}(num_levels) method")
    if getattr(arch, "name", name) != name:
        raise ValueError(f"its name is {arch.name!r}, the entry point's is {name!r}")
    shape = (2, *get_observation(getattr(arch, "obs_version", OBS_VERSION)).shape)
    levels = 6
    obs = torch.zeros(shape)
    with torch.no_grad():
        logits = arch.actor(levels)(obs)
        values = arch.critic(levels)(obs)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != (2, levels):
        raise ValueError(f"its actor gives {_shape(logits)} for {shape}, not (2, 6)")
    if not isinstance(values, torch.Tensor) or tuple(values.shape) != (2, 1):
        raise ValueError(f"its critic gives {_shape(values)} for {shape}, not (2, 1)")
    suggested_defaults(arch)  # must be a mapping when present
    return arch


def _shape(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__
