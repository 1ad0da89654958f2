"""The run-directory layout (``streambed.reports.rundir``): defined once, written alike by eval
and emulate, and run directories in eval's old layout still load."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from streambed.abr_service.video import default_video
from streambed.reports.html import write_html_report
from streambed.reports.load import load_report_dir
from streambed.reports.rundir import (
    BITRATE_VS_REBUFFER_PNG,
    BROWSER_EVENTS_JSONL,
    CHUNKS_JSONL,
    FAILED_JSON,
    PENSIEVE_LOG,
    PER_TRACE_CSV,
    PLAY_LOG,
    QOE_CDF_PNG,
    SESSION_JSON,
    SIM_VS_EMU_CSV,
    SIM_VS_EMU_JSON,
    SIM_VS_EMU_PNG,
    SUMMARY_JSON,
    RunDir,
)
from streambed.traces.synth import default_traces
from streambed.trainer.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("streambed", "traces", "abr_service", "reports", "trainer", "server", "player")
PACKAGE_DIRS += ("emulation", "models")
LAYOUT_MODULE = ROOT / "reports" / "rundir.py"
NAMES = (
    SUMMARY_JSON,
    PER_TRACE_CSV,
    FAILED_JSON,
    QOE_CDF_PNG,
    BITRATE_VS_REBUFFER_PNG,
    SIM_VS_EMU_CSV,
    SIM_VS_EMU_JSON,
    SIM_VS_EMU_PNG,
    CHUNKS_JSONL,
    SESSION_JSON,
    PENSIEVE_LOG,
    BROWSER_EVENTS_JSONL,
    PLAY_LOG,
)
# A name as a whole string literal, and a path built from a literal folder ("sessions", "logs").
LITERALS = re.compile(
    "|".join(rf"([\"']){re.escape(n)}\1" for n in NAMES) + r"""|/\s*["'](sessions|logs)["']"""
)
ALGORITHMS = ("bba", "robustmpc")


@pytest.fixture(scope="module")
def eval_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rundir") / "eval"
    evaluate(default_traces(2, 0), default_video(0), ALGORITHMS, out=out, progress=False)
    return out


def test_layout_names_live_in_one_module() -> None:
    found = []
    for folder in PACKAGE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == LAYOUT_MODULE or "node_modules" in path.parts:
                continue
            for lineno, line in enumerate(path.read_text().splitlines(), start=1):
                if LITERALS.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert found == []
    # The check itself sees the literals where they are defined.
    assert LITERALS.search(LAYOUT_MODULE.read_text())


def test_eval_writes_the_shared_layout(eval_out: Path) -> None:
    run = RunDir(eval_out)
    assert run.summary_json.is_file() and run.per_trace_csv.is_file()
    assert run.qoe_cdf_png.is_file() and run.bitrate_vs_rebuffer_png.is_file()
    source = load_report_dir(eval_out)
    for m in source.metrics:
        session = run.session(m.algorithm, m.trace)
        assert source.session_file(m.algorithm, m.trace) == session.chunks_jsonl
        assert not run.legacy_chunks_jsonl(m.algorithm, m.trace).exists()
        assert run.pensieve_log(m.algorithm, m.trace).is_file()
        assert len(source.records(m.algorithm, m.trace)) == m.chunks


def test_old_eval_layout_still_loads(eval_out: Path, tmp_path: Path) -> None:
    """A directory that `streambed eval` wrote before the layouts were unified."""
    old = tmp_path / "old"
    shutil.copytree(eval_out, old)
    run = RunDir(old)
    for algorithm_dir in sorted(run.sessions_dir.iterdir()):
        for session_dir in sorted(algorithm_dir.iterdir()):
            (session_dir / CHUNKS_JSONL).rename(algorithm_dir / f"{session_dir.name}.jsonl")
            session_dir.rmdir()
    now, before = load_report_dir(eval_out), load_report_dir(old)
    assert before.metrics == now.metrics
    for m in before.metrics:
        assert before.session_file(m.algorithm, m.trace) == run.legacy_chunks_jsonl(
            m.algorithm, m.trace
        )
        assert before.records(m.algorithm, m.trace) == now.records(m.algorithm, m.trace)
    page = write_html_report([old], tmp_path / "old.html").read_text()
    assert "no chunk records" not in page
