"""``streambed/ABR-v0``: one streaming session per episode in the chunk-level simulator.

**Action space**: ``Discrete(levels)``, the ladder level of the next chunk (0 = lowest).

**Observation space**: by default ``Box(0, 1e4, (6, 8), float32)``, the Pensieve observation
of the last 8 chunks (:mod:`streambed.abr_service.observation`):

=====  ============================================  ===============================
 row    meaning                                        unit / normalisation
=====  ============================================  ===============================
 0      bitrate of the last chunk                      / top bitrate (0..1)
 1      buffer after the last chunk                    seconds / 10
 2      measured throughput of the last 8 chunks       MB/s
 3      download time of the last 8 chunks             seconds / 10
 4      sizes of the next chunk at each level          MB
 5      chunks left                                    min(left, 48) / 48
=====  ============================================  ===============================

**Reward**: the chosen QoE metric of the chunk just downloaded (``lin`` by default: bitrate in
Mbit/s - 4.3 x stall in s - |bitrate change| in Mbit/s).

**Episode**: ``reset`` starts a session and downloads chunk 0 at level 1 (750 kbps on
Pensieve's ladder), as every test harness does; each ``step`` downloads one chunk. The
episode *terminates* after the video's last chunk (47 steps for a 48-chunk video); it is
never truncated.

**Modes**: ``train`` picks a random trace and start line and multiplies every delay by
uniform noise in [0.9, 1.1]; ``test`` plays the traces in order, each from its start, with no
noise (``options={"trace_index": i}`` picks one). Randomness comes only from
``self.np_random``: the same seed gives the same episode.

With ``observation`` (a registered observation's version, or an object with the
:class:`~streambed.abr_service.observation.Observation` contract) it is ``Box(low, high, shape,
float32)`` of that observation instead.

**Arguments**: ``traces`` (list of Trace, or a trace directory; default: generated traces),
``video`` (Video, or a path; default: the generated video), ``qoe`` (lin, log, hd), ``mode``,
``sim_config`` (:class:`streambed.trainer.simulator.SimConfig`), ``observation`` (default
``pensieve-6x8/1``).

``info`` carries the chunk's ``quality``, ``bitrate_kbps``, ``rebuffer_s``, ``delay_s``,
``buffer_s``, ``sleep_s`` and the session's ``trace``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from streambed.abr_service.observation import (
    PENSIEVE,
    Observation,
    bounds,
    get_observation,
    observe_one,
)
from streambed.abr_service.qoe import make_qoe
from streambed.abr_service.video import Video, default_video, load_video
from streambed.traces import Trace, load_traceset
from streambed.traces.synth import default_traces
from streambed.trainer.simulator import ChunkResult, SimConfig, Simulator

OBS_HIGH = PENSIEVE.high


def env_inputs(
    traces: list[Trace] | str | Path | None,
    video: Video | str | Path | None,
    observation: Observation | str | None,
) -> tuple[list[Trace], Video, Observation]:
    """The traces, video and observation an env was given, loaded (paths, names) or defaulted
    (the embedded generated traces and video, Pensieve's observation)."""
    if traces is None:
        traces = default_traces()
    elif isinstance(traces, str | Path):
        traces = load_traceset(traces)
    if video is None:
        video = default_video()
    elif isinstance(video, str | Path):
        video = load_video(video)
    if isinstance(observation, str):
        observation = get_observation(observation)
    return list(traces), video, observation if observation is not None else PENSIEVE


class ABREnv(gym.Env[np.ndarray, np.int64]):
    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        traces: list[Trace] | str | Path | None = None,
        video: Video | str | Path | None = None,
        qoe: str = "lin",
        mode: str = "train",
        sim_config: SimConfig | None = None,
        observation: Observation | str | None = None,
    ) -> None:
        traces, video, self.observation = env_inputs(traces, video, observation)
        self.video = video
        self.qoe = make_qoe(qoe, video)
        self.sim = Simulator(traces, video, sim_config, mode=mode, rng=np.random.default_rng(0))
        low, high = bounds(self.observation)
        self.action_space = gym.spaces.Discrete(video.num_levels)
        self.observation_space = gym.spaces.Box(low, high, self.observation.shape, np.float32)
        self._obs = np.zeros(self.observation.shape)
        self._next_trace = 0
        self._last_quality = self.sim.config.default_quality

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.sim.rng = self.np_random
        options = options or {}
        if self.sim.mode == "test":
            index = int(options.get("trace_index", self._next_trace))
            self._next_trace = (index + 1) % len(self.sim.traces)
            self.sim.start_session(index)
        else:
            self.sim.start_session(options.get("trace_index"))
        self._obs = np.zeros(self.observation.shape)
        quality = self.sim.config.default_quality
        result = self.sim.download(quality)
        self._last_quality = quality
        return self._observe(result), self._info(result)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        quality = int(action)
        if not self.action_space.contains(quality):
            raise ValueError(f"action {action!r} outside Discrete({self.video.num_levels})")
        result = self.sim.download(quality)
        reward = float(
            self.qoe.transition(quality, self._last_quality, result.rebuffer_s, result.chunk_index)
        )
        self._last_quality = quality
        return self._observe(result), reward, bool(result.end_of_video), False, self._info(result)

    def _observe(self, result: ChunkResult) -> np.ndarray:
        observe_one(
            self.observation,
            self._obs,
            self.video,
            result.chunk_index,
            result.quality,
            result.buffer_s,
            result.chunk_bytes,
            result.delay_s,
            result.rebuffer_s,
        )
        return self._obs.astype(np.float32)

    def _info(self, result: ChunkResult) -> dict[str, Any]:
        return {
            "quality": result.quality,
            "bitrate_kbps": self.video.bitrates_kbps[result.quality],
            "rebuffer_s": result.rebuffer_s,
            "delay_s": result.delay_s,
            "buffer_s": result.buffer_s,
            "sleep_s": result.sleep_s,
            "trace": self.sim.traces[self.sim.trace_index].name,
        }
