"""Trainers on small budgets: they learn, checkpoints round-trip, resume is exact, push works."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from service_helpers import running_service

from streambed.abr_service.policies import load_policy
from streambed.abr_service.qoe import make_qoe
from streambed.abr_service.video import default_video
from streambed.cli import main
from streambed.core.errors import ConfigError
from streambed.core.servers import free_port
from streambed.traces import SynthParams, generate_trace, save_pensieve
from streambed.trainer.a3c import A3C, A3CArgs
from streambed.trainer.args import check_args
from streambed.trainer.averaging import averaged_weights, snapshot_paths
from streambed.trainer.checkpoints import policy_checkpoint
from streambed.trainer.data import Data, load_data
from streambed.trainer.evaluate import evaluate
from streambed.trainer.imitate import Imitate, ImitateArgs, oracle_levels
from streambed.trainer.loop import train, train_loop
from streambed.trainer.ppo import PPO, PPOArgs
from streambed.trainer.schedules import Schedule
from streambed.trainer.validation import evaluate_actor

VIDEO = default_video()
# Slow links: a random policy stalls a lot here, so learning shows clearly.
SLOW = SynthParams(duration_s=320.0, states_mbps=(0.4, 0.8, 1.2, 2.0), outage_prob=0.002)
TRACES = [generate_trace(SLOW, seed=i, name=f"slow_{i:02d}") for i in range(12)]
DATA = Data(train=TRACES[:9], val=TRACES[9:], video=VIDEO)
QOE = make_qoe("lin", VIDEO.bitrates_kbps)


def initial_val(trainer: Any) -> float:
    return evaluate_actor(trainer.actor, DATA.val, VIDEO, QOE)


@pytest.mark.parametrize(
    "make",
    [
        lambda out: PPO(
            PPOArgs(out=out, steps=40_000, num_envs=64, val_every=3, progress=False, seed=3), DATA
        ),
        lambda out: A3C(
            A3CArgs(
                out=out,
                steps=40_000,
                num_envs=64,
                val_every=3,
                progress=False,
                seed=3,
                entropy_schedule="linear:0.1:0.01:20",
                actor_lr=1e-3,
            ),
            DATA,
        ),
        lambda out: Imitate(
            ImitateArgs(out=out, steps=12_000, num_envs=32, val_every=2, progress=False, seed=3),
            DATA,
        ),
    ],
    ids=["ppo", "a3c", "imitate"],
)
def test_short_run_improves_on_the_initial_policy(tmp_path: Path, make: Any) -> None:
    trainer = make(str(tmp_path / "run"))
    before = initial_val(trainer)
    summary = train_loop(trainer)
    after = load_policy(tmp_path / "run" / "best.pt", VIDEO.num_levels)
    val = evaluate_actor(after.actor, DATA.val, VIDEO, QOE)
    assert val == pytest.approx(summary["best_val_qoe"], abs=1e-9)
    assert val > before + 0.5, (before, val)
    for name in ("args.json", "best.pt", "last.pt", "metrics.csv"):
        assert (tmp_path / "run" / name).is_file()
    assert any((tmp_path / "run" / "tb").iterdir())
    names = {
        line.split(",")[2]
        for line in (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]
    }
    assert {"charts/val_qoe", "charts/steps_per_s"} <= names
    assert any(n.startswith("losses/") for n in names)


def test_checkpoint_round_trip_and_eval_agree(tmp_path: Path) -> None:
    trainer = PPO(
        PPOArgs(out=str(tmp_path / "r"), steps=6_000, num_envs=32, val_every=1, progress=False),
        DATA,
    )
    train_loop(trainer)
    loaded = load_policy(tmp_path / "r" / "best.pt", VIDEO.num_levels)
    obs = torch.as_tensor(np.random.default_rng(0).uniform(0, 2, (500, 6, 8)), dtype=torch.float32)
    with torch.no_grad():
        # best.pt is the actor of the best validation, which here is the last one
        assert torch.equal(loaded.actor(obs).argmax(-1), trainer.actor(obs).argmax(-1))
    meta = loaded.meta
    assert meta["algorithm"] == "ppo" and meta["val_qoe"] == pytest.approx(
        evaluate_actor(loaded.actor, DATA.val, VIDEO, QOE)
    )
    assert len(meta["weights_sha256"]) == 64 and json.loads(meta["args"])["num_envs"] == 32
    # streambed eval reports the same QoE the trainer validated with
    result = evaluate(
        DATA.val,
        VIDEO,
        ["ppo"],
        params={"ppo": {"model": str(tmp_path / "r" / "best.pt")}},
        progress=False,
    )
    qoes = [m.qoe for m in result.metrics]
    assert float(np.mean(qoes)) == pytest.approx(meta["val_qoe"], abs=1e-9)


def _final_actor(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path / "last.pt", weights_only=True)
    return state["modules"]["actor"]


class _KilledPPO(PPO):
    """Interrupted (as by Ctrl-C) at the start of its 4th iteration, once."""

    def iteration(self) -> dict[str, float]:
        if self.iterations == 3 and not self.args.resume:
            raise KeyboardInterrupt
        return super().iteration()


@pytest.mark.parametrize("algorithm", ["ppo", "a3c"])
def test_resume_continues_the_same_run(tmp_path: Path, algorithm: str) -> None:
    cls, args_cls = (PPO, PPOArgs) if algorithm == "ppo" else (A3C, A3CArgs)
    base = args_cls(
        out=str(tmp_path / "straight"),
        steps=9_000,
        num_envs=32,
        val_every=2,
        progress=False,
        seed=5,
    )
    if algorithm == "ppo":
        base = replace(base, anneal_lr=False)  # type: ignore[call-arg]
    train_loop(cls(base, DATA))
    half = replace(base, out=str(tmp_path / "resumed"), steps=4_500)
    train_loop(cls(half, DATA))
    train_loop(cls(replace(half, steps=9_000, resume=True), DATA))  # a longer budget
    straight, resumed = _final_actor(tmp_path / "straight"), _final_actor(tmp_path / "resumed")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_killed_run_resumes_to_the_same_place(tmp_path: Path) -> None:
    """With the learning rate annealed over the budget, a killed run resumed with the same
    budget ends where an uninterrupted one does."""
    base = PPOArgs(out=str(tmp_path / "straight"), steps=6_000, num_envs=32, val_every=2, seed=6)
    assert base.anneal_lr
    train_loop(PPO(base, DATA))
    killed = replace(base, out=str(tmp_path / "killed"))
    with pytest.raises(KeyboardInterrupt):
        train_loop(_KilledPPO(killed, DATA))
    state = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert state["iteration"] == 3
    train_loop(PPO(replace(killed, resume=True), DATA))
    straight, resumed = _final_actor(tmp_path / "straight"), _final_actor(tmp_path / "killed")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    final = load_policy(tmp_path / "killed" / "final.pt", VIDEO.num_levels)
    assert all(torch.equal(final.actor.state_dict()[k], straight[k]) for k in straight)


def test_push_reaches_a_real_service(tmp_path: Path) -> None:
    (tmp_path / "svc").mkdir()
    with running_service(tmp_path / "svc", algorithm="bba") as url:
        args = PPOArgs(
            out=str(tmp_path / "pushed"),
            steps=3_000,
            num_envs=32,
            val_every=1,
            progress=False,
            push=url,
            token_file=str(tmp_path / "svc" / "token"),
            push_name="fresh",
        )
        train_loop(PPO(args, DATA))
        models = httpx.get(f"{url}/models").json()
        assert models["active"]["ppo"].startswith("fresh@v")
        body = {"session_id": "after-push", "chunk_index": 0, "buffer_s": 0, "algorithm": "ppo"}
        assert (
            httpx.post(f"{url}/decide", json=body).json()["model_version"]
            == models["active"]["ppo"]
        )


def test_failed_push_does_not_stop_training(tmp_path: Path) -> None:
    args = PPOArgs(
        out=str(tmp_path / "r"),
        steps=2_000,
        num_envs=32,
        val_every=1,
        progress=False,
        push="http://127.0.0.1:9",
        push_name="x",
    )
    summary = train_loop(PPO(args, DATA))
    assert summary["iterations"] >= 1 and Path(summary["best"]).is_file()


def test_schedules() -> None:
    linear = Schedule.parse("pensieve-linear")
    assert (
        linear(0) == 1.0
        and linear(50_000) == pytest.approx(0.55)
        and linear(200_000) == pytest.approx(0.1)
    )
    staged = Schedule.parse("staged")
    assert [staged(i) for i in (0, 19_999, 20_000, 65_000, 95_000)] == [5, 5, 4, 2, 0.1]
    assert Schedule.parse("constant:0.5")(10**6) == 0.5
    assert Schedule.parse("0=1,10=0.2")(10) == 0.2
    for bad in ("linear:1:0", "5=1", "nonsense", "linear:a:b:c"):
        with pytest.raises(ConfigError, match="entropy schedule"):
            Schedule.parse(bad)


def saved_traces(tmp_path: Path) -> Path:
    """TRACES as a Pensieve-format trace directory."""
    directory = tmp_path / "traces"
    directory.mkdir()
    for trace in TRACES:
        save_pensieve(trace, directory / trace.name)
    return directory


def test_validation_split_is_held_out_and_fixed(tmp_path: Path) -> None:
    directory = saved_traces(tmp_path)
    data = load_data(PPOArgs(traces=str(directory)))
    again = load_data(PPOArgs(traces=str(directory), seed=99))
    assert {t.name for t in data.val} == {t.name for t in again.val}
    assert not {t.name for t in data.val} & {t.name for t in data.train}
    assert len(data.val) == 2 and len(data.train) == 10
    # Stratified by mean throughput: one held-out trace from each half of the range.
    ranked = sorted(TRACES, key=lambda t: (t.mean_mbps, t.name))
    lower = {t.name for t in ranked[:6]}
    assert len({t.name for t in data.val} & lower) == 1


def test_validation_split_from_matching_traces_only(tmp_path: Path) -> None:
    directory = saved_traces(tmp_path)
    data = load_data(PPOArgs(traces=str(directory), val_match=r"_0[0-5]$", val_fraction=0.5))
    assert {t.name for t in data.val} <= {f"slow_{i:02d}" for i in range(6)}
    assert len(data.val) == 3 and len(data.train) == 9
    assert not {t.name for t in data.val} & {t.name for t in data.train}
    with pytest.raises(ConfigError, match="matches no trace"):
        load_data(PPOArgs(traces=str(directory), val_match="^fcc"))
    with pytest.raises(ConfigError, match="not a regex"):
        load_data(PPOArgs(traces=str(directory), val_match="("))
    with pytest.raises(ConfigError, match="--val-traces"):
        load_data(PPOArgs(traces=str(directory), val_match="slow", val_traces=str(directory)))


def test_training_on_matching_traces_only(tmp_path: Path) -> None:
    directory = saved_traces(tmp_path)
    data = load_data(PPOArgs(traces=str(directory), train_match=r"_0[0-5]$", val_fraction=0.5))
    names = {t.name for t in data.train} | {t.name for t in data.val}
    assert names == {f"slow_{i:02d}" for i in range(6)}
    assert len(data.val) == 3 and len(data.train) == 3
    with pytest.raises(ConfigError, match="--train-match '\\^fcc' matches no trace"):
        load_data(PPOArgs(traces=str(directory), train_match="^fcc"))


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "ppo", "--help"])
    out = capsys.readouterr().out
    assert "--target-entropy" in out and "Dual-clip bound" in out
    run = tmp_path / "cli"
    assert (
        main(
            [
                "train",
                "a3c",
                "--out",
                str(run),
                "--steps",
                "1500",
                "--num-envs",
                "16",
                "--no-progress",
                "--entropy-schedule",
                "staged",
            ]
        )
        == 0
    )
    saved = json.loads((run / "args.json").read_text())
    assert saved["algorithm"] == "a3c" and saved["entropy_schedule"] == "staged"
    assert main(["train", "ppo", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "a3c", "--out", str(tmp_path / "bad"), "--entropy-schedule", "x"]) == 2


def test_teacher_parameters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def labels(*param: str) -> set[int]:
        args = ImitateArgs(out="unused", num_envs=8, teacher="bba", param=list(param))
        trainer = Imitate(args, DATA)
        _, taught, *_ = trainer._collect()
        return set(taught.tolist())

    # Every buffer is below a 100 s reservoir, and above a zero reservoir and 1 ms cushion.
    assert labels("bba.reservoir_s=100") == {0}
    assert labels("bba.reservoir_s=0", "bba.cushion_s=0.001") == {VIDEO.num_levels - 1}
    with pytest.raises(ConfigError, match="which --teacher does not run"):
        labels("robustmpc.horizon=3")
    with pytest.raises(ConfigError, match="no parameters"):
        Imitate(ImitateArgs(out="unused", param=["oracle.horizon=3"]), DATA)
    with pytest.raises(ConfigError, match="--beam-width must be 1 or more, got 0"):
        Imitate(ImitateArgs(out="unused", plans="beam", beam_width=0), DATA)
    with pytest.raises(ConfigError, match="--bandwidth-discount must be positive, got 0"):
        Imitate(ImitateArgs(out="unused", bandwidth_discount=0.0), DATA)
    with pytest.raises(ConfigError, match="--huber-delta must be positive, got 0"):
        Imitate(ImitateArgs(out="unused", huber_delta=0.0), DATA)
    with pytest.raises(ConfigError, match="--terminal-weight must be 0 or more, got -1.0"):
        Imitate(ImitateArgs(out="unused", terminal_weight=-1.0), DATA)
    with pytest.raises(ConfigError, match="6\\^15 plans"):
        Imitate(ImitateArgs(out="unused", plans="all"), DATA)
    out = tmp_path / "cli"
    common = ["train", "imitate", "--teacher", "bba", "--out", str(out), "--no-progress"]
    assert main([*common, "--param", "bba.reservoir_s=oops"]) == 2
    assert "reservoir_s='oops'" in capsys.readouterr().err
    assert main([*common, "--steps", "200", "--num-envs", "4", "--param", "bba.cushion_s=4"]) == 0
    assert json.loads((out / "args.json").read_text())["param"] == ["bba.cushion_s=4"]


def test_snapshots_for_learning_curves(tmp_path: Path) -> None:
    args = PPOArgs(
        out=str(tmp_path / "s"),
        minutes=0.05,
        snapshot_minutes=0.01,
        num_envs=16,
        val_every=1,
        progress=False,
    )
    train_loop(PPO(args, DATA))
    snaps = sorted((tmp_path / "s" / "snapshots").glob("*.pt"))
    assert len(snaps) >= 2
    minutes = [load_policy(s, VIDEO.num_levels).meta["minutes"] for s in snaps]
    assert minutes == sorted(minutes) and minutes[0] >= 0.01


def test_average_of_the_last_snapshots(tmp_path: Path) -> None:
    out = tmp_path / "avg"
    args = PPOArgs(
        out=str(out),
        minutes=0.05,
        snapshot_minutes=0.01,
        average_last=2,
        num_envs=16,
        val_every=1,
        progress=False,
    )
    summary = train_loop(PPO(args, DATA))
    snaps = snapshot_paths(out)
    assert len(snaps) >= 3
    averaged = load_policy(out / "averaged.pt", VIDEO.num_levels)
    assert averaged.meta["averaged_from"] == [s.name for s in snaps[-2:]]
    last_two = [load_policy(s, VIDEO.num_levels).actor.state_dict() for s in snaps[-2:]]
    for key, tensor in averaged.actor.state_dict().items():
        assert torch.allclose(tensor, (last_two[0][key] + last_two[1][key]) / 2)
    val = evaluate_actor(averaged.actor, DATA.val, VIDEO, QOE)
    assert val == pytest.approx(averaged.meta["val_qoe"]) == summary["averaged_val_qoe"]

    # A finished run resumed with another K: no training, its final.pt kept, a new average.
    final = (out / "final.pt").read_bytes()
    again = train_loop(PPO(replace(args, resume=True, average_last=3), DATA))
    assert again["iterations"] == summary["iterations"]
    assert (out / "final.pt").read_bytes() == final
    names = load_policy(out / "averaged.pt", VIDEO.num_levels).meta["averaged_from"]
    assert names == [s.name for s in snaps[-3:]]

    # A fresh run forced into the same directory averages its own snapshots only.
    short = train_loop(PPO(replace(args, minutes=0.02, force=True), DATA))
    kept = [float(s.stem[3:]) for s in snapshot_paths(out)]
    assert kept and max(kept) <= short["minutes"] < 0.03 < float(snaps[-1].stem[3:])

    with pytest.raises(ConfigError, match="give --snapshot-minutes"):
        train_loop(PPO(replace(args, snapshot_minutes=0.0), DATA))
    with pytest.raises(ConfigError, match="--average-last must be 0 or more, got -1"):
        train_loop(PPO(replace(args, average_last=-1), DATA))
    other = tmp_path / "other.pt"
    pensieve = replace(args, arch="pensieve")
    torch.save(policy_checkpoint(PPO(pensieve, DATA).actor, pensieve, "ppo", 6, {}), other)
    with pytest.raises(ConfigError, match="other.pt: architecture 'pensieve' differs"):
        averaged_weights([snaps[0], other], VIDEO.num_levels)


@pytest.mark.parametrize("plans", ["hold", "beam"])
def test_oracle_labels_are_the_least_regret_levels(plans: str) -> None:
    args = ImitateArgs(out="unused", num_envs=8, horizon=3, plans=plans, beam_width=2)
    trainer = Imitate(args, DATA)
    obs, labels, regret, _, _ = trainer._collect()
    assert len(obs) == len(labels) == len(regret) > 0
    assert torch.equal(regret.argmin(1), labels)
    assert (regret >= 0).all() and (regret.max(1).values > 0).any()


def test_validation_from_several_starts() -> None:
    trainer = PPO(PPOArgs(out="unused", num_envs=8, progress=False), DATA)
    one = evaluate_actor(trainer.actor, DATA.val, VIDEO, QOE)
    four = evaluate_actor(trainer.actor, DATA.val, VIDEO, QOE, starts=4)
    assert math.isfinite(four) and four != one
    # the first of the four starts is the trace's beginning: the single-start number is in it
    per_start = [evaluate_actor(trainer.actor, [t], VIDEO, QOE, starts=4) for t in DATA.val]
    assert float(np.mean(per_start)) == pytest.approx(four)


def test_sim_wall_trains_and_validates_in_the_emulations_timing() -> None:
    """``--sim wall``: the rollouts and the validation run SimConfig.faithful of the given
    delay, and the same policy validates differently than in Pensieve's timing."""
    wall = PPO(PPOArgs(out="unused", num_envs=8, progress=False, sim="wall", sim_delay_ms=40), DATA)
    config = wall.collector.sim.config
    assert config.timing == "wall" and config.rtt_s == config.decision_s == pytest.approx(0.105)
    pensieve = PPO(PPOArgs(out="unused", num_envs=8, progress=False), DATA)
    pensieve.actor.load_state_dict(wall.actor.state_dict())
    assert pensieve.collector.sim.config.timing == "pensieve"
    assert wall.validate() != pensieve.validate()
    with pytest.raises(ConfigError, match="--sim 'fast'"):
        check_args(PPOArgs(sim="fast"))


def save_split(root: Path) -> None:
    """DATA's training and validation traces as files in ROOT/train and ROOT/val."""
    for part, traces in (("train", DATA.train), ("val", DATA.val)):
        (root / part).mkdir()
        for trace in traces:
            save_pensieve(trace, root / part / trace.name)


def test_worker_processes_share_the_sessions_and_resume_exactly(tmp_path: Path) -> None:
    save_split(tmp_path)
    base = PPOArgs(
        traces=str(tmp_path / "train"),
        val_traces=str(tmp_path / "val"),
        out=str(tmp_path / "straight"),
        steps=6_000,
        num_envs=16,
        rollout_steps=24,
        val_every=2,
        workers=2,
        seed=4,
        anneal_lr=False,  # the resumed half below gets a longer budget
    )
    summary = train(PPO, base)
    # Both workers' sessions count: each iteration decides for all 16 of them.
    per_iteration = summary["env_steps"] / summary["iterations"]
    assert 0.9 * 16 * 24 < per_iteration <= 16 * 24
    state = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    assert len(state["collectors"]) == 2
    assert [len(c["prev_quality"]) for c in state["collectors"]] == [8, 8]
    half = replace(base, out=str(tmp_path / "resumed"), steps=3_000)
    train(PPO, half)
    train(PPO, replace(half, steps=6_000, resume=True))
    straight, resumed = _final_actor(tmp_path / "straight"), _final_actor(tmp_path / "resumed")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    with pytest.raises(ConfigError, match="--workers 2"):
        train(PPO, replace(half, workers=1, resume=True))


def test_oracle_hold_plans_are_a_subset_of_all_plans() -> None:
    trainer = Imitate(ImitateArgs(out="unused", num_envs=8, progress=False), DATA)
    sim, col = trainer.collector.sim, trainer.collector
    col.advance(np.full(8, 1), np.zeros(8, bool))  # past chunk 0, at different positions
    state = (sim.trace, sim.tau, sim.buffer_s, sim.chunk, col.prev_quality)
    config = sim.config
    _, every = oracle_levels(sim.bank, VIDEO, QOE, config, *state, horizon=3)
    _, held = oracle_levels(sim.bank, VIDEO, QOE, config, *state, horizon=3, hold=True)
    assert (held <= every + 1e-9).all() and (held < every - 1e-6).any()
    # A beam wide enough to keep every partial plan is the exhaustive search; a narrow one
    # finds no better plan than it.
    _, wide = oracle_levels(sim.bank, VIDEO, QOE, config, *state, 3, beam_width=36)
    np.testing.assert_allclose(wide, every)
    _, narrow = oracle_levels(sim.bank, VIDEO, QOE, config, *state, 3, beam_width=1)
    assert (narrow <= every + 1e-9).all()
    # Planning with less bandwidth than the trace has never finds a better plan.
    _, slow = oracle_levels(sim.bank, VIDEO, QOE, config, *state, 3, bandwidth_discount=0.5)
    assert (slow <= every + 1e-9).all() and (slow < every - 1e-6).any()
    # Buffer left at the horizon's end, capped, adds to every plan of a session still playing.
    _, valued = oracle_levels(sim.bank, VIDEO, QOE, config, *state, 3, False, 0.5, 6.0)
    gain = valued - every
    assert (gain >= -1e-9).all() and (gain <= 3.0 + 1e-9).all() and (gain > 0.1).any()
    _, one = oracle_levels(sim.bank, VIDEO, QOE, config, *state, horizon=1)
    _, one_held = oracle_levels(sim.bank, VIDEO, QOE, config, *state, horizon=1, hold=True)
    np.testing.assert_allclose(one, one_held)


@pytest.mark.parametrize("delta, taken", [(1.0, 1), (1e6, 0)])
def test_regress_loss_mean_or_median_regret(delta: float, taken: int) -> None:
    """Level 0 always regrets 1; level 1 regrets 0 on 9 futures in 10 and 20 on the tenth (mean
    2, median 0). The squared error (a large --huber-delta) learns the mean, so level 0."""
    args = ImitateArgs(
        out="unused", num_envs=8, loss="regress", huber_delta=delta, grad_steps=300, seed=1
    )
    trainer = Imitate(args, DATA)
    obs = torch.as_tensor(trainer.collector.sim.obs[:1]).repeat(1000, 1, 1)
    regret = torch.zeros(1000, VIDEO.num_levels)
    regret[:, 0], regret[900:, 1], regret[:, 2:] = 1.0, 20.0, 50.0
    trainer._store(obs, torch.zeros(1000, dtype=torch.long), regret)
    trainer.fit()
    assert trainer.actor(obs[:1]).argmax(-1).item() == taken


def test_imitation_anneals_its_step_size(tmp_path: Path) -> None:
    args = ImitateArgs(
        out=str(tmp_path / "a"), steps=3_000, num_envs=8, anneal_lr=True, horizon=2, progress=False
    )
    trainer = Imitate(args, DATA)
    train_loop(trainer)
    lr = trainer.optimizer.param_groups[0]["lr"]
    assert 0 <= lr < 0.5 * args.learning_rate


def test_student_rollouts_start_from_each_session_exactly() -> None:
    """Branch copies of every session, one chunk deep, value each level as the oracle does."""
    args = ImitateArgs(out="unused", num_envs=8, horizon=1, plans="student", progress=False)
    trainer = Imitate(args, DATA)
    sim, col = trainer.collector.sim, trainer.collector
    for _ in range(5):
        col.advance(np.full(8, 2), sim.chunk > 0)
    _, expected = oracle_levels(
        sim.bank, VIDEO, QOE, sim.config, sim.trace, sim.tau, sim.buffer_s, sim.chunk,
        col.prev_quality, horizon=1,
    )  # fmt: skip
    np.testing.assert_allclose(trainer._student_rollouts(), expected, atol=1e-9)
    deeper = replace(args, horizon=4)
    assert Imitate(deeper, DATA)._student_rollouts().shape == (8, VIDEO.num_levels)


def test_torchrun_gives_the_run_of_workers(tmp_path: Path) -> None:
    """PyTorch's launcher trains the weights of ``--workers 2``: two torchrun agents of one
    process each (``--nnodes 2``, c10d rendezvous: the multi-node path on one machine) train
    the first half, ``torchrun --standalone --nproc-per-node 2`` resumes from last.pt (read by
    rank 0 alone, each worker's share scattered) to the end."""
    save_split(tmp_path)
    base = PPOArgs(
        traces=str(tmp_path / "train"),
        val_traces=str(tmp_path / "val"),
        out=str(tmp_path / "workers"),
        steps=4_000,
        num_envs=16,
        rollout_steps=24,
        val_every=2,
        workers=2,
        threads=1,  # torchrun gives each process one thread
        seed=4,
        anneal_lr=False,
        progress=False,
    )
    train(PPO, base)
    flags = [
        *("--traces", base.traces, "--val-traces", base.val_traces),
        *("--num-envs", "16", "--rollout-steps", "24", "--val-every", "2", "--threads", "1"),
        *("--seed", "4", "--no-anneal-lr", "--no-progress"),
    ]
    torchrun = [
        str(Path(sys.executable).parent / "torchrun"),
        *("--standalone", "--nnodes", "1", "--nproc-per-node", "2"),
        *("-m", "streambed", "train", "ppo"),
    ]
    out = tmp_path / "torchrun"

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*torchrun, *flags, "--out", str(out), *extra],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    # The first half as two "machines": two torchrun agents meeting at a c10d rendezvous.
    port = free_port()
    agents = [
        subprocess.Popen(
            [
                str(Path(sys.executable).parent / "torchrun"),
                *("--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d"),
                *("--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "two-nodes"),
                *("-m", "streambed", "train", "ppo", *flags, "--out", str(out), "--steps", "2000"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for agent in agents:
        _, err = agent.communicate(timeout=300)
        assert agent.returncode == 0, err[-3000:]
    assert json.loads((out / "args.json").read_text())["workers"] == 2
    assert len(torch.load(out / "last.pt", weights_only=True)["collectors"]) == 2
    run("--steps", "4000", "--resume")
    workers, launched = _final_actor(tmp_path / "workers"), _final_actor(out)
    assert all(torch.equal(workers[k], launched[k]) for k in workers)
    refused = subprocess.run(
        [*torchrun, *flags, "--out", str(tmp_path / "x"), "--steps", "100", "--workers", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode != 0 and "--workers 3 under torchrun" in refused.stderr
