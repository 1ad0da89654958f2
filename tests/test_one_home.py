"""One home per concept (DESIGN.md): the chunk-0 level, the QoE window, the chunk record's
derived fields and the link kinds are each defined once, and every user takes them from there."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from streambed.abr_service.app.settings import Settings
from streambed.abr_service.qoe import QOE_WINDOW_START, make_qoe, qoe_window
from streambed.abr_service.video import FIRST_QUALITY, default_video
from streambed.cli import build_parser
from streambed.core.linkkinds import CHOICES, KINDS
from streambed.player.session import PlayerConfig
from streambed.reports.sessionlog import ChunkRecord
from streambed.reports.summary import session_metrics
from streambed.traces.synth import default_traces
from streambed.trainer.evaluate import evaluate
from streambed.trainer.simulator import SimConfig

LADDER = (300, 750, 1200, 1850, 2850, 4300)


def test_chunk_zero_level_defined_once() -> None:
    assert FIRST_QUALITY == 1  # Pensieve's test harness
    assert SimConfig().default_quality == FIRST_QUALITY
    assert Settings().first_quality == FIRST_QUALITY
    assert PlayerConfig(mpd_url="http://o/m.mpd", abr_url="http://a").first_quality == (
        FIRST_QUALITY
    )
    result = evaluate(default_traces(1, 0), default_video(0), ["bba"], progress=False)
    (records,) = result.sessions.values()
    assert records[0].quality == FIRST_QUALITY


def test_one_qoe_window() -> None:
    assert QOE_WINDOW_START == 1 and list(qoe_window([0, 1, 2, 3])) == [1, 2, 3]
    result = evaluate(default_traces(2, 0), default_video(0), ["bba", "robustmpc"], progress=False)
    qoe = make_qoe("lin", default_video(0).bitrates_kbps)
    for records in result.sessions.values():
        by_metric = qoe.session_qoe([r.quality for r in records], [r.rebuffer_s for r in records])
        metrics = session_metrics(records, 4.0)
        assert metrics.qoe == pytest.approx(by_metric, abs=1e-12)
        assert metrics.qoe == pytest.approx(float(np.mean([r.qoe for r in records[1:]])))
    assert np.isnan(qoe.session_qoe([1], [0.0]))  # no chunk in the window


def test_chunk_record_derived_fields() -> None:
    qoe = make_qoe("lin", LADDER)
    common = {"run_id": "r", "session_id": "s", "trace": "t", "algorithm": "a"}
    common |= {"buffer_before_s": 0.0, "buffer_s": 4.0, "sleep_s": 0.0}
    first = ChunkRecord.measured(
        qoe=qoe,
        bitrates_kbps=LADDER,
        quality=1,
        previous_quality=None,
        chunk_bytes=100_000,
        request_start_s=1.0,
        request_end_s=1.5,
        rebuffer_s=0.5,
        chunk_index=0,
        **common,
    )
    assert first.bitrate_kbps == 750 and first.download_s == 0.5
    assert first.throughput_kbps == pytest.approx(1600.0)
    assert first.qoe == pytest.approx(0.75 - 4.3 * 0.5)  # no switch penalty on the first chunk
    second = ChunkRecord.measured(
        qoe=qoe,
        bitrates_kbps=LADDER,
        quality=4,
        previous_quality=1,
        chunk_bytes=10,
        request_start_s=2.0,
        request_end_s=2.0,  # a zero span: the throughput stays finite
        download_s=None,
        rebuffer_s=0.0,
        chunk_index=1,
        **common,
    )
    assert second.download_s == 0.0 and np.isfinite(second.throughput_kbps)
    assert second.qoe == pytest.approx(2.85 - (2.85 - 0.75))
    # A download time measured apart from the request's span wins (the simulator's).
    third = ChunkRecord.measured(
        qoe=qoe,
        bitrates_kbps=LADDER,
        quality=4,
        previous_quality=4,
        chunk_bytes=1000,
        request_start_s=0.1,
        request_end_s=0.3,
        download_s=0.25,
        rebuffer_s=0.0,
        chunk_index=2,
        **common,
    )
    assert third.download_s == 0.25 and third.throughput_kbps == pytest.approx(32.0)


def _choices(parser: argparse.ArgumentParser, command: str, option: str) -> tuple[str, ...]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if option in a.option_strings)
    assert action.default == "auto"
    return tuple(action.choices or ())


def test_link_kinds_defined_once() -> None:
    assert ("auto", *KINDS) == CHOICES
    parser = build_parser()
    for command, option in (("emulate", "--link"), ("play", "--link"), ("link", "--kind")):
        assert _choices(parser, command, option) == CHOICES
    assert _choices(parser, "demo", "--link") == CHOICES
