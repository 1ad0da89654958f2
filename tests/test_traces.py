"""Tests of the ``traces`` library: formats, validation, conversion, generator, trace sets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from streambed.core.errors import TraceError
from streambed.traces import (
    PACKET_BITS,
    SynthParams,
    Trace,
    constant_trace,
    detect_format,
    generate_set,
    generate_trace,
    load_mahimahi,
    load_pensieve,
    load_trace,
    load_traceset,
    mahimahi_to_pensieve,
    pensieve_to_mahimahi,
    save_mahimahi,
    save_pensieve,
    step_trace,
    summarize,
)

NORWAY_TEST = Path("/work/shared/data/traces/norway-test")
ONE_PACKET_PER_S_MBPS = PACKET_BITS / 1e6  # 0.012 Mbit/s: one 1500-byte packet per second


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# Trace


def test_trace_properties() -> None:
    trace = Trace("t", np.array([0.0, 1.0, 3.0]), np.array([9.0, 2.0, 5.0]))
    assert len(trace) == 3
    assert trace.duration_s == 3.0
    # The first line's 9 Mbit/s is not used: (2 * 1 + 5 * 2) / 3.
    assert trace.mean_mbps == pytest.approx(4.0)
    assert trace.times_s.dtype == np.float64


def test_trace_is_immutable_and_copies_inputs() -> None:
    times = np.array([0.0, 1.0])
    trace = Trace("t", times, np.array([1.0, 1.0]))
    times[1] = 5.0
    assert trace.times_s[1] == 1.0
    with pytest.raises(ValueError):
        trace.mbps[0] = 3.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        trace.name = "u"  # type: ignore[misc]


def test_trace_equality() -> None:
    a = Trace("t", np.array([0.0, 1.0]), np.array([1.0, 2.0]))
    assert a == Trace("t", [0.0, 1.0], [1.0, 2.0])  # type: ignore[arg-type]
    assert a != Trace("t", np.array([0.0, 1.0]), np.array([1.0, 3.0]))
    assert hash(a) == hash(Trace("t", np.array([0.0, 1.0]), np.array([1.0, 2.0])))


@pytest.mark.parametrize(
    ("times", "mbps", "reason"),
    [
        ([0.0], [1.0], "at least 2 lines"),
        ([0.0, 1.0], [1.0], "equal length"),
        ([0.0, 2.0, 1.0], [1.0, 1.0, 1.0], "non-decreasing"),
        ([0.0, 1.0], [1.0, -1.0], ">= 0"),
        ([0.0, float("nan")], [1.0, 1.0], "finite"),
        ([1.0, 1.0], [1.0, 1.0], "zero duration"),
        ([0.0, 1.0, 2.0], [4.0, 0.0, 0.0], "delivers nothing"),
    ],
)
def test_trace_constructor_validation(times: list[float], mbps: list[float], reason: str) -> None:
    with pytest.raises(TraceError, match=reason):
        Trace("bad", np.array(times), np.array(mbps))


# --------------------------------------------------------------------------------------------
# Pensieve format


def test_pensieve_round_trip(tmp_path: Path) -> None:
    trace = Trace(
        "x",
        np.array([0.0, 0.549999952316, 0.879999876022, 2.5]),
        np.array([4.03768755221, 4.79283060109, 0.0, 1 / 3]),
    )
    path = tmp_path / "norway_like"
    save_pensieve(trace, path)
    loaded = load_pensieve(path)
    assert loaded.name == "norway_like"
    assert loaded.source == str(path)
    np.testing.assert_array_equal(loaded.times_s, trace.times_s)  # exact, not approximate
    np.testing.assert_array_equal(loaded.mbps, trace.mbps)
    assert path.read_text().splitlines()[1] == "0.549999952316\t4.79283060109"


def test_pensieve_tolerates_blank_lines_spaces_and_crlf(tmp_path: Path) -> None:
    path = write(tmp_path, "t", "\n0.0   1.5\r\n\r\n  1.0\t2.5  \r\n2 3\n\n")
    trace = load_pensieve(path)
    np.testing.assert_array_equal(trace.times_s, [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(trace.mbps, [1.5, 2.5, 3.0])


def test_pensieve_equal_times_allowed(tmp_path: Path) -> None:
    trace = load_pensieve(write(tmp_path, "t", "0 1\n1 2\n1 7\n3 4\n"))
    assert trace.mean_mbps == pytest.approx((2 * 1 + 4 * 2) / 3)


PENSIEVE_ERRORS = [
    ("0 1\n1 abc\n", 2, "throughput is not a number"),
    ("0 1\nx 2\n", 2, "time is not a number"),
    ("0 1\n\n1 nan\n", 3, "not a finite number"),
    ("0 1\ninf 2\n", 2, "not a finite number"),
    ("0 1\n1 2 3\n", 2, "expected 2 columns"),
    ("0 1\n1\n", 2, "expected 2 columns"),
    ("0 1\n2 1\n\n1 1\n", 4, "time goes backwards (1 after 2)"),
    ("0 1\n1 -2\n", 2, "negative bandwidth"),
    ("-1 1\n1 2\n", 1, "negative time"),
]


@pytest.mark.parametrize(("text", "line", "reason"), PENSIEVE_ERRORS)
def test_pensieve_line_errors(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = write(tmp_path, "norway_bus_1", text)
    with pytest.raises(TraceError) as info:
        load_pensieve(path)
    message = str(info.value)
    assert str(path) in message
    assert f"line {line}:" in message
    assert reason in message


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("\n   \n\n", "empty"),
        ("0 1\n", "at least 2"),
        ("1 1\n1 2\n", "zero duration"),
        ("0 5\n1 0\n2 0\n", "zero on every interval"),
    ],
)
def test_pensieve_file_errors(tmp_path: Path, text: str, reason: str) -> None:
    path = write(tmp_path, "t", text)
    with pytest.raises(TraceError) as info:
        load_pensieve(path)
    assert str(path) in str(info.value)
    assert reason in str(info.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    for loader in (load_pensieve, load_mahimahi, load_trace, detect_format):
        with pytest.raises(TraceError, match="no such file"):
            loader(tmp_path / "nope")
        with pytest.raises(TraceError, match="directory"):
            loader(tmp_path)


# --------------------------------------------------------------------------------------------
# Mahimahi format


def test_mahimahi_round_trip(tmp_path: Path) -> None:
    ms = np.array([0, 1, 1, 1, 5, 9, 9, 20], dtype=np.int64)
    path = tmp_path / "m"
    save_mahimahi(ms, path)
    assert path.read_text() == "0\n1\n1\n1\n5\n9\n9\n20\n"
    loaded = load_mahimahi(path)
    assert loaded.dtype == np.int64
    np.testing.assert_array_equal(loaded, ms)
    save_mahimahi([3, 4], path)  # plain lists work too
    np.testing.assert_array_equal(load_mahimahi(path), [3, 4])


def test_mahimahi_blank_lines_ignored(tmp_path: Path) -> None:
    np.testing.assert_array_equal(
        load_mahimahi(write(tmp_path, "m", "\n1\n\n 2 \n3\n\n")), [1, 2, 3]
    )


MAHIMAHI_ERRORS = [
    ("1\nx\n", 2, "not an integer"),
    ("1\n\n1.5\n", 3, "not an integer"),
    ("1\nnan\n", 2, "not an integer"),
    ("1\n1_0\n", 2, "not an integer"),
    ("1\n2 3\n", 2, "expected 1 column"),
    ("5\n\n7\n\n3\n", 5, "time goes backwards (3 ms after 7 ms)"),
    ("-1\n2\n", 1, "negative timestamp"),
    ("1\n2\n-3\n", 3, "negative timestamp"),
]


@pytest.mark.parametrize(("text", "line", "reason"), MAHIMAHI_ERRORS)
def test_mahimahi_line_errors(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = write(tmp_path, "mm_trace", text)
    with pytest.raises(TraceError) as info:
        load_mahimahi(path)
    message = str(info.value)
    assert str(path) in message
    assert f"line {line}:" in message
    assert reason in message


@pytest.mark.parametrize(("text", "reason"), [("", "empty"), ("\n\n", "empty"), ("0\n0\n", "0 ms")])
def test_mahimahi_file_errors(tmp_path: Path, text: str, reason: str) -> None:
    path = write(tmp_path, "m", text)
    with pytest.raises(TraceError) as info:
        load_mahimahi(path)
    assert str(path) in str(info.value)
    assert reason in str(info.value)


@pytest.mark.parametrize("bad", [[], [2, 1], [-1, 3], [0], [1.5, 2.0], [[1, 2]]])
def test_save_mahimahi_validates(tmp_path: Path, bad: list[float]) -> None:
    with pytest.raises(TraceError):
        save_mahimahi(bad, tmp_path / "m")


def test_detect_format(tmp_path: Path) -> None:
    assert detect_format(write(tmp_path, "a", "\n12\n13\n")) == "mahimahi"
    assert detect_format(write(tmp_path, "b", "0.0\t1.0\n1.0 2.0\n")) == "pensieve"
    path = write(tmp_path, "c", "\n\n1 2 3\n")
    with pytest.raises(TraceError, match="line 3: expected 1 column"):
        detect_format(path)
    with pytest.raises(TraceError, match="empty"):
        detect_format(write(tmp_path, "d", "  \n"))


def test_load_trace_autodetects(tmp_path: Path) -> None:
    pensieve = load_trace(write(tmp_path, "p", "0 1\n1 2\n"))
    np.testing.assert_array_equal(pensieve.mbps, [1.0, 2.0])
    mm_path = write(tmp_path, "m", "1000\n" * 250 + "2000\n" * 500)
    mm = load_trace(mm_path)
    assert mm.name == "m"
    assert mm.source == str(mm_path)
    np.testing.assert_allclose(mm.times_s, [0.0, 1.0, 2.0])
    np.testing.assert_allclose(mm.mbps, [3.0, 3.0, 6.0])
    half = load_trace(mm_path, bin_s=0.5)
    np.testing.assert_allclose(half.times_s, [0.0, 0.5, 1.0, 1.5, 2.0])
    np.testing.assert_allclose(half.mbps, [0.0, 0.0, 6.0, 0.0, 12.0])


# --------------------------------------------------------------------------------------------
# Conversion semantics


def test_12_mbps_is_one_packet_per_ms() -> None:
    ms = pensieve_to_mahimahi(constant_trace(12.0, 10.0, "c"))
    np.testing.assert_array_equal(ms, np.arange(1, 10_001))


def test_3_mbps_is_one_packet_every_4_ms() -> None:
    ms = pensieve_to_mahimahi(constant_trace(3.0, 10.0, "c"))
    np.testing.assert_array_equal(ms, np.arange(4, 10_001, 4))


def test_48_mbps_is_four_packets_per_ms() -> None:
    ms = pensieve_to_mahimahi(constant_trace(48.0, 2.0, "c"))
    np.testing.assert_array_equal(ms, np.repeat(np.arange(1, 2001), 4))


def test_remainder_carries_without_drift() -> None:
    # 1 Mbit/s = 1000 bits/ms: a packet every 12 ms, exactly 8333 packets in 100 s.
    ms = pensieve_to_mahimahi(constant_trace(1.0, 100.0, "c"))
    assert len(ms) == 100_000_000 // PACKET_BITS  # the one leftover partial packet is dropped
    np.testing.assert_array_equal(ms[:-1], np.arange(12, 99_996, 12))
    assert ms[-1] == 100_000  # last packet delayed from 99996 ms to the period


def test_first_line_bandwidth_unused_and_offset_start() -> None:
    trace = Trace("t", np.array([5.0, 6.0, 7.0]), np.array([99.0, 12.0, 3.0]))
    ms = pensieve_to_mahimahi(trace)
    expected = np.concatenate((np.arange(1, 1001), np.arange(1004, 2001, 4)))
    np.testing.assert_array_equal(ms, expected)


def test_period_is_duration_final_packet_delayed() -> None:
    # 1 s at 12 Mbit/s then 3 s of nothing: the last opportunity must mark the 4000 ms period.
    ms = pensieve_to_mahimahi(step_trace([12.0, 0.0, 0.0, 0.0], 1.0, "s"))
    assert len(ms) == 1000  # packet count unchanged
    np.testing.assert_array_equal(ms[:-1], np.arange(1, 1000))
    assert ms[-1] == 4000


def test_trace_below_one_packet_gives_single_line() -> None:
    np.testing.assert_array_equal(pensieve_to_mahimahi(constant_trace(0.001, 1.5, "tiny")), [1500])


def test_fractional_duration_rounds_to_ms() -> None:
    trace = Trace("t", np.array([0.0, 0.0104]), np.array([12.0, 12.0]))
    np.testing.assert_array_equal(pensieve_to_mahimahi(trace), np.arange(1, 11))


def test_mahimahi_to_pensieve_bins() -> None:
    trace = mahimahi_to_pensieve(np.array([500, 1000, 1500, 2000]), "m")
    assert trace.name == "m"
    np.testing.assert_allclose(trace.times_s, [0.0, 1.0, 2.0])
    np.testing.assert_allclose(trace.mbps, [0.024, 0.024, 0.024])


def test_mahimahi_to_pensieve_partial_last_bin_and_time_zero() -> None:
    # 0 ms and 1000 ms fall in (0, 1] s; 1500 ms in the half-second partial bin.
    trace = mahimahi_to_pensieve([0, 1000, 1500], "m")
    np.testing.assert_allclose(trace.times_s, [0.0, 1.0, 1.5])
    np.testing.assert_allclose(trace.mbps, [0.024, 0.024, 0.024])
    assert trace.duration_s == 1.5


@pytest.mark.parametrize("bin_s", [0.0, -1.0, float("nan")])
def test_mahimahi_to_pensieve_bad_bin(bin_s: float) -> None:
    with pytest.raises(TraceError, match="bin_s"):
        mahimahi_to_pensieve([1, 2], "m", bin_s=bin_s)


def per_second_means(trace: Trace) -> np.ndarray:
    """Exact mean throughput of each whole second since the trace start."""
    t = trace.times_s - trace.times_s[0]
    cum = np.concatenate(([0.0], np.cumsum(trace.mbps[1:] * np.diff(t))))
    edges = np.arange(int(np.floor(trace.duration_s + 1e-9)) + 1, dtype=np.float64)
    return np.diff(np.interp(edges, t, cum))


def assert_round_trip(trace: Trace) -> None:
    """pensieve -> mahimahi -> pensieve(1 s): the documented accuracy bound.

    Each whole second's packet count is exact up to rounding at its two edges, i.e. within
    one packet (0.012 Mbit/s). That is within 1% wherever the second's mean is >= 1.2 Mbit/s;
    below that one packet is already more than 1% (at 0.1 Mbit/s it is 12%).
    """
    orig = per_second_means(trace)
    back = mahimahi_to_pensieve(pensieve_to_mahimahi(trace), trace.name, bin_s=1.0)
    got = back.mbps[1 : len(orig) + 1]
    assert len(got) == len(orig)
    assert back.duration_s == pytest.approx(trace.duration_s, abs=1e-3)
    assert np.all(np.abs(got - orig) < ONE_PACKET_PER_S_MBPS)
    busy = orig >= 100 * ONE_PACKET_PER_S_MBPS
    assert np.all(np.abs(got[busy] - orig[busy]) <= 0.01 * orig[busy])


@pytest.mark.parametrize("seed", range(6))
def test_round_trip_synthetic(seed: int) -> None:
    params = SynthParams(duration_s=120.0, interval_s=[1.0, 0.7, 0.35][seed % 3])
    assert_round_trip(generate_trace(params, seed, f"synth_{seed}"))


def test_round_trip_high_rate() -> None:
    params = SynthParams(duration_s=60.0, states_mbps=(10.0, 25.0, 50.0), switch_prob=0.2)
    assert_round_trip(generate_trace(params, 3, "fast"))


def test_round_trip_with_outages_keeps_total_and_zeros() -> None:
    params = SynthParams(duration_s=200.0, outage_prob=0.05)
    trace = generate_trace(params, 11, "outages")
    ms = pensieve_to_mahimahi(trace)
    total_bits = trace.mean_mbps * trace.duration_s * 1e6
    assert len(ms) == int(total_bits // PACKET_BITS)
    assert ms[-1] == round(trace.duration_s * 1000)
    orig = per_second_means(trace)
    back = mahimahi_to_pensieve(ms, "b").mbps[1 : len(orig) + 1]
    # Outage seconds stay empty, except the final packet possibly delayed into the last second.
    zero = orig == 0
    zero[-1] = False
    assert np.all(back[zero] == 0)
    # The delayed final packet can cost its original second one more packet.
    assert np.all(np.abs(back - orig) < 2 * ONE_PACKET_PER_S_MBPS)


def norway_files() -> list[Path]:
    if not NORWAY_TEST.is_dir():
        pytest.skip(f"{NORWAY_TEST} not present")
    files = sorted(p for p in NORWAY_TEST.iterdir() if p.is_file())
    return files


def test_round_trip_real_norway_traces() -> None:
    for path in norway_files():
        assert_round_trip(load_pensieve(path))


def test_real_norway_traces_load_and_convert_files(tmp_path: Path) -> None:
    for path in norway_files()[:3]:
        trace = load_trace(path)
        assert trace.name == path.name
        assert trace.duration_s > 100
        save_mahimahi(pensieve_to_mahimahi(trace), tmp_path / path.name)
        back = load_trace(tmp_path / path.name)
        assert back.mean_mbps == pytest.approx(trace.mean_mbps, rel=1e-3)


# --------------------------------------------------------------------------------------------
# Synthetic traces


def test_generator_is_deterministic() -> None:
    params = SynthParams(outage_prob=0.02)
    assert generate_trace(params, 7, "a") == generate_trace(params, 7, "a")
    assert not np.array_equal(
        generate_trace(params, 7, "a").mbps, generate_trace(params, 8, "a").mbps
    )


def test_generator_shape_and_bounds() -> None:
    params = SynthParams(duration_s=100.0, interval_s=0.5)
    trace = generate_trace(params, 1, "g")
    assert trace.name == "g"
    assert len(trace) == 201
    np.testing.assert_allclose(np.diff(trace.times_s), 0.5)
    assert trace.duration_s == pytest.approx(100.0)
    assert np.all(trace.mbps >= params.min_mbps)
    assert trace.mbps[0] == trace.mbps[1]
    assert min(params.states_mbps) * 0.7 < trace.mean_mbps < max(params.states_mbps) * 1.3


def test_generator_single_state_mean_and_noise() -> None:
    params = SynthParams(duration_s=4000.0, states_mbps=(2.0,), noise_cv=0.25)
    values = generate_trace(params, 5, "g").mbps[1:]
    assert values.mean() == pytest.approx(2.0, rel=0.03)
    assert values.std() / values.mean() == pytest.approx(0.25, rel=0.1)


def test_generator_without_noise_or_switching_is_constant() -> None:
    params = SynthParams(duration_s=50.0, switch_prob=0.0, noise_cv=0.0)
    values = generate_trace(params, 2, "g").mbps
    assert np.all(values == values[0])
    assert values[0] in params.states_mbps


def test_generator_switches_between_neighbours_only() -> None:
    states = (1.0, 2.0, 3.0, 4.0)
    params = SynthParams(duration_s=500.0, states_mbps=states, switch_prob=0.3, noise_cv=0.0)
    values = generate_trace(params, 4, "g").mbps
    idx = np.searchsorted(states, values)
    steps = np.abs(np.diff(idx))
    assert set(np.unique(steps)) == {0, 1}
    assert len(np.unique(idx)) == 4


def test_generator_outages() -> None:
    base = SynthParams(duration_s=300.0)
    assert np.all(generate_trace(base, 3, "g").mbps > 0)
    params = dataclasses.replace(base, outage_prob=0.05, outage_s=(3.0, 5.0))
    with_outages = generate_trace(params, 3, "g")
    zero = with_outages.mbps[1:] == 0
    assert zero.sum() > 0
    # Outage runs last 3..5 intervals (a run can merge with the next or be cut at the end).
    edges = np.flatnonzero(np.diff(np.concatenate(([0], zero.astype(int), [0]))))
    runs = edges[1::2] - edges[::2]
    assert np.all(runs[:-1] >= 3)
    # Outages only zero intervals; the rest of the trace is unchanged.
    plain = generate_trace(base, 3, "g").mbps[1:]
    np.testing.assert_array_equal(with_outages.mbps[1:][~zero], plain[~zero])


@pytest.mark.parametrize(
    "change",
    [
        {"duration_s": 0.0},
        {"interval_s": -1.0},
        {"interval_s": 500.0},
        {"states_mbps": ()},
        {"states_mbps": (1.0, 0.0)},
        {"switch_prob": 1.5},
        {"noise_cv": -0.1},
        {"min_mbps": -1.0},
        {"outage_prob": 1.0},
        {"outage_s": (5.0, 2.0)},
        {"outage_s": (0.0, 2.0)},
    ],
)
def test_synth_params_validation(change: dict[str, object]) -> None:
    with pytest.raises(TraceError, match="synthetic trace parameters"):
        SynthParams(**change)  # type: ignore[arg-type]


def test_generate_set(tmp_path: Path) -> None:
    params = SynthParams(duration_s=20.0)
    paths = generate_set(tmp_path / "a", 3, params, seed=9)
    assert [p.name for p in paths] == ["synth_000", "synth_001", "synth_002"]
    traces = [load_pensieve(p) for p in paths]
    assert all(t.duration_s == 20.0 for t in traces)
    assert not np.array_equal(traces[0].mbps, traces[1].mbps)
    again = generate_set(tmp_path / "b", 2, params, seed=9)
    for old, new in zip(paths, again, strict=False):
        assert old.read_text() == new.read_text()
    other = generate_set(tmp_path / "c", 1, params, seed=10)
    assert other[0].read_text() != paths[0].read_text()
    with pytest.raises(TraceError):
        generate_set(tmp_path / "d", 0, params, seed=1)


def test_constant_and_step_traces() -> None:
    c = constant_trace(2.5, 3.5, "c")
    np.testing.assert_allclose(c.times_s, [0.0, 1.0, 2.0, 3.0, 3.5])
    assert c.mean_mbps == pytest.approx(2.5)
    s = step_trace([1.0, 4.0], 2.0, "s")
    np.testing.assert_allclose(s.times_s, [0.0, 2.0, 4.0])
    np.testing.assert_allclose(s.mbps, [1.0, 1.0, 4.0])
    assert s.mean_mbps == pytest.approx(2.5)
    with pytest.raises(TraceError):
        step_trace([], 1.0, "s")
    with pytest.raises(TraceError):
        constant_trace(1.0, 0.0, "c")


# --------------------------------------------------------------------------------------------
# Trace sets


def make_set(tmp_path: Path) -> Path:
    d = tmp_path / "set"
    d.mkdir()
    write(d, "a", "0 7\n1 1\n2 3\n")  # 1 s at 1, 1 s at 3: mean 2, duration 2
    write(d, "b", "0 5\n2 5\n")  # 2 s at 5: mean 5
    write(d, "c_mahimahi", "1000\n" * 500)  # 500 packets in 1 s = 6 Mbit/s, duration 1
    write(d, ".hidden", "not a trace")
    (d / "subdir").mkdir()
    return d


def test_load_traceset(tmp_path: Path) -> None:
    traces = load_traceset(make_set(tmp_path))
    assert [t.name for t in traces] == ["a", "b", "c_mahimahi"]
    assert traces[2].mean_mbps == pytest.approx(6.0)


def test_summarize_hand_computed(tmp_path: Path) -> None:
    summary = summarize(load_traceset(make_set(tmp_path)))
    assert summary.count == 3
    assert summary.total_duration_s == pytest.approx(5.0)
    assert summary.mean_duration_s == pytest.approx(5 / 3)
    assert summary.mean_mbps == pytest.approx((2 + 5 + 6) / 3)
    assert summary.min_trace_mean_mbps == pytest.approx(2.0)
    assert summary.max_trace_mean_mbps == pytest.approx(6.0)
    # Time at <= v: 1 -> 20%, 3 -> 40%, 5 -> 80%, 6 -> 100%.
    assert summary.p10_mbps == pytest.approx(1.0)
    assert summary.p50_mbps == pytest.approx(5.0)
    assert summary.p90_mbps == pytest.approx(6.0)
    d = summary.to_dict()
    assert d["count"] == 3
    assert set(d) == {
        "count",
        "total_duration_s",
        "mean_duration_s",
        "mean_mbps",
        "p10_mbps",
        "p50_mbps",
        "p90_mbps",
        "min_trace_mean_mbps",
        "max_trace_mean_mbps",
    }


def test_summarize_single_trace_percentile_boundary() -> None:
    summary = summarize([step_trace([1.0, 2.0, 3.0, 4.0], 1.0, "s")])
    assert summary.p10_mbps == 1.0
    assert summary.p50_mbps == 2.0  # exactly half of the time is at <= 2
    assert summary.p90_mbps == 4.0


def test_traceset_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(TraceError, match="does not exist") as info:
        load_traceset(missing)
    assert str(missing) in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    write(empty, ".only_hidden", "0 1\n1 1\n")
    with pytest.raises(TraceError, match="no trace files") as info:
        load_traceset(empty)
    assert str(empty) in str(info.value)
    bad = tmp_path / "bad"
    bad.mkdir()
    write(bad, "x", "0 1\n1 oops\n")
    with pytest.raises(TraceError, match="line 2"):
        load_traceset(bad)
    with pytest.raises(TraceError):
        summarize([])
