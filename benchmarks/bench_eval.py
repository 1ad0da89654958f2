"""Wall time of ``streambed eval`` of the five classic algorithms over the 142 Norway test traces.

    python benchmarks/bench_eval.py --json

Runs the real CLI in a subprocess (start-up and file writing included); prints the wall time
and each algorithm's qoe_mean. Needs ``../shared/data`` beside the repository.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--algorithms", default="bba,rb,bola,fastmpc,robustmpc")
    args = parser.parse_args()
    traces = SHARED / "data" / "traces" / "norway-test"
    if not traces.is_dir():
        sys.exit(f"bench_eval: {traces} is absent")
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        subprocess.run(
            [
                str(Path(sys.executable).parent / "streambed"),
                "eval",
                "--traces",
                str(traces),
                "--video",
                str(SHARED / "data" / "video" / "envivio"),
                "--algorithms",
                args.algorithms,
                "--out",
                out,
                "--no-progress",
            ],
            check=True,
            capture_output=True,
        )
        wall = time.perf_counter() - started
        summary = json.loads((Path(out) / "summary.json").read_text())
    result = {
        "wall_s": round(wall, 2),
        "qoe_mean": {k: round(v["qoe_mean"], 4) for k, v in summary["algorithms"].items()},
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
