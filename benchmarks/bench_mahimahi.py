"""netns beside the real Mahimahi: curl download times through both links.

    sudo python benchmarks/bench_mahimahi.py [--repeats 3] [--kinds mahimahi,netns]

Needs root (netns; Mahimahi then runs as ``$STREAMBED_MAHIMAHI_USER``), mm-link and mm-delay,
``net.ipv4.ip_forward=1`` and curl. A host HTTP server (threads of this process, 0.0.0.0)
serves 2 MB and 5 MB; ``curl`` behind each link reports its total time. Cases: a constant
12 Mbit/s trace (one 1504-byte opportunity per ms) and a variable one (2 s steps of 12, 3, 6,
1.5, 24 Mbit/s), at 0 and 40 ms one-way delay. The kinds run interleaved (load hits both alike);
each figure is the median of ``--repeats``. ``start_s`` (netns) is when the command started
after the trace's time 0 (``$STREAMBED_LINK_EPOCH``). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from streambed.emulation import mahimahi
from streambed.emulation.link import LinkSpec, start_behind_link
from streambed.traces.formats import save_mahimahi

MB = 1_000_000
PAYLOAD = os.urandom(5 * MB)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = memoryview(PAYLOAD)[: int(self.path.rsplit("/", 1)[1])]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client behind a link torn down mid-transfer is not news


def traces(tmp: Path) -> dict[str, Path]:
    constant = tmp / "constant.mm"
    save_mahimahi(list(range(1, 1001)), constant)
    steps = tmp / "steps.txt"
    rates = (12, 3, 6, 1.5, 24)
    steps.write_text("".join(f"{2 * i} {r}\n" for i, r in enumerate(rates)) + "10 12\n")
    return {"constant": constant, "steps": steps}


def download(spec: LinkSpec, port: int, size: int, tmp: Path) -> tuple[float, float | None]:
    """(curl's total time, the command's start after the epoch or None)."""
    out = tmp / f"out-{spec.kind}"
    url = f"http://$STREAMBED_HOST:{port}/bytes/{size}"
    start = 'echo "${STREAMBED_LINK_EPOCH:-}" > ' + f"{out}.epoch; "
    clock = f"/usr/bin/python3 -S -c 'import time; print(time.monotonic())' > {out}.start; "
    cmd = start + clock + f"curl -sS -o /dev/null -w '%{{time_total}}' {url} > {out}"
    with start_behind_link(spec, ["sh", "-c", cmd]) as linked:
        status = linked.wait(180)
    if status != 0:
        raise SystemExit(f"curl through {spec.kind}: status {status}")
    epoch = (out.parent / f"{out.name}.epoch").read_text().strip()
    started = float((out.parent / f"{out.name}.start").read_text())
    return float(out.read_text()), (started - float(epoch)) if epoch else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--kinds", default="mahimahi,netns")
    args = p.parse_args()
    kinds = args.kinds.split(",")
    server = Server(("0.0.0.0", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    tmp = Path(tempfile.mkdtemp(prefix="streambed-bench-mm-"))
    tmp.chmod(0o755)
    if "mahimahi" in kinds:
        mahimahi.grant(tmp)
    results = []
    try:
        for name, trace in traces(tmp).items():
            for delay in (0, 40):
                for size in (2, 5):
                    times: dict[str, list[float]] = {k: [] for k in kinds}
                    starts: list[float] = []
                    for _ in range(args.repeats):
                        for kind in kinds:
                            spec = LinkSpec(trace, delay_ms=delay, kind=kind)
                            t, start = download(spec, port, size * MB, tmp)
                            times[kind].append(t)
                            if start is not None:
                                starts.append(start)
                    row: dict[str, Any] = {"trace": name, "delay_ms": delay, "mb": size}
                    row.update({f"{k}_s": round(statistics.median(v), 3) for k, v in times.items()})
                    if starts:
                        row["netns_start_s"] = round(statistics.median(starts), 3)
                    if "mahimahi" in kinds and "netns" in kinds:
                        mm, ns = row["mahimahi_s"], row["netns_s"]
                        row["netns_vs_mm_pct"] = round(100 * (ns - mm) / mm, 1)
                    results.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        server.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    meta = {"date": date.today().isoformat(), "cpus": os.cpu_count(), "host": platform.node()}
    print(json.dumps({"meta": meta, "results": results}))


if __name__ == "__main__":
    main()
