"""``streambed emulate`` end to end: real sessions behind netns links (needs root, as test_link).

A small generated video (6 chunks of 1 s, 3 levels) over two constant 8 Mbit/s traces, BBA and
RobustMPC, two sessions at a time: the origin and a ``streambed serve`` process are started by
the command itself. Then ``--resume`` reruns nothing, and a garbage trace fails (twice, retried
once) while the good one completes.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from abr_service.video import generate_video
from emulation import netns
from reports.sessionlog import read_jsonl
from streambed.cli import main

ALGOS = ("bba", "robustmpc")
CHUNKS = 6


def write_trace(path: Path, mbps: float, seconds: int = 60) -> Path:
    path.write_text("".join(f"{t}\t{mbps}\n" for t in range(seconds)))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("emulate-inputs")
    video = generate_video(num_chunks=CHUNKS, chunk_s=1.0, bitrates_kbps=(300, 750, 1850))
    video_json = video.save(root / "video.json")
    traces = root / "traces"
    traces.mkdir()
    write_trace(traces / "steady_a", 8.0)
    write_trace(traces / "steady_b", 6.0)
    return traces, video_json


def emulate_netns(traces: Path, video_json: Path, out: Path, algorithms: str, *extra: str) -> int:
    """``streambed emulate`` in-process, two sessions at a time behind netns links."""
    argv = ["emulate", "--traces", str(traces), "--video", str(video_json)]
    argv += ["--algorithms", algorithms, "--link", "netns", "--parallel", "2", "--no-progress"]
    return main([*argv, *extra, "--out", str(out)])


@pytest.fixture(scope="module")
def emulated(inputs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    traces, video_json = inputs
    out = tmp_path_factory.mktemp("emulate") / "out"
    before = set(netns.list_namespaces())
    code = emulate_netns(traces, video_json, out, ",".join(ALGOS), "--delay-ms", "10")
    assert code == 0, (out / "failed.json").read_text()
    assert set(netns.list_namespaces()) <= before, "namespaces left behind"
    return out


def test_emulate_writes_the_eval_report(emulated: Path) -> None:
    summary = json.loads((emulated / "summary.json").read_text())
    assert set(summary["algorithms"]) == set(ALGOS)
    for stats in summary["algorithms"].values():
        assert stats["traces"] == 2
        assert stats["bitrate_mean_kbps"] > 0
    assert summary["sessions"] == {"planned": 4, "done": 4, "failed": 0}
    assert summary["link"] == "netns" and summary["complete"] is True
    with open(emulated / "per_trace.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((r["algorithm"], r["trace"]) for r in rows) == sorted(
        (a, t) for a in ALGOS for t in ("steady_a", "steady_b")
    )
    assert all(int(r["chunks"]) == CHUNKS for r in rows)
    assert json.loads((emulated / "failed.json").read_text()) == []
    for algorithm in ALGOS:
        for trace in ("steady_a", "steady_b"):
            session = emulated / "sessions" / algorithm / trace
            records = read_jsonl(session / "chunks.jsonl")
            assert len(records) == CHUNKS
            assert {r.algorithm for r in records} == {algorithm}
            info = json.loads((session / "session.json").read_text())
            assert info["status"] == "done"
            assert info["fallbacks"] == 0  # the started service decided every chunk
            assert (emulated / "logs" / algorithm / f"log_{algorithm}_{trace}").is_file()
    assert (emulated / "qoe_cdf.png").is_file()


def test_resume_reruns_nothing(emulated: Path, inputs: tuple[Path, Path]) -> None:
    traces, video_json = inputs
    logs = sorted(emulated.glob("sessions/*/*/chunks.jsonl"))
    stamps = [p.stat().st_mtime_ns for p in logs]
    started = time.monotonic()
    code = emulate_netns(traces, video_json, emulated, ",".join(ALGOS), "--resume")
    assert code == 0
    assert time.monotonic() - started < 10  # no service started, no session played
    assert [p.stat().st_mtime_ns for p in logs] == stamps
    summary = json.loads((emulated / "summary.json").read_text())
    assert all(s["traces"] == 2 for s in summary["algorithms"].values())


def test_a_failing_session_is_retried_once_and_reported(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    _, video_json = inputs
    traces = tmp_path / "traces"
    traces.mkdir()
    write_trace(traces / "good", 8.0)
    (traces / "garbage").write_text("this is not a trace\n\x00\x01\n")
    out = tmp_path / "out"
    # No service at --abr: the player decides itself (BBA).
    code = emulate_netns(traces, video_json, out, "bba", "--abr", "http://127.0.0.1:9")
    assert code == 1
    failed = json.loads((out / "failed.json").read_text())
    assert [(f["algorithm"], f["trace"], f["attempts"]) for f in failed] == [("bba", "garbage", 2)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algorithms"]["bba"]["traces"] == 1
    assert summary["sessions"] == {"planned": 2, "done": 1, "failed": 1}
    assert summary["complete"] is False


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["emulate", "--help"])
    assert exc.value.code == 0
    assert "--resume" in capsys.readouterr().out


def test_ctrl_c_stops_cleanly_with_a_partial_report(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    _, video_json = inputs
    traces = tmp_path / "traces"
    traces.mkdir()
    write_trace(traces / "slow_a", 0.2)  # about 1.5 s per chunk: a session lasts ~10 s
    write_trace(traces / "slow_b", 0.2)
    out = tmp_path / "out"
    before = set(netns.list_namespaces())
    proc = subprocess.Popen(
        [sys.executable, "-m", "streambed", "emulate", "--traces", str(traces)]
        + ["--video", str(video_json), "--algorithms", "bba", "--abr", "http://127.0.0.1:9"]
        + ["--link", "netns", "--parallel", "2", "--no-progress", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while len(list(out.glob("sessions/bba/*/chunks.jsonl"))) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, "sessions never started"
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, f"exit {proc.returncode}: {output[-2000:]}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["complete"] is False
    assert summary["sessions"]["done"] == 0
    assert json.loads((out / "failed.json").read_text()) == []
    assert set(netns.list_namespaces()) <= before, "namespaces left behind"
