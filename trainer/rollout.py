"""Rollouts on the batched simulator, and the advantages (GAE) of a rollout.

Sessions in a rollout follow the test harness: chunk 0 of every session is fetched at
``SimConfig.default_quality`` without a decision, so the policy decides chunks 1..N-1, and its
reward is the QoE of the chunk it chose. The simulator builds the observation the ``--arch``
architecture reads (its ``obs_version``). With ``--augment-fraction`` every session the collector
starts draws, from the simulator's generator, whether it plays at a bandwidth factor k and which
(:meth:`Collector.draw_scales`); with ``--jitter-fraction``, whether its bandwidth also swings chunk
by chunk (:meth:`Collector.draw_jitter`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from streambed.abr_service.qoe import make_qoe
from streambed.trainer.args import CommonArgs, bandwidth_scale_range, sim_config
from streambed.trainer.batched import BatchedSimulator, BatchStep
from streambed.trainer.data import Data
from streambed.trainer.networks import arch_observation
from streambed.trainer.simulator import SimConfig


@dataclass
class Rollout:
    """Arrays of shape (T, N, ...): one decision per (step, session) where ``valid``."""

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    valid: torch.Tensor
    next_obs: torch.Tensor
    next_value: torch.Tensor
    episode_qoe: list[float]
    """Mean per-chunk QoE of the sessions that ended during the rollout."""


class Collector:
    """Plays ``num_envs`` training-mode sessions on the batched simulator."""

    def __init__(
        self, data: Data, args: CommonArgs, rng: np.random.Generator, num_envs: int
    ) -> None:
        self.video = data.video
        self.sim = BatchedSimulator(
            data.train,
            data.video,
            num_envs,
            sim_config(args),
            mode="train",
            rng=rng,
            obs_dtype=np.float32,
            observation=arch_observation(args.arch),
        )
        self.qoe = make_qoe(args.qoe, data.video)
        self.n = num_envs
        self.steps = args.rollout_steps
        self.default = SimConfig().default_quality
        self.prev_quality = np.full(self.n, self.default, np.int64)
        self.session_qoe = np.zeros(self.n)
        self.session_chunks = np.zeros(self.n, np.int64)
        self.device = torch.device(args.device)
        self.env_steps = 0
        self.augment_fraction = args.augment_fraction
        self.scale_range = bandwidth_scale_range(args)
        self.jitter_fraction = args.jitter_fraction
        self.jitter_sigma_of_cv = float(np.sqrt(np.log1p(args.jitter_cv**2)))
        self.jitter_sigma = np.zeros(self.n)
        """Each session's log-normal sigma of its per-chunk bandwidth factor (0: none)."""
        if self.augment_fraction > 0 or self.jitter_fraction > 0:
            self.restart()  # the simulator started its sessions unaugmented

    def draw_scales(self, count: int) -> np.ndarray | None:
        """Bandwidth factors of ``count`` starting sessions: each, with probability
        ``--augment-fraction``, a k drawn log-uniformly from ``--bandwidth-scale``, else 1.
        None (and nothing drawn) when augmentation is off."""
        if self.augment_fraction <= 0:
            return None
        rng = self.sim.rng
        augmented = rng.random(count) < self.augment_fraction
        low, high = self.scale_range
        scale = np.exp(rng.uniform(np.log(low), np.log(high), size=count))
        if low == high:
            scale[:] = low  # exactly the one factor asked for
        return np.where(augmented, scale, 1.0)

    def draw_jitter(self, count: int) -> np.ndarray | None:
        """Log-normal sigmas of ``count`` starting sessions' per-chunk bandwidth factors: each,
        with probability ``--jitter-fraction``, the sigma of ``--jitter-cv``, else 0. None (and
        nothing drawn) when this augmentation is off."""
        if self.jitter_fraction <= 0:
            return None
        jittered = self.sim.rng.random(count) < self.jitter_fraction
        return np.where(jittered, self.jitter_sigma_of_cv, 0.0)

    def restart(self, mask: np.ndarray | None = None) -> None:
        """Start new sessions in ``mask`` (all by default), augmented as the flags ask."""
        count = self.n if mask is None else int(np.count_nonzero(mask))
        self.sim.reset(mask, bandwidth_scale=self.draw_scales(count))
        sigma = self.draw_jitter(count)
        if sigma is not None:
            self.jitter_sigma[slice(None) if mask is None else mask] = sigma

    def step(self, quality: np.ndarray) -> BatchStep:
        """One chunk for every session; jittered sessions see their bandwidth factor times a
        fresh log-normal draw of mean 1 for this chunk only."""
        sim = self.sim
        if not self.jitter_sigma.any():
            return sim.step(quality)
        sigma = self.jitter_sigma
        factor = np.exp(sigma * sim.rng.standard_normal(self.n) - 0.5 * sigma**2)
        base = sim.bandwidth_scale
        sim.bandwidth_scale = factor if base is None else base * factor
        try:
            return sim.step(quality)
        finally:
            sim.bandwidth_scale = base

    def state(self) -> dict[str, Any]:
        """Everything resuming needs, as tensors and strings (``weights_only`` loads them)."""

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.array(a, copy=True))

        sim = self.sim
        return {
            "rng": json.dumps(sim.rng.bit_generator.state),
            "sim": {k: t(getattr(sim, k)) for k in ("trace", "tau", "line", "buffer_s", "chunk")},
            "bandwidth_scale": t(
                sim.bandwidth_scale if sim.bandwidth_scale is not None else np.ones(self.n)
            ),
            "jitter_sigma": t(self.jitter_sigma),
            "obs": t(sim.obs) if sim.obs is not None else None,
            "prev_quality": t(self.prev_quality),
            "session_qoe": t(self.session_qoe),
            "session_chunks": t(self.session_chunks),
            "env_steps": self.env_steps,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`; a ValueError (or KeyError) if it does not fit these sessions."""
        sim = self.sim
        saved = len(state["prev_quality"])
        if saved != self.n:
            raise ValueError(
                f"it holds {saved} sessions per worker where this run has {self.n} "
                "(resume with the run's --num-envs and --workers)"
            )

        def fitting(value: torch.Tensor, like: np.ndarray, key: str) -> np.ndarray:
            array = value.numpy()
            if array.shape != like.shape:
                raise ValueError(f"{key} has shape {array.shape}, not {like.shape}")
            return array.astype(like.dtype, copy=True)

        arrays = {
            key: fitting(state["sim"][key], getattr(sim, key), key)
            for key in ("trace", "tau", "line", "buffer_s", "chunk")
        }
        books = {
            key: fitting(state[key], getattr(self, key), key)
            for key in ("prev_quality", "session_qoe", "session_chunks")
        }
        obs = None
        if state["obs"] is not None and sim.obs is not None:
            obs = fitting(state["obs"], sim.obs, "obs")
        scale = state.get("bandwidth_scale")  # absent from runs saved before augmentation
        if scale is not None:
            scale = fitting(scale, np.ones(self.n), "bandwidth_scale")
            if not (np.isfinite(scale).all() and (scale > 0).all()):
                raise ValueError("its bandwidth scales are not all positive")
        sigma = state.get("jitter_sigma")  # absent from runs saved before jitter
        jitter = np.zeros(self.n) if sigma is None else fitting(sigma, self.jitter_sigma, "jitter")
        if not (np.isfinite(jitter).all() and (jitter >= 0).all()):
            raise ValueError("its jitter sigmas are not all non-negative")
        trace, line = arrays["trace"], arrays["line"]
        inside = (trace >= 0) & (trace < len(sim.bank)) & (line >= 0) & (line < len(sim.bank.time))
        if not inside.all():
            raise ValueError("its sessions play traces this run does not have")
        sim.rng.bit_generator.state = json.loads(state["rng"])
        for key, array in arrays.items():
            setattr(sim, key, array)
        if obs is not None and sim.obs is not None:
            sim.obs[...] = obs
        sim.bandwidth_scale = None if scale is None or (scale == 1.0).all() else scale
        self.jitter_sigma = jitter
        self.prev_quality = books["prev_quality"]
        self.session_qoe = books["session_qoe"]
        self.session_chunks = books["session_chunks"]
        self.env_steps = int(state["env_steps"])

    def advance(
        self, quality: np.ndarray, decide: np.ndarray
    ) -> tuple[BatchStep, np.ndarray, list[float]]:
        """Download every session's next chunk at ``quality`` and keep the books.

        Returns the step, each chunk's QoE (the reward), and the mean per-chunk QoE of the
        sessions that ended; those are already restarted when this returns.
        """
        step = self.step(quality)
        reward = step.reward(self.qoe, self.prev_quality)
        self.prev_quality = np.array(quality, copy=True)
        self.session_qoe += np.where(decide, reward, 0.0)
        self.session_chunks += decide
        self.env_steps += int(decide.sum())
        finished: list[float] = []
        done = step.end_of_video
        if done.any():
            ended = np.flatnonzero(done)
            finished = (
                self.session_qoe[ended] / np.maximum(self.session_chunks[ended], 1)
            ).tolist()
            self.session_qoe[ended] = 0.0
            self.session_chunks[ended] = 0
            self.prev_quality[ended] = self.default
            self.restart(done)
        return step, reward, finished

    @torch.no_grad()
    def collect(self, actor: nn.Module, critic: nn.Module | None, greedy: bool = False) -> Rollout:
        T, N = self.steps, self.n
        sim = self.sim
        assert sim.obs is not None
        obs_buf = torch.zeros((T, N, *sim.obs.shape[1:]))
        actions = torch.zeros((T, N), dtype=torch.long)
        logprobs = torch.zeros((T, N))
        values = torch.zeros((T, N))
        rewards = torch.zeros((T, N))
        dones = torch.zeros((T, N))
        valid = torch.zeros((T, N), dtype=torch.bool)
        finished: list[float] = []
        for t in range(T):
            obs = torch.as_tensor(sim.obs).to(self.device)
            logits = actor(obs)
            dist = torch.distributions.Categorical(logits=logits)
            action = logits.argmax(-1) if greedy else dist.sample()
            decide = sim.chunk > 0
            quality = np.where(decide, action.cpu().numpy(), self.default)
            obs_buf[t] = obs.cpu()
            actions[t] = torch.as_tensor(quality)
            logprobs[t] = dist.log_prob(torch.as_tensor(quality, device=self.device)).cpu()
            if critic is not None:
                values[t] = critic(obs).squeeze(-1).cpu()
            step, reward, ended_qoe = self.advance(quality, decide)
            finished.extend(ended_qoe)
            rewards[t] = torch.as_tensor(reward, dtype=torch.float32)
            valid[t] = torch.as_tensor(decide)
            dones[t] = torch.as_tensor(step.end_of_video, dtype=torch.float32)
        next_obs = torch.as_tensor(sim.obs).to(self.device)
        next_value = critic(next_obs).squeeze(-1).cpu() if critic is not None else torch.zeros(N)
        return Rollout(
            obs_buf,
            actions,
            logprobs,
            values,
            rewards,
            dones,
            valid,
            next_obs.cpu(),
            next_value,
            finished,
        )


def decisions(ro: Rollout, device: str, *per_step: torch.Tensor) -> list[torch.Tensor]:
    """The rollout's decisions only (a session's chunk 0 is not one), one row each, on ``device``.

    Each tensor has shape (T, N, ...) like the rollout's fields.
    """
    mask = ro.valid.reshape(-1)
    return [t.reshape(-1, *t.shape[2:])[mask].to(device) for t in per_step]


def gae(ro: Rollout, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns; lam=1 gives n-step (Monte Carlo to the rollout's end) returns."""
    T = ro.rewards.shape[0]
    adv = torch.zeros_like(ro.rewards)
    last = torch.zeros_like(ro.next_value)
    for t in reversed(range(T)):
        next_value = ro.next_value if t == T - 1 else ro.values[t + 1]
        nonterminal = 1.0 - ro.dones[t]
        delta = ro.rewards[t] + gamma * next_value * nonterminal - ro.values[t]
        last = delta + gamma * lam * nonterminal * last
        adv[t] = last
    return adv, adv + ro.values
