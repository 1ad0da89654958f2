"""Simulating what an emulation ran: its traces, video, algorithms and player settings.

:func:`plan_from_emulation` reads what an emulation directory ran, :func:`simulate_plan`
simulates it in memory (each session cut to the emulated session's chunks, optionally started
where the emulated one started on its trace: :func:`rotate_trace`), :func:`write_simulation`
also writes the eval-style report, :func:`simulate_like` does both, and :func:`sim_vs_emu`
then compares with :func:`streambed.reports.fidelity.write_comparison`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streambed.abr_service.video import VIDEO_JSON, Video, load_video
from streambed.core.errors import ConfigError
from streambed.reports.fidelity import read_per_trace, write_comparison
from streambed.reports.provenance import chunk_window, run_provenance, window_text
from streambed.reports.repeats import base_trace
from streambed.reports.rundir import PER_TRACE_CSV, SUMMARY_JSON, RunDir
from streambed.reports.sessionlog import ChunkRecord
from streambed.reports.summary import SessionMetrics, session_metrics
from streambed.traces import Trace
from streambed.traces.formats import load_trace
from streambed.traces.traceset import trace_files
from streambed.trainer.evaluate import evaluate, write_outputs
from streambed.trainer.simulator import PENSIEVE_TIMING, TIMINGS, WALL_TIMING, SimConfig

log = logging.getLogger(__name__)

ENSEMBLE = 8
"""Simulated sessions per emulated one when the timing has a jitter: a few milliseconds decide
whether a stall lands before an outage (moving every round trip by 5 ms changes a RobustMPC
session's QoE by 0.08 on average on norway-test), so one simulated session is compared as the
mean of several under the emulation's measured timing noise."""


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
    return RunDir(emu_dir).session_dir(algorithm, label)


def _player_config(emu_dir: Path, sessions: Sequence[EmulatedSession]) -> dict[str, Any]:
    """The emulated player's configuration, from the first session.json that has one."""
    for s in sessions:
        path = RunDir(emu_dir).session(s.algorithm, s.label).session_json
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
    stem = base_trace(label)  # a repeated session's label, <stem>-rR
    return stem if stem in stems else None


def emulated_start_s(emu_dir: Path, algorithm: str, label: str) -> float | None:
    """The trace position at which an emulated session sent its first chunk request: the
    link's ``trace_offset_s`` (session.json) plus the first record's ``request_start_s``;
    None when either is missing (e.g. a Mahimahi link records no offset)."""
    where = RunDir(emu_dir).session(algorithm, label)
    try:
        link = json.loads(where.session_json.read_text()).get("link") or {}
        offset = link.get("trace_offset_s")
        with open(where.chunks_jsonl) as fh:
            first = json.loads(fh.readline())
        if offset is None:
            return None
        return float(offset) + float(first["request_start_s"])
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return None


def measured_decision_s(
    emu_dir: Path, sessions: Sequence[EmulatedSession]
) -> tuple[float, float] | None:
    """Mean and standard deviation of the decision round trips the emulated players measured
    (``decision_ms`` of chunks 1..N: chunk 0's also opens the connection), seconds; None when
    none was recorded."""
    values: list[float] = []
    for s in sessions:
        try:
            with open(RunDir(emu_dir).session(s.algorithm, s.label).chunks_jsonl) as fh:
                for line in fh:
                    record = json.loads(line)
                    if int(record.get("chunk_index", 0)) > 0:
                        values.append(float(record.get("decision_ms") or 0.0) / 1000.0)
        except (OSError, ValueError, TypeError, AttributeError):
            continue
    if not values or max(values) <= 0:
        return None
    return float(np.mean(values)), float(np.std(values))


def rotate_trace(trace: Trace, start_s: float, name: str | None = None) -> Trace:
    """``trace`` as seen from trace position ``start_s`` (modulo its period): a trace that
    starts there and wraps around, so a test-mode session over it plays exactly what a
    session starting at ``start_s`` of the original would (the period is unchanged)."""
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
    timing: str = WALL_TIMING,
) -> EmulationPlan:
    """Read what the emulation in ``emu_dir`` ran (see :func:`simulate_like`); with
    ``align_start``, each session's :func:`emulated_start_s` too. ``traces`` replaces the
    summary's ``traces_dir`` (e.g. when it was relative to another working directory).
    ``timing``: the base constants: ``wall`` (default) :meth:`SimConfig.faithful` from the
    emulation's link delay and the decision round trip its players measured, or ``pensieve``
    (Pensieve's published constants)."""
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
    settings = {
        "buffer_cap_s": float(player.get("buffer_cap_s") or defaults.buffer_cap_s),
        "drain_step_s": float(player.get("sleep_step_s") or defaults.drain_step_s),
        "default_quality": int(player.get("first_quality", defaults.default_quality)),
    }
    if timing == WALL_TIMING:
        delay_ms = summary.get("delay_ms")
        if not isinstance(delay_ms, int | float):
            raise ConfigError(f"{where}: no 'delay_ms' field: cannot model the emulated link")
        measured = measured_decision_s(emu_dir, sessions)
        mean, std = (None, 0.0) if measured is None else measured
        base = SimConfig.faithful(float(delay_ms), mean, std, **settings)
        log.info(
            "simulating with the emulation's timing: %g ms each way, request round trip %s",
            delay_ms,
            "n/a (modelled)"
            if mean is None
            else f"{mean * 1000:.1f} ms, sd {std * 1000:.1f} ms (the decisions', measured)",
        )
    elif timing == PENSIEVE_TIMING:
        base = SimConfig(**settings)  # type: ignore[arg-type]
    else:
        raise ConfigError(f"timing {timing!r}: expected one of {', '.join(TIMINGS)}")
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
    plan: EmulationPlan,
    config: SimConfig | None = None,
    *,
    progress: bool = False,
    samples: int = 1,
) -> tuple[list[SessionMetrics], dict[tuple[str, str], list[ChunkRecord]]]:
    """Simulate every emulated session of ``plan`` (``config``: default ``plan.base_config``);
    metrics and records keyed and labelled as the emulation's sessions, cut to their chunks.

    ``samples`` > 1 (with a timing jitter): each session is simulated that many times (seeds
    0..K-1) and its metrics are the means over them, the expected session under the
    emulation's timing noise; the records are the first sample's."""
    if samples < 1:
        raise ConfigError(f"samples={samples}: must be >= 1")
    runs = [_simulate_once(plan, config, progress=progress, seed=k) for k in range(samples)]
    if samples == 1:
        return runs[0]
    first, records = runs[0]
    means = []
    for i, m in enumerate(first):
        every = [run[0][i] for run in runs]

        def mean(name: str, every: list[SessionMetrics] = every) -> float:
            return float(np.mean([getattr(e, name) for e in every]))

        means.append(
            dataclasses.replace(
                m,
                qoe=mean("qoe"),
                bitrate_mean_kbps=mean("bitrate_mean_kbps"),
                rebuffer_s=mean("rebuffer_s"),
                rebuffer_ratio=mean("rebuffer_ratio"),
                switches_per_chunk=mean("switches_per_chunk"),
            )
        )
    return means, records


def _simulate_once(
    plan: EmulationPlan, config: SimConfig | None, *, progress: bool, seed: int
) -> tuple[list[SessionMetrics], dict[tuple[str, str], list[ChunkRecord]]]:
    config = config or plan.base_config
    if config.wall and any(s.start_s is not None for s in plan.sessions):
        # Aligned: the rotated trace starts at chunk 0's request, so nothing comes before it.
        config = dataclasses.replace(config, start_s=0.0)
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
            seed=seed,
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
                seed=seed,
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
    # The simulator played whole videos (and logged their means); these are the compared ones.
    for algorithm in plan.algorithms:
        compared = [m for m in metrics if m.algorithm == algorithm]
        log.info(
            "%s: simulated like the emulation: qoe_mean %.4f %s",
            algorithm,
            float(np.mean([m.qoe for m in compared])),
            window_text(chunk_window(compared, plan.video.num_chunks)),
        )
    return metrics, sessions


def default_samples(config: SimConfig) -> int:
    """Sessions simulated per emulated one: :data:`ENSEMBLE` with a timing jitter, else 1."""
    return ENSEMBLE if config.wall and config.jitter_s > 0 else 1


def write_simulation(
    plan: EmulationPlan,
    out: Path,
    config: SimConfig | None = None,
    *,
    progress: bool = False,
    samples: int | None = None,
) -> list[SessionMetrics]:
    """Simulate ``plan`` (:func:`simulate_plan`, ``samples`` times each: default
    :func:`default_samples`) and write the eval-style report to ``out`` (per_trace.csv: the
    means over the samples; sessions and logs: the first sample)."""
    out = Path(out)
    if out.resolve() == plan.emu_dir.resolve():
        raise ConfigError(f"{out}: the simulation must not be written into the emulation's dir")
    config = config or plan.base_config
    samples = default_samples(config) if samples is None else samples
    metrics, sessions = simulate_plan(plan, config, progress=progress, samples=samples)
    extra = {
        "mode": "test",
        "like_emulation": str(plan.emu_dir),
        "qoe": plan.qoe_name,
        "video": plan.video.name,
        "traces": len(plan.traces),
        "traces_dir": plan.summary.get("traces_dir"),
        "sim_config": dataclasses.asdict(config),
        "samples": samples,
        "params": plan.params,
        "align_start": any(s.start_s is not None for s in plan.sessions),
        **run_provenance(plan.video, plan.params.get("ppo", {}).get("model")),
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
    timing: str = WALL_TIMING,
    samples: int | None = None,
    progress: bool = False,
) -> Path:
    """Run the test-mode simulator on what the emulation in ``emu_dir`` ran; write an
    eval-style report (summary.json, per_trace.csv, logs, sessions, plots) to ``out``.

    ``config``: the simulator's constants (default: :class:`SimConfig`'s with the emulated
    player's buffer cap, sleep step and first level); ``model``: the ppo checkpoint when the
    emulation's summary records none; ``video``: when the emulation has no
    ``content/video.json``; ``traces``: instead of the summary's ``traces_dir``;
    ``timing``: the simulator's constants when ``config`` is not given (:func:`plan_from_emulation`);
    ``samples``: simulated sessions per emulated one (default :func:`default_samples`);
    ``align_start``: start each simulated session at the trace
    position where the emulated one sent its first request (:func:`emulated_start_s`; then
    repeated sessions differ) instead of at the trace's beginning. Returns ``out``.
    """
    plan = plan_from_emulation(
        emu_dir, video=video, model=model, traces=traces, align_start=align_start, timing=timing
    )
    write_simulation(plan, Path(out), config, progress=progress, samples=samples)
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
    timing: str = WALL_TIMING,
    samples: int | None = None,
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
        timing=timing,
        samples=samples,
        progress=progress,
    )
    return write_comparison(sim_dir, emu_dir, out_dir, align_start=align_start)
