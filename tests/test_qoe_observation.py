"""Tests of the QoE metrics and of the Pensieve observation, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streambed.abr_service.observation import (
    CHUNKS_LEFT_CAP,
    S_INFO,
    S_LEN,
    empty_observation,
    update_observation,
)
from streambed.abr_service.qoe import make_qoe
from streambed.abr_service.video import PENSIEVE_BITRATES_KBPS
from streambed.core.errors import ConfigError

LADDER = PENSIEVE_BITRATES_KBPS  # (300, 750, 1200, 1850, 2850, 4300)
QUALITIES = [1, 3, 3, 0]
REBUFFER = [2.0, 0.0, 0.5, 0.0]


# ------------------------------------------------------------------------------------------
# QoE


def test_lin_chunk_values() -> None:
    metric = make_qoe("lin", LADDER)
    assert metric.utilities == (0.3, 0.75, 1.2, 1.85, 2.85, 4.3)
    assert metric.rebuffer_penalty == 4.3
    expected = [
        0.75 - 4.3 * 2.0,  # 750 kbps, 2 s stall, no switch penalty on the first chunk: -7.85
        1.85 - abs(1.85 - 0.75),  # 1850 kbps, switch 0.75 -> 1.85: 1.85 - 1.1 = 0.75
        1.85 - 4.3 * 0.5,  # same level, 0.5 s stall: 1.85 - 2.15 = -0.3
        0.3 - abs(0.3 - 1.85),  # down to 300 kbps: 0.3 - 1.55 = -1.25
    ]
    assert np.allclose(metric.chunk_qoe(QUALITIES, REBUFFER), expected)
    assert np.allclose(expected, [-7.85, 0.75, -0.3, -1.25])
    # Session: mean of chunks 2..N = (0.75 - 0.3 - 1.25) / 3 = -0.8 / 3
    assert metric.session_qoe(QUALITIES, REBUFFER) == pytest.approx(-0.8 / 3)


def test_log_chunk_values() -> None:
    metric = make_qoe("log", LADDER)
    assert metric.rebuffer_penalty == 2.66
    u750, u1850, u300 = math.log(750 / 300), math.log(1850 / 300), math.log(300 / 300)
    assert u300 == 0.0
    expected = [
        u750 - 2.66 * 2.0,  # 0.916291 - 5.32 = -4.403709
        u1850 - abs(u1850 - u750),  # 1.819158 - 0.902867 = 0.916291
        u1850 - 2.66 * 0.5,  # 1.819158 - 1.33 = 0.489158
        u300 - abs(u300 - u1850),  # 0 - 1.819158
    ]
    got = metric.chunk_qoe(QUALITIES, REBUFFER)
    assert np.allclose(got, expected)
    assert np.allclose(got, [-4.403709, 0.916291, 0.489158, -1.819158], atol=1e-6)
    # (0.916291 + 0.489158 - 1.819158) / 3 = -0.137903
    assert metric.session_qoe(QUALITIES, REBUFFER) == pytest.approx(-0.137903, abs=1e-6)


def test_hd_chunk_values() -> None:
    metric = make_qoe("hd", LADDER)
    assert metric.utilities == (1.0, 2.0, 3.0, 12.0, 15.0, 20.0)
    assert metric.rebuffer_penalty == 8.0
    # Scores of levels 1, 3, 3, 0: 2, 12, 12, 1.
    expected = [
        2 - 8 * 2.0,  # -14
        12 - abs(12 - 2),  # 2
        12 - 8 * 0.5,  # 8
        1 - abs(1 - 12),  # -10
    ]
    assert metric.chunk_qoe(QUALITIES, REBUFFER).tolist() == expected
    # (2 + 8 - 10) / 3 = 0
    assert metric.session_qoe(QUALITIES, REBUFFER) == 0.0


def test_hd_with_custom_scores() -> None:
    metric = make_qoe("hd", (100, 200, 400), hd_scores=(1, 5, 9))
    # Levels 2, 0: 9 - 8 * 1.0 = 1; 1 - |1 - 9| = -7
    assert metric.chunk_qoe([2, 0], [1.0, 0.0]).tolist() == [1.0, -7.0]


def test_previous_quality_penalises_the_first_switch() -> None:
    metric = make_qoe("lin", LADDER)
    # Level 3 after level 1: 1.85 - |1.85 - 0.75| = 0.75
    assert metric.chunk_qoe([3], [0.0], previous_quality=1)[0] == pytest.approx(0.75)
    # Without a previous level there is no switch penalty: 1.85
    assert metric.chunk_qoe([3], [0.0])[0] == pytest.approx(1.85)


def test_session_of_one_chunk_is_nan() -> None:
    metric = make_qoe("lin", LADDER)
    assert math.isnan(metric.session_qoe([2], [0.0]))


def test_hd_needs_one_score_per_level() -> None:
    with pytest.raises(ConfigError, match="5 levels"):
        make_qoe("hd", (300, 750, 1200, 1850, 2850))


def test_unknown_metric() -> None:
    with pytest.raises(ConfigError, match="unknown QoE metric 'quadratic'"):
        make_qoe("quadratic", LADDER)


# ------------------------------------------------------------------------------------------
# Observation


def one_update(obs: np.ndarray) -> np.ndarray:
    return update_observation(
        obs,
        bitrate_kbps=1850.0,
        top_bitrate_kbps=4300.0,
        buffer_s=12.5,
        chunk_bytes=2_000_000,
        download_s=0.8,
        next_chunk_bytes=np.array([100_000, 250_000, 400_000, 600_000, 950_000, 1_400_000.0]),
        chunks_left=30,
    )


def test_last_column_normalisations() -> None:
    obs = one_update(empty_observation())
    assert obs.shape == (S_INFO, S_LEN)
    last = obs[:, -1]
    assert last[0] == pytest.approx(1850 / 4300)  # 0.430233
    assert last[1] == pytest.approx(1.25)  # 12.5 s / 10
    assert last[2] == pytest.approx(2.5)  # 2e6 bytes / 0.8 s / 1e6 = 2.5 MB/s
    assert last[3] == pytest.approx(0.08)  # 0.8 s / 10
    assert last[5] == pytest.approx(30 / 48)  # 0.625
    # Row 4: next sizes in MB in columns 0..5, zeros after.
    assert np.allclose(obs[4, :6], [0.1, 0.25, 0.4, 0.6, 0.95, 1.4])
    assert obs[4, 6:].tolist() == [0.0, 0.0]
    # Everything but the newest column of the history rows is still zero.
    for row in (0, 1, 2, 3, 5):
        assert not obs[row, :-1].any()


def test_chunks_left_is_capped() -> None:
    obs = empty_observation()
    update_observation(obs, 300, 4300, 0.0, 1000, 1.0, np.ones(6), chunks_left=100)
    assert obs[5, -1] == 1.0  # min(100, 48) / 48
    update_observation(obs, 300, 4300, 0.0, 1000, 1.0, np.ones(6), chunks_left=CHUNKS_LEFT_CAP)
    assert obs[5, -1] == 1.0
    update_observation(obs, 300, 4300, 0.0, 1000, 1.0, np.ones(6), chunks_left=12)
    assert obs[5, -1] == 0.25  # 12 / 48


def test_fewer_levels_leave_zeros_in_row_4() -> None:
    obs = np.full((S_INFO, S_LEN), 9.0)
    update_observation(obs, 500, 1000, 4.0, 1e6, 1.0, np.array([1e6, 2e6, 3e6]), 10)
    # 3 levels: columns 0..2 are the sizes in MB, columns 3..7 are cleared.
    assert obs[4].tolist() == [1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_shift_moves_history_left() -> None:
    obs = np.arange(S_INFO * S_LEN, dtype=np.float64).reshape(S_INFO, S_LEN)
    before = obs.copy()
    one_update(obs)
    # Columns 1..7 of every row move to 0..6 (row 4 is then overwritten with the sizes).
    for row in (0, 1, 2, 3, 5):
        assert obs[row, :-1].tolist() == before[row, 1:].tolist()
    # Two more updates: the first update's values are now two columns further left.
    first = obs[:, -1].copy()
    one_update(obs)
    one_update(obs)
    for row in (0, 1, 2, 3, 5):
        assert obs[row, -3] == first[row]


def test_batch_update_matches_single_updates() -> None:
    rng = np.random.default_rng(42)
    n = 5
    bitrate = rng.choice(np.asarray(LADDER, dtype=np.float64), size=n)
    buffer = rng.uniform(0, 30, size=n)
    chunk = rng.integers(100_000, 3_000_000, size=n).astype(np.float64)
    download = rng.uniform(0.1, 5, size=n)
    sizes = rng.integers(50_000, 2_000_000, size=(n, 6)).astype(np.float64)
    left = rng.integers(0, 60, size=n).astype(np.float64)
    start = rng.uniform(0, 1, size=(n, S_INFO, S_LEN))

    batch = start.copy()
    out = update_observation(batch, bitrate, 4300.0, buffer, chunk, download, sizes, left)
    assert out is batch  # in place
    assert batch.shape == (n, S_INFO, S_LEN)
    for i in range(n):
        single = start[i].copy()
        update_observation(
            single, bitrate[i], 4300.0, buffer[i], chunk[i], download[i], sizes[i], left[i]
        )
        assert np.array_equal(batch[i], single)
        # And the documented value of one entry: throughput in MB/s.
        assert batch[i, 2, -1] == pytest.approx(chunk[i] / download[i] / 1e6)
        assert batch[i, 5, -1] == pytest.approx(min(left[i], 48) / 48)


def test_non_contiguous_batch_matches_contiguous() -> None:
    rng = np.random.default_rng(3)
    start = rng.uniform(0, 1, size=(4, S_INFO, S_LEN))
    sizes = rng.integers(50_000, 2_000_000, size=(4, 6)).astype(np.float64)
    args = (np.full(4, 1200.0), 4300.0, np.full(4, 8.0), np.full(4, 5e5), np.full(4, 0.5))
    contiguous = start.copy()
    update_observation(contiguous, *args, sizes, np.full(4, 20.0))
    # The same values in every other entry of a larger array: a strided, non-contiguous view.
    holder = np.zeros((8, S_INFO, S_LEN))
    holder[::2] = start
    view = holder[::2]
    assert not view.flags.c_contiguous
    update_observation(view, *args, sizes, np.full(4, 20.0))
    assert np.array_equal(view, contiguous)
    assert not holder[1::2].any()  # the entries in between are untouched
    # History rows moved left by one column in both.
    for row in (0, 1, 2, 3, 5):
        assert np.array_equal(contiguous[:, row, :-1], start[:, row, 1:])


def test_empty_observation_shapes() -> None:
    assert empty_observation().shape == (6, 8)
    batch = empty_observation(4, dtype=np.float32)
    assert batch.shape == (4, 6, 8)
    assert batch.dtype == np.float32
    assert not batch.any()
