"""The actor and critic of a run's architecture (``--arch``, ``--init-from``)."""

from __future__ import annotations

import logging

from torch import nn

from streambed.abr_service.architectures import Architecture, architectures
from streambed.abr_service.observation import OBS_VERSION, Observation, get_observation
from streambed.abr_service.policies import load_policy
from streambed.core.errors import ConfigError
from streambed.trainer.args import CommonArgs

log = logging.getLogger(__name__)


def get_architecture(name: str) -> Architecture:
    """The registered architecture ``name`` (built-in or plug-in), or a ConfigError."""
    known = architectures()
    if name not in known:
        raise ConfigError(f"--arch: unknown architecture {name!r}; known: {', '.join(known)}")
    return known[name]


def arch_observation(name: str) -> Observation:
    """The observation architecture ``name`` reads (ConfigError if either is unknown)."""
    version = getattr(get_architecture(name), "obs_version", None) or OBS_VERSION
    return get_observation(version)


def make_networks(args: CommonArgs, num_levels: int) -> tuple[nn.Module, nn.Module]:
    """The actor and critic of ``args.arch``; the actor from ``--init-from`` when given."""
    arch = get_architecture(args.arch)
    actor, critic = arch.actor(num_levels), arch.critic(num_levels)
    if args.init_from:
        loaded = load_policy(args.init_from, num_levels)
        if loaded.arch != args.arch:
            raise ConfigError(
                f"--init-from {args.init_from}: architecture {loaded.arch}, not {args.arch}"
            )
        actor.load_state_dict(loaded.actor.state_dict())
        log.info("actor initialised from %s", args.init_from)
    return actor.to(args.device), critic.to(args.device)
