"""What a run writes as checkpoints: its policies (best.pt, final.pt, snapshots) and the bound
on its training state (last.pt). The format itself is :mod:`streambed.abr_service.checkpoint`'s.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from streambed.abr_service import checkpoint
from streambed.trainer.args import CommonArgs
from streambed.trainer.networks import arch_observation

TRAIN_STATE_SLACK_BYTES = 64 * 1024 * 1024
"""Tensor data a training state may hold beyond the bound :func:`train_state_limit` derives
(generators, small tensors, alignment)."""


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def policy_checkpoint(
    actor: nn.Module, args: CommonArgs, algorithm: str, num_levels: int, meta: dict[str, Any]
) -> dict[str, Any]:
    """A policy checkpoint of ``actor``, its meta naming the run (algorithm, arguments, commit)."""
    return checkpoint.policy_checkpoint(
        actor.state_dict(),
        args.arch,
        arch_observation(args.arch).version,
        num_levels,
        {
            "algorithm": algorithm,
            "args": json.dumps(asdict(args)),
            "git_commit": git_commit(),
            **meta,
        },
    )


def tensor_bytes(obj: Any) -> int:
    """The bytes of the tensors and arrays in ``obj`` (nested dicts, lists, tuples, modules)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, nn.Module):
        return tensor_bytes(obj.state_dict())
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def train_state_limit(
    modules: dict[str, Any], collector_state: Any, workers: int, extra_bytes: int
) -> int:
    """The most tensor data this run's last.pt may declare: measured from the run itself.

    ``modules`` are the trainer's (networks and optimizers: an optimizer's state is counted as
    three times its parameters, Adam's two moments and RMSprop's three at most),
    ``collector_state`` one worker's sessions (``workers`` of them, each at most one session
    larger), ``extra_bytes`` the algorithm's own bound (a DQN replay buffer). All of it twice
    over (float64 tensors load too), plus :data:`TRAIN_STATE_SLACK_BYTES`.
    """
    total = 0
    largest_module = 0
    for module in modules.values():
        if isinstance(module, torch.optim.Optimizer):
            params = [p for group in module.param_groups for p in group["params"]]
            total += 3 * tensor_bytes(params)
        else:
            size = tensor_bytes(module)
            total += size
            largest_module = max(largest_module, size)
    total += largest_module  # the actor again, as the policy checkpoint inside
    total += 2 * workers * tensor_bytes(collector_state)
    total += extra_bytes
    return 2 * total + TRAIN_STATE_SLACK_BYTES
