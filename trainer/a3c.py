"""Synchronous advantage actor-critic, Pensieve's recipe (``streambed train a3c``).

Pensieve trained A3C with 16 asynchronous agents; like Pensieve-PPO's port, this one is
synchronous: many simulated sessions step together and one update follows each rollout. The
loss is the policy gradient with n-step advantages (``gae_lambda`` = 1) or GAE, a value loss,
and an entropy bonus whose weight follows ``--entropy-schedule`` by iteration (update):
``pensieve-linear`` (1 to 0.1 over 100,000 iterations, the decay the paper describes),
``staged`` (5, 4, 3, 2, 1, 0.5, 0.1 at 0/20k/40k/60k/70k/80k/90k), ``constant:0.5`` (what
Pensieve's code shipped), ``linear:A:B:N``, or ``ITER=W,...`` breakpoints. The weight in force is
logged as ``charts/entropy_weight``. Learning rates as in the paper: actor 1e-4, critic 1e-3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from streambed.trainer.args import POSITIVE, UNIT, Bound, CommonArgs
from streambed.trainer.data import Data
from streambed.trainer.distributed import Group
from streambed.trainer.loop import Trainer
from streambed.trainer.rollout import decisions, gae
from streambed.trainer.schedules import Schedule


@dataclass
class A3CArgs(CommonArgs):
    out: str = "runs/a3c"
    """Run directory."""
    actor_lr: float = 1e-4
    """Actor step size (Pensieve: 1e-4)."""
    critic_lr: float = 1e-3
    """Critic step size (Pensieve: 1e-3)."""
    gamma: float = 0.99
    """Discount per chunk (Pensieve: 0.99)."""
    gae_lambda: float = 1.0
    """1.0: n-step returns to the rollout's end, as Pensieve; below 1: GAE."""
    entropy_schedule: str = "pensieve-linear"
    """Entropy weight by iteration: pensieve-linear, staged, constant:W, linear:A:B:N, ITER=W,..."""
    max_grad_norm: float = 5.0
    """Gradient clipping."""
    num_envs: int = 32
    """Sessions per iteration: 32 x 48 chunks is about one Pensieve epoch (16 agents x 100
    chunks), so the entropy schedules' iteration counts mean what they meant there."""
    reward_scale: float = 1.0
    """Rewards are multiplied by this before returns are computed. 1: QoE units, as Pensieve,
    so the entropy weights of its schedules keep their meaning (0.1 made every weight ten times
    stronger: 0.62 on norway-test after 6 minutes, against 0.91 with 1)."""

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "actor_lr": POSITIVE,
        "critic_lr": POSITIVE,
        "gamma": UNIT,
        "gae_lambda": UNIT,
        "max_grad_norm": POSITIVE,
        "reward_scale": POSITIVE,
    }


class A3C(Trainer):
    algorithm = "a3c"
    args: A3CArgs

    def __init__(self, args: A3CArgs, data: Data, group: Group | None = None) -> None:
        super().__init__(args, data, group)
        self.actor_opt = torch.optim.RMSprop(
            self.actor.parameters(), lr=args.actor_lr, alpha=0.9, eps=1e-6
        )
        self.critic_opt = torch.optim.RMSprop(
            self.critic.parameters(), lr=args.critic_lr, alpha=0.9, eps=1e-6
        )
        self.schedule = Schedule.parse(args.entropy_schedule)
        self.iterations = 0

    def modules(self) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "critic": self.critic,
            "actor_opt": self.actor_opt,
            "critic_opt": self.critic_opt,
        }

    def extra_state(self) -> dict[str, Any]:
        return {"iterations": self.iterations}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.iterations = int(state["iterations"])

    def iteration(self) -> dict[str, float]:
        args = self.args
        weight = self.schedule(self.iterations)
        ro = self.collector.collect(self.actor, self.critic)
        ro.rewards *= args.reward_scale
        advantages, returns = gae(ro, args.gamma, args.gae_lambda)
        obs, actions, adv, ret = decisions(ro, args.device, ro.obs, ro.actions, advantages, returns)
        dist = torch.distributions.Categorical(logits=self.actor(obs))
        entropy = dist.entropy().mean()
        pg_loss = -(dist.log_prob(actions) * adv).mean()
        self.actor_opt.zero_grad()
        (pg_loss - weight * entropy).backward()
        self.average_grads(self.actor)
        nn.utils.clip_grad_norm_(self.actor.parameters(), args.max_grad_norm)
        self.actor_opt.step()
        v_loss = 0.5 * (self.critic(obs).squeeze(-1) - ret).pow(2).mean()
        self.critic_opt.zero_grad()
        v_loss.backward()
        self.average_grads(self.critic)
        nn.utils.clip_grad_norm_(self.critic.parameters(), args.max_grad_norm)
        self.critic_opt.step()
        self.iterations += 1
        out = {
            "losses/policy_loss": pg_loss.item(),
            "losses/value_loss": v_loss.item(),
            "losses/entropy": entropy.item(),
            "charts/entropy_weight": weight,
        }
        if ro.episode_qoe:
            out["charts/train_qoe"] = float(sum(ro.episode_qoe) / len(ro.episode_qoe))
        return out
