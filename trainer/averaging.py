"""Weight averaging of a run's last snapshots (``--average-last K``).

PPO's policy still moves by a couple of QoE points between snapshots minutes apart late in a
run; the mean of the last few snapshots' weights (stochastic weight averaging, taken over
checkpoints already on disk) is steadier than any one of them (benchmarks/RESULTS.md). The
average is a fixed rule, chosen before looking at any test trace: it needs no selection.
"""

from __future__ import annotations

from pathlib import Path

import torch

from streambed.abr_service.policies import load_policy
from streambed.core.errors import ConfigError


def snapshot_paths(run: Path) -> list[Path]:
    """The run's snapshots (``snapshots/minMMMM.MM.pt``), oldest first."""

    def minutes(path: Path) -> float:
        try:
            return float(path.stem[3:])
        except ValueError:
            raise ConfigError(f"{path}: not a snapshot name (minMMMM.MM.pt)") from None

    return sorted((run / "snapshots").glob("min*.pt"), key=minutes)


def averaged_weights(paths: list[Path], num_levels: int) -> dict[str, torch.Tensor]:
    """The mean of the actor weights of the checkpoints ``paths``.

    Every checkpoint is loaded and validated (``weights_only``); they must share one
    architecture. Integer tensors (counters, if an architecture has any) come from the last.
    """
    if not paths:
        raise ConfigError("no checkpoints to average")
    policies = [load_policy(p, num_levels) for p in paths]
    arch = policies[0].arch
    for path, policy in zip(paths, policies, strict=True):
        if policy.arch != arch:
            raise ConfigError(
                f"{path}: architecture {policy.arch!r} differs from {paths[0]}'s {arch!r}; "
                "only one architecture's weights can be averaged"
            )
    states = [p.actor.state_dict() for p in policies]
    mean = {
        key: torch.stack([s[key] for s in states]).mean(0)
        if tensor.is_floating_point()
        else states[-1][key].clone()
        for key, tensor in states[0].items()
    }
    return mean
