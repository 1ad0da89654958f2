"""Loading a policy: a checkpoint's actor, built, checked and ready for inference.

:func:`load_policy` reads a checkpoint with the bounded reader
(:func:`streambed.abr_service.checkpoint.read_checkpoint`, which also owns the format and its
accepted layouts), its tensor data bounded by what the registered architectures need for the
ladder (:func:`policy_data_limit`). :func:`policy_from_checkpoint` then builds the actor of the
checkpoint's architecture (any of :func:`streambed.abr_service.architectures.architectures`,
built-in or plug-in) for the ladder, checks that the architecture reads the checkpoint's
observation (any of :func:`streambed.abr_service.observation.observations`), that the weights
match it name for name and shape for shape, and runs it on a zero observation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from streambed.abr_service.architectures import architectures
from streambed.abr_service.checkpoint import (
    CHECKPOINT_FORMAT,
    policy_contents,
    read_checkpoint,
    short,
)
from streambed.abr_service.observation import OBS_VERSION, observations
from streambed.core.errors import ModelError

DATA_SLACK_BYTES = 256 * 1024
"""Tensor data allowed beyond the architectures' own (small extra tensors, alignment)."""


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


def _module_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def policy_data_limit(num_levels: int) -> int:
    """The most tensor data a policy checkpoint for ``num_levels`` levels may declare.

    The largest actor plus critic of any registered architecture, twice over (float64 weights
    load too), plus :data:`DATA_SLACK_BYTES`; Pensieve-PPO's ``[actor, critic]`` holds both.
    """
    largest = 0
    for arch in architectures().values():
        try:
            size = _module_bytes(arch.actor(num_levels)) + _module_bytes(arch.critic(num_levels))
        except Exception:  # a plug-in that cannot build for this ladder bounds nothing
            continue
        largest = max(largest, size)
    return 2 * largest + DATA_SLACK_BYTES


def policy_from_checkpoint(data: Any, num_levels: int, where: str) -> LoadedPolicy:
    """Validate a loaded checkpoint against the ladder and build its actor."""
    contents = policy_contents(data, where)
    arch, version, state = contents.arch, contents.obs_version, contents.state
    readable = observations()  # built-ins and plug-ins (abr_service.observation)
    if not isinstance(version, str) or version not in readable:
        raise ModelError(
            f"{where}: unknown observation version {short(version)}; known: {', '.join(readable)}"
        )
    observation = readable[version]
    known = architectures()  # built-ins and plug-ins (abr_service.architectures)
    if arch not in known:
        raise ModelError(f"{where}: unknown architecture {short(arch)}; known: {', '.join(known)}")
    reads = getattr(known[arch], "obs_version", OBS_VERSION)
    if reads != version:
        raise ModelError(
            f"{where}: the checkpoint's observation is {version!r}, but the {arch} architecture "
            f"reads {reads!r}"
        )
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelError(f"{where}: the actor weights are not a state dict of tensors")
    try:
        actor = known[arch].actor(num_levels)
    except Exception as exc:  # a plug-in's constructor: report it, never crash the caller
        raise ModelError(
            f"{where}: cannot build the {arch} actor for {num_levels} levels ({exc})"
        ) from exc
    expected = actor.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = [
        k if len(k) <= 60 else k[:57] + "..." for k in sorted(set(state) - set(expected))[:10]
    ]
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
    return LoadedPolicy(
        actor, arch, num_levels, contents.meta, contents.source_format, observation.version
    )


def load_policy(path: str | Path, num_levels: int) -> LoadedPolicy:
    """Load and validate a policy checkpoint for a ladder of ``num_levels`` (memory bounded by
    :func:`policy_data_limit`)."""
    data = read_checkpoint(path, policy_data_limit(num_levels))
    return policy_from_checkpoint(data, num_levels, str(path))
