"""Shared machinery of the trainers: data, rollouts on the batched simulator, validation,
checkpoints, logging and pushing to the decision service.

The algorithm files (``ppo.py``, ``a3c.py``, ``imitate.py``) stay thin: each defines its
arguments (a dataclass extending :class:`CommonArgs`) and its update; everything else is here.

Sessions in a rollout follow the test harness: chunk 0 of every session is fetched at
``SimConfig.default_quality`` without a decision, so the policy decides chunks 1..N-1, and its
reward is the QoE of the chunk it chose. The simulator builds the observation the ``--arch``
architecture reads (its ``obs_version``), and checkpoints record that version.
"""

from __future__ import annotations

import copy
import csv
import functools
import hashlib
import io
import json
import logging
import math
import re
import shutil
import subprocess
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import torch
from torch import nn

from streambed.abr_service.architectures import Architecture, architectures
from streambed.abr_service.observation import OBS_VERSION, Observation, get_observation
from streambed.abr_service.policies import CHECKPOINT_FORMAT, load_policy
from streambed.abr_service.qoe import QoEMetric, make_qoe
from streambed.abr_service.video import Video, load_video
from streambed.core.errors import ConfigError, ModelError
from streambed.core.fileio import atomic_write_bytes
from streambed.defaults import default_traces, default_video
from streambed.traces import Trace, load_traceset
from streambed.trainer.averaging import averaged_weights, snapshot_paths
from streambed.trainer.batched import BatchedSimulator, BatchStep
from streambed.trainer.distributed import Group, run_workers
from streambed.trainer.simulator import SimConfig

log = logging.getLogger(__name__)

TRAIN_STATE_FORMAT = "streambed-train-state/1"

RUN_OUTPUTS = (
    "args.json",
    "best.pt",
    "last.pt",
    "final.pt",
    "averaged.pt",
    "metrics.csv",
    "tb",
    "snapshots",
)
"""What a run writes in its directory (``--force`` deletes these, and nothing else)."""


@dataclass(frozen=True)
class Bound:
    """The valid values of a numeric argument: ``low`` to ``high``, each end open or closed."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    unset: float | None = None
    """A default outside the range that means "not given": accepted unless given as a flag."""

    def allows(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self) -> str:
        if self.high == math.inf:
            if self.low == 0 and self.low_open:
                return "positive"
            return f"more than {self.low:g}" if self.low_open else f"{self.low:g} or more"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


POSITIVE = Bound(0, low_open=True)
NON_NEGATIVE = Bound(0)
AT_LEAST_ONE = Bound(1)
UNIT = Bound(0, 1)


@dataclass
class CommonArgs:
    """Arguments every trainer takes (``streambed train ALGO --help`` lists them)."""

    traces: str = ""
    """Training trace directory (default: the embedded generated traces)."""
    video: str = ""
    """Video description: video.json or a video_size_* directory (default: generated)."""
    val_traces: str = ""
    """Validation traces (default: a held-out split of the training traces; never the test set)."""
    val_fraction: float = 0.2
    """Share of the training traces held out for validation when --val-traces is not given
    (evenly spaced in mean throughput)."""
    val_match: str = ""
    """Regular expression on trace names: hold the validation split out of the matching training
    traces only (the same share of them), e.g. '^(?!trace_)' for the HSDPA traces of a set that
    mixes them with FCC ones, when the policy will be deployed on that network."""
    train_match: str = ""
    """Regular expression on trace names: train (and split validation) on the matching traces of
    --traces only, e.g. '^(?!trace_)' for the HSDPA traces of norway-train."""
    out: str = "runs/train"
    """Run directory: args.json, best.pt, last.pt, metrics.csv, TensorBoard events."""
    minutes: float = 0.0
    """Wall-clock budget in minutes (when not given, --steps is the budget)."""
    steps: int = 1_000_000
    """Budget in environment steps (chunk decisions) when --minutes is 0."""
    seed: int = 1
    """Seed of the simulator, the network initialisation and the sampling."""
    resume: bool = False
    """Continue the run in --out from its last.pt."""
    force: bool = False
    """Start afresh in an --out that holds a previous run, deleting that run's outputs. Without
    --force or --resume, an --out that exists and is not empty is refused."""
    num_envs: int = 256
    """Simulated sessions stepped together."""
    rollout_steps: int = 48
    """Chunks each session plays per rollout."""
    val_every: int = 10
    """Validate (test mode, greedy) every this many iterations."""
    val_starts: int = 1
    """Play each validation trace from this many evenly spaced starts (1: from its beginning
    only, the number ``streambed eval`` reports)."""
    qoe: str = "lin"
    """QoE metric of the reward and the validation (lin, log, hd)."""
    arch: str = "pensieve-ppo"
    """Policy architecture: pensieve-ppo (Pensieve-PPO's network), pensieve (the original
    Pensieve network), or a plug-in of the streambed.policies entry-point group. Its suggested
    hyperparameters fill the flags of this trainer that are not given."""
    init_from: str = ""
    """Start the actor from this checkpoint (e.g. an imitation run's best.pt)."""
    device: str = "cpu"
    """torch device for the networks (cuda works where there is one; nothing needs it)."""
    workers: int = 1
    """Processes, each with num_envs / workers of the sessions, averaging gradients (one per core:
    2 uses both cores of a 2-core machine); --resume needs the same number. CPU only."""
    threads: int = 1
    """torch CPU threads (0: torch's default). One is fastest for these small networks, and
    several oversubscribe the cores when runs share a machine."""
    push: str = ""
    """Decision service URL: each new best checkpoint is uploaded there and activated."""
    push_name: str = ""
    """Model name for --push (default: the run directory's name)."""
    push_algorithm: str = "ppo"
    """Algorithm name the pushed model serves under."""
    token_file: str = ""
    """File with the service's bearer token, for --push."""
    progress: bool = True
    """Show a progress bar."""
    snapshot_minutes: float = 0.0
    """Also keep the policy every this many wall-clock minutes in snapshots/ (for learning
    curves measured afterwards, and --average-last; 0: never)."""
    average_last: int = 0
    """At the end, also write averaged.pt: the actor whose weights are the mean of the last K
    snapshots' (needs --snapshot-minutes), validated like best.pt; its validation QoE is in its
    meta. 4 snapshots 4 minutes apart steadied 60-minute PPO runs (benchmarks/RESULTS.md). A
    finished run gains one with --resume --average-last K. 0: none."""

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "val_fraction": Bound(0, 1, low_open=True, high_open=True),
        "minutes": Bound(0, low_open=True, unset=0.0),
        "steps": AT_LEAST_ONE,
        "seed": NON_NEGATIVE,
        "num_envs": AT_LEAST_ONE,
        "rollout_steps": AT_LEAST_ONE,
        "val_every": AT_LEAST_ONE,
        "val_starts": AT_LEAST_ONE,
        "workers": AT_LEAST_ONE,
        "threads": NON_NEGATIVE,
        "snapshot_minutes": NON_NEGATIVE,
        "average_last": NON_NEGATIVE,
    }
    """Valid values of the numeric arguments; subclasses add theirs (see :func:`check_args`)."""


def check_args(args: CommonArgs, given: Collection[str] = ()) -> None:
    """Every numeric argument of ``args`` in its range (the ``BOUNDS`` of its class and their
    bases), or a ConfigError naming the flag. ``given``: the fields given on the command line,
    where a Bound's ``unset`` default is an error too (``--minutes 0``)."""
    bounds: dict[str, Bound] = {}
    for klass in reversed(type(args).__mro__):
        bounds.update(vars(klass).get("BOUNDS", {}))
    for f in fields(args):
        value = getattr(args, f.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        flag = "--" + f.name.replace("_", "-")
        if not math.isfinite(value):
            raise ConfigError(f"{flag} must be a finite number, got {value}")
        bound = bounds[f.name]  # every numeric argument has one (a test checks)
        if bound.allows(value) or (
            bound.unset is not None and value == bound.unset and f.name not in given
        ):
            continue
        raise ConfigError(f"{flag} must be {bound.describe()}, got {value}")


def args_from_dict(cls: type, values: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown argument(s) for {cls.__name__}: {', '.join(unknown)}")
    return cls(**values)


# ------------------------------------------------------------------------------------------
# Data


@dataclass
class Data:
    train: list[Trace]
    val: list[Trace]
    video: Video


def _matching(traces: list[Trace], regex: str, flag: str, source: str) -> list[Trace]:
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise ConfigError(f"{flag} {regex!r} is not a regex: {exc}") from None
    kept = [t for t in traces if pattern.search(t.name)]
    if not kept:
        raise ConfigError(f"{flag} {regex!r} matches no trace in {source}")
    return kept


def load_data(args: CommonArgs) -> Data:
    traces = load_traceset(args.traces) if args.traces else default_traces()
    source = args.traces or "the embedded traces"
    if args.train_match:
        traces = _matching(traces, args.train_match, "--train-match", source)
    video = load_video(args.video) if args.video else default_video()
    if args.val_traces:
        if args.val_match:
            raise ConfigError(
                "--val-match chooses from the training traces; drop it or --val-traces"
            )
        val = load_traceset(args.val_traces)
        train = traces
    else:
        # A fixed split (independent of the seed, so runs are comparable), stratified by mean
        # throughput: evenly spaced through the sorted traces, so the held-out share spans the
        # training set's range instead of landing, by chance, on its hardest traces.
        candidates = traces
        if args.val_match:
            candidates = _matching(traces, args.val_match, "--val-match", source)
        order = sorted(candidates, key=lambda t: (t.mean_mbps, t.name))
        count = max(1, round(len(order) * args.val_fraction))
        stride = len(order) / count
        held = {id(order[int(stride * (k + 0.5))]) for k in range(count)}
        val = [t for t in traces if id(t) in held]
        train = [t for t in traces if id(t) not in held]
    if not train:
        raise ConfigError("no training traces left after the validation split")
    return Data(train, val, video)


# ------------------------------------------------------------------------------------------
# Rollouts


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
            SimConfig(),
            mode="train",
            rng=rng,
            obs_dtype=np.float32,
            observation=arch_observation(args.arch),
        )
        self.qoe = make_qoe(args.qoe, data.video.bitrates_kbps)
        self.n = num_envs
        self.steps = args.rollout_steps
        self.default = SimConfig().default_quality
        self.prev_quality = np.full(self.n, self.default, np.int64)
        self.session_qoe = np.zeros(self.n)
        self.session_chunks = np.zeros(self.n, np.int64)
        self.device = torch.device(args.device)
        self.env_steps = 0

    def state(self) -> dict[str, Any]:
        """Everything resuming needs, as tensors and strings (``weights_only`` loads them)."""

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.array(a, copy=True))

        sim = self.sim
        return {
            "rng": json.dumps(sim.rng.bit_generator.state),
            "sim": {k: t(getattr(sim, k)) for k in ("trace", "tau", "line", "buffer_s", "chunk")},
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
        trace, line = arrays["trace"], arrays["line"]
        inside = (trace >= 0) & (trace < len(sim.bank)) & (line >= 0) & (line < len(sim.bank.time))
        if not inside.all():
            raise ValueError("its sessions play traces this run does not have")
        sim.rng.bit_generator.state = json.loads(state["rng"])
        for key, array in arrays.items():
            setattr(sim, key, array)
        if obs is not None and sim.obs is not None:
            sim.obs[...] = obs
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
        step = self.sim.step(quality)
        reward = self.qoe.transition(quality, self.prev_quality, step.rebuffer_s)
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
            self.sim.reset(done)
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


# ------------------------------------------------------------------------------------------
# Validation: the same numbers as ``streambed eval``


@torch.no_grad()
def evaluate_actor(
    actor: nn.Module,
    traces: list[Trace],
    video: Video,
    qoe: QoEMetric,
    device: str = "cpu",
    starts: int = 1,
    observation: Observation | None = None,
) -> float:
    """Greedy test-mode ``qoe_mean`` over ``traces`` (no noise), the actor reading
    ``observation`` (default: Pensieve's).

    ``starts`` = 1 plays each trace from its beginning, exactly as ``streambed eval``; more
    also plays it from ``starts - 1`` further evenly spaced lines, a steadier estimate from
    the same traces.
    """
    n = len(traces) * starts
    sim = BatchedSimulator(
        traces, video, n, SimConfig(), mode="test", obs_dtype=np.float64, observation=observation
    )
    trace_idx = np.repeat(np.arange(len(traces)), starts)
    lengths = sim.bank.stop[trace_idx] - sim.bank.start[trace_idx]
    offset = np.tile(np.arange(starts), len(traces))
    sim.reset(trace=trace_idx, start_line=(offset * (lengths - 1)) // starts)
    assert sim.obs is not None
    default = SimConfig().default_quality
    quality = np.full(n, default, np.int64)
    prev = quality.copy()
    total = np.zeros(n)
    sim.step(quality)
    for _ in range(video.num_chunks - 1):
        obs = torch.as_tensor(sim.obs, dtype=torch.float32, device=torch.device(device))
        quality = actor(obs).argmax(-1).cpu().numpy()
        step = sim.step(quality)
        total += qoe.transition(quality, prev, step.rebuffer_s)
        prev = quality
    return float(np.mean(total / (video.num_chunks - 1)))


# ------------------------------------------------------------------------------------------
# Networks and checkpoints


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


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def policy_checkpoint(
    actor: nn.Module, args: CommonArgs, algorithm: str, num_levels: int, meta: dict[str, Any]
) -> dict[str, Any]:
    """A self-describing checkpoint the service and ``streambed eval`` load."""
    state = {k: v.detach().cpu().clone() for k, v in actor.state_dict().items()}
    return {
        "format": CHECKPOINT_FORMAT,
        "arch": args.arch,
        "num_levels": num_levels,
        "obs_version": arch_observation(args.arch).version,
        "actor": state,
        "meta": {
            "algorithm": algorithm,
            "args": json.dumps(asdict(args)),
            "git_commit": git_commit(),
            "weights_sha256": weights_sha256(state),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **meta,
        },
    }


def atomic_save(obj: Any, path: Path) -> bytes:
    """torch.save, written atomically: readers never see half a checkpoint."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    atomic_write_bytes(path, data)
    return data


def _reason(exc: BaseException) -> str:
    """``exc`` as a short phrase on one line (torch's messages span lines, or are empty)."""
    if isinstance(exc, KeyError):
        return f"it has no {exc.args[0]!r} entry"
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else text or type(exc).__name__


def load_train_state(path: Path, algorithm: str | None = None) -> dict[str, Any]:
    """The training state in ``path`` (a ModelError naming the file if it is not one)."""
    if not path.is_file():
        raise ModelError(f"{path}: no such file: the run saved no state to resume from yet")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: cannot resume from it: the file is empty")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # untrusted or damaged file: truncated, not a checkpoint
        detail = f"KeyError: {exc}" if isinstance(exc, KeyError) else _reason(exc)
        raise ModelError(
            f"{path}: cannot resume from it: not a readable checkpoint, truncated or another "
            f"kind of file ({detail})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != TRAIN_STATE_FORMAT:
        raise ModelError(f"{path}: not a Streambed training state ({TRAIN_STATE_FORMAT})")
    if algorithm is not None and state.get("algorithm") != algorithm:
        raise ModelError(
            f"{path}: the state of a {state.get('algorithm')} run, not {algorithm}; "
            f"resume it with streambed train {state.get('algorithm')}"
        )
    return state


def restore_train_state(trainer: Trainer, path: Path) -> tuple[int, float, float]:
    """Load ``path`` into ``trainer`` (this worker's share); returns the iteration, elapsed
    seconds and best validation QoE it was saved at. A state that does not fit (missing
    entries, other shapes, another --num-envs) is a ModelError naming the file."""
    group = trainer.group
    state = load_train_state(path, trainer.algorithm)
    try:
        collectors = state.get("collectors") or [state["collector"]]
        if len(collectors) != group.world:
            raise ConfigError(
                f"{path} was written by {len(collectors)} worker(s); "
                f"resume it with --workers {len(collectors)}"
            )
        for key, module in trainer.modules().items():
            module.load_state_dict(state["modules"][key])
        trainer.collector.load_state(collectors[group.rank])
        trainer.load_extra_state(state["extra"])
        torch.set_rng_state((state.get("torch_rngs") or [state["torch_rng"]])[group.rank])
        return int(state["iteration"]), float(state["elapsed_s"]), float(state["best_val"])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise ModelError(f"{path}: cannot resume from it: {_reason(exc)}") from None


# ------------------------------------------------------------------------------------------
# Logging: TensorBoard scalars, the same in metrics.csv


class RunLog:
    """metrics.csv and TensorBoard events. ``resumed_at`` (the env steps and elapsed seconds of
    the last.pt a run resumes from) drops what was logged after that state was saved: the
    resumed run logs those iterations again."""

    def __init__(self, out: Path, resumed_at: tuple[int, float] | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.csv_path = out / "metrics.csv"
        if resumed_at is None:
            self.csv_path.unlink(missing_ok=True)
            self.writer = SummaryWriter(str(out / "tb"))
        else:
            steps, elapsed = resumed_at
            self._truncate_csv(float(f"{elapsed:.3f}"))
            # TensorBoard hides the earlier files' events from this step on.
            self.writer = SummaryWriter(str(out / "tb"), purge_step=steps + 1)

    def _truncate_csv(self, until_s: float) -> None:
        """Keep the header and the rows logged up to ``until_s`` (their wall_s column)."""
        if not self.csv_path.is_file():
            return
        lines = self.csv_path.read_text().splitlines(keepends=True)
        keep = len(lines)
        for i, row in enumerate(csv.reader(lines)):
            try:
                later = i > 0 and float(row[1]) > until_s
            except (IndexError, ValueError):
                later = False  # a damaged row stays where it is
            if later:
                keep = i
                break
        if keep < len(lines):
            atomic_write_bytes(self.csv_path, "".join(lines[:keep]).encode())
            log.info("metrics.csv: dropped %d row(s) logged after last.pt", len(lines) - keep)

    def scalars(self, step: int, wall_s: float, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        new = not self.csv_path.exists()
        with open(self.csv_path, "a", newline="") as fh:
            writer = csv.writer(fh)
            for key, value in values.items():
                if new:
                    writer.writerow(["env_steps", "wall_s", "name", "value"])
                    new = False
                writer.writerow([step, f"{wall_s:.3f}", key, f"{value:.6g}"])

    def close(self) -> None:
        self.writer.close()


# ------------------------------------------------------------------------------------------
# Pushing to the decision service


def push_checkpoint(
    args: CommonArgs, path: Path, attempts: int = 3, transport: httpx.BaseTransport | None = None
) -> bool:
    """Upload ``path`` and activate it; retried, reported, never raised."""
    name = args.push_name or Path(args.out).name
    try:
        token = Path(args.token_file).read_text().strip() if args.token_file else ""
    except OSError as exc:
        log.error("push: cannot read token file %s: %s", args.token_file, exc.strerror)
        return False
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{args.push.rstrip('/')}/models/{name}"
    for attempt in range(1, attempts + 1):
        try:
            with httpx.Client(timeout=30, transport=transport) as client:
                r = client.put(
                    url,
                    content=path.read_bytes(),
                    headers=headers,
                    params={"activate": "true", "algorithm": args.push_algorithm},
                )
            if r.status_code in (200, 201):
                info = r.json()
                log.info(
                    "pushed %s to %s as %s@v%s", path.name, args.push, name, info.get("version")
                )
                return True
            log.warning(
                "push attempt %d/%d: HTTP %d %s", attempt, attempts, r.status_code, r.text[:200]
            )
            if r.status_code in (401, 403, 413, 422):
                break  # retrying will not help
        except httpx.HTTPError as exc:
            log.warning("push attempt %d/%d: %s", attempt, attempts, exc)
        time.sleep(0.5 * attempt)
    log.error("push of %s to %s failed; training goes on", path.name, args.push)
    return False


# ------------------------------------------------------------------------------------------
# The loop every trainer runs


class Trainer:
    """One algorithm: ``iteration()`` does one collect-and-update; the loop does the rest."""

    algorithm = "base"

    def __init__(self, args: CommonArgs, data: Data, group: Group | None = None) -> None:
        check_args(args)
        self.args = args
        self.data = data
        self.group = group or Group()
        rank, world = self.group.rank, self.group.world
        if world > 1 and args.device != "cpu":
            raise ConfigError("--workers above 1 is for CPU training; use one worker on a GPU")
        if args.num_envs < world:
            raise ConfigError(f"--num-envs {args.num_envs} is fewer than --workers {world}")
        self.rng = np.random.default_rng(args.seed if rank == 0 else [args.seed, rank])
        torch.manual_seed(args.seed)  # the same initial networks on every worker
        if args.threads:
            torch.set_num_threads(args.threads)
        self.actor, self.critic = make_networks(args, data.video.num_levels)
        if rank:
            torch.manual_seed(args.seed * 1000 + rank)  # but their own action samples
        share = args.num_envs // world + (rank < args.num_envs % world)
        self.collector = Collector(data, args, self.rng, share)
        self.qoe = self.collector.qoe
        self.progress = 0.0
        """Share of the budget spent before this iteration (the loop sets it)."""

    def validate(self, actor: nn.Module | None = None) -> float:
        """Greedy test-mode QoE of ``actor`` (default: the trainer's) on the validation traces."""
        return evaluate_actor(
            self.actor if actor is None else actor,
            self.data.val,
            self.data.video,
            self.qoe,
            self.args.device,
            self.args.val_starts,
            self.collector.sim.observation,
        )

    def average_grads(self, *modules: nn.Module) -> None:
        """Average the gradients across worker processes (a no-op with one)."""
        self.group.average_grads([p for m in modules for p in m.parameters()])

    def iteration(self) -> dict[str, float]:
        raise NotImplementedError

    def modules(self) -> dict[str, Any]:
        """Everything with a state_dict that resuming must restore."""
        return {"actor": self.actor, "critic": self.critic}

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass


def write_averaged(trainer: Trainer, out: Path, meta: dict[str, Any]) -> float | None:
    """Write ``out/averaged.pt`` (the mean of the last ``--average-last`` snapshots), validated;
    returns its validation QoE, or None when the run kept no snapshot."""
    args = trainer.args
    snaps = snapshot_paths(out)[-args.average_last :]
    if not snaps:
        log.warning("--average-last: %s holds no snapshot; no averaged.pt", out / "snapshots")
        return None
    if len(snaps) < args.average_last:
        log.warning(
            "--average-last %d: only %d snapshot(s) to average", args.average_last, len(snaps)
        )
    actor = copy.deepcopy(trainer.actor)
    actor.load_state_dict(averaged_weights(snaps, trainer.data.video.num_levels))
    val = trainer.validate(actor)
    meta = {**meta, "val_qoe": val, "averaged_from": [s.name for s in snaps]}
    num_levels = trainer.data.video.num_levels
    atomic_save(
        policy_checkpoint(actor, args, trainer.algorithm, num_levels, meta), out / "averaged.pt"
    )
    log.info(
        "averaged the weights of %s: validation qoe %.4f -> %s",
        ", ".join(s.name for s in snaps),
        val,
        out / "averaged.pt",
    )
    return val


def check_out(args: CommonArgs) -> None:
    """Refuse an ``--out`` that holds a previous run (or anything) unless ``--resume`` continues
    it or ``--force`` replaces it: a new run must never silently overwrite an old best.pt."""
    out = Path(args.out)
    if args.resume and args.force:
        raise ConfigError("--resume continues the run in --out and --force replaces it: give one")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a directory")
    if args.resume or args.force or not out.is_dir() or not any(out.iterdir()):
        return
    found = [name for name in RUN_OUTPUTS if (out / name).exists()]
    what = f"holds a previous run ({', '.join(found)})" if found else "exists and is not empty"
    raise ConfigError(
        f"--out {out} {what}: give --resume to continue it, --force to replace it, or another --out"
    )


def clear_run(out: Path) -> None:
    """Delete a previous run's outputs in ``out`` (:data:`RUN_OUTPUTS` only: ``--out`` may be a
    directory that holds other things too)."""
    removed = []
    for name in RUN_OUTPUTS:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(name)
    if removed:
        log.info("--force: removed the previous run's %s in %s", ", ".join(removed), out)


def train(cls: type[Trainer], args: CommonArgs) -> dict[str, Any]:
    """Load the data, build ``cls`` and run it to its budget, in ``args.workers`` processes."""
    check_args(args)
    check_out(args)  # before any worker starts
    if args.workers > 1:
        load_data(args)  # a bad trace or video fails here, before any worker starts
    return run_workers(args.workers, functools.partial(_train_worker, cls, args))


def _train_worker(cls: type[Trainer], args: CommonArgs, group: Group) -> dict[str, Any]:
    return train_loop(cls(args, load_data(args), group))


def _progress(args: CommonArgs, env_steps: int, elapsed_s: float) -> float:
    """Share of the budget spent, 0 to 1 (rank 0's clock with --minutes)."""
    if args.minutes > 0:
        return min(elapsed_s / (args.minutes * 60), 1.0)
    return min(env_steps / max(args.steps, 1), 1.0)


def _budget_done(args: CommonArgs, env_steps: int, elapsed_s: float) -> bool:
    if args.minutes > 0:
        return elapsed_s >= args.minutes * 60
    return env_steps >= args.steps


def _postfix(steps_per_s: float, last_val: float, best: float) -> str:
    """The progress bar's figures: throughput, and validation QoEs once there are any."""
    parts = [f"{steps_per_s:,.0f} steps/s"]
    if math.isfinite(last_val):
        parts.append(f"val_qoe={last_val:.3f}")
    if math.isfinite(best):
        parts.append(f"best={best:.3f}")
    return ", ".join(parts)


def train_loop(trainer: Trainer) -> dict[str, Any]:
    """Run ``trainer`` to its budget; returns a summary (best validation QoE, paths, steps).

    With worker processes every worker runs this loop in step; only rank 0 validates, writes
    and logs (see :mod:`streambed.trainer.distributed`).
    """
    from tqdm import tqdm

    args = trainer.args
    group = trainer.group
    main = group.is_main
    out = Path(args.out)
    if args.average_last and args.snapshot_minutes <= 0:
        raise ConfigError("--average-last averages snapshots: give --snapshot-minutes too")
    if main:
        check_out(args)
    iteration, elapsed, best = 0, 0.0, -float("inf")
    if args.resume:
        iteration, elapsed, best = restore_train_state(trainer, out / "last.pt")
    env_steps = int(group.sum(trainer.collector.env_steps))
    if args.resume:
        log.info("resumed %s at iteration %d (%d env steps)", out, iteration, env_steps)
    elif main:  # check_out refused a previous run here unless --force replaces it
        clear_run(out)
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "args.json").write_text(
            json.dumps({"algorithm": trainer.algorithm, **asdict(args)}, indent=2) + "\n"
        )
    runlog = RunLog(out, (env_steps, elapsed) if args.resume else None) if main else None
    num_levels = trainer.data.video.num_levels
    # Whole seconds with --minutes, steps otherwise; the throughput is in the postfix.
    by_time = args.minutes > 0
    unit = "s" if by_time else "steps"
    bar = tqdm(
        total=max(round(args.minutes * 60), 1) if by_time else args.steps,
        desc=f"{trainer.algorithm} {out.name}",
        disable=not (args.progress and main),
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} "
        + unit
        + " [{elapsed}<{remaining}{postfix}]",
        dynamic_ncols=True,
    )

    def show(steps_per_s: float) -> None:
        if steps_per_s >= 0:
            bar.set_postfix_str(_postfix(steps_per_s, last_val, best), refresh=False)
        bar.update(min(int(elapsed) if by_time else env_steps, bar.total) - bar.n)

    last_val = float("nan")
    show(-1)
    next_snapshot = (
        (int(elapsed / 60 / args.snapshot_minutes) + 1) * args.snapshot_minutes
        if args.snapshot_minutes > 0
        else float("inf")
    )

    def policy(meta: dict[str, Any]) -> dict[str, Any]:
        return policy_checkpoint(trainer.actor, args, trainer.algorithm, num_levels, meta)

    def save_last() -> None:  # collective: every worker's sessions go into last.pt
        collectors = group.gather(trainer.collector.state())
        rngs = group.gather(torch.get_rng_state())
        if not main:
            return
        atomic_save(
            {
                "format": TRAIN_STATE_FORMAT,
                "algorithm": trainer.algorithm,
                "modules": {k: m.state_dict() for k, m in trainer.modules().items()},
                "collectors": collectors,
                "extra": trainer.extra_state(),
                "torch_rngs": rngs,
                "iteration": iteration,
                "elapsed_s": elapsed,
                "best_val": best,
                "policy": policy({"iteration": iteration}),
            },
            out / "last.pt",
        )

    ran = False
    try:
        while not group.agree(_budget_done(args, env_steps, elapsed)):
            ran = True
            started = time.perf_counter()
            steps_before = env_steps
            trainer.progress = group.shared(_progress(args, env_steps, elapsed))
            metrics = trainer.iteration()
            env_steps = int(group.sum(trainer.collector.env_steps))
            iteration += 1
            spent = time.perf_counter() - started
            elapsed += spent
            metrics["charts/steps_per_s"] = (env_steps - steps_before) / max(spent, 1e-9)
            metrics["charts/iteration"] = iteration
            finished = group.agree(_budget_done(args, env_steps, elapsed))
            if iteration % args.val_every == 0 or finished:
                if main:
                    last_val = trainer.validate()
                    metrics["charts/val_qoe"] = last_val
                    if last_val > best:
                        best = last_val
                        meta = {"val_qoe": best, "iteration": iteration, "env_steps": env_steps}
                        meta.update(minutes=elapsed / 60, seed=args.seed)
                        atomic_save(policy(meta), out / "best.pt")
                        log.debug("new best %.4f at iteration %d", best, iteration)
                        if args.push:
                            push_checkpoint(args, out / "best.pt")
                save_last()
            if main and elapsed / 60 >= next_snapshot:
                meta = {"iteration": iteration, "minutes": elapsed / 60, "env_steps": env_steps}
                atomic_save(policy(meta), out / "snapshots" / f"min{next_snapshot:07.2f}.pt")
                next_snapshot += args.snapshot_minutes
            if runlog is not None:
                runlog.scalars(env_steps, elapsed, metrics)
            show(metrics["charts/steps_per_s"])
    except KeyboardInterrupt:
        if group.world == 1:
            log.warning("interrupted: saving %s", out / "last.pt")
            save_last()
        else:  # the other workers are being interrupted too: no collective call is safe
            log.warning("interrupted: %s holds the state of the last validation", out / "last.pt")
        raise
    finally:
        bar.close()
        if runlog is not None:
            runlog.close()
    averaged = None
    if main:
        meta = {"val_qoe": last_val, "iteration": iteration, "env_steps": env_steps}
        meta.update(minutes=elapsed / 60, seed=args.seed)
        if ran or not (out / "final.pt").is_file():  # a finished run resumed keeps its own
            atomic_save(policy(meta), out / "final.pt")
        if args.average_last:
            averaged = write_averaged(trainer, out, meta)
        log.info(
            "%s: %d iterations, %d env steps, %.1f min; best validation qoe %.4f -> %s",
            trainer.algorithm,
            iteration,
            env_steps,
            elapsed / 60,
            best,
            out / "best.pt",
        )
    return {
        "best_val_qoe": best,
        "iterations": iteration,
        "env_steps": env_steps,
        "minutes": elapsed / 60,
        "best": str(out / "best.pt"),
        "final": str(out / "final.pt"),
        "last": str(out / "last.pt"),
        **(
            {"averaged": str(out / "averaged.pt"), "averaged_val_qoe": averaged} if averaged else {}
        ),
    }
