"""Tests of the classic ABR algorithms against hand-computed decisions and a brute-force MPC."""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from streambed.abr_service.algorithms import (
    ALGORITHMS,
    ChunkFeedback,
    PlayerState,
    algorithm_info,
    make_algorithm,
)
from streambed.abr_service.algorithms.base import ParamError, parse_params
from streambed.abr_service.algorithms.bola import BOLAParams
from streambed.abr_service.algorithms.buffer_based import BBAParams
from streambed.abr_service.algorithms.learned import LearnedParams
from streambed.abr_service.algorithms.mpc import MPC, MPCParams, RobustMPC
from streambed.abr_service.algorithms.rate_based import RateBasedParams
from streambed.abr_service.qoe import make_qoe
from streambed.abr_service.video import Video, generate_video, load_video
from streambed.core.errors import ConfigError, VideoError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ENVIVIO = SHARED / "data" / "video" / "envivio"


@pytest.fixture(scope="module")
def video() -> Video:
    """Pensieve's envivio video when the shared data is there, else a generated 6-level one."""
    if ENVIVIO.is_dir():
        return load_video(ENVIVIO)
    return generate_video(seed=0)


def feedback(
    index: int, bytes_per_s: float, buffer_s: float = 10.0, quality: int = 1
) -> ChunkFeedback:
    """A chunk that measured ``bytes_per_s`` (its size over a 1 s download)."""
    return ChunkFeedback(
        chunk_index=index,
        quality=quality,
        chunk_bytes=int(bytes_per_s),
        download_s=1.0,
        buffer_s=buffer_s,
    )


def make_mpc(name: str, video: Video, params: dict[str, str] | None = None) -> MPC:
    algo = make_algorithm(name, video, params)
    assert isinstance(algo, MPC)
    return algo


def state(next_chunk: int, buffer_s: float, last_quality: int = 1) -> PlayerState:
    return PlayerState(next_chunk=next_chunk, buffer_s=buffer_s, last_quality=last_quality)


# ------------------------------------------------------------------------------------------
# BBA


@pytest.mark.parametrize(
    ("buffer_s", "level"),
    [
        (0.0, 0),  # below the 5 s reservoir
        (4.99, 0),
        (5.0, 0),  # int(5 * (5 - 5) / 10) = 0
        (10.0, 2),  # int(5 * (10 - 5) / 10) = int(2.5) = 2
        (14.99, 4),  # int(5 * 9.99 / 10) = int(4.995) = 4
        (15.0, 5),  # reservoir + cushion reached
        (30.0, 5),
    ],
)
def test_bba_levels(video: Video, buffer_s: float, level: int) -> None:
    algo = make_algorithm("bba", video)
    assert algo.select(state(3, buffer_s)) == level


def test_bba_params() -> None:
    video = generate_video(seed=0)
    algo = make_algorithm("bba", video, {"reservoir_s": "8", "cushion_s": "20"})
    assert algo.params == BBAParams(reservoir_s=8.0, cushion_s=20.0)
    assert algo.select(state(3, 7.9)) == 0
    assert algo.select(state(3, 18.0)) == 2  # int(5 * (18 - 8) / 20) = int(2.5) = 2
    assert algo.select(state(3, 28.0)) == 5


# ------------------------------------------------------------------------------------------
# Rate-based


def test_rate_based_uses_harmonic_mean_of_last_five(video: Video) -> None:
    algo = make_algorithm("rb", video)
    # No measurement yet: the lowest level.
    assert algo.select(state(1, 0.0)) == 0
    # A very slow old chunk (100 B/s) that must fall out of the 5-chunk window.
    algo.on_chunk(ChunkFeedback(0, 1, 1000, 10.0, 4.0))
    for i, rate in enumerate([100_000, 200_000, 400_000, 200_000, 100_000], start=1):
        algo.on_chunk(feedback(i, rate))
    # Harmonic mean = 5 / (1/1e5 + 1/2e5 + 1/4e5 + 1/2e5 + 1/1e5) = 5 / 3.25e-5 = 153846.15 B/s
    # = 153846.15 * 8 / 1000 = 1230.77 kbps -> the highest bitrate <= it is 1200 (level 2).
    assert algo.throughputs_bps(5).tolist() == [100_000, 200_000, 400_000, 200_000, 100_000]
    assert algo.select(state(6, 10.0)) == 2


def test_rate_based_safety_and_window(video: Video) -> None:
    algo = make_algorithm("rb", video, {"safety": "0.9"})
    assert algo.params == RateBasedParams(window=5, safety=0.9)
    for i, rate in enumerate([100_000, 200_000, 400_000, 200_000, 100_000]):
        algo.on_chunk(feedback(i, rate))
    # 1230.77 kbps * 0.9 = 1107.7 kbps -> 750 kbps (level 1).
    assert algo.select(state(5, 10.0)) == 1
    # Window 1: only the last throughput, 100000 B/s = 800 kbps -> level 1.
    algo = make_algorithm("rb", video, {"window": "1"})
    for i, rate in enumerate([1_000_000, 100_000]):
        algo.on_chunk(feedback(i, rate))
    assert algo.select(state(2, 10.0)) == 1
    # 1e6 B/s = 8000 kbps fits the top level.
    algo.on_chunk(feedback(2, 1_000_000))
    assert algo.select(state(3, 10.0)) == 5


# ------------------------------------------------------------------------------------------
# BOLA


def test_bola_extremes_and_monotone(video: Video) -> None:
    algo = make_algorithm("bola", video)
    p = BOLAParams()
    assert algo.select(state(3, 0.0)) == 0
    # The lowest level is kept up to the minimum buffer.
    assert all(algo.select(state(3, b)) == 0 for b in np.linspace(0, p.min_buffer_s, 21))
    for b in (p.buffer_target_s, p.buffer_target_s + 0.5, 40.0, 60.0):
        assert algo.select(state(3, b)) == video.num_levels - 1
    levels = [algo.select(state(3, b)) for b in np.arange(0.0, 40.0, 0.1)]
    assert all(a <= b for a, b in itertools.pairwise(levels))
    assert set(levels) == set(range(video.num_levels))  # every level is used on the way up


def test_bola_custom_target(video: Video) -> None:
    algo = make_algorithm("bola", video, {"min_buffer_s": "5", "buffer_target_s": "12"})
    assert algo.select(state(3, 0.0)) == 0
    assert algo.select(state(3, 12.0)) == video.num_levels - 1
    assert algo.select(state(3, 11.0)) < video.num_levels - 1


# ------------------------------------------------------------------------------------------
# MPC


@pytest.mark.parametrize("name", ["fastmpc", "robustmpc"])
def test_mpc_extremes(video: Video, name: str) -> None:
    fast = make_algorithm(name, video)
    for i in range(5):
        fast.on_chunk(feedback(i, 1e9, buffer_s=10.0))  # 8 Tbit/s: no stall possible
    assert fast.select(state(5, 10.0, last_quality=1)) == video.num_levels - 1
    slow = make_algorithm(name, video)
    for i in range(5):
        slow.on_chunk(feedback(i, 1000, buffer_s=0.0))  # 8 kbit/s
    assert slow.select(state(5, 0.0, last_quality=3)) == 0


def test_mpc_without_measurement_keeps_last_level(video: Video) -> None:
    algo = make_algorithm("robustmpc", video)
    assert algo.select(state(1, 4.0, last_quality=3)) == 3


def test_robust_prediction_by_hand(video: Video) -> None:
    robust = make_mpc("robustmpc", video)
    fast = make_mpc("fastmpc", video)
    rates = [100_000, 400_000, 200_000, 200_000, 200_000, 200_000, 200_000]
    # Estimates after each chunk (harmonic mean of the last <= 5 throughputs) and the
    # relative error of the previous estimate against each new measurement:
    #   1: est 1e5                                        err 0 (no estimate yet)
    #   2: est 2 / (1e-5 + 2.5e-6) = 160000               err |1e5 - 4e5| / 4e5 = 0.75
    #   3: est 3 / 1.75e-5 = 171428.57                    err |160000 - 2e5| / 2e5 = 0.2
    #   4: est 4 / 2.25e-5 = 177777.78                    err 28571.43 / 2e5 = 0.142857
    #   5: est 5 / 2.75e-5 = 181818.18                    err 22222.22 / 2e5 = 0.111111
    #   6: est 5 / (2.5e-6 + 4 * 5e-6) = 222222.22        err 18181.82 / 2e5 = 0.090909
    #   7: est 2e5 (five times 2e5)                       err 22222.22 / 2e5 = 0.111111
    for i, rate in enumerate(rates[:6]):
        robust.on_chunk(feedback(i, rate))
        fast.on_chunk(feedback(i, rate))
    # After 6: max error of the last 5 = 0.75 -> 222222.22 / 1.75 = 126984.13
    assert robust.predicted_bps() == pytest.approx(126984.127, rel=1e-6)
    assert fast.predicted_bps() == pytest.approx(222222.222, rel=1e-6)
    robust.on_chunk(feedback(6, rates[6]))
    fast.on_chunk(feedback(6, rates[6]))
    # After 7: the 0.75 error left the window; max of [0.2, 0.1429, 0.1111, 0.0909, 0.1111]
    # = 0.2 -> 2e5 / 1.2 = 166666.67
    assert robust.predicted_bps() == pytest.approx(166666.667, rel=1e-6)
    assert fast.predicted_bps() == pytest.approx(200000.0, rel=1e-9)


def test_mpc_tie_goes_to_last_plan() -> None:
    # Ladder 1, 2, 4 Mbit/s: with no stall, one chunk left and last level 0, every level
    # scores u - |u - 1| = 1 exactly (1 - 0, 2 - 1, 4 - 3); Pensieve's loop keeps the last.
    video = Video(
        "tie", (1000, 2000, 4000), 4.0, np.array([[10, 10, 10], [20, 20, 20], [40, 40, 40]]), 2
    )
    algo = make_algorithm("fastmpc", video)
    algo.on_chunk(feedback(0, 1e9, quality=0))
    assert algo.select(state(1, 30.0, last_quality=0)) == 2


def brute_force_mpc(
    video: Video, prediction_bps: float, st: PlayerState, horizon: int, qoe_name: str = "lin"
) -> int:
    """Pensieve's MPC loop: every plan in enumeration order, ``>=`` keeps the last best."""
    metric = make_qoe(qoe_name, video)
    horizon = min(horizon, video.num_chunks - st.next_chunk)
    best_reward = -float("inf")
    best_plan: tuple[int, ...] = ()
    for plan in itertools.product(range(video.num_levels), repeat=horizon):
        buffer = st.buffer_s
        rebuffer = 0.0
        quality_sum = 0.0
        smoothness = 0.0
        last = st.last_quality
        last_u = float(metric.utility(last, max(st.next_chunk - 1, 0)))
        for position, level in enumerate(plan):
            size = float(video.chunk_bytes[level, st.next_chunk + position])
            download = size / prediction_bps
            if buffer < download:
                rebuffer += download - buffer
                buffer = 0.0
            else:
                buffer -= download
            buffer += video.chunk_s
            u = float(metric.utility(level, st.next_chunk + position))
            quality_sum += metric.scale * u
            smoothness += float(metric.change_penalty(np.asarray(u - last_u)))
            last_u = u
        reward = quality_sum - metric.rebuffer_penalty * rebuffer - smoothness
        if reward >= best_reward:
            best_reward = reward
            best_plan = plan
    return best_plan[0]


@pytest.mark.parametrize("algorithm", ["fastmpc", "robustmpc"])
def test_vectorised_plan_matches_brute_force(video: Video, algorithm: str) -> None:
    rng = np.random.default_rng(2024)
    checked = 0
    for _ in range(8):
        algo = make_mpc(algorithm, video)
        next_chunk = int(rng.integers(1, video.num_chunks))  # near the end: shorter horizon
        for i in range(min(next_chunk, 6)):
            # Throughputs of 50 kB/s to 1 MB/s (0.4 to 8 Mbit/s): every level is plausible.
            algo.on_chunk(feedback(i, float(rng.uniform(50_000, 1_000_000))))
        st = state(next_chunk, float(rng.uniform(0, 20)), int(rng.integers(video.num_levels)))
        expected = brute_force_mpc(video, algo.predicted_bps(), st, 5)
        assert algo.select(st) == expected, (st, algo.predicted_bps())
        checked += 1
    # A state near the end of the video plans over the 2 chunks left.
    algo = make_mpc(algorithm, video)
    algo.on_chunk(feedback(0, 300_000))
    st = state(video.num_chunks - 2, 3.0, 4)
    assert algo.select(st) == brute_force_mpc(video, algo.predicted_bps(), st, 5)
    assert checked == 8


def test_vectorised_plan_matches_brute_force_hd_metric(video: Video) -> None:
    rng = np.random.default_rng(7)
    for _ in range(2):
        algo = make_mpc("robustmpc", video, {"qoe": "hd"})
        for i in range(5):
            algo.on_chunk(feedback(i, float(rng.uniform(50_000, 800_000))))
        st = state(int(rng.integers(5, 40)), float(rng.uniform(0, 15)), int(rng.integers(6)))
        assert algo.select(st) == brute_force_mpc(video, algo.predicted_bps(), st, 5, "hd")


def measured_video(video: Video, seed: int = 3) -> Video:
    """``video`` with made-up per-chunk SSIM (dB) and VMAF that grow with the level."""
    rng = np.random.default_rng(seed)
    shape = (video.num_levels, video.num_chunks)
    ssim = np.cumsum(rng.uniform(0.5, 4.0, shape), axis=0) + 8.0
    vmaf = np.minimum(np.cumsum(rng.uniform(2.0, 20.0, shape), axis=0), 100.0)
    return dataclasses.replace(video, ssim_db=ssim, vmaf=vmaf)


@pytest.mark.parametrize("qoe", ["ssim", "vmaf"])
def test_vectorised_plan_matches_brute_force_measured_metrics(video: Video, qoe: str) -> None:
    """Per-chunk utilities (Puffer's SSIM, Comyco's asymmetric VMAF) plan like the loop."""
    measured = measured_video(video)
    rng = np.random.default_rng(11)
    for _ in range(4):
        algo = make_mpc("robustmpc", measured, {"qoe": qoe})
        for i in range(5):
            algo.on_chunk(feedback(i, float(rng.uniform(50_000, 800_000))))
        st = state(int(rng.integers(1, 44)), float(rng.uniform(0, 15)), int(rng.integers(6)))
        assert algo.select(st) == brute_force_mpc(measured, algo.predicted_bps(), st, 5, qoe)


def test_measured_metric_refused_without_measurements(video: Video) -> None:
    with pytest.raises(VideoError, match="no per-segment"):
        make_mpc("robustmpc", video, {"qoe": "ssim"})


def test_robustmpc_decision_time(video: Video) -> None:
    algo = make_algorithm("robustmpc", video)
    rng = np.random.default_rng(1)
    for i in range(5):
        algo.on_chunk(feedback(i, float(rng.uniform(100_000, 600_000))))
    algo.select(state(5, 8.0))  # warm the plan cache
    times = []
    for k in range(200):
        st = state(5 + k % 40, float(rng.uniform(0, 20)), k % 6)
        started = time.perf_counter()
        algo.select(st)
        times.append(time.perf_counter() - started)
    # Target < 1 ms median; a generous bound so that a loaded CI machine does not flake.
    assert float(np.median(times)) * 1000 < 2.0


# ------------------------------------------------------------------------------------------
# Registry and parameters


def test_registry_names() -> None:
    assert set(ALGORITHMS) == {"bba", "rb", "bola", "fastmpc", "robustmpc", "ppo"}
    assert isinstance(make_algorithm("robustmpc", generate_video(seed=0)), RobustMPC)
    assert isinstance(make_algorithm("fastmpc", generate_video(seed=0)), MPC)


def test_unknown_algorithm_lists_known_names() -> None:
    with pytest.raises(ConfigError) as info:
        make_algorithm("pensieve", generate_video(seed=0))
    message = str(info.value)
    assert "'pensieve'" in message
    assert "bba, bola, fastmpc, ppo, rb, robustmpc" in message


def test_parse_params() -> None:
    assert parse_params(MPCParams, None) == MPCParams()
    assert parse_params(MPCParams, {"horizon": "3", "qoe": "log"}) == MPCParams(
        horizon=3, qoe="log"
    )
    assert parse_params(BOLAParams, {"use_chunk_sizes": "true"}).use_chunk_sizes is True
    assert parse_params(BOLAParams, {"use_chunk_sizes": "0"}).use_chunk_sizes is False
    with pytest.raises(ConfigError) as info:
        parse_params(BBAParams, {"reservoir": "8"})
    assert "'reservoir'" in str(info.value)
    assert "reservoir_s, cushion_s" in str(info.value)
    with pytest.raises(ConfigError) as info:
        parse_params(BBAParams, {"cushion_s": "ten"})
    assert "cushion_s" in str(info.value)
    assert "'ten'" in str(info.value)
    with pytest.raises(ConfigError, match="horizon"):
        make_algorithm("robustmpc", generate_video(seed=0), {"horizon": "2.5"})


@pytest.mark.parametrize(
    ("cls", "key", "raw", "valid"),
    [
        (MPCParams, "horizon", 50, "an integer in [1, 5]"),  # 6^50 plans: the 23 GB request
        (MPCParams, "horizon", "8", "an integer in [1, 5]"),
        (MPCParams, "horizon", 0, "an integer in [1, 5]"),
        (MPCParams, "qoe", "lol", "one of lin, log, hd, ssim, vmaf"),
        (RateBasedParams, "safety", "inf", "a number in [0.1, 10.0]"),
        (RateBasedParams, "safety", "nan", "a number in [0.1, 10.0]"),
        (RateBasedParams, "safety", "1e309", "a number in [0.1, 10.0]"),
        (BBAParams, "reservoir_s", "-100", "a number in [0.0, 3600.0]"),
        (BOLAParams, "use_chunk_sizes", "maybe", "a boolean (true or false)"),
    ],
)
def test_param_out_of_range_named(cls: type, key: str, raw: object, valid: str) -> None:
    with pytest.raises(ParamError) as info:
        parse_params(cls, {key: raw}, owner="algo")
    assert (info.value.param, info.value.value, info.value.valid) == (key, raw, valid)
    message = str(info.value)
    assert message.startswith(f"parameter algo.{key}={raw!r}: ") and "\n" not in message
    assert message.endswith(f"valid: {valid}")


def test_json_params_are_not_coerced() -> None:
    strict = {"from_text": False}
    assert parse_params(MPCParams, {"horizon": 3}, **strict).horizon == 3
    assert parse_params(MPCParams, {"horizon": 3.0}, **strict).horizon == 3  # integral: an int
    assert parse_params(BBAParams, {"reservoir_s": 8}, **strict).reservoir_s == 8.0
    for cls, key, raw in [
        (MPCParams, "horizon", "3"),  # a string is not a number in JSON
        (MPCParams, "horizon", True),  # nor a boolean
        (MPCParams, "horizon", 2.5),
        (BBAParams, "reservoir_s", "8"),
        (BBAParams, "reservoir_s", False),
        (BBAParams, "reservoir_s", float("nan")),
        (BBAParams, "reservoir_s", 10**400),  # beyond a float
        (BOLAParams, "use_chunk_sizes", 1),
        (BOLAParams, "use_chunk_sizes", "true"),
        (MPCParams, "qoe", 1),
    ]:
        with pytest.raises(ParamError) as info:
            parse_params(cls, {key: raw}, **strict)
        assert info.value.param == key


def test_param_combination_and_huge_values_in_one_line() -> None:
    with pytest.raises(ConfigError, match="must exceed"):
        parse_params(BOLAParams, {"min_buffer_s": "30"})  # above the default target
    assert parse_params(BOLAParams, {"min_buffer_s": "30", "buffer_target_s": "40"})
    with pytest.raises(ParamError) as info:
        parse_params(MPCParams, {"window": 10**5000}, from_text=False)  # no str() of it
    assert "<int of 16610 bits>" in str(info.value)
    with pytest.raises(ParamError) as info:
        parse_params(MPCParams, {"x" * 10_000: 1})
    assert len(str(info.value)) < 200


def test_mpc_horizon_limit_is_the_operators() -> None:
    from streambed.abr_service.algorithms import mpc

    video = generate_video(seed=0)
    try:
        mpc.set_max_horizon(6)
        assert parse_params(MPCParams, {"horizon": 6}).horizon == 6
        assert algorithm_info("robustmpc").params[0].range == (1, 6)
        algo = make_algorithm("robustmpc", video, {"horizon": "6"})
        algo.on_chunk(feedback(0, 300_000))
        assert 0 <= algo.select(state(1, 8.0)) < video.num_levels
        with pytest.raises(ConfigError, match="must be in"):
            mpc.set_max_horizon(9)
    finally:
        mpc.set_max_horizon(mpc.DEFAULT_MAX_HORIZON)
    with pytest.raises(ParamError, match=r"\[1, 5\]"):
        parse_params(MPCParams, {"horizon": 6})
    with pytest.raises(ConfigError, match="beyond the limit"):  # the plan cache stays bounded
        mpc._plans(6, 6)


def test_ppo_seed_range() -> None:
    with pytest.raises(ParamError, match=r"seed=-1: out of range"):
        parse_params(LearnedParams, {"seed": -1}, from_text=False)
    assert parse_params(LearnedParams, {"seed": 2**32 - 1}, from_text=False).seed == 2**32 - 1


def test_robustmpc_history_carried_across_sessions_as_pensieve(video: Video) -> None:
    """``history=process``: the error history and the last estimate carry from one session to
    the next (Pensieve's module globals); the default keeps each session's own."""
    from streambed.abr_service.algorithms import mpc

    mpc._process_histories.clear()
    first = make_mpc("robustmpc", video, {"history": "process"})
    for i, rate in enumerate([100_000, 400_000]):  # est 1e5, then 160000 (err 0.75)
        first.on_chunk(feedback(i, rate))
    carried = make_mpc("robustmpc", video, {"history": "process"})
    fresh = make_mpc("robustmpc", video)
    carried.on_chunk(feedback(0, 200_000))
    fresh.on_chunk(feedback(0, 200_000))
    # fresh: est 2e5, no error yet -> 2e5. carried: error of 160000 against 2e5 = 0.2, with
    # the earlier 0.75 still in the window -> 2e5 / 1.75.
    assert fresh.predicted_bps() == pytest.approx(200_000.0)
    assert carried.predicted_bps() == pytest.approx(200_000 / 1.75)
    for i in range(1, 50):  # the shared history stays bounded by the window
        carried.on_chunk(feedback(i, 200_000))
    assert len(mpc._process_histories[("robustmpc", 5)].errors) == 5
    mpc._process_histories.clear()
