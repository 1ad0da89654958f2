"""``streambed emulate``: whole trace sets of real sessions behind emulated links, N at a time.

A thin layer over :func:`streambed.emulation.orchestrate.emulate`. Exit status: 0 every session done;
1 some failed (listed in OUT/failed.json; the report covers the others); 2 a usage error;
130 interrupted by Ctrl-C, 143 stopped by SIGTERM (``docker compose stop``); either way the
report covers the sessions done and ``--resume`` goes on from there.
"""

from __future__ import annotations

import argparse
import signal
from pathlib import Path
from typing import Any

from streambed.abr_service.qoe import QOE_NAMES
from streambed.core.linkkinds import AUTO, FIRST_PACKET, TRACE_STARTS, trace_start_help
from streambed.core.linkkinds import CHOICES as LINK_KINDS


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "emulate",
        help="run real sessions of ABR algorithms over a trace set behind emulated links",
        description=(
            "Start (or use) a DASH origin and the decision service, then play one real-time "
            "session per (trace, algorithm, repeat), N at a time, each behind its own link "
            "replaying the trace (or, with --clients-per-link/--mix, several players behind "
            "each link: see that group of options). Writes OUT/summary.json, OUT/per_trace.csv, OUT/logs/ "
            "(Pensieve format), plots, OUT/failed.json, and each session's files under "
            "OUT/sessions/<algorithm>/<trace>[-rR]/. A failed session is retried once; Ctrl-C "
            "(or SIGTERM) stops the running sessions and still writes the report. Exit status: 0 "
            "all done, 1 some failed, 2 usage error, 130 interrupted, 143 terminated."
        ),
        epilog=(
            "example: streambed emulate --traces traces/ --video video_sizes/ "
            "--algorithms bba,robustmpc --link netns --parallel 16 --out out/emu"
        ),
    )
    p.add_argument("--traces", type=Path, required=True, help="trace directory (either format)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--content", type=Path, help="content directory built by `streambed origin`")
    src.add_argument(
        "--video",
        type=Path,
        help="video description (video_size_* dir or video.json): size-exact synthetic content "
        "is built from it into OUT/content",
    )
    p.add_argument(
        "--algorithms",
        help="comma-separated algorithms asked of the service (required unless --mix)",
    )
    p.add_argument("--model", type=Path, help="checkpoint the started service serves as ppo")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="ALGO.KEY=VALUE",
        help="algorithm parameter sent with every session of ALGO, e.g. bba.reservoir_s=8 "
        "(repeatable)",
    )
    p.add_argument(
        "--player",
        choices=("streambed", "dashjs"),
        default="streambed",
        help="streambed: the headless player (default); dashjs: dash.js 5 in headless Chromium "
        "with Streambed's remote ABR rule (needs real encoded content: --content)",
    )
    p.add_argument(
        "--qoe",
        choices=QOE_NAMES,
        default="lin",
        help="QoE metric of the sessions' records and the report (default lin); ssim (Puffer's) "
        "and vmaf (Comyco's) need --content whose video.json carries the measurements",
    )
    p.add_argument("--link", choices=LINK_KINDS, default=AUTO, help="link kind (default auto)")
    p.add_argument(
        "--delay-ms", type=float, default=40.0, help="one-way delay each direction (default 40)"
    )
    p.add_argument(
        "--trace-start",
        choices=TRACE_STARTS,
        default=FIRST_PACKET,
        help=trace_start_help(FIRST_PACKET),
    )
    p.add_argument("--parallel", type=int, default=1, help="sessions at a time (default 1)")
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="run each session as a Ray task on this cluster (auto, HOST:PORT, ray://HOST:PORT, "
        "or local): one netns_slot per session, each node serving its own sessions; needs "
        "pip install 'streambed-abr[cluster]' (README, 'Beyond one machine')",
    )
    p.add_argument("--repeat", type=int, default=1, help="sessions per trace and algorithm")
    shared = p.add_argument_group(
        "several players on one link",
        "players that share one link (one trace, one queue): sessions go to "
        "OUT/sessions/<algorithm>/<trace>-p<i>[-rR]/, each link's files (link.json, "
        "delivery.log, cross.json, timeline.pdf) to OUT/links/<link>/, and OUT/links.csv holds "
        "per link Jain's fairness over the players' mean bitrates and throughputs and the "
        "link's utilisation; --parallel counts links",
    )
    shared.add_argument(
        "--clients-per-link",
        type=int,
        default=1,
        metavar="N",
        help="players behind each link (default 1: a link per session); without --mix each "
        "algorithm gets its own links of N identical players",
    )
    shared.add_argument(
        "--mix",
        metavar="ALG[@PLAYER]=COUNT,...",
        help="the players of every link, e.g. ppo=2,robustmpc=2 or bba=1,bba@dashjs=1 "
        "(PLAYER: streambed or dashjs; default --player); one link per trace and repeat; "
        "replaces --algorithms",
    )
    shared.add_argument(
        "--stagger-s",
        type=float,
        default=0.0,
        metavar="S",
        help="player i (from 1) starts (i-1)*S seconds after the first (default 0: together)",
    )
    shared.add_argument(
        "--cross-traffic",
        action="append",
        default=[],
        metavar="START:STOP",
        help="a bulk TCP download through each shared link from START to STOP seconds after "
        "its first player starts (repeatable, or a comma list)",
    )
    p.add_argument("--abr", metavar="URL", help="use this decision service (default: start one)")
    p.add_argument("--origin", metavar="URL", help="use this origin (default: start one)")
    p.add_argument("--resume", action="store_true", help="skip the sessions already done in OUT")
    p.add_argument("--max-chunks", type=int, help="stop each session after N chunks")
    p.add_argument(
        "--session-timeout-s", type=float, help="fail a session still running after this long"
    )
    p.add_argument(
        "--compare-sim",
        action="store_true",
        help="then simulate the same traces, video and algorithms (OUT/sim) and compare per "
        "trace: OUT/sim_vs_emu.csv, .json and .png",
    )
    p.add_argument(
        "--sim",
        choices=("wall", "pensieve"),
        default="wall",
        help="--compare-sim's simulator: wall (the emulation's own timing: its link delay and "
        "the decision round trip its players measured; default) or pensieve (Pensieve's "
        "published simulator, as `streambed eval`)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from streambed.abr_service.algorithms.registry import check_names, run_params
    from streambed.cli import comma_list
    from streambed.core.errors import ConfigError
    from streambed.emulation.orchestrate import EmulateConfig, emulate
    from streambed.emulation.shared import parse_mix, parse_windows

    mix = () if args.mix is None else parse_mix(args.mix, args.player)
    clients = args.clients_per_link
    if mix and clients == 1:
        clients = sum(n for *_, n in mix)
    if mix and args.algorithms is not None:
        raise ConfigError("--mix names each link's algorithms: drop --algorithms")
    if mix:
        algorithms = tuple(dict.fromkeys(a for a, _, _ in mix))
    elif args.algorithms is None:
        raise ConfigError("give --algorithms (or --mix)")
    else:
        algorithms = tuple(comma_list(args.algorithms, "--algorithms"))
    cross = parse_windows(args.cross_traffic)
    if args.compare_sim and (clients > 1 or mix or cross):
        raise ConfigError(
            "--compare-sim: the simulator plays one session per link; it cannot compare "
            "players sharing one (drop --compare-sim)"
        )

    if args.abr is None:  # the service this command starts knows this process's algorithms
        check_names(algorithms)
    params = run_params(args.param, algorithms, validate=args.abr is None)
    config = EmulateConfig(
        traces=args.traces,
        algorithms=algorithms,
        out=args.out,
        content=args.content,
        video=args.video,
        model=args.model,
        link=args.link,
        delay_ms=args.delay_ms,
        parallel=args.parallel,
        repeat=args.repeat,
        trace_start=args.trace_start,
        abr_url=args.abr,
        origin_url=args.origin,
        resume=args.resume,
        max_chunks=args.max_chunks,
        progress=not args.no_progress,
        session_timeout_s=args.session_timeout_s,
        player=args.player,
        params=params,
        cluster=args.cluster,
        qoe=args.qoe,
        clients_per_link=clients,
        mix=mix,
        stagger_s=args.stagger_s,
        cross_traffic=cross,
    )
    terminated = []

    def on_sigterm(signum: int, frame: object) -> None:
        terminated.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        result = emulate(config)
    finally:
        signal.signal(signal.SIGTERM, previous)
    from streambed.reports.provenance import window_short

    rows = [
        f"{'algorithm':<12}{'traces':>8}{'qoe_mean':>10}{'bitrate_kbps':>14}{'rebuf_ratio':>13}"
        "  chunks"
    ]
    for name, s in result.summary.get("algorithms", {}).items():
        rows.append(
            f"{name:<12}{s['traces']:>8}{s['qoe_mean']:>10.4f}{s['bitrate_mean_kbps']:>14.0f}"
            f"{s['rebuffer_ratio']:>13.4f}  {window_short(s.get('chunk_window'))}"
        )
    print("\n".join(rows))
    if result.summary.get("run_to_run"):
        from streambed.reports.repeats import spread_lines

        print("\n".join(spread_lines(result.summary["run_to_run"])))
    print(
        f"sessions: {result.planned} planned, {result.skipped} already done, "
        f"{len(result.done) - result.skipped} run, {len(result.failed)} failed"
        + (", interrupted" if result.interrupted else "")
    )
    from streambed.reports.rundir import RunDir

    if args.compare_sim and result.done and not result.interrupted:
        from streambed.trainer.replay import sim_vs_emu

        found = sim_vs_emu(args.out, timing=args.sim, progress=not args.no_progress)["overall"]
        gap = found.get("qoe_gap_mean_abs")
        print(
            f"simulation vs emulation: {found['count']} sessions, mean |QoE gap| "
            + ("n/a" if gap is None else f"{gap:.4f}")
            + f" ({RunDir(args.out).sim_vs_emu_csv})"
        )
    links = result.summary.get("links")
    if links:
        print(
            f"links: {links['count']}, Jain over mean bitrates "
            + _fmt(links.get("jain_bitrate_mean"))
            + ", over throughputs "
            + _fmt(links.get("jain_throughput_mean"))
            + ", utilisation "
            + _fmt(links.get("utilisation_mean"))
            + f" ({RunDir(args.out).links_csv})"
        )
    print(f"report: {RunDir(args.out).summary_json}")
    return 143 if terminated and result.interrupted else result.exit_code


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
