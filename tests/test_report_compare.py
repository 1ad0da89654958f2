"""``streambed report --sim --emu`` compares like with like, writes only files of its own, and
every QoE states its chunk window; the paired matrix gives no verdict on too few traces."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from report_helpers import EMU_ALGORITHMS, make_emulation_output
from test_fidelity import fabricate_emulation, small_video

from streambed.abr_service.video import default_video
from streambed.cli import main
from streambed.reports.html import MIN_PAIRED_TRACES, write_html_report
from streambed.reports.provenance import (
    chunk_window,
    file_sha256,
    run_provenance,
    window_short,
    window_text,
)
from streambed.reports.summary import SessionMetrics, write_report
from streambed.trainer.replay import sim_vs_emu

VIDEO_CHUNKS = default_video(0).num_chunks


def simulate(tmp_path: Path) -> Path:
    """``streambed eval`` of the fabricated emulation's traces, video and algorithms."""
    sim = tmp_path / "sim"
    argv = ["eval", "--out", str(sim), "--traces", str(tmp_path / "emu-traces"), "--no-progress"]
    assert main([*argv, "--algorithms", ",".join(EMU_ALGORITHMS)]) == 0
    return sim


def cut_emulation(emu: Path, chunks: int) -> None:
    """Make ``emu`` look like ``emulate --max-chunks chunks``: per_trace.csv's chunk counts."""
    path = emu / "per_trace.csv"
    lines = path.read_text().splitlines()
    head = lines[0].split(",")
    at = head.index("chunks")
    rows = [line.split(",") for line in lines[1:]]
    for row in rows:
        row[at] = str(chunks)
    path.write_text("\n".join([lines[0], *(",".join(r) for r in rows)]) + "\n")


def edit_summary(run: Path, **changes: object) -> None:
    path = run / "summary.json"
    summary = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            summary.pop(key, None)
        else:
            summary[key] = value
    path.write_text(json.dumps(summary))


def report(*argv: str) -> int:
    return main(["report", *argv])


# ---------------------------------------------------------------------------------------------
# Refusals


def test_different_chunk_windows_are_refused_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emu = make_emulation_output(tmp_path)
    sim = simulate(tmp_path)
    cut_emulation(emu, 12)
    before = sorted(p.name for p in emu.iterdir())
    assert report("--sim", str(sim), "--emu", str(emu)) == 2
    err = capsys.readouterr().err
    assert f"chunk window: sim {VIDEO_CHUNKS} chunks, emu 12 chunks (3 of 3 sessions)" in err
    assert "--allow-mismatch" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in emu.iterdir()) == before  # no directory, no page, no csv


def test_allow_mismatch_compares_with_a_loud_warning_on_the_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emu = make_emulation_output(tmp_path)
    sim = simulate(tmp_path)
    cut_emulation(emu, 12)
    assert report("--sim", str(sim), "--emu", str(emu), "--allow-mismatch") == 0
    out = capsys.readouterr().out
    assert "WARNING: compared anyway (--allow-mismatch): chunk window: sim" in out
    found = json.loads((emu / "report-sim-vs-emu" / "sim_vs_emu.json").read_text())
    assert found["mismatches"] == [
        f"chunk window: sim {VIDEO_CHUNKS} chunks, emu 12 chunks (3 of 3 sessions)"
    ]
    page = (emu / "report-sim-vs-emu" / "report.html").read_text()
    warning = re.search(r'<p class="mismatch">(.*?)</p>', page, re.S)
    assert warning and "emu 12 chunks" in warning.group(1)


def test_a_different_video_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    emu = make_emulation_output(tmp_path)
    sim = simulate(tmp_path)
    edit_summary(emu, **run_provenance(default_video(1), None))
    assert report("--sim", str(sim), "--emu", str(emu)) == 2
    err = capsys.readouterr().err
    assert "video: sim " in err and "(sha256 " in err
    assert not (emu / "report-sim-vs-emu").exists()


def fabricated_ppo_run(where: Path, model_sha256: str | None, **extra: object) -> Path:
    metrics = [SessionMetrics("ppo", f"t{i}", 1.0, 1000.0, 0.0, 0.0, 0.1, 48) for i in range(3)]
    write_report(
        where,
        metrics,
        {"video_chunks": 48, "video_sha256": "v" * 64, "model_sha256": model_sha256, **extra},
    )
    return where


def test_a_different_ppo_checkpoint_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.pt").write_bytes(b"checkpoint a")
    (tmp_path / "b.pt").write_bytes(b"checkpoint b")
    sim = fabricated_ppo_run(
        tmp_path / "sim", file_sha256(tmp_path / "a.pt"), params={"ppo": {"model": "a.pt"}}
    )
    emu = fabricated_ppo_run(tmp_path / "emu", file_sha256(tmp_path / "b.pt"), model="b.pt")
    assert report("--sim", str(sim), "--emu", str(emu)) == 2
    err = capsys.readouterr().err
    assert "ppo model: sim a.pt (sha256 " in err and "emu b.pt (sha256 " in err
    # The same checkpoint compares.
    edit_summary(emu, model_sha256=file_sha256(tmp_path / "a.pt"))
    assert report("--sim", str(sim), "--emu", str(emu)) == 0


def test_old_summaries_are_unknown_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Summaries written before the fields existed: compared, with a warning saying what could
    not be checked (also on the page)."""
    sim = fabricated_ppo_run(tmp_path / "sim", None)
    emu = fabricated_ppo_run(tmp_path / "emu", None)
    for run in (sim, emu):
        edit_summary(run, video_sha256=None, model_sha256=None, video_chunks=None)
        edit_summary(run, chunk_window=None)
    with caplog.at_level(logging.WARNING):
        assert report("--sim", str(sim), "--emu", str(emu)) == 0
    assert "cannot check: video: unknown (sim summary.json records no video_sha256)" in caplog.text
    assert "cannot check: ppo model: unknown" in caplog.text
    page = (emu / "report-sim-vs-emu" / "report.html").read_text()
    assert "Not checked: video: unknown" in page


# ---------------------------------------------------------------------------------------------
# Never over another command's outputs


def test_each_report_gets_a_new_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    emu = make_emulation_output(tmp_path)
    sim = simulate(tmp_path)
    (emu / "sim_vs_emu.csv").write_text("emulate's own\n")
    (emu / "report.html").write_text("emulate's own\n")
    assert report("--sim", str(sim), "--emu", str(emu)) == 0
    assert report("--sim", str(sim), "--emu", str(emu)) == 0
    assert "report-sim-vs-emu-2" in capsys.readouterr().out
    for name in ("report-sim-vs-emu", "report-sim-vs-emu-2"):
        assert {p.name for p in (emu / name).iterdir()} >= {"sim_vs_emu.csv", "report.html"}
    assert (emu / "sim_vs_emu.csv").read_text() == "emulate's own\n"
    assert (emu / "report.html").read_text() == "emulate's own\n"
    assert not (sim / "report.html").exists()


def test_out_is_refused_when_taken(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    emu = make_emulation_output(tmp_path)
    sim = simulate(tmp_path)
    both = ["--sim", str(sim), "--emu", str(emu)]
    taken = tmp_path / "taken"
    taken.mkdir()
    assert report(*both, "--out", str(taken)) == 2
    assert "exists; give a new directory, or --force" in capsys.readouterr().err
    assert report(*both, "--out", str(taken), "--force") == 0
    assert (taken / "sim_vs_emu.json").is_file() and (taken / "report.html").is_file()
    # A run directory is never a comparison's, --force or not.
    for run in (emu, sim):
        assert report(*both, "--out", str(run), "--force") == 2
        assert "an eval/emulate output" in capsys.readouterr().err
    assert not (emu / "sim_vs_emu.csv").exists()
    page = tmp_path / "page.html"
    page.write_text("mine\n")
    assert report(*both, "--html", str(page)) == 2
    assert page.read_text() == "mine\n"
    assert report("--out", str(tmp_path / "x"), str(emu)) == 2
    assert "--out goes with --sim and --emu" in capsys.readouterr().err


def test_compare_sim_path_passes_the_checks(tmp_path: Path) -> None:
    """``emulate --compare-sim`` re-simulates with the emulation's own window (sessions cut
    short included), video and checkpoint: nothing differs, nothing unknown."""
    emu = fabricate_emulation(tmp_path, repeat=1, summary_extra=run_provenance(small_video(), None))
    found = sim_vs_emu(emu)
    assert found["mismatches"] == [] and found["unknown"] == []
    assert (emu / "sim_vs_emu.csv").is_file()  # emulate --compare-sim keeps its own files


# ---------------------------------------------------------------------------------------------
# One window, stated


def test_windows_are_stated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="streambed.trainer.evaluate"):
        emu = make_emulation_output(tmp_path)
        sim = simulate(tmp_path)
    full = f"0-{VIDEO_CHUNKS - 1} ({VIDEO_CHUNKS} of {VIDEO_CHUNKS})"
    assert "bba: qoe_mean " in caplog.text and f"over chunks {full}" in caplog.text
    summary = json.loads((sim / "summary.json").read_text())
    assert summary["chunk_window"] == {
        "chunks_min": VIDEO_CHUNKS,
        "chunks_max": VIDEO_CHUNKS,
        "video_chunks": VIDEO_CHUNKS,
    }
    assert window_short(summary["algorithms"]["bba"]["chunk_window"]) == full
    assert window_text({"chunks_min": 12, "chunks_max": 12, "video_chunks": 48}) == (
        "over chunks 0-11 (12 of 48)"
    )
    assert window_short(chunk_window([], 48)) == "unknown"
    assert window_text(None) == "over an unknown chunk window"
    cut_emulation(emu, 12)
    page = tmp_path / "p.html"
    write_html_report([emu], page, max_timelines=0)
    cells = re.findall(r'<td class="num chunks">(.*?)</td>', page.read_text())
    assert cells and set(cells) == {f"0-11 (12 of {VIDEO_CHUNKS})"}


# ---------------------------------------------------------------------------------------------
# The paired matrix, parsed


class _Cells(HTMLParser):
    """The ``<td>`` cells of ``table#paired``: (class, title, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = False
        self.cell: dict[str, str] | None = None
        self.cells: list[dict[str, str]] = []
        self.breaks = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table" and found.get("id") == "paired":
            self.inside = True
        elif self.inside and tag == "td":
            self.cell = {"class": found.get("class") or "", "title": found.get("title") or ""}
            self.cell["text"] = ""
        elif self.cell is not None and tag in ("br", "p", "div"):
            self.breaks += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.inside = False
        elif tag == "td" and self.cell is not None:
            self.cells.append(self.cell)
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell["text"] += data


def fabricated_eval(where: Path, algorithms: list[str], traces: int) -> Path:
    metrics = [
        SessionMetrics(a, f"t{t:02d}", 0.1 * i + 0.01 * ((t * 7 + i) % 5), 1000, 0, 0, 0, 48)
        for i, a in enumerate(algorithms)
        for t in range(traces)
    ]
    write_report(where, metrics, {"mode": "test", "video_chunks": 48})
    return where


def test_paired_matrix_is_short_and_marks_too_few(tmp_path: Path) -> None:
    algorithms = [f"algorithm{i}" for i in range(10)]
    many = fabricated_eval(tmp_path / "many", algorithms, MIN_PAIRED_TRACES + 2)
    few = fabricated_eval(tmp_path / "few", ["bba"], 2)
    page = tmp_path / "page.html"
    write_html_report([many, few], page, max_timelines=0, resamples=200)
    parser = _Cells()
    parser.feed(page.read_text())
    cells = [c for c in parser.cells if "diag" not in c["class"]]
    assert len(cells) == 11 * 10 and parser.breaks == 0
    verdicts = [c for c in cells if c["class"] in ("better", "worse", "even")]
    marked = [c for c in cells if c["class"] == "few"]
    assert len(verdicts) == 10 * 9 and len(marked) == 2 * 10
    n = MIN_PAIRED_TRACES + 2
    for c in verdicts:
        text = " ".join(c["text"].split())
        assert re.fullmatch(rf"[+-]\d+\.\d\d \[[+-]\d+\.\d\d,[+-]\d+\.\d\d\] · \d+% of {n}", text)
        assert len(text) <= 40 and "common traces" in c["title"]
    assert {c["class"] for c in verdicts} >= {"better", "worse"}
    for c in marked:
        assert c["text"].strip() == "n=2, too few"
        assert "no verdict" in c["title"] and "better on" in c["title"]


def test_chunk_window_of_sessions_of_different_lengths() -> None:
    """chunk_window reads any object with ``chunks`` (per_trace rows, replaced copies)."""
    m = SessionMetrics("a", "t", 1.0, 1.0, 0.0, 0.0, 0.0, 12)
    assert chunk_window([m, dataclasses.replace(m, chunks=48)], 48) == {
        "chunks_min": 12,
        "chunks_max": 48,
        "video_chunks": 48,
    }
    assert window_short(chunk_window([m, dataclasses.replace(m, chunks=48)], 48)) == (
        "0-11..0-47 (12-48 of 48)"
    )
