"""Fairness of identical players sharing one link: 2, 4 and 8 players of BBA and of RobustMPC
behind one constant 6 Mbit/s netns link with 40 ms one-way delay.

    sudo python benchmarks/bench_fairness.py [--video ../shared/data/video/envivio]
        [--players 2,4,8] [--algorithms bba,robustmpc] [--max-chunks 48] [--mbps 6]
        [--out runs/bench-fairness] [--resume]

Needs root (the netns link). For each player count, one ``streambed emulate
--clients-per-link N`` run (one link per algorithm, the links one after the other so that the
machine's load does not differ between them). Prints one JSON object: per algorithm and player
count, Jain's index over the players' mean bitrates and over their throughputs, the link's
utilisation, the players' mean bitrates, and the wall time. The acceptance of issue 22 asks for
a Jain index over mean bitrates >= 0.9.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import time
from datetime import date
from pathlib import Path
from typing import Any

from streambed.emulation.orchestrate import EmulateConfig, emulate

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def constant_trace(directory: Path, mbps: float, seconds: int = 600) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"const{mbps:g}").write_text("".join(f"{t}\t{mbps}\n" for t in range(seconds)))
    return directory


def player_bitrates(out: Path) -> dict[str, list[float]]:
    """Per algorithm, the players' mean bitrates (kbit/s) from per_trace.csv."""
    found: dict[str, list[float]] = {}
    for row in csv.DictReader((out / "per_trace.csv").read_text().splitlines()):
        found.setdefault(row["algorithm"], []).append(round(float(row["bitrate_mean_kbps"]), 1))
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--video", type=Path, default=SHARED / "video" / "envivio")
    p.add_argument("--players", default="2,4,8")
    p.add_argument("--algorithms", default="bba,robustmpc")
    p.add_argument("--max-chunks", type=int, default=48)
    p.add_argument("--mbps", type=float, default=6.0)
    p.add_argument("--delay-ms", type=float, default=40.0)
    p.add_argument("--out", type=Path, default=Path("runs/bench-fairness"))
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    traces = constant_trace(args.out / "traces", args.mbps)
    algorithms = tuple(a.strip() for a in args.algorithms.split(","))
    results: dict[str, Any] = {}
    for n in (int(x) for x in args.players.split(",")):
        out = args.out / f"n{n}"
        started = time.monotonic()
        result = emulate(
            EmulateConfig(
                traces=traces,
                algorithms=algorithms,
                out=out,
                video=args.video,
                link="netns",
                delay_ms=args.delay_ms,
                max_chunks=args.max_chunks,
                clients_per_link=n,
                resume=args.resume,
                progress=False,
            )
        )
        wall = time.monotonic() - started
        rows = list(csv.DictReader((out / "links.csv").read_text().splitlines()))
        bitrates = player_bitrates(out)
        for row in rows:
            algorithm = row["algorithms"]

            def num(key: str, row: dict[str, str] = row) -> float | None:
                return round(float(row[key]), 4) if row[key] else None

            results.setdefault(algorithm, {})[str(n)] = {
                "jain_bitrate": num("jain_bitrate"),
                "jain_throughput": num("jain_throughput"),
                "utilisation": num("utilisation"),
                "players_done": int(row["players_done"]),
                "bitrates_kbps": bitrates.get(algorithm, []),
                "queue_max_bytes": int(row["queue_max_bytes"] or 0),
            }
        results.setdefault("wall_s", {})[str(n)] = round(wall, 1)
        results.setdefault("failed", {})[str(n)] = len(result.failed)
    print(
        json.dumps(
            {
                "date": date.today().isoformat(),
                "machine": f"{platform.node()} ({os.cpu_count()} CPUs)",
                "link": f"constant {args.mbps:g} Mbit/s, {args.delay_ms:g} ms one way, netns",
                "video": str(args.video),
                "max_chunks": args.max_chunks,
                "results": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
