"""Emulation at scale: a whole trace set of real-time sessions behind netns links, its wall time,
how far the links and the decisions held up under the load, and simulation against emulation
before and after ``streambed calibrate``.

    sudo python benchmarks/bench_emulate.py [--traces ../shared/data/traces/norway-test]
        [--video ../shared/data/video/envivio] [--algorithms robustmpc] [--parallel 32]
        [--delay-ms 40] [--out runs/bench-emulate] [--resume]

Needs root (the netns link). Runs ``streambed emulate`` (size-exact content built from
``--video``), then the comparison with the simulator (default constants) and the calibration
with both objectives. With ``--resume`` an interrupted or finished run in ``--out`` is
continued (sessions done are not played again; the wall time then covers only this call).

Prints one JSON object: the machine, date, sessions done/failed/retried, wall time, the
emulated QoE per algorithm, decisions that fell back to the player's local rule, the
simulator's QoE on the same traces, the mean absolute per-trace QoE gap before and after each
calibration, and the fitted constants.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from datetime import date
from pathlib import Path
from typing import Any

from streambed.emulation.calibrate import calibrate
from streambed.emulation.orchestrate import EmulateConfig, emulate
from streambed.reports.sessionlog import read_jsonl
from streambed.trainer.replay import sim_vs_emu

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def session_health(out: Path) -> dict[str, Any]:
    """Decisions taken by the player's fallback, and download retries, over all sessions."""
    chunks = fallbacks = retried = 0
    reasons: dict[str, int] = {}
    for path in out.glob("sessions/*/*/chunks.jsonl"):
        for r in read_jsonl(path):
            chunks += 1
            retried += r.attempts > 1
            if r.fallback:
                fallbacks += 1
                key = (r.fallback_reason or "?").split(":")[0]
                reasons[key] = reasons.get(key, 0) + 1
    return {
        "chunks": chunks,
        "fallbacks": fallbacks,
        "fallback_reasons": reasons,
        "retried": retried,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=Path, default=SHARED / "traces" / "norway-test")
    parser.add_argument("--video", type=Path, default=SHARED / "video" / "envivio")
    parser.add_argument("--algorithms", default="robustmpc")
    parser.add_argument("--model", type=Path, help="checkpoint for --algorithms ppo")
    parser.add_argument("--parallel", type=int, default=32)
    parser.add_argument("--delay-ms", type=float, default=40.0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-emulate"))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    started = time.monotonic()
    result = emulate(
        EmulateConfig(
            traces=args.traces,
            algorithms=tuple(args.algorithms.split(",")),
            out=args.out,
            video=args.video,
            model=args.model,
            link="netns",
            delay_ms=args.delay_ms,
            parallel=args.parallel,
            resume=args.resume,
            progress=not args.no_progress,
        )
    )
    wall_s = time.monotonic() - started
    figures: dict[str, Any] = {
        "machine": f"{platform.node()} ({os.cpu_count()} cores)",
        "date": date.today().isoformat(),
        "traces": str(args.traces),
        "parallel": args.parallel,
        "delay_ms": args.delay_ms,
        "sessions": {
            "planned": result.planned,
            "done": len(result.done),
            "failed": len(result.failed),
            "skipped_as_done": result.skipped,
        },
        "wall_s": round(wall_s, 1),
        "emulated": {
            name: {k: s[k] for k in ("qoe_mean", "bitrate_mean_kbps", "rebuffer_ratio")}
            for name, s in result.summary.get("algorithms", {}).items()
        },
        "health": session_health(args.out),
    }
    if result.done and not result.interrupted:
        unaligned = sim_vs_emu(args.out, args.out / "fidelity", model=args.model)["overall"]
        figures["sim_from_trace_start"] = {
            k: unaligned[k]
            for k in ("sim_qoe_mean", "emu_qoe_mean", "qoe_gap_mean_abs", "qoe_gap_mean")
        }
        for objective in ("download", "qoe"):
            found = calibrate(
                args.out,
                args.out / f"calibration-{objective}",
                model=args.model,
                objective=objective,
                progress=not args.no_progress,
            )
            figures[f"calibrate_{objective}"] = {
                "rtt_s": round(found.fitted.rtt_s, 4),
                "payload_factor": round(found.fitted.payload_factor, 4),
                "qoe_gap_mean_abs_default": found.qoe_gap_default,
                "qoe_gap_mean_abs_fitted": found.qoe_gap_fitted,
                "download_fit": found.report.get("download_fit"),
            }
    print(json.dumps(figures, indent=1, default=str))


if __name__ == "__main__":
    main()
