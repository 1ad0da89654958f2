"""``streambed report``: a self-contained HTML report of ``streambed eval``/``emulate`` outputs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from streambed.core.errors import ConfigError


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report",
        help="write a self-contained HTML report of eval/emulate output directories",
        description=(
            "Read one or more output directories of `streambed eval` or `streambed emulate` "
            "(summary.json, per_trace.csv, sessions/) and write one HTML page with everything "
            "inlined (plots as PNG data URIs, no external resources, no script): the inputs, a "
            "summary table per algorithm with bootstrap 95% confidence intervals, paired "
            "per-trace comparisons, the QoE CDF and bitrate-vs-rebuffer plots, and per-session "
            "timelines (bitrate, throughput, trace bandwidth, buffer, stalls). With --sim and "
            "--emu it first compares a simulation with an emulation of the same traces and "
            "algorithms, per trace (sim_vs_emu.csv, .json and .png in OUT_EMU), and the page "
            "shows the comparison."
        ),
        epilog=(
            "examples: streambed report out/eval out/emu --html report.html --traces traces/ "
            "--max-timelines 12;  streambed report --sim out/sim --emu out/emu"
        ),
    )
    p.add_argument(
        "out", nargs="*", type=Path, metavar="OUT", help="output directory of eval or emulate"
    )
    p.add_argument(
        "--sim",
        type=Path,
        metavar="OUT_SIM",
        help="with --emu: a `streambed eval` output of the same traces and algorithms; writes "
        "sim_vs_emu.csv/.json/.png into OUT_EMU and reports both",
    )
    p.add_argument(
        "--emu", type=Path, metavar="OUT_EMU", help="with --sim: a `streambed emulate` output"
    )
    p.add_argument(
        "--html",
        type=Path,
        metavar="PATH",
        help="the page to write (default: report.html in the first OUT)",
    )
    p.add_argument(
        "--traces",
        type=Path,
        metavar="DIR",
        help="trace directory for the timelines of inputs whose summary.json names none "
        "(eval outputs); without it their timelines have no trace bandwidth",
    )
    p.add_argument(
        "--max-timelines",
        type=int,
        default=24,
        metavar="N",
        help="sessions with a timeline plot: -1 all, 0 none (default %(default)s)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the bootstrap resampling (default 0)"
    )
    p.set_defaults(func=run)


def inputs_of(args: argparse.Namespace) -> list[Path]:
    """The report's inputs: OUT..., then --emu and --sim when not among them."""
    if (args.sim is None) != (args.emu is None):
        raise ConfigError("--sim and --emu go together")
    inputs = list(args.out)
    for extra in (args.emu, args.sim):
        if extra is not None and extra not in inputs:
            inputs.append(extra)
    if not inputs:
        raise ConfigError("give at least one OUT directory (or --sim and --emu)")
    return inputs


def write_html(args: argparse.Namespace) -> Path:
    """The HTML part of the command: write the page ``args`` asks for; return its path."""
    from streambed.reports.html import write_html_report

    inputs = inputs_of(args)
    html = args.html if args.html is not None else inputs[0] / "report.html"
    return write_html_report(
        inputs,
        html,
        traces=args.traces,
        max_timelines=args.max_timelines,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    inputs_of(args)  # usage errors before any work
    if args.sim is not None:
        from streambed.reports.fidelity import write_comparison
        from streambed.reports.rundir import RunDir

        found = write_comparison(args.sim, args.emu)["overall"]
        gap = found.get("qoe_gap_mean_abs")
        print(
            f"simulation vs emulation: {found['count']} sessions, mean |QoE gap| "
            + ("n/a" if gap is None else f"{gap:.4f}")
            + f" ({RunDir(args.emu).sim_vs_emu_csv})"
        )
    path = write_html(args)
    print(f"report: {path}")
    return 0
