"""Recipe v4's two trainer flags (issue 23): per-chunk bandwidth jitter and PPO's anchor.

``--jitter-fraction``/``--jitter-cv``: sessions whose bandwidth is multiplied, chunk by chunk,
by a fresh log-normal factor of mean 1. ``--anchor-coef``: PPO pays KL(warm start || policy).
"""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_augment import assert_one_line_train_error
from test_trainer import DATA, VIDEO

from streambed.traces import constant_trace
from streambed.trainer.args import CommonArgs
from streambed.trainer.data import Data
from streambed.trainer.loop import train_loop
from streambed.trainer.ppo import PPO, PPOArgs
from streambed.trainer.rollout import Collector


def _collector(fraction: float, cv: float, n: int, data: Data = DATA, seed: int = 3) -> Collector:
    args = CommonArgs(jitter_fraction=fraction, jitter_cv=cv, num_envs=n)
    return Collector(data, args, np.random.default_rng(seed), n)


def test_jittered_sessions_meet_a_fresh_mean_one_factor_every_chunk() -> None:
    # One constant 1 Mbit/s link: every unjittered session's chunk takes the same trace time T,
    # so a jittered one's factor is T / its own trace time.
    link = Data(
        train=[constant_trace(1.0, 1000, "c")], val=[constant_trace(1.0, 1000, "v")], video=VIDEO
    )
    n, cv = 8000, 0.5
    col = _collector(0.5, cv, n, data=link)
    jittered = col.jitter_sigma > 0
    assert abs(jittered.mean() - 0.5) < 0.03  # Binomial(8000, 0.5): sd 0.0056
    np.testing.assert_allclose(col.jitter_sigma[jittered], math.sqrt(math.log(1 + cv**2)))
    factors = []
    for _ in range(2):
        step, _, _ = col.advance(np.full(n, 2), np.ones(n, bool))
        plain = step.trace_s[~jittered]
        np.testing.assert_allclose(plain, plain[0], rtol=1e-12)
        f = plain[0] / step.trace_s[jittered]
        assert abs(f.mean() - 1.0) < 0.04  # mean 1: sd 0.5 / sqrt(4000) = 0.008
        assert abs(f.std() / f.mean() - cv) < 0.06  # sd of the estimate about 0.015
        factors.append(f)
        assert col.sim.bandwidth_scale is None  # the factor held for that chunk only
    assert abs(np.corrcoef(factors[0], factors[1])[0, 1]) < 0.1  # a fresh draw per chunk


def test_jitter_is_drawn_per_session_start_and_resume_keeps_it() -> None:
    col = _collector(0.5, 1.0, 16)
    first = col.jitter_sigma.copy()
    assert (first > 0).any() and (first == 0).any()
    for _ in range(VIDEO.num_chunks):  # every session plays its video to the end
        col.advance(np.full(16, 1), col.sim.chunk > 0)
    assert (col.sim.chunk == 0).all()
    assert not np.array_equal(col.jitter_sigma, first)  # restarted sessions drew again
    saved = col.state()
    other = _collector(0.5, 1.0, 16, seed=77)
    other.load_state(saved)
    assert np.array_equal(other.jitter_sigma, col.jitter_sigma)
    step_a, _, _ = col.advance(np.full(16, 3), np.ones(16, bool))
    step_b, _, _ = other.advance(np.full(16, 3), np.ones(16, bool))
    assert np.array_equal(step_a.delay_s, step_b.delay_s)  # the same draws after resuming
    with pytest.raises(ValueError, match="jitter sigmas"):
        other.load_state({**saved, "jitter_sigma": -torch.ones(16)})
    older = {k: v for k, v in saved.items() if k != "jitter_sigma"}
    other.load_state(older)  # a run saved before jitter resumes without it
    assert not other.jitter_sigma.any()


def test_no_jitter_draws_nothing() -> None:
    plain, off = _collector(0.0, 0.5, 32, seed=9), _collector(0.0, 3.0, 32, seed=9)
    for _ in range(5):
        a, _, _ = plain.advance(np.full(32, 2), np.ones(32, bool))
        b, _, _ = off.advance(np.full(32, 2), np.ones(32, bool))
        assert np.array_equal(a.delay_s, b.delay_s)
    assert plain.sim.rng.bit_generator.state == off.sim.rng.bit_generator.state


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--jitter-fraction", "1.5", "--jitter-fraction must be in [0, 1], got 1.5"),
        ("--jitter-cv", "9", "--jitter-cv must be in [0, 5], got 9.0"),
        ("--anchor-coef", "-1", "--anchor-coef must be 0 or more, got -1.0"),
        ("--anchor-coef", "0.5", "--anchor-coef needs --init-from"),
    ],
)
def test_bad_flags_are_one_line_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, says: str
) -> None:
    assert_one_line_train_error(tmp_path, capsys, [flag, value], says)


def _kl_from(anchor: torch.nn.Module, actor: torch.nn.Module, obs: torch.Tensor) -> float:
    with torch.no_grad():
        p = torch.log_softmax(anchor(obs), -1)
        q = torch.log_softmax(actor(obs), -1)
        return float((p.exp() * (p - q)).sum(-1).mean())


def test_the_anchor_holds_ppo_near_its_warm_start(tmp_path: Path) -> None:
    base = PPOArgs(
        out=str(tmp_path / "start"), steps=3_000, num_envs=16, progress=False, seed=2,
        val_every=1000, learning_rate=3e-3, critic_warmup=0, anneal_lr=False,
    )  # fmt: skip
    train_loop(PPO(base, DATA))
    start = str(tmp_path / "start" / "final.pt")
    runs = {}
    for coef in (0.0, 5.0):
        args = replace(base, out=str(tmp_path / f"a{coef}"), init_from=start, anchor_coef=coef)
        trainer = PPO(args, DATA)
        if coef:
            assert trainer.anchor is not None
            assert all(not p.requires_grad for p in trainer.anchor.parameters())
        else:
            assert trainer.anchor is None
        train_loop(trainer)
        runs[coef] = trainer
    anchored = runs[5.0]
    assert anchored.anchor is not None
    obs = anchored.collector.collect(anchored.actor, None).obs.flatten(0, 1)
    free_kl = _kl_from(anchored.anchor, runs[0.0].actor, obs)
    held_kl = _kl_from(anchored.anchor, anchored.actor, obs)
    assert held_kl < 0.5 * free_kl, (held_kl, free_kl)
    rows = list(csv.DictReader((tmp_path / "a5.0" / "metrics.csv").open()))
    assert any(row["name"] == "losses/anchor_kl" for row in rows)
    assert not any(
        row["name"] == "losses/anchor_kl"
        for row in csv.DictReader((tmp_path / "a0.0" / "metrics.csv").open())
    )
