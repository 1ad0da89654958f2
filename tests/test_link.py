"""Emulated links: Mahimahi's semantics in unit tests, then real transfers through real links.

The netns tests need root (CI runs as root); they are not skipped without it, they fail. Every
link is torn down by the code under test, and ``leftovers`` checks that no namespace or TUN
device is left behind, also when a test fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from streambed.cli import main as cli_main
from streambed.core.errors import ConfigError
from streambed.emulation import analytic, mahimahi, netns
from streambed.emulation.link import (
    LinkSpec,
    address_of,
    available_kinds,
    resolve_kind,
    run_behind_link,
    start_behind_link,
)
from streambed.emulation.mahimahi import mahimahi_argv
from streambed.emulation.schedule import OPPORTUNITY_BYTES, ByteLink, PacketLink, Schedule
from streambed.emulation.shaper import Shaper
from streambed.traces.formats import load_mahimahi, save_mahimahi

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = bytes(8 << 20)

# ---------------------------------------------------------------------------------------------
# Unit: the schedule and queues


def departures(link: PacketLink, until_ms: float) -> list[tuple[float, int]]:
    out: list[tuple[float, bytes]] = []
    link.advance(until_ms, out)
    return [(t, len(p)) for t, p in out]


def test_schedule_repeats_shifted_by_last_timestamp() -> None:
    s = Schedule([0, 5, 10])
    times = []
    for _ in range(7):
        times.append(s.next_ms)
        s.advance()
    assert times == [0, 5, 10, 10, 15, 20, 20]
    s = Schedule([3, 3, 8], start_ms=100)
    s.skip_past(120)  # 103,103,108 | 111,111,116 | 119,119,124
    assert s.next_ms == 124
    s.skip_past(10_000.5)  # far ahead: whole periods skipped at once
    assert s.next_ms > 10_000.5 and (s.next_ms - 100) % 8 in (3, 0)


def test_full_packets_use_the_four_spare_bytes() -> None:
    # 1504-byte opportunities: 376 packets of 1500 bytes fit exactly in 375 opportunities.
    link = PacketLink(Schedule(list(range(1, 1001))))
    for _ in range(376):
        link.enqueue(bytes(1500), 0.5)
    out = departures(link, 1000)
    assert len(out) == 376
    assert out[-1][0] == 375
    assert out[0][0] == 1 and out[1][0] == 2


def test_small_packets_share_and_large_packets_span_opportunities() -> None:
    link = PacketLink(Schedule([10, 20, 30, 40]))
    for _ in range(10):
        link.enqueue(bytes(100), 0)
    link.enqueue(bytes(3000), 0)  # 504 bytes left at 10, 1504 at 20, the rest at 30
    out = departures(link, 40)
    assert [t for t, _ in out[:10]] == [10] * 10
    assert out[10] == (30, 3000)  # 504 + 1504 + 1504 >= 3000 first at 30


def test_credit_is_lost_while_the_queue_is_empty_and_arrival_must_precede() -> None:
    link = PacketLink(Schedule(list(range(1, 101))))
    assert link.next_event_ms() is None
    link.enqueue(bytes(1500), 50.0)  # exactly at an opportunity: that one is already gone
    link.enqueue(bytes(1500), 50.0)
    assert departures(link, 100) == [(51, 1500), (52, 1500)]


def test_drop_tail_limits_waiting_packets() -> None:
    link = PacketLink(Schedule([1, 2, 3, 4]), limit_packets=2)
    assert [link.enqueue(bytes(1000), 0.1) for _ in range(3)] == [True, True, False]
    departures(link, 1)  # the first leaves at 1; the second is in transit, not waiting
    assert [link.enqueue(bytes(1000), 1.5) for _ in range(3)] == [True, True, False]
    assert link.counters.dropped_packets == 2 and link.counters.dropped_bytes == 2000
    bytes_limited = PacketLink(Schedule([1]), limit_bytes=2500)
    assert [bytes_limited.enqueue(bytes(1000), 0) for _ in range(3)] == [True, True, False]


def test_byte_link_paces_streams_in_order_with_end_markers() -> None:
    link = ByteLink(Schedule([2, 4]))
    link.push("a", bytes(2000), 0.5)
    link.push("b", bytes(100), 0.5)
    link.push("a", None, 0.5)
    out: list[tuple[Any, bytes | None]] = []
    link.advance(2, out)
    assert [(k, None if d is None else len(d)) for k, d in out] == [("a", 1504)]
    out.clear()
    link.advance(4, out)
    assert [(k, None if d is None else len(d)) for k, d in out] == [
        ("a", 496),
        ("b", 100),
        ("a", None),
    ]
    assert link.bytes_out == 2100 and link.queued == {}
    link.push("c", bytes(10), 100)
    link.discard("c")
    assert link.next_event_ms() is None


def test_first_after_peeks_without_consuming() -> None:
    s = Schedule([0, 5, 10], start_ms=100)  # 100, 105, 110, 110, 115, 120, 120, ...
    assert [s.first_after(t) for t in (50, 100, 104.5, 110, 119.9, 120)] == [
        100,
        105,
        105,
        115,
        120,
        125,
    ]
    assert s.next_ms == 100


def test_proxy_window_slow_starts_and_restarts_after_idle() -> None:
    from streambed.emulation.proxy import Conn, Relay

    loop = asyncio.new_event_loop()
    try:
        relay = Relay(loop, [1], [1], 40.0, 0.0, "127.0.0.1")
        conn = Conn(relay)
        flow = conn.flows["down"]
        iw = analytic.INITIAL_WINDOW_BYTES
        flow.backlog.append(bytes(10 * iw))
        flow.backlog_bytes = 10 * iw
        relay._send("down", conn, flow, 0.0)
        assert flow.inflight == iw == relay.down.queued[conn]
        relay._acked("down", conn, iw, 90.0)  # one round trip: the window doubles
        assert flow.cwnd == 2 * iw and flow.inflight == 2 * iw
        relay._acked("down", conn, 2 * iw, 180.0)
        assert flow.cwnd == 4 * iw and flow.inflight == 4 * iw
        relay._acked("down", conn, 4 * iw, 270.0)
        assert flow.cwnd == 8 * iw and flow.backlog_bytes == 0
        relay._acked("down", conn, 3 * iw, 360.0)  # not cwnd-limited: no growth past 2 x peak
        assert flow.cwnd == 8 * iw and flow.inflight == 0
        # Idle for just over two RTOs (80 + 1 + 200 ms each): halved twice.
        flow.backlog.append(bytes(100 * iw))
        flow.backlog_bytes = 100 * iw
        relay._send("down", conn, flow, 270.0 + 2 * relay.rto_ms + 1)
        assert flow.cwnd == 2 * iw == flow.inflight and relay.restarts == 1
    finally:
        loop.close()


def test_shaper_forwards_ipv4_to_the_host_only() -> None:
    host = socket.inet_aton("10.213.0.1")
    shaper = Shaper([1], [1], 0.0, 0.0, host)

    def ipv4(dst: bytes) -> bytes:
        return bytes([0x45]) + bytes(15) + dst + bytes(20)

    shaper.from_namespace(ipv4(host), 0.1)
    shaper.from_namespace(ipv4(socket.inet_aton("192.0.2.1")), 0.1)
    shaper.from_namespace(bytes([0x60]) + bytes(59), 0.1)  # IPv6
    shaper.from_host(bytes([0x60]) + bytes(59), 0.1)
    to_host: list[bytes] = []
    to_ns: list[bytes] = []
    shaper.step(5, to_host, to_ns)
    assert to_host == [ipv4(host)] and to_ns == [] and shaper.filtered == 3


def test_first_packet_starts_the_shapers_trace_clock() -> None:
    """With no start given, trace time 0 is the first packet forwarded: a trace with its only
    opportunity at 100 ms delivers a packet sent at 5000 ms at 5100 ms, not at 5000 ms (the
    opportunity of the period running since 0 ms would be at 5100 too, so use 300 ms)."""
    host = socket.inet_aton("10.213.0.1")
    started: list[float] = []
    shaper = Shaper([100, 1000], [100, 1000], 0.0, None, host)
    shaper.on_start = started.append
    assert not shaper.started
    packet = bytes([0x45]) + bytes(15) + host + bytes(20)
    shaper.from_namespace(packet, 5300.0)
    assert shaper.started and started == [5300.0] and shaper.start_ms == 5300.0
    to_host: list[bytes] = []
    shaper.step(5399.0, to_host, [])
    assert to_host == []  # the period running since 0 ms would have delivered it at 6000
    shaper.step(5400.0, to_host, [])
    assert to_host == [packet]
    shaper.from_namespace(packet, 5500.0)  # only the first packet moves the clock
    assert started == [5300.0]


def test_drain_walks_repeating_traces() -> None:
    ms = [1, 2, 10]  # period 10
    assert analytic.drain_s(ms, 0, 3 * OPPORTUNITY_BYTES) == pytest.approx(0.010)
    assert analytic.drain_s(ms, 0, 4 * OPPORTUNITY_BYTES) == pytest.approx(0.011)
    assert analytic.drain_s(ms, 5, 301 * OPPORTUNITY_BYTES) == pytest.approx(1.005)


def test_mahimahi_command_line() -> None:
    argv = mahimahi_argv(["python", "player.py"], "down.mm", "up.mm", 40)
    assert argv[:6] == ["mm-delay", "40", "mm-link", "up.mm", "down.mm", "--"]
    assert argv[-2:] == ["python", "player.py"]
    assert argv[6:8] == ["sh", "-c"] and "MAHIMAHI_BASE" in argv[8]
    assert argv[9:11] == ["streambed-link", "/dev/null"]  # the status file (none given)
    queued = mahimahi_argv(["true"], "d", "u", 0, queue_packets=50)
    assert queued[:9] == [
        "mm-delay",
        "0",
        "mm-link",
        "u",
        "d",
        "--uplink-queue=droptail",
        "--uplink-queue-args=packets=50",
        "--downlink-queue=droptail",
        "--downlink-queue-args=packets=50",
    ]
    with pytest.raises(ConfigError, match="whole milliseconds"):
        mahimahi_argv(["true"], "d", "u", 2.5)


def test_spec_validation_names_the_field() -> None:
    with pytest.raises(ConfigError, match="delay_ms=-1"):
        LinkSpec(Path("t"), delay_ms=-1)
    with pytest.raises(ConfigError, match="queue_packets=0"):
        LinkSpec(Path("t"), queue_packets=0)
    with pytest.raises(ConfigError, match="'tc'"):
        LinkSpec(Path("t"), kind="tc")
    with pytest.raises(ConfigError, match="port 70000"):
        LinkSpec(Path("t"), ports=(70000,))


def test_address_of_reads_the_link_environment() -> None:
    env = {"STREAMBED_HOST": "10.213.0.1", "STREAMBED_PORT_8000": "41000"}
    assert address_of(8000, env) == ("10.213.0.1", 41000)
    assert address_of(9000, env) == ("10.213.0.1", 9000)
    assert address_of(9000, {}) == ("127.0.0.1", 9000)


# ---------------------------------------------------------------------------------------------
# Privileges and Mahimahi detection


def test_missing_privileges_are_named() -> None:
    assert netns.missing_privileges(cap_eff=0) == ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"]
    assert netns.missing_privileges(cap_eff=1 << 12, tun_path="/nonexistent/tun") == [
        "CAP_SYS_ADMIN",
        "/nonexistent/tun (load the tun module)",
    ]
    with pytest.raises(ConfigError, match="CAP_NET_ADMIN.*--kind proxy"):
        netns.require_privileges(cap_eff=0)


def test_without_capabilities_netns_is_refused_clearly(tmp_path: Path) -> None:
    trace = constant_trace(tmp_path, 1)
    # Root with an empty bounding set: every capability is gone after exec.
    result = subprocess.run(
        [
            "setpriv",
            "--bounding-set=-all",
            "--inh-caps=-all",
            sys.executable,
            "-m",
            "streambed",
            "link",
            "--kind",
            "netns",
            str(trace),
            "--",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "CAP_NET_ADMIN" in result.stderr and "CAP_SYS_ADMIN" in result.stderr
    code = "from streambed.emulation.link import resolve_kind; print(resolve_kind('auto'))"
    env = {**os.environ, "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
    auto = subprocess.run(
        ["setpriv", "--bounding-set=-all", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert auto.stdout.strip() == "proxy", auto.stderr


def fake_mahimahi(bindir: Path, log: Path) -> None:
    """mm-delay and mm-link stand-ins that log their arguments and run the command."""
    bindir.mkdir()
    (bindir / "mm-delay").write_text(f'#!/bin/sh\necho "mm-delay $*" >> {log}\nshift\nexec "$@"\n')
    (bindir / "mm-link").write_text(
        f'#!/bin/sh\necho "mm-link $*" >> {log}\n'
        'while [ "$1" != "--" ]; do shift; done\nshift\n'
        'MAHIMAHI_BASE=100.64.0.1 exec "$@"\n'
    )
    for tool in ("mm-delay", "mm-link"):
        (bindir / tool).chmod(stat.S_IRWXU)


def test_mahimahi_kind_runs_the_mm_shells(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("PATH", f"{tmp_path / 'nomm'}:/usr/bin:/bin:/usr/sbin:/sbin")
    with pytest.raises(ConfigError, match="mm-delay and mm-link on PATH"):
        resolve_kind("mahimahi")
    assert "mahimahi" not in available_kinds()
    log = tmp_path / "mm.log"
    fake_mahimahi(tmp_path / "bin", log)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin:/usr/sbin:/sbin")
    forward = tmp_path / "ip_forward"
    forward.write_text("0\n")
    monkeypatch.setattr("streambed.emulation.mahimahi.IP_FORWARD", forward)
    with pytest.raises(ConfigError, match="net.ipv4.ip_forward=1"):
        resolve_kind("mahimahi")
    forward.write_text("1\n")
    if os.getuid() == 0:
        # As root, auto passes Mahimahi over (netns runs here); tests/test_mahimahi.py runs
        # the real one as an unprivileged user.
        with pytest.raises(ConfigError, match="not chosen automatically as root"):
            mahimahi.require_mahimahi(allow_root=False)
        assert resolve_kind("auto") == "netns"
        monkeypatch.setattr("streambed.emulation.mahimahi.run_as_root", lambda: False)
    assert resolve_kind("auto") == "mahimahi"
    pensieve = tmp_path / "trace.txt"
    pensieve.write_text("0 6\n1 6\n2 6\n")
    out = tmp_path / "out"
    spec = LinkSpec(pensieve, delay_ms=40, kind="mahimahi", ports=(8000,))
    status = run_behind_link(
        spec, ["sh", "-c", f'echo "$STREAMBED_HOST $STREAMBED_PORT_8000" > {out}; exit 9']
    )
    assert status == 9
    assert out.read_text().split() == ["100.64.0.1", "8000"]
    delay_line, link_line = log.read_text().splitlines()
    assert delay_line.startswith("mm-delay 40 mm-link ")
    up, down = link_line.split()[1:3]
    assert up == down and up.endswith(".mm") and link_line.split()[3] == "--"


# ---------------------------------------------------------------------------------------------
# Real links: a host HTTP server on 0.0.0.0 and clients behind the link


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    peers: list[str] = []

    def do_GET(self) -> None:
        Handler.peers.append(self.client_address[0])
        if self.path == "/hello":
            body = b"hello"
        else:
            body = memoryview(PAYLOAD)[: int(self.path.rsplit("/", 1)[1])]  # type: ignore[assignment]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        left = int(self.headers["Content-Length"])
        while left:
            left -= len(self.rfile.read(min(left, 1 << 16)))
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    server = analytic.ModelSenderServer(("0.0.0.0", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def link_names() -> tuple[set[str], set[str]]:
    namespaces = set(netns.list_namespaces())
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    devices = {line.split(": ")[1].split("@")[0] for line in links.splitlines()}
    return namespaces, {d for d in devices if d.startswith(("sbh", "sbn"))}


@pytest.fixture
def leftovers() -> Iterator[None]:
    """Fail the test if it leaves a namespace or TUN device of this process behind."""
    before_ns, before_dev = link_names()
    yield
    after_ns, after_dev = link_names()
    mine = {n for n in after_ns - before_ns if n.startswith(f"streambed-{os.getpid()}-")}
    assert not mine, f"namespaces left behind: {mine}"
    assert not (after_dev - before_dev), f"devices left behind: {after_dev - before_dev}"


# Downloads or uploads, waiting first until a given monotonic time (so that concurrent
# clients do not start their interpreters while another one measures) and optionally until a
# given trace position; prints JSON.
CLIENT = r"""
import json, os, sys, time, urllib.request
method, port, size, start_at_ms, period_ms, not_before = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6])
host, mapped = os.environ["STREAMBED_HOST"], os.environ[f"STREAMBED_PORT_{port}"]
epoch = float(os.environ.get("STREAMBED_LINK_EPOCH", "nan"))
time.sleep(max(0.0, not_before - time.monotonic()))
if start_at_ms >= 0:
    pos = ((time.monotonic() - epoch) * 1000) % period_ms
    time.sleep(((start_at_ms - pos) % period_ms) / 1000)
t0 = time.monotonic()
url = f"http://{host}:{mapped}/bytes/{size}"
progress = []
if method == "GET":
    n = 0
    with urllib.request.urlopen(url, timeout=120) as r:
        while chunk := r.read(16384):
            n += len(chunk)
            progress.append((time.monotonic() - epoch, n))
else:
    req = urllib.request.Request(url, data=bytes(size), method="POST")
    n = len(urllib.request.urlopen(req, timeout=120).read())
elapsed = time.monotonic() - t0
print(json.dumps({"bytes": n, "elapsed_s": elapsed, "start_s": t0 - epoch, "progress": progress}))
"""


@dataclass
class Result:
    status: int
    out: dict[str, Any]
    stats: Any


def transfer(
    spec: LinkSpec,
    port: int,
    size: int,
    method: str = "GET",
    start_at_ms: float = -1,
    tmp: Path | None = None,
    not_before: float = 0.0,
) -> Result:
    period = load_mahimahi(spec.downlink)[-1]
    out_path = (tmp or Path("/tmp")) / f"client-{os.getpid()}-{threading.get_ident()}-{id(spec)}"
    argv = [sys.executable, "-c", CLIENT, method, str(port), str(size), str(start_at_ms)]
    try:
        with (
            out_path.open("w") as out,
            start_behind_link(spec, [*argv, str(period), repr(not_before)], stdout=out) as linked,
        ):
            status = linked.wait(180)
            stats = linked.close()
        text = out_path.read_text()
    finally:
        out_path.unlink(missing_ok=True)
    return Result(status, json.loads(text) if text.strip() else {}, stats)


def constant_trace(tmp: Path, opps_per_ms: float, period_ms: int = 1000) -> Path:
    path = tmp / f"constant-{opps_per_ms}.mm"
    if opps_per_ms >= 1:
        ms = [t for t in range(1, period_ms + 1) for _ in range(int(opps_per_ms))]
    else:
        step = round(1 / opps_per_ms)
        ms = list(range(step, period_ms + 1, step))
    save_mahimahi(ms, path)
    return path


FIDELITY = [(rate, delay, size) for rate in (1, 0.25) for delay in (0, 40) for size in (2, 5)]


def run_cases(cases: list[tuple[LinkSpec, int]], port: int, tmp: Path) -> list[Result]:
    """Several links at once (each its own namespace and subnet), transfers from one instant."""
    not_before = time.monotonic() + 3.0
    with ThreadPoolExecutor(len(cases)) as pool:
        futures = [
            pool.submit(transfer, spec, port, size, tmp=tmp, not_before=not_before)
            for spec, size in cases
        ]
        return [f.result() for f in futures]


@pytest.mark.slow
def test_netns_matches_the_analytic_download_time(
    tmp_path: Path, server_port: int, leftovers: None
) -> None:
    traces = {rate: constant_trace(tmp_path, rate) for rate in (1, 0.25)}
    cases = [
        (LinkSpec(traces[rate], delay_ms=delay, kind="netns", ports=(server_port,)), mb * 10**6)
        for rate, delay, mb in FIDELITY
    ]
    results = run_cases(cases, server_port, tmp_path)
    report = []
    for (rate, delay, mb), result in zip(FIDELITY, results, strict=True):
        assert result.status == 0 and result.out["bytes"] == mb * 10**6
        expected = analytic.tcp_transfer_s(mb * 10**6, rate, delay)
        measured = result.out["elapsed_s"]
        report.append((rate * 12.032, delay, mb, round(measured, 3), round(expected, 3)))
        assert result.stats.down.max_packet_bytes <= 1500  # no GSO super-packets
        assert result.stats.down.dropped_packets == 0
    print("netns (Mbit/s, delay ms, MB, measured s, analytic s):", report)
    for mbps, delay, mb, measured, expected in report:
        assert measured == pytest.approx(expected, rel=0.03), (mbps, delay, mb, report)


@pytest.mark.slow
def test_proxy_matches_the_analytic_download_time(tmp_path: Path, server_port: int) -> None:
    traces = {rate: constant_trace(tmp_path, rate) for rate in (1, 0.25)}
    cases = [
        (LinkSpec(traces[rate], delay_ms=delay, kind="proxy", ports=(server_port,)), mb * 10**6)
        for rate, delay, mb in FIDELITY
    ]
    results = run_cases(cases, server_port, tmp_path)
    report = []
    for (rate, delay, mb), result in zip(FIDELITY, results, strict=True):
        assert result.status == 0 and result.out["bytes"] == mb * 10**6
        own = analytic.proxy_transfer_s(mb * 10**6, rate, delay)
        tcp = analytic.tcp_transfer_s(mb * 10**6, rate, delay)  # Mahimahi's, as netns's test
        measured = result.out["elapsed_s"]
        report.append((rate * 12.032, delay, mb, round(measured, 3), round(own, 3), round(tcp, 3)))
    print("proxy (Mbit/s, delay ms, MB, measured s, proxy model s, TCP model s):", report)
    for mbps, delay, mb, measured, own, tcp in report:
        # Its own model (slow start, handshake, fluid overhead), then real TCP over Mahimahi.
        assert measured == pytest.approx(own, rel=0.05), (mbps, delay, mb, report)
        assert measured == pytest.approx(tcp, rel=0.10), (mbps, delay, mb, report)


def trace_file(tmp: Path, name: str, ms: list[int]) -> Path:
    path = tmp / name
    save_mahimahi(ms, path)
    return path


def expected_with_trace(ms: list[int], result: Result, size: int) -> float:
    """Handshake and request (~3 ms without delay) then a fluid drain of the IP bytes."""
    start_ms = result.out["start_s"] * 1000 + 3
    return analytic.drain_s(ms, start_ms, analytic.ip_bytes(size)) + 0.003


@pytest.mark.slow
def test_trace_repeats_and_throughput_follows_a_variable_trace(
    tmp_path: Path, server_port: int, leftovers: None
) -> None:
    # A 400 ms trace (300 ms at 12 Mbit/s, 100 ms silent) repeated over a ~3 s download, and a
    # 2 s trace (1 s at 12 Mbit/s, 1 s at 3 Mbit/s) over a ~6 s one, both at once.
    short = list(range(1, 301)) + [400]
    variable = list(range(1, 1001)) + list(range(1004, 2001, 4))
    specs = [
        LinkSpec(trace_file(tmp_path, n, ms), kind="netns", ports=(server_port,))
        for n, ms in (("short.mm", short), ("variable.mm", variable))
    ]
    sizes = (3_000_000, 5_000_000)
    not_before = time.monotonic() + 2.0
    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(transfer, spec, server_port, size, "GET", 50, tmp_path, not_before)
            for spec, size in zip(specs, sizes, strict=True)
        ]
        repeat, var = (f.result() for f in futures)
    for ms, result, size in ((short, repeat, sizes[0]), (variable, var, sizes[1])):
        assert result.status == 0 and result.out["bytes"] == size
        expected = expected_with_trace(ms, result, size)
        assert result.out["elapsed_s"] == pytest.approx(expected, rel=0.03)
    # Goodput inside each phase of the variable trace (trace positions in ms, mod 2000).
    rates: dict[str, list[float]] = {"fast": [], "slow": []}
    progress = var.out["progress"]
    for (t0, b0), (t1, b1) in zip(progress, progress[1:], strict=False):
        p0, p1 = (t0 * 1000) % 2000, (t1 * 1000) % 2000
        if 100 < p0 < p1 < 950:
            rates["fast"].append((b1 - b0, t1 - t0))
        elif 1100 < p0 < p1 < 1950:
            rates["slow"].append((b1 - b0, t1 - t0))
    payload = OPPORTUNITY_BYTES * analytic.MSS / analytic.MTU * 1000  # bytes/s at 1 opp/ms
    for phase, factor in (("fast", 1.0), ("slow", 0.25)):
        got = sum(b for b, _ in rates[phase]) / sum(t for _, t in rates[phase])
        assert got == pytest.approx(payload * factor, rel=0.05), phase


@pytest.mark.slow
def test_an_outage_pauses_the_transfer_which_then_resumes(
    tmp_path: Path, server_port: int, leftovers: None
) -> None:
    ms = list(range(1, 1001)) + list(range(3001, 4001))  # silent from 1 s to 3 s
    spec = LinkSpec(trace_file(tmp_path, "outage.mm", ms), kind="netns", ports=(server_port,))
    result = transfer(spec, server_port, 2_500_000, start_at_ms=100, tmp=tmp_path)
    assert result.status == 0 and result.out["bytes"] == 2_500_000
    progress = result.out["progress"]
    gaps = [(t1 - t0, t0, t1) for (t0, _), (t1, _) in zip(progress, progress[1:], strict=False)]
    gap, before, after = max(gaps)
    assert 1.8 < gap < 2.3
    assert 900 < (before * 1000) % 4000 <= 1010 and 3000 < (after * 1000) % 4000 < 3100
    # Retransmission timeouts during the outage cost a little extra afterwards, never less.
    expected = expected_with_trace(ms, result, 2_500_000)
    assert expected * 0.99 < result.out["elapsed_s"] < expected + 1.0


@pytest.mark.slow
def test_uplink_trace_shapes_uploads(tmp_path: Path, server_port: int, leftovers: None) -> None:
    spec = LinkSpec(
        constant_trace(tmp_path, 1),
        uplink=constant_trace(tmp_path, 0.25),
        delay_ms=20,
        kind="netns",
        ports=(server_port,),
    )
    size = 1_000_000
    result = transfer(spec, server_port, size, method="POST", tmp=tmp_path)
    assert result.status == 0
    # SYN and SYN-ACK, the request and body up at 3 Mbit/s, then the answer back down.
    upload = analytic.tcp_transfer_s(size, 0.25, 20, ack_opps_per_ms=1, legs=2, head_bytes=150)
    expected = upload + (20 + 0.5) / 1000
    assert result.out["elapsed_s"] == pytest.approx(expected, rel=0.03)
    assert result.stats.up.bytes > size > result.stats.down.bytes


@pytest.mark.slow
def test_bounded_queue_drops_and_tcp_recovers(
    tmp_path: Path, server_port: int, leftovers: None
) -> None:
    spec = LinkSpec(
        constant_trace(tmp_path, 1),
        delay_ms=40,
        queue_packets=8,
        kind="netns",
        ports=(server_port,),
    )
    result = transfer(spec, server_port, 2_000_000, tmp=tmp_path)
    assert result.status == 0 and result.out["bytes"] == 2_000_000
    assert result.stats.down.dropped_packets > 0
    assert result.stats.raw["down"]["max_queue_packets"] <= 8
    unbounded = analytic.tcp_transfer_s(2_000_000, 1, 40)
    assert result.out["elapsed_s"] > unbounded  # losses cost time


def test_host_server_answers_at_streambed_host(
    tmp_path: Path, server_port: int, leftovers: None
) -> None:
    code = (
        "import urllib.request; from streambed.emulation.link import address_of; "
        f"h, p = address_of({server_port}); "
        "print(h, urllib.request.urlopen(f'http://{h}:{p}/hello', timeout=30).read().decode())"
    )
    out = tmp_path / "out"
    Handler.peers.clear()
    spec = LinkSpec(constant_trace(tmp_path, 1), kind="netns", ports=(server_port,))
    with out.open("w") as fh:
        assert run_behind_link(spec, [sys.executable, "-c", code], stdout=fh) == 0
    host, answer = out.read_text().split()
    assert answer == "hello" and host.startswith("10.")
    assert Handler.peers[-1].startswith("10.") and Handler.peers[-1] != host  # via the link
    proxy = LinkSpec(constant_trace(tmp_path, 1), kind="proxy", ports=(server_port,))
    with out.open("w") as fh:
        assert run_behind_link(proxy, [sys.executable, "-c", code], stdout=fh) == 0
    assert out.read_text().split() == ["127.0.0.1", "hello"]


def test_exit_status_passes_through(tmp_path: Path, leftovers: None) -> None:
    trace = constant_trace(tmp_path, 1)
    for kind in ("netns", "proxy"):
        spec = LinkSpec(trace, kind=kind, ports=(1,))
        assert run_behind_link(spec, ["sh", "-c", "exit 7"]) == 7
        assert run_behind_link(spec, ["sh", "-c", "kill -TERM $$"]) == 128 + 15


def test_cleanup_after_leftover_processes_and_failures(
    tmp_path: Path, monkeypatch: Any, leftovers: None
) -> None:
    spec = LinkSpec(constant_trace(tmp_path, 1), kind="netns")
    # A background process the command leaves in the namespace is stopped with the link.
    pidfile = tmp_path / "pid"
    assert run_behind_link(spec, ["sh", "-c", f"sleep 300 & echo $! > {pidfile}"]) == 0
    pid = int(pidfile.read_text())
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    # An exception while the command runs tears everything down.
    with pytest.raises(RuntimeError), start_behind_link(spec, ["sleep", "300"]) as linked:
        assert linked.poll() is None
        raise RuntimeError("boom")
    assert linked.poll() is not None
    # A failure half-way through setting up, too.
    from streambed.emulation.link import LinkedProcess

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("helper cannot start")

    monkeypatch.setattr(LinkedProcess, "_start_helper", broken)
    with pytest.raises(OSError, match="helper cannot start"):
        run_behind_link(spec, ["true"])


def test_cli_runs_a_command_behind_a_pensieve_trace(tmp_path: Path, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["link", "--help"])
    assert exc.value.code == 0 and "DOWNLINK_TRACE" in capsys.readouterr().out
    trace = tmp_path / "pensieve.txt"
    trace.write_text("0 3.0\n1 3.0\n2 6.0\n")
    stats = tmp_path / "stats.json"
    argv = ["link", "--kind", "netns", "--delay-ms", "5", "--stats", str(stats), str(trace)]
    assert cli_main([*argv, "--", "sh", "-c", "exit 5"]) == 5
    assert json.loads(stats.read_text())["kind"] == "netns"
    assert cli_main(["link", "--kind", "netns", str(tmp_path / "missing.txt"), "--", "true"]) == 2
    assert "missing.txt" in capsys.readouterr().err


# Sleeps, downloads, and says when (on its clock) and where (the link's epoch file) it began.
LATE_CLIENT = r"""
import json, os, sys, time, urllib.request
port, size, sleep_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
host, mapped = os.environ["STREAMBED_HOST"], os.environ[f"STREAMBED_PORT_{port}"]
time.sleep(sleep_s)
t0 = time.monotonic()
with urllib.request.urlopen(f"http://{host}:{mapped}/bytes/{size}", timeout=60) as r:
    n = len(r.read())
elapsed = time.monotonic() - t0
epoch_file = os.environ.get("STREAMBED_LINK_EPOCH_FILE")
epoch = json.load(open(epoch_file))["epoch"] if epoch_file and os.path.exists(epoch_file) else None
print(json.dumps({"bytes": n, "t0": t0, "elapsed_s": elapsed, "epoch": epoch,
                  "env_epoch": os.environ.get("STREAMBED_LINK_EPOCH")}))
"""


@pytest.mark.parametrize("kind", ["netns", "proxy"])
def test_trace_clock_starts_at_the_first_request(
    kind: str, tmp_path: Path, server_port: int, leftovers: None
) -> None:
    """A trace that carries nothing for its first second, then 12 Mbit/s until 3 s (period).
    A command that waits 1.5 s before its request finds the link fast when the trace started
    with the link (ready), and dark for a second when the trace starts at its first packet
    (first-packet): the same request, the same trace window, however late the command is."""
    trace = trace_file(tmp_path, "dark-then-fast", list(range(1001, 3001)))
    size = 200_000  # 0.14 s of the fast part
    results = {}
    for start in ("ready", "first-packet"):
        spec = LinkSpec(trace, kind=kind, ports=(server_port,), trace_start=start)
        out = tmp_path / f"{start}.json"
        argv = [sys.executable, "-c", LATE_CLIENT, str(server_port), str(size), "1.5"]
        with out.open("w") as fh, start_behind_link(spec, argv, stdout=fh) as linked:
            assert linked.wait(60) == 0
            assert linked.trace_epoch() is not None
        results[start] = json.loads(out.read_text())
    ready, first = results["ready"], results["first-packet"]
    assert ready["bytes"] == first["bytes"] == size
    assert ready["elapsed_s"] < 0.8, results  # the trace was 1.5 s in: fast
    assert first["elapsed_s"] > 1.0, results  # the trace began with the request: a dark second
    # The command learns trace time 0 from the epoch file: its request, give or take the
    # connection set-up (ready: the link's start, 1.5 s before it; also in the environment).
    assert abs(first["epoch"] - first["t0"]) < 0.1 and first["env_epoch"] is None, first
    assert 1.4 < ready["t0"] - ready["epoch"] < 2.0, ready
    assert float(ready["env_epoch"]) == pytest.approx(ready["epoch"])


def test_urls_for_a_command_behind_a_link() -> None:
    """This machine's servers are re-pointed at the host as seen through the link; another
    host (a compose service, another node) keeps its address and is reached through Mahimahi's
    NAT only."""
    from streambed.emulation.link import link_ports, outside_url, via_link_url

    assert outside_url("http://localhost:8080/m.mpd", "netns") == "http://127.0.0.1:8080/m.mpd"
    assert outside_url("http://0.0.0.0:8333", "proxy") == "http://127.0.0.1:8333"
    remote = "http://198.51.100.7:8333/decide"  # TEST-NET-2: never this machine's
    assert outside_url(remote, "mahimahi") == remote
    for kind in ("netns", "proxy"):
        with pytest.raises(
            ConfigError, match=r"198\.51\.100\.7 is another machine.*--link mahimahi"
        ):
            outside_url(remote, kind)
    with pytest.raises(ConfigError, match="cannot resolve 'no-such-host.invalid'"):
        outside_url("http://no-such-host.invalid:80/", "mahimahi")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("198.51.100.1", 9))  # no packet: picks the source address of the route
        own = probe.getsockname()[0]
    assert not own.startswith("127.")
    # this machine's own address counts as this machine
    assert outside_url(f"http://{own}:9000/x", "netns") == "http://127.0.0.1:9000/x"

    env = {"STREAMBED_HOST": "10.0.0.1", "STREAMBED_PORT_8080": "5555"}
    assert via_link_url("http://127.0.0.1:8080/m.mpd", env) == "http://10.0.0.1:5555/m.mpd"
    assert via_link_url("http://127.0.0.1:8333", env) == "http://10.0.0.1:8333"
    assert via_link_url(remote, env) == remote
    assert link_ports(["http://127.0.0.1:8080/a", remote, "http://127.0.0.1/b"]) == (80, 8080)
