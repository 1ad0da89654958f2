"""Report directories for the HTML report's tests: a real (small) ``streambed eval`` output, and
a fabricated ``streambed emulate`` output in that command's layout."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from streambed.abr_service.video import default_video
from streambed.cli import main
from streambed.reports.provenance import run_provenance
from streambed.reports.sessionlog import write_jsonl
from streambed.reports.summary import session_metrics, write_report
from streambed.traces import save_pensieve
from streambed.traces.synth import default_traces
from streambed.trainer.evaluate import evaluate

EVAL_ALGORITHMS = ("bba", "robustmpc", "optimal")
EVAL_TRACES = 3
EMU_ALGORITHMS = ("bba", "robustmpc")
# The emulated trace files: one with characters the page must escape, one with an extension
# (the report matches a session's trace label to a file by stem).
EMU_TRACE_FILES = ("fast.log", "x<y&z.log")


def make_eval_output(root: Path) -> tuple[Path, Path]:
    """``streambed eval`` of bba, robustmpc and optimal on 3 generated traces saved as files;
    returns ``(output directory, trace directory)``."""
    traces_dir = root / "traces"
    traces_dir.mkdir(parents=True)
    for trace in default_traces(EVAL_TRACES, 0):
        save_pensieve(trace, traces_dir / trace.name)
    out = root / "eval"
    argv = ["eval", "--out", str(out), "--traces", str(traces_dir), "--no-progress"]
    code = main([*argv, "--algorithms", ",".join(EVAL_ALGORITHMS), "--workers", "1"])
    assert code == 0
    return out, traces_dir


def make_emulation_output(root: Path) -> Path:
    """An emulate output: 2 algorithms x 2 traces planned, 3 sessions done, 1 failed.

    The chunk records come from the simulator (relabelled), laid out as ``streambed emulate``
    writes them; ``summary.json`` names the trace directory.
    """
    traces_dir = root / "emu-traces"
    traces_dir.mkdir(parents=True)
    generated = default_traces(len(EMU_TRACE_FILES), 7)
    for trace, name in zip(generated, EMU_TRACE_FILES, strict=True):
        save_pensieve(trace, traces_dir / name)
    video = default_video(0)
    result = evaluate(generated, video, EMU_ALGORITHMS, progress=False)
    out = root / "emu"
    metrics = []
    failed = []
    for algorithm in EMU_ALGORITHMS:
        for trace, name in zip(generated, EMU_TRACE_FILES, strict=True):
            label = Path(name).stem
            if (algorithm, label) == ("robustmpc", "fast"):
                failed.append(
                    {
                        "algorithm": algorithm,
                        "trace": label,
                        "trace_file": str(traces_dir / name),
                        "attempts": 2,
                        "reasons": ["exit status 1", "link: <mm-link> died"],
                    }
                )
                continue
            records = [
                dataclasses.replace(r, trace=label, run_id="emulate-1")
                for r in result.sessions[(algorithm, trace.name)]
            ]
            session_dir = out / "sessions" / algorithm / label
            write_jsonl(records, session_dir / "chunks.jsonl")
            info = {"status": "done", "chunk_s": video.chunk_s, "trace": label}
            (session_dir / "session.json").write_text(json.dumps(info))
            metrics.append(session_metrics(records, video.chunk_s))
    extra = {
        "mode": "emulation",
        "link": "mahimahi",
        "delay_ms": 40.0,
        "traces_dir": str(traces_dir),
        "repeat": 1,
        "run_id": "emulate-1",
        "complete": False,
        "interrupted": False,
        "sessions": {"planned": 4, "done": len(metrics), "failed": len(failed)},
        **run_provenance(video, None),
    }
    write_report(out, metrics, extra)
    (out / "failed.json").write_text(json.dumps(failed))
    return out
