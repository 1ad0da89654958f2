"""Policy architectures: the built-ins, checkpoints naming them, and plug-ins by entry point."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from plugin_helpers import fake_distribution

from streambed.abr_service.architectures import (
    ENTRY_POINT_GROUP,
    PensieveNet,
    PensievePPOActor,
    architectures,
    clear_cache,
    suggested_defaults,
)
from streambed.abr_service.checkpoint import CHECKPOINT_FORMAT
from streambed.abr_service.observation import OBS_VERSION, S_INFO, S_LEN, get_observation
from streambed.abr_service.observation import clear_cache as clear_observations
from streambed.abr_service.policies import load_policy, policy_from_checkpoint
from streambed.abr_service.video import generate_video
from streambed.cli import main
from streambed.core.errors import ConfigError, ModelError
from streambed.traces import SynthParams, generate_trace, save_pensieve
from streambed.trainer.args import CommonArgs
from streambed.trainer.networks import make_networks

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "streambed-example"


def observations(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.uniform(0, 2, (n, S_INFO, S_LEN)), dtype=torch.float32)


def checkpoint(actor: torch.nn.Module, arch: str, levels: int = 6) -> dict[str, object]:
    return {
        "format": CHECKPOINT_FORMAT,
        "arch": arch,
        "num_levels": levels,
        "obs_version": OBS_VERSION,
        "actor": actor.state_dict(),
        "meta": {"algorithm": "test"},
    }


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    clear_cache()
    clear_observations()
    yield
    clear_cache()
    clear_observations()


@pytest.mark.parametrize("name", ["pensieve-ppo", "pensieve"])
@pytest.mark.parametrize("levels", [3, 6, 8])
def test_builtin_shapes(name: str, levels: int) -> None:
    arch = architectures()[name]
    assert arch.name == name and arch.obs_version == OBS_VERSION
    obs = observations(5)
    assert arch.actor(levels)(obs).shape == (5, levels)
    assert arch.critic(levels)(obs).shape == (5, 1)


def test_pensieve_is_the_papers_network() -> None:
    arch = architectures()["pensieve"]
    actor, critic = arch.actor(6), arch.critic(6)
    assert isinstance(actor, PensieveNet) and isinstance(critic, PensieveNet)
    assert actor is not critic  # separate networks, as in the paper
    for conv in (actor.conv_throughput, actor.conv_download, actor.conv_sizes):
        assert conv.out_channels == 128 and conv.kernel_size == (4,)
    assert actor.fc_bitrate.out_features == actor.hidden.out_features == 128
    assert suggested_defaults(arch) == {"actor_lr": 1e-4, "critic_lr": 1e-3, "gamma": 0.99}
    # pensieve-ppo keeps the trainers' own hyperparameters
    assert suggested_defaults(architectures()["pensieve-ppo"]) == {}
    assert isinstance(architectures()["pensieve-ppo"].actor(6), PensievePPOActor)


@pytest.mark.parametrize("name", ["pensieve-ppo", "pensieve"])
def test_checkpoint_round_trip(tmp_path: Path, name: str) -> None:
    torch.manual_seed(1)
    actor = architectures()[name].actor(6).eval()
    torch.save(checkpoint(actor, name), tmp_path / "p.pt")
    loaded = load_policy(tmp_path / "p.pt", 6)
    assert loaded.arch == name and loaded.meta["algorithm"] == "test"
    obs = observations(400)
    with torch.no_grad():
        assert torch.equal(loaded.actor(obs).argmax(-1), actor(obs).argmax(-1))
        assert torch.equal(loaded.actor(obs), actor(obs))


def test_policy_from_checkpoint_builds_pensieve() -> None:
    actor = PensieveNet(6, 6)
    policy = policy_from_checkpoint(checkpoint(actor, "pensieve"), 6, "mem")
    assert isinstance(policy.actor, PensieveNet) and policy.arch == "pensieve"


def test_wrong_shape_names_the_key() -> None:
    data = checkpoint(PensieveNet(6, 6), "pensieve")
    state = dict(data["actor"])  # type: ignore[call-overload]
    state["hidden.weight"] = torch.zeros(64, 10)
    data["actor"] = state
    with pytest.raises(ModelError, match=r"mem: hidden\.weight has shape \(64, 10\)"):
        policy_from_checkpoint(data, 6, "mem")
    # and a pensieve checkpoint for another ladder names the head
    with pytest.raises(ModelError, match=r"head\.weight has shape \(6, 128\)"):
        policy_from_checkpoint(checkpoint(PensieveNet(6, 6), "pensieve"), 4, "mem")
    # pensieve-ppo weights under the pensieve name: missing and unexpected keys
    with pytest.raises(ModelError, match="do not match the pensieve architecture"):
        policy_from_checkpoint(checkpoint(PensievePPOActor(6), "pensieve"), 6, "mem")


def test_unknown_architecture_lists_the_known() -> None:
    with pytest.raises(
        ModelError, match=r"unknown architecture 'nope'; known: pensieve-ppo, pensieve"
    ):
        policy_from_checkpoint(checkpoint(PensieveNet(6, 6), "nope"), 6, "mem")
    with pytest.raises(ConfigError, match="--arch: unknown architecture 'nope'"):
        make_networks(CommonArgs(arch="nope"), 6)


def test_make_networks_uses_the_architecture() -> None:
    actor, critic = make_networks(CommonArgs(arch="pensieve"), 6)
    assert isinstance(actor, PensieveNet) and isinstance(critic, PensieveNet)
    assert critic(observations(2)).shape == (2, 1)


# ------------------------------------------------------------------------------------------
# Plug-ins through real entry points, without installing anything

PLUGIN = '''
"""A test architecture plug-in."""
from torch import nn


def _mlp(out):
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, out))


class Mlp:
    name = "test-mlp"
    obs_version = "pensieve-6x8/1"
    defaults = {"learning_rate": 1e-3, "not_a_flag": 5.0}

    def actor(self, num_levels):
        return _mlp(num_levels)

    def critic(self, num_levels):
        return _mlp(1)


class WrongShape(Mlp):
    name = "wrong-shape"

    def critic(self, num_levels):
        return _mlp(2)


def factory():
    return Mlp()
'''


def install_fake_distribution(root: Path, entries: dict[str, str]) -> None:
    """A ``.dist-info`` with entry points in ``root``: importlib.metadata finds it on sys.path."""
    fake_distribution(
        root, "sb-test-plugin", "0.1", {ENTRY_POINT_GROUP: entries}, {"sb_test_arch": PLUGIN}
    )


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    install_fake_distribution(
        site,
        {
            "test-mlp": "sb_test_arch:Mlp",
            "broken-import": "sb_no_such_module:Arch",
            "wrong-shape": "sb_test_arch:WrongShape",
            "named-wrong": "sb_test_arch:factory",
            "pensieve": "sb_test_arch:Mlp",
        },
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "sb_test_arch", raising=False)
    clear_cache()
    return tmp_path


def test_broken_plugins_are_named_and_skipped(
    plugins: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="streambed.abr_service.architectures"):
        known = architectures()
    assert "test-mlp" in known and {"pensieve-ppo", "pensieve"} <= set(known)
    assert not {"broken-import", "wrong-shape", "named-wrong"} & set(known)
    text = caplog.text
    assert "'broken-import'" in text and "ModuleNotFoundError" in text
    assert "'wrong-shape'" in text and "critic gives (2, 2)" in text
    assert "'named-wrong'" in text and "its name is 'test-mlp'" in text
    assert "'pensieve' (sb_test_arch:Mlp) skipped: the name is already taken" in text
    assert isinstance(known["pensieve"].actor(6), PensieveNet)  # the built-in wins
    # cached: a second look does not warn again
    caplog.clear()
    architectures()
    assert caplog.text == ""


def test_plugin_trains_and_serves(plugins: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slow = SynthParams(duration_s=200.0, states_mbps=(0.5, 1.0, 2.0), outage_prob=0.0)
    for part, seeds in (("train", range(4)), ("val", range(4, 6))):
        (plugins / part).mkdir()
        for seed in seeds:
            save_pensieve(
                generate_trace(slow, seed=seed, name=f"t{seed}"), plugins / part / f"t{seed}"
            )
    out = plugins / "run"
    argv = ["train", "ppo", "--arch", "test-mlp", "--out", str(out), "--steps", "2000"]
    argv += ["--traces", str(plugins / "train"), "--val-traces", str(plugins / "val")]
    assert main([*argv, "--num-envs", "16", "--val-every", "1", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["iterations"] >= 2
    saved = json.loads((out / "args.json").read_text())
    assert saved["arch"] == "test-mlp"
    assert saved["learning_rate"] == 1e-3  # the plug-in's suggestion, not given on the line
    policy = load_policy(out / "best.pt", 6)
    assert policy.arch == "test-mlp" and json.loads(policy.meta["args"])["arch"] == "test-mlp"
    assert policy.actor(observations(3)).shape == (3, 6)
    # a flag given on the command line beats the suggestion
    again = plugins / "again"
    argv2 = ["train", "ppo", "--arch", "test-mlp", "--out", str(again), "--steps", "500"]
    assert main([*argv2, "--learning-rate", "0.0002", "--num-envs", "8", "--no-progress"]) == 0
    assert json.loads((again / "args.json").read_text())["learning_rate"] == 0.0002


def test_unknown_plugin_checkpoint_after_uninstall(plugins: Path, tmp_path: Path) -> None:
    actor = architectures()["test-mlp"].actor(6)
    torch.save(checkpoint(actor, "test-mlp"), tmp_path / "m.pt")
    assert load_policy(tmp_path / "m.pt", 6).arch == "test-mlp"
    sys.path.remove(str(tmp_path / "site"))
    clear_cache()
    with pytest.raises(ModelError, match="unknown architecture 'test-mlp'; known: pensieve-ppo"):
        load_policy(tmp_path / "m.pt", 6)


def test_the_example_package_architecture(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/streambed-example's tiny-mlp satisfies the contract (loaded as discovery does)."""
    from streambed.abr_service.architectures import _load

    monkeypatch.syspath_prepend(str(EXAMPLE))
    from streambed_example.tiny import TinyActorCritic

    arch = _load("tiny-mlp", TinyActorCritic)
    assert arch.actor(6)(observations(2)).shape == (2, 6)
    data = checkpoint(arch.actor(6), "tiny-mlp")
    with pytest.raises(ModelError, match="unknown architecture 'tiny-mlp'"):
        policy_from_checkpoint(data, 6, "mem")  # not registered: the package is not installed


def test_the_example_package_observation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example's example-throughput/1 and tiny-mlp-throughput through real entry points."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    entries = {
        "streambed.observations": {
            "example-throughput": "streambed_example.throughput:ThroughputObservation"
        },
        ENTRY_POINT_GROUP: {
            "tiny-mlp-throughput": "streambed_example.tiny:TinyThroughputActorCritic"
        },
    }
    fake_distribution(tmp_path / "site", "sb-example-copy", "0.1", entries)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    arch = architectures()["tiny-mlp-throughput"]
    observation = get_observation(arch.obs_version)
    assert (observation.version, observation.shape) == ("example-throughput/1", (3, 8))
    obs = np.zeros((2, 3, 8))
    one = np.ones(2)
    video = generate_video(seed=0)
    # 2 MB in 0.5 s; 4 s of buffer; level 3 (1850 of 4300 kbps), then level 5
    chunk = np.array([0, 0])
    observation.update(obs, video, chunk, np.array([3, 3]), 4 * one, 2e6 * one, one / 2, 0 * one)
    observation.update(obs, video, chunk + 1, np.array([5, 0]), 9 * one, 1e6 * one, one, 0 * one)
    np.testing.assert_allclose(obs[0, :, -2:], [[4.0, 1.0], [0.4, 0.9], [1850 / 4300, 1.0]])
    assert arch.actor(6)(torch.zeros(2, 3, 8)).shape == (2, 6)


def test_a3c_with_the_pensieve_network(tmp_path: Path) -> None:
    out = tmp_path / "a3c"
    argv = ["train", "a3c", "--arch", "pensieve", "--out", str(out), "--steps", "800"]
    assert main([*argv, "--num-envs", "8", "--critic-lr", "0.002", "--no-progress"]) == 0
    saved = json.loads((out / "args.json").read_text())
    # the paper's actor lr and discount; the critic lr given on the line wins
    assert (saved["actor_lr"], saved["critic_lr"], saved["gamma"]) == (1e-4, 0.002, 0.99)
    assert load_policy(out / "best.pt", 6).arch == "pensieve"
    assert main(["train", "a3c", "--arch", "transformer", "--out", str(tmp_path / "x")]) == 2


def test_architectures_do_not_import_policies() -> None:
    """The networks live with their architectures: no import cycle with policies.py."""
    code = (
        "import sys, streambed.abr_service.checkpoint\n"
        "from streambed.abr_service.architectures import BUILTIN\n"
        "[(a.actor(6), a.critic(6)) for a in BUILTIN.values()]\n"
        "assert 'streambed.abr_service.policies' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
