"""One emulated session and what it talks to: the run's configuration (``EmulateConfig``), a
session (``SessionJob``), the origin and decision service a run starts, and ``SessionRunner``,
which plays sessions behind their links from worker threads (retried once). The local executor
(:mod:`streambed.emulation.orchestrate`) and the Ray one (:mod:`streambed.emulation.cluster`)
both run sessions with it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streambed.abr_service.qoe import MEASURED, QOE_NAMES, make_qoe
from streambed.core.errors import ConfigError, StreambedError
from streambed.core.linkkinds import AUTO, FIRST_PACKET
from streambed.core.servers import wait_healthy
from streambed.emulation.link import LinkedProcess, LinkSpec, link_ports, start_behind_link
from streambed.reports.rundir import RunDir, SessionDir, player_label

if TYPE_CHECKING:
    from streambed.player.base import PlayerConfig

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
    qoe: str = "lin"
    """QoE metric of the players' records and the report (ssim and vmaf: content whose
    video.json carries the measurements)."""
    cluster: str | None = None
    """Ray address (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``, ``local``): run the sessions
    as Ray tasks there (``streambed.emulation.cluster``); None: threads of this process."""
    clients_per_link: int = 1
    """Players sharing each link (``streambed.emulation.shared``); 1: a link per session."""
    mix: tuple[tuple[str, str, int], ...] = ()
    """``(algorithm, player, count)`` of each link's players (``--mix``); empty: each
    algorithm of ``algorithms`` gets links of ``clients_per_link`` identical players."""
    stagger_s: float = 0.0
    """A shared link's player ``i`` (from 1) starts ``(i - 1) * stagger_s`` after the first."""
    cross_traffic: tuple[tuple[float, float], ...] = ()
    """Bulk TCP download windows ``(start_s, stop_s)`` on every shared link, from its first
    player's start."""

    @property
    def shared(self) -> bool:
        """Players share links (each link's group runs behind it): N > 1, a mix, or cross
        traffic (which shares the link with even one player)."""
        return self.clients_per_link > 1 or bool(self.mix) or bool(self.cross_traffic)

    def __post_init__(self) -> None:
        if not self.algorithms:
            raise ConfigError("no algorithms to emulate")
        if self.clients_per_link < 1:
            raise ConfigError(f"--clients-per-link {self.clients_per_link}: must be >= 1")
        if not (self.stagger_s >= 0 and self.stagger_s < 1e6):
            raise ConfigError(f"--stagger-s {self.stagger_s}: must be a number >= 0")
        if self.mix and sum(c for *_, c in self.mix) != self.clients_per_link:
            raise ConfigError(
                f"--mix has {sum(c for *_, c in self.mix)} players per link, "
                f"--clients-per-link {self.clients_per_link}: give one, or make them agree"
            )
        if self.shared and self.cluster is not None:
            raise ConfigError("--cluster runs one player per link: drop --clients-per-link/--mix")
        players = {p for _, p, _ in self.mix} or {self.player}
        if "dashjs" in players and self.video is not None and self.mix:
            raise ConfigError(
                "--mix with @dashjs players decodes the media: give --content built with "
                "ffmpeg (`streambed origin build`), not the synthetic segments of --video"
            )
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
        if self.qoe not in QOE_NAMES:
            raise ConfigError(f"qoe {self.qoe!r}: choose {', '.join(QOE_NAMES)}")
        if self.qoe in MEASURED and self.video is not None:
            raise ConfigError(
                f"--qoe {self.qoe} scores what the viewer sees, measured on real content: give "
                "--content built by `streambed origin build` (synthetic --video content has no "
                "measurements)"
            )
        if self.qoe in MEASURED and self.content is not None:
            from streambed.abr_service.video import load_video

            make_qoe(self.qoe, load_video(self.content))  # VideoError: one line, exit 2
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
    index: int | None = None
    """Its place (from 1) on a link shared with other players (None: a link of its own)."""
    player: str | None = None
    """Its player kind when not the run's (a shared link's mix)."""

    @property
    def label(self) -> str:
        """The trace's name in the report (``<stem>-r<R>`` when repeated; a shared link's
        player: ``<stem>-p<i>[-r<R>]``, ``reports.rundir.player_label``)."""
        stem = self.trace.stem
        repeat = None if self.repeats == 1 else self.repeat + 1
        if self.index is not None:
            return player_label(stem, self.index, repeat)
        return stem if repeat is None else f"{stem}-r{repeat}"

    def log_dir(self, out: Path) -> Path:
        return RunDir(out).session_dir(self.algorithm, self.label)

    def session_json(self, out: Path) -> Path:
        return RunDir(out).session(self.algorithm, self.label).session_json


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


@contextlib.contextmanager
def run_servers(config: EmulateConfig) -> Iterator[tuple[str, str]]:
    """The origin and decision service a run's sessions use: the URLs given, or servers
    started here (content from ``prepare_content``); yields (origin URL, service URL)."""
    with contextlib.ExitStack() as stack:
        content = prepare_content(config)
        origin, abr = config.origin_url, config.abr_url
        if origin is None:
            assert content is not None  # EmulateConfig: --content/--video, or both URLs
            origin = stack.enter_context(origin_server(content))
        if abr is None:
            assert content is not None
            abr = stack.enter_context(
                decision_service(content / "video.json", config.out, config.model)
            )
        yield origin, abr.rstrip("/")


def mpd_url(origin: str) -> str:
    from streambed.server.mpd import MPD_NAME

    return origin if origin.endswith(".mpd") else f"{origin.rstrip('/')}/{MPD_NAME}"


# ---------------------------------------------------------------------------------------------
# Sessions


class SessionRunner:
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
        return self.retried(
            lambda attempt: self._attempt(job, attempt), f"session {job.algorithm}/{job.label}"
        )

    def retried(self, attempt: Callable[[int], str | None], what: str) -> dict[str, Any] | None:
        """``attempt(n)`` (its failure's reason, None when done) up to ``ATTEMPTS`` times."""
        reasons = []
        for n in range(1, ATTEMPTS + 1):
            if self.stopping.is_set():
                return {"interrupted": True}
            reason = attempt(n)
            if reason is None:
                return None
            log.warning("%s attempt %d failed: %s", what, n, reason)
            reasons.append(reason)
        return {"attempts": len(reasons), "reasons": reasons}

    def player_config(self, job: SessionJob, attempt: int) -> PlayerConfig:
        """The player of ``job``'s ``attempt``-th try."""
        from streambed.player.session import PlayerConfig

        cfg = self.config
        ident = _SESSION_ID_CHARS.sub("_", f"{self.run_id}-{job.algorithm}-{job.label}")
        return PlayerConfig(
            mpd_url=self.mpd_url,
            abr_url=self.abr_url,
            algorithm=job.algorithm,
            session_id=f"{ident[:120]}-a{attempt}",
            run_id=self.run_id,
            trace=job.label,
            max_chunks=cfg.max_chunks,
            log_dir=job.log_dir(cfg.out),
            player=job.player or cfg.player,
            params=dict(cfg.params.get(job.algorithm, {})) or None,
            qoe=cfg.qoe,
        )

    def _attempt(self, job: SessionJob, attempt: int) -> str | None:
        from streambed.player.argv import play_argv

        cfg = self.config
        log_dir = job.log_dir(cfg.out)
        log_dir.mkdir(parents=True, exist_ok=True)
        job.session_json(cfg.out).unlink(missing_ok=True)
        player = self.player_config(job, attempt)
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
