"""Stress trace sets (``streambed traces stress KIND``): shapes checked against hand-computed facts,
reproducibility, and one-line errors through the real CLI entry point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streambed.cli import main
from streambed.traces import load_pensieve, load_traceset
from streambed.traces.stress import (
    STRESS_KINDS,
    CliffParams,
    OutageParams,
    generate_stress_set,
)
from streambed.traces.synth import SynthParams, generate_trace, trace_seeds


def stress(*argv: str) -> int:
    return main(["traces", "stress", *argv])


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of every maximal run of True in ``mask``."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    return [(int(s), int(e - s)) for s, e in zip(starts, ends, strict=True)]


def test_outages_are_stretches_below_the_ceiling_of_exactly_their_length(tmp_path: Path) -> None:
    out = tmp_path / "outage"
    argv = ["outage", "--out", str(out), "--count", "5", "--seed", "7"]
    assert stress(*argv, "--outage-s", "3", "3", "--outages-per-min", "2") == 0
    traces = load_traceset(out)
    assert [t.name for t in traces] == [f"outage_{i:03d}" for i in range(5)]
    total_outages = 0
    for trace in traces:
        assert trace.duration_s == 400.0 and len(trace) == 401
        rates = trace.mbps[1:]
        below = rates <= 0.05
        # Outside outages the base is floored at 0.2 Mbit/s: nothing lies between.
        assert np.all(rates[~below] >= 0.2)
        outages = runs(below)
        assert outages, trace.name
        assert outages[0][0] >= 1  # a stretch of base comes first
        for start, length in outages:
            # Every outage lasts 3 s; only one cut by the trace's end may be shorter.
            assert length == 3 or start + length == 400, (trace.name, start, length)
        total_outages += len(outages)
    # Gaps average 30 s, an outage 3 s: about 400 / 33 = 12 per trace.
    assert 8 * 5 <= total_outages <= 16 * 5


def test_outage_base_is_the_markov_generator_floored(tmp_path: Path) -> None:
    params = OutageParams(outage_mbps=(0.0, 0.0), outage_s=(1.0, 10.0))
    seed = trace_seeds(3, 1)[0]
    with_outages = params.trace(seed, "x").mbps[1:]
    base = generate_trace(SynthParams(duration_s=400.0, min_mbps=0.2), seed, "x").mbps[1:]
    outage = with_outages == 0.0
    assert 0 < outage.mean() < 0.3
    np.testing.assert_array_equal(with_outages[~outage], base[~outage])
    # No outages at all: the base itself.
    none = OutageParams(outages_per_min=0.0).trace(seed, "x").mbps[1:]
    np.testing.assert_array_equal(none, base)


def test_cliff_with_fixed_periods_follows_the_hand_computed_pattern() -> None:
    params = CliffParams(high_s=(30.0, 30.0), low_s=(10.0, 10.0), duration_s=400.0)
    rates = params.trace(11, "c").mbps[1:]
    low = (np.arange(400) % 40) >= 30  # high on seconds 0-29, low on 30-39, and again
    assert np.all((rates[low] >= 0.2) & (rates[low] <= 0.4))
    assert np.all((rates[~low] >= 4.0) & (rates[~low] <= 8.0))
    # A drop is sudden: from one second to the next, at least 4 - 0.4 Mbit/s.
    assert np.all(rates[29::40] - rates[30::40] >= 3.6)


def test_default_cliff_and_onoff_periods_within_their_ranges(tmp_path: Path) -> None:
    for kind, high, low, high_s, low_s in (
        ("cliff", (4, 8), (0.2, 0.4), (20, 60), (5, 30)),
        ("onoff", (2, 5), (0, 0.1), (2, 12), (2, 12)),
    ):
        generate_stress_set(tmp_path / kind, STRESS_KINDS[kind](), 4, 5)
        for trace in load_traceset(tmp_path / kind):
            rates = trace.mbps[1:]
            is_low = rates <= low[1]
            assert not is_low[0]  # starts high
            assert np.all(rates[is_low] >= low[0])
            assert np.all((rates[~is_low] >= high[0]) & (rates[~is_low] <= high[1]))
            for mask, (shortest, longest) in ((~is_low, high_s), (is_low, low_s)):
                for start, length in runs(mask):
                    assert length <= longest
                    assert length >= shortest or start + length == len(rates)


def test_onoff_zero_periods_are_zero(tmp_path: Path) -> None:
    out = tmp_path / "oo"
    assert stress("onoff", "--out", str(out), "--count", "2", "--low-mbps", "0", "0") == 0
    for trace in load_traceset(out):
        rates = trace.mbps[1:]
        assert np.any(rates == 0.0) and np.all((rates == 0.0) | (rates >= 2.0))


@pytest.mark.parametrize(("kind", "low", "high"), [("fast", 20, 200), ("slow", 0.2, 1.0)])
def test_fast_and_slow_stay_in_their_range(kind: str, low: float, high: float) -> None:
    cls = STRESS_KINDS[kind]
    traces = [cls().trace(seed, kind) for seed in trace_seeds(0, 10)]
    for trace in traces:
        assert low <= trace.mbps.min() and trace.mbps.max() <= high
        assert low <= trace.mean_mbps <= high
    # Variability: the set spans most of the range, and traces change within themselves.
    means = [t.mean_mbps for t in traces]
    assert max(means) / min(means) > 1.5
    assert all(np.std(t.mbps) > 0.05 * t.mean_mbps for t in traces)


def test_same_seed_same_bytes_and_trace_i_independent_of_count(tmp_path: Path) -> None:
    for kind in STRESS_KINDS:
        for name, count, seed in (
            ("a", "3", "4"),
            ("b", "3", "4"),
            ("c", "2", "4"),
            ("d", "2", "5"),
        ):
            assert (
                stress(kind, "--out", str(tmp_path / kind / name), "--count", count, "--seed", seed)
                == 0
            )
        files = [f"{kind}_000", f"{kind}_001"]
        read = {n: [(tmp_path / kind / n / f).read_bytes() for f in files] for n in "abcd"}
        assert read["a"] == read["b"] == read["c"]
        assert read["d"][0] != read["a"][0]
        assert (tmp_path / kind / "a" / f"{kind}_002").is_file()


def test_duration_and_interval_flags(tmp_path: Path) -> None:
    out = tmp_path / "v"
    argv = ["variable", "--out", str(out), "--count", "1", "--duration-s", "330"]
    assert stress(*argv, "--interval-s", "0.5") == 0
    trace = load_pensieve(out / "variable_000")
    assert trace.duration_s == 330.0 and len(trace) == 661
    assert trace.mbps.min() >= 0.2 and trace.mbps.max() <= 10.0


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["outage", "--outage-s", "0", "5"], "--outage-s 0 5: must be in [0.1, 3600] s"),
        (["outage", "--outage-s", "5", "2"], "--outage-s 5 2: MIN must not exceed MAX"),
        (["outage", "--floor-mbps", "0.04"], "--floor-mbps 0.04 must exceed the top"),
        (["onoff", "--low-mbps", "0", "3"], "--low-mbps 0 3 must lie below --high-mbps 2 5"),
        (["fast", "--range-mbps", "20", "inf"], "--range-mbps 20 inf: must be in"),
        (["fast", "--count", "0"], "--count 0: must be in [1, 100000]"),
        (["slow", "--seed", "-1"], "--seed -1: must be >= 0"),
        (["slow", "--interval-s", "30", "--duration-s", "20"], "exceeds --duration-s 20"),
        (["cliff", "--count", "x"], "argument --count: invalid int value: 'x'"),
        (["fast", "--levels", "2.5"], "argument --levels: invalid int value: '2.5'"),
        (["cliff", "--bogus"], "unrecognized arguments: --bogus"),
        (["cliff", "--high-s", "1"], "argument --high-s: expected 2 arguments"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    argv: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "never"
    try:
        code = stress(argv[0], "--out", str(out), *argv[1:])
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1, captured.err
    assert expected in lines[0]
    assert not out.exists()


def test_help_lists_every_flag_with_unit_and_range(capsys: pytest.CaptureFixture[str]) -> None:
    for kind in STRESS_KINDS:
        with pytest.raises(SystemExit) as exc:
            stress(kind, "--help")
        assert exc.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "--out DIR" in text and "--seed" in text
        for flag in ("--duration-s S", "--interval-s S", "in [10, 86400] s; default: 400"):
            assert flag in text, (kind, flag)
    with pytest.raises(SystemExit):
        stress("outage", "--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "--outage-s MIN MAX" in text and "each in [0.1, 3600] s; default: 1 10" in text
    assert "--outage-mbps MIN MAX" in text and "default: 0 0.05" in text
    assert stress() == 2
    listing = capsys.readouterr().err
    assert all(kind in listing for kind in STRESS_KINDS)
