"""``streambed/ABR-v0`` as a Gymnasium vector env: ``num_envs`` sessions on one batched simulator.

::

    envs = gymnasium.make_vec("streambed/ABR-v0", num_envs=4096,
                              vectorization_mode="vector_entry_point")

gives an :class:`ABRVectorEnv`: every session steps in one
:class:`~streambed.trainer.batched.BatchedSimulator` call, no Python loop over sessions.

**Per session, exactly** :class:`~streambed.trainer.env.ABREnv`: the same spaces
(``single_action_space`` is ``Discrete(levels)``, ``single_observation_space`` the observation's
``Box(low, high, shape, float32)``, Pensieve's 6 x 8 by default), the same reward (the chosen
QoE metric of the chunk just downloaded, :meth:`BatchStep.reward
<streambed.trainer.batched.BatchStep.reward>`), the same episode (``reset`` downloads chunk 0
at ``SimConfig.default_quality`` without a decision; each step downloads one chunk; the episode
*terminates* after the video's last chunk, ``num_chunks - 1`` steps, and is never truncated).
``action_space`` and ``observation_space`` are the batched ones (``MultiDiscrete``, ``Box`` of
shape ``(num_envs, *shape)``).

Every episode has the same length and ``reset`` restarts all sessions, so the sessions end
together: all ``terminations`` are True on the same step.

**Autoreset**: ``metadata["autoreset_mode"]`` is ``AutoresetMode.SAME_STEP`` by default. The
step that ends the episodes returns the *new* episodes' first observations (chunk 0 already
downloaded) with the last chunk's reward and ``terminations`` True; the last observations are
in ``infos["final_obs"]`` (an object array of per-session arrays, ``infos["_final_obs"]`` its
mask) and the last chunk's info in ``infos["final_info"]`` (``"_final_info"``), as Gymnasium's
``SyncVectorEnv`` gives them in that mode. No step is spent on resets, and it is the convention
of SB3 (through :mod:`streambed.trainer.sb3`) and of cleanrl's loops. ``autoreset_mode=NEXT_STEP``
(Gymnasium's default, what RLlib's env runners expect) returns the last observations on the
ending step instead, and the step after it starts the new episodes: its actions are not
played, its rewards are 0 and its terminations False, as in ``SyncVectorEnv``.

**Modes**: ``train`` draws each session's trace and start line from ``self.np_random`` at each
(auto)reset and multiplies every delay by uniform noise in [0.9, 1.1]; ``test`` plays traces
from their start with no noise: in the e-th episode since ``reset`` session i plays trace
``(first + e * num_envs + i) mod len(traces)``, ``first`` being ``options["trace_index"]`` (0
by default; test mode only), so the first episode gives session i trace i mod count and
successive episodes go on through the list as :class:`ABREnv` does. Randomness comes only from
``self.np_random``: ``reset(seed=s)`` with the same ``s`` gives the same episodes.

**Infos** (arrays of shape (num_envs,), one entry per session, no ``_key`` masks): ``quality``,
``bitrate_kbps``, ``rebuffer_s``, ``delay_s``, ``buffer_s``, ``sleep_s`` as in :class:`ABREnv`,
and ``trace_index`` (an index into ``self.traces`` where ABREnv gives the name).

**Arguments**: ``num_envs`` (sessions, >= 1), then :class:`ABREnv`'s: ``traces``, ``video``,
``qoe``, ``mode``, ``sim_config``, ``observation``; last ``autoreset_mode`` (``SAME_STEP`` or
``NEXT_STEP``, an :class:`AutoresetMode` or its value). A bad argument raises
:class:`~streambed.core.errors.ConfigError` naming it; actions of the wrong shape, type or
range a ``ValueError`` naming the session (as ABREnv does); ``step`` before ``reset`` a
``RuntimeError``.

Each step returns a fresh observation array (the simulator updates its own in place).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from streambed.abr_service.observation import Observation, bounds
from streambed.abr_service.qoe import make_qoe
from streambed.abr_service.video import Video
from streambed.core.errors import ConfigError
from streambed.traces import Trace
from streambed.trainer.batched import BatchedSimulator, BatchStep
from streambed.trainer.env import env_inputs
from streambed.trainer.simulator import SimConfig

Infos = dict[str, Any]


class ABRVectorEnv(VectorEnv[np.ndarray, np.ndarray, np.ndarray]):
    metadata: dict[str, Any] = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        traces: list[Trace] | str | Path | None = None,
        video: Video | str | Path | None = None,
        qoe: str = "lin",
        mode: str = "train",
        sim_config: SimConfig | None = None,
        observation: Observation | str | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
    ) -> None:
        try:
            self.autoreset_mode = AutoresetMode(autoreset_mode)
        except ValueError:
            raise ConfigError(
                f"autoreset_mode {autoreset_mode!r}: expected SameStep or NextStep"
            ) from None
        if self.autoreset_mode == AutoresetMode.DISABLED:
            raise ConfigError("autoreset_mode Disabled: expected SameStep or NextStep")
        self.metadata = {**type(self).metadata, "autoreset_mode": self.autoreset_mode}
        if not isinstance(num_envs, int | np.integer) or isinstance(num_envs, bool) or num_envs < 1:
            raise ConfigError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        self.traces, video, self.observation = env_inputs(traces, video, observation)
        self.video = video
        self.num_envs = int(num_envs)
        self.qoe = make_qoe(qoe, video)
        self.sim = BatchedSimulator(
            self.traces,
            video,
            self.num_envs,
            sim_config,
            mode=mode,
            rng=np.random.default_rng(0),  # replaced by self.np_random at reset
            obs_dtype=np.float32,
            observation=self.observation,
        )
        self.levels = video.num_levels
        low, high = bounds(self.observation)
        self.single_action_space = gym.spaces.Discrete(self.levels)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.single_observation_space = gym.spaces.Box(
            low, high, self.observation.shape, np.float32
        )
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._default = np.full(self.num_envs, self.sim.config.default_quality, np.int64)
        self._previous: np.ndarray | None = None  # None until reset
        self._first_trace = 0
        self._episode = 0
        self._ended = False  # NEXT_STEP: the last step ended the episodes
        self._bitrates_kbps = np.asarray(video.bitrates_kbps, np.int64)
        self._trace_index = np.zeros(self.num_envs, np.int64)

    @property
    def mode(self) -> str:
        return self.sim.mode

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, Infos]:
        super().reset(seed=seed)
        self.sim.rng = self.np_random
        options = dict(options or {})
        first = options.pop("trace_index", 0)
        if options:
            raise ConfigError(f"unknown reset option(s) {sorted(options)}; expected trace_index")
        if not isinstance(first, int | np.integer) or isinstance(first, bool):
            raise ConfigError(f"reset option trace_index must be an integer, got {first!r}")
        if first and self.mode != "test":
            raise ConfigError("reset option trace_index applies to test mode only")
        self._first_trace = int(first)
        self._episode = 0
        self._ended = False
        return self._start_episodes()

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Infos]:
        if self._previous is None:
            raise RuntimeError("ABRVectorEnv.step before reset: call reset() first")
        quality = self._checked(actions)
        if self._ended:  # NEXT_STEP: this step starts the new episodes; no action is played
            self._ended = False
            self._episode += 1
            obs, infos = self._start_episodes()
            no = np.zeros(self.num_envs, bool)
            return obs, np.zeros(self.num_envs), no, no.copy(), infos
        step = self.sim.step(quality)
        reward = step.reward(self.qoe, self._previous)
        self._previous = step.quality
        terminated = step.end_of_video
        truncated = np.zeros(self.num_envs, bool)
        if not terminated[0]:  # the sessions are in step: all end together
            return self._observe(), reward, terminated, truncated, self._info(step)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            self._ended = True
            return self._observe(), reward, terminated, truncated, self._info(step)
        # Gymnasium's layout: one array per session in an object array.
        final_obs = np.fromiter(self._observe(), dtype=object, count=self.num_envs)
        final_info = self._info(step)
        self._episode += 1
        obs, infos = self._start_episodes()
        infos |= {
            "final_obs": final_obs,
            "_final_obs": terminated.copy(),
            "final_info": final_info,
            "_final_info": terminated.copy(),
        }
        return obs, reward, terminated, truncated, infos

    def _start_episodes(self) -> tuple[np.ndarray, Infos]:
        """Restart every session and download its chunk 0 at the default level."""
        trace = None
        if self.mode == "test":
            first = self._first_trace + self._episode * self.num_envs
            trace = (first + np.arange(self.num_envs)) % len(self.traces)
        self.sim.reset(trace=trace)
        self._trace_index = self.sim.trace.copy()  # fixed for the episode: one array per episode
        step = self.sim.step(self._default.copy())
        self._previous = step.quality
        return self._observe(), self._info(step)

    def _checked(self, actions: Any) -> np.ndarray:
        """``actions`` as an int64 array of levels, or a ValueError naming what is wrong."""
        quality = np.asarray(actions)
        if quality.shape != (self.num_envs,):
            raise ValueError(
                f"actions have shape {quality.shape}; expected ({self.num_envs},), "
                "one level per session"
            )
        if quality.dtype.kind not in "iu":
            raise ValueError(f"actions must be integer levels, got dtype {quality.dtype}")
        low, high = int(quality.min()), int(quality.max())
        if low < 0 or high >= self.levels:
            bad = int(np.flatnonzero((quality < 0) | (quality >= self.levels))[0])
            raise ValueError(
                f"action {int(quality[bad])} of session {bad} outside Discrete({self.levels})"
            )
        return quality.astype(np.int64)  # a copy: the caller may reuse its array

    def _observe(self) -> np.ndarray:
        assert self.sim.obs is not None
        return self.sim.obs.copy()

    def _info(self, step: BatchStep) -> Infos:
        # Copies of what the simulator keeps as its state (the buffer) or the env does (the
        # level, the next reward's previous level); the other arrays are the step's own.
        return {
            "quality": step.quality.copy(),
            "bitrate_kbps": self._bitrates_kbps[step.quality],
            "rebuffer_s": step.rebuffer_s,
            "delay_s": step.delay_s,
            "buffer_s": step.buffer_s.copy(),
            "sleep_s": step.sleep_s,
            "trace_index": self._trace_index,
        }
