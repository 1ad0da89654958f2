"""The netns link's shaper: throughput accuracy, CPU cost and how many sessions fit at once.

    sudo python benchmarks/bench_link.py [--rates 1,6,24,48] [--seconds 8]
                                         [--sessions 1,2,4,8,16,32,48,64,96,128]
                                         [--session-seconds 15]

``--rates ''`` skips the accuracy part.

Needs root (the netns link). A host HTTP server (threads of this process, bound on 0.0.0.0,
Reno, as the analytic model) serves the downloads; clients run behind netns links.

1. accuracy: one link per constant trace (Pensieve-style R Mbit/s converted to Mahimahi
   opportunities), one download of about ``--seconds`` of data at the trace's payload rate
   (opportunities x 1504 bytes x 1448/1500 payload per full packet). ``time_error`` compares
   the download's time with ``streambed.emulation.analytic``'s model (the rate plus a few ms of
   handshake and request), ``throughput_error`` the mean rate achieved with the model's;
   rates measured from the client's reads over parts of a transfer are noisier than the
   link (the receive buffer hides when the client reads). ``cpu_pct_per_mbps`` is
   the shaper's CPU time (minus an idle link's start-up cost) over the transfer, per Mbit/s of
   trace, in percent of one core.
2. concurrency: N links at once, each with a 3 Mbit/s trace (one opportunity per 4 ms) and a
   client downloading 1 MB files back to back for ``--session-seconds``; a session is within
   tolerance when its mean download time is within 3% of the analytic one. N grows until a
   session is not; ``max_sessions_within_3pct`` is the last N where all were.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import numpy as np

from streambed.emulation import analytic
from streambed.emulation.link import LinkSpec, start_behind_link
from streambed.emulation.schedule import OPPORTUNITY_BYTES
from streambed.traces.formats import Trace, pensieve_to_mahimahi, save_mahimahi

PAYLOAD = bytes(64 << 20)

CLIENT = r"""
import json, os, sys, time, urllib.request
port, size, seconds, not_before = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
url = f"http://{os.environ['STREAMBED_HOST']}:{port}/{size}"
time.sleep(max(0.0, not_before - time.monotonic()))
runs, end = [], time.monotonic() + seconds
while True:
    t0 = time.monotonic()
    marks, n = [], 0
    with urllib.request.urlopen(url, timeout=300) as r:
        while chunk := r.read(65536):
            n += len(chunk)
            marks.append((time.monotonic() - t0, n))
    runs.append({"elapsed_s": time.monotonic() - t0, "bytes": n, "marks": marks})
    if time.monotonic() > end:
        break
print(json.dumps(runs))
"""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        n = int(self.path.strip("/"))
        self.send_response(200)
        self.send_header("Content-Length", str(n))
        self.end_headers()
        self.wfile.write(memoryview(PAYLOAD)[:n])

    def log_message(self, format: str, *args: Any) -> None:
        pass


def constant_mm(tmp: Path, mbps: float) -> tuple[Path, float]:
    """A 60 s constant trace; also its opportunities per ms."""
    times = np.arange(61, dtype=np.float64)
    ms = pensieve_to_mahimahi(Trace(f"{mbps}mbps", times, np.full(61, mbps)))
    path = tmp / f"c{mbps}.mm"
    save_mahimahi(ms, path)
    return path, len(ms) / float(ms[-1])


def download(
    spec: LinkSpec, port: int, size: int, seconds: float, tmp: Path, not_before: float = 0.0
) -> dict[str, Any]:
    """Downloads of ``size`` bytes for ``seconds``, starting at ``not_before`` (monotonic)."""
    out = tmp / f"out-{threading.get_ident()}-{id(spec)}"
    argv = [sys.executable, "-c", CLIENT, str(port), str(size), str(seconds), repr(not_before)]
    with out.open("w") as fh, start_behind_link(spec, argv, stdout=fh) as linked:
        status = linked.wait(seconds * 4 + 120)
        stats = linked.close()
    assert stats is not None
    text = out.read_text()
    out.unlink()
    return {"status": status, "runs": json.loads(text) if text.strip() else [], "stats": stats}


def idle_cpu_s(trace: Path, tmp: Path) -> float:
    """The shaper's start-up CPU (interpreter, trace parsing): subtracted from measurements."""
    costs = []
    for _ in range(3):
        with start_behind_link(LinkSpec(trace, kind="netns"), ["sleep", "0.5"]) as linked:
            linked.wait()
            stats = linked.close()
        assert stats is not None
        costs.append(stats.cpu_s)
    return float(np.median(costs))


def bench_accuracy(
    rates: list[float], seconds: float, port: int, tmp: Path
) -> tuple[list[dict[str, Any]], float]:
    rows: list[dict[str, Any]] = []
    if not rates:
        return rows, 0.0
    baseline = idle_cpu_s(constant_mm(tmp, 1.0)[0], tmp)
    for mbps in rates:
        trace, opps_per_ms = constant_mm(tmp, mbps)
        payload_rate = opps_per_ms * 1000 * OPPORTUNITY_BYTES * analytic.MSS / analytic.MTU
        size = int(payload_rate * seconds)
        result = download(LinkSpec(trace, kind="netns"), port, size, 0, tmp)
        run = result["runs"][0]
        stats = result["stats"]
        cpu = max(0.0, stats.cpu_s - baseline)
        row = {
            "trace_mbps": mbps,
            "opportunities_per_ms": round(opps_per_ms, 4),
            "bytes": size,
            "elapsed_s": round(run["elapsed_s"], 3),
            "goodput_bytes_per_s": round(size / run["elapsed_s"]),
            "trace_payload_bytes_per_s": round(payload_rate),
            "shaper_cpu_s": round(cpu, 3),
            "shaper_cpu_pct": round(100 * cpu / run["elapsed_s"], 2),
            "cpu_pct_per_mbps": round(100 * cpu / run["elapsed_s"] / mbps, 3),
            "late_mean_ms": round(stats.raw.get("late_mean_ms", 0.0), 3),
            "packets_down": stats.down.packets,
            "max_packet_bytes": stats.down.max_packet_bytes,
        }
        expected = analytic.tcp_transfer_s(size, opps_per_ms, 0)
        row["analytic_s"] = round(expected, 3)
        row["time_error"] = round(run["elapsed_s"] / expected - 1, 4)
        row["throughput_error"] = round(expected / run["elapsed_s"] - 1, 4)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    return rows, baseline


def bench_concurrency(
    levels: list[int], seconds: float, port: int, tmp: Path
) -> tuple[list[dict[str, Any]], int]:
    trace = tmp / "c3.mm"
    save_mahimahi(list(range(4, 60001, 4)), trace)
    size = 1_000_000
    expected = analytic.tcp_transfer_s(size, 0.25, 0)
    rows, best = [], 0
    spec = LinkSpec(trace, kind="netns")
    for n in levels:
        load_before = os.getloadavg()[0]
        # Every session starts downloading at one instant, after all links and clients are up.
        start = time.monotonic() + 2.0 + 0.25 * n
        with ThreadPoolExecutor(n) as pool:
            futures = [
                pool.submit(download, spec, port, size, seconds, tmp, start) for _ in range(n)
            ]
            results = [f.result() for f in futures]
        errors = []
        cpu = 0.0
        for r in results:
            times = [run["elapsed_s"] for run in r["runs"] if run["bytes"] == size]
            ok = r["status"] == 0 and times
            errors.append(float(np.mean(times)) / expected - 1 if ok else float("inf"))
            cpu += r["stats"].cpu_s
        worst = max(errors)
        row = {
            "sessions": n,
            "downloads": sum(len(r["runs"]) for r in results),
            "analytic_s": round(expected, 3),
            "mean_error": round(float(np.mean(errors)), 4),
            "worst_error": round(worst, 4),
            "shaper_cpu_s_total": round(cpu, 2),
            "loadavg_before": load_before,
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
        if abs(worst) > 0.03:
            break
        best = n
    return rows, best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="1,6,24,48", help="Mbit/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=8.0, help="data per accuracy download")
    parser.add_argument(
        "--sessions", default="1,2,4,8,16,32,48,64,96,128", help="concurrency levels"
    )
    parser.add_argument("--session-seconds", type=float, default=15.0, help="per level")
    args = parser.parse_args()
    server = analytic.ModelSenderServer(("0.0.0.0", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        with tempfile.TemporaryDirectory(prefix="bench-link-") as tmpdir:
            tmp = Path(tmpdir)
            rates = [float(r) for r in args.rates.split(",") if r]
            accuracy, baseline = bench_accuracy(rates, args.seconds, port, tmp)
            levels = [int(n) for n in args.sessions.split(",") if n]
            concurrency, best = bench_concurrency(levels, args.session_seconds, port, tmp)
    finally:
        server.shutdown()
    result = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, "
        f"kernel {platform.release()}, python {platform.python_version()}",
        "loadavg_at_end": os.getloadavg(),
        "shaper_startup_cpu_s": round(baseline, 3),
        "accuracy": accuracy,
        "concurrency": concurrency,
        "max_sessions_within_3pct": best,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
