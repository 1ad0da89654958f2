"""``streambed report``: a self-contained HTML report of ``streambed eval``/``emulate`` outputs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


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
            "timelines (bitrate, throughput, trace bandwidth, buffer, stalls)."
        ),
        epilog=(
            "example: streambed report out/eval out/emu --html report.html --traces traces/ "
            "--max-timelines 12"
        ),
    )
    p.add_argument(
        "out", nargs="+", type=Path, metavar="OUT", help="output directory of eval or emulate"
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


def write_html(args: argparse.Namespace) -> Path:
    """The HTML part of the command: write the page ``args`` asks for; return its path."""
    from reports.html import write_html_report

    html = args.html if args.html is not None else args.out[0] / "report.html"
    return write_html_report(
        args.out,
        html,
        traces=args.traces,
        max_timelines=args.max_timelines,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    path = write_html(args)
    print(f"report: {path}")
    return 0
