"""Simulation versus emulation (``streambed.reports.fidelity``) and ``streambed calibrate``.

Most tests use a fabricated emulation directory: sessions produced by the simulator itself with
known link constants (rtt 0.12 s, payload factor 0.9), laid out as ``streambed emulate`` lays
them out (summary.json with traces_dir, per_trace.csv, content/video.json, sessions/...), with
each chunk's ``request_start_s`` set to its trace position, so that the download fit must find
those constants and the re-simulated QoE gap must vanish. The last test runs a tiny real
emulation behind netns links (needs root, as test_emulate).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streambed.abr_service.video import Video, generate_video
from streambed.cli import main
from streambed.core.errors import ConfigError
from streambed.emulation import calibrate as calibrate_module
from streambed.emulation.calibrate import (
    SessionSamples,
    TraceLink,
    fit_download,
    model_download_s,
)
from streambed.reports.fidelity import (
    SIM_VS_EMU_CSV,
    SIM_VS_EMU_JSON,
    SIM_VS_EMU_PNG,
    compare,
    compare_matched,
    read_per_trace,
    write_sim_vs_emu,
)
from streambed.reports.sessionlog import ChunkRecord, read_jsonl, write_jsonl
from streambed.reports.summary import SessionMetrics, session_metrics, write_report
from streambed.traces import Trace, load_traceset
from streambed.traces.formats import save_pensieve
from streambed.trainer.evaluate import evaluate
from streambed.trainer.replay import (
    _simulate_once,
    plan_from_emulation,
    rotate_trace,
    simulate_like,
    simulate_plan,
)
from streambed.trainer.simulator import SimConfig, Simulator

TRUE = SimConfig(rtt_s=0.12, payload_factor=0.9)
ALGOS = ("bba", "robustmpc")
STEMS = ("t0", "t1")
CUT = {("bba", "t1-r2"): 4}  # one session stopped early, as --max-chunks does


def random_trace(name: str, seed: int, lines: int = 90) -> Trace:
    rng = np.random.default_rng(seed)
    times = np.cumsum(np.concatenate([[0.0], rng.uniform(0.5, 1.5, lines - 1)]))
    return Trace(name=name, times_s=times, mbps=rng.uniform(0.4, 6.0, lines))


def small_video() -> Video:
    return generate_video(seed=3, num_chunks=8, chunk_s=2.0)


# ---------------------------------------------------------------------------------------------
# A fabricated emulation


def at_trace_positions(records: list[ChunkRecord], rtt_s: float) -> list[ChunkRecord]:
    """The simulator's clock counts the round trips, its trace position does not: put every
    request at its trace position (the session clock of a link with offset 0)."""
    out, position = [], 0.0
    for r in records:
        out.append(
            dataclasses.replace(r, request_start_s=position, request_end_s=position + r.download_s)
        )
        position += r.download_s - rtt_s + r.sleep_s
    return out


def fabricate_emulation(root: Path, *, repeat: int = 2, summary_extra: dict | None = None) -> Path:
    traces_dir = root / "traces"
    traces_dir.mkdir(parents=True)
    for i, stem in enumerate(STEMS):
        save_pensieve(random_trace(stem, seed=10 + i), traces_dir / stem)
    video = small_video()
    emu = root / "emu"
    (emu / "content").mkdir(parents=True)
    video.save(emu / "content" / "video.json")
    result = evaluate(load_traceset(traces_dir), video, ALGOS, config=TRUE, progress=False)
    metrics = []
    for (algorithm, stem), records in result.sessions.items():
        for r in range(1, repeat + 1):
            label = f"{stem}-r{r}" if repeat > 1 else stem
            kept = at_trace_positions(records, TRUE.rtt_s)[: CUT.get((algorithm, label))]
            kept = [dataclasses.replace(c, trace=label) for c in kept]
            where = emu / "sessions" / algorithm / label
            write_jsonl(kept, where / "chunks.jsonl")
            session = {
                "status": "done",
                "chunk_s": video.chunk_s,
                "link": {"kind": "netns", "trace_offset_s": 0.0},
                "config": {"buffer_cap_s": 60.0, "sleep_step_s": 0.5, "first_quality": 1},
            }
            (where / "session.json").write_text(json.dumps(session))
            found = session_metrics(kept, video.chunk_s)
            metrics.append(dataclasses.replace(found, algorithm=algorithm, trace=label))
    extra = {"mode": "emulation", "traces_dir": str(traces_dir), "repeat": repeat}
    write_report(
        emu, metrics, {**extra, "link": "netns", "delay_ms": 40.0, **(summary_extra or {})}
    )
    return emu


@pytest.fixture(scope="module")
def emulation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fabricate_emulation(tmp_path_factory.mktemp("fidelity"))


# ---------------------------------------------------------------------------------------------
# compare and the sim_vs_emu files


def write_per_trace(
    directory: Path, rows: list[tuple[str, str, float, float, float, float]]
) -> Path:
    """(algorithm, trace, qoe, bitrate, rebuffer_s, rebuffer_ratio) rows, 12 chunks each."""
    metrics = [SessionMetrics(a, t, q, b, rs, rr, 0.1, 12) for a, t, q, b, rs, rr in rows]
    write_report(directory, metrics)
    return directory


def test_compare_by_hand(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sim = write_per_trace(
        tmp_path / "sim",
        [
            ("bba", "a", 1.0, 1000.0, 0.0, 0.0),
            ("bba", "b", 2.0, 2000.0, 1.0, 0.02),
            ("mpc", "a", 0.5, 1500.0, 2.0, 0.04),
            ("bba", "only-sim", 9.0, 9.0, 9.0, 0.9),
        ],
    )
    emu = write_per_trace(
        tmp_path / "emu",
        [
            ("bba", "a", 0.5, 800.0, 0.5, 0.01),
            ("bba", "b", 2.25, 2100.0, 0.0, 0.0),
            ("mpc", "a", -0.5, 1200.0, 4.0, 0.08),
            ("mpc", "only-emu", 9.0, 9.0, 9.0, 0.9),
        ],
    )
    rows = compare(sim, emu)
    assert [(r.algorithm, r.trace) for r in rows] == [("bba", "a"), ("bba", "b"), ("mpc", "a")]
    assert [r.qoe_gap for r in rows] == [-0.5, 0.25, -1.0]
    assert [r.bitrate_gap_kbps for r in rows] == [-200.0, 100.0, -300.0]
    assert [r.rebuffer_s_gap for r in rows] == [0.5, -1.0, 2.0]
    assert [r.rebuffer_ratio_gap for r in rows] == pytest.approx([0.01, -0.02, 0.04])
    assert "only-sim" in caplog.text and "only-emu" in caplog.text
    matched = compare_matched(sim, emu)
    assert matched.only_sim == [("bba", "only-sim")]
    assert matched.only_emu == [("mpc", "only-emu")]

    summary = write_sim_vs_emu(rows, tmp_path / "out")
    overall, bba = summary["overall"], summary["algorithms"]["bba"]
    assert overall["count"] == 3
    assert overall["qoe_gap_mean_abs"] == pytest.approx((0.5 + 0.25 + 1.0) / 3)
    assert overall["qoe_gap_mean"] == pytest.approx((-0.5 + 0.25 - 1.0) / 3)
    assert overall["bitrate_gap_mean_abs_kbps"] == pytest.approx(200.0)
    assert overall["rebuffer_ratio_gap_mean_abs"] == pytest.approx(0.07 / 3)
    assert bba["count"] == 2 and bba["qoe_gap_mean_abs"] == pytest.approx(0.375)
    assert summary["algorithms"]["mpc"]["qoe_gap_mean"] == pytest.approx(-1.0)
    assert json.loads((tmp_path / "out" / SIM_VS_EMU_JSON).read_text()) == summary
    with open(tmp_path / "out" / SIM_VS_EMU_CSV, newline="") as fh:
        written = list(csv.DictReader(fh))
    assert len(written) == 3 and float(written[2]["qoe_gap"]) == -1.0
    assert (tmp_path / "out" / SIM_VS_EMU_PNG).stat().st_size > 0


def test_compare_names_the_missing_file(tmp_path: Path) -> None:
    emu = write_per_trace(tmp_path / "emu", [("bba", "a", 0.5, 800.0, 0.5, 0.01)])
    with pytest.raises(ConfigError, match=r"sim[/\\]per_trace\.csv"):
        compare(tmp_path / "sim", emu)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "per_trace.csv").write_text("algorithm,trace\nbba,a\n")
    with pytest.raises(ConfigError, match="missing column"):
        compare(tmp_path / "bad", emu)


def test_nan_qoe_is_left_out_of_the_means(tmp_path: Path) -> None:
    sim = write_per_trace(
        tmp_path / "sim", [("bba", "a", 1.0, 1.0, 0, 0), ("bba", "b", 1, 1, 0, 0)]
    )
    emu = write_per_trace(
        tmp_path / "emu", [("bba", "a", 2.0, 1.0, 0, 0), ("bba", "b", math.nan, 1, 0, 0)]
    )
    summary = write_sim_vs_emu(compare(sim, emu), tmp_path / "out")
    assert summary["overall"]["qoe_gap_mean_abs"] == 1.0


# ---------------------------------------------------------------------------------------------
# simulate_like


def test_simulate_like_reproduces_the_simulator(emulation: Path, tmp_path: Path) -> None:
    out = simulate_like(emulation, tmp_path / "sim", timing="pensieve")
    simulated = {(m.algorithm, m.trace): m for m in read_per_trace(out)}
    direct = evaluate(
        load_traceset(emulation.parent / "traces"), small_video(), ALGOS, progress=False
    )
    emulated = read_per_trace(emulation)
    assert set(simulated) == {(m.algorithm, m.trace) for m in emulated}
    for (algorithm, label), m in simulated.items():
        records = direct.sessions[(algorithm, label.rsplit("-r", 1)[0])]
        expected = session_metrics(records[: CUT.get((algorithm, label))], 2.0)
        assert m.chunks == expected.chunks
        assert m.qoe == pytest.approx(expected.qoe, abs=1e-12)
        assert m.bitrate_mean_kbps == expected.bitrate_mean_kbps
        assert m.rebuffer_s == pytest.approx(expected.rebuffer_s, abs=1e-12)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sim_config"]["rtt_s"] == 0.08 and summary["like_emulation"] == str(emulation)
    assert (out / "sessions" / "bba" / "t1-r2" / "chunks.jsonl").is_file()
    # With the constants the fabricated emulation was made with, every gap vanishes.
    again = simulate_like(emulation, tmp_path / "sim-true", config=TRUE, align_start=True)
    rows = compare(again, emulation)
    assert len(rows) == len(emulated)
    assert max(abs(r.qoe_gap) for r in rows) < 1e-9
    assert max(abs(r.rebuffer_s_gap) for r in rows) < 1e-9


def test_simulate_like_defaults_to_the_emulations_timing(emulation: Path, tmp_path: Path) -> None:
    """Without constants, the simulation takes the emulation's: its link delay and the decision
    round trip its players logged (chunks 1..N), TCP/IP's payload share; and says so."""
    summary = json.loads((emulation / "summary.json").read_text())
    out = simulate_like(emulation, tmp_path / "sim")
    config = json.loads((out / "summary.json").read_text())["sim_config"]
    assert config["timing"] == "wall"
    assert config["payload_factor"] == pytest.approx(1504 * 1448 / 1500**2)
    logged = [
        r.decision_ms
        for path in emulation.glob("sessions/*/*/chunks.jsonl")
        for r in read_jsonl(path)
        if r.chunk_index > 0
    ]
    assert config["decision_s"] == pytest.approx(sum(logged) / len(logged) / 1000)
    assert config["rtt_s"] == config["decision_s"]  # every request costs what a decision did
    assert summary["delay_ms"] == 40.0


def test_simulate_like_refuses_to_write_into_the_emulation(emulation: Path) -> None:
    with pytest.raises(ConfigError, match="must not be written"):
        simulate_like(emulation, emulation)


def test_ppo_without_a_model_names_the_field(tmp_path: Path) -> None:
    emu = fabricate_emulation(tmp_path, repeat=1)
    text = (emu / "per_trace.csv").read_text().replace("\nbba,", "\nppo,")
    (emu / "per_trace.csv").write_text(text)
    with pytest.raises(ConfigError, match="'model'"):
        plan_from_emulation(emu)
    plan = plan_from_emulation(emu, model=Path("some.pt"))
    assert plan.params == {"ppo": {"model": "some.pt"}}


def test_rotate_trace_starts_the_link_there() -> None:
    trace = random_trace("r", seed=5)
    period = trace.times_s[-1] - trace.times_s[0]
    rng = np.random.default_rng(0)
    for start in [*rng.uniform(0, 2 * period, 6), trace.times_s[4]]:
        rotated = rotate_trace(trace, start)
        assert rotated.times_s[-1] == pytest.approx(period)
        nbytes = rng.uniform(1e4, 3e7, 16)
        assert TraceLink(rotated).trace_s(np.zeros(16), nbytes) == pytest.approx(
            TraceLink(trace).trace_s(np.full(16, start), nbytes), abs=1e-9
        )


# ---------------------------------------------------------------------------------------------
# The download fit


def test_link_model_is_the_simulators() -> None:
    video = small_video()
    rng = np.random.default_rng(1)
    for seed in range(4):
        trace = random_trace(f"s{seed}", seed)
        sim = Simulator([trace], video, TRUE)
        sim.start_session(0, start_line=int(rng.integers(0, 40)))
        position = float(sim._last_time)
        link = TraceLink(trace)
        for _ in range(video.num_chunks):
            result = sim.download(int(rng.integers(0, video.num_levels)))
            start = np.array([position])
            size = np.array([result.chunk_bytes])
            predicted = model_download_s(link, start, size, TRUE.rtt_s, TRUE.payload_factor)
            assert predicted[0] == pytest.approx(result.delay_s, abs=1e-9)
            position += result.trace_s + result.sleep_s


def synthetic_samples(
    config: SimConfig,
    *,
    offset_s: float = 1.3,
    record_offset: bool = True,
    noise_s: float = 0.0,
    decision_s: float = 0.0,
    sessions: int = 12,
) -> tuple[list[SessionSamples], dict[str, Trace]]:
    """Chunks downloaded by the simulator with ``config`` from random start lines; the session
    clock is the trace position minus ``offset_s``."""
    video = small_video()
    rng = np.random.default_rng(7)
    traces = {f"s{i}": random_trace(f"s{i}", 100 + i) for i in range(sessions)}
    samples = []
    for name, trace in traces.items():
        sim = Simulator([trace], video, config)
        sim.start_session(0, start_line=int(rng.integers(5, 60)))
        position = float(sim._last_time)
        starts, sizes, downloads = [], [], []
        for _ in range(video.num_chunks):
            result = sim.download(int(rng.integers(0, video.num_levels)))
            starts.append(position - offset_s)
            sizes.append(result.chunk_bytes)
            downloads.append(result.delay_s + rng.normal(0.0, noise_s))
            position += result.trace_s + result.sleep_s
        download = np.array(downloads)
        samples.append(
            SessionSamples(
                algorithm="x",
                label=name,
                stem=name,
                start_s=np.array(starts),
                chunk_bytes=np.array(sizes, dtype=np.float64),
                download_s=download,
                cycle_s=np.concatenate([[math.nan], download[1:] + decision_s]),
                offset_s=offset_s if record_offset else None,
            )
        )
    return samples, traces


@pytest.mark.parametrize("loss", ["l2", "l1"])
def test_download_fit_recovers_known_constants(loss: str) -> None:
    samples, traces = synthetic_samples(TRUE)
    fit = fit_download(samples, traces, loss=loss, include_decision=False)
    assert fit.rtt_s == pytest.approx(0.12, abs=1e-3)
    assert fit.payload_factor == pytest.approx(0.9, abs=1e-3)
    assert fit.errors_fitted["rmse_s"] < 1e-3 < fit.errors_default["rmse_s"]
    assert fit.chunks == 12 * 8 and fit.sessions == 12 and fit.offset_s is None


def test_download_fit_with_noise_and_decision_time() -> None:
    config = SimConfig(rtt_s=0.05, payload_factor=0.8)
    samples, traces = synthetic_samples(config, noise_s=0.02, decision_s=0.1)
    fit = fit_download(samples, traces, include_decision=False)
    assert fit.rtt_s == pytest.approx(0.05, abs=0.01)
    assert fit.payload_factor == pytest.approx(0.8, abs=0.01)
    # The decision time before each request ends up in the round trip.
    cycle = fit_download(samples, traces, include_decision=True)
    assert cycle.rtt_s == pytest.approx(0.15, abs=0.015)
    assert cycle.decision_gap_mean_s == pytest.approx(0.1)
    assert cycle.chunks == 12 * 7  # the first chunk has no decision gap


def test_download_fit_finds_an_unrecorded_offset() -> None:
    samples, traces = synthetic_samples(TRUE, offset_s=1.3, record_offset=False)
    fit = fit_download(samples, traces, include_decision=False)
    assert fit.offset_s == pytest.approx(1.3, abs=0.01)
    assert fit.rtt_s == pytest.approx(0.12, abs=0.01)
    assert fit.payload_factor == pytest.approx(0.9, abs=0.01)


def test_download_fit_rejects_a_bad_loss() -> None:
    samples, traces = synthetic_samples(TRUE, sessions=1)
    with pytest.raises(ConfigError, match="loss"):
        fit_download(samples, traces, loss="l3")


# ---------------------------------------------------------------------------------------------
# streambed calibrate


def test_calibrate_cli(emulation: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cal"
    argv = ["calibrate", str(emulation), "--out", str(out), "--download-only", "--no-progress"]
    assert main([*argv, "--timing", "pensieve"]) == 0  # as the emulation was fabricated
    report = json.loads((out / "calibration.json").read_text())
    assert report["fitted"]["rtt_s"] == pytest.approx(0.12, abs=1e-3)
    assert report["fitted"]["payload_factor"] == pytest.approx(0.9, abs=1e-3)
    assert report["objective"] == "download"
    assert report["download_fit"]["chunks"] == sum(m.chunks for m in read_per_trace(emulation))
    gaps = report["qoe_gap_mean_abs"]
    assert gaps["default"] > 0.01 and gaps["fitted"] < 1e-6
    for sub in ("default", "fitted", "default-unaligned", "fitted-unaligned"):
        assert (out / sub / SIM_VS_EMU_JSON).is_file() and (
            out / sub / "sim" / "per_trace.csv"
        ).is_file()
    printed = capsys.readouterr().out
    assert "fitted" in printed and "0.1200" in printed


def test_calibrate_qoe_objective(emulation: Path, tmp_path: Path) -> None:
    out = tmp_path / "cal"
    argv = ["calibrate", str(emulation), "--out", str(out), "--objective", "qoe"]
    assert main([*argv, "--start", "beginning", "--timing", "pensieve", "--no-progress"]) == 0
    report = json.loads((out / "calibration.json").read_text())
    gaps = report["qoe_gap_mean_abs"]
    assert gaps["fitted"] <= gaps["default"]
    assert len(report["qoe_fit"]["evaluations"]) >= 36


def test_calibrate_says_when_its_fit_is_worse_than_the_defaults(
    emulation: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    """A fit that moves the QoE gap the wrong way (here a download fit forced to a 3 s round
    trip) is flagged in calibration.json and printed as a WARNING line, not reported silently."""
    real = calibrate_module.fit_download

    def bad_fit(*args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(real(*args, **kwargs), rtt_s=3.0)

    monkeypatch.setattr(calibrate_module, "fit_download", bad_fit)
    out = tmp_path / "cal"
    argv = ["calibrate", str(emulation), "--out", str(out), "--timing", "pensieve"]
    assert main([*argv, "--no-progress"]) == 0
    report = json.loads((out / "calibration.json").read_text())
    gaps = report["qoe_gap_mean_abs"]
    assert gaps["fitted"] > gaps["default"] and report["fit_worse_than_default"] is True
    assert "WARNING: the fitted constants are WORSE than the defaults" in capsys.readouterr().out


def test_calibrate_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    emu = fabricate_emulation(tmp_path / "a", repeat=1)
    summary = json.loads((emu / "summary.json").read_text())
    del summary["traces_dir"]
    (emu / "summary.json").write_text(json.dumps(summary))
    assert main(["calibrate", str(emu), "--no-progress"]) == 2
    assert "traces_dir" in capsys.readouterr().err
    # Given explicitly, the traces need not be recorded.
    argv = ["calibrate", str(emu), "--traces", str(tmp_path / "a" / "traces"), "--no-progress"]
    assert main(argv) == 0
    assert (emu / "calibration" / "calibration.json").is_file()

    emu = fabricate_emulation(tmp_path / "b", repeat=1)
    (emu / "per_trace.csv").unlink()
    assert main(["calibrate", str(emu), "--no-progress"]) == 2
    assert "per_trace.csv" in capsys.readouterr().err

    assert main(["calibrate", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    assert "summary.json" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# A tiny real emulation (netns links: needs root, as test_emulate)


@pytest.mark.slow
def test_calibrate_a_real_emulation(tmp_path: Path) -> None:
    traces = tmp_path / "traces"
    traces.mkdir()
    for i in range(2):
        save_pensieve(random_trace(f"real{i}", seed=20 + i, lines=60), traces / f"real{i}")
    video = generate_video(num_chunks=4, chunk_s=1.0, bitrates_kbps=(300, 750, 1850))
    video_json = video.save(tmp_path / "video.json")
    emu = tmp_path / "emu"
    argv = ["emulate", "--traces", str(traces), "--video", str(video_json), "--algorithms"]
    argv += ["bba", "--link", "netns", "--parallel", "2", "--delay-ms", "20", "--no-progress"]
    assert main([*argv, "--out", str(emu)]) == 0, (emu / "failed.json").read_text()
    out = tmp_path / "cal"
    assert main(["calibrate", str(emu), "--out", str(out), "--no-progress"]) == 0
    report = json.loads((out / "calibration.json").read_text())
    fit = report["download_fit"]
    # The emulation's timing (the default) fits the downloads alone: every chunk counts.
    assert report["timing"] == "wall" and fit["target"] == "download"
    assert fit["sessions"] == 2 and fit["chunks"] == 2 * 4
    # The emulated downloads follow the simulator's link model closely once fitted.
    assert fit["errors_fitted"]["median_abs_s"] < 0.2
    assert 0 < report["fitted"]["payload_factor"] <= 1 and report["fitted"]["rtt_s"] >= 0
    rows = compare(out / "fitted" / "sim", emu)
    assert len(rows) == 2


def test_gap_over_repeats_compares_each_traces_means(tmp_path: Path) -> None:
    """Two repeats of a trace that straddle the simulation (+1, -1) are each 1.0 off, but their
    mean is the simulation's: 0.0 over repeats; a trace without repeats counts as itself."""
    sim = write_per_trace(
        tmp_path / "sim",
        [
            ("bba", "a-r1", 1.0, 1, 0, 0),
            ("bba", "a-r2", 1.0, 1, 0, 0),
            ("bba", "b-r1", 1.0, 1, 0, 0),
            ("bba", "b-r2", 1.0, 1, 0, 0),
        ],
    )
    emu = write_per_trace(
        tmp_path / "emu",
        [
            ("bba", "a-r1", 2.0, 1, 0, 0),
            ("bba", "a-r2", 0.0, 1, 0, 0),
            ("bba", "b-r1", 1.5, 1, 0, 0),
            ("bba", "b-r2", 1.5, 1, 0, 0),
        ],
    )
    overall = write_sim_vs_emu(compare(sim, emu), tmp_path / "out")["overall"]
    assert overall["qoe_gap_mean_abs"] == pytest.approx((1 + 1 + 0.5 + 0.5) / 4)
    assert overall["qoe_gap_mean_abs_over_repeats"] == pytest.approx((0.0 + 0.5) / 2)
    single = write_per_trace(tmp_path / "one", [("bba", "a", 1.0, 1, 0, 0)])
    alone = write_sim_vs_emu(compare(single, single), tmp_path / "out1")["overall"]
    assert alone["qoe_gap_mean_abs_over_repeats"] is None


def test_an_ensemble_is_the_mean_of_its_seeded_samples(emulation: Path) -> None:
    """With a timing jitter each emulated session is simulated K times (seeds 0..K-1) and
    compared as their mean; the samples differ (the jitter moves the trace position)."""
    plan = plan_from_emulation(emulation, timing="wall")
    jittery = dataclasses.replace(plan.base_config, jitter_s=0.3)
    mean, _ = simulate_plan(plan, jittery, samples=3)
    runs = [simulate_plan(dataclasses.replace(plan, base_config=jittery), None)]
    singles = [
        {
            (m.algorithm, m.trace): m.qoe
            for m in _simulate_once(plan, jittery, progress=False, seed=k)[0]
        }
        for k in range(3)
    ]
    assert runs[0][0][0].qoe == singles[0][(runs[0][0][0].algorithm, runs[0][0][0].trace)]
    assert any(s != singles[0] for s in singles[1:])
    for m in mean:
        key = (m.algorithm, m.trace)
        assert m.qoe == pytest.approx(sum(s[key] for s in singles) / 3, abs=1e-12)
