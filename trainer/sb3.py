"""A Gymnasium vector env as a stable-baselines3 ``VecEnv``: SB3 trains on its own VecEnv class.

::

    envs = gymnasium.make_vec("streambed/ABR-v0", num_envs=64,
                              vectorization_mode="vector_entry_point")
    model = stable_baselines3.PPO("MlpPolicy", SB3VecEnv(envs)).learn(100_000)

:class:`SB3VecEnv` wraps any ``gymnasium.vector.VectorEnv`` whose
``metadata["autoreset_mode"]`` is ``SAME_STEP`` (:class:`~streambed.trainer.vector_env.ABRVectorEnv`,
``SyncVectorEnv(..., autoreset_mode=SAME_STEP)``) or ``DISABLED`` (the adapter resets the
finished sub-envs with ``options={"reset_mask": dones}``), and gives SB3's conventions: the
spaces are the single env's, ``step_wait`` returns ``(obs, rewards, dones, infos)`` with
``dones = terminated | truncated``, the observation after an episode's end is the new
episode's first one, and that sub-env's info dict holds ``terminal_observation`` and
``TimeLimit.truncated``. ``NEXT_STEP`` (Gymnasium's default) is refused with one line: its
reset step has no place in SB3's conventions.

``infos`` is a list of one dict per sub-env; only the keys in ``info_keys`` are copied from
the vector env's infos into them each step (none by default: per-env dicts of thousands of
sessions cost more than the step). Wrap the result in SB3's ``VecMonitor`` for episode
returns and lengths.

``seed()`` seeds the next ``reset`` (``reset(seed=...)`` of the vector env, which draws every
sub-env's randomness from it); ``set_options`` takes one dict for all sub-envs.

stable-baselines3 is a development dependency only (the ``dev`` extra); nothing else in
Streambed imports this module or it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

try:
    from stable_baselines3.common.vec_env.base_vec_env import (
        VecEnv,
        VecEnvIndices,
        VecEnvObs,
        VecEnvStepReturn,
    )
except ImportError as error:  # a development dependency only
    raise ImportError(
        "streambed.trainer.sb3 needs stable-baselines3: pip install 'stable-baselines3>=2.3' "
        "(or Streambed's dev extra)"
    ) from error

from streambed.core.errors import ConfigError

SUPPORTED = (AutoresetMode.SAME_STEP, AutoresetMode.DISABLED)


class SB3VecEnv(VecEnv):
    """``env`` (a Gymnasium vector env) behind stable-baselines3's ``VecEnv`` interface."""

    def __init__(self, env: VectorEnv, info_keys: Sequence[str] = ()) -> None:
        mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if isinstance(mode, str):
            mode = AutoresetMode(mode)
        if mode not in SUPPORTED:
            raise ConfigError(
                f"SB3VecEnv needs autoreset_mode SAME_STEP or DISABLED; {env} has {mode.name} "
                "(for SyncVectorEnv/AsyncVectorEnv pass autoreset_mode=AutoresetMode.SAME_STEP)"
            )
        self.env = env
        self.autoreset_mode = mode
        self.info_keys = tuple(info_keys)
        self._actions: np.ndarray | None = None
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)

    def reset(self) -> VecEnvObs:
        seed = self._seeds[0]
        options = self._options[0] or None
        obs, infos = self.env.reset(seed=seed, options=options)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = self._per_env(infos)
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("SB3VecEnv.step_wait without step_async")
        obs, rewards, terminated, truncated, infos = self.env.step(self._actions)
        self._actions = None
        dones = np.logical_or(terminated, truncated)
        per_env = self._per_env(infos)
        ended = np.flatnonzero(dones)
        if ended.size:
            if self.autoreset_mode == AutoresetMode.SAME_STEP:
                final_obs = infos["final_obs"]
            else:  # DISABLED: obs are the last ones; start those sub-envs again here
                final_obs = obs
                obs, reset_infos = self.env.reset(options={"reset_mask": dones})
                fresh = self._per_env(reset_infos)
                for i in ended:
                    self.reset_infos[i] = fresh[i]
            for i in ended:
                per_env[i]["terminal_observation"] = final_obs[i]
                per_env[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        return obs, np.asarray(rewards, np.float32), dones, per_env

    def _per_env(self, infos: dict[str, Any]) -> list[dict[str, Any]]:
        per_env: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        for key in self.info_keys:
            if key in infos:
                values = infos[key]
                mask = infos.get(f"_{key}")
                for i in range(self.num_envs):
                    if mask is None or mask[i]:
                        per_env[i][key] = values[i]
        return per_env

    def close(self) -> None:
        self.env.close()

    # One vector env stands for every sub-env: attributes and methods are the vector env's.

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        value = getattr(self.env, attr_name)
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(
        self,
        method_name: str,
        *method_args: Any,
        indices: VecEnvIndices = None,
        **method_kwargs: Any,
    ) -> list[Any]:
        result = getattr(self.env, method_name)(*method_args, **method_kwargs)
        return [result for _ in self._get_indices(indices)]

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
