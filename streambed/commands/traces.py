"""``streambed traces``: convert, generate and summarise network traces."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, NoReturn

from tqdm import tqdm

from streambed.core.errors import TraceError
from streambed.core.fielddocs import field_docs
from streambed.traces.formats import (
    detect_format,
    load_mahimahi,
    load_pensieve,
    load_trace,
    pensieve_to_mahimahi,
    save_mahimahi,
    save_pensieve,
)
from streambed.traces.stress import (
    NARGS,
    RANGE,
    STRESS_KINDS,
    UNIT,
    StressParams,
    describe_range,
    flag_name,
    generate_stress_set,
)
from streambed.traces.synth import SynthParams, generate_set
from streambed.traces.traceset import load_traceset, summarize, trace_files

logger = logging.getLogger(__name__)

_DEFAULTS = SynthParams()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``traces`` command and its sub-commands to ``subparsers``."""
    parser = subparsers.add_parser(
        "traces",
        help="convert, generate and summarise network traces",
        description="Network traces: convert between Pensieve and Mahimahi formats, "
        "generate synthetic trace sets and stress sets, and summarise a trace file or "
        "directory.",
    )
    parser.set_defaults(func=_print_help(parser))
    sub = parser.add_subparsers(dest="traces_command", metavar="SUBCOMMAND")

    convert = sub.add_parser(
        "convert",
        help="convert a trace file or directory to Mahimahi or Pensieve format",
        description="Convert SRC (a trace file or a directory of them, either format, "
        "autodetected) into --to format at DST. A directory SRC is converted file by file into "
        "the directory DST, keeping the file names.",
    )
    convert.add_argument("src", metavar="SRC", type=Path, help="trace file or directory")
    convert.add_argument("dst", metavar="DST", type=Path, help="output file or directory")
    convert.add_argument(
        "--to", required=True, choices=("mahimahi", "pensieve"), help="output format"
    )
    convert.add_argument(
        "--bin-s",
        type=float,
        default=1.0,
        help="bin width in seconds when converting Mahimahi to Pensieve (default: 1.0)",
    )
    convert.set_defaults(func=run_convert)

    generate = sub.add_parser(
        "generate",
        help="generate a set of synthetic Markov-modulated traces",
        description="Write COUNT synthetic Pensieve-format traces synth_000, synth_001, ... "
        "into DIR. The same --seed always gives the same traces.",
    )
    generate.add_argument("--out", required=True, type=Path, metavar="DIR", help="output dir")
    generate.add_argument("--count", type=int, default=20, help="number of traces (default: 20)")
    generate.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    generate.add_argument(
        "--duration-s",
        type=float,
        default=_DEFAULTS.duration_s,
        help=f"trace length in seconds (default: {_DEFAULTS.duration_s:g})",
    )
    generate.add_argument(
        "--interval-s",
        type=float,
        default=_DEFAULTS.interval_s,
        help=f"seconds per trace line (default: {_DEFAULTS.interval_s:g})",
    )
    generate.add_argument(
        "--states-mbps",
        type=float,
        nargs="+",
        default=list(_DEFAULTS.states_mbps),
        metavar="MBPS",
        help="mean throughput of each hidden state (default: "
        + " ".join(f"{s:g}" for s in _DEFAULTS.states_mbps)
        + ")",
    )
    generate.add_argument(
        "--switch-prob",
        type=float,
        default=_DEFAULTS.switch_prob,
        help="per-interval probability of moving to a neighbouring state "
        f"(default: {_DEFAULTS.switch_prob:g})",
    )
    generate.add_argument(
        "--noise-cv",
        type=float,
        default=_DEFAULTS.noise_cv,
        help=f"coefficient of variation of the per-interval noise (default: {_DEFAULTS.noise_cv:g})",
    )
    generate.add_argument(
        "--min-mbps",
        type=float,
        default=_DEFAULTS.min_mbps,
        help=f"throughput floor outside outages (default: {_DEFAULTS.min_mbps:g})",
    )
    generate.add_argument(
        "--outage-prob",
        type=float,
        default=_DEFAULTS.outage_prob,
        help="per-interval probability of starting a zero-bandwidth outage "
        f"(default: {_DEFAULTS.outage_prob:g})",
    )
    generate.add_argument(
        "--outage-s",
        type=float,
        nargs=2,
        default=list(_DEFAULTS.outage_s),
        metavar=("MIN", "MAX"),
        help="outage length range in seconds (default: "
        + " ".join(f"{s:g}" for s in _DEFAULTS.outage_s)
        + ")",
    )
    generate.set_defaults(func=run_generate)

    _register_stress(sub)

    info = sub.add_parser(
        "info",
        help="summarise a trace file or a trace set directory",
        description="Print summary statistics (count, durations, mean and time-weighted "
        "percentiles of throughput) of a trace file or a directory of traces.",
    )
    info.add_argument("path", metavar="PATH", type=Path, help="trace file or directory")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.add_argument(
        "--bin-s",
        type=float,
        default=1.0,
        help="bin width in seconds for Mahimahi inputs (default: 1.0)",
    )
    info.set_defaults(func=run_info)


class _OneLineParser(argparse.ArgumentParser):
    """A parser whose usage errors are one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Any = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        # A stray word would otherwise reach the top parser, whose error prints the usage too.
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def _register_stress(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kinds = "; ".join(f"{name}: {cls.summary}" for name, cls in STRESS_KINDS.items())
    stress = sub.add_parser(
        "stress",
        help="generate a seeded stress trace set of one kind (outage, onoff, cliff, fast, ...)",
        description="Write COUNT seeded Pensieve-format traces KIND_000, KIND_001, ... of one "
        f"stress kind into DIR ({kinds}). The same flags and --seed always give the same "
        "bytes. `streambed traces stress KIND --help` lists the kind's flags, each with its "
        "unit, range and default.",
    )
    stress.set_defaults(func=_print_help(stress))
    kind_sub = stress.add_subparsers(
        dest="stress_kind", metavar="KIND", parser_class=_OneLineParser
    )
    for name, cls in STRESS_KINDS.items():
        doc = (cls.__doc__ or "").strip()
        kind = kind_sub.add_parser(
            name,
            help=cls.summary,
            description=f"{doc} Defaults: {cls.summary}. Writes COUNT traces {name}_000, "
            f"{name}_001, ... into DIR; trace i is the same whatever COUNT is.",
        )
        kind.add_argument("--out", required=True, type=Path, metavar="DIR", help="output dir")
        kind.add_argument(
            "--count", type=int, default=40, help="number of traces, in [1, 100000] (default: 40)"
        )
        kind.add_argument("--seed", type=int, default=0, help="random seed, >= 0 (default: 0)")
        _add_param_flags(kind, cls)
        kind.set_defaults(func=run_stress, stress_params=cls)


_METAVARS = {"s": "S", "Mbit/s": "MBPS", "1/min": "RATE", "per interval": "P", "states": "N"}


def _add_param_flags(parser: argparse.ArgumentParser, cls: type[StressParams]) -> None:
    """One flag per field of ``cls``, its help naming the unit, the range and the default."""
    docs = field_docs(cls)
    for f in fields(cls):
        default = f.default
        assert default is not MISSING  # every stress field has a default
        low, high = f.metadata[RANGE]
        unit = f.metadata[UNIT]
        nargs = f.metadata.get(NARGS)
        doc = " ".join(docs.get(f.name, "").replace("``", "'").split()).rstrip(".")
        metavar: str | tuple[str, str] = _METAVARS.get(unit, "X")
        extra: dict[str, Any] = {}
        if nargs is not None:
            shown = " ".join(f"{v:g}" for v in default)
            metavar = ("MIN", "MAX") if nargs == 2 else metavar
            extra = {"nargs": nargs}
            each = "each "
        else:
            shown = f"{default:g}"
            each = ""
        parser.add_argument(
            flag_name(f.name),
            dest=f.name,
            type=int if isinstance(default, int) else float,
            default=default,
            metavar=metavar,
            help=f"{doc} ({each}in {describe_range(low, high, unit)}; default: {shown})",
            **extra,
        )


def _print_help(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return run


def _convert_file(src: Path, dst: Path, to: str, bin_s: float) -> None:
    # Converting within one format re-writes the file in canonical form instead of taking a
    # lossy detour through the other format.
    if to == "mahimahi":
        if detect_format(src) == "mahimahi":
            ms = load_mahimahi(src)
        else:
            ms = pensieve_to_mahimahi(load_pensieve(src))
        save_mahimahi(ms, dst)
    else:
        save_pensieve(load_trace(src, bin_s=bin_s), dst)


def run_convert(args: argparse.Namespace) -> int:
    """Convert one file or every file of a directory."""
    src: Path = args.src
    dst: Path = args.dst
    if not src.exists():
        raise TraceError(f"{src}: no such file or directory")
    if src.is_dir():
        files = trace_files(src)
        if dst.exists() and not dst.is_dir():
            raise TraceError(f"{dst}: SRC is a directory, so DST must be a directory too")
        dst.mkdir(parents=True, exist_ok=True)
        # Closed before an error propagates: its line must not continue the bar's.
        with tqdm(files, desc="convert", unit="trace", disable=None) as bar:
            for path in bar:
                _convert_file(path, dst / path.name, args.to, args.bin_s)
        logger.info("converted %d traces from %s to %s (%s format)", len(files), src, dst, args.to)
        return 0
    target = dst / src.name if dst.is_dir() else dst
    target.parent.mkdir(parents=True, exist_ok=True)
    _convert_file(src, target, args.to, args.bin_s)
    logger.info("converted %s to %s (%s format)", src, target, args.to)
    return 0


def run_generate(args: argparse.Namespace) -> int:
    """Write a synthetic trace set."""
    params = SynthParams(
        duration_s=args.duration_s,
        interval_s=args.interval_s,
        states_mbps=tuple(args.states_mbps),
        switch_prob=args.switch_prob,
        noise_cv=args.noise_cv,
        min_mbps=args.min_mbps,
        outage_prob=args.outage_prob,
        outage_s=(args.outage_s[0], args.outage_s[1]),
    )
    paths = generate_set(args.out, args.count, params, args.seed)
    logger.info("wrote %d traces to %s (seed %d)", len(paths), args.out, args.seed)
    return 0


def run_stress(args: argparse.Namespace) -> int:
    """Write a stress trace set of one kind."""
    cls: type[StressParams] = args.stress_params
    values: dict[str, Any] = {
        f.name: tuple(v) if isinstance(v := getattr(args, f.name), list) else v for f in fields(cls)
    }
    params = cls(**values)
    paths = generate_stress_set(args.out, params, args.count, args.seed)
    logger.info("wrote %d %s traces to %s (seed %d)", len(paths), cls.kind, args.out, args.seed)
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Print the summary of a trace file or directory."""
    path: Path = args.path
    if path.is_dir():
        traces = load_traceset(path, bin_s=args.bin_s)
    elif path.exists():
        traces = [load_trace(path, bin_s=args.bin_s)]
    else:
        raise TraceError(f"{path}: no such file or directory")
    summary = summarize(traces)
    if args.json:
        print(json.dumps({"path": str(path), **summary.to_dict()}, indent=2))
        return 0
    rows = [
        ("path", str(path)),
        ("traces", str(summary.count)),
        ("total duration", f"{summary.total_duration_s:.1f} s"),
        ("mean duration", f"{summary.mean_duration_s:.1f} s"),
        ("mean throughput", f"{summary.mean_mbps:.3f} Mbit/s (mean of per-trace means)"),
        (
            "per-trace mean",
            f"min {summary.min_trace_mean_mbps:.3f} / max {summary.max_trace_mean_mbps:.3f} Mbit/s",
        ),
        (
            "p10 / p50 / p90",
            f"{summary.p10_mbps:.3f} / {summary.p50_mbps:.3f} / {summary.p90_mbps:.3f} Mbit/s "
            "(time-weighted)",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0
