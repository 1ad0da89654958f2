"""``streambed demo``: the main job on embedded defaults, with no data and no network.

1. generates a small set of cellular-like traces, with deep fades and outages (``OUT/traces``);
2. encodes real DASH content with ffmpeg (``OUT/content``: H.264, Pensieve's 6-level ladder);
3. emulates BBA, RobustMPC and the learned policy Streambed ships (``models/ppo-norway.pt``): one
   real-time session per trace and algorithm behind a link replaying the trace (``--link auto``:
   netns as root, else the userspace proxy), asking a started ``streambed serve`` for every
   chunk (``OUT/emulation``);
4. simulates the same algorithms and the offline optimum on the same traces and content
   (``OUT/simulation``) and compares the two per trace (``OUT/emulation/sim_vs_emu.csv``);
5. writes the HTML report of both (``OUT/report.html``) and prints its path last.

``--sim-only`` skips the content and the emulation: every classic algorithm, the learned policy
and the optimum in the simulator, on a generated video (seconds, not minutes).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from streambed.abr_service.video import default_video
from streambed.core.errors import ConfigError
from streambed.core.linkkinds import AUTO
from streambed.core.linkkinds import CHOICES as LINK_CHOICES
from streambed.models import SHIPPED_MODEL
from streambed.traces import Trace, save_pensieve
from streambed.traces.synth import DEFAULT_TRACE_COUNT, DEMO_TRACE_PARAMS, default_traces

log = logging.getLogger(__name__)

EMULATED = ("bba", "robustmpc", "ppo")
DEMO_TRACES = 4
DEMO_DURATION_S = 60.0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="generate traces and real content, emulate BBA, RobustMPC and PPO, write a report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="default: %(default)s")
    p.add_argument(
        "--traces",
        type=int,
        help=f"how many traces (default {DEMO_TRACES}; {DEFAULT_TRACE_COUNT} with --sim-only)",
    )
    p.add_argument(
        "--duration-s",
        type=float,
        default=DEMO_DURATION_S,
        help="seconds of video to encode, a multiple of 4 (default %(default)s)",
    )
    p.add_argument(
        "--link",
        choices=LINK_CHOICES,
        default=AUTO,
        help="link kind of the emulation (default auto: netns as root, else proxy)",
    )
    p.add_argument("--parallel", type=int, help="sessions at a time (default: all, at most 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated traces and video")
    p.add_argument(
        "--sim-only", action="store_true", help="simulation only: no ffmpeg, no emulation"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _write_traces(traces: list[Trace], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for trace in traces:
        save_pensieve(trace, folder / trace.name)
    return folder


def _learned_policy(algorithms: list[str], params: dict[str, dict[str, Any]]) -> None:
    if SHIPPED_MODEL.is_file():
        params["ppo"] = {"model": str(SHIPPED_MODEL)}
    else:
        log.warning("%s is missing: the demo runs without the learned policy", SHIPPED_MODEL)
        algorithms.remove("ppo")


def run(args: argparse.Namespace) -> int:
    return run_sim_only(args) if args.sim_only else run_emulated(args)


def run_sim_only(args: argparse.Namespace) -> int:
    from streambed.abr_service.algorithms import CLASSIC
    from streambed.reports.rundir import RunDir
    from streambed.trainer.evaluate import evaluate, format_table

    out: Path = args.out
    traces = default_traces(args.traces or DEFAULT_TRACE_COUNT, args.seed, DEMO_TRACE_PARAMS)
    video = default_video(args.seed)
    _write_traces(traces, out / "traces")
    video.save(out / "video")
    log.info("generated %d traces in %s and the video in %s", len(traces), out / "traces", out)
    algorithms = [*CLASSIC, "ppo", "optimal"]
    params: dict[str, dict[str, Any]] = {}
    _learned_policy(algorithms, params)
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
    run = RunDir(out / "eval")
    print(f"report: {run.summary_json}")
    print(f"plots:  {run.qoe_cdf_png}  {run.bitrate_vs_rebuffer_png}")
    return 0


def run_emulated(args: argparse.Namespace) -> int:
    from streambed.abr_service.video import VIDEO_JSON, load_video
    from streambed.emulation.orchestrate import EmulateConfig, emulate
    from streambed.reports.fidelity import write_comparison
    from streambed.reports.html import write_html_report
    from streambed.reports.provenance import window_text
    from streambed.reports.rundir import RunDir
    from streambed.reports.summary import summarize
    from streambed.server.build import build_encoded
    from streambed.trainer.evaluate import evaluate, format_table

    out: Path = args.out
    count = args.traces or DEMO_TRACES
    if count < 1:
        raise ConfigError(f"--traces {count}: need at least one trace")
    started = time.monotonic()
    traces = default_traces(count, args.seed, DEMO_TRACE_PARAMS)
    traces_dir = _write_traces(traces, out / "traces")
    log.info("generated %d traces in %s", len(traces), traces_dir)

    content = out / "content"
    if not (content / VIDEO_JSON).is_file():
        log.info(
            "encoding %g s of video at 6 bitrates with ffmpeg into %s", args.duration_s, content
        )
        # SSIM measured per segment (Puffer's QoE below); VMAF would cost minutes here
        build_encoded(content, duration_s=args.duration_s, force=True, vmaf=False)
    video = load_video(content / VIDEO_JSON)

    algorithms = list(EMULATED)
    params: dict[str, dict[str, Any]] = {}
    _learned_policy(algorithms, params)
    sessions = len(traces) * len(algorithms)
    emulated = emulate(
        EmulateConfig(
            traces=traces_dir,
            algorithms=tuple(algorithms),
            out=out / "emulation",
            content=content,
            model=SHIPPED_MODEL if "ppo" in algorithms else None,
            link=args.link,
            parallel=args.parallel or min(sessions, 16),
            progress=not args.no_progress,
        )
    )
    if emulated.interrupted:
        return emulated.exit_code

    simulated = evaluate(
        traces,
        video,
        [*algorithms, "optimal"],
        params=params,
        out=out / "simulation",
        seed=args.seed,
        run_id="demo",
        progress=not args.no_progress,
    )
    fidelity = write_comparison(out / "simulation", out / "emulation")
    html = write_html_report(
        [out / "emulation", out / "simulation"], out / "report.html", traces=traces_dir
    )

    print("simulation (same traces and content):")
    print(format_table(simulated))
    if video.ssim_db is not None:
        viewer = evaluate(traces, video, algorithms, params=params, qoe_name="ssim", progress=False)
        print("what the viewer sees, simulated (Puffer's QoE: SSIM dB - |change| - 100 x stall s):")
        for name, s in summarize(viewer.metrics).items():
            print(f"  {name:<12} qoe_ssim {s['qoe_mean']:.3f}")
    print("emulation:")
    for name, s in emulated.summary.get("algorithms", {}).items():
        print(
            f"  {name:<12} qoe_mean {s['qoe_mean']:.4f}  bitrate {s['bitrate_mean_kbps']:.0f} kbps"
            f"  rebuffer ratio {s['rebuffer_ratio']:.4f}  ({s['traces']} traces, "
            f"{window_text(s.get('chunk_window'))})"
        )
    gap = fidelity["overall"].get("qoe_gap_mean_abs")
    if gap is not None:
        print(
            f"simulation vs emulation: mean |QoE gap| per trace {gap:.4f} ({RunDir(out / 'emulation').sim_vs_emu_csv})"
        )
    if emulated.failed:
        print(f"{len(emulated.failed)} session(s) failed: {RunDir(out / 'emulation').failed_json}")
    print(f"done in {time.monotonic() - started:.0f} s")
    print(f"report: {html}")
    return emulated.exit_code
