"""Learned policies against RobustMPC and the Pensieve-PPO checkpoint on stress trace sets (issue 23).

    nice -n 10 .venv/bin/python benchmarks/bench_stress.py --out runs/stress
    .venv/bin/python benchmarks/bench_stress.py --model models/ppo-norway.pt --model runs/x/best.pt

For each stress kind (``streambed traces stress KIND``: outage, onoff, cliff, fast, slow,
variable) it writes --traces-per-set traces with --seed into OUT/traces/KIND, then evaluates them
with ``streambed eval`` in subprocesses, as a user would (test mode, greedy, the Envivio video
of ../shared): robustmpc, bba and optimal (the offline optimum, for scale) with the first --model
as ppo, then ``--algorithms ppo`` once per further --model and once for the Pensieve-PPO
checkpoint. eval has one learned slot per run (``--model`` and ``--param ppo.model=`` both set
``ppo``; there are no aliases), so each further checkpoint is a run of its own; the traces and
the test-mode simulator are deterministic, so the runs compare exactly. norway-test (142 HSDPA
traces) is the reference row.

Prints one JSON object on stdout and writes a Markdown table (qoe_mean per algorithm, a verdict
per learned model: its qoe_mean >= robustmpc's, >= the Pensieve-PPO checkpoint's, with the mean
per-trace difference and its 95% interval) to --markdown (default OUT/stress.md; stderr without
--out). Needs ../shared/data beside the repository. About 1 minute per set on a free 2-core
machine (the optimum's plans are most of it).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
STREAMBED = str(Path(sys.executable).parent / "streambed")
KINDS = ("outage", "onoff", "cliff", "fast", "slow", "variable")
REFERENCE = "norway-test"
RULES = ("robustmpc", "bba")
PENSIEVE = "pensieve-ppo"


def fail(message: str) -> None:
    sys.exit(f"bench_stress: {message}")


def streambed(*argv: str) -> None:
    """Run ``streambed ARGV``; on failure exit with its last line of stderr."""
    done = subprocess.run([STREAMBED, *argv], capture_output=True, text=True)
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        fail(f"streambed {' '.join(argv[:2])} failed: {lines[-1]}")


def model_labels(paths: list[Path]) -> list[str]:
    """A short column name per model: its file stem, or parent/stem when stems repeat."""
    stems = [p.stem for p in paths]
    labels = [f"{p.parent.name}/{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in paths]
    if len(set(labels)) < len(labels) or PENSIEVE in labels:
        labels = [f"model{i + 1}" for i in range(len(paths))]
    return labels


def evaluate(traces: Path, video: Path, algorithms: str, model: Path | None, out: Path) -> Path:
    """``streambed eval`` into ``out``; returns ``out``."""
    argv = ["eval", "--traces", str(traces), "--video", str(video), "--algorithms", algorithms]
    if model is not None:
        argv += ["--model", str(model)]
    streambed(*argv, "--out", str(out), "--no-progress")
    return out


def read_eval(
    out: Path, rename: dict[str, str]
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """(summary per algorithm, QoE per algorithm and trace), ``ppo`` renamed per ``rename``."""
    summary = json.loads((out / "summary.json").read_text())["algorithms"]
    per_trace: dict[str, dict[str, float]] = defaultdict(dict)
    with (out / "per_trace.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            per_trace[rename.get(row["algorithm"], row["algorithm"])][row["trace"]] = float(
                row["qoe"]
            )
    return {rename.get(k, k): v for k, v in summary.items()}, dict(per_trace)


def paired(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Mean per-trace difference a - b, its 95% half-width (normal approximation), and the
    number of traces where a is below b."""
    diffs = [a[t] - b[t] for t in sorted(a)]
    n = len(diffs)
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
    return {
        "diff": mean,
        "ci95": 1.96 * math.sqrt(var / n),
        "worse_traces": sum(d < 0 for d in diffs),
        "traces": n,
    }


def trace_mean_mbps(traces: Path) -> float:
    """Mean over traces of each trace's time-weighted mean throughput."""
    from streambed.traces import load_traceset, summarize

    return summarize(load_traceset(traces)).mean_mbps


def run_set(
    name: str,
    traces: Path,
    video: Path,
    models: list[Path],
    labels: list[str],
    pensieve: Path | None,
    optimal: bool,
    out: Path,
) -> dict[str, Any]:
    """Every algorithm on one trace set: summaries, verdicts, timings."""
    started = time.perf_counter()
    first = ",".join([*RULES, *(["optimal"] if optimal else []), "ppo"])
    runs = [(first, models[0], labels[0])]
    runs += [("ppo", m, label) for m, label in zip(models[1:], labels[1:], strict=True)]
    if pensieve is not None:
        runs.append(("ppo", pensieve, PENSIEVE))
    summary: dict[str, Any] = {}
    per_trace: dict[str, dict[str, float]] = {}
    for algorithms, model, label in runs:
        s, p = read_eval(evaluate(traces, video, algorithms, model, out / label), {"ppo": label})
        summary.update(s)
        per_trace.update(p)
    verdicts: dict[str, Any] = {}
    for label in labels:
        verdicts[label] = {
            ref: {
                "ok": summary[label]["qoe_mean"] >= summary[ref]["qoe_mean"],
                **paired(per_trace[label], per_trace[ref]),
            }
            for ref in ("robustmpc", *([PENSIEVE] if pensieve is not None else []))
        }
    return {
        "set": name,
        "traces": summary[labels[0]]["traces"],
        "mean_mbps": trace_mean_mbps(traces),
        "algorithms": {
            k: {
                "qoe_mean": v["qoe_mean"],
                "bitrate_mean_kbps": v["bitrate_mean_kbps"],
                "rebuffer_ratio": v["rebuffer_ratio"],
                "switches_per_chunk": v["switches_per_chunk"],
            }
            for k, v in summary.items()
        },
        "verdicts": verdicts,
        "seconds": round(time.perf_counter() - started, 1),
    }


def verdict_cell(v: dict[str, Any] | None) -> str:
    if v is None:
        return "n/a"
    word = "yes" if v["ok"] else "**NO**"
    return f"{word} ({v['diff']:+.3f} ± {v['ci95']:.3f}; {v['worse_traces']}/{v['traces']} worse)"


def markdown(result: dict[str, Any]) -> str:
    """The results as Markdown: QoE and verdicts, then bitrate and rebuffering."""
    labels: list[str] = result["models"]
    has_pensieve = result["pensieve"] is not None
    algos = [*RULES, *(["optimal"] if result["optimal"] else [])]
    algos += [*([PENSIEVE] if has_pensieve else []), *labels]
    head = ["set", "traces", "mean Mbit/s", *algos]
    for label in labels:
        head += [f"{label} >= robustmpc"]
        if has_pensieve:
            head += [f"{label} >= {PENSIEVE}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["sets"]:
        cells = [row["set"], str(row["traces"]), f"{row['mean_mbps']:.2f}"]
        cells += [f"{row['algorithms'][a]['qoe_mean']:.3f}" for a in algos]
        for label in labels:
            cells.append(verdict_cell(row["verdicts"][label].get("robustmpc")))
            if has_pensieve:
                cells.append(verdict_cell(row["verdicts"][label].get(PENSIEVE)))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Mean bitrate (kbps) / rebuffer ratio (stall / (stall + played), %):",
        "",
        "| set | " + " | ".join(algos) + " |",
        "|---|" + "---|" * len(algos),
    ]
    for row in result["sets"]:
        cells = [
            f"{row['algorithms'][a]['bitrate_mean_kbps']:.0f} / "
            f"{100 * row['algorithms'][a]['rebuffer_ratio']:.2f}"
            for a in algos
        ]
        lines.append(f"| {row['set']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        action="append",
        metavar="CKPT[,CKPT]",
        help="learned checkpoint(s) to judge, repeatable or comma-separated; the first also "
        "runs with the rules (default: models/ppo-norway.pt)",
    )
    parser.add_argument(
        "--pensieve",
        type=Path,
        default=SHARED / "models" / "pensieve-ppo-ep155400.pth",
        help="the Pensieve-PPO checkpoint to compare with ('none' to skip; default: %(default)s)",
    )
    parser.add_argument(
        "--traces-per-set", type=int, default=40, help="traces per stress set (default: 40)"
    )
    parser.add_argument("--seed", type=int, default=23, help="seed of every set (default: 23)")
    parser.add_argument(
        "--sets",
        default=",".join(KINDS),
        help=f"comma-separated stress kinds (default: %(default)s), plus {REFERENCE} always",
    )
    parser.add_argument("--no-reference", action="store_true", help=f"skip the {REFERENCE} row")
    parser.add_argument("--no-optimal", action="store_true", help="skip the offline optimum")
    parser.add_argument(
        "--out",
        type=Path,
        help="directory for the traces, eval outputs, stress.json and stress.md "
        "(default: a temporary directory, deleted afterwards)",
    )
    parser.add_argument("--markdown", type=Path, help="Markdown table (default: OUT/stress.md)")
    args = parser.parse_args()

    models = [Path(p) for item in (args.model or ["models/ppo-norway.pt"]) for p in item.split(",")]
    for model in models:
        if not model.is_file():
            fail(f"--model {model}: no such file")
    pensieve: Path | None = None if str(args.pensieve) == "none" else args.pensieve
    if pensieve is not None and not pensieve.is_file():
        fail(f"--pensieve {pensieve}: no such file ('--pensieve none' to skip it)")
    if not 1 <= args.traces_per_set <= 10_000:
        fail(f"--traces-per-set {args.traces_per_set}: must be in [1, 10000]")
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = sorted(set(sets) - set(KINDS))
    if unknown:
        fail(f"--sets: unknown kind(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    video = SHARED / "data" / "video" / "envivio"
    reference = SHARED / "data" / "traces" / REFERENCE
    if not video.is_dir() or not (args.no_reference or reference.is_dir()):
        fail(f"{SHARED / 'data'} is absent: the Envivio video and norway-test live there")
    labels = model_labels(models)

    with tempfile.TemporaryDirectory(prefix="bench_stress-") as tmp:
        out = args.out or Path(tmp)
        result: dict[str, Any] = {
            "models": labels,
            "model_paths": [str(m) for m in models],
            "pensieve": str(pensieve) if pensieve is not None else None,
            "optimal": not args.no_optimal,
            "traces_per_set": args.traces_per_set,
            "seed": args.seed,
            "video": str(video),
            "machine": f"{platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}",
            "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "loadavg_start": os.getloadavg()[0],
            "sets": [],
        }
        started = time.perf_counter()
        todo = [(kind, out / "traces" / kind) for kind in sets]
        if not args.no_reference:
            todo.append((REFERENCE, reference))
        for name, traces in todo:
            if name != REFERENCE:
                streambed(
                    "traces", "stress", name, "--out", str(traces),
                    "--count", str(args.traces_per_set), "--seed", str(args.seed),
                )  # fmt: skip
            row = run_set(
                name, traces, video, models, labels, pensieve, not args.no_optimal,
                out / "eval" / name,
            )  # fmt: skip
            result["sets"].append(row)
            print(
                f"bench_stress: {name}: "
                + ", ".join(f"{k} {v['qoe_mean']:.3f}" for k, v in row["algorithms"].items())
                + f" ({row['seconds']:.0f} s)",
                file=sys.stderr,
            )
        result["seconds"] = round(time.perf_counter() - started, 1)
        result["loadavg_end"] = os.getloadavg()[0]
        result["losses"] = [
            {"set": row["set"], "model": label, "vs": ref, "by": -v["diff"]}
            for row in result["sets"]
            for label, refs in row["verdicts"].items()
            for ref, v in refs.items()
            if not v["ok"]
        ]
        table = markdown(result)
        target = args.markdown or (args.out / "stress.md" if args.out else None)
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(table)
        else:
            print(table, file=sys.stderr)
        if args.out is not None:
            (args.out / "stress.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
