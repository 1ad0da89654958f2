"""The netns link's plumbing: a network namespace whose only route is a shaped TUN pair.

Layout of one link (index ``k`` picks a free /30 from the pool, 10.213.0.0/16 by default or
``$STREAMBED_NETNS_POOL``)::

    host stack  <->  TUN sbh<k> (host addr .1, peer .2)  <->  shaper  <->
    TUN sbn<k> (moved into netns streambed-<pid>-<k>, addr .2, peer .1, default route)  <->  command

The shaper (``streambed.emulation.shaper``) holds both TUN fds. Packets the namespace sends to the host
address arrive on ``sbh<k>`` and are delivered locally, so any server bound on 0.0.0.0 answers
at the host address; replies route back through ``sbh<k>``. No forwarding, NAT or firewall rule
is touched, and the shaper forwards uplink packets only to the host address. TUN devices
without ``IFF_VNET_HDR`` get no GSO/TSO packets (the kernel segments before the device), so
every packet is at most the 1500-byte MTU, as on Mahimahi's TUN devices.

The TUN devices disappear when the shaper closes its fds (also when it is killed); the namespace
is deleted on close, and a namespace left by a process that died without closing is removed by
the next link set up on the machine (``remove_stale_namespaces``).

Needs root, or CAP_NET_ADMIN (TUN devices, links, addresses) and CAP_SYS_ADMIN (``ip netns``
mounts the namespace), ``/dev/net/tun`` and iproute2's ``ip``.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from streambed.core.errors import ConfigError, LinkError

log = logging.getLogger(__name__)

TUN_DEVICE = "/dev/net/tun"
DEFAULT_POOL = "10.213.0.0/16"
NETNS_PREFIX = "streambed-"

_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_CAPS = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21}
_MTU = 1500


def effective_capabilities() -> int:
    """The CapEff bit mask of this process (0 when it cannot be read)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def missing_privileges(
    cap_eff: int | None = None,
    tun_path: str = TUN_DEVICE,
    ip_path: str | None = None,
) -> list[str]:
    """What this process lacks to set up a netns link (empty when it can).

    ``cap_eff`` overrides the capability mask read from /proc (for tests); ``ip_path`` overrides
    the lookup of ``ip`` on PATH.
    """
    missing = []
    caps = effective_capabilities() if cap_eff is None else cap_eff
    for name, bit in _CAPS.items():
        if not caps >> bit & 1:
            missing.append(name)
    if not os.path.exists(tun_path):
        missing.append(f"{tun_path} (load the tun module)")
    elif not missing and not os.access(tun_path, os.R_OK | os.W_OK):
        missing.append(f"read-write access to {tun_path}")
    if (ip_path or shutil.which("ip")) is None:
        missing.append("iproute2's `ip` on PATH")
    return missing


def require_privileges(cap_eff: int | None = None, tun_path: str = TUN_DEVICE) -> None:
    """Raise ``ConfigError`` naming what is missing for a netns link."""
    missing = missing_privileges(cap_eff, tun_path)
    if missing:
        raise ConfigError(
            "the netns link needs root, or CAP_NET_ADMIN and CAP_SYS_ADMIN, plus /dev/net/tun "
            f"and iproute2; missing: {', '.join(missing)}. Run as root (sudo), or use "
            "--kind proxy (no privileges) or --kind mahimahi (mm-link installed)"
        )


def _ip(*args: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        ["ip", *args], input=stdin, capture_output=True, text=True, timeout=30, check=False
    )
    if check and result.returncode != 0:
        what = " ".join(args) if stdin is None else f"{' '.join(args)} <<< {stdin.strip()!r}"
        raise LinkError(f"`ip {what}` failed: {result.stderr.strip() or result.returncode}")
    return result.stdout


def _open_tun(name: str) -> int:
    fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI))
    except OSError as exc:
        os.close(fd)
        raise LinkError(f"cannot create TUN device {name}: {exc.strerror or exc}") from None
    return fd


def _pool() -> ipaddress.IPv4Network:
    text = os.environ.get("STREAMBED_NETNS_POOL", DEFAULT_POOL)
    try:
        net = ipaddress.IPv4Network(text)
    except ValueError as exc:
        raise ConfigError(f"STREAMBED_NETNS_POOL={text!r}: not an IPv4 network ({exc})") from None
    if net.prefixlen > 29:
        raise ConfigError(f"STREAMBED_NETNS_POOL={text!r}: needs at least two /30 subnets")
    return net


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Addresses and (non-default) routes of the host, to keep our subnets clear of them."""
    used = []
    for line in _ip("-4", "-o", "addr", "show").splitlines():
        for m in re.finditer(r"\b(?:inet|peer) (\d+\.\d+\.\d+\.\d+(?:/\d+)?)", line):
            used.append(ipaddress.IPv4Network(m.group(1), strict=False))
    for line in _ip("-4", "route", "show", "table", "all").splitlines():
        first = line.split()[0] if line.split() else ""
        if first in ("default", "broadcast", "local", "unreachable", "multicast"):
            continue
        with contextlib.suppress(ValueError):
            net = ipaddress.IPv4Network(first, strict=False)
            if net.prefixlen >= 16:  # broader routes (a cluster's 10/8) do not collide locally
                used.append(net)
    return used


@contextlib.contextmanager
def _allocation_lock() -> Iterator[None]:
    lock_dir = "/run/lock" if os.path.isdir("/run/lock") else tempfile.gettempdir()
    fd = os.open(os.path.join(lock_dir, "streambed-netns.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def list_namespaces() -> list[str]:
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.split()]


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def remove_stale_namespaces() -> list[str]:
    """Delete ``streambed-PID-K`` namespaces whose creating process no longer exists."""
    removed = []
    for name in list_namespaces():
        m = re.fullmatch(rf"{NETNS_PREFIX}(\d+)-(\d+)", name)
        if m and not _pid_alive(int(m.group(1))):
            kill_namespace_processes(name)
            _ip("netns", "del", name, check=False)
            removed.append(name)
    if removed:
        log.info("removed stale link namespaces: %s", ", ".join(removed))
    return removed


def kill_namespace_processes(name: str, grace_s: float = 2.0) -> None:
    """SIGTERM, then SIGKILL, whatever still runs in namespace ``name`` (the command's leftovers)."""
    pids = [int(p) for p in _ip("netns", "pids", name, check=False).split() if p.isdigit()]
    if not pids:
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_pid_alive(p) for p in pids):
        time.sleep(0.02)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class NetnsPlumbing:
    """One link's namespace and TUN pair. ``close()`` is idempotent."""

    index: int
    netns: str
    host_dev: str
    ns_dev: str
    host_addr: str
    ns_addr: str
    host_fd: int = -1
    ns_fd: int = -1
    closed: bool = False

    def close_fds(self) -> None:
        """Close this process's TUN fds (the shaper keeps its own copies)."""
        for attr in ("host_fd", "ns_fd"):
            fd = getattr(self, attr)
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
                setattr(self, attr, -1)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_fds()
        try:
            kill_namespace_processes(self.netns)
        finally:
            _ip("netns", "del", self.netns, check=False)

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """Command line that runs ``argv`` inside the namespace."""
        # Absolute: the command's own PATH may lack the sbin directories.
        return [shutil.which("ip") or "ip", "netns", "exec", self.netns, *argv]


def create_plumbing() -> NetnsPlumbing:
    """Allocate a subnet and build the namespace and TUN pair (privileges checked first)."""
    require_privileges()
    remove_stale_namespaces()
    pool = _pool()
    pid = os.getpid()
    with _allocation_lock():
        used = _used_networks()
        existing = set(_ip("-o", "link", "show").split())
        # A link being torn down loses its devices before its namespace: its k is not free yet.
        closing = {name.rpartition("-")[2] for name in list_namespaces()}
        subnets = list(pool.subnets(new_prefix=30))
        start = (pid * 7919) % len(subnets)
        for step in range(len(subnets)):
            k = (start + step) % len(subnets)
            net = subnets[k]
            if any(net.overlaps(u) for u in used):
                continue
            if f"sbh{k}:" in existing or f"sbn{k}:" in existing or str(k) in closing:
                continue
            break
        else:
            raise LinkError(f"no free /30 subnet left in {pool} for another link")
        hosts = list(net.hosts())
        plumbing = NetnsPlumbing(
            index=k,
            netns=f"{NETNS_PREFIX}{pid}-{k}",
            host_dev=f"sbh{k}",
            ns_dev=f"sbn{k}",
            host_addr=str(hosts[0]),
            ns_addr=str(hosts[1]),
        )
        try:
            _build(plumbing)
        except BaseException:
            plumbing.close()
            raise
    return plumbing


def _build(p: NetnsPlumbing) -> None:
    p.host_fd = _open_tun(p.host_dev)
    p.ns_fd = _open_tun(p.ns_dev)
    _ip("netns", "add", p.netns)
    # IPv6 stays off the devices (no link-local address, no router solicitations to shape).
    _ip(
        "-batch",
        "-",
        stdin=(
            f"link set dev {p.ns_dev} netns {p.netns}\n"
            f"link set dev {p.host_dev} mtu {_MTU} addrgenmode none\n"
            f"addr add {p.host_addr} peer {p.ns_addr} dev {p.host_dev}\n"
            f"link set dev {p.host_dev} up\n"
        ),
    )
    _ip(
        "-n",
        p.netns,
        "-batch",
        "-",
        stdin=(
            "link set dev lo up\n"
            f"link set dev {p.ns_dev} mtu {_MTU} addrgenmode none\n"
            f"addr add {p.ns_addr} peer {p.host_addr} dev {p.ns_dev}\n"
            f"link set dev {p.ns_dev} up\n"
            f"route add default via {p.host_addr} dev {p.ns_dev}\n"
        ),
    )
