"""Double DQN for ABR on the batched simulator (``streambed train dqn``).

The Q-network is the chosen architecture's pair (``--arch``), dueling by default: the critic
gives the state's value V and the actor's ``num_levels`` outputs, read as logits everywhere
else, are the levels' advantages A, so ``Q = V + A - mean(A)`` (``--no-dueling``: the actor's
outputs are Q). Either way the greedy level is the argmax of the actor's outputs, so a DQN
checkpoint is an ordinary policy checkpoint: ``load_policy``, ``streambed eval --algorithms ppo
--model`` and the service's ``ppo`` algorithm serve it unchanged (``sample=True`` would sample
a softmax of advantages, which means little). With ``--init-from`` (e.g. an imitation
student) the actor starts as that policy's preferences and, for ``critic_warmup`` updates, only
V learns.

Each iteration plays ``rollout_steps`` chunks of ``num_envs`` sessions epsilon-greedily
(epsilon falls linearly from ``epsilon_start`` to ``epsilon_end`` over ``exploration_steps``
decisions), stores ``n_step`` transitions in a replay ring buffer, then runs
``updates_per_iteration`` minibatch updates once the buffer holds ``learning_starts`` of them:
Huber loss on the double-DQN target ``R + gamma^k * Q_target(s', argmax_a Q(s', a))`` (the
online network picks, the target network values), and after every ``target_every`` updates
the target network moves ``tau`` of the way to the online one (``tau`` = 1: hard copies).
An n-step window stops at the end of a video and at the end of the iteration's rollout (a
shorter, still exact, return there). The replay buffer and its random generator are saved in
last.pt, so ``--resume`` continues the same run.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainer.common import CommonArgs, Data, Trainer
from trainer.distributed import Group


@dataclass
class DQNArgs(CommonArgs):
    out: str = "runs/dqn"
    """Run directory."""
    num_envs: int = 32
    """Simulated sessions stepped together."""
    rollout_steps: int = 8
    """Chunks each session plays per iteration (between rounds of updates)."""
    val_every: int = 100
    """Validate (greedy) every this many iterations."""
    learning_rate: float = 1e-4
    """Adam step size of the Q-network."""
    gamma: float = 0.99
    """Discount per chunk."""
    n_step: int = 3
    """Steps of the returns (1: one-step double DQN)."""
    buffer_size: int = 200_000
    """Replay capacity in transitions (a numpy ring buffer)."""
    batch_size: int = 256
    """Transitions per update."""
    learning_starts: int = 10_000
    """Transitions in the replay buffer before the first update."""
    updates_per_iteration: int = 4
    """Gradient steps after each iteration's rollout."""
    target_every: int = 1
    """Updates between target-network updates."""
    tau: float = 0.005
    """Polyak weight of each target update (1.0: hard copies every --target-every updates)."""
    epsilon_start: float = 1.0
    """Exploration rate at the start."""
    epsilon_end: float = 0.02
    """Exploration rate after --exploration-steps decisions."""
    exploration_steps: int = 200_000
    """Decisions over which epsilon falls linearly (counted over all workers)."""
    huber_delta: float = 1.0
    """Huber loss threshold (in scaled reward units)."""
    max_grad_norm: float = 10.0
    """Gradient clipping."""
    reward_scale: float = 0.1
    """Rewards are multiplied by this for the targets (QoE units are large: one second of stall
    costs 4.3)."""
    dueling: bool = True
    """Q(s, a) = V(s) + A(s, a) - mean A(s, .), V from the architecture's critic and A from its
    actor (Wang et al., 2016): the levels share one state value, so the network learns their
    small differences rather than each level's large total. Greedy play is the argmax of A, so
    checkpoints (the actor) stay ordinary policies. Off: the actor's outputs are Q."""
    critic_warmup: int = 2_000
    """With --init-from and --dueling: updates that train only V, so the warm-started actor's
    ranking of the levels drives the first data and survives until V has learnt the values."""


class Replay:
    """Transitions ``(obs, action, n-step return, next obs, discount)`` in a numpy ring buffer.

    ``discount`` is ``gamma^k`` for a k-step return, 0 where the video ended: the target is
    ``ret + discount * Q_target(next_obs, ...)``.
    """

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], seed: int) -> None:
        self.capacity = capacity
        self.obs = np.zeros((capacity, *obs_shape), np.float32)
        self.next_obs = np.zeros((capacity, *obs_shape), np.float32)
        self.action = np.zeros(capacity, np.int64)
        self.ret = np.zeros(capacity, np.float32)
        self.discount = np.zeros(capacity, np.float32)
        self.pos = 0
        self.size = 0
        self.rng = np.random.default_rng(seed)

    def add(
        self,
        obs: np.ndarray,
        action: np.ndarray,
        ret: np.ndarray,
        next_obs: np.ndarray,
        discount: np.ndarray,
    ) -> None:
        k = len(action)
        if k > self.capacity:  # only the newest fit
            obs, action, ret, next_obs, discount = (
                a[-self.capacity :] for a in (obs, action, ret, next_obs, discount)
            )
            k = self.capacity
        idx = (self.pos + np.arange(k)) % self.capacity
        self.obs[idx], self.action[idx], self.ret[idx] = obs, action, ret
        self.next_obs[idx], self.discount[idx] = next_obs, discount
        self.pos = int((self.pos + k) % self.capacity)
        self.size = min(self.size + k, self.capacity)

    def sample(self, batch: int) -> tuple[np.ndarray, ...]:
        idx = self.rng.integers(0, self.size, batch)
        return (
            self.obs[idx],
            self.action[idx],
            self.ret[idx],
            self.next_obs[idx],
            self.discount[idx],
        )

    def state(self) -> dict[str, Any]:
        """The filled part, position and generator, as tensors and strings (for last.pt)."""
        n = self.size
        arrays = {k: getattr(self, k)[:n].copy() for k in self.ARRAYS}
        return {
            **{k: torch.from_numpy(v) for k, v in arrays.items()},
            "pos": self.pos,
            "size": n,
            "rng": json.dumps(self.rng.bit_generator.state),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        n = int(state["size"])
        for key in self.ARRAYS:
            getattr(self, key)[:n] = state[key].numpy()
        self.pos, self.size = int(state["pos"]), n
        self.rng.bit_generator.state = json.loads(state["rng"])

    ARRAYS = ("obs", "next_obs", "action", "ret", "discount")


def n_step_transitions(
    rewards: np.ndarray, dones: np.ndarray, valid: np.ndarray, gamma: float, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n-step returns of a (T, N) rollout.

    Returns ``ret``, ``discount`` (``gamma^k``, 0 after a video's end) and ``last`` (the step
    whose next observation bootstraps), each (T, N); only entries where ``valid`` mean anything.
    """
    T, N = rewards.shape
    ret = np.zeros((T, N))
    discount = np.ones((T, N))
    last = np.tile(np.arange(T)[:, None], (1, N))
    for t in range(T):
        running = valid[t].copy()  # sessions whose window is still open
        for j in range(t, min(t + n, T)):
            ret[t] += np.where(running, discount[t] * rewards[j], 0.0)
            discount[t] = np.where(running, discount[t] * gamma, discount[t])
            last[t] = np.where(running, j, last[t])
            ended = running & (dones[j] > 0)
            discount[t][ended] = 0.0
            running &= ~ended
    return ret, discount, last


class DQN(Trainer):
    algorithm = "dqn"
    args: DQNArgs

    def __init__(self, args: DQNArgs, data: Data, group: Group | None = None) -> None:
        super().__init__(args, data, group)
        self.target = copy.deepcopy(self.actor)
        self.target_critic = copy.deepcopy(self.critic)
        for p in [*self.target.parameters(), *self.target_critic.parameters()]:
            p.requires_grad_(False)
        self.online = [self.actor, self.critic] if args.dueling else [self.actor]
        params = [p for net in self.online for p in net.parameters()]
        self.optimizer = torch.optim.Adam(params, lr=args.learning_rate)
        sim = self.collector.sim
        assert sim.obs is not None
        self.replay = Replay(
            args.buffer_size, tuple(sim.obs.shape[1:]), args.seed + self.group.rank
        )
        self.explore_rng = np.random.default_rng([args.seed, 7, self.group.rank])
        self.updates = 0

    def modules(self) -> dict[str, Any]:
        return {
            "actor": self.actor,
            "critic": self.critic,
            "target": self.target,
            "target_critic": self.target_critic,
            "optimizer": self.optimizer,
        }

    def extra_state(self) -> dict[str, Any]:
        return {
            "updates": self.updates,
            "replay": self.replay.state(),
            "explore_rng": json.dumps(self.explore_rng.bit_generator.state),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.replay.load_state(state["replay"])
        self.explore_rng.bit_generator.state = json.loads(state["explore_rng"])

    def epsilon(self) -> float:
        args = self.args
        # Every worker decides about as often, so its own count times the workers is the total.
        done = self.collector.env_steps * self.group.world
        share = min(done / max(args.exploration_steps, 1), 1.0)
        return args.epsilon_start + (args.epsilon_end - args.epsilon_start) * share

    @torch.no_grad()
    def _play(self) -> tuple[float, list[float]]:
        """One rollout, epsilon-greedy, into the replay buffer; returns epsilon and QoEs."""
        args, col = self.args, self.collector
        sim = col.sim
        assert sim.obs is not None
        T, N, levels = args.rollout_steps, col.n, self.data.video.num_levels
        obs = np.zeros((T, N, *sim.obs.shape[1:]), np.float32)
        next_obs = np.zeros_like(obs)
        actions = np.zeros((T, N), np.int64)
        rewards = np.zeros((T, N))
        dones = np.zeros((T, N))
        valid = np.zeros((T, N), bool)
        eps = self.epsilon()
        finished: list[float] = []
        for t in range(T):
            obs[t] = sim.obs
            greedy = self.actor(torch.as_tensor(obs[t], device=args.device)).argmax(-1)
            explore = self.explore_rng.random(N) < eps
            randoms = self.explore_rng.integers(0, levels, N)
            decide = sim.chunk > 0
            action = np.where(explore, randoms, greedy.cpu().numpy())
            quality = np.where(decide, action, col.default)
            step, reward, ended = col.advance(quality, decide)
            finished.extend(ended)
            actions[t], rewards[t], valid[t] = quality, reward * args.reward_scale, decide
            dones[t] = step.end_of_video
            next_obs[t] = sim.obs  # for ended sessions a new one's start: discounted to 0
        ret, discount, last = n_step_transitions(rewards, dones, valid, args.gamma, args.n_step)
        tt, nn_ = np.nonzero(valid)
        self.replay.add(
            obs[tt, nn_],
            actions[tt, nn_],
            ret[tt, nn_],
            next_obs[last[tt, nn_], nn_],
            discount[tt, nn_],
        )
        return eps, finished

    def warming(self) -> bool:
        args = self.args
        return bool(args.init_from) and args.dueling and self.updates < args.critic_warmup

    def q_values(self, actor: nn.Module, critic: nn.Module, obs: torch.Tensor) -> torch.Tensor:
        advantage = actor(obs)
        if not self.args.dueling:
            return advantage
        return critic(obs) + advantage - advantage.mean(-1, keepdim=True)

    def _update(self) -> tuple[float, float]:
        args = self.args
        dev = torch.device(args.device)
        obs, action, ret, next_obs, discount = (
            torch.as_tensor(a, device=dev) for a in self.replay.sample(args.batch_size)
        )
        q = self.q_values(self.actor, self.critic, obs).gather(1, action[:, None]).squeeze(1)
        with torch.no_grad():
            best = self.actor(next_obs).argmax(1, keepdim=True)  # double DQN: online picks
            later = self.q_values(self.target, self.target_critic, next_obs)
            target = ret + discount * later.gather(1, best).squeeze(1)
        loss = F.huber_loss(q, target, delta=args.huber_delta)
        self.optimizer.zero_grad()
        loss.backward()
        if self.warming():
            self.actor.zero_grad(set_to_none=True)  # Adam skips parameters without gradients
        self.average_grads(*self.online)
        for net in self.online:
            nn.utils.clip_grad_norm_(net.parameters(), args.max_grad_norm)
        self.optimizer.step()
        self.updates += 1
        if self.updates % args.target_every == 0:
            with torch.no_grad():
                # the online networks only: without dueling the critic is not trained
                for slow, net in zip((self.target, self.target_critic), self.online, strict=False):
                    for tp, p in zip(slow.parameters(), net.parameters(), strict=True):
                        tp.lerp_(p, args.tau)
        return loss.item(), q.mean().item()

    def iteration(self) -> dict[str, float]:
        args = self.args
        eps, finished = self._play()
        losses: list[float] = []
        qs: list[float] = []
        # Collective: every worker updates, or none does, so gradient averaging stays in step.
        if self.group.sum(self.replay.size) >= args.learning_starts * self.group.world:
            for _ in range(args.updates_per_iteration):
                loss, q = self._update()
                losses.append(loss)
                qs.append(q)
        out = {
            "charts/epsilon": eps,
            "charts/replay_size": float(self.replay.size),
            "charts/learning_rate": self.optimizer.param_groups[0]["lr"],
            "charts/updates": float(self.updates),
        }
        if losses:
            out["losses/td_loss"] = float(np.mean(losses))
            out["losses/q_mean"] = float(np.mean(qs))
        if finished:
            out["charts/train_qoe"] = float(np.mean(finished))
        return out
