"""Policy networks over the Pensieve observation, and checkpoint loading (any observation).

The Pensieve-PPO network: one 128-unit branch per observation row (Linear over the newest
value of rows 0, 1 and 5; Linear over the 8-chunk history of rows 2 and 3; Linear over the
next-chunk sizes of row 4), concatenated, a 128-unit layer, then the head: ``pi_head``
(logits over levels) for the actor, ``val_head`` for the critic. Layer names follow
Pensieve-PPO's so its public checkpoints load as they are.

Checkpoints load with ``torch.load(weights_only=True)``. Accepted layouts:

* Pensieve-PPO's ``[actor_state_dict, critic_state_dict]``;
* a bare actor state dict;
* Streambed's ``{"format": "streambed-policy/1", "arch": ..., "num_levels": ...,
  "obs_version": ..., "actor": state_dict, "meta": {...}}``, where ``arch`` is any
  architecture of :func:`streambed.abr_service.architectures.architectures` (built-in or plug-in) and
  ``obs_version`` any registered observation (:func:`streambed.abr_service.observation.observations`;
  absent: ``pensieve-6x8/1``) that the architecture reads.

The first two are always ``pensieve-ppo`` over ``pensieve-6x8/1``. The loaded actor is checked
on a zero observation of its observation's shape.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from streambed.abr_service.architectures import architectures
from streambed.abr_service.observation import OBS_VERSION, S_INFO, S_LEN, observations
from streambed.core.errors import ModelError

CHECKPOINT_FORMAT = "streambed-policy/1"
FEATURES = 128


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


@dataclass
class LoadedPolicy:
    """An actor ready for inference, with what its checkpoint said about itself."""

    actor: nn.Module
    arch: str
    num_levels: int
    meta: dict[str, Any] = field(default_factory=dict)
    source_format: str = CHECKPOINT_FORMAT
    obs_version: str = OBS_VERSION
    """The observation the actor reads (:mod:`streambed.abr_service.observation`)."""


def read_checkpoint(path: str | Path) -> Any:
    """``torch.load`` with ``weights_only=True``; every failure becomes a one-line ModelError."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's notes on odd pickles
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # untrusted bytes: torch raises many kinds on junk
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a loadable checkpoint ({first[:200]})") from exc


def policy_from_checkpoint(data: Any, num_levels: int, where: str) -> LoadedPolicy:
    """Validate a loaded checkpoint against the ladder and build its actor."""
    arch, fmt, version = "pensieve-ppo", CHECKPOINT_FORMAT, OBS_VERSION
    meta: dict[str, Any] = {}
    state: Any
    if isinstance(data, list | tuple) and data and isinstance(data[0], dict):
        state, fmt = data[0], "pensieve-ppo"
    elif isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT:
        arch = str(data.get("arch", "pensieve-ppo"))
        version = data.get("obs_version", OBS_VERSION)
        state = data.get("actor")
        meta = dict(data.get("meta") or {})
    elif (
        isinstance(data, dict) and data and all(isinstance(v, torch.Tensor) for v in data.values())
    ):
        state, fmt = data, "state-dict"
    else:
        raise ModelError(
            f"{where}: not a policy checkpoint (expected a state dict, "
            "[actor, critic] state dicts, or a Streambed checkpoint)"
        )
    readable = observations()  # built-ins and plug-ins (abr_service.observation)
    if not isinstance(version, str) or version not in readable:
        raise ModelError(
            f"{where}: unknown observation version {version!r}; known: {', '.join(readable)}"
        )
    observation = readable[version]
    known = architectures()  # built-ins and plug-ins (abr_service.architectures)
    if arch not in known:
        raise ModelError(f"{where}: unknown architecture {arch!r}; known: {', '.join(known)}")
    reads = getattr(known[arch], "obs_version", OBS_VERSION)
    if reads != version:
        raise ModelError(
            f"{where}: the checkpoint's observation is {version!r}, but the {arch} architecture "
            f"reads {reads!r}"
        )
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{where}: the actor weights are not a state dict of tensors")
    try:
        actor = known[arch].actor(num_levels)
    except Exception as exc:  # a plug-in's constructor: report it, never crash the caller
        raise ModelError(
            f"{where}: cannot build the {arch} actor for {num_levels} levels ({exc})"
        ) from exc
    expected = actor.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelError(
            f"{where}: weights do not match the {arch} architecture "
            f"(missing: {', '.join(missing) or 'none'}; unexpected: {', '.join(unexpected) or 'none'})"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ModelError(
                f"{where}: {key} has shape {tuple(state[key].shape)}, expected "
                f"{tuple(tensor.shape)} for a {num_levels}-level ladder"
            )
    actor.load_state_dict(state)
    actor.eval()
    try:
        with torch.no_grad():
            out = actor(torch.zeros(1, *observation.shape))
    except Exception as exc:  # a plug-in's forward
        raise ModelError(f"{where}: the {arch} actor fails on a zero observation ({exc})") from exc
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (1, num_levels):
        raise ModelError(f"{where}: the {arch} actor gives {shape}, expected (1, {num_levels})")
    if not torch.isfinite(out).all():
        raise ModelError(f"{where}: the network's output on a zero observation is not finite")
    return LoadedPolicy(actor, arch, num_levels, meta, fmt, observation.version)


def load_policy(path: str | Path, num_levels: int) -> LoadedPolicy:
    """Load and validate a policy checkpoint for a ladder of ``num_levels``."""
    return policy_from_checkpoint(read_checkpoint(path), num_levels, str(path))
