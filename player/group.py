"""Several players behind one link: ``python -m streambed.player.group --spec FILE.json``.

The command ``streambed emulate --clients-per-link N`` runs behind each shared link. The spec
(JSON) lists the players and the optional cross traffic::

    {"players": [{"label": "bba/flat-p1", "argv": ["python", "-m", "streambed", "play", ...],
                  "start_s": 0.0, "log": "OUT/sessions/bba/flat-p1/play.log"}, ...],
     "cross": {"port": 41234, "windows": [[5.0, 15.0]], "out": "OUT/links/x/cross.json"},
     "status": "OUT/links/x/group.json"}

Player ``i`` is started ``start_s`` seconds after the group starts (its output to ``log``); for
each cross-traffic window ``[start, stop]`` a bulk TCP download from the host's ``port``
(reached as ``streambed.core.linkkinds.address_of`` says, like the origin) runs from ``start``
to ``stop`` seconds, and its bytes and times go to ``out``. When every player has ended, the
status file records each player's exit status and times (``time.monotonic()`` of the group's
zero too, so that a report can put the players on the link's clock). Exit status 0 only if
every player exited 0; 1 otherwise; 2 for a bad spec. SIGTERM (or SIGINT) is forwarded to the
running players, and the status is still written (exit 143).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from streambed.core.errors import ConfigError
from streambed.core.fileio import atomic_write_bytes
from streambed.core.linkkinds import address_of

_POLL_S = 0.05
_STOP_GRACE_S = 5.0
_RECV_BYTES = 1 << 16


@dataclass
class _Player:
    label: str
    argv: list[str]
    start_s: float
    log: Path
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    started_s: float | None = None
    ended_s: float | None = None
    exit_status: int | None = None


@dataclass
class CrossWindow:
    """One cross-traffic download: connect at ``start_s``, close at ``stop_s`` (group clock)."""

    start_s: float
    stop_s: float
    connected_s: float | None = None
    closed_s: float | None = None
    bytes: int = 0
    error: str | None = None


def _load_spec(path: Path) -> dict[str, Any]:
    try:
        spec = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--spec {path}: unreadable: {exc}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("players"), list):
        raise ConfigError(f"--spec {path}: expected an object with a 'players' list")
    if not spec["players"]:
        raise ConfigError(f"--spec {path}: no players")
    return spec


def _players(spec: dict[str, Any], path: Path) -> list[_Player]:
    found = []
    for i, entry in enumerate(spec["players"]):
        try:
            argv = [str(a) for a in entry["argv"]]
            start = float(entry.get("start_s", 0.0))
            log = Path(entry["log"])
            label = str(entry.get("label", f"p{i + 1}"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"--spec {path}: players[{i}]: {exc!r}") from None
        if not argv or not start >= 0:
            raise ConfigError(f"--spec {path}: players[{i}]: needs argv and start_s >= 0")
        found.append(_Player(label, argv, start, log))
    return found


def download(port: int, window: CrossWindow, zero: float, stopping: threading.Event) -> None:
    """Bulk download from the host's ``port`` during ``window`` (group clock from ``zero``)."""

    def clock() -> float:
        return time.monotonic() - zero

    if stopping.wait(max(0.0, window.start_s - clock())):
        return
    host, mapped = address_of(port)
    try:
        sock = socket.create_connection((host, mapped), timeout=10)
    except OSError as exc:
        window.error = f"connect {host}:{mapped}: {exc}"
        return
    window.connected_s = clock()
    with sock:
        sock.settimeout(0.2)  # to notice the window's end while no byte arrives
        while not stopping.is_set() and clock() < window.stop_s:
            try:
                data = sock.recv(_RECV_BYTES)
            except TimeoutError:
                continue
            except OSError as exc:
                window.error = f"receive: {exc}"
                break
            if not data:
                window.error = "the server closed the connection"
                break
            window.bytes += len(data)
    window.closed_s = clock()


def run_group(spec_path: Path) -> int:
    spec = _load_spec(spec_path)
    players = _players(spec, spec_path)
    status_path = Path(spec.get("status") or spec_path.with_name("group.json"))
    cross = spec.get("cross") or None
    windows: list[CrossWindow] = []
    port = 0
    if cross is not None:
        try:
            port = int(cross["port"])
            windows = [CrossWindow(float(a), float(b)) for a, b in cross.get("windows", [])]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"--spec {spec_path}: cross: {exc!r}") from None
    stopping = threading.Event()
    terminated: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        terminated.append(signum)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    zero = time.monotonic()
    threads = [
        threading.Thread(target=download, args=(port, w, zero, stopping), daemon=True)
        for w in windows
    ]
    for thread in threads:
        thread.start()
    try:
        _run_players(players, zero, stopping)
    finally:
        stopping.set()  # the players are done: so is the cross traffic
        for thread in threads:
            thread.join(5.0)
        for p in players:
            if p.log_file is not None:
                p.log_file.close()
        if cross is not None and cross.get("out"):
            _write_json(
                Path(cross["out"]),
                {
                    "port": port,
                    "zero_monotonic_s": zero,
                    "windows": [
                        {
                            "start_s": w.start_s,
                            "stop_s": w.stop_s,
                            "connected_s": w.connected_s,
                            "closed_s": w.closed_s,
                            "bytes": w.bytes,
                            "error": w.error,
                        }
                        for w in windows
                    ],
                    "bytes": sum(w.bytes for w in windows),
                },
            )
        _write_json(
            status_path,
            {
                "zero_monotonic_s": zero,
                "terminated": bool(terminated),
                "players": [
                    {
                        "label": p.label,
                        "start_s": p.start_s,
                        "started_s": p.started_s,
                        "ended_s": p.ended_s,
                        "exit_status": p.exit_status,
                        "log": str(p.log),
                    }
                    for p in players
                ],
            },
        )
    if terminated:
        return 143
    return 0 if all(p.exit_status == 0 for p in players) else 1


def _run_players(players: list[_Player], zero: float, stopping: threading.Event) -> None:
    waiting = sorted(players, key=lambda p: p.start_s)
    running: list[_Player] = []
    try:
        while (waiting or running) and not stopping.is_set():
            now = time.monotonic() - zero
            while waiting and waiting[0].start_s <= now:
                p = waiting.pop(0)
                p.log.parent.mkdir(parents=True, exist_ok=True)
                p.log_file = open(p.log, "wb")  # noqa: SIM115 (closed by run_group)
                p.started_s = time.monotonic() - zero
                try:
                    p.process = subprocess.Popen(
                        p.argv, stdin=subprocess.DEVNULL, stdout=p.log_file, stderr=p.log_file
                    )
                except OSError as exc:
                    p.log_file.write(f"cannot start {p.argv[0]}: {exc}\n".encode())
                    p.exit_status = 127
                    p.ended_s = p.started_s
                    continue
                running.append(p)
            for p in list(running):
                assert p.process is not None
                rc = p.process.poll()
                if rc is not None:
                    p.exit_status = 128 - rc if rc < 0 else rc
                    p.ended_s = time.monotonic() - zero
                    running.remove(p)
            stopping.wait(_POLL_S)
    finally:
        _stop(running, zero)


def _stop(running: list[_Player], zero: float) -> None:
    """Forward SIGTERM to the players still running; kill those that outlive the grace."""
    for p in running:
        assert p.process is not None
        if p.process.poll() is None:
            p.process.terminate()
    deadline = time.monotonic() + _STOP_GRACE_S
    for p in running:
        assert p.process is not None
        try:
            rc = p.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.process.kill()
            rc = p.process.wait()
        p.exit_status = 128 - rc if rc < 0 else rc
        p.ended_s = time.monotonic() - zero


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        atomic_write_bytes(path, (json.dumps(data, indent=1) + "\n").encode())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m streambed.player.group",
        description="Run several `streambed play` players (and cross traffic) together, e.g. "
        "behind one link; exit 0 only if every player succeeded.",
    )
    p.add_argument("--spec", type=Path, required=True, help="the group's JSON spec")
    args = p.parse_args(argv)
    try:
        return run_group(args.spec)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
