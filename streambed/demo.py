"""``streambed demo``: the main job on embedded defaults, with no data and no network.

Generates a trace set and a video, evaluates the classic algorithms, the PPO policy Streambed
ships (``models/norway.pt``) and the offline optimum in the simulator, and writes the report
(summary, per-trace CSV, logs, plots).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from abr_service.algorithms import CLASSIC
from streambed.defaults import DEFAULT_TRACE_COUNT, SHIPPED_MODEL, default_traces, default_video
from traces import save_pensieve
from trainer.eval_cli import format_table
from trainer.evaluate import evaluate

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="generate traces and a video, evaluate the classic algorithms, write a report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="default: %(default)s")
    p.add_argument("--traces", type=int, default=DEFAULT_TRACE_COUNT, help="how many traces")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated traces and video")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    traces = default_traces(args.traces, args.seed)
    video = default_video(args.seed)
    (out / "traces").mkdir(parents=True, exist_ok=True)
    for trace in traces:
        save_pensieve(trace, out / "traces" / trace.name)
    video.save(out / "video")
    log.info(
        "generated %d traces in %s and the video in %s", len(traces), out / "traces", out / "video"
    )
    algorithms, params = [*CLASSIC, "optimal"], {}
    if SHIPPED_MODEL.is_file():
        algorithms.insert(-1, "ppo")
        params["ppo"] = {"model": str(SHIPPED_MODEL)}
    else:
        log.warning("%s is missing: the demo runs without the learned policy", SHIPPED_MODEL)
    result = evaluate(
        traces,
        video,
        algorithms,
        params=params,
        out=out / "eval",
        seed=args.seed,
        run_id="demo",
        progress=not args.no_progress,
    )
    print(format_table(result))
    print(f"report: {out / 'eval' / 'summary.json'}")
    print(f"plots:  {out / 'eval' / 'qoe_cdf.png'}  {out / 'eval' / 'bitrate_vs_rebuffer.png'}")
    return 0
