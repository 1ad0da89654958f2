"""Tests of checkpoint loading (all accepted layouts and every failure) and of LearnedPolicy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from streambed.abr_service.algorithms import ChunkFeedback, PlayerState, make_algorithm
from streambed.abr_service.algorithms.learned import LearnedParams, LearnedPolicy
from streambed.abr_service.architectures import PensievePPOActor, PensievePPOCritic
from streambed.abr_service.checkpoint import CHECKPOINT_FORMAT
from streambed.abr_service.observation import OBS_VERSION
from streambed.abr_service.policies import LoadedPolicy, load_policy
from streambed.abr_service.video import generate_video
from streambed.core.errors import ConfigError, ModelError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CHECKPOINT = SHARED / "models" / "pensieve-ppo-ep155400.pth"

needs_checkpoint = pytest.mark.skipif(
    not CHECKPOINT.is_file(), reason=f"shared model not present ({CHECKPOINT} is absent)"
)


def random_actor(levels: int = 6, seed: int = 0) -> PensievePPOActor:
    torch.manual_seed(seed)
    return PensievePPOActor(levels).eval()


def random_observations(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.uniform(0, 2, size=(n, 6, 8)), dtype=torch.float32)


def actions(actor: torch.nn.Module, obs: torch.Tensor) -> list[int]:
    with torch.no_grad():
        return actor(obs).argmax(dim=1).tolist()


def streambed_checkpoint(network: torch.nn.Module, **overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "format": CHECKPOINT_FORMAT,
        "arch": "pensieve-ppo",
        "num_levels": 6,
        "obs_version": OBS_VERSION,
        "actor": network.state_dict(),
        "meta": {"epoch": 12, "trainer": "test"},
    }
    data.update(overrides)
    return data


# ------------------------------------------------------------------------------------------
# The published Pensieve-PPO checkpoint


@needs_checkpoint
def test_shared_checkpoint_loads() -> None:
    policy = load_policy(CHECKPOINT, 6)
    assert policy.source_format == "pensieve-ppo"
    assert policy.arch == "pensieve-ppo"
    assert policy.num_levels == 6
    assert not policy.actor.training
    with torch.no_grad():
        out = policy.actor(random_observations(4))
    assert out.shape == (4, 6)
    assert torch.isfinite(out).all()


@needs_checkpoint
def test_shared_checkpoint_with_wrong_ladder() -> None:
    with pytest.raises(ModelError) as info:
        load_policy(CHECKPOINT, 5)
    message = str(info.value)
    assert str(CHECKPOINT) in message
    assert "shape (128, 6)" in message
    assert "expected (128, 5)" in message
    assert "5-level" in message


@needs_checkpoint
def test_shared_checkpoint_truncated(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(CHECKPOINT.read_bytes()[:1000])
    with pytest.raises(ModelError) as info:
        load_policy(truncated, 6)
    assert str(truncated) in str(info.value)
    assert "not a loadable checkpoint" in str(info.value)
    assert "\n" not in str(info.value)


@needs_checkpoint
def test_learned_policy_from_shared_checkpoint() -> None:
    video = generate_video(seed=0)
    algo = make_algorithm("ppo", video, {"model": str(CHECKPOINT)})
    assert isinstance(algo, LearnedPolicy)
    algo.on_chunk(ChunkFeedback(0, 1, 400_000, 0.5, 4.0, 0.5))
    probs = algo.probabilities()
    assert probs.shape == (6,)
    assert probs.sum() == pytest.approx(1.0)
    assert 0 <= algo.select(PlayerState(1, 4.0, 1)) < 6


# ------------------------------------------------------------------------------------------
# Accepted layouts


def test_streambed_checkpoint_round_trip(tmp_path: Path) -> None:
    actor = random_actor(seed=3)
    path = tmp_path / "policy.pt"
    torch.save(streambed_checkpoint(actor), path)
    policy = load_policy(path, 6)
    assert policy.source_format == CHECKPOINT_FORMAT
    assert policy.meta == {"epoch": 12, "trainer": "test"}
    obs = random_observations(50, seed=5)
    expected = actions(actor, obs)
    assert actions(policy.actor, obs) == expected
    assert len(set(expected)) > 1  # the comparison is not trivially one constant action
    with torch.no_grad():
        assert torch.allclose(policy.actor(obs), actor(obs))


def test_pensieve_layout_and_bare_state_dict(tmp_path: Path) -> None:
    actor = random_actor(seed=4)
    critic = PensievePPOCritic(6)
    obs = random_observations(20, seed=1)
    pair = tmp_path / "pair.pth"
    torch.save([actor.state_dict(), critic.state_dict()], pair)
    bare = tmp_path / "bare.pth"
    torch.save(actor.state_dict(), bare)
    loaded_pair = load_policy(pair, 6)
    loaded_bare = load_policy(bare, 6)
    assert loaded_pair.source_format == "pensieve-ppo"
    assert loaded_bare.source_format == "state-dict"
    assert actions(loaded_pair.actor, obs) == actions(actor, obs)
    assert actions(loaded_bare.actor, obs) == actions(actor, obs)


# ------------------------------------------------------------------------------------------
# Failures


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such checkpoint file"):
        load_policy(tmp_path / "absent.pth", 6)


def test_truncated_own_checkpoint(tmp_path: Path) -> None:
    full = tmp_path / "full.pth"
    torch.save(random_actor().state_dict(), full)
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(full.read_bytes()[:1000])
    with pytest.raises(ModelError) as info:
        load_policy(truncated, 6)
    assert str(truncated) in str(info.value)


@pytest.mark.parametrize("payload", [{"a": 1}, [1, 2, 3], {}, "text", 42])
def test_pickle_that_is_not_a_state_dict(tmp_path: Path, payload: object) -> None:
    path = tmp_path / "other.pth"
    torch.save(payload, path)
    with pytest.raises(ModelError) as info:
        load_policy(path, 6)
    assert str(path) in str(info.value)
    assert "not a policy checkpoint" in str(info.value)


def test_random_bytes_file(tmp_path: Path) -> None:
    path = tmp_path / "noise.bin"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelError) as info:
        load_policy(path, 6)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        b"hello world\n",  # 'h' is the pickle opcode BINGET: KeyError inside torch.load
        b"ab",  # 'a' is APPEND on an empty stack: IndexError inside torch.load
        b"\x89PNG\r\n\x1a\n" + bytes(64),
        b"0.0 1.5\n1.0 2.5\n",  # a trace file given by mistake
    ],
)
def test_non_torch_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "not_a_model.pth"
    path.write_bytes(content)
    with pytest.raises(ModelError) as info:
        load_policy(path, 6)
    assert str(path) in str(info.value)


def test_wrong_obs_version(tmp_path: Path) -> None:
    path = tmp_path / "old.pt"
    torch.save(streambed_checkpoint(random_actor(), obs_version="pensieve-6x8/0"), path)
    with pytest.raises(ModelError) as info:
        load_policy(path, 6)
    assert "'pensieve-6x8/0'" in str(info.value)
    assert OBS_VERSION in str(info.value)


def test_unknown_architecture(tmp_path: Path) -> None:
    path = tmp_path / "arch.pt"
    torch.save(streambed_checkpoint(random_actor(), arch="transformer"), path)
    with pytest.raises(ModelError, match="unknown architecture 'transformer'"):
        load_policy(path, 6)


def test_streambed_checkpoint_without_actor_weights(tmp_path: Path) -> None:
    path = tmp_path / "noactor.pt"
    torch.save(streambed_checkpoint(random_actor(), actor=[1, 2]), path)
    with pytest.raises(ModelError, match="not a state dict of tensors"):
        load_policy(path, 6)


def test_missing_and_unexpected_keys(tmp_path: Path) -> None:
    state = random_actor().state_dict()
    state.pop("pi_head.bias")
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "keys.pth"
    torch.save(state, path)
    with pytest.raises(ModelError) as info:
        load_policy(path, 6)
    assert "missing: pi_head.bias" in str(info.value)
    assert "unexpected: extra.weight" in str(info.value)


def test_five_level_actor_for_six_level_ladder(tmp_path: Path) -> None:
    path = tmp_path / "five.pth"
    torch.save(random_actor(5).state_dict(), path)
    with pytest.raises(ModelError, match=r"has shape \(128, 5\), expected \(128, 6\)"):
        load_policy(path, 6)
    assert load_policy(path, 5).num_levels == 5


def test_nan_weights(tmp_path: Path) -> None:
    state = random_actor().state_dict()
    state["fc4_actor.weight"][0, 0] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save(streambed_checkpoint(random_actor(), actor=state), path)
    with pytest.raises(ModelError) as info:
        load_policy(path, 6)
    assert "not finite" in str(info.value)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------------------------------
# LearnedPolicy


def learned(sample: bool, seed: int) -> LearnedPolicy:
    policy = LoadedPolicy(random_actor(seed=11), "pensieve-ppo", 6)
    return LearnedPolicy(generate_video(seed=0), LearnedParams(sample=sample, seed=seed), policy)


def choices(algo: LearnedPolicy, count: int = 40) -> list[int]:
    rng = np.random.default_rng(99)
    out = []
    for k in range(count):
        algo.obs[:] = rng.uniform(0, 2, size=(6, 8))
        out.append(algo.select(PlayerState(1 + k % 40, 10.0, 1)))
    return out


def test_greedy_is_deterministic_and_is_the_argmax() -> None:
    a, b = learned(False, 0), learned(False, 1)
    first = choices(a)
    assert first == choices(a)
    assert first == choices(b)  # the seed plays no part when greedy
    obs = random_observations(1)
    a.obs[:] = obs[0].numpy()
    assert a.select(PlayerState(1, 0.0, 1)) == actions(a.policy.actor, obs)[0]


def test_sampling_is_seeded() -> None:
    same_1 = choices(learned(True, 5))
    same_2 = choices(learned(True, 5))
    other = choices(learned(True, 6))
    assert same_1 == same_2
    assert same_1 != other
    assert len(set(same_1)) > 1


def test_on_chunk_builds_the_observation() -> None:
    video = generate_video(seed=0)
    algo = LearnedPolicy(video, LearnedParams(), LoadedPolicy(random_actor(), "pensieve-ppo", 6))
    algo.on_chunk(ChunkFeedback(0, 3, 1_000_000, 0.5, 4.0, 0.5))
    last = algo.obs[:, -1]
    assert last[0] == pytest.approx(1850 / 4300)
    assert last[1] == pytest.approx(0.4)  # 4 s / 10
    assert last[2] == pytest.approx(2.0)  # 1e6 bytes / 0.5 s / 1e6
    assert last[3] == pytest.approx(0.05)  # 0.5 s / 10
    assert np.allclose(algo.obs[4, :6], video.chunk_bytes[:, 1] / 1e6)  # next chunk's sizes
    assert last[5] == pytest.approx(47 / 48)  # 48 - 1 chunks left


def test_learned_policy_needs_a_model() -> None:
    with pytest.raises(ConfigError, match="--model"):
        make_algorithm("ppo", generate_video(seed=0))


def test_learned_policy_with_wrong_checkpoint_path(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such checkpoint file"):
        make_algorithm("ppo", generate_video(seed=0), {"model": str(tmp_path / "none.pth")})
