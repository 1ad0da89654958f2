"""``streambed report``: the statistics, reading report directories of both layouts, and the HTML
page end to end (a real small evaluation, a fabricated emulation, the CLI's errors)."""

from __future__ import annotations

import csv
import html
import json
import math
import re
from itertools import permutations
from pathlib import Path

import numpy as np
import pytest
from report_helpers import (
    EMU_ALGORITHMS,
    EVAL_ALGORITHMS,
    EVAL_TRACES,
    make_emulation_output,
    make_eval_output,
)

from streambed.cli import main
from streambed.core.errors import ReportError
from streambed.reports.html import build_series, select_timelines, write_html_report
from streambed.reports.load import load_report_dir
from streambed.reports.plots import plot_qoe_cdf, plot_timeline
from streambed.reports.stats import bootstrap_ci, paired_comparison

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_IMG = '<img src="data:image/png;base64,'
EXTERNAL_REF = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.I)


# ------------------------------------------------------------------------------------------
# Statistics


def test_bootstrap_constant_sample_has_zero_width() -> None:
    assert bootstrap_ci([0.1] * 7) == (0.1, 0.1, 0.1)
    assert bootstrap_ci([3.0]) == (3.0, 3.0, 3.0)


def test_bootstrap_interval_contains_mean_and_narrows() -> None:
    rng = np.random.default_rng(1)
    small = rng.normal(2.0, 1.0, 40)
    large = rng.normal(2.0, 1.0, 640)
    mean_s, low_s, high_s = bootstrap_ci(small)
    mean_l, low_l, high_l = bootstrap_ci(large)
    assert mean_s == pytest.approx(small.mean())
    assert low_s < mean_s < high_s and low_l < mean_l < high_l
    # 16x the data: about a quarter of the width (normal approximation: 2 * 1.96 * sd / sqrt n).
    assert (high_l - low_l) < 0.5 * (high_s - low_s)
    expected = 2 * 1.96 * large.std(ddof=1) / math.sqrt(len(large))
    assert high_l - low_l == pytest.approx(expected, rel=0.15)


def test_bootstrap_is_seeded() -> None:
    values = [1.0, 4.0, 2.5, 8.0, 3.0, 0.5]
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)
    # Batching the resamples does not change them.
    assert bootstrap_ci(values, resamples=10) == bootstrap_ci(values, resamples=10)


@pytest.mark.parametrize("values", [[], [1.0, float("nan")], [float("inf")]])
def test_bootstrap_rejects_bad_samples(values: list[float]) -> None:
    with pytest.raises(ValueError):
        bootstrap_ci(values)


def test_paired_comparison_by_hand() -> None:
    a = {"t1": 3.0, "t2": 2.0, "t3": 1.0, "t4": 5.0, "t5": float("nan")}
    b = {"t1": 1.0, "t2": 2.0, "t3": 4.0, "t4": 4.0, "t5": 1.0, "t6": 0.0}
    c = paired_comparison(a, b)
    # Common finite traces t1..t4: differences +2, 0, -3, +1.
    assert (c.traces, c.wins, c.ties, c.losses) == (4, 2, 1, 1)
    assert c.win_fraction == 0.5 and c.tie_fraction == 0.25 and c.loss_fraction == 0.25
    assert c.mean_diff == 0.0
    assert -3.0 <= c.low <= 0.0 <= c.high <= 2.0
    reverse = paired_comparison(b, a)
    assert (reverse.wins, reverse.ties, reverse.losses) == (1, 1, 2)
    # Order of the mappings does not matter.
    assert paired_comparison(dict(reversed(a.items())), b) == c


def test_paired_comparison_without_common_traces() -> None:
    c = paired_comparison({"a": 1.0}, {"b": 2.0})
    assert c.traces == 0 and math.isnan(c.mean_diff) and math.isnan(c.win_fraction)


# ------------------------------------------------------------------------------------------
# The page over a real evaluation


@pytest.fixture(scope="module")
def eval_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(eval output, trace directory, the page's HTML) with the default options."""
    root = tmp_path_factory.mktemp("report")
    out, traces_dir = make_eval_output(root)
    html = write_html_report([out], root / "page" / "report.html", traces=traces_dir)
    return out, traces_dir, html.read_text()


def per_trace(out: Path) -> dict[str, dict[str, float]]:
    """algorithm -> trace -> QoE, from per_trace.csv."""
    table: dict[str, dict[str, float]] = {}
    with open(out / "per_trace.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            table.setdefault(row["algorithm"], {})[row["trace"]] = float(row["qoe"])
    return table


def summary_row(page: str, label: str) -> str:
    found = re.search(rf'<tr[^>]*data-label="{re.escape(label)}">(.*?)</tr>', page, re.S)
    assert found, label
    return found.group(1)


def test_page_is_self_contained(eval_report: tuple[Path, Path, str]) -> None:
    _, _, page = eval_report
    assert page.startswith("<!DOCTYPE html>")
    assert EXTERNAL_REF.search(page) is None
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert re.search(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+" [^>]*id="qoe-cdf"', page)
    assert re.search(r'<img src="data:image/png;base64,[^"]+" [^>]*id="bitrate-rebuffer"', page)
    # The two plots, and a timeline per session (9 <= 24).
    assert page.count(DATA_IMG) == 2 + len(EVAL_ALGORITHMS) * EVAL_TRACES
    assert page.count('<figure class="timeline"><img src="data:image/png;base64,') == 9
    assert f"{len(EVAL_ALGORITHMS) * EVAL_TRACES} of 9 sessions shown." in page


def test_header(eval_report: tuple[Path, Path, str]) -> None:
    out, _, page = eval_report
    assert "<td>simulation</td>" in page
    assert "rtt_s 0.08" in page and "buffer_cap_s 60" in page
    assert html.escape(str(out)) in page
    assert re.search(r"Generated \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", page)


def test_summary_table_matches_per_trace_csv(eval_report: tuple[Path, Path, str]) -> None:
    out, _, page = eval_report
    assert '<table id="summary">' in page
    for algorithm, by_trace in per_trace(out).items():
        row = summary_row(page, algorithm)
        values = list(by_trace.values())
        mean, low, high = bootstrap_ci(values, seed=0)
        assert mean == pytest.approx(np.mean(values))
        assert low <= mean <= high
        assert f'class="num qoe">{mean:.4f}<' in row
        assert f'class="num ci">[{low:.4f}, {high:.4f}]<' in row
        assert f'class="num">{EVAL_TRACES}<' in row
    assert "offline optimum" in summary_row(page, "optimal")
    assert "offline optimum" not in summary_row(page, "bba")


def test_paired_fractions(eval_report: tuple[Path, Path, str]) -> None:
    out, _, page = eval_report
    table = per_trace(out)
    assert '<table id="paired">' in page
    paired = page[page.index('<table id="paired">') :]
    for a, b in permutations(EVAL_ALGORITHMS, 2):
        wins = sum(table[a][t] > table[b][t] + 1e-9 for t in table[a])
        ties = sum(abs(table[a][t] - table[b][t]) <= 1e-9 for t in table[a])
        row = re.search(rf"<tr><th>{a}</th>(.*?)</tr>", paired, re.S)
        assert row
        cells = re.findall(r"<td.*?</td>", row.group(1), re.S)
        cell = cells[EVAL_ALGORITHMS.index(b)]
        assert f'data-traces="{EVAL_TRACES}" data-wins="{wins}" data-ties="{ties}"' in cell
        # 3 traces are too few for a verdict: marked, uncoloured, the details in the title.
        assert f">n={EVAL_TRACES}, too few</td>" in cell and 'class="few"' in cell
        assert f"{a} better on {wins}, tied on {ties}" in cell
        c = paired_comparison(table[a], table[b])
        assert f"difference {c.mean_diff:+.4f}, 95% interval [{c.low:+.4f}, {c.high:+.4f}]" in cell
    # The offline optimum is never beaten on these traces.
    for other in ("bba", "robustmpc"):
        assert all(table["optimal"][t] >= table[other][t] - 1e-9 for t in table[other])


def test_timelines_have_trace_bandwidth(eval_report: tuple[Path, Path, str]) -> None:
    _, traces_dir, page = eval_report
    for t in range(EVAL_TRACES):
        assert f"Trace bandwidth from {traces_dir / f'synth_{t:03d}'}." in page
    assert "worst QoE of bba" in page and "best QoE of optimal" in page


def test_timeline_choice(eval_report: tuple[Path, Path, str]) -> None:
    out, _, _ = eval_report
    series = build_series([load_report_dir(out)])
    table = per_trace(out)
    picks, available = select_timelines(series, 3)
    assert available == 9
    assert {p.series.algorithm for p in picks} == {"bba"}
    ranked = sorted(table["bba"], key=lambda t: (table["bba"][t], t))
    assert {p.metrics.trace for p in picks} == set(ranked)
    assert select_timelines(series, 3) == (picks, available)  # deterministic
    assert len(select_timelines(series, -1)[0]) == 9
    assert select_timelines(series, 0)[0] == []
    # Past the three of each algorithm, the same traces for the other algorithms come next.
    four = select_timelines(series, 4)[0]
    worst = ranked[0]
    assert any(p.series.algorithm != "bba" and p.metrics.trace == worst for p in four)


def test_cli_options(
    eval_report: tuple[Path, Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _, _ = eval_report
    assert main(["report", str(out), "--max-timelines", "0", "--seed", "5"]) == 0
    default = out / "report.html"
    assert capsys.readouterr().out.strip() == f"report: {default}"
    page = default.read_text()
    assert page.count(DATA_IMG) == 2
    assert "0 of 9 sessions shown; 9 omitted (9 over --max-timelines 0)" in page
    assert "No trace directory" not in page  # no timelines, no trace notes
    assert "seed 5" in page
    assert main(["report", str(out), "--html", str(out / "two.html"), "--max-timelines", "2"]) == 0
    page = (out / "two.html").read_text()
    assert page.count(DATA_IMG) == 2 + 2
    assert "No trace directory, no bandwidth drawn (give --traces DIR)." in page


def test_plot_functions_return_png_or_save(
    eval_report: tuple[Path, Path, str], tmp_path: Path
) -> None:
    out, _, _ = eval_report
    source = load_report_dir(out)
    png = plot_qoe_cdf(source.metrics)
    assert png.startswith(PNG_MAGIC)
    assert plot_qoe_cdf(source.metrics, tmp_path / "cdf.png") == tmp_path / "cdf.png"
    assert (tmp_path / "cdf.png").read_bytes().startswith(PNG_MAGIC)
    timeline = plot_timeline(source.records("bba", "synth_000"))
    assert timeline.startswith(PNG_MAGIC)
    assert len(timeline) < 60_000  # small enough for dozens per page


# ------------------------------------------------------------------------------------------
# Emulation layout, several inputs


def test_emulation_layout(tmp_path: Path, eval_report: tuple[Path, Path, str]) -> None:
    emu = make_emulation_output(tmp_path)
    source = load_report_dir(emu)
    assert source.mode == "emulation"
    assert source.session_file("bba", "fast") == emu / "sessions/bba/fast/chunks.jsonl"
    assert source.trace_file("fast") == Path(source.summary["traces_dir"]) / "fast.log"
    assert source.trace_file("fast-r2") == source.trace_file("fast")  # a repeat's label
    assert source.trace_file("nothing") is None
    assert source.records("robustmpc", "x<y&z")[0].chunk_index == 0
    with pytest.raises(ReportError, match="no chunk records for trace 'fast'"):
        source.records("robustmpc", "fast")  # the failed session

    page = write_html_report([emu], tmp_path / "emu.html").read_text()
    assert "<td>emulation</td>" in page
    assert "link: mahimahi" in page and "one-way delay: 40 ms each direction" in page
    assert "4 planned, 3 done, 1 failed" in page
    assert "1 failed session(s)" in page and "link: &lt;mm-link&gt; died" in page
    # Names from files are escaped everywhere.
    assert "x<y&z" not in page and "x&lt;y&amp;z" in page
    assert page.count(DATA_IMG) == 2 + 3
    assert page.count("Trace bandwidth from ") == 2
    assert EXTERNAL_REF.search(page) is None
    for algorithm in EMU_ALGORITHMS:
        summary_row(page, algorithm)

    # Both inputs on one page: rows labelled by input, compared only on common traces.
    eval_out = eval_report[0]
    both = write_html_report([eval_out, emu], tmp_path / "both.html", max_timelines=4)
    page = both.read_text()
    for label in ("bba (eval)", "optimal (eval)", "bba (emu)", "robustmpc (emu)"):
        summary_row(page, label)
    assert "<td>simulation</td>" in page and "<td>emulation</td>" in page
    assert 'title="no common traces"' in page  # eval's synth_* against emu's traces
    assert page.count(DATA_IMG) == 2 + 4
    assert "4 of 12 sessions shown; 8 omitted (8 over --max-timelines 4)" in page


def test_emulation_without_sessions_done(tmp_path: Path) -> None:
    emu = make_emulation_output(tmp_path)
    (emu / "per_trace.csv").write_text(
        "algorithm,trace,qoe,bitrate_mean_kbps,rebuffer_s,rebuffer_ratio,switches_per_chunk,chunks\n"
    )
    page = write_html_report([emu], tmp_path / "empty.html").read_text()
    assert "No sessions in per_trace.csv." in page
    assert DATA_IMG not in page


# ------------------------------------------------------------------------------------------
# Bad input


def test_missing_summary_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'summary.json'}: no such file" in err
    assert err.startswith("streambed report: error:")
    assert main(["report", str(tmp_path / "absent")]) == 2
    assert "no such report directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("summary", "csv_text", "message"),
    [
        ("{", None, "summary.json: not valid JSON"),
        ("[1]", None, "summary.json: expected a JSON object"),
        ("{}", None, "per_trace.csv: no such file"),
        ("{}", "algorithm,trace\nbba,t\n", "per_trace.csv: missing column(s) qoe"),
        (
            "{}",
            "algorithm,trace,qoe,bitrate_mean_kbps,rebuffer_s,rebuffer_ratio,switches_per_chunk,chunks\n"
            "bba,t,1.0,300,0,0,0,48\nbba,u,high,300,0,0,0,48\n",
            "per_trace.csv: line 3: qoe is not a number ('high')",
        ),
        (
            "{}",
            "algorithm,trace,qoe,bitrate_mean_kbps,rebuffer_s,rebuffer_ratio,switches_per_chunk,chunks\n"
            "bba,t,1.0\n",
            "per_trace.csv: line 2: no value for bitrate_mean_kbps",
        ),
    ],
)
def test_bad_report_directory(
    tmp_path: Path, summary: str, csv_text: str | None, message: str
) -> None:
    (tmp_path / "summary.json").write_text(summary)
    if csv_text is not None:
        (tmp_path / "per_trace.csv").write_text(csv_text)
    with pytest.raises(ReportError) as info:
        load_report_dir(tmp_path)
    assert str(tmp_path) in str(info.value) and message in str(info.value)


def test_unwritable_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = make_emulation_output(tmp_path)
    assert main(["report", str(out), "--html", str(out)]) == 2  # a directory
    assert f"{out}: cannot write" in capsys.readouterr().err


def test_bad_max_timelines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path), "--max-timelines", "-2"]) == 2
    assert "--max-timelines must be -1 (all), 0 (none) or more" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# Simulation versus emulation


def test_sim_against_emu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The fabricated emulation's records are the simulator's own on the same traces and video,
    so a simulation of those trace files matches every emulated session with zero gap; eval
    names the traces ``fast.log``, emulate ``fast`` (matched by stem)."""
    emu = make_emulation_output(tmp_path)
    sim = tmp_path / "sim"
    argv = ["eval", "--out", str(sim), "--traces", str(tmp_path / "emu-traces"), "--no-progress"]
    assert main([*argv, "--algorithms", ",".join(EMU_ALGORITHMS)]) == 0
    page = tmp_path / "both.html"
    assert main(["report", "--sim", str(sim), "--emu", str(emu), "--html", str(page)]) == 0
    assert "mean |QoE gap| 0.0000" in capsys.readouterr().out
    assert not (emu / "sim_vs_emu.csv").exists()  # emulate's own files are never written over
    with open(emu / "report-sim-vs-emu" / "sim_vs_emu.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((r["algorithm"], r["trace"]) for r in rows) == [
        ("bba", "fast"),
        ("bba", "x<y&z"),
        ("robustmpc", "x<y&z"),
    ]
    assert all(float(r["qoe_gap"]) == pytest.approx(0.0, abs=1e-12) for r in rows)
    text = page.read_text()
    assert 'id="sim-vs-emu"' in text and text.count(DATA_IMG) >= 4
    assert html.escape("x<y&z") in text and "x<y&z" not in text


def test_sim_without_emu_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--sim", str(tmp_path)]) == 2
    assert "--sim and --emu go together" in capsys.readouterr().err


def test_names_from_files_cannot_inject_markup(tmp_path: Path) -> None:
    """Algorithm, trace and failure text from the files land escaped (the template's
    autoescape), in text and in attributes alike."""
    out = tmp_path / "hostile"
    out.mkdir()
    bad_algorithm = "<script>alert(1)</script>"
    quoted = 'a"b onmouseover="x'
    bad_trace = "<script>t</script>"
    (out / "summary.json").write_text(
        json.dumps({"mode": "<script>m</script>", "video": "<i>v</i>"})
    )
    (out / "failed.json").write_text(
        json.dumps([{"algorithm": bad_algorithm, "trace": bad_trace, "reasons": ["<script>"]}])
    )
    head = "algorithm,trace,qoe,bitrate_mean_kbps,rebuffer_s,rebuffer_ratio,switches_per_chunk,chunks\n"
    rows = [
        f'"{a.replace(chr(34), chr(34) * 2)}",{bad_trace},1.0,300,0,0,0,48\n'
        for a in (bad_algorithm, quoted)
    ]
    (out / "per_trace.csv").write_text(head + "".join(rows))
    page = write_html_report([out], tmp_path / "hostile.html").read_text()
    assert "<script" not in page and "<i>" not in page
    assert html.escape(bad_algorithm, quote=False) in page
    assert html.escape(bad_trace, quote=False) in page
    assert 'onmouseover="x' not in page
    assert re.search(r'data-label="&lt;script&gt;alert\(1\)&lt;/script&gt;"', page)
    assert re.search(r'data-label="a&(quot|#34);b onmouseover=&(quot|#34);x"', page)
    assert '<table id="paired">' in page and page.count("<tr><th>") >= 2
