"""``streambed emulate`` end to end: real sessions behind netns links (needs root, as test_link).

A small generated video (5 chunks of 1 s, 3 levels) over three constant 5-8 Mbit/s traces, BBA
and RobustMPC, two sessions at a time: the origin and a ``streambed serve`` process are started by
the command itself. Then ``--resume`` reruns nothing, and a garbage trace fails (twice, retried
once) while the good one completes.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streambed.abr_service.video import generate_video
from streambed.cli import main
from streambed.emulation import netns
from streambed.reports.sessionlog import read_jsonl

ALGOS = ("bba", "robustmpc")
CHUNKS = 5
TRACES = ("steady_a", "steady_b", "steady_c")


def namespaces_of(pid: int) -> list[str]:
    """The netns links process ``pid`` made that still exist (other emulations may be running
    on this machine: only our own count)."""
    return [n for n in netns.list_namespaces() if n.startswith(f"{netns.NETNS_PREFIX}{pid}-")]


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
    for name, mbps in zip(TRACES, (8.0, 6.0, 5.0), strict=True):
        write_trace(traces / name, mbps)
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
    code = emulate_netns(
        traces, video_json, out, ",".join(ALGOS), "--delay-ms", "10", "--compare-sim"
    )
    assert code == 0, (out / "failed.json").read_text()
    assert namespaces_of(os.getpid()) == [], "namespaces left behind"
    return out


def test_emulate_writes_the_eval_report(emulated: Path) -> None:
    summary = json.loads((emulated / "summary.json").read_text())
    assert set(summary["algorithms"]) == set(ALGOS)
    for stats in summary["algorithms"].values():
        assert stats["traces"] == len(TRACES)
        assert stats["bitrate_mean_kbps"] > 0
    planned = len(TRACES) * len(ALGOS)
    assert summary["sessions"] == {"planned": planned, "done": planned, "failed": 0}
    assert summary["link"] == "netns" and summary["complete"] is True
    window = {"chunks_min": CHUNKS, "chunks_max": CHUNKS, "video_chunks": CHUNKS}
    assert summary["chunk_window"] == window and len(summary["video_sha256"]) == 64
    with open(emulated / "per_trace.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((r["algorithm"], r["trace"]) for r in rows) == sorted(
        (a, t) for a in ALGOS for t in TRACES
    )
    assert all(int(r["chunks"]) == CHUNKS for r in rows)
    assert json.loads((emulated / "failed.json").read_text()) == []
    for algorithm in ALGOS:
        for trace in TRACES:
            session = emulated / "sessions" / algorithm / trace
            records = read_jsonl(session / "chunks.jsonl")
            assert len(records) == CHUNKS
            assert {r.algorithm for r in records} == {algorithm}
            info = json.loads((session / "session.json").read_text())
            assert info["status"] == "done"
            assert info["fallbacks"] == 0  # the started service decided every chunk
            assert (emulated / "logs" / algorithm / f"log_{algorithm}_{trace}").is_file()
    assert (emulated / "qoe_cdf.png").is_file()


def test_compare_sim(emulated: Path) -> None:
    """``--compare-sim`` simulated the same sessions (OUT/sim) and compared them per trace."""
    sim = json.loads((emulated / "sim" / "summary.json").read_text())
    assert sim["mode"] == "test" and set(sim["algorithms"]) == set(ALGOS)
    with open(emulated / "sim_vs_emu.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((r["algorithm"], r["trace"]) for r in rows) == sorted(
        (a, t) for a in ALGOS for t in TRACES
    )
    emulated_qoe = {
        (r["algorithm"], r["trace"]): float(r["qoe"]) for r in report_rows(emulated).values()
    }
    for row in rows:
        key = (row["algorithm"], row["trace"])
        assert float(row["emu_qoe"]) == pytest.approx(emulated_qoe[key])
        assert float(row["qoe_gap"]) == pytest.approx(float(row["emu_qoe"]) - float(row["sim_qoe"]))
    found = json.loads((emulated / "sim_vs_emu.json").read_text())
    assert found["overall"]["count"] == len(rows)
    assert found["mismatches"] == [] and found["unknown"] == []  # the same window and video
    assert found["overall"]["qoe_gap_mean_abs"] == pytest.approx(
        sum(abs(float(r["qoe_gap"])) for r in rows) / len(rows)
    )
    assert (emulated / "sim_vs_emu.png").read_bytes()[:4] == b"\x89PNG"


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
    assert all(s["traces"] == len(TRACES) for s in summary["algorithms"].values())


def test_a_failing_session_is_retried_once_and_reported(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    _, video_json = inputs
    traces = tmp_path / "traces"
    traces.mkdir()
    write_trace(traces / "good", 8.0)
    (traces / "garbage").write_text("this is not a trace\n\x00\x01\n")
    out = tmp_path / "out"
    code = emulate_netns(traces, video_json, out, "bba")
    assert code == 1
    failed = json.loads((out / "failed.json").read_text())
    assert [(f["algorithm"], f["trace"], f["attempts"]) for f in failed] == [("bba", "garbage", 2)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algorithms"]["bba"]["traces"] == 1
    assert summary["sessions"] == {"planned": 2, "done": 1, "failed": 1}
    assert summary["complete"] is False


def test_sessions_no_service_answered_are_failed(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    # No service at --abr: every chunk is played (local BBA decides), but such a session does
    # not measure the algorithm asked, so it is failed, not in the report.
    _, video_json = inputs
    traces = tmp_path / "traces"
    traces.mkdir()
    write_trace(traces / "good", 8.0)
    out = tmp_path / "out"
    code = emulate_netns(traces, video_json, out, "bba", "--abr", "http://127.0.0.1:9")
    assert code == 1
    [failed] = json.loads((out / "failed.json").read_text())
    assert (failed["trace"], failed["attempts"]) == ("good", 2)
    assert "no decision came from the decision service" in failed["reasons"][0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sessions"] == {"planned": 1, "done": 0, "failed": 1}


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
    write_trace(traces / "slow_a", 0.05)  # about 6 s per chunk: a session lasts ~30 s
    write_trace(traces / "slow_b", 0.05)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streambed", "emulate", "--traces", str(traces)]
        + ["--video", str(video_json), "--algorithms", "bba", "--abr", "http://127.0.0.1:9"]
        + ["--link", "netns", "--parallel", "2", "--no-progress", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A shell starting pytest in the background makes it ignore SIGINT, and children
        # inherit that; Ctrl-C reaches a foreground emulation with the default action.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
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
    assert namespaces_of(proc.pid) == [], "namespaces left behind"


def report_rows(out: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(out / "per_trace.csv", newline="") as fh:
        return {(r["algorithm"], r["trace"]): r for r in csv.DictReader(fh)}


def test_killed_and_resumed_equals_uninterrupted(
    emulated: Path, inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    """SIGTERM after the first session, then ``--resume``: the report equals the uninterrupted
    run's (``emulated``: same traces, algorithms and video). Constant 5-8 Mbit/s links leave
    no room for timing noise in the decisions of BBA or RobustMPC, so the QoE is exact."""
    traces, video_json = inputs
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streambed", "emulate", "--traces", str(traces)]
        + ["--video", str(video_json), "--algorithms", ",".join(ALGOS), "--delay-ms", "10"]
        + ["--link", "netns", "--parallel", "1", "--no-progress", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(
            json.loads(p.read_text()).get("status") == "done"
            for p in out.glob("sessions/*/*/session.json")
        ):
            assert time.monotonic() < deadline and proc.poll() is None, "no session finished"
            time.sleep(0.05)
        proc.terminate()
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, f"exit {proc.returncode}: {output[-2000:]}"
    partial = json.loads((out / "summary.json").read_text())
    planned = len(TRACES) * len(ALGOS)
    assert partial["interrupted"] is True
    assert 1 <= partial["sessions"]["done"] < planned
    assert len(report_rows(out)) == partial["sessions"]["done"]
    assert namespaces_of(proc.pid) == [], "namespaces left behind"

    code = emulate_netns(traces, video_json, out, ",".join(ALGOS), "--delay-ms", "10", "--resume")
    assert code == 0, (out / "failed.json").read_text()
    resumed = json.loads((out / "summary.json").read_text())
    uninterrupted = json.loads((emulated / "summary.json").read_text())
    assert resumed["sessions"] == uninterrupted["sessions"]
    assert resumed["complete"] is True
    assert resumed["algorithms"].keys() == uninterrupted["algorithms"].keys()
    for name, stats in uninterrupted["algorithms"].items():
        for key in ("traces", "qoe_mean", "bitrate_mean_kbps", "switches_per_chunk"):
            assert resumed["algorithms"][name][key] == pytest.approx(stats[key]), (name, key)
    rows, expected = report_rows(out), report_rows(emulated)
    assert rows.keys() == expected.keys()
    for (algorithm, trace), row in expected.items():
        got = rows[(algorithm, trace)]
        assert got["chunks"] == row["chunks"]
        assert float(got["qoe"]) == pytest.approx(float(row["qoe"]), abs=1e-9), (algorithm, trace)
        chunks = Path("sessions") / algorithm / trace / "chunks.jsonl"
        assert [r.quality for r in read_jsonl(out / chunks)] == [
            r.quality for r in read_jsonl(emulated / chunks)
        ]


def test_repeats_report_their_spread_and_start_at_the_first_request(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    """``--repeat 3`` plays every session three times (``<trace>-r1..3``), writes the spread per
    trace (repeats.csv, summary.json's run_to_run) and prints it; every session's trace began
    at its own first request (the MPD), just after its clock's zero, as the default says."""
    traces, video_json = inputs
    one = tmp_path / "one"
    one.mkdir()
    write_trace(one / "steady", 6.0)
    out = tmp_path / "out"
    code = emulate_netns(one, video_json, out, "bba", "--repeat", "3", "--delay-ms", "10")
    assert code == 0, (out / "failed.json").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trace_start"] == "first-packet" and summary["repeat"] == 3
    spread = summary["run_to_run"]["bba"]
    assert spread["traces"] == 1 and spread["repeats"] == 3
    with open(out / "repeats.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["algorithm"], r["trace"], r["n"]) for r in rows] == [("bba", "steady", "3")]
    with open(out / "per_trace.csv", newline="") as fh:
        qoe = [float(r["qoe"]) for r in csv.DictReader(fh)]
    assert float(rows[0]["qoe_range"]) == pytest.approx(max(qoe) - min(qoe))
    for r in (1, 2, 3):
        info = json.loads((out / "sessions" / "bba" / f"steady-r{r}" / "session.json").read_text())
        assert -1.0 < info["link"]["trace_offset_s"] <= 0, info["link"]
