"""Load test of ``streambed serve`` (one uvicorn worker) on loopback.

    python benchmarks/bench_service.py [--algorithms bba,robustmpc,ppo] [--duration 10]

For each algorithm a fresh ``streambed serve`` process is started, then:

1. saturation: a closed loop of 64 connections, each playing 48-chunk sessions back to back
   (a request is sent as soon as the previous answer arrives): decisions/s, p50/p99 latency;
2. open loop: requests arrive at 500/s (Poisson) spread over 2,000 sessions, as players that
   ask once per chunk would; latency counts from the scheduled send time, so queueing shows;
3. with ``--closed-n 1,50,200``: the closed loop at those concurrencies too.

The load generator runs in this process and shares the machine's cores with the server. By
default it speaks HTTP/1.1 keep-alive over asyncio streams (``--client raw``): httpx's async
pool tops out near 1,500 requests/s on one core here, and collapses below 200/s with 64
connections, which would measure the client rather than the service. ``--client httpx`` is
kept for comparison. Prints one JSON object. ``--model`` defaults to the shared Pensieve-PPO
checkpoint, or a random one of the same architecture when ``../shared`` is absent.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from streambed.core.servers import free_port, wait_healthy

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CHUNKS = 48


def random_checkpoint(path: Path) -> Path:
    import torch

    from streambed.abr_service.architectures import PensievePPOActor
    from streambed.abr_service.checkpoint import CHECKPOINT_FORMAT
    from streambed.abr_service.observation import OBS_VERSION

    torch.manual_seed(0)
    data = {
        "format": CHECKPOINT_FORMAT,
        "arch": "pensieve-ppo",
        "num_levels": 6,
        "obs_version": OBS_VERSION,
        "actor": PensievePPOActor(6).state_dict(),
    }
    buffer = io.BytesIO()
    torch.save(data, buffer)
    path.write_bytes(buffer.getvalue())
    return path


class Player:
    """A synthetic session: plausible measurements, the service's answers fed back."""

    def __init__(self, sid: str, rng: np.random.Generator) -> None:
        self.sid, self.rng = sid, rng
        self.last: int | None = None
        self.k, self.buffer = 0, 0.0
        self.mbps = float(rng.uniform(0.5, 6.0))

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "session_id": self.sid,
            "chunk_index": self.k,
            "buffer_s": self.buffer,
        }
        if self.last is not None:
            size = int(
                (300, 750, 1200, 1850, 2850, 4300)[self.last] * 500 * self.rng.uniform(0.8, 1.2)
            )
            download = size * 8 / (self.mbps * 1e6 * self.rng.uniform(0.6, 1.4)) + 0.08
            self.buffer = max(self.buffer - download, 0.0) + 4.0
            body.update(
                last_quality=self.last,
                last_chunk_bytes=size,
                last_chunk_download_s=download,
                buffer_s=min(self.buffer, 60.0),
                rebuffer_s=0.0,
            )
        return body

    def answered(self, quality: int) -> None:
        self.last = quality
        self.k += 1
        if self.k == CHUNKS:
            self.k, self.last, self.buffer = 0, None, 0.0
            self.sid = f"{self.sid.split('.')[0]}.{self.rng.integers(1 << 30)}"


class RawConnection:
    """One keep-alive HTTP/1.1 connection; just enough protocol for JSON POSTs."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: dict[str, Any]) -> tuple[int, Any]:
        body = json.dumps(payload).encode()
        reused = self.writer is not None
        try:
            return await self._exchange(path, body)
        except (ConnectionError, asyncio.IncompleteReadError):
            if not reused:
                raise
            # the server closed an idle keep-alive connection: one retry on a fresh one
            self.writer = None
            return await self._exchange(path, body)

    async def _exchange(self, path: str, body: bytes) -> tuple[int, Any]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(), len(body), body)
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        data = await self.reader.readexactly(length)
        if b"connection: close" in head.lower():
            self.writer.close()
            self.writer = None
        return status, json.loads(data) if data else None


class HttpxConnection:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(self, path: str, payload: dict[str, Any]) -> tuple[int, Any]:
        r = await self.client.post(path, json=payload)
        return r.status_code, r.json()


class Connections:
    """Connections for the load: raw keep-alive sockets, or one shared httpx client."""

    def __init__(self, url: str, kind: str, size: int) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port, self.kind = host, int(port), kind
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        self.client = (
            httpx.AsyncClient(base_url=url, limits=limits, timeout=30) if kind == "httpx" else None
        )
        self.idle: list[Any] = []

    def get(self) -> Any:
        if self.idle:
            return self.idle.pop()
        if self.client is not None:
            return HttpxConnection(self.client)
        return RawConnection(self.host, self.port)

    def put(self, conn: Any) -> None:
        self.idle.append(conn)

    async def close(self) -> None:
        for conn in self.idle:
            if isinstance(conn, RawConnection) and conn.writer is not None:
                conn.writer.close()
        if self.client is not None:
            await self.client.aclose()


def summary(latencies: list[float], errors: int, seconds: float) -> dict[str, Any]:
    lat = np.asarray(latencies) * 1000
    return {
        "decisions": len(latencies),
        "errors": errors,
        "seconds": round(seconds, 2),
        "decisions_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
    }


async def closed_loop(
    url: str, algorithm: str, connections: int, duration: float, client: str = "raw"
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    pool = Connections(url, client, connections)
    stop = time.perf_counter() + duration
    warm_until = time.perf_counter() + min(2.0, duration / 5)

    async def worker(i: int) -> None:
        nonlocal errors
        conn = pool.get()
        player = Player(f"c{connections}-{i}", np.random.default_rng(i))
        while time.perf_counter() < stop:
            body = player.body()
            body["algorithm"] = algorithm
            sent = time.perf_counter()
            status, answer = await conn.post("/decide", body)
            done = time.perf_counter()
            if status != 200:
                errors += 1
                player.answered(0)
                continue
            player.answered(answer["quality"])
            if sent >= warm_until:
                latencies.append(done - sent)
        pool.put(conn)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(connections)))
    measured = time.perf_counter() - max(started, warm_until)
    await pool.close()
    return summary(latencies, errors, measured)


async def open_loop(
    url: str,
    algorithm: str,
    rate: float,
    sessions: int,
    duration: float,
    client: str = "raw",
    seed: int = 0,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    players = [Player(f"o{i}", np.random.default_rng(1000 + i)) for i in range(sessions)]
    busy = [False] * sessions
    gaps = rng.exponential(1.0 / rate, size=int(rate * duration * 1.2) + 10)
    pool = Connections(url, client, 256)
    latencies: list[float] = []
    errors = 0
    skipped = 0
    samples: list[str] = []

    async def one(i: int, scheduled: float) -> None:
        nonlocal errors
        busy[i] = True
        body = players[i].body()
        body["algorithm"] = algorithm
        conn = pool.get()
        try:
            status, answer = await conn.post("/decide", body)
            players[i].answered(answer["quality"] if status == 200 else 0)
            if status != 200:
                errors += 1
                samples.append(f"{status}: {answer}")
            pool.put(conn)
        except (OSError, asyncio.IncompleteReadError, httpx.HTTPError) as exc:
            errors += 1
            samples.append(repr(exc))
        latencies.append(time.perf_counter() - scheduled)
        busy[i] = False

    tasks = []
    start = time.perf_counter() + 0.05
    t = start
    n = 0
    for gap in gaps:
        t += gap
        if t - start > duration:
            break
        delay = t - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        i = n % sessions
        n += 1
        if busy[i]:  # a real player never has two requests in flight
            skipped += 1
            continue
        tasks.append(asyncio.create_task(one(i, t)))
    await asyncio.gather(*tasks)
    await pool.close()
    result = summary(latencies, errors, duration)
    result["offered_per_s"] = rate
    result["skipped_busy"] = skipped
    if samples:
        result["error_samples"] = samples[:3]
    return result


def start_server(
    algorithm: str, model: Path | None, port: int, models_dir: Path
) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "streambed.cli",
        "serve",
        "--port",
        str(port),
        "--algorithm",
        algorithm,
        "--models-dir",
        str(models_dir),
    ]
    if SHARED.joinpath("data/video/envivio").is_dir():
        cmd += ["--video", str(SHARED / "data/video/envivio")]
    if model is not None:
        cmd += ["--model", str(model)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    why = wait_healthy(f"http://127.0.0.1:{port}", proc)
    if why is None:
        return proc
    proc.kill()
    raise SystemExit(f"bench_service: streambed serve {why}")


def run(coro: Any) -> Any:
    """asyncio.run on uvloop when it is installed (uvicorn[standard] brings it)."""
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--algorithms", default="bba,robustmpc,ppo")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--connections", type=int, default=64, help="closed-loop saturation")
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop decisions/s")
    parser.add_argument("--sessions", type=int, default=2000, help="open-loop sessions")
    parser.add_argument(
        "--closed-n", default="", help="extra closed-loop concurrencies, e.g. 1,50,200"
    )
    parser.add_argument("--model", type=Path, help="checkpoint for ppo")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw", help="load generator")
    args = parser.parse_args()
    model = args.model
    tmp = Path(tempfile.mkdtemp(prefix="bench-service-"))
    if model is None:
        shared = SHARED / "models" / "pensieve-ppo-ep155400.pth"
        model = shared if shared.is_file() else random_checkpoint(tmp / "random.pt")
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "model": str(model),
        "client": args.client,
        "results": {},
    }
    for algorithm in args.algorithms.split(","):
        port = free_port()
        proc = start_server(
            algorithm, model if algorithm == "ppo" else None, port, tmp / f"models-{algorithm}"
        )
        url = f"http://127.0.0.1:{port}"
        try:
            entry: dict[str, Any] = {
                "saturation": run(
                    closed_loop(url, algorithm, args.connections, args.duration, args.client)
                ),
                "open_loop": run(
                    open_loop(url, algorithm, args.rate, args.sessions, args.duration, args.client)
                ),
            }
            for n in [int(x) for x in args.closed_n.split(",") if x]:
                entry[f"closed_{n}"] = run(
                    closed_loop(url, algorithm, n, args.duration, args.client)
                )
        finally:
            proc.terminate()
            proc.wait(timeout=20)
        report["results"][algorithm] = entry
        print(f"{algorithm}: {json.dumps(entry)}", file=sys.stderr)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
