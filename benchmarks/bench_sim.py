"""Simulator throughput: chunk downloads per second, scalar and batched, one process.

``batched_steps_per_s`` includes building the 6x8 observation of every session; the batch is
played in training mode (random trace and start, delay noise), all sessions restarted together
at the end of the video as the trainer does. Uses ``../shared/data/traces/norway-train`` and the
Envivio video when present, else the embedded defaults.

    python benchmarks/bench_sim.py --json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from streambed.abr_service.video import default_video, load_video
from streambed.traces import load_traceset
from streambed.traces.synth import default_traces
from streambed.trainer.batched import BatchedSimulator
from streambed.trainer.simulator import Simulator

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def inputs() -> tuple[list, object, str]:
    if (SHARED / "traces" / "norway-train").is_dir():
        return (
            load_traceset(SHARED / "traces" / "norway-train"),
            load_video(SHARED / "video" / "envivio"),
            "norway-train + envivio",
        )
    return default_traces(), default_video(), "embedded defaults"


def bench_scalar(traces, video, seconds: float) -> float:
    sim = Simulator(traces, video, mode="train", rng=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    levels = rng.integers(video.num_levels, size=100_000)
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(1000):
            if sim.download(int(levels[steps % len(levels)])).end_of_video:
                sim.start_session()
            steps += 1
    return steps / (time.perf_counter() - started)


def bench_batched(traces, video, sessions: int, seconds: float, observe: bool) -> float:
    sim = BatchedSimulator(
        traces,
        video,
        sessions,
        mode="train",
        rng=np.random.default_rng(0),
        observe=observe,
        obs_dtype=np.float32,
    )
    rng = np.random.default_rng(1)
    levels = rng.integers(video.num_levels, size=(8, sessions))
    steps, started, i = 0, time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        result = sim.step(levels[i % 8])
        i += 1
        steps += sessions
        if result.end_of_video.all():
            sim.reset()
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--sessions", type=int, default=65536, help="batch size")
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    args = parser.parse_args()
    traces, video, data = inputs()
    result = {
        "data": data,
        "sessions": args.sessions,
        "scalar_steps_per_s": bench_scalar(traces, video, args.seconds),
        "batched_steps_per_s": bench_batched(traces, video, args.sessions, args.seconds, True),
        "batched_steps_per_s_no_obs": bench_batched(
            traces, video, args.sessions, args.seconds, False
        ),
        "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}".strip(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value:,.0f}" if isinstance(value, float) else f"{key:>28}: {value}")


if __name__ == "__main__":
    main()
