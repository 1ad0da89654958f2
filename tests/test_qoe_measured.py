"""QoE from what the viewer sees: Puffer's SSIM and Comyco's VMAF metrics, hand-computed."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streambed.abr_service.qoe import make_qoe
from streambed.abr_service.video import Video
from streambed.core.errors import VideoError
from streambed.reports.sessionlog import ChunkRecord, rescore
from streambed.traces.formats import Trace
from streambed.trainer.evaluate import evaluate

LADDER = (300, 750, 1200)
SSIM_DB = np.array(
    [
        [8.0, 9.0, 7.0, 10.0, 8.0],
        [12.0, 13.0, 11.0, 14.0, 12.0],
        [20.0, 21.0, 19.0, 22.0, 20.0],
    ]
)
VMAF = np.array(
    [
        [30.0, 35.0, 25.0, 40.0, 30.0],
        [40.0, 50.0, 45.0, 55.0, 50.0],
        [70.0, 80.0, 90.0, 85.0, 95.0],
    ]
)


def video(**measured: np.ndarray) -> Video:
    """3 levels of 4-s chunks at exactly their bitrates, 5 chunks."""
    sizes = np.array([[b * 1000 // 8 * 4] * 5 for b in LADDER], dtype=np.int64)
    return Video("measured", LADDER, 4.0, sizes, 5, **measured)


def test_ssim_chunk_values() -> None:
    """Puffer: SSIM_dB - |SSIM_dB change| - 100 x stall_s, each chunk at its own level."""
    metric = make_qoe("ssim", video(ssim_db=SSIM_DB))
    qualities, stalls = [0, 1, 1, 2, 0], [0.5, 0.0, 0.1, 0.0, 0.0]
    expected = [
        8.0 - 100 * 0.5,  # chunk 0 at level 0, no change term: -42
        13.0 - abs(13.0 - 8.0),  # up to level 1 (13 dB) from 8 dB: 8
        11.0 - 100 * 0.1 - abs(11.0 - 13.0),  # same level, the video got harder: -1
        22.0 - abs(22.0 - 11.0),  # 11
        8.0 - abs(8.0 - 22.0),  # down to level 0: -6
    ]
    assert expected == [-42.0, 8.0, -1.0, 11.0, -6.0]
    assert np.allclose(metric.chunk_qoe(qualities, stalls), expected)
    assert metric.session_qoe(qualities, stalls) == pytest.approx((8 - 1 + 11 - 6) / 4)


def test_vmaf_chunk_values() -> None:
    """Comyco: 0.8469 V - 28.7959 T + 0.2980 max(dV, 0) - 1.0610 |min(dV, 0)| - 2.6616."""
    metric = make_qoe("vmaf", video(vmaf=VMAF))
    qualities, stalls = [0, 1, 2, 0], [0.5, 0.0, 0.1, 0.0]
    expected = [
        0.8469 * 30 - 28.7959 * 0.5 - 2.6616,  # 25.407 - 14.39795 - 2.6616 = 8.34745
        0.8469 * 50 + 0.2980 * (50 - 30) - 2.6616,  # 42.345 + 5.96 - 2.6616 = 45.6434
        0.8469 * 90 - 28.7959 * 0.1 + 0.2980 * 40 - 2.6616,  # 76.221 - 2.87959 + 11.92 - 2.6616
        0.8469 * 40 - 1.0610 * (90 - 40) - 2.6616,  # 33.876 - 53.05 - 2.6616 = -21.8356
    ]
    assert np.allclose(expected, [8.34745, 45.6434, 82.59981, -21.8356])
    assert np.allclose(metric.chunk_qoe(qualities, stalls), expected)


def test_measured_metrics_need_the_measurements() -> None:
    with pytest.raises(VideoError, match="ssim"):
        make_qoe("ssim", video())
    with pytest.raises(VideoError, match="vmaf"):
        make_qoe("vmaf", video(ssim_db=SSIM_DB))
    with pytest.raises(VideoError, match="not a ladder"):
        make_qoe("ssim", LADDER)


def test_constant_bandwidth_ssim_session_closed_form() -> None:
    """100 Mbit/s, constant: rate-based fetches chunk 0 at level 1 (the first level of every
    session), then the top level (its throughput samples are far above 1.2 Mbit/s) without a
    stall, so the session's SSIM QoE over chunks 2..5 is
    ((21 - |21 - 12|) + (19 - 2) + (22 - 3) + (20 - 2)) / 4 = (12 + 17 + 19 + 18) / 4 = 16.5."""
    trace = Trace("flat100", np.arange(0.0, 600.0), np.full(600, 100.0))
    described = video(ssim_db=SSIM_DB)
    result = evaluate([trace], described, ["rb"], qoe_name="ssim", progress=False)
    records = result.sessions[("rb", "flat100")]
    assert [r.quality for r in records] == [1, 2, 2, 2, 2]
    assert [r.rebuffer_s for r in records[1:]] == [0.0] * 4
    assert [r.qoe for r in records[1:]] == pytest.approx([12.0, 17.0, 19.0, 18.0])
    assert result.metrics[0].qoe == pytest.approx(16.5)
    lin = evaluate([trace], described, ["rb"], qoe_name="lin", progress=False).metrics[0].qoe
    assert lin == pytest.approx((1.2 - 0.45 + 1.2 * 3) / 4)  # the bitrate metric, for contrast


def test_rescore_records_under_another_metric() -> None:
    metric = make_qoe("ssim", video(ssim_db=SSIM_DB))
    base = dict(
        run_id="r", session_id="s", trace="t", algorithm="a", bitrate_kbps=0, chunk_bytes=1,
        request_start_s=0.0, request_end_s=1.0, download_s=1.0, throughput_kbps=1.0,
        buffer_before_s=0.0, buffer_s=4.0, sleep_s=0.0, qoe=0.0,
    )  # fmt: skip
    records = [
        ChunkRecord(chunk_index=k, quality=q, rebuffer_s=s, **base)  # type: ignore[arg-type]
        for k, (q, s) in enumerate([(1, 1.0), (2, 0.0), (2, 0.25)])
    ]
    got = [r.qoe for r in rescore(records, metric)]
    assert got == pytest.approx([12.0 - 100.0, 21.0 - 9.0, 19.0 - 25.0 - 2.0])
    assert [dataclasses.replace(r, qoe=0.0) for r in rescore(records, metric)] == records


STREAMBED = Path(sys.executable).parent / "streambed"


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--qoe", "ssim", "--algorithms", "bba"],
        ["train", "ppo", "--qoe", "vmaf", "--minutes", "0.1"],
        ["emulate", "--traces", "TRACES", "--video", "VIDEO", "--algorithms", "bba", "--qoe",
         "ssim"],
    ],
)  # fmt: skip
def test_cli_refuses_measured_metrics_without_measurements(tmp_path: Path, argv: list[str]) -> None:
    """A description without SSIM/VMAF (here the embedded generated video, or a Pensieve-style
    one): one line naming what is missing, exit status 2, nothing written."""
    traces = tmp_path / "traces"
    traces.mkdir()
    (traces / "t1").write_text("0\t3\n1\t3\n")
    described = video().save(tmp_path / "video")
    argv = [str(traces) if a == "TRACES" else str(described) if a == "VIDEO" else a for a in argv]
    out = tmp_path / "out"
    result = subprocess.run(
        [str(STREAMBED), *argv, "--out", str(out)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if " INFO " not in line and line]
    assert len(lines) == 1 and "error:" in lines[0], result.stderr
    assert "ssim" in lines[0].lower() or "vmaf" in lines[0].lower(), lines[0]
    assert not (out / "summary.json").exists()


def test_report_rescores_a_run_under_ssim(tmp_path: Path) -> None:
    """An eval run scored with lin, reported with ``--qoe ssim``: the page is written, and the
    rescored metrics equal an eval run scored with ssim; without a video, one line, exit 2."""
    from streambed.reports.html import rescore_source
    from streambed.reports.load import load_report_dir

    described = video(ssim_db=SSIM_DB)
    path = described.save(tmp_path / "video")
    trace = Trace("flat100", np.arange(0.0, 600.0), np.full(600, 100.0))
    evaluate(
        [trace], described, ["rb", "bba"], qoe_name="lin", out=tmp_path / "lin", progress=False
    )
    ssim = evaluate([trace], described, ["rb", "bba"], qoe_name="ssim", progress=False)
    source = load_report_dir(tmp_path / "lin")
    rescore_source(source, "ssim", path)
    assert [m.qoe for m in source.metrics] == pytest.approx([m.qoe for m in ssim.metrics])
    run = [str(STREAMBED), "report", str(tmp_path / "lin"), "--qoe", "ssim"]
    page = tmp_path / "page.html"
    done = subprocess.run([*run, "--video", str(path), "--html", str(page)], capture_output=True)
    assert done.returncode == 0 and page.is_file(), done.stderr
    refused = subprocess.run(
        [*run, "--html", str(tmp_path / "x.html")], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "--video" in refused.stderr, refused.stderr
