"""Start-up time of the command line: ``streambed --help``, each subcommand's ``--help``, and the
imports of a ``streambed play`` process.

    python benchmarks/bench_cli.py [--repeat 3]

Each case runs ``--repeat`` times in a fresh interpreter (``python -m streambed ...``, wall
clock of the whole subprocess: interpreter start, imports, parsing, exit); prints best and
median in ms, one JSON object. ``play (imports)`` imports what a play process imports before
its session starts (``streambed.commands.play`` and ``streambed.player.session``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from streambed.cli import COMMANDS

PLAY_IMPORTS = "import streambed.cli, streambed.commands.play, streambed.player.session"


def _time(argv: list[str], repeat: int) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runs.append((time.perf_counter() - started) * 1000)
    return {"best_ms": round(min(runs), 1), "median_ms": round(statistics.median(runs), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (default 3)")
    args = parser.parse_args()
    python = [sys.executable, "-m", "streambed"]
    cases: dict[str, list[str]] = {
        "python (bare interpreter)": [sys.executable, "-c", "pass"],
        "streambed --help": [*python, "--help"],
    }
    cases.update({f"streambed {name} --help": [*python, name, "--help"] for name in COMMANDS})
    cases["play (imports)"] = [sys.executable, "-c", PLAY_IMPORTS]
    results = {name: _time(argv, args.repeat) for name, argv in cases.items()}
    print(
        json.dumps(
            {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load_1min": os.getloadavg()[0],
                "repeat": args.repeat,
                "cases": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
