"""``streambed report``: a self-contained HTML report of ``streambed eval``/``emulate`` outputs."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from streambed.abr_service.qoe import QOE_NAMES
from streambed.core.errors import ConfigError
from streambed.reports.rundir import SUMMARY_JSON

COMPARE_DIR = "report-sim-vs-emu"
"""Default directory (in OUT_EMU) of ``report --sim --emu``'s files; ``-2``, ``-3``... when
taken, so a report never writes over another command's outputs or an earlier report."""
REPORT_HTML = "report.html"


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
            "algorithms, per trace, into a new directory (--out; default a fresh "
            "OUT_EMU/report-sim-vs-emu[-N]: sim_vs_emu.csv, .json, .png and report.html), never "
            "over either run's own files; runs over different chunk windows, videos or ppo "
            "checkpoints are refused (exit 2) unless --allow-mismatch."
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
        help="with --emu: a `streambed eval` output of the same traces, video, algorithms and "
        "chunk window; writes sim_vs_emu.csv/.json/.png and the page into --out and reports both",
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
        "--qoe",
        choices=QOE_NAMES,
        help="rescore every session under this metric from its chunk records (default: the "
        "metric each run was scored with); ssim and vmaf need the measured video.json",
    )
    p.add_argument(
        "--video",
        type=Path,
        help="with --qoe: the video description (video.json or content directory; default: "
        "the content each run names)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the bootstrap resampling (default 0)"
    )
    p.add_argument(
        "--out",
        dest="compare_out",
        type=Path,
        metavar="DIR",
        help="with --sim/--emu: the new directory for the comparison and the page (default: a "
        f"fresh OUT_EMU/{COMPARE_DIR}[-N]); an existing DIR needs --force",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="with --sim/--emu: write into an existing --out DIR and over an existing --html",
    )
    p.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="with --sim/--emu: compare runs over different chunk windows, videos or ppo "
        "checkpoints anyway (a loud warning, also on the page) instead of refusing",
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
    if args.sim is None:
        for flag, given in (
            ("--out", args.compare_out is not None),
            ("--force", args.force),
            ("--allow-mismatch", args.allow_mismatch),
        ):
            if given:
                raise ConfigError(f"{flag} goes with --sim and --emu")
    return inputs


def comparison_dir(args: argparse.Namespace) -> Path:
    """Create and return the new directory ``report --sim --emu`` writes into (never a run
    directory; an existing ``--out`` only with ``--force``)."""
    if args.compare_out is None:
        base = Path(args.emu) / COMPARE_DIR
        for n in range(1, 10_000):
            target = base if n == 1 else base.with_name(f"{COMPARE_DIR}-{n}")
            try:
                target.mkdir(parents=True)
            except FileExistsError:
                continue
            except OSError as exc:
                raise ConfigError(f"{target}: cannot create: {exc.strerror or exc}") from None
            return target
        raise ConfigError(f"{base}: 9999 earlier reports there; give --out DIR")
    target = Path(args.compare_out)
    if (target / SUMMARY_JSON).exists():
        raise ConfigError(
            f"--out {target}: an eval/emulate output ({SUMMARY_JSON}); the comparison goes "
            "into a directory of its own"
        )
    if target.exists() and not args.force:
        raise ConfigError(f"--out {target}: exists; give a new directory, or --force")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {target}: cannot create: {exc.strerror or exc}") from None
    return target


def write_html(args: argparse.Namespace, compared: Path | None = None) -> Path:
    """The HTML part of the command: write the page ``args`` asks for; return its path.
    ``compared``: the directory of ``report --sim --emu``'s comparison (and default page)."""
    from streambed.reports.html import write_html_report

    inputs = inputs_of(args)
    default = (compared if compared is not None else inputs[0]) / REPORT_HTML
    html = args.html if args.html is not None else default
    return write_html_report(
        inputs,
        html,
        traces=args.traces,
        max_timelines=args.max_timelines,
        seed=args.seed,
        comparisons=[] if compared is None else [compared],
        qoe=args.qoe,
        video=args.video,
    )


def run(args: argparse.Namespace) -> int:
    inputs_of(args)  # usage errors before any work
    compared = None
    if args.sim is not None:
        from streambed.reports.fidelity import write_comparison
        from streambed.reports.rundir import RunDir

        if args.html is not None and Path(args.html).exists() and not args.force:
            raise ConfigError(f"--html {args.html}: exists; give a new path, or --force")
        fresh = args.compare_out is None or not Path(args.compare_out).exists()
        compared = comparison_dir(args)
        try:
            found = write_comparison(
                args.sim, args.emu, compared, allow_mismatch=args.allow_mismatch
            )
        except ConfigError:
            if fresh:  # a refusal leaves nothing behind (refused before anything is written)
                with contextlib.suppress(OSError):
                    compared.rmdir()
            raise
        for line in found.get("mismatches", []):
            print(f"WARNING: compared anyway (--allow-mismatch): {line}")
        overall = found["overall"]
        gap = overall.get("qoe_gap_mean_abs")
        print(
            f"simulation vs emulation: {overall['count']} sessions, mean |QoE gap| "
            + ("n/a" if gap is None else f"{gap:.4f}")
            + f" ({RunDir(compared).sim_vs_emu_csv})"
        )
    for out in inputs_of(args):
        _refresh_links(out)
    path = write_html(args, compared)
    print(f"report: {path}")
    return 0


def _refresh_links(out: Path) -> None:
    """An emulation with shared links: its ``links.csv``, timelines and summary's ``links``
    written again from ``links/`` (nothing for other runs)."""
    import json

    from streambed.reports.links import write_links_report
    from streambed.reports.rundir import RunDir

    links = write_links_report(out)
    summary_path = RunDir(out).summary_json
    if links is None or not summary_path.is_file():
        return
    summary = json.loads(summary_path.read_text())
    summary["links"] = links
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"links: {links['count']} ({RunDir(out).links_csv})")
