"""Does learned ABR survive emulation? BBA, BOLA, RobustMPC, the shipped PPO and the shared
Pensieve-PPO checkpoint, emulated over the norway-test traces, beside the simulator's figures.

    sudo python benchmarks/bench_verdict.py [--traces ../shared/data/traces/norway-test]
        [--video ../shared/data/video/envivio] [--model models/ppo-norway.pt]
        [--pensieve ../shared/models/pensieve-ppo-ep155400.pth] [--parallel 32]
        [--delay-ms 40] [--mahimahi-traces 20] [--out runs/verdict] [--report-only]

Needs root (netns links). Runs four ``streambed emulate`` jobs, each resumable (sessions done
are not played again, so an interrupted run continues where it stopped):

* ``OUT/netns``: bba, bola, robustmpc and ppo (``--model``) over every trace;
* ``OUT/netns-pensieve``: ppo with the Pensieve-PPO checkpoint (``--pensieve``);
* ``OUT/repeat``: bba and robustmpc over every k-th trace (``--repeat-traces``), each session
  ``--repeats`` times: the run-to-run spread per trace, and the gap to the simulator per
  session and of each trace's means over its repeats;
* ``OUT/players-streambed`` and ``OUT/players-dashjs``: robustmpc and ppo over every k-th
  trace (``--players-traces``) and 60 s of ffmpeg content, with each player: where each
  session's first chunk request fell on its trace, and the per-trace gap between the players;
* ``OUT/mahimahi`` and ``OUT/mahimahi-pensieve``: the same on every k-th trace (k chosen for
  ``--mahimahi-traces``) behind real Mahimahi (as root, its shells run as
  ``$STREAMBED_MAHIMAHI_USER`` with an interpreter that user can run:
  :func:`streambed.emulation.mahimahi.readable_python`). ``--mahimahi-traces 0`` skips them.

Then each run is simulated twice: Pensieve's published simulator from each trace's start (the
numbers papers report) and the emulation's own timing (``SimConfig.faithful``, sessions
started where the emulated ones sent their first chunk request). Prints and writes
``OUT/verdict.json`` and ``OUT/verdict.md``: per algorithm and link, the emulated QoE with a
95% bootstrap interval over traces, bitrate, rebuffer ratio and switches, both simulated QoEs
and the mean |QoE gap| of each; and the paired per-trace comparison of each PPO against
RobustMPC, emulated and simulated.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from streambed.emulation.mahimahi import readable_python
from streambed.emulation.orchestrate import EmulateConfig, emulate
from streambed.reports.fidelity import match, read_per_trace
from streambed.reports.stats import bootstrap_ci, paired_comparison
from streambed.reports.summary import SessionMetrics
from streambed.traces.traceset import trace_files
from streambed.trainer.replay import (
    default_samples,
    emulated_start_s,
    plan_from_emulation,
    sim_vs_emu,
    simulate_plan,
)

ROOT = Path(__file__).resolve().parents[1]
PLAYER_RESOLUTIONS = "256x144,320x180,384x216,448x252,512x288,640x360"
SHARED = ROOT.parent / "shared"
ALGORITHMS = ("bba", "bola", "robustmpc", "ppo")
LABELS = {
    "bba": "BBA",
    "bola": "BOLA",
    "robustmpc": "RobustMPC",
    "ppo": "PPO (models/ppo-norway.pt)",
    "pensieve-ppo": "Pensieve-PPO (shared checkpoint)",
}
log = logging.getLogger("bench_verdict")


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    link: str
    algorithms: tuple[str, ...]
    model: Path
    label_ppo: str
    """What the table calls this run's ppo."""


def subset(traces: Path, count: int, out: Path) -> Path:
    """A directory of links to every k-th trace (``count`` of them, in name order)."""
    files = sorted(trace_files(traces))
    step = max(1, len(files) // max(count, 1))
    chosen = files[::step][:count]
    out.mkdir(parents=True, exist_ok=True)
    for path in chosen:
        link = out / path.name
        if not link.exists():
            link.symlink_to(path.resolve())
    return out


def run_emulation(run: Run, args: argparse.Namespace, traces: Path) -> float:
    """Play (or resume) one run; its wall time in seconds."""
    out = args.out / run.name
    started = time.monotonic()
    if run.link == "mahimahi":
        # The Mahimahi user must run the player: a readable interpreter, a process of its own.
        python = readable_python()
        cmd = [python, "-m", "streambed", "emulate", "--traces", str(traces)]
        cmd += ["--video", str(args.video), "--algorithms", ",".join(run.algorithms)]
        cmd += ["--model", str(run.model), "--link", "mahimahi"]
        cmd += ["--delay-ms", f"{args.delay_ms:g}", "--parallel", str(args.parallel)]
        cmd += ["--resume", "--no-progress", "--out", str(out)]
        subprocess.run(cmd, check=False, cwd=ROOT)
    else:
        emulate(
            EmulateConfig(
                traces=traces,
                algorithms=run.algorithms,
                out=out,
                video=args.video,
                model=run.model,
                link=run.link,
                delay_ms=args.delay_ms,
                parallel=args.parallel,
                resume=True,
                progress=not args.no_progress,
            )
        )
    return time.monotonic() - started


def renamed(metrics: list[SessionMetrics], ppo_label: str) -> list[SessionMetrics]:
    return [
        dataclasses.replace(m, algorithm=ppo_label) if m.algorithm == "ppo" else m for m in metrics
    ]


def simulated(emu_dir: Path, timing: str, aligned: bool) -> list[SessionMetrics]:
    plan = plan_from_emulation(emu_dir, align_start=aligned, timing=timing)
    metrics, _ = simulate_plan(plan, samples=default_samples(plan.base_config))
    return metrics


def repeat_figures(args: argparse.Namespace) -> dict[str, Any]:
    """Play (or resume) the repeated run and return its spread and its gaps to the simulator."""
    out = args.out / "repeat"
    traces = subset(args.traces, args.repeat_traces, args.out / "repeat-traces")
    if not args.report_only:
        emulate(
            EmulateConfig(
                traces=traces,
                algorithms=("bba", "robustmpc"),
                out=out,
                video=args.video,
                link="netns",
                delay_ms=args.delay_ms,
                parallel=min(args.parallel, 25),
                repeat=args.repeats,
                resume=True,
                progress=not args.no_progress,
            )
        )
    if not (out / "per_trace.csv").is_file():
        return {}
    summary = json.loads((out / "summary.json").read_text())
    found = sim_vs_emu(out, out / "fidelity", align_start=True)
    return {
        "run_to_run": summary.get("run_to_run"),
        "sim_vs_emu": {
            k: found["overall"].get(k)
            for k in ("qoe_gap_mean_abs", "qoe_gap_mean_abs_over_repeats", "qoe_gap_mean")
        },
        "sim_vs_emu_by_algorithm": {
            a: {k: s.get(k) for k in ("qoe_gap_mean_abs", "qoe_gap_mean_abs_over_repeats")}
            for a, s in found["algorithms"].items()
        },
    }


def gap(sim: list[SessionMetrics], emu: list[SessionMetrics]) -> float:
    rows = match(sim, emu).rows
    values = [abs(r.qoe_gap) for r in rows if r.qoe_gap == r.qoe_gap]
    return sum(values) / len(values) if values else float("nan")


def table_rows(
    emu: list[SessionMetrics],
    sim_pensieve: list[SessionMetrics],
    sim_wall: list[SessionMetrics],
    link: str,
) -> list[dict[str, Any]]:
    rows = []
    for algorithm in dict.fromkeys(m.algorithm for m in emu):
        mine = [m for m in emu if m.algorithm == algorithm]
        qoe = [m.qoe for m in mine]
        mean, low, high = bootstrap_ci(qoe)
        by_alg = {
            "pensieve": [m for m in sim_pensieve if m.algorithm == algorithm],
            "wall": [m for m in sim_wall if m.algorithm == algorithm],
        }
        rows.append(
            {
                "link": link,
                "algorithm": algorithm,
                "traces": len(mine),
                "emu_qoe": mean,
                "emu_qoe_ci": [low, high],
                "bitrate_kbps": sum(m.bitrate_mean_kbps for m in mine) / len(mine),
                "rebuffer_ratio": sum(m.rebuffer_ratio for m in mine) / len(mine),
                "switches_per_chunk": sum(m.switches_per_chunk for m in mine) / len(mine),
                **{
                    f"sim_{k}_qoe": sum(m.qoe for m in v) / len(v) if v else float("nan")
                    for k, v in by_alg.items()
                },
                **{f"gap_{k}": gap(v, mine) for k, v in by_alg.items()},
            }
        )
    return rows


def paired(metrics: list[SessionMetrics], a: str, b: str) -> dict[str, Any]:
    qa = {m.trace: m.qoe for m in metrics if m.algorithm == a}
    qb = {m.trace: m.qoe for m in metrics if m.algorithm == b}
    c = paired_comparison(qa, qb)
    return {
        "a": a,
        "b": b,
        "traces": c.traces,
        "mean_diff": c.mean_diff,
        "ci": [c.low, c.high],
        "wins": c.wins,
        "ties": c.ties,
        "losses": c.losses,
    }


def markdown(rows: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> str:
    lines = [
        "| link | algorithm | traces | emulated QoE [95% CI] | bitrate kbps | rebuffer ratio "
        "| switches/chunk | simulated QoE (Pensieve) | simulated QoE (emulation's timing) "
        "| mean \\|gap\\| Pensieve / timing |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        low, high = r["emu_qoe_ci"]
        lines.append(
            f"| {r['link']} | {LABELS.get(r['algorithm'], r['algorithm'])} | {r['traces']} "
            f"| {r['emu_qoe']:.3f} [{low:.3f}, {high:.3f}] | {r['bitrate_kbps']:,.0f} "
            f"| {r['rebuffer_ratio']:.4f} | {r['switches_per_chunk']:.3f} "
            f"| {r['sim_pensieve_qoe']:.3f} | {r['sim_wall_qoe']:.3f} "
            f"| {r['gap_pensieve']:.3f} / {r['gap_wall']:.3f} |"
        )
    lines += [
        "",
        "| link | where | A | B | traces | mean A - B [95% CI] | A better / tie / worse |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in pairs:
        low, high = p["ci"]
        lines.append(
            f"| {p['link']} | {p['where']} | {LABELS.get(p['a'], p['a'])} "
            f"| {LABELS.get(p['b'], p['b'])} | {p['traces']} "
            f"| {p['mean_diff']:+.3f} [{low:+.3f}, {high:+.3f}] "
            f"| {p['wins']} / {p['ties']} / {p['losses']} |"
        )
    return "\n".join(lines) + "\n"


def players_figures(args: argparse.Namespace) -> dict[str, Any]:
    """Both players (headless and dash.js in Chromium) over the same few traces and real
    ffmpeg content: each session's trace position at its first chunk request, and the
    per-trace QoE gap between the players."""
    content = args.out / "players-content"
    if not (content / "video.json").is_file() and not args.report_only:
        subprocess.run(
            [sys.executable, "-m", "streambed", "origin", "build", "--out", str(content)]
            + ["--duration-s", "60", "--fps", "12", "--resolutions", PLAYER_RESOLUTIONS],
            check=True,
            cwd=ROOT,
        )
    traces = subset(args.traces, args.players_traces, args.out / "players-traces")
    found: dict[str, Any] = {}
    for player in ("streambed", "dashjs"):
        out = args.out / f"players-{player}"
        if not args.report_only:
            emulate(
                EmulateConfig(
                    traces=traces,
                    algorithms=("robustmpc", "ppo"),
                    out=out,
                    content=content,
                    model=args.model,
                    link="netns",
                    delay_ms=args.delay_ms,
                    parallel=4 if player == "dashjs" else 16,
                    player=player,
                    resume=True,
                    progress=not args.no_progress,
                )
            )
        if not (out / "per_trace.csv").is_file():
            continue
        starts = [
            s
            for s in (emulated_start_s(out, m.algorithm, m.trace) for m in read_per_trace(out))
            if s is not None
        ]
        found[player] = {
            "qoe": {(m.algorithm, m.trace): m.qoe for m in read_per_trace(out)},
            "first_chunk_request_trace_s": [min(starts), max(starts)] if starts else None,
        }
    if len(found) < 2:
        return {}
    head, dash = found["streambed"]["qoe"], found["dashjs"]["qoe"]
    gaps = [dash[k] - head[k] for k in head.keys() & dash.keys()]
    return {
        "sessions": len(gaps),
        "qoe_gap_mean": sum(gaps) / len(gaps),
        "qoe_gap_mean_abs": sum(abs(g) for g in gaps) / len(gaps),
        "first_chunk_request_trace_s": {
            p: f["first_chunk_request_trace_s"] for p, f in found.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=Path, default=SHARED / "data/traces/norway-test")
    parser.add_argument("--video", type=Path, default=SHARED / "data/video/envivio")
    parser.add_argument("--model", type=Path, default=ROOT / "models/ppo-norway.pt")
    parser.add_argument(
        "--pensieve", type=Path, default=SHARED / "models/pensieve-ppo-ep155400.pth"
    )
    parser.add_argument("--parallel", type=int, default=32)
    parser.add_argument("--delay-ms", type=float, default=40.0)
    parser.add_argument("--mahimahi-traces", type=int, default=20)
    parser.add_argument("--repeat-traces", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--players-traces", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("runs/verdict"))
    parser.add_argument(
        "--report-only", action="store_true", help="play nothing: report what OUT holds"
    )
    parser.add_argument(
        "--players-only", action="store_true", help="run and report the two players' stage only"
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.players_only:
        print(json.dumps(players_figures(args), indent=1))
        return
    runs = [
        Run("netns", "netns", ALGORITHMS, args.model, "ppo"),
        Run("netns-pensieve", "netns", ("ppo",), args.pensieve, "pensieve-ppo"),
    ]
    if args.mahimahi_traces > 0:
        runs += [
            Run("mahimahi", "mahimahi", ALGORITHMS, args.model, "ppo"),
            Run("mahimahi-pensieve", "mahimahi", ("ppo",), args.pensieve, "pensieve-ppo"),
        ]
    few = subset(args.traces, args.mahimahi_traces, args.out / "mahimahi-traces")
    figures: dict[str, Any] = {
        "machine": f"{platform.node()} ({os.cpu_count()} cores)",
        "date": date.today().isoformat(),
        "traces": str(args.traces),
        "parallel": args.parallel,
        "delay_ms": args.delay_ms,
        "wall_s": {},
    }
    by_link: dict[str, dict[str, list[SessionMetrics]]] = {}
    for run in runs:
        traces = few if run.link == "mahimahi" else args.traces
        if not args.report_only:
            figures["wall_s"][run.name] = round(run_emulation(run, args, traces), 1)
        emu_dir = args.out / run.name
        if not (emu_dir / "per_trace.csv").is_file():
            log.warning("%s: no sessions yet", emu_dir)
            continue
        sides = by_link.setdefault(run.link, {"emu": [], "pensieve": [], "wall": []})
        sides["emu"] += renamed(read_per_trace(emu_dir), run.label_ppo)
        sides["pensieve"] += renamed(simulated(emu_dir, "pensieve", False), run.label_ppo)
        sides["wall"] += renamed(simulated(emu_dir, "wall", True), run.label_ppo)
    rows: list[dict[str, Any]] = []
    pairs: list[dict[str, Any]] = []
    for link, sides in by_link.items():
        rows += table_rows(sides["emu"], sides["pensieve"], sides["wall"], link)
        for a in ("ppo", "pensieve-ppo"):
            for where in ("emu", "pensieve", "wall"):
                found = paired(sides[where], a, "robustmpc")
                if found["traces"]:
                    pairs.append({"link": link, "where": where, **found})
    figures["table"] = rows
    figures["paired"] = pairs
    if args.repeat_traces > 0:
        figures["repeat"] = repeat_figures(args)
    if args.players_traces > 0:
        figures["players"] = players_figures(args)
    text = markdown(rows, pairs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "verdict.json").write_text(json.dumps(figures, indent=1) + "\n")
    (args.out / "verdict.md").write_text(text)
    print(text)
    print(
        json.dumps({k: figures.get(k) for k in ("machine", "date", "wall_s", "repeat", "players")})
    )


if __name__ == "__main__":
    main()
