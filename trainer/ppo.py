"""PPO for ABR on the batched simulator (``streambed train ppo``).

Clipped surrogate with the dual-clip bound for negative advantages (Ye et al., 2020), value
loss, and an entropy bonus whose weight either adapts towards a target entropy (as
Pensieve-PPO does) or follows a schedule. Advantages by GAE (``gae_lambda`` < 1) or n-step
returns (``gae_lambda`` = 1). Each iteration collects ``rollout_steps`` chunks from
``num_envs`` sessions and runs ``update_epochs`` passes of minibatches over them. With
``--anchor-coef`` a warm-started run also pays for moving away from its warm start (the KL term).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from streambed.core.errors import ConfigError
from streambed.trainer.args import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, UNIT, Bound, CommonArgs
from streambed.trainer.data import Data
from streambed.trainer.distributed import Group
from streambed.trainer.loop import Trainer
from streambed.trainer.rollout import decisions, gae
from streambed.trainer.schedules import Schedule


@dataclass
class PPOArgs(CommonArgs):
    out: str = "runs/ppo"
    """Run directory."""
    learning_rate: float = 3e-4
    """Adam step size of actor and critic."""
    anneal_lr: bool = True
    """Decay the step size linearly to 0 over the budget (--minutes or --steps), as cleanrl's
    PPO: the policy settles by the end instead of wandering, so the final one is a good one."""
    gamma: float = 0.99
    """Discount per chunk."""
    gae_lambda: float = 0.95
    """GAE lambda; 1.0 gives n-step returns."""
    update_epochs: int = 4
    """Passes over each rollout."""
    minibatches: int = 8
    """Minibatches per pass."""
    clip_coef: float = 0.2
    """Ratio clip."""
    dual_clip: float = 3.0
    """Dual-clip bound c for negative advantages (0 disables it)."""
    vf_coef: float = 0.5
    """Value loss weight."""
    max_grad_norm: float = 0.5
    """Gradient clipping."""
    entropy: str = "adaptive"
    """adaptive (towards --target-entropy) or a schedule: constant:W, linear:A:B:ITERS, or breakpoints ITER=W,..."""
    target_entropy: float = 0.1
    """Entropy (nats) the adaptive weight steers towards."""
    entropy_lr: float = 0.001
    """Step of the adaptive entropy weight per iteration and nat of excess entropy."""
    initial_entropy_weight: float = 0.05
    """Start of the adaptive entropy weight."""
    critic_warmup: int = 30
    """With --init-from: iterations that train only the critic, so the first policy updates of a
    warm-started actor follow a critic that knows its values, not a random one."""
    norm_adv: bool = True
    """Normalise advantages per minibatch."""
    anchor_coef: float = 0.0
    """With --init-from: weight of the anchor term, KL(warm start || policy) in nats, the mean
    over each minibatch's decisions of how far the policy's action distribution has moved from
    the warm start's, so PPO improves on a student without forgetting what it knew of links the
    training traces rarely show. 0: off."""
    reward_scale: float = 0.1
    """Rewards are multiplied by this for the critic and the advantages (QoE units are large:
    one second of stall costs 4.3)."""

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "learning_rate": POSITIVE,
        "gamma": UNIT,
        "gae_lambda": UNIT,
        "update_epochs": AT_LEAST_ONE,
        "minibatches": AT_LEAST_ONE,
        "clip_coef": POSITIVE,
        "dual_clip": NON_NEGATIVE,
        "vf_coef": NON_NEGATIVE,
        "max_grad_norm": POSITIVE,
        "target_entropy": NON_NEGATIVE,
        "entropy_lr": NON_NEGATIVE,
        "initial_entropy_weight": NON_NEGATIVE,
        "critic_warmup": NON_NEGATIVE,
        "reward_scale": POSITIVE,
        "anchor_coef": NON_NEGATIVE,
    }


class PPO(Trainer):
    algorithm = "ppo"
    args: PPOArgs

    def __init__(self, args: PPOArgs, data: Data, group: Group | None = None) -> None:
        super().__init__(args, data, group)
        params = list(self.actor.parameters()) + list(self.critic.parameters())
        self.optimizer = torch.optim.Adam(params, lr=args.learning_rate, eps=1e-5)
        self.schedule = None if args.entropy == "adaptive" else Schedule.parse(args.entropy)
        self.entropy_weight = args.initial_entropy_weight
        self.iterations = 0
        self.anchor: nn.Module | None = None
        if args.anchor_coef > 0:
            if not args.init_from:
                raise ConfigError("--anchor-coef needs --init-from: the policy to stay near")
            self.anchor = copy.deepcopy(self.actor).requires_grad_(False)

    def modules(self) -> dict[str, Any]:
        return {"actor": self.actor, "critic": self.critic, "optimizer": self.optimizer}

    def extra_state(self) -> dict[str, Any]:
        return {"entropy_weight": self.entropy_weight, "iterations": self.iterations}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.entropy_weight = float(state["entropy_weight"])
        self.iterations = int(state["iterations"])

    def iteration(self) -> dict[str, float]:
        args = self.args
        if self.schedule is not None:
            self.entropy_weight = self.schedule(self.iterations)
        if args.anneal_lr:
            lr = args.learning_rate * (1.0 - self.progress)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        ro = self.collector.collect(self.actor, self.critic)
        ro.rewards *= args.reward_scale
        advantages, returns = gae(ro, args.gamma, args.gae_lambda)
        obs, actions, old_logprobs, adv, ret = decisions(
            ro, args.device, ro.obs, ro.actions, ro.logprobs, advantages, returns
        )
        size = len(actions)
        warming = bool(args.init_from) and self.iterations < args.critic_warmup
        stats: dict[str, list[float]] = {
            k: [] for k in ("pg", "v", "ent", "kl", "clipfrac", "anchor")
        }
        anchor_logp = None
        if self.anchor is not None:
            with torch.no_grad():
                anchor_logp = torch.log_softmax(self.anchor(obs), -1)
        for _ in range(args.update_epochs):
            order = torch.randperm(size, device=args.device)
            # Exactly `minibatches` steps per pass: worker processes step in lockstep.
            for idx in torch.tensor_split(order, args.minibatches):
                logits = self.actor(obs[idx])
                dist = torch.distributions.Categorical(logits=logits)
                logprob = dist.log_prob(actions[idx])
                entropy = dist.entropy().mean()
                ratio = (logprob - old_logprobs[idx]).exp()
                a = adv[idx]
                if args.norm_adv and len(a) > 1:
                    a = (a - a.mean()) / (a.std() + 1e-8)
                surrogate = torch.min(
                    ratio * a, ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef) * a
                )
                if args.dual_clip > 0:
                    surrogate = torch.where(
                        a < 0, torch.max(surrogate, args.dual_clip * a), surrogate
                    )
                pg_loss = -surrogate.mean()
                v_loss = 0.5 * (self.critic(obs[idx]).squeeze(-1) - ret[idx]).pow(2).mean()
                if warming:
                    loss = args.vf_coef * v_loss
                else:
                    loss = pg_loss + args.vf_coef * v_loss - self.entropy_weight * entropy
                if anchor_logp is not None:
                    a_logp = anchor_logp[idx]
                    anchor_kl = (a_logp.exp() * (a_logp - dist.logits)).sum(-1).mean()
                    stats["anchor"].append(anchor_kl.item())
                    if not warming:
                        loss = loss + args.anchor_coef * anchor_kl
                self.optimizer.zero_grad()
                loss.backward()
                self.average_grads(self.actor, self.critic)
                # Clipped apart: the critic's large early gradients must not starve the actor's.
                nn.utils.clip_grad_norm_(self.actor.parameters(), args.max_grad_norm)
                nn.utils.clip_grad_norm_(self.critic.parameters(), args.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    stats["pg"].append(pg_loss.item())
                    stats["v"].append(v_loss.item())
                    stats["ent"].append(entropy.item())
                    stats["kl"].append(((ratio - 1) - (logprob - old_logprobs[idx])).mean().item())
                    stats["clipfrac"].append(
                        ((ratio - 1).abs() > args.clip_coef).float().mean().item()
                    )
        mean_entropy = self.group.mean(float(np.mean(stats["ent"])))
        if self.schedule is None and not warming:  # adapt the weight towards the target entropy
            self.entropy_weight = max(
                0.0, self.entropy_weight - args.entropy_lr * (mean_entropy - args.target_entropy)
            )
        self.iterations += 1
        out = {
            "losses/policy_loss": float(np.mean(stats["pg"])),
            "losses/value_loss": float(np.mean(stats["v"])),
            "losses/entropy": mean_entropy,
            "losses/approx_kl": float(np.mean(stats["kl"])),
            "losses/clipfrac": float(np.mean(stats["clipfrac"])),
            "charts/entropy_weight": self.entropy_weight,
            "charts/learning_rate": self.optimizer.param_groups[0]["lr"],
        }
        if stats["anchor"]:
            out["losses/anchor_kl"] = float(np.mean(stats["anchor"]))
        if ro.episode_qoe:
            out["charts/train_qoe"] = float(np.mean(ro.episode_qoe))
        return out
