"""The loop every trainer runs: collect and update (the algorithm's :class:`Trainer`), validate,
keep the best policy, save the state to resume from, log, push; to a budget of steps or minutes,
in one or several worker processes.

The algorithm files (``ppo.py``, ``a3c.py``, ``imitate.py``, ``dqn.py``) each define their
arguments (a dataclass extending :class:`streambed.trainer.args.CommonArgs`) and a
:class:`Trainer` whose ``iteration()`` is their update; :func:`train` runs it.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from streambed.abr_service.checkpoint import read_train_state, save_checkpoint, train_state
from streambed.core.errors import ConfigError, ModelError
from streambed.trainer.args import CommonArgs, check_args
from streambed.trainer.averaging import averaged_weights, snapshot_paths
from streambed.trainer.checkpoints import policy_checkpoint, tensor_bytes, train_state_limit
from streambed.trainer.data import Data, load_data
from streambed.trainer.distributed import Group, launched, run_workers
from streambed.trainer.networks import make_networks
from streambed.trainer.push import push_checkpoint
from streambed.trainer.rollout import Collector
from streambed.trainer.runlog import RunLog
from streambed.trainer.validation import evaluate_actor

log = logging.getLogger(__name__)

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
            self.collector.sim.config,
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

    def extra_state_bytes(self) -> int:
        """The most tensor data :meth:`extra_state` may hold (it bounds reading last.pt back):
        by default what it holds now; an algorithm whose state grows (a replay buffer) says
        how far."""
        return tensor_bytes(self.extra_state())


def train(cls: type[Trainer], args: CommonArgs) -> dict[str, Any]:
    """Load the data, build ``cls`` and run it to its budget, in ``args.workers`` processes."""
    check_args(args)
    started = launched()
    if started is not None:  # torchrun's processes: the launcher sets the number
        rank, world = started
        if args.workers not in (1, world):
            raise ConfigError(
                f"--workers {args.workers} under torchrun, which started {world} processes: "
                "leave --workers out (torchrun's --nnodes x --nproc-per-node sets it)"
            )
        args = replace(args, workers=world)
        if rank == 0:
            check_out(args)
    else:
        check_out(args)  # before any worker starts
        if args.workers > 1:
            load_data(args)  # a bad trace or video fails here, before any worker starts
    return run_workers(args.workers, functools.partial(_train_worker, cls, args))


def _train_worker(cls: type[Trainer], args: CommonArgs, group: Group) -> dict[str, Any]:
    return train_loop(cls(args, load_data(args), group))


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
            bar.set_postfix_str(progress_postfix(steps_per_s, last_val, best), refresh=False)
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
        state = train_state(
            algorithm=trainer.algorithm,
            modules=trainer.modules(),
            collectors=collectors,
            extra=trainer.extra_state(),
            torch_rngs=rngs,
            iteration=iteration,
            elapsed_s=elapsed,
            best_val=best,
            policy=policy({"iteration": iteration}),
        )
        save_checkpoint(state, out / "last.pt")

    ran = False
    try:
        while not group.agree(budget_done(args, env_steps, elapsed)):
            ran = True
            started = time.perf_counter()
            steps_before = env_steps
            trainer.progress = group.shared(budget_spent(args, env_steps, elapsed))
            metrics = trainer.iteration()
            env_steps = int(group.sum(trainer.collector.env_steps))
            iteration += 1
            spent = time.perf_counter() - started
            elapsed += spent
            metrics["charts/steps_per_s"] = (env_steps - steps_before) / max(spent, 1e-9)
            metrics["charts/iteration"] = iteration
            finished = group.agree(budget_done(args, env_steps, elapsed))
            if iteration % args.val_every == 0 or finished:
                if main:
                    last_val = trainer.validate()
                    metrics["charts/val_qoe"] = last_val
                    if last_val > best:
                        best = last_val
                        meta = {"val_qoe": best, "iteration": iteration, "env_steps": env_steps}
                        meta.update(minutes=elapsed / 60, seed=args.seed)
                        save_checkpoint(policy(meta), out / "best.pt")
                        log.debug("new best %.4f at iteration %d", best, iteration)
                        if args.push:
                            push_checkpoint(args, out / "best.pt")
                save_last()
            if main and elapsed / 60 >= next_snapshot:
                meta = {"iteration": iteration, "minutes": elapsed / 60, "env_steps": env_steps}
                save_checkpoint(policy(meta), out / "snapshots" / f"min{next_snapshot:07.2f}.pt")
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
            save_checkpoint(policy(meta), out / "final.pt")
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


# ------------------------------------------------------------------------------------------
# The loop's parts


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


def restore_train_state(trainer: Trainer, path: Path) -> tuple[int, float, float]:
    """Load ``path`` into ``trainer`` (this worker's share); returns the iteration, elapsed
    seconds and best validation QoE it was saved at. A state that does not fit (missing
    entries, other shapes, another --num-envs) is a ModelError naming the file."""
    group = trainer.group
    shares: list[dict[str, Any]] | None = None
    if group.is_main:  # rank 0 alone reads the file: the others may be on other machines
        limit = train_state_limit(
            trainer.modules(), trainer.collector.state(), group.world, trainer.extra_state_bytes()
        )
        shares = _worker_shares(read_train_state(path, limit, trainer.algorithm), group.world, path)
    state = group.scatter(shares)
    try:
        for key, module in trainer.modules().items():
            module.load_state_dict(state["modules"][key])
        trainer.collector.load_state(state["collector"])
        trainer.load_extra_state(state["extra"])
        torch.set_rng_state(state["torch_rng"])
        return int(state["iteration"]), float(state["elapsed_s"]), float(state["best_val"])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise ModelError(f"{path}: cannot resume from it: {_reason(exc)}") from None


def _worker_shares(state: dict[str, Any], world: int, path: Path) -> list[dict[str, Any]]:
    """``state`` split into what each of ``world`` workers restores (its own sessions and
    random stream, the shared networks)."""
    try:
        collectors = state.get("collectors") or [state["collector"]]
        rngs = state.get("torch_rngs") or [state["torch_rng"]]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{path}: cannot resume from it: {_reason(exc)}") from None
    if len(collectors) != world or len(rngs) != world:
        raise ConfigError(
            f"{path} was written by {len(collectors)} worker(s); "
            f"resume it with --workers {len(collectors)}"
        )
    common = {k: v for k, v in state.items() if k not in ("collectors", "torch_rngs")}
    return [
        {**common, "collector": c, "torch_rng": r} for c, r in zip(collectors, rngs, strict=True)
    ]


def _reason(exc: BaseException) -> str:
    """``exc`` as a short phrase on one line (torch's messages span lines, or are empty)."""
    if isinstance(exc, KeyError):
        return f"it has no {exc.args[0]!r} entry"
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else text or type(exc).__name__


def budget_spent(args: CommonArgs, env_steps: int, elapsed_s: float) -> float:
    """Share of the budget spent, 0 to 1 (rank 0's clock with --minutes)."""
    if args.minutes > 0:
        return min(elapsed_s / (args.minutes * 60), 1.0)
    return min(env_steps / max(args.steps, 1), 1.0)


def budget_done(args: CommonArgs, env_steps: int, elapsed_s: float) -> bool:
    if args.minutes > 0:
        return elapsed_s >= args.minutes * 60
    return env_steps >= args.steps


def progress_postfix(steps_per_s: float, last_val: float, best: float) -> str:
    """The progress bar's figures: throughput, and validation QoEs once there are any."""
    parts = [f"{steps_per_s:,.0f} steps/s"]
    if math.isfinite(last_val):
        parts.append(f"val_qoe={last_val:.3f}")
    if math.isfinite(best):
        parts.append(f"best={best:.3f}")
    return ", ".join(parts)


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
    save_checkpoint(
        policy_checkpoint(actor, args, trainer.algorithm, num_levels, meta), out / "averaged.pt"
    )
    log.info(
        "averaged the weights of %s: validation qoe %.4f -> %s",
        ", ".join(s.name for s in snaps),
        val,
        out / "averaged.pt",
    )
    return val
