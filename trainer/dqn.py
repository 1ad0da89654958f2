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

Demonstrations (DQfD, Hester et al., 2018), with ``--demo-teacher NAME`` (a rule algorithm such
as robustmpc): first the teacher plays every session until a second replay holds
``demo_transitions`` of its transitions, while ``demo_updates`` updates per iteration train on
them alone; then the agent plays epsilon-greedily as above and each minibatch draws
``demo_ratio`` of its transitions from the demonstrations. On demonstrated transitions a
large-margin loss ``max_a [Q(s, a) + margin * (a != a_teacher)] - Q(s, a_teacher)`` (weight
``margin_weight``) keeps the teacher's level ahead unless the TD targets say otherwise; epsilon
counts the agent's own decisions only.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from streambed.core.errors import ConfigError
from streambed.trainer.args import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, UNIT, Bound, CommonArgs
from streambed.trainer.data import Data
from streambed.trainer.distributed import Group
from streambed.trainer.loop import Trainer
from streambed.trainer.teachers import RuleSessions, rule_factory


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
    demo_teacher: str = ""
    """Rule algorithm (e.g. robustmpc, see ``streambed algorithms``) whose sessions are
    demonstrations (DQfD); empty: none."""
    param: list[str] = field(default_factory=list)
    """Demonstration teacher parameter TEACHER.KEY=VALUE, as ``streambed eval --param``."""
    demo_transitions: int = 100_000
    """Demonstrated transitions to collect (over all workers) before the agent plays."""
    demo_updates: int = 16
    """Updates per iteration while the demonstrations are collected (on them alone)."""
    demo_ratio: float = 0.25
    """Share of each minibatch drawn from the demonstrations once the agent plays."""
    margin: float = 0.1
    """Large-margin loss: how far (in scaled reward units) the teacher's level must lead every
    other level's Q on a demonstrated transition."""
    margin_weight: float = 1.0
    """Weight of the large-margin loss against the TD loss."""

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "learning_rate": POSITIVE,
        "gamma": UNIT,
        "n_step": AT_LEAST_ONE,
        "buffer_size": AT_LEAST_ONE,
        "batch_size": AT_LEAST_ONE,
        "learning_starts": NON_NEGATIVE,
        "updates_per_iteration": AT_LEAST_ONE,
        "target_every": AT_LEAST_ONE,
        "tau": Bound(0, 1, low_open=True),
        "epsilon_start": UNIT,
        "epsilon_end": UNIT,
        "exploration_steps": NON_NEGATIVE,
        "huber_delta": POSITIVE,
        "max_grad_norm": POSITIVE,
        "reward_scale": POSITIVE,
        "critic_warmup": NON_NEGATIVE,
        "demo_transitions": AT_LEAST_ONE,
        "demo_updates": NON_NEGATIVE,
        "demo_ratio": Bound(0, 1, high_open=True),
        "margin": NON_NEGATIVE,
        "margin_weight": NON_NEGATIVE,
    }


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
        """Restore :meth:`state`; a ValueError if it does not fit this buffer."""
        n = int(state["size"])
        if not 0 <= n <= self.capacity or not 0 <= int(state["pos"]) < max(self.capacity, 1):
            raise ValueError(
                f"its replay ({n} transitions) does not fit --buffer-size {self.capacity} "
                "(resume with the run's --buffer-size)"
            )
        for key in self.ARRAYS:
            target, saved = getattr(self, key)[:n], state[key].numpy()
            if saved.shape != target.shape:
                raise ValueError(f"its replay's {key} has shape {saved.shape}, not {target.shape}")
            target[...] = saved
        self.pos, self.size = int(state["pos"]), n
        self.rng.bit_generator.state = json.loads(state["rng"])

    ARRAYS = ("obs", "next_obs", "action", "ret", "discount")

    def nbytes(self) -> int:
        """The buffer's arrays full (its :meth:`state` holds at most this much)."""
        return sum(getattr(self, k).nbytes for k in self.ARRAYS)


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
        if args.learning_starts > args.buffer_size:
            raise ConfigError(
                f"--learning-starts {args.learning_starts} exceeds --buffer-size "
                f"{args.buffer_size}: the replay would never hold enough to learn from"
            )
        sim = self.collector.sim
        assert sim.obs is not None
        self.replay = Replay(
            args.buffer_size, tuple(sim.obs.shape[1:]), args.seed + self.group.rank
        )
        self.explore_rng = np.random.default_rng([args.seed, 7, self.group.rank])
        self.updates = 0
        self.demo_steps = 0
        self.demos: Replay | None = None
        self.teacher: RuleSessions | None = None
        if args.demo_teacher:
            make = rule_factory(
                args.demo_teacher, data.video, args.qoe, args.param, "--demo-teacher"
            )
            self.teacher = RuleSessions(make, self.collector.n)
            share = max(args.demo_transitions // self.group.world, 1)
            self.demos = Replay(
                share, self.replay.obs.shape[1:], args.seed + 1000 + self.group.rank
            )
        elif args.param:
            raise ConfigError("--param is for --demo-teacher, which is not given")

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
            "demo_steps": self.demo_steps,
            **({"demos": self.demos.state()} if self.demos is not None else {}),
        }

    def extra_state_bytes(self) -> int:
        # the buffers full: last.pt holds their filled part
        demos = self.demos.nbytes() if self.demos is not None else 0
        return self.replay.nbytes() + demos + 64 * 1024

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.replay.load_state(state["replay"])
        self.explore_rng.bit_generator.state = json.loads(state["explore_rng"])
        self.demo_steps = int(state.get("demo_steps", 0))
        if self.demos is not None and "demos" in state:
            self.demos.load_state(state["demos"])
        if self.teacher is not None:
            self.teacher.reset()  # the teachers' histories restart; so do their sessions
            self.collector.restart()

    def demonstrating(self) -> bool:
        """Still collecting demonstrations (collective: every worker answers the same)."""
        if self.demos is None:
            return False
        return bool(self.group.sum(int(self.demos.size < self.demos.capacity)))

    def epsilon(self) -> float:
        args = self.args
        # Every worker decides about as often, so its own count times the workers is the total.
        done = (self.collector.env_steps - self.demo_steps) * self.group.world
        share = min(done / max(args.exploration_steps, 1), 1.0)
        return args.epsilon_start + (args.epsilon_end - args.epsilon_start) * share

    @torch.no_grad()
    def _play(self, replay: Replay, teacher: RuleSessions | None) -> tuple[float, list[float]]:
        """One rollout into ``replay``, epsilon-greedy or, given ``teacher``, the teacher's
        play; returns epsilon and the QoEs of the sessions that ended."""
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
            decide = sim.chunk > 0
            if teacher is None:
                obs_t = torch.as_tensor(obs[t], device=args.device)
                greedy = self.actor(obs_t).argmax(-1).cpu().numpy()
                explore = self.explore_rng.random(N) < eps
                randoms = self.explore_rng.integers(0, levels, N)
                action = np.where(explore, randoms, greedy)
            else:
                action = np.full(N, col.default, np.int64)
                action[decide] = teacher.select(sim, col.prev_quality, np.flatnonzero(decide))
            quality = np.where(decide, action, col.default)
            step, reward, ended = col.advance(quality, decide)
            if teacher is not None:
                teacher.feedback(step, quality)
                self.demo_steps += int(decide.sum())
            finished.extend(ended)
            actions[t], rewards[t], valid[t] = quality, reward * args.reward_scale, decide
            dones[t] = step.end_of_video
            next_obs[t] = sim.obs  # for ended sessions a new one's start: discounted to 0
        ret, discount, last = n_step_transitions(rewards, dones, valid, args.gamma, args.n_step)
        tt, nn_ = np.nonzero(valid)
        replay.add(
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

    def _sample(self, demonstrating: bool) -> tuple[tuple[torch.Tensor, ...], int]:
        """A minibatch on the device and how many of its first rows are demonstrations."""
        args = self.args
        demos, n_demo = self.demos, 0
        parts = []
        if demos is not None:
            n_demo = args.batch_size if demonstrating else round(args.batch_size * args.demo_ratio)
            parts.append(demos.sample(n_demo))
        if n_demo < args.batch_size:
            parts.append(self.replay.sample(args.batch_size - n_demo))
        batch = tuple(
            torch.as_tensor(np.concatenate(cols), device=args.device)
            for cols in zip(*parts, strict=True)
        )
        return batch, n_demo

    def _update(self, demonstrating: bool = False) -> tuple[float, float, float]:
        args = self.args
        (obs, action, ret, next_obs, discount), n_demo = self._sample(demonstrating)
        all_q = self.q_values(self.actor, self.critic, obs)
        q = all_q.gather(1, action[:, None]).squeeze(1)
        with torch.no_grad():
            best = self.actor(next_obs).argmax(1, keepdim=True)  # double DQN: online picks
            later = self.q_values(self.target, self.target_critic, next_obs)
            target = ret + discount * later.gather(1, best).squeeze(1)
        td_loss = F.huber_loss(q, target, delta=args.huber_delta)
        margin_loss = torch.zeros(())
        if n_demo:
            demo_q, demo_action = all_q[:n_demo], action[:n_demo]
            margins = torch.full_like(demo_q, args.margin)
            margins.scatter_(1, demo_action[:, None], 0.0)
            margin_loss = ((demo_q + margins).max(1).values - q[:n_demo]).mean()
        loss = td_loss + args.margin_weight * margin_loss
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
        return td_loss.item(), margin_loss.item(), q.mean().item()

    def iteration(self) -> dict[str, float]:
        args = self.args
        demonstrating = self.demonstrating()
        if demonstrating:
            assert self.demos is not None
            eps, finished = self._play(self.demos, self.teacher)
            ready = self.group.sum(self.demos.size) >= args.learning_starts * self.group.world
            updates = args.demo_updates if ready else 0
        else:
            eps, finished = self._play(self.replay, None)
            # Collective: every worker updates, or none does, so gradient averaging stays in step.
            ready = self.group.sum(self.replay.size) >= args.learning_starts * self.group.world
            updates = args.updates_per_iteration if ready else 0
        stats = np.array([self._update(demonstrating) for _ in range(updates)])
        out = {
            "charts/epsilon": eps,
            "charts/replay_size": float(self.replay.size),
            "charts/learning_rate": self.optimizer.param_groups[0]["lr"],
            "charts/updates": float(self.updates),
        }
        if self.demos is not None:
            out["charts/demo_size"] = float(self.demos.size)
            out["charts/demonstrating"] = float(demonstrating)
        if len(stats):
            out["losses/td_loss"] = float(stats[:, 0].mean())
            out["losses/q_mean"] = float(stats[:, 2].mean())
            if self.demos is not None:
                out["losses/margin_loss"] = float(stats[:, 1].mean())
        if finished:
            out["charts/train_qoe" if not demonstrating else "charts/teacher_qoe"] = float(
                np.mean(finished)
            )
        return out
