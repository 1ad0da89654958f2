"""Emulation at scale: one real streaming session per (trace, algorithm, repeat), N at a time.

``emulate(EmulateConfig)`` starts (or uses the URLs given of) a DASH origin and a decision
service, then runs every session as a ``streambed play`` process behind its own emulated link
(:func:`streambed.emulation.link.start_behind_link`), each logging under
``OUT/sessions/<algorithm>/<trace>[-rR]/`` (``chunks.jsonl``, ``pensieve.log``,
``session.json``). Sessions are independent: one that fails is retried once, then listed in
``OUT/failed.json``; the run goes on. A ``KeyboardInterrupt`` terminates the running sessions
(their links are torn down) and still writes the report of the sessions done. With ``resume``,
sessions whose ``session.json`` says ``done`` are not run again.

The report is that of ``streambed eval`` (:func:`streambed.reports.summary.write_report`):
``OUT/summary.json``, ``OUT/per_trace.csv``, ``OUT/logs/<algorithm>/log_<algorithm>_<trace>``
(Pensieve's format) and the plots, computed from the sessions' chunk records.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from streambed.core.errors import StreambedError
from streambed.emulation.link import outside_url, resolve_kind
from streambed.emulation.sessions import (
    EmulateConfig,
    SessionJob,
    SessionRunner,
    mpd_url,
    plan_jobs,
    run_servers,
    session_status,
)
from streambed.emulation.shared import LinkJob, LinkRunner, plan_links
from streambed.reports.provenance import run_provenance
from streambed.reports.repeats import spread_summary, trace_spreads, write_repeats_csv
from streambed.reports.rundir import RunDir
from streambed.reports.sessionlog import ChunkRecord, read_jsonl, write_pensieve_log
from streambed.reports.summary import SessionMetrics, session_metrics, write_report

if TYPE_CHECKING:
    from streambed.abr_service.video import Video

log = logging.getLogger(__name__)

__all__ = ["EmulateConfig", "EmulateResult", "SessionJob", "emulate", "plan_jobs", "session_status"]


@dataclass
class EmulateResult:
    planned: int
    skipped: int
    done: list[SessionJob] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    summary: dict[str, Any] = field(default_factory=dict)
    nodes: dict[str, int] = field(default_factory=dict)
    """With ``--cluster``: sessions run per Ray node (its id's first 8 characters)."""

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed else 0


# ---------------------------------------------------------------------------------------------
# The report


def collect(
    out: Path, jobs: Sequence[SessionJob]
) -> tuple[list[SessionMetrics], dict[SessionJob, list[ChunkRecord]]]:
    """Metrics and records of the jobs whose sessions are done."""
    metrics = []
    sessions = {}
    for job in jobs:
        path = job.session_json(out)
        if session_status(path) != "done":
            continue
        info = json.loads(path.read_text())
        records = read_jsonl(RunDir(out).session(job.algorithm, job.label).chunks_jsonl)
        if not records or not info.get("chunk_s"):
            continue
        found = session_metrics(records, float(info["chunk_s"]))
        metrics.append(dataclasses.replace(found, algorithm=job.algorithm, trace=job.label))
        sessions[job] = records
    return metrics, sessions


def write_outputs(
    out: Path,
    jobs: Sequence[SessionJob],
    failed: Sequence[dict[str, Any]],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """``summary.json``, ``per_trace.csv``, Pensieve logs, plots and ``failed.json``."""
    metrics, sessions = collect(out, jobs)
    extra = {
        **extra,
        "sessions": {"planned": len(jobs), "done": len(metrics), "failed": len(failed)},
    }
    run = RunDir(out)
    spreads = trace_spreads(metrics) if int(extra.get("repeat", 1)) > 1 else []
    if spreads:
        extra["run_to_run"] = spread_summary(spreads)
        write_repeats_csv(run.repeats_csv, spreads)
    from streambed.reports.links import write_links_report

    links = write_links_report(out)
    if links is not None:
        extra["links"] = links
    summary = write_report(out, metrics, extra)
    for job, records in sessions.items():
        write_pensieve_log(records, run.pensieve_log(job.algorithm, job.label))
    run.failed_json.write_text(json.dumps(list(failed), indent=1) + "\n")
    if metrics:
        from streambed.reports.plots import plot_bitrate_rebuffer, plot_qoe_cdf

        plot_qoe_cdf(metrics, run.qoe_cdf_png, qoe_name="lin")  # the players' default metric
        plot_bitrate_rebuffer(metrics, run.bitrate_vs_rebuffer_png)
    return summary


# ---------------------------------------------------------------------------------------------
# The run


def emulate(
    config: EmulateConfig, on_progress: Callable[[int, int, int], None] | None = None
) -> EmulateResult:
    """Run the emulation ``config`` describes and write its report (also when interrupted)."""
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    kind = resolve_kind(config.link)
    links: list[LinkJob] = []
    if config.shared:
        links = plan_links(config)
        jobs = [s for link in links for s in link.sessions]
        links_done = [link for link in links if config.resume and link.done(out)]
        done_before = [s for link in links_done for s in link.sessions]
        pending_links = [link for link in links if link not in set(links_done)]
        pending = [s for link in pending_links for s in link.sessions]
    else:
        jobs = plan_jobs(config.traces, config.algorithms, config.repeat)
        done_before = [
            j for j in jobs if config.resume and session_status(j.session_json(out)) == "done"
        ]
        pending = [j for j in jobs if j not in set(done_before)]
    result = EmulateResult(planned=len(jobs), skipped=len(done_before), done=list(done_before))
    run_id = f"emulate-{int(time.time())}"
    extra: dict[str, Any] = {
        "mode": "emulation",
        "link": kind,
        "player": config.player,
        "qoe": config.qoe,
        "delay_ms": config.delay_ms,
        "trace_start": config.trace_start,
        "traces_dir": str(config.traces.resolve()),
        "repeat": config.repeat,
        "run_id": run_id,
        "algorithms_run": list(config.algorithms),
        "max_chunks": config.max_chunks,
        "params": config.params,
    }
    if config.content is not None or config.video is not None:
        extra["content"] = str((config.content or out / "content").resolve())
    if config.model is not None:
        extra["model"] = str(config.model.resolve())
    if config.shared:
        extra["clients_per_link"] = config.clients_per_link
        extra["mix"] = [f"{a}@{p}={n}" for a, p, n in config.mix] or None
        extra["stagger_s"] = config.stagger_s
        extra["cross_traffic"] = [list(w) for w in config.cross_traffic]
    log.info(
        "%d sessions (%d already done), %d at a time, %s link, %g ms delay",
        len(jobs),
        len(done_before),
        config.parallel,
        kind,
        config.delay_ms,
    )
    try:
        if pending and config.shared:
            _run_links(config, kind, pending_links, result, run_id, on_progress)
        elif pending:
            _run_pending(config, kind, pending, result, run_id, on_progress)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        extra["complete"] = not result.interrupted and not result.failed
        extra["interrupted"] = result.interrupted
        if config.cluster is not None:
            extra["cluster"] = {"address": config.cluster, "sessions_per_node": result.nodes}
        extra.update(run_provenance(_served_video(config), config.model))
        result.summary = write_outputs(out, jobs, result.failed, extra)
    return result


def _served_video(config: EmulateConfig) -> Video | None:
    """The video the origin served (None: an external origin, or unreadable)."""
    from streambed.abr_service.video import VIDEO_JSON, load_video

    content = config.content or (config.out / "content" if config.video is not None else None)
    path = None if content is None else content / VIDEO_JSON
    if (path is None or not path.is_file()) and config.video is not None:
        path = config.video  # with --cluster, each node built its own copy
    if path is None or not path.exists():
        return None
    try:
        return load_video(path)
    except StreambedError as exc:
        log.warning("%s: unreadable, the summary records no video digest: %s", content, exc)
        return None


def _run_pending(
    config: EmulateConfig,
    kind: str,
    pending: list[SessionJob],
    result: EmulateResult,
    run_id: str,
    on_progress: Callable[[int, int, int], None] | None,
) -> None:

    if config.cluster is not None:
        _run_cluster(config, kind, pending, result, run_id, on_progress)
        return
    with contextlib.ExitStack() as stack:
        origin, abr = stack.enter_context(run_servers(config))
        runner = SessionRunner(
            config, kind, outside_url(mpd_url(origin), kind), outside_url(abr, kind), run_id
        )
        bar = stack.enter_context(_progress_bar(config, result))
        _drive(
            config,
            runner,
            bar,
            pending,
            runner.run,
            lambda job, failure: _record(config, result, job, failure),
            result,
            on_progress,
        )


def _run_links(
    config: EmulateConfig,
    kind: str,
    pending: list[LinkJob],
    result: EmulateResult,
    run_id: str,
    on_progress: Callable[[int, int, int], None] | None,
) -> None:
    """As ``_run_pending``, a link (its player group) per worker; the cross-traffic server
    when asked for."""
    with contextlib.ExitStack() as stack:
        origin, abr = stack.enter_context(run_servers(config))
        cross_port = None
        if config.cross_traffic:
            from streambed.emulation.crosstraffic import bulk_server

            cross_port = stack.enter_context(bulk_server()).port
        runner = LinkRunner(
            config,
            kind,
            outside_url(mpd_url(origin), kind),
            outside_url(abr, kind),
            run_id,
            cross_port,
        )
        bar = stack.enter_context(_progress_bar(config, result))
        _drive(
            config,
            runner,
            bar,
            pending,
            runner.run_link,
            lambda link, failure: _record_link(config, result, link, failure),
            result,
            on_progress,
        )


_Work = TypeVar("_Work")


def _drive(
    config: EmulateConfig,
    runner: SessionRunner,
    bar: Any,
    work: Sequence[_Work],
    run: Callable[[_Work], dict[str, Any] | None],
    record: Callable[[_Work, dict[str, Any] | None], int],
    result: EmulateResult,
    on_progress: Callable[[int, int, int], None] | None,
) -> None:
    """Run ``work`` on ``config.parallel`` threads; ``record`` files each outcome (None: done)
    and says how many sessions it settled. Ctrl-C stops the runner's sessions."""
    pool = ThreadPoolExecutor(config.parallel, thread_name_prefix="session")
    futures = {pool.submit(run, item): item for item in work}
    try:
        remaining = set(futures)
        while remaining:
            finished, remaining = wait(remaining, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    failure = future.result()
                except Exception as exc:  # a bug in a worker must not stop the others
                    failure = {"attempts": 1, "reasons": [f"{type(exc).__name__}: {exc}"]}
                bar.update(record(futures[future], failure))
            bar.set_postfix(running=runner.running, failed=len(result.failed), refresh=False)
            bar.refresh()
            if on_progress is not None:
                on_progress(len(result.done), runner.running, len(result.failed))
    except BaseException:
        runner.stop()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _record_link(
    config: EmulateConfig, result: EmulateResult, link: LinkJob, failure: dict[str, Any] | None
) -> int:
    if failure is None:
        result.done.extend(link.sessions)
    elif not failure.get("interrupted"):
        result.failed.append(
            {
                "link": link.label,
                "trace": link.trace.stem,
                "trace_file": str(link.trace),
                "sessions": [f"{s.algorithm}/{s.label}" for s in link.sessions],
                "link_dir": str(link.link_dir(config.out).path),
                **failure,
            }
        )
    return len(link.sessions)


def _record(
    config: EmulateConfig, result: EmulateResult, job: SessionJob, failure: dict[str, Any] | None
) -> int:
    if failure is None:
        result.done.append(job)
    elif not failure.get("interrupted"):
        result.failed.append(
            {
                "algorithm": job.algorithm,
                "trace": job.label,
                "trace_file": str(job.trace),
                "log_dir": str(job.log_dir(config.out)),
                **failure,
            }
        )
    return 1


def _run_cluster(
    config: EmulateConfig,
    kind: str,
    pending: list[SessionJob],
    result: EmulateResult,
    run_id: str,
    on_progress: Callable[[int, int, int], None] | None,
) -> None:

    from streambed.emulation.cluster import run_on_cluster

    with _progress_bar(config, result) as bar:

        def on_result(job: SessionJob, failure: dict[str, Any] | None) -> None:
            _record(config, result, job, failure)
            bar.update(1)
            bar.set_postfix(failed=len(result.failed), refresh=False)
            if on_progress is not None:
                on_progress(len(result.done), 0, len(result.failed))

        result.nodes = dict(run_on_cluster(config, kind, run_id, pending, on_result, bar))


def _progress_bar(config: EmulateConfig, result: EmulateResult) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=result.planned,
        initial=result.skipped,
        desc="sessions",
        unit="session",
        disable=not config.progress,
        dynamic_ncols=True,
    )
