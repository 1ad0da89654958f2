"""The arguments every trainer takes (:class:`CommonArgs`), and their ranges (:class:`Bound`).

Each algorithm's arguments are a dataclass extending :class:`CommonArgs`, with a ``BOUNDS``
entry for each numeric argument it adds; :func:`check_args` checks them all.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, fields
from typing import ClassVar

from streambed.core.errors import ConfigError
from streambed.trainer.simulator import PENSIEVE_TIMING, TIMINGS, WALL_TIMING, SimConfig


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
    """QoE metric of the reward and the validation (lin, log, hd; ssim and vmaf need a
    --video whose description carries the measurements, as `streambed origin build` writes)."""
    sim: str = "pensieve"
    """Simulator timing of training and validation: pensieve (Pensieve's published simulator,
    so that figures stay comparable with the literature) or wall (what an emulated session
    spends: the decision's and the request's round trips move the trace; SimConfig.faithful
    with --sim-delay-ms), to train a policy in the simulator that matches the emulation."""
    sim_delay_ms: float = 40.0
    """--sim wall: the emulated link's one-way delay, milliseconds (emulate's --delay-ms)."""
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

    augment_fraction: float = 0.0
    """Bandwidth augmentation: share of the training sessions (drawn anew at each session's
    start, 0 to 1) that play their trace with its bandwidth (Mbit/s) multiplied by a factor k
    drawn from --bandwidth-scale, so a policy trained on slow traces meets fast and slower
    links too. Validation is never augmented. 0: off."""
    bandwidth_scale: str = "0.5:20"
    """LOW:HIGH, the range of the bandwidth factor k of --augment-fraction's sessions
    (dimensionless: a 1 Mbit/s trace line plays at k Mbit/s), drawn log-uniformly, e.g. 0.3:30;
    LOW = HIGH gives every augmented session that one factor."""
    jitter_fraction: float = 0.0
    """Variability augmentation: share of the training sessions (drawn anew at each session's
    start, independently of --augment-fraction) whose bandwidth is also multiplied, chunk by
    chunk, by a fresh log-normal factor of mean 1 and coefficient of variation --jitter-cv, so
    the policy meets throughput that swings from one chunk to the next. 0: off."""
    jitter_cv: float = 0.5
    """Coefficient of variation (standard deviation / mean, dimensionless) of
    --jitter-fraction's per-chunk bandwidth factor."""

    BOUNDS: ClassVar[dict[str, Bound]] = {
        "augment_fraction": UNIT,
        "jitter_fraction": UNIT,
        "jitter_cv": Bound(0, 5),
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
        "sim_delay_ms": Bound(0, 10_000),
    }
    """Valid values of the numeric arguments; subclasses add theirs (see :func:`check_args`)."""


def sim_config(args: CommonArgs) -> SimConfig:
    """The simulator constants ``--sim`` and ``--sim-delay-ms`` ask for."""
    if args.sim == PENSIEVE_TIMING:
        return SimConfig()
    if args.sim == WALL_TIMING:
        return SimConfig.faithful(args.sim_delay_ms)
    raise ConfigError(f"--sim {args.sim!r}: expected one of {', '.join(TIMINGS)}")


SCALE_LIMITS = (0.01, 1000.0)
"""The bandwidth factors --bandwidth-scale accepts (beyond them a chunk takes hours or no time)."""


def bandwidth_scale_range(args: CommonArgs) -> tuple[float, float]:
    """``--bandwidth-scale`` as (low, high), or a ConfigError naming the flag."""
    text = args.bandwidth_scale
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise ConfigError(
            f"--bandwidth-scale {text!r}: expected LOW:HIGH, two numbers such as 0.5:20"
        ) from None
    least, most = SCALE_LIMITS
    if not (least <= low <= most and least <= high <= most):
        raise ConfigError(f"--bandwidth-scale {text!r}: both ends must be in [{least:g}, {most:g}]")
    if low > high:
        raise ConfigError(f"--bandwidth-scale {text!r}: LOW must not exceed HIGH")
    return low, high


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
    sim_config(args)  # --sim names a timing
    bandwidth_scale_range(args)
