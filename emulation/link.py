"""Run a command behind an emulated network link that replays a trace: the one Python API.

A ``LinkSpec`` names the traces (either format: Pensieve ``time_s Mbit/s`` files are converted to
Mahimahi's millisecond opportunities first), the one-way delay applied in each direction (ms),
an optional drop-tail queue limit (packets and/or bytes; unbounded by default, as Mahimahi) and
the kind of link:

``mahimahi``
    Mahimahi's ``mm-delay D mm-link UP DOWN -- COMMAND`` (needs mm-link and mm-delay on PATH and
    ``net.ipv4.ip_forward=1``; as root it runs them as an unprivileged user).
``netns``
    Streambed's own packet-level shaper with Mahimahi's semantics: the command runs in a fresh
    network namespace routed through a TUN pair to a shaper process (needs root or
    CAP_NET_ADMIN + CAP_SYS_ADMIN). See ``streambed.emulation.netns`` and ``streambed.emulation.shaper``.
``proxy``
    A userspace relay pacing byte streams by the trace, no privileges; it approximates the trace
    at the byte-stream level. Only the host ports listed in ``LinkSpec.ports`` are reachable.
``auto``
    The first of mahimahi, netns, proxy that works here (logged); as root, not mahimahi.

The command finds the host in its environment:

* ``STREAMBED_HOST``: the host's address as seen through the link (as ``$MAHIMAHI_BASE``); a
  server the host binds on 0.0.0.0 answers there (proxy: 127.0.0.1, and see the next line);
* ``STREAMBED_PORT_<P>``: for each port ``P`` in ``LinkSpec.ports``, the port to use for the
  host's port ``P`` (itself for mahimahi and netns; the relay's port for proxy). ``address_of``
  reads both, so a command written against them works behind every kind;
* ``STREAMBED_LINK_KIND``; ``STREAMBED_LINK_EPOCH``: ``time.monotonic()`` of the trace's time 0
  when it is known as the command starts (netns and proxy with ``trace_start="ready"``; the
  trace position of an event is ``time.monotonic() - epoch``, modulo the period);
  ``STREAMBED_LINK_EPOCH_FILE`` (netns and proxy): a JSON file ``{"epoch": ...}`` written when
  trace time 0 happens, which with the default ``trace_start="first-packet"`` is the command's
  first packet (netns) or connection (proxy): the session's first request.

``start_behind_link`` returns a ``LinkedProcess`` (non-blocking: many sessions run from one
thread); ``run_behind_link`` waits and returns the command's exit status (128 + N when killed
by signal N, as a shell reports it). Closing a ``LinkedProcess`` always tears the link down:
leftover processes in the namespace, the namespace, the TUN devices, the helper process and the
temporary files.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from streambed.core.errors import ConfigError, LinkError, StreambedError
from streambed.core.linkkinds import (
    AUTO,
    CHOICES,
    FIRST_PACKET,
    KINDS,
    READY,
    TRACE_STARTS,
    address_of,
)
from streambed.emulation import mahimahi, netns
from streambed.traces.formats import (
    detect_format,
    load_mahimahi,
    load_pensieve,
    pensieve_to_mahimahi,
)
from streambed.traces.formats import save_mahimahi as _save_mahimahi

log = logging.getLogger(__name__)

Kind = Literal["auto", "mahimahi", "netns", "proxy"]
_HELPER_START_S = 20.0
_STOP_GRACE_S = 5.0


@dataclass(frozen=True)
class LinkSpec:
    """What link to put a command behind.

    ``downlink``/``uplink``: trace files (Pensieve or Mahimahi format); the uplink defaults to the
    downlink, as with mm-link. ``delay_ms``: one-way delay added in each direction (mm-delay).
    ``queue_packets``/``queue_bytes``: drop-tail limit of each direction's queue (None:
    unbounded). ``ports``: host ports the command will reach (required by the proxy, which
    relays only those; exported as ``STREAMBED_PORT_<P>`` by every kind). ``downlink_log``:
    write the downlink's per-packet events there in mm-link's ``--downlink-log`` format
    (netns: the shaper's; mahimahi: mm-link's own, copied there when the link closes; proxy:
    none, it relays byte streams and has no packets to log).
    """

    downlink: Path
    uplink: Path | None = None
    delay_ms: float = 0.0
    queue_packets: int | None = None
    queue_bytes: int | None = None
    kind: str = AUTO
    ports: tuple[int, ...] = ()
    downlink_log: Path | None = None
    trace_start: str = READY
    """Trace time 0: ``ready``, when the link comes up (as mm-link), or ``first-packet``: the
    command's first packet (netns) or connection (proxy), i.e. a session's first request, so
    that every player and every repeat sees the same window (what ``play`` and ``emulate``
    use). mahimahi: always when mm-link starts."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "downlink", Path(self.downlink))
        if self.uplink is not None:
            object.__setattr__(self, "uplink", Path(self.uplink))
        object.__setattr__(self, "ports", tuple(int(p) for p in self.ports))
        if self.downlink_log is not None:
            object.__setattr__(self, "downlink_log", Path(self.downlink_log))
        if self.kind not in CHOICES:
            raise ConfigError(f"link kind {self.kind!r}: expected auto, {', '.join(KINDS)}")
        if self.trace_start not in TRACE_STARTS:
            raise ConfigError(
                f"trace start {self.trace_start!r}: expected one of {', '.join(TRACE_STARTS)}"
            )
        if not (self.delay_ms >= 0 and self.delay_ms < 1e7):
            raise ConfigError(f"delay_ms={self.delay_ms}: must be a number >= 0")
        for name in ("queue_packets", "queue_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name}={value}: must be >= 1 (or None for unbounded)")
        for port in self.ports:
            if not 0 < port < 65536:
                raise ConfigError(f"port {port}: must be in 1..65535")

    @property
    def uplink_trace(self) -> Path:
        return self.uplink if self.uplink is not None else self.downlink


@dataclass(frozen=True)
class DirectionStats:
    """What one direction carried (proxy: bytes only; packets and drops stay 0)."""

    packets: int = 0
    bytes: int = 0
    dropped_packets: int = 0
    dropped_bytes: int = 0
    max_packet_bytes: int = 0


@dataclass(frozen=True)
class LinkStats:
    """Counters of a finished netns or proxy link, and its helper process's CPU time."""

    kind: str
    down: DirectionStats
    up: DirectionStats
    cpu_s: float
    wall_s: float
    raw: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_json(cls, kind: str, data: dict[str, Any]) -> LinkStats:
        def direction(d: dict[str, Any]) -> DirectionStats:
            keys = DirectionStats.__dataclass_fields__
            return DirectionStats(**{k: int(v) for k, v in d.items() if k in keys})

        return cls(
            kind=kind,
            down=direction(data.get("down", {})),
            up=direction(data.get("up", {})),
            cpu_s=float(data.get("cpu_s", 0.0)),
            wall_s=float(data.get("wall_s", 0.0)),
            raw=data,
        )


# ---------------------------------------------------------------------------------------------
# Choosing a kind


def kind_unavailable(kind: str, auto: bool = False) -> str | None:
    """Why ``kind`` cannot run here (None when it can); ``auto``: as ``auto`` would choose (it
    passes mahimahi over as root, where it would run as another user)."""
    try:
        if kind == "mahimahi":
            mahimahi.require_mahimahi(allow_root=not auto)
        elif kind == "netns":
            netns.require_privileges()
        elif kind != "proxy":
            raise ConfigError(f"link kind {kind!r}: expected auto, {', '.join(KINDS)}")
    except StreambedError as exc:
        return str(exc)
    return None


def available_kinds() -> list[str]:
    """The kinds that can run on this machine, in the order ``auto`` prefers them."""
    return [kind for kind in KINDS if kind_unavailable(kind, auto=True) is None]


def resolve_kind(kind: str = AUTO) -> str:
    """``kind`` itself if it can run here (else ``ConfigError`` saying why); for ``auto``, the
    first available of mahimahi, netns, proxy."""
    if kind == AUTO:
        for candidate in KINDS:
            reason = kind_unavailable(candidate, auto=True)
            if reason is None:
                log.info("link kind auto: using %s", candidate)
                return candidate
            log.debug("link kind auto: not %s: %s", candidate, reason)
        raise LinkError("no link kind available")  # unreachable: proxy always is
    reason = kind_unavailable(kind)
    if reason is not None:
        raise ConfigError(reason)
    return kind


# ---------------------------------------------------------------------------------------------
# Traces


def mahimahi_trace_file(path: Path, workdir: Path) -> Path:
    """``path`` if it is a Mahimahi trace (validated), else its conversion written to workdir."""
    if detect_format(path) == "mahimahi":
        load_mahimahi(path)
        return path
    out = workdir / f"{len(list(workdir.iterdir()))}-{path.name}.mm"
    _save_mahimahi(pensieve_to_mahimahi(load_pensieve(path)), out)
    return out


# ---------------------------------------------------------------------------------------------
# The command's environment


def link_ports(urls: Sequence[str]) -> tuple[int, ...]:
    """The host ports a command behind the link needs mapped (``LinkSpec.ports``): those of
    ``urls`` on this machine, after ``outside_url``."""
    return tuple(sorted({_port(u) for u in urls if is_loopback(urlsplit(u).hostname or "")}))


def outside_url(url: str, kind: str) -> str:
    """``url`` ready for a command behind a ``kind`` link, decided outside it, where the name
    service is: a server on this machine becomes 127.0.0.1 (which ``via_link_url`` re-points
    inside), another host its address (a compose service, another node), reached through
    Mahimahi's NAT. The netns and proxy links reach this machine only: another host is refused.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if _is_this_machine(host):
        address = "127.0.0.1"
    else:
        if kind != "mahimahi":
            raise ConfigError(
                f"{url}: {host} is another machine, and the {kind} link reaches only this one "
                "(use --link mahimahi, whose NAT routes out, or serve it here)"
            )
        address = _resolve(host, url)
    netloc = f"{address}:{parts.port}" if parts.port else address
    return urlunsplit(parts._replace(netloc=netloc))


def via_link_url(url: str, env: Mapping[str, str] | None = None) -> str:
    """``url`` as a command behind a link reaches it: a server on this machine (127.0.0.1,
    after ``outside_url``) at the host's address and mapped port; any other host unchanged."""
    parts = urlsplit(url)
    if not is_loopback(parts.hostname or ""):
        return url
    host, mapped = address_of(_port(url), env)
    return urlunsplit(parts._replace(netloc=f"{host}:{mapped}"))


def _port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def _resolve(host: str, url: str) -> str:
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"{url}: cannot resolve {host!r}: {exc}") from None
    return str(infos[0][4][0])


def _is_this_machine(host: str) -> bool:
    """Loopback, or an address of this machine's (a socket binds to it)."""
    if is_loopback(host):
        return True
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False  # unresolvable here: _resolve names it
    for *_, sockaddr in infos:
        address = str(sockaddr[0])
        if is_loopback(address):
            return True
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((address, 0))
            except OSError:
                continue
            return True
    return False


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _check_command(argv: Sequence[str], env: Mapping[str, str]) -> None:
    if not argv:
        raise ConfigError("no command to run behind the link")
    if shutil.which(argv[0], path=env.get("PATH", os.defpath)) is None:
        raise ConfigError(f"command not found: {argv[0]!r}")


# ---------------------------------------------------------------------------------------------
# Running


class LinkedProcess:
    """A command running behind a link. Close it (or use ``with``) to tear the link down.

    Attributes: ``kind``, ``host`` (``$STREAMBED_HOST``), ``env`` (the command's environment),
    ``epoch`` (monotonic time of trace time 0; None for mahimahi), ``process`` (the Popen of
    the command, wrapped by ``ip netns exec`` or mm-delay), and ``stats`` after ``close()``.
    netns and proxy: trace time 0 is the command's first packet or connection
    (``LinkSpec.trace_start``), or when the helper starts forwarding, just before the command
    starts (as mm-link's, whose trace starts before it forks the command). mahimahi as root: the mm
    shells and the command run as ``$STREAMBED_MAHIMAHI_USER`` (``streambed.emulation.mahimahi``);
    the exit status is the command's, read from the wrapper's status file.
    """

    def __init__(
        self,
        spec: LinkSpec,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        cwd: str | Path | None = None,
        stdin: int | IO[Any] | None = None,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        writable: Sequence[Path] = (),
    ) -> None:
        self.spec = spec
        self.kind = resolve_kind(spec.kind)
        self.stats: LinkStats | None = None
        self.epoch: float | None = None
        self.host = "127.0.0.1"
        self._closed = False
        self._helper: subprocess.Popen[bytes] | None = None
        self.epoch_file = Path()
        self._control_w = -1
        self._status_path: Path | None = None
        self._stack = contextlib.ExitStack()
        base_env = dict(os.environ if env is None else env)
        _check_command(argv, base_env)
        if self.kind == "proxy" and not spec.ports:
            raise ConfigError(
                "the proxy link relays only the host ports it is given: set LinkSpec.ports "
                "(--port P)"
            )
        if self.kind == "proxy" and (spec.queue_packets or spec.queue_bytes):
            raise ConfigError(
                "the proxy link paces byte streams and has no packet queue: drop the queue "
                "limit, or use --kind netns or mahimahi"
            )
        try:
            self._tmp = Path(tempfile.mkdtemp(prefix="streambed-link-"))
            self._stack.callback(shutil.rmtree, self._tmp, True)
            down = mahimahi_trace_file(spec.downlink, self._tmp)
            up = down if spec.uplink is None else mahimahi_trace_file(spec.uplink, self._tmp)
            ports = {p: p for p in spec.ports}
            if self.kind == "mahimahi":
                exec_argv = self._mahimahi_argv(argv, down, up, base_env, writable)
            elif self.kind == "netns":
                plumbing = netns.create_plumbing()
                self._stack.callback(plumbing.close)
                self.host = plumbing.host_addr
                self._start_helper(
                    "streambed.emulation.shaper",
                    [
                        f"--host-fd={plumbing.host_fd}",
                        f"--ns-fd={plumbing.ns_fd}",
                        f"--host-addr={plumbing.host_addr}",
                        f"--host-dev={plumbing.host_dev}",
                        *self._queue_args(),
                        *(
                            [f"--downlink-log={spec.downlink_log}"]
                            if spec.downlink_log is not None
                            else []
                        ),
                    ],
                    down,
                    up,
                    pass_fds=(plumbing.host_fd, plumbing.ns_fd),
                    fixed_epoch=False,
                )
                plumbing.close_fds()  # the shaper holds the devices from now on
                # Trace time 0 is the command's first packet, or when the shaper starts
                # forwarding (the command starts right after), never when its interpreter was
                # launched a few hundred ms earlier.
                epoch = self._read_helper_line()["epoch"]
                self.epoch = None if epoch is None else float(epoch)
                exec_argv = plumbing.exec_argv(argv)
            else:
                self._start_helper(
                    "streambed.emulation.proxy", [f"--port={p}" for p in spec.ports], down, up
                )
                if self.spec.trace_start == FIRST_PACKET:
                    self.epoch = None
                mapping = self._read_helper_line()["ports"]
                ports = {int(k): int(v) for k, v in mapping.items()}
                exec_argv = list(argv)
            self.env = self._command_env(base_env, ports)
            self.process = subprocess.Popen(
                exec_argv, env=self.env, cwd=cwd, stdin=stdin, stdout=stdout, stderr=stderr
            )
            self._stack.callback(self._stop_command)
        except BaseException:
            self._stack.close()
            raise

    def _mahimahi_argv(
        self,
        argv: Sequence[str],
        down: Path,
        up: Path,
        env: dict[str, str],
        writable: Sequence[Path],
    ) -> list[str]:
        self._status_path = self._tmp / "status"
        # mm-link writes its log where its (maybe unprivileged) user may; copied out on close.
        self._mm_log = self._tmp / "downlink.log"
        if self.spec.downlink_log is not None:
            self._stack.callback(self._copy_mm_log)
        prefix: list[str] = []
        if mahimahi.run_as_root():
            # Mahimahi refuses root: its user gets the work directory (traces, status file,
            # a HOME for the command) and runs the shells.
            user = mahimahi.run_user()
            mahimahi.check_command(argv[0])
            if down.parent != self._tmp:  # a Mahimahi trace used in place: copy it in
                down = Path(shutil.copyfile(down, self._tmp / f"down-{down.name}"))
            if up.parent != self._tmp:
                up = Path(shutil.copyfile(up, self._tmp / f"up-{up.name}"))
            for path in (self._tmp, *self._tmp.iterdir()):
                os.chown(path, user.pw_uid, user.pw_gid)
            for path in writable:  # directories the command writes into (created if missing)
                Path(path).mkdir(parents=True, exist_ok=True)
                os.chown(path, user.pw_uid, user.pw_gid)
            env["HOME"] = str(self._tmp)
            prefix = mahimahi.user_argv(user)
        return prefix + mahimahi.mahimahi_argv(
            argv,
            str(down),
            str(up),
            self.spec.delay_ms,
            self.spec.queue_packets,
            self.spec.queue_bytes,
            status_file=str(self._status_path),
            downlink_log=None if self.spec.downlink_log is None else str(self._mm_log),
        )

    def _copy_mm_log(self) -> None:
        assert self.spec.downlink_log is not None
        with contextlib.suppress(OSError):
            shutil.copyfile(self._mm_log, self.spec.downlink_log)

    def trace_epoch(self) -> float | None:
        """``time.monotonic()`` of trace time 0 once it is known (None before the first packet
        of a first-packet link, and for mahimahi)."""
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            return float(json.loads(self.epoch_file.read_text())["epoch"])
        return self.epoch

    def _status(self, returncode: int) -> int:
        """The command's exit status (mahimahi: from the wrapper's file; mm-link says 1)."""
        if self._status_path is not None:
            with contextlib.suppress(OSError, ValueError):
                return int(self._status_path.read_text().strip())
        return _exit_status(returncode)

    def _queue_args(self) -> list[str]:
        args = []
        if self.spec.queue_packets is not None:
            args.append(f"--queue-packets={self.spec.queue_packets}")
        if self.spec.queue_bytes is not None:
            args.append(f"--queue-bytes={self.spec.queue_bytes}")
        return args

    def _command_env(self, base: dict[str, str], ports: Mapping[int, int]) -> dict[str, str]:
        env = dict(base)
        env["STREAMBED_HOST"] = self.host
        env["STREAMBED_LINK_KIND"] = self.kind
        if self.epoch is not None:
            env["STREAMBED_LINK_EPOCH"] = repr(self.epoch)
        else:
            env.pop("STREAMBED_LINK_EPOCH", None)
        if self._helper is not None:
            env["STREAMBED_LINK_EPOCH_FILE"] = str(self.epoch_file)
        else:
            env.pop("STREAMBED_LINK_EPOCH_FILE", None)
        for port, mapped in ports.items():
            env[f"STREAMBED_PORT_{port}"] = str(mapped)
        return env

    def _start_helper(
        self,
        module: str,
        extra: list[str],
        down: Path,
        up: Path,
        pass_fds: tuple[int, ...] = (),
        fixed_epoch: bool = True,
    ) -> None:
        """Start the helper; ``fixed_epoch=False`` lets it choose trace time 0 (it reports it)."""
        control_r, self._control_w = os.pipe()
        os.set_inheritable(self._control_w, False)
        self._stack.callback(self._stop_helper)
        self.epoch = time.monotonic()
        env = dict(os.environ)
        self._stats_path = self._tmp / "stats.json"
        self.epoch_file = self._tmp / "epoch.json"
        self._helper_err = (self._tmp / "helper.err").open("wb")
        self._stack.callback(self._helper_err.close)
        cmd = [
            sys.executable,
            "-m",
            module,
            f"--control-fd={control_r}",
            f"--down={down}",
            f"--up={up}",
            f"--delay-ms={self.spec.delay_ms}",
            *([f"--epoch={self.epoch!r}"] if fixed_epoch else []),
            f"--trace-start={self.spec.trace_start}",
            f"--epoch-file={self.epoch_file}",
            f"--stats={self._stats_path}",
            *extra,
        ]
        try:
            self._helper = subprocess.Popen(
                cmd,
                env=env,
                pass_fds=(control_r, *pass_fds),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._helper_err,
                start_new_session=True,  # a Ctrl-C at the terminal must not cut the link
            )
        finally:
            os.close(control_r)

    def _read_helper_line(self) -> dict[str, Any]:
        """The JSON line a helper prints once it is serving (the proxy's includes its ports)."""
        helper = self._helper
        assert helper is not None and helper.stdout is not None
        line = b""
        with selectors.DefaultSelector() as sel:
            sel.register(helper.stdout, selectors.EVENT_READ)
            if sel.select(_HELPER_START_S):
                line = helper.stdout.readline()
        if not line:
            raise LinkError(f"the {self.kind} link's helper did not start: {self._helper_error()}")
        data: dict[str, Any] = json.loads(line)
        return data

    def _helper_error(self) -> str:
        try:
            text = (self._tmp / "helper.err").read_text(errors="replace").strip()
        except OSError:
            text = ""
        return text.splitlines()[-1] if text else "no error output"

    def _stop_command(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _stop_helper(self) -> None:
        if self._control_w >= 0:
            os.close(self._control_w)  # end-of-file tells the helper to write stats and exit
            self._control_w = -1
        helper = self._helper
        if helper is None:
            return
        try:
            helper.wait(_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            helper.kill()
            helper.wait()
        if helper.stdout is not None:
            helper.stdout.close()
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self._stats_path.read_text())
            self.stats = LinkStats.from_json(self.kind, data)
        if helper.returncode not in (0, -signal.SIGTERM):
            raise LinkError(
                f"the {self.kind} link's helper failed (status {helper.returncode}): "
                f"{self._helper_error()}"
            )

    # -- the Popen-like surface ---------------------------------------------------------------

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        """The exit status if the command has ended, else None."""
        rc = self.process.poll()
        return None if rc is None else self._status(rc)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the command; its exit status. Raises ``subprocess.TimeoutExpired``."""
        return self._status(self.process.wait(timeout))

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()

    def close(self) -> LinkStats | None:
        """Stop the command if it still runs and tear the link down; the helper's stats."""
        if not self._closed:
            self._closed = True
            self._stack.close()
        return self.stats

    def __enter__(self) -> LinkedProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_behind_link(
    spec: LinkSpec,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    **popen: Any,
) -> LinkedProcess:
    """Start ``argv`` behind the link; ``popen`` may hold cwd, stdin, stdout, stderr, and
    ``writable``: directories the command writes into (created; as root, the mahimahi kind
    hands them to the unprivileged user it runs the command as).

    ``env`` replaces the inherited environment (the link's variables are added to it).
    """
    return LinkedProcess(spec, argv, env, **popen)


def run_behind_link(
    spec: LinkSpec,
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    *,
    timeout_s: float | None = None,
    **popen: Any,
) -> int:
    """Run ``argv`` behind the link until it exits; its exit status.

    With ``timeout_s``, a command still running then is stopped and ``LinkError`` raised.
    """
    with start_behind_link(spec, argv, env, **popen) as linked:
        try:
            return linked.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise LinkError(
                f"command {argv[0]!r} still running after {timeout_s} s behind the link"
            ) from None
