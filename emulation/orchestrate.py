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
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streambed.core.errors import ConfigError, StreambedError
from streambed.core.linkkinds import AUTO, FIRST_PACKET
from streambed.core.servers import wait_healthy
from streambed.emulation.link import (
    LinkedProcess,
    LinkSpec,
    link_ports,
    outside_url,
    resolve_kind,
    start_behind_link,
)
from streambed.reports.provenance import run_provenance
from streambed.reports.repeats import spread_summary, trace_spreads, write_repeats_csv
from streambed.reports.rundir import RunDir, SessionDir
from streambed.reports.sessionlog import ChunkRecord, read_jsonl, write_pensieve_log
from streambed.reports.summary import SessionMetrics, session_metrics, write_report

if TYPE_CHECKING:
    from streambed.abr_service.video import Video

log = logging.getLogger(__name__)

ATTEMPTS = 2  # a failed session is retried once
PLAYERS = ("streambed", "dashjs")
_SERVICE_START_S = 60.0
_POLL_S = 0.1
_SESSION_ID_CHARS = re.compile(r"[^A-Za-z0-9._:@-]")


@dataclass(frozen=True)
class EmulateConfig:
    """What ``streambed emulate`` runs (see the module docstring)."""

    traces: Path
    algorithms: tuple[str, ...]
    out: Path
    content: Path | None = None
    """Content directory (``streambed.server.build`` layout); with ``video``, built into OUT/content."""
    video: Path | None = None
    """Video description from which size-exact synthetic content is built."""
    model: Path | None = None
    link: str = AUTO
    delay_ms: float = 40.0
    trace_start: str = FIRST_PACKET
    """Trace time 0 of each session's link (``streambed.core.linkkinds.TRACE_STARTS``)."""
    parallel: int = 1
    repeat: int = 1
    abr_url: str | None = None
    origin_url: str | None = None
    resume: bool = False
    max_chunks: int | None = None
    progress: bool = True
    session_timeout_s: float | None = None
    """Stop (and fail) a session still running after this long (None: no limit)."""
    player: str = "streambed"
    """``streambed`` (the headless player) or ``dashjs`` (dash.js in headless Chromium)."""
    params: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per algorithm, the parameters each of its sessions sends to the service."""
    cluster: str | None = None
    """Ray address (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``, ``local``): run the sessions
    as Ray tasks there (``streambed.emulation.cluster``); None: threads of this process."""

    def __post_init__(self) -> None:
        if not self.algorithms:
            raise ConfigError("no algorithms to emulate")
        if self.parallel < 1 or self.repeat < 1:
            raise ConfigError("--parallel and --repeat must be >= 1")
        if self.content is not None and self.video is not None:
            raise ConfigError("give --content or --video, not both")
        if self.content is None and self.video is None and self.abr_url is None:
            raise ConfigError("need --content or --video (or both --origin and --abr)")
        if self.content is None and self.video is None and self.origin_url is None:
            raise ConfigError("need --content or --video (or both --origin and --abr)")
        if self.player not in PLAYERS:
            raise ConfigError(f"player {self.player!r}: choose {', '.join(PLAYERS)}")
        if self.player == "dashjs" and self.video is not None:
            raise ConfigError(
                "--player dashjs decodes the media: give --content built with ffmpeg "
                "(`streambed origin build`), not the synthetic segments of --video"
            )
        if "ppo" in self.algorithms and self.model is None and self.abr_url is None:
            raise ConfigError("--algorithms ppo needs --model CHECKPOINT (or --abr URL)")


@dataclass(frozen=True)
class SessionJob:
    """One session: an algorithm over a trace (the ``repeat``-th time of ``repeats``)."""

    algorithm: str
    trace: Path
    repeat: int = 0
    repeats: int = 1

    @property
    def label(self) -> str:
        """The trace's name in the report (``<stem>-r<R>`` when repeated)."""
        stem = self.trace.stem
        return stem if self.repeats == 1 else f"{stem}-r{self.repeat + 1}"

    def log_dir(self, out: Path) -> Path:
        return RunDir(out).session_dir(self.algorithm, self.label)

    def session_json(self, out: Path) -> Path:
        return RunDir(out).session(self.algorithm, self.label).session_json


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


def plan_jobs(traces_dir: Path, algorithms: Sequence[str], repeats: int = 1) -> list[SessionJob]:
    from streambed.traces.traceset import trace_files

    files = trace_files(traces_dir)
    return [
        SessionJob(algorithm, trace, r, repeats)
        for algorithm in algorithms
        for trace in files
        for r in range(repeats)
    ]


def session_status(path: Path) -> str | None:
    """The ``status`` of a session.json (None when absent or unreadable)."""
    try:
        status = json.loads(path.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None
    return status if isinstance(status, str) else None


# ---------------------------------------------------------------------------------------------
# Services


def _wait_healthy(
    url: str, proc: subprocess.Popen[bytes] | None, what: str, log_path: Path
) -> None:

    why = wait_healthy(url, proc, _SERVICE_START_S)
    if why is not None:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise ConfigError(f"{what} {why}: {' | '.join(tail)}")


@contextlib.contextmanager
def decision_service(video_json: Path, out: Path, model: Path | None = None) -> Iterator[str]:
    """``streambed serve`` on 0.0.0.0 (a free port) as a subprocess; yields its loopback URL."""
    from streambed.core.servers import free_port

    port = free_port("0.0.0.0")
    argv = [
        sys.executable,
        "-m",
        "streambed",
        "serve",
        "--host=0.0.0.0",
        f"--port={port}",
        f"--video={video_json}",
        f"--models-dir={out / 'models'}",
    ]
    if model is not None:
        argv.append(f"--model={model}")
    log_path = out / "serve.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, "the decision service (streambed serve)", log_path)
        log.info("decision service at %s (log %s)", url, log_path)
        yield url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def origin_server(content: Path) -> Iterator[str]:
    """The origin app under uvicorn on 0.0.0.0 (a free port), in a thread; its loopback URL."""
    from streambed.core.servers import serve_in_thread
    from streambed.server.app import create_app

    with serve_in_thread(create_app(content), host="0.0.0.0") as url:
        yield url.replace("0.0.0.0", "127.0.0.1")


def prepare_content(config: EmulateConfig) -> Path | None:
    """The content directory: ``--content``, or synthetic content built from ``--video``."""
    if config.content is not None:
        return config.content
    if config.video is None:
        return None
    from streambed.abr_service.video import VIDEO_JSON, load_video
    from streambed.server.build import build_synthetic

    target = config.out / "content"
    if config.resume and (target / VIDEO_JSON).is_file():
        return target
    build_synthetic(load_video(config.video), target, force=True)
    return target


def _mpd_url(origin: str) -> str:
    from streambed.server.mpd import MPD_NAME

    return origin if origin.endswith(".mpd") else f"{origin.rstrip('/')}/{MPD_NAME}"


# ---------------------------------------------------------------------------------------------
# Sessions


class _Runner:
    """Runs sessions behind links from worker threads; ``stop()`` ends the running ones."""

    def __init__(
        self, config: EmulateConfig, kind: str, mpd_url: str, abr_url: str, run_id: str
    ) -> None:
        self.config = config
        self.kind = kind
        self.mpd_url = mpd_url
        self.abr_url = abr_url
        self.run_id = run_id
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.running = 0

    def stop(self) -> None:
        self.stopping.set()

    def run(self, job: SessionJob) -> dict[str, Any] | None:
        """Run ``job`` (retried once); None when done, else a description of the failure."""
        reasons = []
        for attempt in range(1, ATTEMPTS + 1):
            if self.stopping.is_set():
                return {"interrupted": True}
            reason = self._attempt(job, attempt)
            if reason is None:
                return None
            log.warning(
                "session %s/%s attempt %d failed: %s", job.algorithm, job.label, attempt, reason
            )
            reasons.append(reason)
        return {"attempts": len(reasons), "reasons": reasons}

    def _attempt(self, job: SessionJob, attempt: int) -> str | None:
        from streambed.player.argv import play_argv
        from streambed.player.session import PlayerConfig

        cfg = self.config
        log_dir = job.log_dir(cfg.out)
        log_dir.mkdir(parents=True, exist_ok=True)
        job.session_json(cfg.out).unlink(missing_ok=True)
        session_id = _SESSION_ID_CHARS.sub("_", f"{self.run_id}-{job.algorithm}-{job.label}")
        player = PlayerConfig(
            mpd_url=self.mpd_url,
            abr_url=self.abr_url,
            algorithm=job.algorithm,
            session_id=f"{session_id[:120]}-a{attempt}",
            run_id=self.run_id,
            trace=job.label,
            max_chunks=cfg.max_chunks,
            log_dir=log_dir,
            player=cfg.player,
            params=dict(cfg.params.get(job.algorithm, {})) or None,
        )
        spec = LinkSpec(
            downlink=job.trace,
            delay_ms=cfg.delay_ms,
            kind=self.kind,
            ports=link_ports([self.mpd_url, self.abr_url]),
            trace_start=cfg.trace_start,
        )
        with self.lock:
            self.running += 1
        try:
            with open(SessionDir(log_dir).play_log, "wb") as out_file:
                try:
                    linked = start_behind_link(
                        spec,
                        play_argv(player),
                        stdin=subprocess.DEVNULL,
                        stdout=out_file,
                        stderr=subprocess.STDOUT,
                        writable=[log_dir],
                    )
                except StreambedError as exc:
                    return f"link: {exc}"
                rc = self._wait(linked)
        except StreambedError as exc:  # tearing the link down failed
            return f"link: {exc}"
        finally:
            with self.lock:
                self.running -= 1
        if self.stopping.is_set():
            return "interrupted"
        status = session_status(SessionDir(log_dir).session_json)
        if rc == 0 and status == "done":
            for warning in _warnings(log_dir):  # e.g. the service's video is not the MPD's
                log.warning("session %s/%s: %s", job.algorithm, job.label, warning)
            return None
        return f"exit status {rc}, session {status or 'without session.json'}: {_reason(log_dir)}"

    def _wait(self, linked: LinkedProcess) -> int:
        timeout = self.config.session_timeout_s
        deadline = None if timeout is None else time.monotonic() + timeout
        with linked:
            while True:
                rc = linked.poll()
                if rc is not None:
                    return rc
                if self.stopping.is_set() or (deadline is not None and time.monotonic() > deadline):
                    linked.terminate()
                    try:
                        return linked.wait(10)
                    except subprocess.TimeoutExpired:
                        return -1  # closing the link kills it
                time.sleep(_POLL_S)


def _warnings(log_dir: Path) -> list[str]:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        found = json.loads(SessionDir(log_dir).session_json.read_text()).get("warnings")
        if isinstance(found, list):
            return [str(w) for w in found]
    return []


def _reason(log_dir: Path) -> str:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        reason = json.loads(SessionDir(log_dir).session_json.read_text()).get("reason")
        if reason:
            return str(reason)
    with contextlib.suppress(OSError):
        lines = SessionDir(log_dir).play_log.read_text(errors="replace").strip().splitlines()
        if lines:
            return lines[-1]
    return "no reason given"


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
    log.info(
        "%d sessions (%d already done), %d at a time, %s link, %g ms delay",
        len(jobs),
        len(done_before),
        config.parallel,
        kind,
        config.delay_ms,
    )
    try:
        if pending:
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
    from tqdm import tqdm

    if config.cluster is not None:
        _run_cluster(config, kind, pending, result, run_id, on_progress)
        return
    with contextlib.ExitStack() as stack:
        content = prepare_content(config)
        origin = config.origin_url
        if origin is None:
            assert content is not None
            origin = stack.enter_context(origin_server(content))
        abr = config.abr_url
        if abr is None:
            assert content is not None
            abr = stack.enter_context(
                decision_service(content / "video.json", config.out, config.model)
            )
        mpd_url, abr_url = outside_url(_mpd_url(origin), kind), outside_url(abr.rstrip("/"), kind)
        runner = _Runner(config, kind, mpd_url, abr_url, run_id)
        bar = stack.enter_context(
            tqdm(
                total=result.planned,
                initial=result.skipped,
                desc="sessions",
                unit="session",
                disable=not config.progress,
                dynamic_ncols=True,
            )
        )
        pool = ThreadPoolExecutor(config.parallel, thread_name_prefix="session")
        futures: dict[Future[dict[str, Any] | None], SessionJob] = {
            pool.submit(runner.run, job): job for job in pending
        }
        try:
            remaining = set(futures)
            while remaining:
                finished, remaining = wait(remaining, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    job = futures[future]
                    try:
                        failure = future.result()
                    except Exception as exc:  # a bug in a worker must not stop the others
                        failure = {"attempts": 1, "reasons": [f"{type(exc).__name__}: {exc}"]}
                    _record(config, result, job, failure)
                    bar.update(1)
                bar.set_postfix(running=runner.running, failed=len(result.failed), refresh=False)
                bar.refresh()
                if on_progress is not None:
                    on_progress(len(result.done), runner.running, len(result.failed))
        except BaseException:
            runner.stop()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _record(
    config: EmulateConfig, result: EmulateResult, job: SessionJob, failure: dict[str, Any] | None
) -> None:
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


def _run_cluster(
    config: EmulateConfig,
    kind: str,
    pending: list[SessionJob],
    result: EmulateResult,
    run_id: str,
    on_progress: Callable[[int, int, int], None] | None,
) -> None:
    from tqdm import tqdm

    from streambed.emulation.cluster import run_on_cluster

    with tqdm(
        total=result.planned,
        initial=result.skipped,
        desc="sessions",
        unit="session",
        disable=not config.progress,
        dynamic_ncols=True,
    ) as bar:

        def on_result(job: SessionJob, failure: dict[str, Any] | None) -> None:
            _record(config, result, job, failure)
            bar.update(1)
            bar.set_postfix(failed=len(result.failed), refresh=False)
            if on_progress is not None:
                on_progress(len(result.done), 0, len(result.failed))

        result.nodes = dict(run_on_cluster(config, kind, run_id, pending, on_result, bar))
