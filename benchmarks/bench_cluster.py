"""The Ray executor against the local one, and what a cluster buys a study.

    sudo python benchmarks/bench_cluster.py [--traces 8] [--chunks 8] [--slots-per-node 4]
        [--per-node 32] [--session-s 219] [--out runs/bench-cluster]

Needs root (netns links) and the cluster extra. Two parts:

1. overhead: the same sessions (``--traces`` constant 6 Mbit/s traces x BBA and RobustMPC, a
   generated video of ``--chunks`` 1-s chunks, 40 ms each way) run by the local executor
   (``--parallel`` = both nodes' slots) and by ``--cluster`` on a local two-node Ray cluster
   (``ray.cluster_utils.Cluster``, ``--slots-per-node`` ``netns_slot`` each). The difference in
   wall time per session is the Ray executor's overhead (task dispatch, the per-node services,
   the files shipped back); the first cluster run also starts each node's origin and service.
2. projection: the wall time of 5 algorithms x 290 traces (Genet's FCC set) on 1, 4 and 16
   nodes, from a node's capacity in sessions within 3% of their trace (``--per-node``; the
   figure of ``bench_link.py``'s concurrency part on this machine) and the wall time of one
   192-s session (``--session-s``; ``bench_emulate.py``'s 142 sessions, 32 at a time), plus the
   measured per-session overhead. Drawn in ``benchmarks/cluster_projection.pdf``.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from streambed.abr_service.video import generate_video
from streambed.cli import main as cli_main

ALGORITHMS = 5
FCC_TRACES = 290


def _emulate(traces: Path, video: Path, out: Path, *extra: str) -> float:
    argv = ["emulate", "--traces", str(traces), "--video", str(video)]
    argv += ["--algorithms", "bba,robustmpc", "--link", "netns", "--no-progress"]
    start = time.monotonic()
    code = cli_main([*argv, "--out", str(out), *extra])
    wall = time.monotonic() - start
    summary = json.loads((out / "summary.json").read_text())
    if code != 0 or summary["sessions"]["failed"]:
        sys.exit(f"bench_cluster: {out}: {summary['sessions']}")
    return wall


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    from ray.cluster_utils import Cluster

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    video = generate_video(num_chunks=args.chunks, chunk_s=1.0, bitrates_kbps=(300, 750, 1850))
    video_json = video.save(out / "video.json")
    traces = out / "traces"
    traces.mkdir(exist_ok=True)
    for i in range(args.traces):
        (traces / f"c{i}").write_text("".join(f"{t}\t6.0\n" for t in range(120)))
    sessions = 2 * args.traces
    slots = 2 * args.slots_per_node
    local_s = _emulate(traces, video_json, out / "local", "--parallel", str(slots))
    resources = {"netns_slot": args.slots_per_node}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": resources})
    cluster.add_node(num_cpus=1, resources=resources)
    cluster.wait_for_nodes()
    try:
        ray_s = _emulate(traces, video_json, out / "ray", "--cluster", cluster.address)
        per_node = json.loads((out / "ray" / "summary.json").read_text())["cluster"]
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
    return {
        "sessions": sessions,
        "slots": slots,
        "video_s": args.chunks,
        "local_wall_s": round(local_s, 2),
        "ray_wall_s": round(ray_s, 2),
        "overhead_per_session_s": round((ray_s - local_s) / sessions, 3),
        "overhead_per_wave_s": round((ray_s - local_s) / math.ceil(sessions / slots), 3),
        "sessions_per_node": per_node["sessions_per_node"],
    }


def projection(args: argparse.Namespace, wave_overhead_s: float) -> dict[str, Any]:
    sessions = ALGORITHMS * FCC_TRACES
    rows = {}
    for nodes in (1, 4, 16):
        waves = math.ceil(sessions / (nodes * args.per_node))
        rows[str(nodes)] = round(waves * (args.session_s + max(wave_overhead_s, 0.0)) / 60, 1)
    path = Path(__file__).with_name("cluster_projection.pdf")
    _plot(rows, path, args)
    return {
        "sessions": sessions,
        "per_node": args.per_node,
        "session_s": args.session_s,
        "wall_min_by_nodes": rows,
        "figure": str(path),
    }


def _plot(rows: dict[str, float], path: Path, args: argparse.Namespace) -> None:
    import matplotlib.pyplot as plt

    from streambed.reports.style import COLUMN_IN, paper_style, save_figure

    with paper_style():
        fig, ax = plt.subplots(figsize=(COLUMN_IN, 2.2))
        nodes = [int(n) for n in rows]
        hours = [m / 60 for m in rows.values()]
        ax.bar(range(len(nodes)), hours, color="#4c72b0", width=0.6)
        ax.set_xticks(range(len(nodes)), [str(n) for n in nodes])
        for i, h in enumerate(hours):
            ax.annotate(
                f"{h:.1f} h" if h >= 1 else f"{h * 60:.0f} min",
                (i, h),
                ha="center",
                va="bottom",
                xytext=(0, 2),
                textcoords="offset points",
            )
        ax.set_xlabel("nodes (2 cores each)")
        ax.set_ylabel("wall time (h)")
        ax.set_title(
            f"{ALGORITHMS} algorithms x {FCC_TRACES} FCC traces, {args.per_node} sessions a node"
        )
        ax.set_ylim(0, max(hours) * 1.2)
        ax.grid(axis="y", alpha=0.4)
        fig.tight_layout()
        save_figure(fig, path, dpi=200)
        plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--traces", type=int, default=8, help="constant traces (x 2 algorithms)")
    parser.add_argument("--chunks", type=int, default=8, help="1-s chunks of the video")
    parser.add_argument("--slots-per-node", type=int, default=4, help="netns_slot per node")
    parser.add_argument(
        "--per-node",
        type=int,
        default=32,
        help="sessions a node keeps within 3%% (bench_link.py; default 32)",
    )
    parser.add_argument(
        "--session-s",
        type=float,
        default=219.0,
        help="wall time of one 192-s session at that load (default 219)",
    )
    parser.add_argument("--out", default="runs/bench-cluster", help="scratch directory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_cluster: needs root (the netns link)")
    load_before = os.getloadavg()[0]
    with contextlib.redirect_stdout(sys.stderr):  # the CLI's tables: stdout is the JSON
        measured = overhead(args)
    result = {
        "machine": f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": date.today().isoformat(),
        "load_before": load_before,
        "overhead": measured,
        "projection": projection(args, measured["overhead_per_wave_s"]),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
