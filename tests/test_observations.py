"""Observations as plug-ins (``streambed.observations``): the built-in Pensieve one, the registry,
broken plug-ins, and a plug-in observation through architectures, simulators, the trainer,
checkpoints, the learned policy, rule algorithms and the service."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from plugin_helpers import fake_distribution
from service_helpers import auth, checkpoint_bytes, running_service

from streambed.abr_service import architectures as arch_registry
from streambed.abr_service import observation as obs_registry
from streambed.abr_service.algorithms import ChunkFeedback, PlayerState, make_algorithm, registry
from streambed.abr_service.algorithms.learned import LearnedParams, LearnedPolicy
from streambed.abr_service.app.models_store import ModelStore
from streambed.abr_service.observation import (
    OBS_VERSION,
    PENSIEVE,
    Observation,
    PensieveObservation,
    get_observation,
    observations,
    update_observation,
)
from streambed.abr_service.policies import load_policy
from streambed.abr_service.video import Video, generate_video
from streambed.cli import main
from streambed.core.errors import ConfigError, ModelError
from streambed.traces import SynthParams, generate_trace, save_pensieve
from streambed.trainer.args import CommonArgs
from streambed.trainer.batched import BatchedSimulator
from streambed.trainer.checkpoints import policy_checkpoint
from streambed.trainer.env import ABREnv

VIDEO = generate_video(seed=0, num_chunks=12)
TPUT = "sbt-tput/1"

MODULE = '''
"""Test observations, architectures and algorithms over them."""
import numpy as np
from torch import nn

from streambed.abr_service.algorithms.base import ABRAlgorithm, PlayerState


class Tput:
    """Last 4 throughputs (MB/s) and buffers (s / 10)."""

    version = "sbt-tput/1"
    shape = (2, 4)

    def update(self, obs, video, chunk_index, quality, buffer_s, chunk_bytes, download_s, rebuffer_s):
        obs[:, :, :-1] = obs[:, :, 1:]
        obs[:, 0, -1] = chunk_bytes / download_s / 1e6
        obs[:, 1, -1] = buffer_s / 10


def factory():
    tput = Tput()
    tput.version = "sbt-factory/1"
    return tput


class WrongShape(Tput):
    version = "sbt-wrong-shape/1"

    def update(self, obs, *args):
        obs[:, 3, -1] = 1.0  # row 3 of a (2, 4) observation


class NonFinite(Tput):
    version = "sbt-nan/1"

    def update(self, obs, *args):
        obs[:, 0, -1] = np.nan


class ListShape(Tput):
    version = "sbt-list/1"
    shape = [2, 4]


class Pensieve(Tput):
    version = "pensieve-6x8/1"


def _mlp(out):
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, out))


class TputMlp:
    name = "sbt-mlp"
    obs_version = "sbt-tput/1"

    def actor(self, num_levels):
        return _mlp(num_levels)

    def critic(self, num_levels):
        return _mlp(1)


class UnknownObs(TputMlp):
    name = "sbt-unknown-obs"
    obs_version = "nope/1"


class PensieveShaped(TputMlp):
    name = "sbt-pensieve-shaped"
    obs_version = "pensieve-6x8/1"


class TputRule(ABRAlgorithm):
    """Level 0 below 1 MB/s of last throughput, the top level above."""

    name = "sbt-rule"
    observation = "sbt-tput/1"

    def select(self, state: PlayerState) -> int:
        return self.video.num_levels - 1 if self.obs[0, -1] > 1.0 else 0


class UnknownObsRule(TputRule):
    observation = "nope/1"
'''

ENTRY_POINTS = {
    "streambed.observations": {
        "sbt-tput": "sbt_obs_mod:Tput",
        "sbt-factory": "sbt_obs_mod:factory",
        "sbt-tput-again": "sbt_obs_mod:Tput",
        "sbt-missing": "sbt_no_such_module:Obs",
        "sbt-wrong-shape": "sbt_obs_mod:WrongShape",
        "sbt-nan": "sbt_obs_mod:NonFinite",
        "sbt-list": "sbt_obs_mod:ListShape",
        "sbt-pensieve": "sbt_obs_mod:Pensieve",
    },
    "streambed.policies": {
        "sbt-mlp": "sbt_obs_mod:TputMlp",
        "sbt-unknown-obs": "sbt_obs_mod:UnknownObs",
        "sbt-pensieve-shaped": "sbt_obs_mod:PensieveShaped",
    },
    "streambed.algorithms": {
        "sbt-rule": "sbt_obs_mod:TputRule",
        "sbt-unknown-obs-rule": "sbt_obs_mod:UnknownObsRule",
    },
}


def clear_caches() -> None:
    obs_registry.clear_cache()
    arch_registry.clear_cache()
    registry.clear_cache()


@pytest.fixture(autouse=True)
def fresh_registries() -> Iterator[None]:
    clear_caches()
    yield
    clear_caches()


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    fake_distribution(site, "sbt-obs", "0.1", ENTRY_POINTS, {"sbt_obs_mod": MODULE})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "sbt_obs_mod", raising=False)
    clear_caches()
    return tmp_path


def feedbacks(count: int, seed: int = 0) -> list[ChunkFeedback]:
    """A session's chunk feedback: throughputs around 1 MB/s, so decisions vary."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(count):
        quality = int(rng.integers(VIDEO.num_levels))
        size = int(VIDEO.chunk_bytes[quality, k])
        out.append(
            ChunkFeedback(k, quality, size, size / 1e6 / rng.uniform(0.3, 3), rng.uniform(0, 30))
        )
    return out


def update_with(observation: Observation, obs: np.ndarray, fb: ChunkFeedback) -> None:
    """``observation.update`` of a batch of one (``obs``: (1, *shape)) with ``fb``."""
    values = (fb.chunk_index, fb.quality, fb.buffer_s, fb.chunk_bytes, fb.download_s, fb.rebuffer_s)
    observation.update(obs, VIDEO, *(np.array([v]) for v in values))


# ------------------------------------------------------------------------------------------
# The built-in observation


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pensieve_update_is_update_observation(dtype: type) -> None:
    # no look-ahead entry: after the last chunk, the next chunk's sizes are zeros
    video = Video("v", VIDEO.bitrates_kbps, 4.0, VIDEO.chunk_bytes[:, :12], 12)
    rng = np.random.default_rng(4)
    n = 9
    start = rng.uniform(0, 2, (n, 6, 8)).astype(dtype)
    chunk = rng.integers(0, video.num_chunks, n)
    chunk[:2] = (0, video.num_chunks - 1)
    quality = rng.integers(0, video.num_levels, n)
    buffer = rng.uniform(0, 60, n)
    size = video.chunk_bytes[quality, chunk].astype(np.float64)
    download = rng.uniform(0.1, 8, n)
    stall = rng.uniform(0, 2, n)

    new = start.copy()
    assert PENSIEVE.update(new, video, chunk, quality, buffer, size, download, stall) is None
    old = start.copy()
    for i in range(n):
        update_observation(
            old[i],
            video.bitrates_kbps[quality[i]],
            video.bitrates_kbps[-1],
            buffer[i],
            size[i],
            download[i],
            video.sizes_at(int(chunk[i]) + 1).astype(float),
            video.num_chunks - chunk[i] - 1,
        )
    np.testing.assert_array_equal(new, old)
    assert new[0, 4, :6].all() and not new[1, 4].any()
    # another video through the same object: its own sizes, not the cached ones
    PENSIEVE.update(new, VIDEO, chunk[:1], quality[:1], buffer[:1], size[:1], download[:1], stall)
    np.testing.assert_allclose(new[0, 4, :6], VIDEO.chunk_bytes[:, chunk[0] + 1] / 1e6, rtol=1e-6)


def test_registry_builtin_and_unknown() -> None:
    assert isinstance(get_observation(OBS_VERSION), PensieveObservation)
    assert get_observation(OBS_VERSION).shape == (6, 8)
    with pytest.raises(ConfigError, match=r"unknown observation 'nope/1'; known: pensieve-6x8/1"):
        get_observation("nope/1")


# ------------------------------------------------------------------------------------------
# Plug-ins


def test_plugins_registered_broken_ones_named_and_skipped(
    plugins: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        known = observations()
        archs = arch_registry.architectures()
    assert list(known) == [OBS_VERSION, TPUT, "sbt-factory/1"]
    assert isinstance(known[OBS_VERSION], PensieveObservation)  # the built-in wins
    text = caplog.text
    expected = {
        "sbt-tput-again": "version 'sbt-tput/1' is already taken",
        "sbt-missing": "ModuleNotFoundError",
        "sbt-wrong-shape": "IndexError",
        "sbt-nan": "non-finite values",
        "sbt-list": "its shape is [2, 4], not a tuple of positive ints",
        "sbt-pensieve": "version 'pensieve-6x8/1' is already taken",
    }
    for name, reason in expected.items():
        line = next(r for r in text.splitlines() if f"observation plug-in {name!r}" in r)
        assert "skipped" in line and reason in line, line
    # architectures: smoke-tested with their observation's shape; an unknown one is named
    assert archs["sbt-mlp"].obs_version == TPUT
    assert "sbt-unknown-obs" not in archs and "sbt-pensieve-shaped" not in archs
    assert "'sbt-unknown-obs'" in text and "unknown observation 'nope/1'" in text
    line = next(r for r in text.splitlines() if "'sbt-pensieve-shaped'" in r)
    assert "RuntimeError" in line  # its 8-input network on (2, 6, 8)
    # algorithms declaring an unknown observation are skipped too
    assert "sbt-rule" in registry.available_algorithms()
    errors = registry.load_errors()
    assert "unknown observation 'nope/1'" in errors["sbt-unknown-obs-rule"]
    # discovery is cached: no second round of warnings
    caplog.clear()
    observations()
    assert caplog.text == ""


def test_rule_algorithm_with_its_own_observation(
    plugins: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    algo = make_algorithm("sbt-rule", VIDEO)
    expected = np.zeros((1, 2, 4))
    tput = get_observation(TPUT)
    levels = []
    for fb in feedbacks(8):
        algo.on_chunk(fb)
        update_with(tput, expected, fb)
        np.testing.assert_array_equal(algo.obs, expected[0])
        levels.append(algo.select(PlayerState(fb.chunk_index + 1, fb.buffer_s, fb.quality)))
    assert set(levels) == {0, VIDEO.num_levels - 1}
    assert main(["algorithms"]) == 0
    text = capsys.readouterr().out
    assert "sbt_obs_mod:TputRule\n    observation: sbt-tput/1\n    (no parameters)" in text
    assert main(["algorithms", "--json"]) == 0
    listed = {a["name"]: a for a in json.loads(capsys.readouterr().out)["algorithms"]}
    assert listed["sbt-rule"]["observation"] == TPUT
    assert listed["bba"]["observation"] is None and listed["ppo"]["observation"] is None


def test_simulator_and_env_build_the_plugin_observation(plugins: Path) -> None:
    params = SynthParams(duration_s=120.0, interval_s=0.7, outage_prob=0.02)
    traces = [generate_trace(params, seed=i, name=f"t{i}") for i in range(3)]
    tput = get_observation(TPUT)
    batched = BatchedSimulator(traces, VIDEO, 3, mode="test", observation=tput)
    assert batched.obs is not None and batched.obs.shape == (3, 2, 4)
    envs = [ABREnv(traces, VIDEO, mode="test", observation=TPUT) for _ in range(3)]
    assert envs[0].observation_space.shape == (2, 4)
    quality = np.full(3, 1)  # reset fetches chunk 0 at level 1
    env_obs = [env.reset(options={"trace_index": i})[0] for i, env in enumerate(envs)]
    batched.step(quality)
    for k in range(VIDEO.num_chunks - 1):
        np.testing.assert_allclose(np.stack(env_obs), batched.obs, rtol=1e-6)
        assert all(envs[0].observation_space.contains(o) for o in env_obs)
        quality = np.array([k % 6, 5 - k % 6, 2])
        env_obs = [env.step(int(q))[0] for env, q in zip(envs, quality, strict=True)]
        batched.step(quality)
    np.testing.assert_allclose(np.stack(env_obs), batched.obs, rtol=1e-6)
    assert batched.obs[:, 0].min() > 0  # eight real throughputs by now


# ------------------------------------------------------------------------------------------
# Checkpoints over a plug-in observation


def tput_checkpoint(seed: int = 5, **overrides: object) -> dict[str, object]:
    torch.manual_seed(seed)
    actor = arch_registry.architectures()["sbt-mlp"].actor(VIDEO.num_levels)
    with torch.no_grad():  # sharper: its choices follow the observation
        for param in actor.parameters():
            param.mul_(4.0)
    data = policy_checkpoint(actor, CommonArgs(arch="sbt-mlp"), "test", VIDEO.num_levels, {})
    data.update(overrides)
    return data


def test_checkpoint_round_trips_into_the_learned_policy(plugins: Path) -> None:
    data = tput_checkpoint()
    assert data["obs_version"] == TPUT
    path = plugins / "tput.pt"
    torch.save(data, path)
    policy = load_policy(path, VIDEO.num_levels)
    assert (policy.arch, policy.obs_version) == ("sbt-mlp", TPUT)

    actor = arch_registry.architectures()["sbt-mlp"].actor(VIDEO.num_levels)
    actor.load_state_dict(data["actor"])  # type: ignore[arg-type]
    tput = get_observation(TPUT)
    for algo in (
        LearnedPolicy(VIDEO, LearnedParams(), policy=policy),
        make_algorithm("ppo", VIDEO, {"model": str(path)}),  # as eval and the service build it
    ):
        assert algo.obs_version == TPUT and algo.obs.shape == (2, 4)
        obs = np.zeros((1, 2, 4))
        chosen, mine = [], []
        for fb in feedbacks(VIDEO.num_chunks - 1, seed=3):
            algo.on_chunk(fb)
            update_with(tput, obs, fb)
            chosen.append(algo.select(PlayerState(fb.chunk_index + 1, fb.buffer_s, fb.quality)))
            with torch.no_grad():
                logits = actor(torch.as_tensor(obs, dtype=torch.float32))
            np.testing.assert_allclose(algo.probabilities(), torch.softmax(logits[0], -1), 1e-6)
            mine.append(int(logits.argmax()))
        assert chosen == mine and len(set(mine)) > 1


@pytest.mark.parametrize("version", ["", "sbt-tput", "sbt-tput/2", "nope/1", 7])
def test_unknown_obs_version_names_the_file(plugins: Path, version: object) -> None:
    path = plugins / "bad.pt"
    torch.save(tput_checkpoint(obs_version=version), path)
    with pytest.raises(ModelError) as info:
        load_policy(path, VIDEO.num_levels)
    message = str(info.value)
    assert message.startswith(f"{path}: unknown observation version {version!r}; known: ")
    assert TPUT in message


def test_observation_and_architecture_must_agree(plugins: Path) -> None:
    path = plugins / "mixed.pt"
    torch.save(tput_checkpoint(obs_version=OBS_VERSION), path)
    with pytest.raises(ModelError, match="observation is 'pensieve-6x8/1', but the sbt-mlp"):
        load_policy(path, VIDEO.num_levels)
    # the plug-in gone: its checkpoints are refused by name, not misread
    torch.save(tput_checkpoint(), path)
    sys.path.remove(str(plugins / "site"))
    clear_caches()
    with pytest.raises(ModelError, match=f"{path}: unknown observation version 'sbt-tput/1'"):
        load_policy(path, VIDEO.num_levels)


def test_model_store_records_the_observation(plugins: Path) -> None:
    buffer = io.BytesIO()
    torch.save(tput_checkpoint(), buffer)
    store = ModelStore(plugins / "models", VIDEO.num_levels, set())
    info, created = store.put("tput", buffer.getvalue())
    assert created and (info.arch, info.obs_version) == ("sbt-mlp", TPUT)
    stored = json.loads((plugins / "models" / "tput" / "v1.json").read_text())
    assert stored["obs_version"] == TPUT


def test_service_serves_it_and_falls_back_when_the_observation_changes(plugins: Path) -> None:
    buffer = io.BytesIO()
    torch.save(tput_checkpoint(), buffer)
    video = generate_video(seed=0)  # the service's default ladder
    with running_service(plugins, video=video) as url, httpx.Client(base_url=url) as client:
        r = client.put("/models/tput?activate=true", content=buffer.getvalue(), headers=auth())
        assert r.status_code == 201 and r.json()["obs_version"] == TPUT, r.text
        body = {"session_id": "s", "algorithm": "ppo", "chunk_index": 0, "buffer_s": 0.0}
        assert client.post("/decide", json=body).status_code == 200
        feedback = {"last_quality": 1, "last_chunk_bytes": 800_000, "last_chunk_download_s": 1.0}
        r = client.post("/decide", json={**body, **feedback, "chunk_index": 1, "buffer_s": 4.0})
        assert r.status_code == 200 and not r.json()["fallback"], r.text
        # a Pensieve model in the same slot mid-session: this session falls back, a new one
        # reads the Pensieve observation
        r = client.put("/models/pens?activate=true", content=checkpoint_bytes(), headers=auth())
        assert r.status_code == 201 and r.json()["obs_version"] == OBS_VERSION, r.text
        r = client.post("/decide", json={**body, **feedback, "chunk_index": 2, "buffer_s": 6.0})
        assert r.status_code == 200 and r.json()["fallback"], r.text
        fresh = {**body, "session_id": "t"}
        client.post("/decide", json=fresh)
        r = client.post("/decide", json={**fresh, **feedback, "chunk_index": 1, "buffer_s": 4.0})
        assert r.status_code == 200 and not r.json()["fallback"], r.text


# ------------------------------------------------------------------------------------------
# Training over a plug-in observation


@pytest.mark.parametrize("algorithm", ["ppo", "dqn"])
def test_trains_over_the_plugin_observation(
    plugins: Path, algorithm: str, capsys: pytest.CaptureFixture[str]
) -> None:
    slow = SynthParams(duration_s=200.0, states_mbps=(0.5, 1.0, 2.0), outage_prob=0.0)
    for part, seeds in (("train", range(3)), ("val", range(3, 5))):
        (plugins / part).mkdir()
        for seed in seeds:
            save_pensieve(
                generate_trace(slow, seed=seed, name=f"t{seed}"), plugins / part / f"t{seed}"
            )
    out = plugins / "run"
    argv = ["train", algorithm, "--arch", "sbt-mlp", "--out", str(out), "--steps", "600"]
    argv += ["--traces", str(plugins / "train"), "--val-traces", str(plugins / "val")]
    if algorithm == "dqn":  # updates from the replay buffer within the budget
        argv += ["--learning-starts", "100", "--batch-size", "32", "--buffer-size", "1000"]
    assert main([*argv, "--num-envs", "8", "--val-every", "1", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["iterations"] >= 1
    for name in ("best.pt", "final.pt"):
        policy = load_policy(out / name, 6)
        assert (policy.arch, policy.obs_version) == ("sbt-mlp", TPUT)
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["collectors"][0]["obs"].shape[1:] == (2, 4)
