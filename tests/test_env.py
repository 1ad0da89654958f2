"""The Gymnasium env: spec compliance, seeding, and consistency with offline evaluation."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env

from streambed.abr_service.algorithms.buffer_based import bba_level
from streambed.abr_service.video import default_video
from streambed.traces.synth import default_traces
from streambed.trainer.env import ABREnv
from streambed.trainer.evaluate import evaluate


def rollout(env: gym.Env, seed: int, action_seed: int) -> tuple[list[np.ndarray], list[float]]:
    obs, _ = env.reset(seed=seed)
    actions = np.random.default_rng(action_seed)
    observations, rewards = [obs], []
    while True:
        obs, reward, terminated, truncated, _ = env.step(int(actions.integers(6)))
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            return observations, rewards


def test_make_by_id_and_check_env() -> None:
    env = gym.make("streambed/ABR-v0")
    check_env(env.unwrapped, skip_render_check=True)
    assert env.action_space == gym.spaces.Discrete(6)
    assert env.observation_space.shape == (6, 8)


def test_import_streambed_alone_registers_the_env() -> None:
    """``import streambed`` is enough, from any folder, before any other part is imported."""
    code = (
        "import streambed, gymnasium, sys; "
        "assert 'streambed.trainer.env' not in sys.modules; "
        "env = gymnasium.make('streambed/ABR-v0'); print(env.action_space)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Discrete(6)"


def test_same_seed_same_rollout_and_different_seed_differs() -> None:
    a, b = ABREnv(mode="train"), ABREnv(mode="train")
    obs_a, rew_a = rollout(a, seed=7, action_seed=1)
    obs_b, rew_b = rollout(b, seed=7, action_seed=1)
    assert len(rew_a) == 47  # 48 chunks, the first fetched by reset
    np.testing.assert_array_equal(np.stack(obs_a), np.stack(obs_b))
    assert rew_a == rew_b
    _, rew_c = rollout(a, seed=8, action_seed=1)
    assert rew_c != rew_a


def test_test_mode_rewards_equal_offline_evaluation() -> None:
    traces, video = default_traces(3), default_video()
    env = ABREnv(traces=traces, video=video, mode="test")
    result = evaluate(traces, video, ["bba"], progress=False)
    for index, trace in enumerate(traces):
        obs, info = env.reset(options={"trace_index": index})
        assert info["trace"] == trace.name
        rewards = []
        done = False
        while not done:
            level = bba_level(info["buffer_s"], 6, 5.0, 10.0)
            obs, reward, done, _, info = env.step(level)
            rewards.append(reward)
        expected = [r.qoe for r in result.sessions[("bba", trace.name)][1:]]
        np.testing.assert_allclose(rewards, expected, atol=1e-12)
