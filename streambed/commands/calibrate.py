"""``streambed calibrate``: fit the simulator's link constants to an emulation's sessions.

A thin layer over :func:`streambed.emulation.calibrate.calibrate`; prints the fitted constants and the
mean absolute per-trace QoE gap (emulated minus simulated) before and after.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

# As emulation.calibrate's, repeated so that building the parser imports nothing heavy.
OBJECTIVES = ("download", "qoe")
LOSSES = ("l2", "l1")
STARTS = ("aligned", "beginning")
TIMINGS = ("wall", "pensieve")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="fit the simulator's rtt and payload factor to an emulation; report the QoE gap",
        description=(
            "Fit the simulator's link constants (SimConfig.rtt_s, payload_factor) to the "
            "sessions of a `streambed emulate` output directory, re-simulate its traces, video "
            "and algorithms with the default and with the fitted constants, and report the mean "
            "absolute per-trace QoE gap (emulated - simulated) of each. Objective 'download' "
            "(default, seconds) fits every emulated chunk's time in the simulator's link model, "
            "replayed from the trace position at which it was requested; 'qoe' searches the "
            "constants minimising the QoE gap by re-simulating (minutes). Each simulated session "
            "starts where the emulated one started in its trace (--start aligned) or at the "
            "trace's beginning. Writes OUT/calibration.json and, under OUT/default/ and "
            "OUT/fitted/ (and, with the other start, OUT/default-unaligned/ and "
            "OUT/fitted-unaligned/, or -aligned/), a simulation sim/ and "
            "sim_vs_emu.csv/.json/.png."
        ),
        epilog="example: streambed calibrate out/emu --out out/emu-calibration",
    )
    p.add_argument("emu_out", type=Path, metavar="EMU_OUT", help="`streambed emulate` output dir")
    p.add_argument(
        "--video",
        type=Path,
        help="video description (default: EMU_OUT/content/video.json, built by emulate --video)",
    )
    p.add_argument(
        "--model", type=Path, help="ppo checkpoint, when the emulation ran ppo and records none"
    )
    p.add_argument(
        "--traces",
        type=Path,
        help="the emulation's trace directory (default: traces_dir of EMU_OUT/summary.json)",
    )
    p.add_argument("--out", type=Path, help="output directory (default: EMU_OUT/calibration)")
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="download",
        help="what to fit: per-chunk times (default) or the per-trace QoE gap",
    )
    p.add_argument(
        "--loss",
        choices=LOSSES,
        default="l2",
        help="download objective: squared (default) or absolute errors",
    )
    p.add_argument(
        "--download-only",
        action="store_true",
        help="download objective: fit download_s alone, without the player's decision time "
        "before each request (which Pensieve's per-chunk delay otherwise absorbs; with "
        "--timing wall the decision is its own wait and the fit is always on download_s)",
    )
    p.add_argument(
        "--start",
        choices=STARTS,
        default="aligned",
        help="where the simulated sessions of the main comparison (and of the qoe objective) "
        "start: where the emulated ones started in their traces (default), or at the traces' "
        "beginning as `streambed eval`; the other is reported too",
    )
    p.add_argument(
        "--timing",
        choices=TIMINGS,
        default="wall",
        help="the default constants the fit refines: wall (the emulation's own settings: its "
        "link delay, the decision round trip its players measured, TCP/IP's payload share; "
        "default) or pensieve (Pensieve's published simulator)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from streambed.emulation.calibrate import calibrate

    result = calibrate(
        args.emu_out,
        args.out,
        video=args.video,
        model=args.model,
        traces=args.traces,
        objective=args.objective,
        loss=args.loss,
        include_decision=not args.download_only,
        align_start=args.start == "aligned",
        timing=args.timing,
        progress=not args.no_progress,
    )
    report = result.report
    print(f"{'':<10}{'rtt_s':>10}{'payload':>10}{'|QoE gap|':>12}{'QoE gap':>10}")
    for name, config, gap_key in (
        ("default", result.default, "default"),
        ("fitted", result.fitted, "fitted"),
    ):
        print(
            f"{name:<10}{config.rtt_s:>10.4f}{config.payload_factor:>10.4f}"
            f"{_fmt(report['qoe_gap_mean_abs'][gap_key]):>12}"
            f"{_fmt(report['qoe_gap_mean'][gap_key], signed=True):>10}"
        )
    other = next(k for k in report if k.startswith("qoe_gap_mean_abs_"))
    print(
        f"mean |QoE gap| with sessions {other.removeprefix('qoe_gap_mean_abs_')}: "
        f"default {_fmt(report[other]['default'])}, fitted {_fmt(report[other]['fitted'])}"
    )
    fit = report.get("download_fit")
    if fit is not None:
        print(
            f"download fit: {fit['chunks']} chunks of {fit['sessions']} sessions over "
            f"{fit['traces']} traces; rmse {fit['errors_default']['rmse_s']:.3f} s -> "
            f"{fit['errors_fitted']['rmse_s']:.3f} s"
        )
        for name in ("default", "fitted"):
            e = fit[f"errors_{name}"]
            print(
                f"per-chunk time error ({name}, emulated - modelled, s): "
                + ", ".join(f"p{q} {e[f'p{q}_s']:+.3f}" for q in (5, 25, 50, 75, 95))
            )
    if report.get("fit_worse_than_default"):
        print(
            "WARNING: the fitted constants are WORSE than the defaults "
            f"({report['timing']} timing): mean |QoE gap| "
            f"{_fmt(report['qoe_gap_mean_abs']['fitted'])} fitted against "
            f"{_fmt(report['qoe_gap_mean_abs']['default'])}; keep the defaults"
        )
    out = args.out if args.out is not None else args.emu_out / "calibration"
    print(f"report: {out / 'calibration.json'}")
    return 0


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"
