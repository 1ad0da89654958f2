"""Tests of ``streambed eval`` and ``streambed demo`` run in-process through ``streambed.cli.main``."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from streambed.abr_service.architectures import PensievePPOActor
from streambed.cli import main
from streambed.reports.sessionlog import ChunkRecord, read_jsonl

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
NORWAY_TEST = SHARED / "data" / "traces" / "norway-test"
ENVIVIO = SHARED / "data" / "video" / "envivio"

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALGOS = ("bba", "robustmpc", "optimal")
TRACE_COUNT = 24  # streambed.traces.synth.DEFAULT_TRACE_COUNT
CHUNKS = 48


@pytest.fixture(scope="module")
def default_eval(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One evaluation on the embedded defaults, shared by the report tests."""
    out = tmp_path_factory.mktemp("eval") / "report"
    code = main(["eval", "--out", str(out), "--algorithms", ",".join(ALGOS), "--no-progress"])
    assert code == 0
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def pensieve_rows(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------
# The report of one evaluation


def test_summary_json(default_eval: Path) -> None:
    summary = json.loads((default_eval / "summary.json").read_text())
    assert list(summary["algorithms"]) == list(ALGOS)
    for name in ALGOS:
        entry = summary["algorithms"][name]
        for key in ("qoe_mean", "bitrate_mean_kbps", "rebuffer_ratio", "switches_per_chunk"):
            assert isinstance(entry[key], float), (name, key)
            assert np.isfinite(entry[key])
        assert entry["traces"] == TRACE_COUNT
        assert 300 <= entry["bitrate_mean_kbps"] <= 4300
        assert 0 <= entry["rebuffer_ratio"] < 1
        assert 0 <= entry["switches_per_chunk"] <= 1
    assert summary["qoe"] == "lin"
    assert summary["traces"] == TRACE_COUNT
    assert summary["mode"] == "test"


def test_per_trace_csv(default_eval: Path) -> None:
    rows = read_csv(default_eval / "per_trace.csv")
    assert len(rows) == len(ALGOS) * TRACE_COUNT
    pairs = {(r["algorithm"], r["trace"]) for r in rows}
    assert len(pairs) == len(rows)  # one row per (algorithm, trace)
    assert {a for a, _ in pairs} == set(ALGOS)
    assert all(r["chunks"] == str(CHUNKS) for r in rows)
    # The summary's means are the means of these rows.
    summary = json.loads((default_eval / "summary.json").read_text())["algorithms"]
    for name in ALGOS:
        qoe = [float(r["qoe"]) for r in rows if r["algorithm"] == name]
        assert summary[name]["qoe_mean"] == pytest.approx(np.mean(qoe), rel=1e-12)


def test_optimal_beats_every_algorithm_on_every_trace(default_eval: Path) -> None:
    qoe: dict[str, dict[str, float]] = defaultdict(dict)
    for row in read_csv(default_eval / "per_trace.csv"):
        qoe[row["trace"]][row["algorithm"]] = float(row["qoe"])
    assert len(qoe) == TRACE_COUNT
    for trace, by_algo in qoe.items():
        for name in ("bba", "robustmpc"):
            assert by_algo["optimal"] >= by_algo[name] - 1e-9, (trace, name, by_algo)


def test_pensieve_logs(default_eval: Path) -> None:
    rows = read_csv(default_eval / "per_trace.csv")
    traces = sorted({r["trace"] for r in rows})
    for name in ALGOS:
        logs = sorted(p.name for p in (default_eval / "logs" / name).iterdir())
        assert logs == sorted(f"log_{name}_{t}" for t in traces)
    for row in rows:
        name, trace = row["algorithm"], row["trace"]
        lines = pensieve_rows(default_eval / "logs" / name / f"log_{name}_{trace}")
        assert len(lines) == CHUNKS
        assert all(len(fields) == 7 for fields in lines)
        values = np.array(lines, dtype=np.float64)
        assert (np.diff(values[:, 0]) > 0).all()  # the session clock moves forward
        assert set(values[:, 1]) <= {300, 750, 1200, 1850, 2850, 4300}
        assert values[0, 1] == 750  # the first chunk at the default level 1
        # Pensieve's reader: mean reward of lines 2..48 is the trace's QoE.
        assert values[1:, 6].mean() == pytest.approx(float(row["qoe"]), rel=1e-9, abs=1e-12)
        # Bitrate and stall columns agree with the CSV too.
        assert values[1:, 1].mean() == pytest.approx(float(row["bitrate_mean_kbps"]))
        assert values[1:, 3].sum() == pytest.approx(float(row["rebuffer_s"]), abs=1e-9)


def test_jsonl_sessions(default_eval: Path) -> None:
    for name in ALGOS:
        files = sorted((default_eval / "sessions" / name).iterdir())
        assert len(files) == TRACE_COUNT
    # The run-directory layout that `streambed emulate` writes too.
    path = default_eval / "sessions" / "robustmpc" / "synth_003" / "chunks.jsonl"
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(raw) == CHUNKS
    assert set(raw[0]) == set(ChunkRecord.__dataclass_fields__)
    records = read_jsonl(path)
    assert [r.chunk_index for r in records] == list(range(CHUNKS))
    assert all(r.algorithm == "robustmpc" and r.trace == "synth_003" for r in records)
    # Same chunks as the Pensieve log of that session.
    log = np.array(
        pensieve_rows(default_eval / "logs" / "robustmpc" / "log_robustmpc_synth_003"),
        dtype=np.float64,
    )
    assert np.allclose(log[:, 6], [r.qoe for r in records])
    assert np.allclose(log[:, 4], [r.chunk_bytes for r in records])
    assert np.allclose(log[:, 5], [r.download_s * 1000 for r in records])


def test_png_plots(default_eval: Path) -> None:
    for name in ("qoe_cdf.png", "bitrate_vs_rebuffer.png"):
        data = (default_eval / name).read_bytes()
        assert data[:8] == PNG_MAGIC
        assert len(data) > 1000


# ------------------------------------------------------------------------------------------
# Error paths: exit code 2 and one line on stderr


def run_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("streambed eval: error: ")
    return lines[0]


def test_malformed_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    traces = tmp_path / "traces"
    traces.mkdir()
    (traces / "good").write_text("0.0 1.0\n1.0 2.0\n2.0 3.0\n")
    (traces / "bad").write_text("0.0 1.0\n1.0 2.0\n2.0 3.0 4.0\n3.0 1.0\n")
    line = run_error(capsys, ["eval", "--out", str(tmp_path / "o"), "--traces", str(traces)])
    assert str(traces / "bad") in line
    assert "line 3" in line
    assert "2 columns" in line
    assert not (tmp_path / "o").exists()


def test_bad_video_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = tmp_path / "video"
    video.mkdir()
    (video / "notes.txt").write_text("nothing here\n")
    line = run_error(capsys, ["eval", "--out", str(tmp_path / "o"), "--video", str(video)])
    assert str(video) in line
    assert "not a video description" in line


def test_ppo_without_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = run_error(capsys, ["eval", "--out", str(tmp_path / "o"), "--algorithms", "ppo"])
    assert "--model" in line


def test_model_of_wrong_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "five_levels.pth"
    torch.save(PensievePPOActor(5).state_dict(), model)
    argv = ["eval", "--out", str(tmp_path / "o"), "--algorithms", "ppo", "--model", str(model)]
    line = run_error(capsys, [*argv, "--no-progress"])
    assert str(model) in line
    assert "shape" in line
    assert "6-level" in line


def test_model_that_is_a_text_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "notes.pth"
    model.write_text("hello world\n")
    argv = ["eval", "--out", str(tmp_path / "o"), "--algorithms", "ppo", "--model", str(model)]
    line = run_error(capsys, [*argv, "--no-progress"])
    assert str(model) in line


def test_unknown_algorithm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = run_error(capsys, ["eval", "--out", str(tmp_path / "o"), "--algorithms", "bba,mpc2"])
    assert "mpc2" in line
    assert "robustmpc" in line  # the known names are listed
    assert "optimal" in line


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ("bba.reservoir_s", "expected ALGO.KEY=VALUE"),  # no value
        ("reservoir_s=8", "expected ALGO.KEY=VALUE"),  # no algorithm
        ("bba.reservoir=8", "'reservoir'"),  # unknown key
        ("bba.reservoir_s=lots", "reservoir_s"),  # bad value
    ],
)
def test_bad_param(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], param: str, expected: str
) -> None:
    argv = ["eval", "--out", str(tmp_path / "o"), "--algorithms", "bba", "--param", param]
    line = run_error(capsys, [*argv, "--no-progress"])
    assert expected in line


def test_param_reaches_the_algorithm(tmp_path: Path) -> None:
    # A reservoir larger than the buffer cap: BBA then never leaves level 0 after chunk 1.
    out = tmp_path / "o"
    argv = ["eval", "--out", str(out), "--algorithms", "bba", "--param", "bba.reservoir_s=100"]
    assert main([*argv, "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algorithms"]["bba"]["bitrate_mean_kbps"] == 300.0
    assert summary["params"] == {"bba": {"reservoir_s": "100"}}


# ------------------------------------------------------------------------------------------
# demo and --help


def test_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--sim-only", "--out", str(out), "--traces", "3", "--no-progress"]) == 0
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert list(summary["algorithms"]) == [
        *("bba", "rb", "bola", "fastmpc", "robustmpc", "ppo", "optimal")
    ]
    assert all(entry["traces"] == 3 for entry in summary["algorithms"].values())
    assert sorted(p.name for p in (out / "traces").iterdir()) == [
        "synth_000",
        "synth_001",
        "synth_002",
    ]
    assert (out / "video" / "video.json").is_file()
    assert (out / "eval" / "qoe_cdf.png").read_bytes()[:8] == PNG_MAGIC
    assert "report:" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["eval", "traces", "demo"])
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert f"usage: streambed {command}" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------
# The published number


@pytest.mark.skipif(
    not (NORWAY_TEST.is_dir() and ENVIVIO.is_dir()),
    reason=f"shared data not present ({SHARED} lacks data/traces/norway-test or data/video/envivio)",
)
def test_bba_on_norway_matches_pensieve_ppo(tmp_path: Path) -> None:
    out = tmp_path / "norway"
    argv = ["eval", "--traces", str(NORWAY_TEST), "--video", str(ENVIVIO), "--algorithms", "bba"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    bba = summary["algorithms"]["bba"]
    assert bba["traces"] == len([p for p in NORWAY_TEST.iterdir() if not p.name.startswith(".")])
    # Pensieve-PPO's published BBA result on the Norway test set: 0.6392.
    assert bba["qoe_mean"] == pytest.approx(0.6392, abs=0.0005)


@pytest.mark.parametrize(
    ("algorithms", "expected"),
    [("bba,,robustmpc", "empty name"), ("bba,", "empty name"), ("bba,rb,bba", "bba given")],
)
def test_algorithm_list_refuses_empty_and_repeated_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], algorithms: str, expected: str
) -> None:
    argv = ["eval", "--out", str(tmp_path / "o"), "--algorithms", algorithms, "--no-progress"]
    line = run_error(capsys, argv)
    assert f"--algorithms {algorithms!r}" in line
    assert expected in line


def test_error_mid_run_is_not_glued_onto_the_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # bba runs (the bar is drawn), then the model fails to load: the bar is closed first, so
    # the error starts its own line instead of continuing the bar's.
    model = tmp_path / "five_levels.pth"
    torch.save(PensievePPOActor(5).state_dict(), model)
    argv = ["eval", "--out", str(tmp_path / "o"), "--algorithms", "bba,ppo", "--model", str(model)]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "eval:" in err  # the bar was drawn
    last = err.rstrip("\n").split("\n")[-1]
    assert last.split("\r")[-1].startswith("streambed eval: error: "), repr(last)
    assert "session/s]streambed" not in err and "|streambed" not in err


def test_optimal_plans_move_the_bar_as_they_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    # The planner yields each plan (in trace order) as it finishes, from worker processes too,
    # rather than all of them at once at the end.
    import streambed.trainer.evaluate as evaluate_module
    from streambed.abr_service.qoe import make_qoe
    from streambed.abr_service.video import default_video
    from streambed.traces.synth import default_traces
    from streambed.trainer.simulator import SimConfig

    traces, video = default_traces()[:3], default_video()
    qoe = make_qoe("lin", video.bitrates_kbps)
    got = evaluate_module._optimal_plans(traces, video, qoe, SimConfig(), workers=2)
    assert iter(got) is got  # an iterator, not a finished list
    plans = list(got)
    expected = [evaluate_module.plan_optimal(t, video, qoe, SimConfig()) for t in traces]
    assert plans == expected


def test_eval_in_the_emulations_timing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--sim wall`` simulates with SimConfig.faithful of --delay-ms and --decision-ms (recorded
    in summary.json); the offline optimum, planned in Pensieve's timing, is refused."""
    out = tmp_path / "wall"
    argv = ["eval", "--out", str(out), "--algorithms", "bba", "--sim", "wall", "--no-progress"]
    assert main([*argv, "--delay-ms", "20", "--decision-ms", "70"]) == 0
    config = json.loads((out / "summary.json").read_text())["sim_config"]
    assert config["timing"] == "wall" and config["rtt_s"] == config["decision_s"] == 0.07
    line = run_error(capsys, [*argv[:-4], "bba,optimal", "--sim", "wall"])
    assert "optimal" in line and "--sim pensieve" in line
