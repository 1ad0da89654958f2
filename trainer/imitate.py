"""Imitation learning, Comyco-style (``streambed train imitate``).

The student is the same actor the RL trainers use. Each iteration plays ``num_envs`` training
sessions on the batched simulator; the teacher labels every state the sessions visit, and the
student is trained by cross-entropy on an aggregated buffer of (observation, teacher level).

Teachers: ``robustmpc`` (the classic algorithm, as deployed) or ``oracle``: MPC over the same
horizon whose throughput prediction is the trace's true mean rate over the coming
``horizon x chunk_s`` seconds, i.e. it knows the future (Comyco's "instant solver" idea).

DAgger: with probability ``beta`` a session follows the teacher, otherwise the student; beta
falls linearly from 1 to 0 over ``beta_iterations`` (``--no-dagger``: beta stays 1, plain
behaviour cloning on teacher trajectories). Use the result as PPO's warm start with
``streambed train ppo --init-from runs/NAME/best.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from abr_service.algorithms.base import ChunkFeedback, PlayerState
from abr_service.algorithms.mpc import MPC, RobustMPC
from abr_service.video import Video
from streambed.errors import ConfigError
from trainer.common import CommonArgs, Data, Trainer
from trainer.tracebank import TraceBank

TEACHERS = ("robustmpc", "oracle")


@dataclass
class ImitateArgs(CommonArgs):
    out: str = "runs/imitate"
    """Run directory."""
    num_envs: int = 128
    """Simulated sessions per iteration (each decision asks the teacher, a scalar call)."""
    teacher: str = "oracle"
    """robustmpc, or oracle (MPC with the trace's true future throughput)."""
    dagger: bool = True
    """Let the student drive a growing share of sessions (DAgger); off: behaviour cloning."""
    beta_iterations: int = 30
    """Iterations over which the teacher's share of driving falls from 1 to 0."""
    learning_rate: float = 1e-3
    """Adam step size."""
    buffer_size: int = 300_000
    """Most recent labelled states kept for training."""
    batch_size: int = 512
    """Minibatch size."""
    grad_steps: int = 60
    """Gradient steps per iteration."""
    horizon: int = 5
    """Teacher's planning horizon, chunks."""
    val_every: int = 2
    """Validate every this many iterations."""


class OracleMPC(MPC):
    """MPC told the true mean throughput ahead (bytes/s) before each decision."""

    name = "oracle"
    future_bps = 0.0

    def predicted_bps(self) -> float:
        return self.future_bps


def future_rate_bps(
    bank: TraceBank, trace: np.ndarray, tau: np.ndarray, seconds: float
) -> np.ndarray:
    """Mean deliverable bytes/s over the next ``seconds`` from ``tau`` (wrapping like the sim)."""

    def delivered(t: np.ndarray) -> np.ndarray:
        i = bank.line_after(trace, t)
        return bank.cum[i - 1] + bank.rate[i] * (t - bank.time[i - 1])

    period = bank.period[trace]
    end = tau + seconds
    loops = np.floor(end / period)
    end_in = end - loops * period
    total = loops * bank.total_bytes[trace] + delivered(end_in) - delivered(tau)
    return total / seconds


class Imitate(Trainer):
    algorithm = "imitate"
    args: ImitateArgs

    def __init__(self, args: ImitateArgs, data: Data) -> None:
        if args.teacher not in TEACHERS:
            raise ConfigError(f"unknown teacher {args.teacher!r}; choose {', '.join(TEACHERS)}")
        super().__init__(args, data)
        self.optimizer = torch.optim.Adam(self.actor.parameters(), lr=args.learning_rate)
        self.iterations = 0
        n = args.num_envs
        self.teachers = [self._teacher(data.video) for _ in range(n)]
        shape = (args.buffer_size, *self.collector.sim.obs.shape[1:])  # type: ignore[union-attr]
        self.buf_obs = torch.zeros(shape)
        self.buf_act = torch.zeros(args.buffer_size, dtype=torch.long)
        self.buf_len = 0
        self.buf_pos = 0

    def _teacher(self, video: Video) -> MPC:
        from abr_service.algorithms.mpc import MPCParams

        params = MPCParams(horizon=self.args.horizon, qoe=self.args.qoe)
        return (
            RobustMPC(video, params)
            if self.args.teacher == "robustmpc"
            else OracleMPC(video, params)
        )

    def modules(self) -> dict[str, Any]:
        return {"actor": self.actor, "optimizer": self.optimizer}

    def extra_state(self) -> dict[str, Any]:
        # The teachers' histories restart on resume; their sessions restart too.
        return {"iterations": self.iterations}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.iterations = int(state["iterations"])
        self.collector.sim.reset()
        self.teachers = [self._teacher(self.data.video) for _ in range(self.args.num_envs)]

    def beta(self) -> float:
        if not self.args.dagger:
            return 1.0
        return max(0.0, 1.0 - self.iterations / max(self.args.beta_iterations, 1))

    @torch.no_grad()
    def _collect(self) -> tuple[torch.Tensor, torch.Tensor, float, list[float]]:
        col = self.collector
        sim = col.sim
        assert sim.obs is not None
        video = self.data.video
        beta = self.beta()
        driver_teacher = col.sim.rng.random(col.n) < beta  # per session, for this rollout
        obs_list, label_list, agree = [], [], []
        finished: list[float] = []
        for _ in range(col.steps):
            decide = sim.chunk > 0
            idx = np.flatnonzero(decide)
            labels = np.full(col.n, col.default, np.int64)
            if self.args.teacher == "oracle" and idx.size:
                rates = future_rate_bps(
                    sim.bank, sim.trace[idx], sim.tau[idx], self.args.horizon * video.chunk_s
                )
                for j, r in zip(idx, rates, strict=True):
                    self.teachers[j].future_bps = float(r)  # type: ignore[attr-defined]
            for j in idx:
                labels[j] = self.teachers[j].select(
                    PlayerState(
                        next_chunk=int(sim.chunk[j]),
                        buffer_s=float(sim.buffer_s[j]),
                        last_quality=int(col.prev_quality[j]),
                    )
                )
            obs = torch.as_tensor(sim.obs)
            student = self.actor(obs.to(self.args.device)).argmax(-1).cpu().numpy()
            quality = np.where(driver_teacher, labels, student)
            quality = np.where(decide, quality, col.default)
            if idx.size:
                obs_list.append(obs[idx].clone())
                label_list.append(torch.as_tensor(labels[idx]))
                agree.append(float((student[idx] == labels[idx]).mean()))
            chunk_before = sim.chunk.copy()
            step = sim.step(quality)
            reward = col._reward(quality, step.rebuffer_s)
            col.prev_quality = quality
            col.session_qoe += np.where(decide, reward, 0.0)
            col.session_chunks += decide
            col.env_steps += int(decide.sum())
            for k in range(col.n):
                self.teachers[k].on_chunk(
                    ChunkFeedback(
                        int(chunk_before[k]),
                        int(quality[k]),
                        int(step.chunk_bytes[k]),
                        float(step.delay_s[k]),
                        float(step.buffer_s[k]),
                        float(step.rebuffer_s[k]),
                    )
                )
            done = step.end_of_video
            if done.any():
                ended = np.flatnonzero(done)
                finished.extend(
                    (col.session_qoe[ended] / np.maximum(col.session_chunks[ended], 1)).tolist()
                )
                col.session_qoe[ended] = 0.0
                col.session_chunks[ended] = 0
                col.prev_quality[ended] = col.default
                for j in ended:
                    self.teachers[j] = self._teacher(video)
                sim.reset(done)
        return torch.cat(obs_list), torch.cat(label_list), float(np.mean(agree)), finished

    def _store(self, obs: torch.Tensor, labels: torch.Tensor) -> None:
        size = self.args.buffer_size
        for start in range(0, len(obs), size):
            o, a = obs[start : start + size], labels[start : start + size]
            end = self.buf_pos + len(o)
            if end <= size:
                self.buf_obs[self.buf_pos : end], self.buf_act[self.buf_pos : end] = o, a
            else:
                first = size - self.buf_pos
                self.buf_obs[self.buf_pos :], self.buf_act[self.buf_pos :] = o[:first], a[:first]
                self.buf_obs[: end - size], self.buf_act[: end - size] = o[first:], a[first:]
            self.buf_pos = end % size
            self.buf_len = min(self.buf_len + len(o), size)

    def iteration(self) -> dict[str, float]:
        args = self.args
        beta = self.beta()
        obs, labels, agreement, finished = self._collect()
        self._store(obs, labels)
        losses = []
        for _ in range(args.grad_steps):
            idx = torch.randint(self.buf_len, (min(args.batch_size, self.buf_len),))
            logits = self.actor(self.buf_obs[idx].to(args.device))
            loss = F.cross_entropy(logits, self.buf_act[idx].to(args.device))
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
        self.iterations += 1
        out = {
            "losses/cross_entropy": float(np.mean(losses)),
            "charts/teacher_agreement": agreement,
            "charts/beta": beta,
            "charts/buffer": float(self.buf_len),
        }
        if finished:
            out["charts/train_qoe"] = float(np.mean(finished))
        return out
