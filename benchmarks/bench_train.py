"""Trainer benchmarks: throughput, and test-set QoE against wall-clock minutes.

    python benchmarks/bench_train.py throughput [--seconds 60]
    python benchmarks/bench_train.py curves runs/ppo-norway-s1 [runs/...] --png curves.png
    python benchmarks/bench_train.py recipe --version v2 --seeds 1 2 3 4 5 --parallel 2 --out runs/recipe
    python benchmarks/bench_train.py recipe --version v3 --stage both --seeds 6 7 8 9 10 --parallel 2 --out runs/r23v3
    python benchmarks/bench_train.py recipe --stage both --seeds 12 13 14 15 16 --parallel 2 --out runs/r23v4

``recipe`` is issue 23's fixed headline recipe (:data:`RECIPE`): imitation of the oracle for
18 minutes with snapshots every 2 and the last four averaged, then the one of ``best.pt`` and
``averaged.pt`` with the higher validation QoE is the run's model (``chosen.pt``). Only
norway-train is read; ``curves`` measures the runs on norway-test afterwards. ``recipe --stage
ppo`` is its second stage (:data:`RECIPE_PPO`, fixed before any of its test evaluations): PPO for
28 minutes from each seed's ``chosen.pt``, into ``s<seed>-ppo``, 46 minutes of training in all;
its model is ``averaged.pt`` (:data:`PPO_OUTPUT`). Those are recipe v2; ``--version v3``
(:data:`RECIPES`) augments both stages' bandwidth and takes each stage's ``averaged.pt``; v4 (the
default) adds per-chunk jitter and PPO's anchor to the student, in 36 minutes; ``--stage both``
runs the two stages of every seed, first stages first.

``throughput`` runs each trainer (ppo, a3c, imitate, dqn; dqn also while it collects
RobustMPC's demonstrations), in one process and in two worker processes, for a fixed wall time
on norway-train and reports environment steps/s and updates/s. ``curves`` evaluates every
snapshot a run kept (``--snapshot-minutes``) and its best.pt, final.pt and averaged.pt on
norway-test in the test-mode simulator, greedy, exactly as ``streambed eval`` does, and plots
QoE against training minutes (averaged.pt as a star at the run's end) with the shared
Pensieve-PPO checkpoint as a horizontal line. The test set is read only here, never by the
trainers. Needs ``../shared`` beside the repository. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TRAIN = SHARED / "data" / "traces" / "norway-train"
TEST = SHARED / "data" / "traces" / "norway-test"
VIDEO = SHARED / "data" / "video" / "envivio"
PENSIEVE_PPO = SHARED / "models" / "pensieve-ppo-ep155400.pth"


def throughput(seconds: float) -> dict[str, Any]:
    from streambed.trainer.a3c import A3C, A3CArgs
    from streambed.trainer.dqn import DQN, DQNArgs
    from streambed.trainer.imitate import Imitate, ImitateArgs
    from streambed.trainer.loop import train
    from streambed.trainer.ppo import PPO, PPOArgs

    # Demonstrating throughout: RobustMPC, a scalar call per decision, is the cost measured.
    demos: dict[str, Any] = {"demo_teacher": "robustmpc", "demo_transitions": 1_000_000}
    out: dict[str, Any] = {}
    none: dict[str, Any] = {}
    runs: tuple[tuple[str, Any, Any, int, dict[str, Any]], ...] = (
        ("ppo", PPO, PPOArgs, 1, none),
        ("ppo-2-workers", PPO, PPOArgs, 2, none),
        ("a3c", A3C, A3CArgs, 1, none),
        ("a3c-2-workers", A3C, A3CArgs, 2, none),
        ("imitate", Imitate, ImitateArgs, 1, none),
        ("imitate-2-workers", Imitate, ImitateArgs, 2, none),
        ("dqn", DQN, DQNArgs, 1, none),
        ("dqn-2-workers", DQN, DQNArgs, 2, none),
        ("dqn-demonstrating", DQN, DQNArgs, 1, demos),
    )
    for name, cls, args_cls, workers, extra in runs:
        with tempfile.TemporaryDirectory() as tmp:
            args = args_cls(
                traces=str(TRAIN),
                video=str(VIDEO),
                out=tmp,
                minutes=seconds / 60,
                progress=False,
                val_every=10**9,
                workers=workers,
                **extra,
            )
            summary = train(cls, args)
        minutes = summary["minutes"]
        out[name] = {
            "env_steps_per_s": round(summary["env_steps"] / (minutes * 60), 1),
            "updates_per_s": round(summary["iterations"] / (minutes * 60), 3),
            "num_envs": args.num_envs,
            "rollout_steps": args.rollout_steps,
            "workers": workers,
        }
        print(name, json.dumps(out[name]), file=sys.stderr)
    return out


def headline(
    seeds: list[int],
    teacher: str,
    imitate_minutes: float,
    ppo_minutes: float,
    out: Path,
    workers: int,
    snapshot_minutes: float,
    average_last: int,
    extra: list[str],
) -> None:
    """The headline recipe, one seed at a time: imitation, then PPO from its best.pt.

    Runs ``streambed train`` as a user would; ``curves`` then reads the PPO runs, whose
    snapshots' minutes count the imitation's minutes too (``init_minutes`` in their args).
    """
    for seed in seeds:
        common = [
            "--traces", str(TRAIN), "--video", str(VIDEO), "--seed", str(seed),
            "--workers", str(workers), "--no-progress", *extra,
        ]  # fmt: skip
        imitation = out / f"imitate-s{seed}"
        ppo = out / f"ppo-s{seed}"
        for cmd in (
            ["imitate", "--teacher", teacher, "--out", str(imitation),
             "--minutes", str(imitate_minutes), *common],
            ["ppo", "--init-from", str(imitation / "best.pt"), "--out", str(ppo),
             "--minutes", str(ppo_minutes), "--snapshot-minutes", str(snapshot_minutes),
             "--average-last", str(average_last), *common],
        ):  # fmt: skip
            print("+ streambed train", " ".join(cmd), file=sys.stderr, flush=True)
            subprocess.run([sys.executable, "-m", "streambed", "train", *cmd], check=True)


RECIPE = [
    "imitate", "--teacher", "oracle", "--minutes", "18", "--snapshot-minutes", "2",
    "--average-last", "4", "--val-match", "^(?!trace_)", "--val-starts", "3",
]  # fmt: skip
"""Issue 23's headline recipe, fixed before any of its test evaluations: the trainer's
defaults for the oracle (beam search over 15 chunks, bandwidth x 0.7, cross-entropy), 18
minutes of wall-clock training, validation on 14 held-out HSDPA traces of norway-train."""


RECIPE_PPO = [
    "ppo", "--minutes", "28", "--snapshot-minutes", "4", "--average-last", "4",
    "--val-match", "^(?!trace_)", "--val-starts", "3",
]  # fmt: skip
"""The recipe's second stage: PPO (the pensieve-ppo network, the student's own) from the first
stage's ``chosen.pt``, as "PPO warm-started from the oracle student" in RESULTS.md."""

PPO_OUTPUT = "averaged"
"""Recipe v2's rule for the second stage's model: its ``averaged.pt``, with no comparison of
validation scores. v1 (commit 8e5f69d) compared ``best.pt`` with ``averaged.pt`` by validation
QoE, and ``best.pt``, the maximum of many noisy validations, won with the first stage's own
inflated score, so v1 returned the warm start unchanged (RESULTS.md, issue 23). Fixed after
seed 1's second stage had been measured on norway-test, before seeds 2-5's."""

AUGMENT = ["--augment-fraction", "0.3", "--bandwidth-scale", "0.5:20"]
"""Recipe v3's bandwidth augmentation, in both stages: 30% of the training sessions replay their
trace with bandwidth x k, k log-uniform in [0.5, 20] (RESULTS.md, "First measurement of
bandwidth augmentation")."""


@dataclass(frozen=True)
class Recipe:
    """One fixed version of issue 23's recipe: each stage's flags and the rule for its model."""

    imitate: list[str]
    """``streambed train`` flags of the first stage (imitation of the oracle)."""
    ppo: list[str]
    """Flags of the second stage, PPO from the first stage's ``chosen.pt``."""
    imitate_output: str | None
    """The first stage's model: ``best`` or ``averaged``; None: the one with the higher
    validation QoE."""
    ppo_output: str | None
    """The second stage's model, as ``imitate_output``."""


JITTER = ["--jitter-fraction", "0.3", "--jitter-cv", "0.5"]
"""Recipe v4's variability augmentation, in both stages: 30% of the training sessions (drawn
apart from AUGMENT's) see their bandwidth times a fresh log-normal factor of mean 1 and
coefficient of variation 0.5 at every chunk, against v3's loss on the ``variable`` stress set."""

ANCHOR = ["--anchor-coef", "0.2"]
"""Recipe v4's anchor: stage 2's PPO pays 0.2 x KL(stage-1 student || policy), against v3's
PPO stage undoing the student's lead on the ``onoff`` stress set."""

RECIPES = {
    "v2": Recipe(RECIPE, RECIPE_PPO, None, PPO_OUTPUT),
    "v3": Recipe([*RECIPE, *AUGMENT], [*RECIPE_PPO, *AUGMENT], "averaged", "averaged"),
    "v4": Recipe(
        [*RECIPE[:3], "--minutes", "14", *RECIPE[5:], *AUGMENT, *JITTER],
        [
            "ppo",
            "--minutes",
            "22",
            "--snapshot-minutes",
            "3",
            *RECIPE_PPO[5:],
            *AUGMENT,
            *JITTER,
            *ANCHOR,
        ],
        "averaged",
        "averaged",
    ),  # fmt: skip
}
"""v2: RECIPE, RECIPE_PPO and PPO_OUTPUT (RESULTS.md, "Issue 23: five seeds"). v3, fixed
before any of its runs: both stages augmented (AUGMENT), and no model is a maximum over noisy
validations: each stage's model is its ``averaged.pt`` (the last four snapshots' weights, scored
once on validation), and the second stage starts from the first's ``averaged.pt``. Across
seeds, the one to ship is still the seed whose second-stage model has the highest validation
QoE. v4, fixed before any of its runs: v3 plus JITTER in both stages and ANCHOR in the second,
in 36 minutes (14 of imitation, 22 of PPO with snapshots every 3) so five seeds run in 95."""


def recipe(
    seeds: list[int],
    out: Path,
    parallel: int,
    stage: str = "imitate",
    wait_for: Path | None = None,
    version: str = "v4",
) -> dict[str, Any]:
    """Run recipe ``version``'s first stage (``stage`` imitate), its second (ppo) or both, for
    each seed, ``parallel`` runs at a time, and choose each run's model by the recipe's rule;
    returns (and writes to ``out/recipe.json``) the wall time and choice. With ``both`` the
    first stages go first and each seed's second stage is queued when its first ends.
    ``wait_for``: start once that file exists (a first stage still running)."""
    while wait_for is not None and not wait_for.is_file():
        time.sleep(5.0)
    import shutil

    from streambed.abr_service.policies import load_policy

    spec = RECIPES[version]
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    first = [] if stage == "ppo" else list(seeds)
    second = list(seeds) if stage == "ppo" else []
    running: dict[str, tuple[subprocess.Popen[bytes], float, int, str]] = {}
    while first or second or running:
        while (first or second) and len(running) < parallel:
            if first:
                seed, this = first.pop(0), "imitate"
                key, stage_cmd = f"s{seed}", spec.imitate
            else:
                seed, this = second.pop(0), "ppo"
                key = f"s{seed}-ppo"
                stage_cmd = [*spec.ppo, "--init-from", str(out / f"s{seed}" / "chosen.pt")]
            cmd = [*stage_cmd, "--traces", str(TRAIN), "--video", str(VIDEO), "--seed", str(seed),
                   "--out", str(out / key), "--no-progress"]  # fmt: skip
            print("+ streambed train", " ".join(cmd), file=sys.stderr, flush=True)
            proc = subprocess.Popen([sys.executable, "-m", "streambed", "train", *cmd])
            running[key] = (proc, time.monotonic(), seed, this)
        time.sleep(1.0)
        for key, (proc, started, seed, this) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[key]
            if proc.returncode != 0:
                sys.exit(f"bench_train recipe: {key} failed ({proc.returncode})")
            run = out / key
            vals = {
                name: float(load_policy(run / f"{name}.pt", 6).meta.get("val_qoe", -1e9))
                for name in ("best", "averaged")
                if (run / f"{name}.pt").is_file()
            }
            rule = spec.ppo_output if this == "ppo" else spec.imitate_output
            chosen = rule if rule in vals else max(vals, key=lambda name: vals[name])
            shutil.copyfile(run / f"{chosen}.pt", run / "chosen.pt")
            result[key] = {
                "recipe": version,
                "wall_minutes": round((time.monotonic() - started) / 60, 2),
                "val_qoe": vals,
                "chosen": chosen,
            }
            print(key, json.dumps(result[key]), file=sys.stderr, flush=True)
            if this == "imitate" and stage == "both":
                second.append(seed)
            previous = (
                json.loads((out / "recipe.json").read_text())
                if (out / "recipe.json").is_file()
                else {}
            )
            previous.update(result)
            (out / "recipe.json").write_text(json.dumps(previous, indent=2) + "\n")
    return result


def curves(runs: list[Path], png: Path | None) -> dict[str, Any]:
    from streambed.abr_service.policies import load_policy
    from streambed.abr_service.qoe import make_qoe
    from streambed.abr_service.video import load_video
    from streambed.traces import load_traceset
    from streambed.trainer.validation import evaluate_actor

    video = load_video(VIDEO)
    test = load_traceset(TEST)
    qoe = make_qoe("lin", video)
    result: dict[str, Any] = {}
    reference = (
        evaluate_actor(load_policy(PENSIEVE_PPO, 6).actor, test, video, qoe)
        if PENSIEVE_PPO.is_file()
        else None
    )
    for run in runs:
        points = []
        args = json.loads((run / "args.json").read_text())
        # A warm-started run's clock starts when its teacher run's did.
        offset = _run_minutes(Path(args["init_from"]).parent) if args.get("init_from") else 0.0
        for snap in sorted((run / "snapshots").glob("*.pt")):
            policy = load_policy(snap, video.num_levels)
            points.append(
                (
                    offset + float(policy.meta.get("minutes", 0.0)),
                    evaluate_actor(policy.actor, test, video, qoe),
                )
            )
        best = load_policy(run / "best.pt", video.num_levels)
        label = run.name if run.parent == Path("runs") else f"{run.parent.name}/{run.name}"
        result[label] = {
            "algorithm": args.get("algorithm"),
            "seed": args.get("seed"),
            "curve_minutes_qoe": [[round(m, 2), round(q, 4)] for m, q in points],
            "best_pt_test_qoe": round(evaluate_actor(best.actor, test, video, qoe), 4),
            "best_pt_val_qoe": best.meta.get("val_qoe"),
            "best_pt_minutes": offset + float(best.meta.get("minutes", 0.0)),
            "warm_start_minutes": offset,
            "end_minutes": round(offset + _run_minutes(run), 2),
        }
        for name in ("final", "averaged", "chosen"):  # averaged.pt: --average-last
            if (run / f"{name}.pt").is_file():
                policy = load_policy(run / f"{name}.pt", video.num_levels)
                result[label][f"{name}_pt_test_qoe"] = round(
                    evaluate_actor(policy.actor, test, video, qoe), 4
                )
                result[label][f"{name}_pt_val_qoe"] = policy.meta.get("val_qoe")
        print(label, json.dumps(result[label]), file=sys.stderr)
    if png is not None:
        plot_curves(result, reference, png)
    return {"reference_pensieve_ppo": reference, "runs": result}


def plot_curves(result: dict[str, Any], reference: float | None, png: Path) -> None:
    """Plot ``curves``' runs (test QoE against training minutes, averaged.pt as a star) with the
    Pensieve-PPO checkpoint's line; PNG and the PDF next to it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from streambed.reports.style import COLUMN_IN, paper_style, save_figure

    with paper_style():
        fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.6))
        seeds = [entry["seed"] for entry in result.values()]
        by_seed = len(set(seeds)) < len(seeds)  # a seed's stages: one colour, one label
        colors: dict[Any, str] = {}
        for name, entry in result.items():
            pts = entry["curve_minutes_qoe"]
            seed = entry["seed"]
            if by_seed:
                label = None if seed in colors else f"seed {seed}"
            else:
                label = f"{name} (seed {seed})"
            color = colors.setdefault(seed, f"C{len(colors) % 10}")
            if pts:
                (line,) = ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    marker="o",
                    ms=3,
                    color=color if by_seed else None,
                    label=label,
                )
                if "averaged_pt_test_qoe" in entry:  # drawn at the end of the run
                    ax.plot(
                        entry["end_minutes"],
                        entry["averaged_pt_test_qoe"],
                        marker="*",
                        ms=11,
                        color=line.get_color(),
                        ls="none",
                    )
        if reference is not None:
            ax.axhline(
                reference,
                color="k",
                ls="--",
                lw=1,
                label=f"Pensieve-PPO checkpoint ({reference:.3f})",
            )
        if any("averaged_pt_test_qoe" in e for e in result.values()):
            ax.plot([], [], marker="*", ms=11, color="grey", ls="none", label="averaged.pt")
        ax.set_xlabel("training wall-clock minutes (2-core CPU)")
        ax.set_ylabel("QoE (lin, per chunk), norway-test mean")
        ax.grid(alpha=0.3)
        if (
            len(set(seeds) if by_seed else seeds) > 3
        ):  # many runs: the legend below the axes, off the curves
            fig.set_size_inches(COLUMN_IN, 3.6)
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize="small")
        else:
            ax.legend()
        fig.tight_layout()
        save_figure(fig, Path(png), dpi=200)  # and the PDF next to it
        plt.close(fig)


def _run_minutes(run: Path) -> float:
    """Wall minutes a finished run trained (from its last.pt)."""
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    return float(state["elapsed_s"]) / 60


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput", help="env steps/s and updates/s of each trainer")
    t.add_argument("--seconds", type=float, default=60.0)
    h = sub.add_parser("headline", help="imitation then PPO, for each seed")
    h.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    h.add_argument("--teacher", default="robustmpc")
    h.add_argument("--imitate-minutes", type=float, default=2.0)
    h.add_argument("--ppo-minutes", type=float, default=28.0)
    h.add_argument("--workers", type=int, default=1)
    h.add_argument("--out", type=Path, default=Path("runs/headline"))
    h.add_argument("--snapshot-minutes", type=float, default=2.0)
    h.add_argument("--average-last", type=int, default=0, help="PPO's --average-last")
    h.add_argument(
        "extra",
        nargs=argparse.REMAINDER,
        help="after --: more `streambed train` flags for both stages (e.g. --val-match RE)",
    )
    r = sub.add_parser("recipe", help="issue 23's fixed recipe for each seed")
    r.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    r.add_argument("--parallel", type=int, default=1, help="runs at a time (one core each)")
    r.add_argument("--out", type=Path, default=Path("runs/recipe"))
    r.add_argument("--stage", choices=("imitate", "ppo", "both"), default="imitate")
    r.add_argument("--version", choices=sorted(RECIPES), default="v4", help="recipe version")
    r.add_argument("--wait-for", type=Path, help="start once this file exists")
    c = sub.add_parser("curves", help="test QoE of each run's snapshots")
    c.add_argument("runs", type=Path, nargs="+", help="run folders (or reports, --from-json)")
    c.add_argument("--png", type=Path)
    c.add_argument(
        "--from-json",
        action="store_true",
        help="RUNS are reports an earlier `curves` printed: merge and plot them, evaluating nothing",
    )
    args = parser.parse_args()
    if not TRAIN.is_dir():
        sys.exit(f"bench_train: {TRAIN} is absent")
    torch.set_num_threads(1)
    if args.what == "headline":
        headline(
            args.seeds,
            args.teacher,
            args.imitate_minutes,
            args.ppo_minutes,
            args.out,
            args.workers,
            args.snapshot_minutes,
            args.average_last,
            [a for a in args.extra if a != "--"],
        )
        return
    if args.what == "recipe":
        print(
            json.dumps(
                recipe(
                    args.seeds, args.out, args.parallel, args.stage, args.wait_for, args.version
                ),
                indent=2,
            )
        )
        return
    if args.what == "curves" and args.from_json:
        reports = [json.loads(path.read_text()) for path in args.runs]
        merged = {k: v for rep in reports for k, v in rep["runs"].items()}
        if args.png is None:
            sys.exit("bench_train curves --from-json: give --png")
        plot_curves(merged, reports[0].get("reference_pensieve_ppo"), args.png)
        return
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
    }
    report.update(
        throughput(args.seconds) if args.what == "throughput" else curves(args.runs, args.png)
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
