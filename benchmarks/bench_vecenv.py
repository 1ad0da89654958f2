"""Steps per second of the Gymnasium vector env (:class:`ABRVectorEnv`), one process.

One step is one session's chunk: ``num_envs`` per ``env.step`` call. Training mode (random trace
and start, delay noise), float32 observations, SAME_STEP autoreset (the step that ends the
episodes also restarts them, whose chunk 0 counts as no step), the env's info arrays built;
actions random, drawn in bulk beforehand. ``sim_steps_per_s`` is the bare
:class:`BatchedSimulator` under the same actions, for the env's overhead. Uses
``../shared/data/traces/norway-train`` and the Envivio video when present, else the embedded
defaults.

    python benchmarks/bench_vecenv.py --sessions 256 4096 65536
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
from bench_sim import inputs  # the same data, found the same way

from streambed.trainer.vector_env import ABRVectorEnv

ACTION_ROWS = 64


def bench(traces, video, sessions: int, seconds: float) -> dict[str, float]:
    env = ABRVectorEnv(sessions, traces=traces, video=video, mode="train")
    env.reset(seed=0)
    actions = np.random.default_rng(1).integers(video.num_levels, size=(ACTION_ROWS, sessions))
    for row in actions[:4]:  # warm up
        env.step(row)
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        env.step(actions[calls % ACTION_ROWS])
        calls += 1
    env_rate = calls * sessions / (time.perf_counter() - started)

    sim = env.sim
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        if sim.step(actions[calls % ACTION_ROWS]).end_of_video[0]:
            sim.reset()
        calls += 1
    sim_rate = calls * sessions / (time.perf_counter() - started)
    return {"env_steps_per_s": env_rate, "sim_steps_per_s": sim_rate}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sessions", type=int, nargs="+", default=[256, 4096, 65536], help="num_envs values"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement")
    args = parser.parse_args()
    traces, video, data = inputs()
    result: dict[str, object] = {
        "data": data,
        "seconds": args.seconds,
        "results": {str(n): bench(traces, video, n, args.seconds) for n in args.sessions},
        "machine": f"{platform.machine()} {platform.processor() or ''} python "
        f"{platform.python_version()}, {os.cpu_count()} cpus".strip(),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
