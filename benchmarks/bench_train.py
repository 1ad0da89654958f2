"""Trainer benchmarks: throughput, and test-set QoE against wall-clock minutes.

    python benchmarks/bench_train.py throughput [--seconds 60]
    python benchmarks/bench_train.py curves runs/ppo-norway-s1 [runs/...] --png curves.png

``throughput`` runs each trainer (ppo, a3c, imitate), in one process and in two worker
processes, for a fixed wall time on norway-train and reports environment steps/s and
updates/s. ``curves`` evaluates every snapshot a run kept
(``--snapshot-minutes``) and its best.pt on norway-test in the test-mode simulator, greedy,
exactly as ``streambed eval`` does, and plots QoE against training minutes with the shared
Pensieve-PPO checkpoint as a horizontal line. The test set is read only here, never by the
trainers. Needs ``../shared`` beside the repository. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TRAIN = SHARED / "data" / "traces" / "norway-train"
TEST = SHARED / "data" / "traces" / "norway-test"
VIDEO = SHARED / "data" / "video" / "envivio"
PENSIEVE_PPO = SHARED / "models" / "pensieve-ppo-ep155400.pth"


def throughput(seconds: float) -> dict[str, Any]:
    from trainer.a3c import A3C, A3CArgs
    from trainer.common import train
    from trainer.imitate import Imitate, ImitateArgs
    from trainer.ppo import PPO, PPOArgs

    out: dict[str, Any] = {}
    for name, cls, args_cls, workers in (
        ("ppo", PPO, PPOArgs, 1),
        ("ppo-2-workers", PPO, PPOArgs, 2),
        ("a3c", A3C, A3CArgs, 1),
        ("a3c-2-workers", A3C, A3CArgs, 2),
        ("imitate", Imitate, ImitateArgs, 1),
        ("imitate-2-workers", Imitate, ImitateArgs, 2),
    ):
        with tempfile.TemporaryDirectory() as tmp:
            args = args_cls(
                traces=str(TRAIN),
                video=str(VIDEO),
                out=tmp,
                minutes=seconds / 60,
                progress=False,
                val_every=10**9,
                workers=workers,
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


def curves(runs: list[Path], png: Path | None) -> dict[str, Any]:
    from abr_service.policies import load_policy
    from abr_service.qoe import make_qoe
    from abr_service.video import load_video
    from traces import load_traceset
    from trainer.common import evaluate_actor

    video = load_video(VIDEO)
    test = load_traceset(TEST)
    qoe = make_qoe("lin", video.bitrates_kbps)
    result: dict[str, Any] = {}
    reference = (
        evaluate_actor(load_policy(PENSIEVE_PPO, 6).actor, test, video, qoe)
        if PENSIEVE_PPO.is_file()
        else None
    )
    for run in runs:
        points = []
        for snap in sorted((run / "snapshots").glob("*.pt")):
            policy = load_policy(snap, video.num_levels)
            points.append(
                (
                    float(policy.meta.get("minutes", 0.0)),
                    evaluate_actor(policy.actor, test, video, qoe),
                )
            )
        best = load_policy(run / "best.pt", video.num_levels)
        args = json.loads((run / "args.json").read_text())
        result[run.name] = {
            "algorithm": args.get("algorithm"),
            "seed": args.get("seed"),
            "curve_minutes_qoe": [[round(m, 2), round(q, 4)] for m, q in points],
            "best_pt_test_qoe": round(evaluate_actor(best.actor, test, video, qoe), 4),
            "best_pt_val_qoe": best.meta.get("val_qoe"),
            "best_pt_minutes": best.meta.get("minutes"),
        }
        print(run.name, json.dumps(result[run.name]), file=sys.stderr)
    if png is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, entry in result.items():
            pts = entry["curve_minutes_qoe"]
            if pts:
                ax.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    marker="o",
                    ms=3,
                    label=f"{name} (seed {entry['seed']})",
                )
        if reference is not None:
            ax.axhline(
                reference,
                color="k",
                ls="--",
                lw=1,
                label=f"Pensieve-PPO checkpoint ({reference:.3f})",
            )
        ax.set_xlabel("training wall-clock minutes (2-core CPU)")
        ax.set_ylabel("qoe_mean on norway-test (QoE_lin)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(png, dpi=120)
    return {"reference_pensieve_ppo": reference, "runs": result}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput", help="env steps/s and updates/s of each trainer")
    t.add_argument("--seconds", type=float, default=60.0)
    c = sub.add_parser("curves", help="test QoE of each run's snapshots")
    c.add_argument("runs", type=Path, nargs="+")
    c.add_argument("--png", type=Path)
    args = parser.parse_args()
    if not TRAIN.is_dir():
        sys.exit(f"bench_train: {TRAIN} is absent")
    torch.set_num_threads(1)
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
