"""Imitation learning, Comyco-style (``streambed train imitate``).

The student is the same actor the RL trainers use. Each iteration plays ``num_envs`` training
sessions on the batched simulator; the teacher labels every state the sessions visit, and the
student is trained on an aggregated buffer of labelled states, by cross-entropy on the
teacher's level (``--loss ce``) or, from the oracle, by regressing its logits on the oracle's
regret of every level (``--loss regress``).

Teachers: ``robustmpc`` (the classic algorithm, as deployed) or ``oracle``, which knows the
future (Comyco's "instant solver"): it plans the next ``horizon`` chunks, each downloaded
through the session's actual trace from its actual position (noise-free), by beam search over
level sequences (``--plans beam``; or every sequence, or one level held). All sessions' plans
are expanded at once with the batched trace arithmetic. Exact foresight makes bold plans safe
for the oracle and not for a student who cannot see the future, so by default the oracle plans
with 70% of the trace's bandwidth (``--bandwidth-discount``, after Comyco's QoE_lin recipe).

DAgger: with probability ``beta`` a session follows the teacher, otherwise the student; beta
falls linearly from 1 to 0 over ``beta_iterations`` (``--no-dagger``: beta stays 1, plain
behaviour cloning on teacher trajectories). Use the result as PPO's warm start with
``streambed train ppo --init-from runs/NAME/best.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from streambed.abr_service.algorithms.registry import rule_names
from streambed.abr_service.qoe import QoEMetric
from streambed.abr_service.video import Video
from streambed.core.errors import ConfigError
from streambed.trainer.args import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Bound, CommonArgs
from streambed.trainer.batched import BatchedSimulator
from streambed.trainer.data import Data
from streambed.trainer.distributed import Group
from streambed.trainer.loop import Trainer
from streambed.trainer.simulator import SimConfig, buffer_after_download
from streambed.trainer.teachers import RuleSessions, rule_factory
from streambed.trainer.tracebank import TraceBank

TEACHERS = ("robustmpc", "oracle")  # the usual ones; any rule algorithm's name is accepted
PLANS = ("all", "beam", "hold", "student")
LOSSES = ("regress", "expected-regret", "soft", "ce")


@dataclass
class ImitateArgs(CommonArgs):
    out: str = "runs/imitate"
    """Run directory."""
    num_envs: int = 128
    """Simulated sessions per iteration (each decision asks the teacher, a scalar call)."""
    teacher: str = "oracle"
    """oracle (MPC with the trace's true future throughput), or any rule algorithm by name
    (robustmpc, a built-in or an installed plug-in: see ``streambed algorithms``)."""
    param: list[str] = field(default_factory=list)
    """Teacher parameter TEACHER.KEY=VALUE, as ``streambed eval --param`` (e.g.
    robustmpc.horizon=3; ``streambed algorithms`` lists them). The oracle has none: it takes
    --horizon and --plans."""
    dagger: bool = True
    """Let the student drive a growing share of sessions (DAgger); off: behaviour cloning."""
    beta_iterations: int = 30
    """Iterations over which the teacher's share of driving falls from 1 to 0."""
    learning_rate: float = 1e-3
    """Adam step size."""
    anneal_lr: bool = False
    """Decay the step size linearly to 0 over the budget, so the student settles instead of
    flipping between near-tied levels from one minibatch to the next."""
    buffer_size: int = 300_000
    """Most recent labelled states kept for training."""
    batch_size: int = 512
    """Minibatch size (over all workers)."""
    grad_steps: int = 60
    """Gradient steps per iteration."""
    horizon: int = 15
    """Oracle's planning horizon, chunks (15: 60 s of Envivio, as Comyco's beam-search solver).
    With --plans all the tree has levels^horizon leaves, so at most 5 there; with hold plans 20
    taught better students than 6 or 12 (benchmarks/RESULTS.md)."""
    plans: str = "beam"
    """Oracle's plans: all (every sequence of levels: the oracle's own best continuation), beam
    (sequences of levels too, searched keeping the --beam-width best partial plans per first
    level, so horizons of 10-20 chunks are affordable), hold (one level for the whole horizon),
    or student (the first level, then the student's greedy play: the continuation the student
    will really have)."""
    beam_width: int = 8
    """Partial plans kept per first level at each depth of --plans beam."""
    bandwidth_discount: float = 0.7
    """The oracle (plans all, beam, hold) plans with the trace's bandwidth times this: a margin
    against the boldness that exact foresight teaches a student who has none (Comyco's QoE_lin
    recipe uses 0.9; here 0.7 stalled least and scored best, benchmarks/RESULTS.md). 1: the
    exact future."""
    loss: str = "ce"
    """How the oracle teaches. regress: the actor's logits regress on minus the oracle's regret
    of each level (Huber), so they estimate the expected regret over the futures the student
    cannot tell apart and greedy play takes the level best on average; expected-regret: the
    policy's expected regret (AggreVaTe's cost-sensitive loss; saturates early); soft:
    cross-entropy against softmax(-regret / temperature) (learns the oracle's most frequent
    level, which is too bold without its foresight); ce: cross-entropy on the teacher's level
    (the only choice for robustmpc; with beam plans and a bandwidth discount, the best
    student measured)."""
    huber_delta: float = 1.0
    """Huber threshold of --loss regress, logit units (see --regret-scale). Beyond it the loss
    grows linearly and its minimiser moves from the mean regret towards the median, which
    discounts rare stalls (a bold level's regret is small on most futures and large on a few);
    large values give the mean (squared error)."""
    regret_scale: float = 1.0
    """QoE units per logit unit of --loss regress: the logits regress on -regret / scale (long
    hold plans' regrets reach thousands of QoE units on a stall)."""
    terminal_weight: float = 0.0
    """Oracle plans all, beam and hold: QoE per second of buffer left when the horizon ends
    before the video does (up to --terminal-buffer-s), so a short plan does not count on
    draining the buffer that the chunks after it need. 0: the buffer left is worth nothing."""
    terminal_buffer_s: float = 10.0
    """Buffer, seconds, beyond which --terminal-weight values no more."""
    temperature: float = 0.25
    """QoE units per e-fold of the soft labels' weight (soft loss)."""
    entropy_coef: float = 0.01
    """Entropy bonus of the expected-regret loss (keeps gradients alive on near-ties)."""
    val_every: int = 2
    """Validate every this many iterations."""

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "beta_iterations": NON_NEGATIVE,
        "learning_rate": POSITIVE,
        "buffer_size": AT_LEAST_ONE,
        "batch_size": AT_LEAST_ONE,
        "grad_steps": AT_LEAST_ONE,
        "horizon": AT_LEAST_ONE,
        "beam_width": AT_LEAST_ONE,
        "bandwidth_discount": POSITIVE,
        "huber_delta": POSITIVE,
        "regret_scale": POSITIVE,
        "terminal_weight": NON_NEGATIVE,
        "terminal_buffer_s": NON_NEGATIVE,
        "temperature": POSITIVE,
        "entropy_coef": NON_NEGATIVE,
    }


def oracle_levels(
    bank: TraceBank,
    video: Video,
    qoe: QoEMetric,
    config: SimConfig,
    trace: np.ndarray,
    tau: np.ndarray,
    buffer_s: np.ndarray,
    chunk: np.ndarray,
    last_quality: np.ndarray,
    horizon: int,
    hold: bool = False,
    terminal_weight: float = 0.0,
    terminal_buffer_s: float = 0.0,
    beam_width: int = 0,
    bandwidth_discount: float | np.ndarray = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """First level of the best plan of ``horizon`` chunks for each session, knowing its trace,
    and the best QoE reachable after each first level, shape (sessions, levels).

    ``hold``: the only plans are one level held for all ``horizon`` chunks, so a level's value
    does not assume a clairvoyant recovery after it.

    Every plan (levels^horizon) is downloaded through the real trace from the session's
    position; its QoE (bitrate, stall, switches) is summed, chunks past the video's end count
    nothing. A plan that ends before the video does gains ``terminal_weight`` per second of the
    buffer it leaves, up to ``terminal_buffer_s``. Ties go to the first plan in enumeration
    order. ``beam_width`` > 0 (with ``hold`` False): after each chunk only the best
    ``beam_width`` partial plans of each first level, by QoE so far plus their buffer's terminal
    value, are expanded further. Downloads see the trace's bandwidth times
    ``bandwidth_discount`` (one factor, or one per session: its discount times its bandwidth
    augmentation).
    """
    n, levels = len(trace), video.num_levels
    tr = trace[:, None]
    t = tau[:, None].astype(np.float64)
    b = buffer_s[:, None].astype(np.float64)
    last = last_quality[:, None].astype(np.int64)
    total = np.zeros((n, 1))
    q = np.zeros((n, 1), np.int64)
    more = (chunk + horizon < video.num_chunks)[:, None]
    discount = np.asarray(bandwidth_discount, np.float64)
    if discount.ndim:
        discount = discount[:, None]  # per session, over its plans

    def terminal(buffer: np.ndarray) -> np.ndarray | float:
        if not terminal_weight:
            return 0.0
        return np.where(more, terminal_weight * np.minimum(buffer, terminal_buffer_s), 0.0)

    for j in range(horizon):
        if j == 0 or not hold:
            tr, t, b, last, total = (np.repeat(a, levels, axis=1) for a in (tr, t, b, last, total))
            q = np.tile(np.arange(levels), (n, t.shape[1] // levels))
        k = t.shape[1]
        c = chunk + j
        valid = np.broadcast_to((c < video.num_chunks)[:, None], (n, k))
        size = video.chunk_bytes[q, np.minimum(c, video.num_chunks - 1)[:, None]] * valid
        new_t, trace_s, _ = bank.advance_bytes(
            tr.ravel(), t.ravel(), (size / discount).ravel().astype(np.float64)
        )
        delay = (trace_s + config.rtt_s).reshape(n, k)
        rebuffer, new_b, sleep = buffer_after_download(b, delay, video.chunk_s, config)
        moved = bank.advance_time(tr.ravel(), new_t, sleep.ravel()).reshape(n, k)
        total = total + np.where(valid, qoe.transition(q, last, rebuffer, c[:, None]), 0.0)
        t = np.where(valid, moved, t)
        b = np.where(valid, new_b, b)
        last = np.where(valid, q, last)
        per = k // levels
        if beam_width and not hold and per > beam_width and j < horizon - 1:
            score = (total + terminal(b)).reshape(n, levels, per)
            keep = np.argsort(-score, axis=2, kind="stable")[:, :, :beam_width]
            cols = (keep + np.arange(levels)[None, :, None] * per).reshape(n, -1)
            tr, t, b, last, total = (
                np.take_along_axis(a, cols, axis=1) for a in (tr, t, b, last, total)
            )
    total = total + terminal(b)
    per_first = total.reshape(n, levels, -1).max(axis=2)
    return np.argmax(per_first, axis=1), per_first


class Imitate(Trainer):
    algorithm = "imitate"
    args: ImitateArgs

    def __init__(self, args: ImitateArgs, data: Data, group: Group | None = None) -> None:
        if args.teacher != "oracle" and args.teacher not in rule_names():
            raise ConfigError(
                f"unknown teacher {args.teacher!r}; choose oracle or a rule algorithm: "
                f"{', '.join(rule_names())}"
            )
        if args.teacher == "oracle" and args.param:
            raise ConfigError(
                "--param: the oracle teacher has no parameters (see --horizon, --plans)"
            )
        make_teacher = (
            None  # the oracle labels by planning
            if args.teacher == "oracle"
            else rule_factory(args.teacher, data.video, args.qoe, args.param, "--teacher")
        )
        super().__init__(args, data, group)
        self.optimizer = torch.optim.Adam(self.actor.parameters(), lr=args.learning_rate)
        self.iterations = 0
        self.teachers = (
            None if make_teacher is None else RuleSessions(make_teacher, self.collector.n)
        )
        shape = (args.buffer_size, *self.collector.sim.obs.shape[1:])  # type: ignore[union-attr]
        self.buf_obs = torch.zeros(shape)
        self.buf_act = torch.zeros(args.buffer_size, dtype=torch.long)
        self.buf_regret = torch.zeros(args.buffer_size, data.video.num_levels)
        if args.loss not in LOSSES:
            raise ConfigError(f"unknown imitation loss {args.loss!r}; choose {', '.join(LOSSES)}")
        self.loss = args.loss if args.teacher == "oracle" else "ce"
        self.buf_len = 0
        self.buf_pos = 0
        if args.plans not in PLANS:
            raise ConfigError(f"unknown oracle plans {args.plans!r}; choose {', '.join(PLANS)}")
        if args.teacher == "oracle" and args.plans == "all" and args.horizon > 5:
            raise ConfigError(
                f"--plans all with --horizon {args.horizon} expands "
                f"{data.video.num_levels}^{args.horizon} plans per decision; use --horizon 5 or less"
            )
        self.branches = BatchedSimulator(
            data.train,
            data.video,
            self.collector.n * data.video.num_levels,
            self.collector.sim.config,
            mode="test",
            obs_dtype=np.float32,
            observation=self.collector.sim.observation,
        )

    def modules(self) -> dict[str, Any]:
        return {"actor": self.actor, "optimizer": self.optimizer}

    def extra_state(self) -> dict[str, Any]:
        # The teachers' histories restart on resume; their sessions restart too.
        return {"iterations": self.iterations}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.iterations = int(state["iterations"])
        self.collector.restart()
        if self.teachers is not None:
            self.teachers.reset()

    def _student_rollouts(self) -> np.ndarray:
        """QoE of each first level followed by the student's own greedy play, shape (n, levels).

        Every session is copied once per level into a noise-free branch simulator at its exact
        position; each copy downloads its first chunk at that level, then ``horizon - 1`` more as
        the student chooses, through the session's real trace (the oracle's foresight lies only
        in knowing which future each level meets).
        """
        col, sim, video = self.collector, self.collector.sim, self.data.video
        levels, horizon = video.num_levels, self.args.horizon
        br = self.branches
        assert br.obs is not None and sim.obs is not None
        for key in ("trace", "tau", "line", "buffer_s", "chunk"):
            setattr(br, key, np.repeat(getattr(sim, key), levels))
        br.obs[...] = np.repeat(sim.obs, levels, axis=0)
        scale = sim.bandwidth_scale
        br.bandwidth_scale = None if scale is None else np.repeat(scale, levels)
        last = np.repeat(col.prev_quality, levels)
        quality = np.tile(np.arange(levels), col.n)
        total = np.zeros(col.n * levels)
        for j in range(horizon):
            alive = br.chunk < video.num_chunks
            if not alive.any():
                break
            if j:
                obs = torch.as_tensor(br.obs).to(self.args.device)
                quality = self.actor(obs).argmax(-1).cpu().numpy()
            br.chunk = np.minimum(br.chunk, video.num_chunks - 1)  # finished copies: ignored
            step = br.step(quality)
            total += np.where(
                alive, col.qoe.transition(quality, last, step.rebuffer_s, step.chunk_index), 0.0
            )
            last = quality
        return total.reshape(col.n, levels)

    def _planned_bandwidth(self, idx: np.ndarray) -> float | np.ndarray:
        """The factor on the trace's bandwidth the oracle plans sessions ``idx`` with: the
        discount, times each session's augmentation factor (the bandwidth it really has)."""
        scale = self.collector.sim.bandwidth_scale
        discount = self.args.bandwidth_discount
        return discount if scale is None else discount * scale[idx]

    def beta(self) -> float:
        if not self.args.dagger:
            return 1.0
        return max(0.0, 1.0 - self.iterations / max(self.args.beta_iterations, 1))

    @torch.no_grad()
    def _collect(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, list[float]]:
        col = self.collector
        sim = col.sim
        assert sim.obs is not None
        video = self.data.video
        beta = self.beta()
        driver_teacher = col.sim.rng.random(col.n) < beta  # per session, for this rollout
        obs_list, label_list, regret_list, agree = [], [], [], []
        finished: list[float] = []
        for _ in range(col.steps):
            decide = sim.chunk > 0
            idx = np.flatnonzero(decide)
            labels = np.full(col.n, col.default, np.int64)
            regret = np.zeros((col.n, video.num_levels))
            if idx.size and self.args.teacher == "oracle" and self.args.plans == "student":
                values = self._student_rollouts()[idx]
                labels[idx] = np.argmax(values, axis=1)
                regret[idx] = values.max(axis=1, keepdims=True) - values
            elif idx.size and self.args.teacher == "oracle":
                labels[idx], values = oracle_levels(
                    sim.bank,
                    video,
                    col.qoe,
                    sim.config,
                    sim.trace[idx],
                    sim.tau[idx],
                    sim.buffer_s[idx],
                    sim.chunk[idx],
                    col.prev_quality[idx],
                    self.args.horizon,
                    self.args.plans == "hold",
                    self.args.terminal_weight,
                    self.args.terminal_buffer_s,
                    self.args.beam_width if self.args.plans == "beam" else 0,
                    self._planned_bandwidth(idx),
                )
                regret[idx] = values.max(axis=1, keepdims=True) - values
            elif idx.size:
                assert self.teachers is not None
                labels[idx] = self.teachers.select(sim, col.prev_quality, idx)
            obs = torch.as_tensor(sim.obs)
            student = self.actor(obs.to(self.args.device)).argmax(-1).cpu().numpy()
            quality = np.where(driver_teacher, labels, student)
            quality = np.where(decide, quality, col.default)
            if idx.size:
                obs_list.append(obs[idx].clone())
                label_list.append(torch.as_tensor(labels[idx]))
                regret_list.append(torch.as_tensor(regret[idx], dtype=torch.float32))
                agree.append(float((student[idx] == labels[idx]).mean()))
            step, _, ended_qoe = col.advance(quality, decide)
            finished.extend(ended_qoe)
            if self.teachers is not None:
                self.teachers.feedback(step, quality)
        return (
            torch.cat(obs_list),
            torch.cat(label_list),
            torch.cat(regret_list),
            float(np.mean(agree)),
            finished,
        )

    def _store(self, obs: torch.Tensor, labels: torch.Tensor, regret: torch.Tensor) -> None:
        size = self.args.buffer_size
        for start in range(0, len(obs), size):
            parts = (
                obs[start : start + size],
                labels[start : start + size],
                regret[start : start + size],
            )
            count = len(parts[0])
            slots = (torch.arange(count) + self.buf_pos) % size
            for buf, part in zip((self.buf_obs, self.buf_act, self.buf_regret), parts, strict=True):
                buf[slots] = part
            self.buf_pos = (self.buf_pos + count) % size
            self.buf_len = min(self.buf_len + count, size)

    def iteration(self) -> dict[str, float]:
        beta = self.beta()
        if self.args.anneal_lr:
            for group in self.optimizer.param_groups:
                group["lr"] = self.args.learning_rate * (1.0 - self.progress)
        obs, labels, regret, agreement, finished = self._collect()
        self._store(obs, labels, regret)
        losses = self.fit()
        self.iterations += 1
        out = {
            "losses/imitation_loss": float(np.mean(losses)),
            "charts/teacher_agreement": agreement,
            "charts/beta": beta,
            "charts/buffer": float(self.buf_len),
        }
        if finished:
            out["charts/train_qoe"] = float(np.mean(finished))
        return out

    def fit(self) -> list[float]:
        """``--grad-steps`` minibatch steps on the labelled buffer; their losses."""
        args = self.args
        losses = []
        for _ in range(args.grad_steps):
            # Each worker takes its share of the minibatch; their gradients are averaged.
            share = max(args.batch_size // self.group.world, 1)
            idx = torch.randint(self.buf_len, (min(share, self.buf_len),))
            logits = self.actor(self.buf_obs[idx].to(args.device))
            regret = self.buf_regret[idx].to(args.device)
            if self.loss == "regress":
                target = -regret / args.regret_scale
                loss = F.huber_loss(logits, target, delta=args.huber_delta)
            elif self.loss == "expected-regret":
                logp = torch.log_softmax(logits, dim=-1)
                entropy = -(logp.exp() * logp).sum(-1)
                loss = ((logp.exp() * regret).sum(-1) - args.entropy_coef * entropy).mean()
            elif self.loss == "soft":
                target = torch.softmax(-regret / args.temperature, -1)
                loss = -(target * torch.log_softmax(logits, dim=-1)).sum(-1).mean()
            else:
                loss = F.cross_entropy(logits, self.buf_act[idx].to(args.device))
            self.optimizer.zero_grad()
            loss.backward()
            self.average_grads(self.actor)
            self.optimizer.step()
            losses.append(loss.item())
        return losses
