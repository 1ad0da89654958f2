"""Bandwidth augmentation (issue 23): sessions that play their trace at k times its bandwidth.

The batched simulator's per-session ``bandwidth_scale``, the collector's draws of it
(``--augment-fraction``, ``--bandwidth-scale``), the oracle planning with it, and the flags.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from test_simulator import RATE_1MBPS, _random_traces, small_video
from test_trainer import DATA, QOE, VIDEO

from streambed.abr_service.video import generate_video
from streambed.cli import main
from streambed.core.errors import ConfigError
from streambed.traces import constant_trace
from streambed.trainer.args import CommonArgs, check_args
from streambed.trainer.batched import BatchedSimulator
from streambed.trainer.imitate import Imitate, ImitateArgs, oracle_levels
from streambed.trainer.loop import train_loop
from streambed.trainer.ppo import PPO, PPOArgs
from streambed.trainer.rollout import Collector
from streambed.trainer.simulator import SimConfig

STEP_FIELDS = ("chunk_bytes", "delay_s", "trace_s", "sleep_s", "rebuffer_s", "buffer_s")


def test_a_doubled_bandwidth_halves_the_transfer_time() -> None:
    # Level 1 is 118,750 B: 1 s of a 1 Mbit/s trace at the payload factor 0.95.
    video = small_video([[59_375] * 3, [RATE_1MBPS] * 3, [2 * RATE_1MBPS] * 3])
    sim = BatchedSimulator([constant_trace(1.0, 100, "c")], video, 2, mode="test")
    sim.reset(bandwidth_scale=np.array([2.0, 1.0]))
    step = sim.step(np.array([1, 1]))
    np.testing.assert_allclose(step.trace_s, [0.5, 1.0], atol=1e-12)
    np.testing.assert_allclose(step.delay_s, [0.58, 1.08], atol=1e-12)  # + the 80 ms rtt
    np.testing.assert_allclose(step.rebuffer_s, [0.58, 1.08], atol=1e-12)
    np.testing.assert_allclose(sim.tau, [0.5, 1.0], atol=1e-12)  # the trace moved half as far
    assert step.chunk_bytes.tolist() == [RATE_1MBPS, RATE_1MBPS]  # the real size
    # Level 2 (2 s of trace at 1 Mbit/s) at k = 2: 1 s, so 1.08 s of delay; buffer 4 - 0.58 + 4.
    second = sim.step(np.array([2, 2]))
    np.testing.assert_allclose(second.delay_s, [1.08, 2.08], atol=1e-12)
    np.testing.assert_allclose(second.buffer_s, [4.0 - 1.08 + 4.0, 4.0 - 2.08 + 4.0], atol=1e-12)

    # What the policy sees at k = 2 over 1 Mbit/s is what it sees over a 2 Mbit/s trace.
    fast = BatchedSimulator([constant_trace(2.0, 100, "f")], video, 1, mode="test")
    for level in (1, 2):
        fast.step(np.array([level]))
    assert fast.obs is not None and sim.obs is not None
    np.testing.assert_allclose(sim.obs[0], fast.obs[0], atol=1e-12)
    np.testing.assert_allclose(sim.buffer_s[0], fast.buffer_s[0], atol=1e-12)


@pytest.mark.parametrize("timing", ["pensieve", "wall"])
def test_sessions_at_scale_one_are_bit_identical_to_no_augmentation(timing: str) -> None:
    traces = _random_traces(5, seed=21)
    video = generate_video(seed=4, num_chunks=12)
    config = SimConfig() if timing == "pensieve" else SimConfig.faithful(40.0, 0.1, jitter_s=0.005)
    n = 24
    scales = np.where(np.arange(n) % 2 == 0, 1.0, 3.0)
    plain = BatchedSimulator(traces, video, n, config, mode="train", rng=np.random.default_rng(7))
    mixed = BatchedSimulator(traces, video, n, config, mode="train", rng=np.random.default_rng(7))
    mixed.reset(bandwidth_scale=scales)
    plain.reset()
    assert plain.bandwidth_scale is None and mixed.bandwidth_scale is not None
    ones = scales == 1.0
    levels = np.random.default_rng(8).integers(video.num_levels, size=(40, n))
    differed = False
    for quality in levels:
        a, b = plain.step(quality), mixed.step(quality)
        for key in STEP_FIELDS:
            assert np.array_equal(getattr(a, key)[ones], getattr(b, key)[ones]), key
        assert plain.obs is not None and mixed.obs is not None
        assert np.array_equal(plain.obs[ones], mixed.obs[ones])
        differed |= bool((a.trace_s[~ones] != b.trace_s[~ones]).any())
        if a.end_of_video.any():
            plain.reset(a.end_of_video)
            mixed.reset(a.end_of_video, bandwidth_scale=scales[a.end_of_video])
    assert differed  # the k = 3 sessions did play another game
    # Sessions restarted without a scale play at 1, and the simulator is back on the fast path.
    mixed.reset(np.arange(n) % 2 == 1)
    assert mixed.bandwidth_scale is None
    with pytest.raises(ConfigError, match="bandwidth_scale must be positive"):
        mixed.reset(bandwidth_scale=0.0)


def _collector(fraction: float, scale: str, n: int, seed: int = 3) -> Collector:
    args = CommonArgs(augment_fraction=fraction, bandwidth_scale=scale, num_envs=n)
    return Collector(DATA, args, np.random.default_rng(seed), n)


def test_the_collector_augments_the_requested_share_within_the_range() -> None:
    n = 4000
    col = _collector(0.3, "0.5:20", n)
    k = col.sim.bandwidth_scale
    assert k is not None
    augmented = k != 1.0
    # Binomial(4000, 0.3): sd 29 sessions, so 0.3 +- 0.03 is over four sd.
    assert abs(augmented.mean() - 0.3) < 0.03
    assert k[augmented].min() >= 0.5 and k[augmented].max() <= 20
    # Log-uniform: half of them below the geometric middle sqrt(0.5 * 20) = sqrt(10).
    below = (k[augmented] < math.sqrt(10)).mean()
    assert abs(below - 0.5) < 0.06  # ~1200 draws: sd 0.014
    # Uniform in log k over [log 0.5, log 20]: its mean log is log sqrt(10) = 1.1513.
    assert abs(np.log(k[augmented]).mean() - math.log(math.sqrt(10))) < 0.1  # sd 0.03

    # Sessions that end draw again; the others keep their factor.
    before = k.copy()
    ended = np.zeros(n, bool)
    ended[:2000] = True
    col.restart(ended)
    after = col.sim.bandwidth_scale
    assert after is not None
    assert np.array_equal(after[2000:], before[2000:])
    assert not np.array_equal(after[:2000], before[:2000])
    assert abs((after[:2000] != 1.0).mean() - 0.3) < 0.05

    # Every session, and one factor when LOW = HIGH.
    fixed = _collector(1.0, "2.5:2.5", 64).sim.bandwidth_scale
    assert fixed is not None and np.array_equal(fixed, np.full(64, 2.5))


def test_no_augmentation_draws_nothing_and_changes_nothing() -> None:
    col = _collector(0.0, "0.5:20", 32, seed=9)
    plain = BatchedSimulator(
        DATA.train, VIDEO, 32, col.sim.config, mode="train", rng=np.random.default_rng(9)
    )
    assert col.sim.bandwidth_scale is None
    assert col.sim.rng.bit_generator.state == plain.rng.bit_generator.state
    assert np.array_equal(col.sim.trace, plain.trace) and np.array_equal(col.sim.tau, plain.tau)


def test_sessions_ending_in_a_rollout_draw_their_factor_and_resume_keeps_it() -> None:
    col = _collector(0.5, "0.3:30", 16)
    first = col.sim.bandwidth_scale
    assert first is not None
    first = first.copy()
    for _ in range(VIDEO.num_chunks):  # every session plays its video to the end
        col.advance(np.full(16, 1), col.sim.chunk > 0)
    assert (col.sim.chunk == 0).all()  # and has restarted
    assert col.sim.bandwidth_scale is not None
    assert not np.array_equal(col.sim.bandwidth_scale, first)
    saved = col.state()
    other = _collector(0.5, "0.3:30", 16, seed=77)
    other.load_state(saved)
    assert np.array_equal(other.sim.bandwidth_scale, col.sim.bandwidth_scale)  # type: ignore[arg-type]
    bad = {**saved, "bandwidth_scale": torch.zeros(16)}
    with pytest.raises(ValueError, match="bandwidth scales"):
        other.load_state(bad)


def test_validation_is_never_augmented() -> None:
    base = PPOArgs(out="unused", num_envs=8, seed=4, progress=False)
    plain = PPO(base, DATA)
    augmented = PPO(replace(base, augment_fraction=1.0, bandwidth_scale="10:10"), DATA)
    assert augmented.collector.sim.bandwidth_scale is not None
    assert plain.validate() == augmented.validate()


def test_the_oracle_plans_with_each_sessions_augmented_bandwidth() -> None:
    args = ImitateArgs(
        out="unused",
        num_envs=8,
        horizon=1,
        plans="student",
        progress=False,
        augment_fraction=0.5,
        bandwidth_scale="0.3:30",
    )
    trainer = Imitate(args, DATA)
    sim, col = trainer.collector.sim, trainer.collector
    for _ in range(5):
        col.advance(np.full(8, 2), sim.chunk > 0)
    scale = sim.bandwidth_scale
    assert scale is not None and (scale != 1.0).any() and (scale == 1.0).any()
    _, expected = oracle_levels(
        sim.bank, VIDEO, QOE, sim.config, sim.trace, sim.tau, sim.buffer_s, sim.chunk,
        col.prev_quality, horizon=1, bandwidth_discount=scale,
    )  # fmt: skip
    # The student's branch copies play at their session's factor, as the oracle plans them.
    np.testing.assert_allclose(trainer._student_rollouts(), expected, atol=1e-9)
    idx = np.arange(8)
    np.testing.assert_allclose(trainer._planned_bandwidth(idx), args.bandwidth_discount * scale)
    # One session alone with a scalar factor plans as it does in the batch.
    j = int(np.flatnonzero(scale != 1.0)[0])
    _, alone = oracle_levels(
        sim.bank, VIDEO, QOE, sim.config, sim.trace[j : j + 1], sim.tau[j : j + 1],
        sim.buffer_s[j : j + 1], sim.chunk[j : j + 1], col.prev_quality[j : j + 1],
        horizon=1, bandwidth_discount=float(scale[j]),
    )  # fmt: skip
    np.testing.assert_allclose(alone[0], expected[j], atol=1e-12)


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--bandwidth-scale", "5:1", "--bandwidth-scale '5:1': LOW must not exceed HIGH"),
        ("--bandwidth-scale", "fast", "--bandwidth-scale 'fast': expected LOW:HIGH"),
        ("--bandwidth-scale", "1:2:3", "--bandwidth-scale '1:2:3': expected LOW:HIGH"),
        ("--bandwidth-scale", "0:5", "--bandwidth-scale '0:5': both ends must be in"),
        ("--bandwidth-scale", "nan:5", "--bandwidth-scale 'nan:5': both ends must be in"),
        ("--augment-fraction", "1.5", "--augment-fraction must be in [0, 1], got 1.5"),
    ],
)
def test_bad_augmentation_flags_are_one_line_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, says: str
) -> None:
    assert_one_line_train_error(tmp_path, capsys, [flag, value], says)
    with pytest.raises(ConfigError, match=flag):
        check_args(CommonArgs(**{flag[2:].replace("-", "_"): _typed(flag, value)}))


def assert_one_line_train_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], says: str
) -> None:
    """``streambed train ppo`` with ``flags`` exits 2 with one error line holding ``says``,
    and writes no run."""
    out = tmp_path / "run"
    assert main(["train", "ppo", "--out", str(out), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and says in lines[0], err
    assert not out.exists()


def _typed(flag: str, value: str) -> str | float:
    return float(value) if flag == "--augment-fraction" else value


@pytest.mark.parametrize("algorithm", ["imitate", "ppo"])
def test_augmented_training_runs(tmp_path: Path, algorithm: str) -> None:
    out = tmp_path / algorithm
    argv = ["train", algorithm, "--out", str(out), "--minutes", "0.2", "--no-progress"]
    argv += ["--num-envs", "16", "--augment-fraction", "0.5", "--bandwidth-scale", "0.3:30"]
    assert main(argv) == 0
    saved = json.loads((out / "args.json").read_text())
    assert saved["augment_fraction"] == 0.5 and saved["bandwidth_scale"] == "0.3:30"
    assert (out / "best.pt").is_file()
    state = torch.load(out / "last.pt", weights_only=True)
    scale = state["collectors"][0]["bandwidth_scale"]
    assert scale.shape == (16,) and (scale > 0).all()


def test_an_augmented_run_resumes_exactly(tmp_path: Path) -> None:
    base = PPOArgs(
        out=str(tmp_path / "straight"),
        steps=3_000,
        num_envs=16,
        val_every=2,
        progress=False,
        seed=5,
        anneal_lr=False,
        augment_fraction=0.5,
    )
    train_loop(PPO(base, DATA))
    half = replace(base, out=str(tmp_path / "resumed"), steps=1_500)
    train_loop(PPO(half, DATA))
    train_loop(PPO(replace(half, steps=3_000, resume=True), DATA))
    straight = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    a, b = straight["modules"]["actor"], resumed["modules"]["actor"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(
        straight["collectors"][0]["bandwidth_scale"], resumed["collectors"][0]["bandwidth_scale"]
    )
