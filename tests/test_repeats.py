"""Run-to-run spread of repeated sessions (reports.repeats), with hand-computed figures."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from streambed.reports.repeats import (
    base_trace,
    spread_lines,
    spread_summary,
    trace_spreads,
    write_repeats_csv,
)
from streambed.reports.summary import SessionMetrics


def m(algorithm: str, trace: str, qoe: float) -> SessionMetrics:
    return SessionMetrics(algorithm, trace, qoe, 1000.0, 0.0, 0.0, 0.0, 48)


def test_repeats_of_a_trace_are_grouped_and_their_spread_computed(tmp_path: Path) -> None:
    metrics = [
        m("bba", "car_1-r1", 0.5),
        m("bba", "car_1-r2", 0.9),
        m("bba", "car_1-r3", 0.7),
        m("bba", "bus-r10-r1", 1.0),  # a trace whose own name ends like a repeat
        m("bba", "bus-r10-r2", 1.0),
        m("mpc", "car_1-r1", 0.2),
        m("mpc", "car_1-r2", float("nan")),  # not finite: left out, one repeat left: no row
    ]
    assert base_trace("bus-r10-r2") == "bus-r10" and base_trace("plain") == "plain"
    rows = trace_spreads(metrics)
    assert [(r.algorithm, r.trace, r.n) for r in rows] == [
        ("bba", "car_1", 3),
        ("bba", "bus-r10", 2),
    ]
    car = rows[0]
    assert car.qoe_mean == pytest.approx(0.7) and car.qoe_range == pytest.approx(0.4)
    assert car.qoe_std == pytest.approx(0.2)  # sample std of 0.5, 0.9, 0.7
    summary = spread_summary(rows)
    assert summary == {
        "bba": {
            "traces": 2,
            "repeats": 2,
            "qoe_range_mean": pytest.approx(0.2),
            "qoe_range_max": pytest.approx(0.4),
            "qoe_std_mean": pytest.approx(0.1),
        }
    }
    assert spread_lines(summary) == [
        "bba: run-to-run QoE range over 2 repeats of 2 traces: mean 0.2000, max 0.4000 (std 0.1000)"
    ]
    write_repeats_csv(tmp_path / "repeats.csv", rows)
    read = list(csv.DictReader((tmp_path / "repeats.csv").open()))
    assert read[0]["trace"] == "car_1" and math.isclose(float(read[0]["qoe_range"]), 0.4)
