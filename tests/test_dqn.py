"""DQN on small budgets: it learns, its checkpoints serve as greedy policies, resume is exact."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_trainer import DATA, QOE, VIDEO, _final_actor, initial_val

from streambed.abr_service.algorithms import make_algorithm
from streambed.abr_service.algorithms.learned import LearnedPolicy
from streambed.abr_service.architectures import PensieveNet
from streambed.abr_service.policies import load_policy
from streambed.cli import main
from streambed.core.errors import ConfigError
from streambed.trainer.checkpoints import tensor_bytes, train_state_limit
from streambed.trainer.dqn import DQN, DQNArgs, Replay, n_step_transitions
from streambed.trainer.evaluate import evaluate
from streambed.trainer.loop import train_loop
from streambed.trainer.validation import evaluate_actor

FAST = DQNArgs(
    out="unused",
    steps=25_000,
    num_envs=32,
    rollout_steps=8,
    val_every=20,
    learning_rate=1e-3,
    learning_starts=1_000,
    exploration_steps=10_000,
    updates_per_iteration=2,
    batch_size=128,
    progress=False,
    seed=3,
)


def test_short_run_improves_and_serves(tmp_path: Path) -> None:
    trainer = DQN(replace(FAST, out=str(tmp_path / "run")), DATA)
    before = initial_val(trainer)
    summary = train_loop(trainer)
    best = load_policy(tmp_path / "run" / "best.pt", VIDEO.num_levels)
    val = evaluate_actor(best.actor, DATA.val, VIDEO, QOE)
    assert val == pytest.approx(summary["best_val_qoe"], abs=1e-9)
    assert val > before + 0.5, (before, val)
    assert best.arch == "pensieve-ppo" and best.meta["algorithm"] == "dqn"
    names = {
        line.split(",")[2]
        for line in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]
    }
    assert {"charts/val_qoe", "charts/epsilon", "losses/td_loss", "losses/q_mean"} <= names
    assert any((tmp_path / "run" / "tb").iterdir())
    # final.pt is the trained Q-network: identical greedy actions after the round trip
    final = load_policy(tmp_path / "run" / "final.pt", VIDEO.num_levels)
    obs = torch.as_tensor(np.random.default_rng(0).uniform(0, 2, (500, 6, 8)), dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(final.actor(obs).argmax(-1), trainer.actor(obs).argmax(-1))
    # the service's learned-policy algorithm and streambed eval serve it unchanged
    algo = make_algorithm("ppo", VIDEO, {"model": str(tmp_path / "run" / "best.pt")})
    assert isinstance(algo, LearnedPolicy)
    with torch.no_grad():
        greedy = int(best.actor(torch.zeros(1, 6, 8)).argmax())
    assert int(np.argmax(algo.probabilities())) == greedy
    result = evaluate(
        DATA.val,
        VIDEO,
        ["ppo"],
        params={"ppo": {"model": str(tmp_path / "run" / "best.pt")}},
        progress=False,
    )
    assert float(np.mean([m.qoe for m in result.metrics])) == pytest.approx(val, abs=1e-9)


def test_pensieve_architecture_q_network(tmp_path: Path) -> None:
    args = replace(FAST, out=str(tmp_path / "p"), arch="pensieve", steps=3_000, val_every=5)
    trainer = DQN(args, DATA)
    assert isinstance(trainer.actor, PensieveNet) and isinstance(trainer.target, PensieveNet)
    train_loop(trainer)
    assert load_policy(tmp_path / "p" / "best.pt", VIDEO.num_levels).arch == "pensieve"


def test_warm_start_trains_only_the_state_value_first(tmp_path: Path) -> None:
    start = replace(FAST, out=str(tmp_path / "start"), steps=3_000, val_every=5)
    train_loop(DQN(start, DATA))
    init = str(tmp_path / "start" / "final.pt")
    before = _final_actor(tmp_path / "start")

    def run(name: str, warmup: int) -> DQN:
        args = replace(FAST, out=str(tmp_path / name), steps=4_000, init_from=init)
        trainer = DQN(replace(args, critic_warmup=warmup), DATA)
        critic = {k: v.clone() for k, v in trainer.critic.state_dict().items()}
        train_loop(trainer)
        assert trainer.updates > 0
        assert any(not torch.equal(critic[k], v) for k, v in trainer.critic.state_dict().items())
        return trainer

    warm = run("warm", warmup=10**6)
    assert all(torch.equal(before[k], v) for k, v in warm.actor.state_dict().items())
    cold = run("cold", warmup=0)
    assert any(not torch.equal(before[k], v) for k, v in cold.actor.state_dict().items())


def test_resume_continues_the_same_run(tmp_path: Path) -> None:
    base = replace(FAST, out=str(tmp_path / "straight"), steps=6_000, val_every=4, seed=5)
    train_loop(DQN(base, DATA))
    half = replace(base, out=str(tmp_path / "resumed"), steps=3_000)
    train_loop(DQN(half, DATA))
    state = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert state["extra"]["replay"]["size"] > 0 and state["extra"]["updates"] > 0
    train_loop(DQN(replace(half, steps=6_000, resume=True), DATA))
    straight, resumed = _final_actor(tmp_path / "straight"), _final_actor(tmp_path / "resumed")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert all(torch.equal(a["modules"]["target"][k], b["modules"]["target"][k]) for k in straight)
    assert torch.equal(a["extra"]["replay"]["ret"], b["extra"]["replay"]["ret"])


def test_resume_bound_holds_a_full_replay_buffer() -> None:
    """last.pt is read back within a bound derived from the run: a full replay fits it."""
    small = DQN(replace(FAST, buffer_size=1_000), DATA)
    big = DQN(replace(FAST, buffer_size=50_000), DATA)
    big.replay.size = big.replay.capacity  # as after a long run: last.pt holds all of it

    def limit(t: DQN) -> int:
        return train_state_limit(t.modules(), t.collector.state(), 1, t.extra_state_bytes())

    assert tensor_bytes(big.extra_state()) <= big.extra_state_bytes()
    assert limit(big) - limit(small) >= 2 * (big.replay.nbytes() - small.replay.nbytes())


def test_n_step_returns() -> None:
    rewards = np.array([[1.0], [2.0], [4.0], [8.0]])
    dones = np.array([[0.0], [1.0], [0.0], [0.0]])
    valid = np.array([[True], [True], [False], [True]])
    ret, discount, last = n_step_transitions(rewards, dones, valid, 0.5, 3)
    # t=0: 1 + 0.5*2, then the video ended: no bootstrap
    assert ret[0, 0] == 2.0 and discount[0, 0] == 0.0 and last[0, 0] == 1
    assert ret[1, 0] == 2.0 and discount[1, 0] == 0.0
    # t=3: cut by the rollout's end after one step: a one-step return
    assert ret[3, 0] == 8.0 and discount[3, 0] == 0.5 and last[3, 0] == 3
    one, disc1, _ = n_step_transitions(rewards, np.zeros_like(dones), valid, 0.5, 1)
    assert one[:, 0].tolist() == [1.0, 2.0, 0.0, 8.0] and disc1[0, 0] == 0.5


def test_replay_ring_buffer_wraps_and_restores() -> None:
    replay = Replay(5, (2,), seed=0)
    for start in (0, 3):
        k = np.arange(start, start + 3)
        replay.add(np.c_[k, k].astype(np.float32), k, k.astype(np.float32), np.zeros((3, 2)), k)
    assert replay.size == 5 and replay.pos == 1
    assert replay.action.tolist() == [5, 1, 2, 3, 4]
    copy = Replay(5, (2,), seed=9)
    copy.load_state(replay.state())
    assert [a.tolist() for a in copy.sample(4)] == [a.tolist() for a in replay.sample(4)]


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "dqn", "--help"])
    assert "--exploration-steps" in capsys.readouterr().out
    out = tmp_path / "cli"
    argv = ["train", "dqn", "--out", str(out), "--steps", "800", "--num-envs", "16"]
    assert main([*argv, "--learning-starts", "100", "--val-every", "2", "--no-progress"]) == 0
    saved = json.loads((out / "args.json").read_text())
    assert saved["algorithm"] == "dqn" and saved["learning_starts"] == 100
    assert load_policy(out / "best.pt", VIDEO.num_levels).meta["algorithm"] == "dqn"


def test_demonstrations_teach_the_teachers_levels_then_the_agent_plays(tmp_path: Path) -> None:
    args = replace(
        FAST,
        out=str(tmp_path / "demo"),
        steps=6_000,
        demo_teacher="bba",
        demo_transitions=4_000,
        demo_updates=40,
        learning_starts=500,
        epsilon_start=0.05,
        margin=0.5,
        val_every=5,
    )
    trainer = DQN(args, DATA)
    assert trainer.demos is not None and trainer.demos.capacity == 4_000
    train_loop(trainer)
    demos, replay = trainer.demos, trainer.replay
    # the teacher filled its replay first, the agent's own play the other one afterwards
    assert demos.size == 4_000 and 0 < replay.size < 6_000 - 4_000 + 300
    assert trainer.demo_steps >= 4_000
    # the margin loss makes the teacher's level the greedy one on most demonstrated states
    with torch.no_grad():
        greedy = trainer.actor(torch.as_tensor(demos.obs[: demos.size])).argmax(-1).numpy()
    agreement = float((greedy == demos.action[: demos.size]).mean())
    assert agreement > 0.6, agreement
    names = {
        line.split(",")[2]
        for line in (tmp_path / "demo" / "metrics.csv").read_text().splitlines()[1:]
    }
    assert {"losses/margin_loss", "charts/demo_size", "charts/teacher_qoe"} <= names
    # resume keeps the demonstrations
    state = torch.load(tmp_path / "demo" / "last.pt", weights_only=True)
    assert int(state["extra"]["demos"]["size"]) == 4_000


def test_demonstration_teacher_errors_name_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--demo-teacher: unknown rule algorithm 'nope'"):
        DQN(replace(FAST, out=str(tmp_path / "a"), demo_teacher="nope"), DATA)
    with pytest.raises(ConfigError, match="--param is for --demo-teacher"):
        DQN(replace(FAST, out=str(tmp_path / "b"), param=["bba.reservoir_s=5"]), DATA)
    with pytest.raises(ConfigError, match="--demo-ratio must be in \\[0, 1\\), got 1.5"):
        DQN(replace(FAST, out=str(tmp_path / "c"), demo_teacher="bba", demo_ratio=1.5), DATA)
    with pytest.raises(ConfigError, match="--learning-starts 1000 exceeds --buffer-size 500"):
        DQN(replace(FAST, out=str(tmp_path / "d"), buffer_size=500), DATA)
