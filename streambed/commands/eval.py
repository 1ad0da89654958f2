"""``streambed eval``: offline evaluation of ABR algorithms in the test-mode simulator."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streambed.abr_service.algorithms import CLASSIC
from streambed.abr_service.qoe import QOE_NAMES
from streambed.cli import comma_list
from streambed.core.errors import ConfigError

if TYPE_CHECKING:
    from streambed.abr_service.video import Video
    from streambed.traces import Trace

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval",
        help="evaluate ABR algorithms on a trace set in the simulator",
        description=(
            "Run every algorithm on every trace in the test-mode (noise-free) simulator and "
            "write OUT/summary.json, OUT/per_trace.csv, per-session logs and PNG plots."
        ),
    )
    p.add_argument("--traces", type=Path, help="trace directory (default: generated traces)")
    p.add_argument(
        "--video", type=Path, help="video_size_* directory or video.json (default: generated)"
    )
    p.add_argument(
        "--algorithms",
        default=",".join(CLASSIC),
        help="comma-separated algorithm names (see `streambed algorithms`: built-ins and "
        "installed plug-ins) and optimal (default: %(default)s)",
    )
    p.add_argument("--model", type=Path, help="checkpoint for the learned policy (ppo)")
    p.add_argument("--sample", action="store_true", help="sample the learned policy's action")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--qoe", choices=QOE_NAMES, default="lin", help="QoE metric (default: lin)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling policies (recorded)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="ALGO.KEY=VALUE",
        help="algorithm parameter, e.g. bba.reservoir_s=8 (repeatable)",
    )
    p.add_argument(
        "--sim",
        choices=("pensieve", "wall"),
        default="pensieve",
        help="simulator timing: pensieve (Pensieve's published simulator: --rtt-ms, "
        "--payload-factor; default) or wall (what an emulated session spends: the decision's "
        "and the request's round trips move the trace; from --delay-ms and --decision-ms)",
    )
    p.add_argument("--rtt-ms", type=float, default=80.0, help="round trip per chunk (default 80)")
    p.add_argument("--payload-factor", type=float, default=0.95, help="default 0.95")
    p.add_argument(
        "--delay-ms", type=float, default=40.0, help="--sim wall: one-way link delay (default 40)"
    )
    p.add_argument(
        "--decision-ms",
        type=float,
        help="--sim wall: the decision's round trip (default: a link round trip plus 25 ms)",
    )
    p.add_argument("--buffer-cap-s", type=float, default=60.0, help="default 60")
    p.add_argument("--workers", type=int, help="processes for the optimal planner (default: cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def load_inputs(traces_dir: Path | None, video_path: Path | None) -> tuple[list[Trace], Video]:
    from streambed.abr_service.video import default_video, load_video
    from streambed.traces import load_traceset
    from streambed.traces.synth import default_traces

    if traces_dir is None:
        traces = default_traces()
        log.info("no --traces: using %d generated traces", len(traces))
    else:
        traces = load_traceset(traces_dir)
    if video_path is None:
        video = default_video()
        log.info("no --video: using the generated video %r", video.name)
    else:
        video = load_video(video_path)
    return traces, video


def run(args: argparse.Namespace) -> int:
    from streambed.abr_service.algorithms.registry import check_names, run_params
    from streambed.trainer.evaluate import evaluate, format_table
    from streambed.trainer.simulator import SimConfig

    algorithms = comma_list(args.algorithms, "--algorithms")
    check_names(algorithms, "optimal")
    params = run_params(args.param, algorithms, skip=("optimal",))
    if "ppo" in algorithms:
        if args.model is None and "model" not in params.get("ppo", {}):
            raise ConfigError("--algorithms ppo needs --model CHECKPOINT")
        ppo = params.setdefault("ppo", {})
        if args.model is not None:
            ppo["model"] = str(args.model)
        if args.sample:
            ppo["sample"] = "true"
    traces, video = load_inputs(args.traces, args.video)
    if args.sim == "wall":
        if "optimal" in algorithms:
            raise ConfigError(
                "--algorithms optimal plans with Pensieve's timing: drop it or use --sim pensieve"
            )
        config = SimConfig.faithful(
            args.delay_ms,
            None if args.decision_ms is None else args.decision_ms / 1000,
            buffer_cap_s=args.buffer_cap_s,
        )
    else:
        config = SimConfig(
            rtt_s=args.rtt_ms / 1000,
            payload_factor=args.payload_factor,
            buffer_cap_s=args.buffer_cap_s,
        )
    started = time.perf_counter()
    result = evaluate(
        traces,
        video,
        algorithms,
        params=params,
        qoe_name=args.qoe,
        config=config,
        out=args.out,
        seed=args.seed,
        run_id=f"eval-{int(time.time())}",
        progress=not args.no_progress,
        workers=args.workers,
    )
    print(format_table(result))
    log.info("wrote %s (%.1f s)", args.out, time.perf_counter() - started)
    from streambed.reports.rundir import RunDir

    print(f"report: {RunDir(args.out).summary_json}")
    return 0
