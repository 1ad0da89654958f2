"""PPO and RobustMPC sharing links: one of each behind every link, over norway-test traces.

    sudo python benchmarks/bench_mixed.py [--traces ../shared/data/traces/norway-test]
        [--count 20] [--video ../shared/data/video/envivio] [--model models/ppo-norway.pt]
        [--parallel 5] [--out runs/mixed-norway] [--figure benchmarks/mixed_norway]

Runs (resumable) ``streambed emulate --mix ppo=1,robustmpc=1`` over the first ``--count``
traces (netns links, 40 ms one way), then prints a Markdown table per algorithm (QoE_lin,
bitrate, rebuffer ratio, switches, the mean share of its link's bytes) and per run (Jain's index
over the two players' mean bitrates and throughputs, the links' utilisation), and writes the
figure ``FIGURE.pdf`` and ``.png``: each link's PPO against RobustMPC mean bitrate, and the
distribution of Jain's index over the links.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def analyse(out: Path) -> dict[str, Any]:
    """Per algorithm and per link figures of a ``--mix`` run."""
    links = list(csv.DictReader((out / "links.csv").read_text().splitlines()))
    players = list(csv.DictReader((out / "per_trace.csv").read_text().splitlines()))
    by_trace: dict[str, dict[str, dict[str, str]]] = {}
    for row in players:
        stem = row["trace"].rsplit("-p", 1)[0]
        by_trace.setdefault(stem, {})[row["algorithm"]] = row
    algorithms = sorted({row["algorithm"] for row in players})
    per_algorithm: dict[str, dict[str, float]] = {}
    for name in algorithms:
        mine = [row for row in players if row["algorithm"] == name]
        shares = []
        for pair in by_trace.values():
            if len(pair) == len(algorithms):
                rates = {a: float(pair[a]["bitrate_mean_kbps"]) for a in algorithms}
                shares.append(rates[name] / sum(rates.values()))
        per_algorithm[name] = {
            "qoe_mean": float(np.mean([float(r["qoe"]) for r in mine])),
            "bitrate_mean_kbps": float(np.mean([float(r["bitrate_mean_kbps"]) for r in mine])),
            "rebuffer_ratio": float(np.mean([float(r["rebuffer_ratio"]) for r in mine])),
            "switches_per_chunk": float(np.mean([float(r["switches_per_chunk"]) for r in mine])),
            "bitrate_share": float(np.mean(shares)),
            "players": len(mine),
        }

    def column(key: str) -> list[float]:
        return [float(row[key]) for row in links if row.get(key)]

    return {
        "algorithms": per_algorithm,
        "links": {
            "count": len(links),
            "jain_bitrate_mean": float(np.mean(column("jain_bitrate"))),
            "jain_bitrate_min": float(np.min(column("jain_bitrate"))),
            "jain_throughput_mean": float(np.mean(column("jain_throughput"))),
            "utilisation_mean": float(np.mean(column("utilisation"))),
        },
        "pairs": {
            stem: {a: float(row["bitrate_mean_kbps"]) for a, row in pair.items()}
            for stem, pair in sorted(by_trace.items())
        },
        "jain_bitrate": column("jain_bitrate"),
    }


def figure(found: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from streambed.reports.style import algorithm_color, paper_style, save_figure

    with paper_style():
        fig, (left, right) = plt.subplots(1, 2, figsize=(8.0, 3.4))
        pairs = [p for p in found["pairs"].values() if {"ppo", "robustmpc"} <= set(p)]
        x = [p["robustmpc"] for p in pairs]
        y = [p["ppo"] for p in pairs]
        top = max(x + y) * 1.08
        left.plot([0, top], [0, top], color="0.6", lw=1, ls="--", label="equal share")
        left.scatter(x, y, s=22, color=algorithm_color("ppo"), zorder=3, label="one link")
        left.set_xlim(0, top)
        left.set_ylim(0, top)
        left.set_xlabel("RobustMPC mean bitrate (kbit/s)")
        left.set_ylabel("PPO mean bitrate (kbit/s)")
        left.set_title("Two players per link")
        left.legend(loc="upper left", frameon=False)
        jains = np.sort(found["jain_bitrate"])
        xs = np.concatenate([[jains[0]], jains])
        ys = np.arange(0, len(jains) + 1) / len(jains)
        right.step(xs, ys, where="post", color="0.2")
        right.axvline(0.9, color="0.6", lw=1, ls="--")
        right.set_xlim(min(0.85, float(jains[0]) - 0.02), 1.005)
        right.set_ylim(0, 1.02)
        right.set_xlabel("Jain's index over mean bitrates")
        right.set_ylabel("fraction of links")
        right.set_title(f"{len(jains)} norway-test links")
        fig.tight_layout()
        save_figure(fig, path.with_suffix(".pdf"), 300)
        save_figure(fig, path.with_suffix(".png"), 150)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--traces", type=Path, default=SHARED / "traces" / "norway-test")
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--video", type=Path, default=SHARED / "video" / "envivio")
    p.add_argument("--model", type=Path, default=ROOT / "models" / "ppo-norway.pt")
    p.add_argument("--parallel", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("runs/mixed-norway"))
    p.add_argument("--figure", type=Path, default=ROOT / "benchmarks" / "mixed_norway")
    args = p.parse_args(argv)
    subset = args.out.with_name(args.out.name + "-traces")
    if not subset.is_dir():
        subset.mkdir(parents=True)
        for path in sorted(args.traces.iterdir())[: args.count]:
            (subset / path.name).symlink_to(path.resolve())
    if not (args.out / "links.csv").is_file():
        subprocess.run(
            [
                sys.executable, "-m", "streambed", "emulate", "--traces", str(subset),
                "--video", str(args.video), "--mix", "ppo=1,robustmpc=1", "--model",
                str(args.model), "--link", "netns", "--parallel", str(args.parallel),
                "--resume", "--no-progress", "--out", str(args.out),
            ],
            check=True,
        )  # fmt: skip
    found = analyse(args.out)
    figure(found, args.figure)
    print("| algorithm | players | QoE_lin | bitrate kbps | rebuffer ratio | switches/chunk "
          "| share of the pair's bitrate |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, s in found["algorithms"].items():
        print(
            f"| {name} | {s['players']} | {s['qoe_mean']:.3f} | {s['bitrate_mean_kbps']:.0f} "
            f"| {s['rebuffer_ratio']:.4f} | {s['switches_per_chunk']:.3f} "
            f"| {s['bitrate_share']:.3f} |"
        )
    print(json.dumps(found["links"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
