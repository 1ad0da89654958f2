"""Several players behind one shaped link: ``streambed emulate --clients-per-link N``.

Each link (``LinkJob``: a trace, a repeat, and its players) replays one trace with one queue;
behind it one command, ``python -m streambed.player.group`` (:mod:`streambed.player.group`),
starts every player's ``streambed play`` at its offset (``--stagger-s``) and the optional
cross traffic (a bulk TCP download from the run's ``BulkServer``, ``--cross-traffic``), and
exits 0 only if every player succeeded. Players keep their own sessions
(``sessions/<algorithm>/<trace>-p<i>[-rR]/``); the link's files go to ``links/<link>/``
(``reports.rundir.LinkDir``): ``link.json`` (written before and after the run, with the link's
counters), ``group.json``, ``delivery.log`` (netns and mahimahi; the proxy relays byte streams
and has no packet log: its ``link.json`` keeps its byte counters), ``cross.json``.

A link is done when all its players' ``session.json`` say ``done``; a failed link is run
again once (all its players).
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streambed.core.errors import ConfigError, StreambedError
from streambed.core.fileio import atomic_write_bytes
from streambed.emulation.link import LinkSpec, link_ports, start_behind_link
from streambed.emulation.sessions import (
    PLAYERS,
    EmulateConfig,
    SessionJob,
    SessionRunner,
    session_status,
)
from streambed.reports.rundir import LinkDir, RunDir

log = logging.getLogger(__name__)

MIX_GROUP = "mix"
_MIX_ITEM = re.compile(r"^([A-Za-z0-9_.-]+)(?:@([A-Za-z0-9_-]+))?=(\d+)$")


def parse_mix(text: str, default_player: str = "streambed") -> tuple[tuple[str, str, int], ...]:
    """``ALG[@PLAYER]=COUNT,...`` -> ``((algorithm, player, count), ...)``; ``ConfigError``
    (one line naming the item) when malformed."""
    found: list[tuple[str, str, int]] = []
    for item in (part.strip() for part in text.split(",")):
        match = _MIX_ITEM.match(item)
        if match is None:
            raise ConfigError(
                f"--mix {item!r}: expected ALGORITHM[@PLAYER]=COUNT, e.g. ppo=2,robustmpc@dashjs=1"
            )
        algorithm, player, count = match.group(1), match.group(2) or default_player, match[3]
        if player not in PLAYERS:
            raise ConfigError(f"--mix {item!r}: player {player!r}: choose {', '.join(PLAYERS)}")
        if int(count) < 1:
            raise ConfigError(f"--mix {item!r}: COUNT must be >= 1")
        if any(a == algorithm and p == player for a, p, _ in found):
            raise ConfigError(f"--mix {item!r}: {algorithm}@{player} given twice")
        found.append((algorithm, player, int(count)))
    return tuple(found)


def parse_windows(values: Sequence[str]) -> tuple[tuple[float, float], ...]:
    """``START:STOP`` items (repeated flags and/or comma lists) -> sorted windows;
    ``ConfigError`` naming the bad one."""
    windows = []
    for value in values:
        for item in (v.strip() for v in value.split(",") if v.strip()):
            start, sep, stop = item.partition(":")
            try:
                window = (float(start), float(stop))
            except ValueError:
                window = (-1.0, -1.0)
            if not sep or not (0 <= window[0] < window[1] < 1e6):
                raise ConfigError(
                    f"--cross-traffic {item!r}: expected START:STOP seconds, 0 <= START < STOP"
                )
            windows.append(window)
    return tuple(sorted(windows))


@dataclass(frozen=True)
class LinkJob:
    """One shared link: ``players`` ((algorithm, player kind) per place) over ``trace``."""

    group: str
    """The algorithm of identical players, or ``mix``."""
    trace: Path
    players: tuple[tuple[str, str], ...]
    repeat: int = 0
    repeats: int = 1

    @property
    def label(self) -> str:
        """``<group>-<trace stem>[-rR]``: the link's directory under ``links/``."""
        stem = f"{self.group}-{self.trace.stem}"
        return stem if self.repeats == 1 else f"{stem}-r{self.repeat + 1}"

    @property
    def sessions(self) -> list[SessionJob]:
        return [
            SessionJob(algorithm, self.trace, self.repeat, self.repeats, i, player)
            for i, (algorithm, player) in enumerate(self.players, 1)
        ]

    def link_dir(self, out: Path) -> LinkDir:
        return RunDir(out).link(self.label)

    def done(self, out: Path) -> bool:
        """Every player's session.json says done."""
        return all(session_status(s.session_json(out)) == "done" for s in self.sessions)


def plan_links(config: EmulateConfig) -> list[LinkJob]:
    """The run's links: per trace and repeat, one link of the mix, or per algorithm one link
    of ``clients_per_link`` identical players."""
    from streambed.traces.traceset import trace_files

    files = trace_files(config.traces)
    if config.mix:
        groups = [
            (MIX_GROUP, tuple((a, p) for a, p, n in config.mix for _ in range(n))),
        ]
    else:
        groups = [
            (a, tuple((a, config.player) for _ in range(config.clients_per_link)))
            for a in config.algorithms
        ]
    return [
        LinkJob(group, trace, players, r, config.repeat)
        for group, players in groups
        for trace in files
        for r in range(config.repeat)
    ]


class LinkRunner(SessionRunner):
    """Runs shared links (each a player group behind one link) from worker threads."""

    def __init__(
        self,
        config: EmulateConfig,
        kind: str,
        mpd_url: str,
        abr_url: str,
        run_id: str,
        cross_port: int | None = None,
    ) -> None:
        super().__init__(config, kind, mpd_url, abr_url, run_id)
        self.cross_port = cross_port

    def run_link(self, job: LinkJob) -> dict[str, Any] | None:
        """Run ``job`` (retried once); None when done, else a description of the failure."""
        return self.retried(lambda attempt: self._attempt_link(job, attempt), f"link {job.label}")

    def _player_argv(self, session: SessionJob, attempt: int) -> list[str]:
        from streambed.player.argv import play_argv

        return play_argv(self.player_config(session, attempt))

    def _attempt_link(self, job: LinkJob, attempt: int) -> str | None:
        cfg = self.config
        link_dir = job.link_dir(cfg.out)
        link_dir.path.mkdir(parents=True, exist_ok=True)
        sessions = job.sessions
        players = []
        for session in sessions:
            log_dir = session.log_dir(cfg.out)
            log_dir.mkdir(parents=True, exist_ok=True)
            session.session_json(cfg.out).unlink(missing_ok=True)
            players.append(
                {
                    "label": f"{session.algorithm}/{session.label}",
                    "algorithm": session.algorithm,
                    "player": session.player or cfg.player,
                    "index": session.index,
                    "session_dir": str(log_dir.relative_to(cfg.out)),
                    "start_s": (int(session.index or 1) - 1) * cfg.stagger_s,
                    "argv": self._player_argv(session, attempt),
                    "log": str(RunDir(cfg.out).session(session.algorithm, session.label).play_log),
                }
            )
        cross = None
        if cfg.cross_traffic and self.cross_port is not None:
            cross = {
                "port": self.cross_port,
                "windows": [list(w) for w in cfg.cross_traffic],
                "out": str(link_dir.cross_json),
            }
        for stale in (link_dir.cross_json, link_dir.group_json, link_dir.delivery_log):
            stale.unlink(missing_ok=True)
        spec_path = link_dir.path / "group-spec.json"
        _write_json(
            spec_path,
            {"players": players, "cross": cross, "status": str(link_dir.group_json)},
        )
        ports = link_ports(
            [self.mpd_url, self.abr_url]
            + ([] if cross is None else [f"http://127.0.0.1:{self.cross_port}"])
        )
        origin_port = link_ports([self.mpd_url])
        info: dict[str, Any] = {
            "label": job.label,
            "group": job.group,
            "trace": job.trace.stem,
            "trace_file": str(job.trace),
            "repeat": job.repeat + 1,
            "kind": self.kind,
            "delay_ms": cfg.delay_ms,
            "trace_start": cfg.trace_start,
            "stagger_s": cfg.stagger_s,
            "cross_traffic": [list(w) for w in cfg.cross_traffic],
            "cross_port": None if cross is None else self.cross_port,
            "origin_port": origin_port[0] if origin_port else None,
            "players": [{k: v for k, v in p.items() if k not in ("argv", "log")} for p in players],
            "attempt": attempt,
            "status": "running",
        }
        _write_json(link_dir.link_json, info)
        spec = LinkSpec(
            downlink=job.trace,
            delay_ms=cfg.delay_ms,
            kind=self.kind,
            ports=ports,
            trace_start=cfg.trace_start,
            downlink_log=None if self.kind == "proxy" else link_dir.delivery_log,
        )
        argv = [sys.executable, "-m", "streambed.player.group", f"--spec={spec_path}"]
        writable = [link_dir.path, *(s.log_dir(cfg.out) for s in sessions)]
        stats = None
        with self.lock:
            self.running += len(sessions)
        try:
            with open(link_dir.group_log, "wb") as out_file:
                try:
                    linked = start_behind_link(
                        spec,
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=out_file,
                        stderr=subprocess.STDOUT,
                        writable=writable,
                    )
                except StreambedError as exc:
                    return f"link: {exc}"
                rc = self._wait(linked)
                stats = linked.stats
        except StreambedError as exc:  # tearing the link down failed
            return f"link: {exc}"
        finally:
            with self.lock:
                self.running -= len(sessions)
            info["stats"] = None if stats is None else stats.raw
            info["epoch_monotonic_s"] = None if stats is None else stats.raw.get("epoch")
            info["status"] = "done" if job.done(cfg.out) else "failed"
            _write_json(link_dir.link_json, info)
        if self.stopping.is_set():
            return "interrupted"
        if rc == 0 and job.done(cfg.out):
            return None
        bad = [
            f"{s.algorithm}/{s.label}: {session_status(s.session_json(cfg.out)) or 'no session.json'}"
            for s in sessions
            if session_status(s.session_json(cfg.out)) != "done"
        ]
        return f"group exit status {rc}; " + ("; ".join(bad) or "all sessions done")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=1) + "\n").encode())
    path.chmod(0o644)  # mkstemp's 0600 would hide the spec from the mahimahi link's user
