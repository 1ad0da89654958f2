"""Simulation versus emulation: the same traces, video and algorithms in both, trace by trace.

* :func:`compare` joins the ``per_trace.csv`` of a simulation (``streambed eval``) and of an
  emulation (``streambed emulate``) on (algorithm, trace) into :class:`FidelityRow` s: each
  side's QoE, mean bitrate and rebuffering, and the gaps, always *emulated minus simulated*.
  Sessions present on one side only are left out with a warning.
* :func:`write_sim_vs_emu` writes ``sim_vs_emu.csv`` (the rows), ``sim_vs_emu.json`` (per
  algorithm and overall: mean absolute QoE gap, mean QoE gap (the bias), mean absolute bitrate
  and rebuffer gaps, count) and ``sim_vs_emu.png`` (emulated against simulated QoE with the
  y = x line, and the distribution of the QoE gaps).
* :func:`simulate_like` runs the test-mode simulator on what an emulation ran: the traces of
  its ``traces_dir`` that it has sessions of, its video (the summary's ``content``, else
  ``content/video.json``, or one given)
  and its algorithms, and writes an eval-style directory whose trace labels are the
  emulation's (a repeated session ``<stem>-rR`` gets the one simulated session of ``<stem>``:
  test mode is deterministic). Sessions cut short (``--max-chunks``) are compared on as many
  chunks: the simulator plays the whole video (so the algorithm sees the video the emulated
  player announced to it) and its records are cut to the emulated session's chunk count.
  A simulated session starts at the trace's beginning, as ``streambed eval``'s; an emulated
  one starts where the link's trace clock was when the player sent its first request
  (``link.trace_offset_s`` in session.json, seconds to tens of seconds on a loaded host). With
  ``align_start`` each simulated session starts there too (:func:`rotate_trace`), which
  compares like with like.
* :func:`sim_vs_emu` does both for an emulation directory: simulate, compare, write.

Building blocks, for callers with their own loops (``streambed.emulation.calibrate``):
:func:`plan_from_emulation` reads what an emulation ran, :func:`simulate_plan` simulates it in
memory, :func:`write_simulation` also writes the eval-style report.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streambed.core.errors import ConfigError, ReportError
from streambed.reports.load import read_per_trace_csv
from streambed.reports.sessionlog import ChunkRecord
from streambed.reports.summary import SessionMetrics, session_metrics

if TYPE_CHECKING:
    from streambed.abr_service.video import Video
    from streambed.traces import Trace
    from streambed.trainer.simulator import SimConfig

log = logging.getLogger(__name__)

PER_TRACE_CSV = "per_trace.csv"
SUMMARY_JSON = "summary.json"
SIM_VS_EMU_CSV = "sim_vs_emu.csv"
SIM_VS_EMU_JSON = "sim_vs_emu.json"
SIM_VS_EMU_PNG = "sim_vs_emu.png"
_REPEAT_LABEL = re.compile(r"^(?P<stem>.+)-r(?P<repeat>\d+)$")


@dataclass(frozen=True)
class FidelityRow:
    """One (algorithm, trace) session simulated and emulated; every gap is emu - sim."""

    algorithm: str
    trace: str
    sim_qoe: float
    emu_qoe: float
    qoe_gap: float
    sim_bitrate_kbps: float
    emu_bitrate_kbps: float
    bitrate_gap_kbps: float
    sim_rebuffer_ratio: float
    emu_rebuffer_ratio: float
    rebuffer_ratio_gap: float
    sim_rebuffer_s: float
    emu_rebuffer_s: float
    rebuffer_s_gap: float
    sim_chunks: int
    emu_chunks: int


@dataclass
class Matched:
    """The rows of the sessions on both sides, and the (algorithm, trace) keys on one only."""

    rows: list[FidelityRow]
    only_sim: list[tuple[str, str]] = field(default_factory=list)
    only_emu: list[tuple[str, str]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Reading and joining


def read_per_trace(directory: Path) -> list[SessionMetrics]:
    """The rows of ``directory/per_trace.csv`` (``ConfigError`` naming the file, line, column)."""
    path = Path(directory) / PER_TRACE_CSV
    if not path.is_file():
        raise ConfigError(f"{path}: no such file (not a streambed eval/emulate output directory?)")
    try:
        return read_per_trace_csv(path)
    except ReportError as exc:
        raise ConfigError(str(exc)) from None


def _by_key(metrics: Sequence[SessionMetrics], where: str) -> dict[tuple[str, str], SessionMetrics]:
    keyed: dict[tuple[str, str], SessionMetrics] = {}
    for m in metrics:
        key = (m.algorithm, m.trace)
        if key in keyed:
            raise ConfigError(f"{where}: algorithm {m.algorithm!r} trace {m.trace!r} twice")
        keyed[key] = m
    return keyed


def match(
    sim: Sequence[SessionMetrics],
    emu: Sequence[SessionMetrics],
    *,
    sim_where: str = "simulation",
    emu_where: str = "emulation",
) -> Matched:
    """Join two sets of per-trace metrics on (algorithm, trace), in the emulation's order.

    ``streambed eval`` names a trace by its file name and ``streambed emulate`` by the file's
    stem, so a simulated ``x.log`` matches an emulated ``x`` when no simulated ``x`` exists."""
    sim_by, emu_by = _by_key(sim, sim_where), _by_key(emu, emu_where)
    by_stem: dict[tuple[str, str], tuple[str, str]] = {}
    for a, t in sim_by:
        by_stem.setdefault((a, Path(t).stem), (a, t))
    rows = []
    used = set()
    for key, e in emu_by.items():
        sim_key = key if key in sim_by else by_stem.get(key)
        if sim_key is None:
            continue
        used.add(sim_key)
        s = sim_by[sim_key]
        rows.append(
            FidelityRow(
                algorithm=key[0],
                trace=key[1],
                sim_qoe=s.qoe,
                emu_qoe=e.qoe,
                qoe_gap=e.qoe - s.qoe,
                sim_bitrate_kbps=s.bitrate_mean_kbps,
                emu_bitrate_kbps=e.bitrate_mean_kbps,
                bitrate_gap_kbps=e.bitrate_mean_kbps - s.bitrate_mean_kbps,
                sim_rebuffer_ratio=s.rebuffer_ratio,
                emu_rebuffer_ratio=e.rebuffer_ratio,
                rebuffer_ratio_gap=e.rebuffer_ratio - s.rebuffer_ratio,
                sim_rebuffer_s=s.rebuffer_s,
                emu_rebuffer_s=e.rebuffer_s,
                rebuffer_s_gap=e.rebuffer_s - s.rebuffer_s,
                sim_chunks=s.chunks,
                emu_chunks=e.chunks,
            )
        )
    return Matched(
        rows=rows,
        only_sim=[k for k in sim_by if k not in used],
        only_emu=[k for k in emu_by if k not in sim_by and by_stem.get(k) is None],
    )


def _warn_unmatched(matched: Matched) -> None:
    for side, keys in (("simulation", matched.only_sim), ("emulation", matched.only_emu)):
        if keys:
            shown = ", ".join(f"{a}/{t}" for a, t in keys[:10])
            more = f" and {len(keys) - 10} more" if len(keys) > 10 else ""
            log.warning(
                "%d session(s) only in the %s, left out of the comparison: %s%s",
                len(keys),
                side,
                shown,
                more,
            )


def compare_matched(sim_dir: Path, emu_dir: Path) -> Matched:
    """:func:`compare`, with the sessions found on one side only."""
    sim_dir, emu_dir = Path(sim_dir), Path(emu_dir)
    matched = match(
        read_per_trace(sim_dir),
        read_per_trace(emu_dir),
        sim_where=str(sim_dir / PER_TRACE_CSV),
        emu_where=str(emu_dir / PER_TRACE_CSV),
    )
    _warn_unmatched(matched)
    if not matched.rows:
        raise ConfigError(
            f"{sim_dir / PER_TRACE_CSV} and {emu_dir / PER_TRACE_CSV} have no (algorithm, trace) "
            "session in common"
        )
    return matched


def compare(sim_dir: Path, emu_dir: Path) -> list[FidelityRow]:
    """Join the ``per_trace.csv`` of a simulation and an emulation (module docstring)."""
    return compare_matched(sim_dir, emu_dir).rows


# ---------------------------------------------------------------------------------------------
# Summaries, files and the plot


def _finite_mean(values: Sequence[float], absolute: bool = False) -> float | None:
    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    if not len(array):
        return None
    return float(np.mean(np.abs(array) if absolute else array))


def _stats(rows: Sequence[FidelityRow]) -> dict[str, Any]:
    gaps = [r.qoe_gap for r in rows]
    return {
        "count": len(rows),
        "qoe_gap_mean_abs": _finite_mean(gaps, absolute=True),
        "qoe_gap_mean": _finite_mean(gaps),
        "sim_qoe_mean": _finite_mean([r.sim_qoe for r in rows]),
        "emu_qoe_mean": _finite_mean([r.emu_qoe for r in rows]),
        "bitrate_gap_mean_abs_kbps": _finite_mean([r.bitrate_gap_kbps for r in rows], True),
        "bitrate_gap_mean_kbps": _finite_mean([r.bitrate_gap_kbps for r in rows]),
        "rebuffer_ratio_gap_mean_abs": _finite_mean([r.rebuffer_ratio_gap for r in rows], True),
        "rebuffer_ratio_gap_mean": _finite_mean([r.rebuffer_ratio_gap for r in rows]),
        "rebuffer_s_gap_mean_abs": _finite_mean([r.rebuffer_s_gap for r in rows], True),
    }


def fidelity_summary(rows: Sequence[FidelityRow]) -> dict[str, Any]:
    """Overall and per-algorithm statistics of the gaps (None where no value is finite).

    ``qoe_gap_mean_abs`` is the mean absolute per-trace QoE gap; ``qoe_gap_mean`` its signed
    mean (emulation minus simulation: negative when the simulator is optimistic).
    """
    return {
        "overall": _stats(rows),
        "algorithms": {
            a: _stats([r for r in rows if r.algorithm == a])
            for a in dict.fromkeys(r.algorithm for r in rows)
        },
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_sim_vs_emu(
    rows: Sequence[FidelityRow], out_dir: Path, *, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``sim_vs_emu.csv``, ``.json`` and ``.png`` into ``out_dir``; return the summary
    (:func:`fidelity_summary` plus ``extra``, as written to the JSON)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / SIM_VS_EMU_CSV, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[f.name for f in dataclasses.fields(FidelityRow)])
        writer.writeheader()
        for row in rows:
            writer.writerow(dataclasses.asdict(row))
    summary = _json_safe({**fidelity_summary(rows), **(extra or {})})
    (out_dir / SIM_VS_EMU_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    if rows:
        plot_sim_vs_emu(rows, out_dir / SIM_VS_EMU_PNG)
    return summary


def plot_sim_vs_emu(rows: Sequence[FidelityRow], path: Path) -> Path:
    """Emulated against simulated QoE per trace (y = x: perfect agreement), and the gaps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, hist) = plt.subplots(1, 2, figsize=(11.0, 4.4))
    finite = [r for r in rows if math.isfinite(r.sim_qoe) and math.isfinite(r.emu_qoe)]
    algorithms = list(dict.fromkeys(r.algorithm for r in rows))
    # Shared bins, so the algorithms' histograms compare.
    bins = np.histogram_bin_edges([r.qoe_gap for r in finite] or [0.0], bins=30)
    for algorithm in algorithms:
        mine = [r for r in finite if r.algorithm == algorithm]
        if not mine:
            continue
        stats = _stats(mine)
        label = f"{algorithm} (mean |gap| {stats['qoe_gap_mean_abs']:.3f}, n={len(mine)})"
        ax.scatter(
            [r.sim_qoe for r in mine], [r.emu_qoe for r in mine], s=10, alpha=0.6, label=label
        )
        hist.hist([r.qoe_gap for r in mine], bins=bins, alpha=0.5, label=algorithm)
    if finite:
        values = [v for r in finite for v in (r.sim_qoe, r.emu_qoe)]
        low, high = min(values), max(values)
        pad = 0.05 * (high - low or 1.0)
        ax.plot([low - pad, high + pad], [low - pad, high + pad], "k--", lw=1, label="y = x")
    ax.set_xlabel("simulated QoE per trace")
    ax.set_ylabel("emulated QoE per trace")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    hist.axvline(0.0, color="k", lw=1, ls="--")
    hist.set_xlabel("QoE gap per trace (emulated - simulated)")
    hist.set_ylabel("sessions")
    hist.grid(alpha=0.3)
    hist.legend(fontsize=7)
    overall = _stats(finite)
    if overall["qoe_gap_mean_abs"] is not None:
        fig.suptitle(
            f"simulation vs emulation: mean |QoE gap| {overall['qoe_gap_mean_abs']:.3f}, "
            f"mean gap {overall['qoe_gap_mean']:+.3f} over {len(finite)} sessions",
            fontsize=10,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# Simulating what an emulation ran


@dataclass(frozen=True)
class EmulatedSession:
    """One emulated session as the simulator replays it."""

    algorithm: str
    label: str
    """The trace's name in the emulation's report (``<stem>`` or ``<stem>-rR``)."""
    stem: str
    """The trace file's stem: the simulated trace's name."""
    chunks: int
    start_s: float | None = None
    """Trace position of its first request (link offset plus ``request_start_s``), when the
    plan aligns starts; None: the simulated session starts at the trace's beginning."""


@dataclass(frozen=True)
class EmulationPlan:
    """What an emulation ran, as the simulator needs it (:func:`plan_from_emulation`)."""

    emu_dir: Path
    traces: list[Trace]
    """The trace files the emulation has sessions of, each named by its file's stem."""
    video: Video
    algorithms: list[str]
    sessions: list[EmulatedSession]
    params: dict[str, dict[str, Any]]
    qoe_name: str
    base_config: SimConfig
    """The simulator's defaults with the emulated player's buffer cap, sleep step and first
    level."""
    summary: dict[str, Any] = field(repr=False)

    def trace_files(self) -> dict[str, Path]:
        return {t.name: Path(t.source) for t in self.traces if t.source}


def read_summary(emu_dir: Path) -> dict[str, Any]:
    path = Path(emu_dir) / SUMMARY_JSON
    if not path.is_file():
        raise ConfigError(f"{path}: no such file (not a streambed emulate output directory?)")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def session_dir(emu_dir: Path, algorithm: str, label: str) -> Path:
    """Where ``streambed emulate`` logged a session (``sessions/<algorithm>/<label>``)."""
    return Path(emu_dir) / "sessions" / algorithm / label


def _player_config(emu_dir: Path, sessions: Sequence[EmulatedSession]) -> dict[str, Any]:
    """The emulated player's configuration, from the first session.json that has one."""
    for s in sessions:
        path = session_dir(emu_dir, s.algorithm, s.label) / "session.json"
        try:
            config = json.loads(path.read_text()).get("config")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(config, dict):
            return config
    return {}


def _trace_stem(label: str, stems: set[str]) -> str | None:
    if label in stems:
        return label
    found = _REPEAT_LABEL.match(label)
    if found and found["stem"] in stems:
        return found["stem"]
    return None


def emulated_start_s(emu_dir: Path, algorithm: str, label: str) -> float | None:
    """The trace position at which an emulated session sent its first chunk request: the
    link's ``trace_offset_s`` (session.json) plus the first record's ``request_start_s``;
    None when either is missing (e.g. a Mahimahi link records no offset)."""
    where = session_dir(emu_dir, algorithm, label)
    try:
        link = json.loads((where / "session.json").read_text()).get("link") or {}
        offset = link.get("trace_offset_s")
        with open(where / "chunks.jsonl") as fh:
            first = json.loads(fh.readline())
        if offset is None:
            return None
        return float(offset) + float(first["request_start_s"])
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None


def rotate_trace(trace: Trace, start_s: float, name: str | None = None) -> Trace:
    """``trace`` as seen from trace position ``start_s`` (modulo its period): a trace that
    starts there and wraps around, so a test-mode session over it plays exactly what a
    session starting at ``start_s`` of the original would (the period is unchanged)."""
    from streambed.traces import Trace

    times = np.asarray(trace.times_s, dtype=np.float64) - float(trace.times_s[0])
    period = float(times[-1])
    p = float(start_s) % period
    if p <= 0.0:
        return Trace(name=name or trace.name, times_s=times, mbps=trace.mbps, source=trace.source)
    ends = np.unique(np.concatenate([times[1:], [p]]))
    ends = ends[ends > 0]
    # The interval ending at e (or containing it) is the first i with times[i] >= e.
    rates = np.asarray(trace.mbps, dtype=np.float64)[np.searchsorted(times, ends, side="left")]
    after = ends > p
    new_ends = np.concatenate([ends[after] - p, ends[~after] + period - p])
    new_rates = np.concatenate([rates[after], rates[~after]])
    return Trace(
        name=name or trace.name,
        times_s=np.concatenate([[0.0], new_ends]),
        mbps=np.concatenate([new_rates[:1], new_rates]),
        source=trace.source,
    )


def plan_from_emulation(
    emu_dir: Path,
    *,
    video: Path | None = None,
    model: Path | None = None,
    traces: Path | None = None,
    align_start: bool = False,
) -> EmulationPlan:
    """Read what the emulation in ``emu_dir`` ran (see :func:`simulate_like`); with
    ``align_start``, each session's :func:`emulated_start_s` too. ``traces`` replaces the
    summary's ``traces_dir`` (e.g. when it was relative to another working directory)."""
    from streambed.abr_service.video import VIDEO_JSON, load_video
    from streambed.traces import Trace
    from streambed.traces.formats import load_trace
    from streambed.traces.traceset import trace_files
    from streambed.trainer.simulator import SimConfig

    emu_dir = Path(emu_dir)
    summary = read_summary(emu_dir)
    metrics = read_per_trace(emu_dir)
    if not metrics:
        raise ConfigError(f"{emu_dir / PER_TRACE_CSV}: no sessions")
    where = emu_dir / SUMMARY_JSON
    traces_dir = str(traces) if traces is not None else summary.get("traces_dir")
    if not isinstance(traces_dir, str) or not traces_dir:
        raise ConfigError(
            f"{where}: no 'traces_dir' field (written by streambed emulate): cannot tell which "
            "traces the emulation ran"
        )
    if traces is None and not Path(traces_dir).is_dir():
        raise ConfigError(
            f"{where}: traces_dir {traces_dir!r} is not a directory (here); give the traces "
            "directory explicitly"
        )
    files = {p.stem: p for p in trace_files(Path(traces_dir))}
    sessions = []
    unknown = []
    for m in metrics:
        stem = _trace_stem(m.trace, set(files))
        if stem is None:
            unknown.append(f"{m.algorithm}/{m.trace}")
            continue
        start = emulated_start_s(emu_dir, m.algorithm, m.trace) if align_start else None
        if align_start and start is None:
            log.warning(
                "%s/%s: no recorded trace offset; simulated from the trace's start",
                m.algorithm,
                m.trace,
            )
        sessions.append(EmulatedSession(m.algorithm, m.trace, stem, m.chunks, start))
    if unknown:
        log.warning(
            "%d emulated session(s) have no trace file in %s, left out: %s",
            len(unknown),
            traces_dir,
            ", ".join(unknown[:10]),
        )
    if not sessions:
        raise ConfigError(f"{where}: no emulated session's trace is in traces_dir {traces_dir!r}")
    loaded = []
    for stem in dict.fromkeys(s.stem for s in sessions):
        t = load_trace(files[stem])
        loaded.append(Trace(name=stem, times_s=t.times_s, mbps=t.mbps, source=str(files[stem])))
    if video is None:
        # The content the emulation served (summary "content", relative paths as run), else
        # what it built from --video.
        content = summary.get("content")
        candidates = [Path(content) / VIDEO_JSON] if isinstance(content, str) else []
        candidates.append(emu_dir / "content" / VIDEO_JSON)
        video = next((c for c in candidates if c.is_file()), candidates[0])
        if not video.is_file():
            raise ConfigError(
                f"{video}: no such file (the content the emulation served is not here); "
                "give the video description explicitly"
            )
    algorithms = list(dict.fromkeys(s.algorithm for s in sessions))
    # The per-algorithm parameters the sessions sent (--param), so the simulation runs the same.
    recorded_params = summary.get("params")
    params: dict[str, dict[str, Any]] = {
        str(name): dict(values)
        for name, values in (recorded_params if isinstance(recorded_params, dict) else {}).items()
        if name in algorithms and isinstance(values, dict)
    }
    if "ppo" in algorithms:
        recorded = summary.get("model")
        chosen = model if model is not None else (Path(recorded) if recorded else None)
        if chosen is None:
            raise ConfigError(
                f"{where}: the emulation ran ppo but records no 'model' field; give the "
                "checkpoint (--model)"
            )
        params["ppo"] = {**params.get("ppo", {}), "model": str(chosen)}
    player = _player_config(emu_dir, sessions)
    defaults = SimConfig()
    base = SimConfig(
        buffer_cap_s=float(player.get("buffer_cap_s") or defaults.buffer_cap_s),
        drain_step_s=float(player.get("sleep_step_s") or defaults.drain_step_s),
        default_quality=int(player.get("first_quality", defaults.default_quality)),
    )
    return EmulationPlan(
        emu_dir=emu_dir,
        traces=loaded,
        video=load_video(video),
        algorithms=algorithms,
        sessions=sessions,
        params=params,
        qoe_name=str(player.get("qoe") or "lin"),
        base_config=base,
        summary=summary,
    )


def simulate_plan(
    plan: EmulationPlan, config: SimConfig | None = None, *, progress: bool = False
) -> tuple[list[SessionMetrics], dict[tuple[str, str], list[ChunkRecord]]]:
    """Simulate every emulated session of ``plan`` (``config``: default ``plan.base_config``);
    metrics and records keyed and labelled as the emulation's sessions, cut to their chunks."""
    from streambed.trainer.evaluate import evaluate

    config = config or plan.base_config
    found: dict[tuple[str, str], list[ChunkRecord]] = {}
    if all(s.start_s is None for s in plan.sessions):
        result = evaluate(
            plan.traces,
            plan.video,
            plan.algorithms,
            params=plan.params,
            qoe_name=plan.qoe_name,
            config=config,
            progress=progress,
        )
        for s in plan.sessions:
            found[(s.algorithm, s.label)] = result.sessions[(s.algorithm, s.stem)]
    else:
        # Every session over its own trace, rotated to where the emulated one started.
        by_stem = {t.name: t for t in plan.traces}
        for algorithm in plan.algorithms:
            mine = [s for s in plan.sessions if s.algorithm == algorithm]
            rotated = [rotate_trace(by_stem[s.stem], s.start_s or 0.0, s.label) for s in mine]
            result = evaluate(
                rotated,
                plan.video,
                [algorithm],
                params=plan.params,
                qoe_name=plan.qoe_name,
                config=config,
                progress=progress,
            )
            for s in mine:
                found[(s.algorithm, s.label)] = result.sessions[(s.algorithm, s.label)]
    metrics = []
    sessions: dict[tuple[str, str], list[ChunkRecord]] = {}
    for s in plan.sessions:
        records = found[(s.algorithm, s.label)]
        if 0 < s.chunks < len(records):
            records = records[: s.chunks]
        elif s.chunks > len(records):
            log.warning(
                "%s/%s: emulated %d chunks but the video has %d: compared on %d",
                s.algorithm,
                s.label,
                s.chunks,
                len(records),
                len(records),
            )
        records = [dataclasses.replace(r, trace=s.label) for r in records]
        m = session_metrics(records, plan.video.chunk_s)
        metrics.append(dataclasses.replace(m, algorithm=s.algorithm, trace=s.label))
        sessions[(s.algorithm, s.label)] = records
    return metrics, sessions


def write_simulation(
    plan: EmulationPlan, out: Path, config: SimConfig | None = None, *, progress: bool = False
) -> list[SessionMetrics]:
    """Simulate ``plan`` (:func:`simulate_plan`) and write the eval-style report to ``out``."""
    from streambed.trainer.evaluate import write_outputs

    out = Path(out)
    if out.resolve() == plan.emu_dir.resolve():
        raise ConfigError(f"{out}: the simulation must not be written into the emulation's dir")
    config = config or plan.base_config
    metrics, sessions = simulate_plan(plan, config, progress=progress)
    extra = {
        "mode": "test",
        "like_emulation": str(plan.emu_dir),
        "qoe": plan.qoe_name,
        "video": plan.video.name,
        "traces": len(plan.traces),
        "traces_dir": plan.summary.get("traces_dir"),
        "sim_config": dataclasses.asdict(config),
        "params": plan.params,
        "align_start": any(s.start_s is not None for s in plan.sessions),
    }
    write_outputs(out, metrics, sessions, extra)
    return metrics


def simulate_like(
    emu_dir: Path,
    out: Path,
    *,
    config: SimConfig | None = None,
    model: Path | None = None,
    video: Path | None = None,
    traces: Path | None = None,
    align_start: bool = False,
    progress: bool = False,
) -> Path:
    """Run the test-mode simulator on what the emulation in ``emu_dir`` ran; write an
    eval-style report (summary.json, per_trace.csv, logs, sessions, plots) to ``out``.

    ``config``: the simulator's constants (default: :class:`SimConfig`'s with the emulated
    player's buffer cap, sleep step and first level); ``model``: the ppo checkpoint when the
    emulation's summary records none; ``video``: when the emulation has no
    ``content/video.json``; ``traces``: instead of the summary's ``traces_dir``;
    ``align_start``: start each simulated session at the trace
    position where the emulated one sent its first request (:func:`emulated_start_s`; then
    repeated sessions differ) instead of at the trace's beginning. Returns ``out``.
    """
    plan = plan_from_emulation(
        emu_dir, video=video, model=model, traces=traces, align_start=align_start
    )
    write_simulation(plan, Path(out), config, progress=progress)
    return Path(out)


def sim_vs_emu(
    emu_dir: Path,
    out_dir: Path | None = None,
    *,
    sim_dir: Path | None = None,
    config: SimConfig | None = None,
    model: Path | None = None,
    video: Path | None = None,
    traces: Path | None = None,
    align_start: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Simulate what ``emu_dir`` ran into ``sim_dir`` (default ``out_dir/sim``), compare, and
    write the ``sim_vs_emu`` files into ``out_dir`` (default ``emu_dir``); the summary."""
    emu_dir = Path(emu_dir)
    out_dir = emu_dir if out_dir is None else Path(out_dir)
    sim_dir = out_dir / "sim" if sim_dir is None else Path(sim_dir)
    simulate_like(
        emu_dir,
        sim_dir,
        config=config,
        model=model,
        video=video,
        traces=traces,
        align_start=align_start,
        progress=progress,
    )
    return write_comparison(sim_dir, emu_dir, out_dir, align_start=align_start)


def write_comparison(
    sim_dir: Path, emu_dir: Path, out_dir: Path | None = None, **extra: Any
) -> dict[str, Any]:
    """Compare the eval-style ``sim_dir`` with the emulation ``emu_dir``; write the
    ``sim_vs_emu`` files into ``out_dir`` (default ``emu_dir``); return the summary, which
    also names both, the simulator's constants, ``extra`` and the sessions left unmatched."""
    sim_dir, emu_dir = Path(sim_dir), Path(emu_dir)
    matched = compare_matched(sim_dir, emu_dir)
    summary = json.loads((sim_dir / SUMMARY_JSON).read_text())
    described = {
        "simulation": str(sim_dir),
        "emulation": str(emu_dir),
        "sim_config": summary.get("sim_config"),
        **extra,
        "only_sim": [list(k) for k in matched.only_sim],
        "only_emu": [list(k) for k in matched.only_emu],
    }
    return write_sim_vs_emu(matched.rows, emu_dir if out_dir is None else out_dir, extra=described)
