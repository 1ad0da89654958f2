"""Offline evaluation: every (algorithm, trace) session in the test-mode simulator.

Each session starts at the trace's beginning with an empty buffer; the first chunk is fetched
at ``SimConfig.default_quality`` without asking the algorithm (as in Pensieve's test
harness), then the algorithm gets feedback on every chunk and chooses every next level.
``optimal`` is planned per trace with knowledge of the future (:mod:`streambed.trainer.optimal`) and
replayed through the same loop, so its QoE is measured exactly like the others'.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from streambed.abr_service.algorithms import (
    ABRAlgorithm,
    ChunkFeedback,
    PlayerState,
    build_algorithm,
    make_algorithm,
)
from streambed.abr_service.qoe import QoEMetric, make_qoe
from streambed.abr_service.video import Video
from streambed.core.errors import ConfigError
from streambed.reports.plots import plot_bitrate_rebuffer, plot_qoe_cdf
from streambed.reports.provenance import chunk_window, run_provenance, window_short, window_text
from streambed.reports.rundir import RunDir
from streambed.reports.sessionlog import ChunkRecord, write_jsonl, write_pensieve_log
from streambed.reports.summary import SessionMetrics, session_metrics, write_report
from streambed.traces import Trace
from streambed.trainer.optimal import FixedPlan, plan_optimal
from streambed.trainer.simulator import SimConfig, Simulator

log = logging.getLogger(__name__)


def run_session(
    algorithm: ABRAlgorithm,
    sim: Simulator,
    trace_index: int,
    qoe: QoEMetric,
    run_id: str = "",
) -> list[ChunkRecord]:
    """Play one whole video over one trace (test mode); one record per chunk."""
    sim.start_session(trace_index)
    trace = sim.traces[trace_index].name
    video = sim.video
    session_id = f"{algorithm.name}/{trace}"
    quality = sim.config.default_quality
    last_quality = quality
    clock = 0.0
    decision_ms = 0.0
    records: list[ChunkRecord] = []
    while True:
        result = sim.download(quality)
        clock += result.wait_s
        buffer_before = result.buffer_before_s
        records.append(
            ChunkRecord.measured(
                qoe=qoe,
                bitrates_kbps=video.bitrates_kbps,
                quality=quality,
                previous_quality=last_quality,
                chunk_bytes=result.chunk_bytes,
                request_start_s=clock,
                request_end_s=clock + result.delay_s,
                download_s=result.delay_s,
                rebuffer_s=result.rebuffer_s,
                run_id=run_id,
                session_id=session_id,
                trace=trace,
                algorithm=algorithm.name,
                chunk_index=result.chunk_index,
                buffer_before_s=buffer_before,
                buffer_s=result.buffer_s,
                sleep_s=result.sleep_s,
                decision_ms=decision_ms,
            )
        )
        clock += result.delay_s + result.sleep_s
        algorithm.on_chunk(
            ChunkFeedback(
                chunk_index=result.chunk_index,
                quality=quality,
                chunk_bytes=result.chunk_bytes,
                download_s=result.delay_s,
                buffer_s=result.buffer_s,
                rebuffer_s=result.rebuffer_s,
            )
        )
        if result.end_of_video:
            return records
        last_quality = quality
        started = time.perf_counter()
        quality = algorithm.select(
            PlayerState(
                next_chunk=result.chunk_index + 1, buffer_s=result.buffer_s, last_quality=quality
            )
        )
        decision_ms = (time.perf_counter() - started) * 1000
        if not 0 <= quality < video.num_levels:
            raise ConfigError(f"{algorithm.name} chose level {quality}, outside the ladder")


@dataclass
class EvalResult:
    metrics: list[SessionMetrics]
    sessions: dict[tuple[str, str], list[ChunkRecord]] = field(repr=False)
    summary: dict[str, Any]


def format_table(result: EvalResult) -> str:
    """One line per algorithm: mean QoE, bitrate, rebuffer ratio and switches per chunk."""
    rows = [
        f"{'algorithm':<12}{'qoe_mean':>10}{'bitrate_kbps':>14}{'rebuf_ratio':>13}{'switches':>10}"
        "  chunks"
    ]
    for name, s in result.summary["algorithms"].items():
        rows.append(
            f"{name:<12}{s['qoe_mean']:>10.4f}{s['bitrate_mean_kbps']:>14.0f}"
            f"{s['rebuffer_ratio']:>13.4f}{s['switches_per_chunk']:>10.3f}"
            f"  {window_short(s.get('chunk_window'))}"
        )
    return "\n".join(rows)


def evaluate(
    traces: Sequence[Trace],
    video: Video,
    algorithms: Sequence[str],
    *,
    params: dict[str, dict[str, Any]] | None = None,
    qoe_name: str = "lin",
    config: SimConfig | None = None,
    out: Path | None = None,
    seed: int = 0,
    run_id: str = "",
    progress: bool = True,
    workers: int | None = None,
    classes: Mapping[str, type[ABRAlgorithm]] | None = None,
) -> EvalResult:
    """Evaluate ``algorithms`` on every trace; write the report to ``out`` if given.

    ``classes`` maps names to algorithm classes used instead of the registry's (e.g. a plug-in
    class evaluated in-process without being installed).
    """
    config = config or SimConfig()
    qoe = make_qoe(qoe_name, video)
    params = params or {}
    sim = Simulator(traces, video, config, mode="test", rng=np.random.default_rng(seed))
    metrics: list[SessionMetrics] = []
    sessions: dict[tuple[str, str], list[ChunkRecord]] = {}
    timings: dict[str, float] = {}
    total = len(traces) * len(algorithms)
    # Closed before any error propagates, so the error's line is not glued onto the bar.
    with tqdm(total=total, desc="eval", unit="session", disable=not progress, leave=False) as bar:
        for name in algorithms:
            started = time.perf_counter()
            algo_params = dict(params.get(name, {}))
            if name in ("ppo",) and "seed" not in algo_params:
                algo_params["seed"] = seed
            # The optimum's plans arrive in trace order as they finish: the bar moves with them.
            plans = (
                _optimal_plans(traces, video, qoe, config, workers) if name == "optimal" else None
            )
            try:
                for index, trace in enumerate(traces):
                    if plans is not None:
                        algorithm: ABRAlgorithm = FixedPlan(video, next(plans))
                    elif classes is not None and name in classes:
                        algorithm = build_algorithm(name, classes[name], video, algo_params)
                    else:
                        algorithm = make_algorithm(name, video, algo_params)
                    records = run_session(algorithm, sim, index, qoe, run_id)
                    sessions[(name, trace.name)] = records
                    metrics.append(session_metrics(records, video.chunk_s))
                    bar.update(1)
            finally:
                if plans is not None:
                    plans.close()  # stops the planner's pool now, also on an error
            timings[name] = time.perf_counter() - started
            mine = [m for m in metrics if m.algorithm == name]
            log.info(
                "%s: qoe_mean %.4f %s, %d traces (%.1f s)",
                name,
                np.mean([m.qoe for m in mine]),
                window_text(chunk_window(mine, video.num_chunks)),
                len(traces),
                timings[name],
            )
    extra = {
        "qoe": qoe_name,
        "video": video.name,
        "traces": len(traces),
        "seed": seed,
        "sim_config": config.__dict__,
        "params": params,
        "mode": "test",
        "seconds": timings,
        **run_provenance(video, params.get("ppo", {}).get("model")),
    }
    summary: dict[str, Any] = {}
    if out is not None:
        summary = write_outputs(out, metrics, sessions, extra)
    return EvalResult(metrics, sessions, summary)


def _plan_one(job: tuple[Trace, Video, QoEMetric, SimConfig]) -> list[int]:
    return plan_optimal(*job)


def _optimal_plans(
    traces: Sequence[Trace], video: Video, qoe: QoEMetric, config: SimConfig, workers: int | None
) -> Generator[list[int], None, None]:
    """Every trace's plan in trace order, each as soon as it (and those before it) is done;
    in worker processes when there are several cores."""
    jobs = [(trace, video, qoe, config) for trace in traces]
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    if workers <= 1:
        yield from map(_plan_one, jobs)
        return
    # forkserver: a fork of a process with other threads (a Ray client, a server in a
    # thread) can deadlock in the child on a lock one of them held
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        yield from pool.imap(_plan_one, jobs, chunksize=1)


def write_outputs(
    out: Path,
    metrics: Sequence[SessionMetrics],
    sessions: dict[tuple[str, str], list[ChunkRecord]],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Summary, per-trace CSV, logs of both formats, and the plots."""
    run = RunDir(out)
    summary = write_report(out, metrics, extra)
    for (algorithm, trace), records in sessions.items():
        write_pensieve_log(records, run.pensieve_log(algorithm, trace))
        write_jsonl(records, run.session(algorithm, trace).chunks_jsonl)
    qoe_name = extra.get("qoe")
    plot_qoe_cdf(metrics, run.qoe_cdf_png, qoe_name=qoe_name if isinstance(qoe_name, str) else None)
    plot_bitrate_rebuffer(metrics, run.bitrate_vs_rebuffer_png)
    return summary
