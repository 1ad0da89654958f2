"""QoE from what the viewer sees: RobustMPC planning on SSIM against RobustMPC planning on
bitrate, and a PPO trained on Puffer's SSIM QoE against both, all scored with ``--qoe ssim``.

    python benchmarks/bench_ssim.py [--out runs/ssim] [--content DIR] [--traces DIR]
        [--test ../shared/data/traces/norway-test] [--train ../shared/data/traces/norway-train]
        [--train-minutes 30] [--model CKPT] [--emulate-traces 12] [--parallel 4] [--link netns]

Every step runs the ``streambed`` CLI as a user would and is skipped when its output exists,
so an interrupted run continues where it stopped:

1. ``OUT/content``: ``streambed origin build`` (ffmpeg's test pattern, 192 s at Pensieve's 6
   bitrates; SSIM measured per segment) unless ``--content`` is given;
2. ``OUT/train``: 2 minutes of ``train imitate --teacher robustmpc --qoe ssim`` (the teacher
   plans on SSIM), then ``train ppo --qoe ssim --reward-scale 0.02`` from that student for the
   rest of ``--train-minutes``, on ``--train`` with the content's video (skipped with ``--model``);
   the policy is the PPO run's ``best.pt`` (chosen by its validation split alone);
3. ``OUT/sim-<set>-<variant>``: ``streambed eval --qoe ssim`` on the demo traces (``--traces``,
   generated when absent) and on ``--test``: ``lin`` = BBA and RobustMPC planning on bitrate,
   ``ssim`` = RobustMPC with ``qoe=ssim``, ``ppo`` = the SSIM-trained PPO;
4. ``OUT/emu-<variant>``: the same three, emulated (``streambed emulate --qoe ssim``) over the
   first ``--emulate-traces`` demo traces;
5. prints and writes ``OUT/ssim.json`` and ``OUT/ssim.md``: SSIM QoE, mean SSIM dB, bitrate,
   rebuffer ratio and switches per variant, simulated and emulated.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
VARIANTS = {
    "lin": (["bba", "robustmpc"], []),
    "ssim": (["robustmpc"], ["--param", "robustmpc.qoe=ssim"]),
    "ppo": (["ppo"], []),
}


def streambed(*args: str) -> None:
    print("+ streambed", " ".join(args), file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "streambed", *args], check=True)


def train(out: Path, video: Path, traces: Path, minutes: float) -> Path:
    imitation, ppo = out / "imitate", out / "ppo"
    common = ["--traces", str(traces), "--video", str(video), "--qoe", "ssim", "--no-progress"]
    if not (imitation / "best.pt").is_file():
        streambed(
            "train", "imitate", "--teacher", "robustmpc", "--minutes", "2",
            "--out", str(imitation), "--force", *common,
        )  # fmt: skip
    if not (ppo / "final.pt").is_file():
        resume = ["--resume"] if (ppo / "last.pt").is_file() else ["--force"]
        streambed(
            "train", "ppo", "--init-from", str(imitation / "best.pt"),
            "--minutes", str(minutes - 2), "--reward-scale", "0.02",
            "--out", str(ppo), *resume, *common,
        )  # fmt: skip
    return ppo / "best.pt"


def summary(run: Path, video: Path) -> dict[str, dict[str, float]]:
    """Per algorithm: the summary's figures and the mean SSIM (dB) of the chunks played."""
    from streambed.abr_service.qoe import qoe_window
    from streambed.abr_service.video import load_video
    from streambed.reports.load import load_report_dir

    described = load_video(video)
    table = described.quality_table("ssim_db")
    found = load_report_dir(run)
    out: dict[str, dict[str, float]] = {}
    for name, s in found.summary["algorithms"].items():
        ssim = []
        for m in found.metrics:
            if m.algorithm == name:
                records = qoe_window(found.records(name, m.trace))
                ssim += [float(table[r.quality, r.chunk_index]) for r in records]
        out[name] = {
            "qoe_ssim": s["qoe_mean"],
            "ssim_db_mean": sum(ssim) / max(len(ssim), 1),
            "bitrate_kbps": s["bitrate_mean_kbps"],
            "rebuffer_ratio": s["rebuffer_ratio"],
            "switches_per_chunk": s["switches_per_chunk"],
            "sessions": s["traces"],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/ssim"))
    p.add_argument("--content", type=Path, help="measured content (default: OUT/content)")
    p.add_argument("--traces", type=Path, help="demo traces (default: OUT/demo-traces, 20 made)")
    p.add_argument("--test", type=Path, default=SHARED / "traces" / "norway-test")
    p.add_argument("--train", type=Path, default=SHARED / "traces" / "norway-train")
    p.add_argument("--train-minutes", type=float, default=30.0)
    p.add_argument("--model", type=Path, help="an SSIM-trained checkpoint (skips training)")
    p.add_argument("--emulate-traces", type=int, default=12)
    p.add_argument("--parallel", type=int, default=4)
    p.add_argument("--link", default="netns")
    p.add_argument("--skip-emulation", action="store_true")
    args = p.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    content = args.content or out / "content"
    if not (content / "video.json").is_file():
        streambed("origin", "build", "--out", str(content), "--no-progress")
    video = content / "video.json"
    demo = args.traces or out / "demo-traces"
    if not demo.is_dir():
        streambed("traces", "generate", "--out", str(demo), "--count", "20", "--seed", "0")
    model = args.model or train(out / "train", video, args.train, args.train_minutes)
    results: dict[str, Any] = {"content": str(content), "model": str(model), "sim": {}, "emu": {}}
    for set_name, traces in (("demo", demo), ("norway-test", args.test)):
        for variant, (algorithms, extra) in VARIANTS.items():
            run = out / f"sim-{set_name}-{variant}"
            if not (run / "summary.json").is_file():
                streambed(
                    "eval", "--traces", str(traces), "--video", str(video), "--qoe", "ssim",
                    "--algorithms", ",".join(algorithms), "--model", str(model),
                    "--out", str(run), *extra,
                )  # fmt: skip
            results["sim"][f"{set_name}/{variant}"] = summary(run, video)
    if not args.skip_emulation:
        subset = out / "emu-traces"
        if not subset.is_dir():
            subset.mkdir()
            for path in sorted(demo.iterdir())[: args.emulate_traces]:
                (subset / path.name).write_bytes(path.read_bytes())
        for variant, (algorithms, extra) in VARIANTS.items():
            run = out / f"emu-{variant}"
            if not (run / "summary.json").is_file() or (run / "failed.json").stat().st_size > 2:
                streambed(
                    "emulate", "--traces", str(subset), "--content", str(content),
                    "--qoe", "ssim", "--algorithms", ",".join(algorithms),
                    "--model", str(model), "--link", args.link, "--parallel",
                    str(args.parallel), "--resume", "--no-progress", "--out", str(run), *extra,
                )  # fmt: skip
            results["emu"][variant] = summary(run, video)
    (out / "ssim.json").write_text(json.dumps(results, indent=1))
    lines = [
        "| where | variant | algorithm | SSIM QoE | SSIM dB | bitrate kbps | rebuffer | switches |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for where in ("sim", "emu"):
        for key, algos in results[where].items():
            for name, s in algos.items():
                lines.append(
                    f"| {where} | {key} | {name} | {s['qoe_ssim']:.3f} | {s['ssim_db_mean']:.2f} "
                    f"| {s['bitrate_kbps']:.0f} | {s['rebuffer_ratio']:.4f} "
                    f"| {s['switches_per_chunk']:.3f} |"
                )
    (out / "ssim.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
