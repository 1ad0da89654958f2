"""Reading a report directory back: what ``streambed eval`` and ``streambed emulate`` write.

Both write ``summary.json`` and ``per_trace.csv`` (rows of
:class:`streambed.reports.summary.SessionMetrics`), in the one layout of :mod:`streambed.reports.rundir` (a session's records in
``sessions/<algorithm>/<trace>/chunks.jsonl``); an emulation also writes ``session.json`` beside
them and ``failed.json``, and its ``summary.json`` names the trace directory (``traces_dir``).
Eval directories written before the layouts were unified (``sessions/<algorithm>/<trace>.jsonl``)
still load.

Every problem with the directory is a :class:`streambed.core.errors.ReportError` naming the file.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from streambed.abr_service.qoe import QoEMetric
from streambed.core.errors import ReportError, TraceError
from streambed.reports.rundir import (
    CHUNKS_JSONL,
    FAILED_JSON,
    LEGACY_SESSION_SUFFIX,
    PER_TRACE_CSV,
    SESSIONS_DIR,
    SUMMARY_JSON,
    RunDir,
)
from streambed.reports.sessionlog import ChunkRecord, read_jsonl, rescore
from streambed.reports.summary import SessionMetrics, session_metrics
from streambed.traces import Trace, load_trace, trace_files

__all__ = [
    "FAILED_JSON",
    "PER_TRACE_CSV",
    "SESSIONS_DIR",
    "SUMMARY_JSON",
    "ReportDir",
    "load_report_dir",
    "read_per_trace_csv",
]

# An emulated trace repeated R times is labelled ``<stem>-r<k>`` (emulation.orchestrate).
_REPEAT_SUFFIX = re.compile(r"-r[0-9]+$")


@dataclass
class ReportDir:
    """One report directory, read."""

    path: Path
    summary: dict[str, Any]
    metrics: list[SessionMetrics]
    failed: list[dict[str, Any]]
    """``failed.json`` of an emulation (empty when absent)."""
    traces_dir: Path | None
    """Where the trace files are: the summary's ``traces_dir`` when that directory exists,
    else the directory the caller gave (None: no trace files)."""
    _trace_index: dict[str, Path] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        """The directory's name, as the report labels it."""
        return self.path.resolve().name or str(self.path)

    @property
    def mode(self) -> str:
        """``simulation``, ``emulation``, or the summary's ``mode`` as written when unknown."""
        mode = self.summary.get("mode")
        if mode == "test":
            return "simulation"
        if mode == "emulation":
            return "emulation"
        return str(mode) if mode is not None else "unknown"

    @property
    def algorithms(self) -> list[str]:
        """Algorithms in ``per_trace.csv`` order (first appearance)."""
        return list(dict.fromkeys(m.algorithm for m in self.metrics))

    def session_file(self, algorithm: str, trace: str) -> Path | None:
        """The chunk records' file of a session, in either layout (None when there is none)."""
        if not (_safe_part(algorithm) and _safe_part(trace)):
            return None  # a name from per_trace.csv must not lead outside sessions/
        return RunDir(self.path).chunk_records(algorithm, trace)

    def records(self, algorithm: str, trace: str) -> list[ChunkRecord]:
        """The chunk records of a session; ``ReportError`` when it has none."""
        path = self.session_file(algorithm, trace)
        if path is None:
            raise ReportError(
                f"{RunDir(self.path).algorithm_dir(algorithm)}: no chunk records for trace "
                f"{trace!r} (neither {trace}/{CHUNKS_JSONL} nor {trace}{LEGACY_SESSION_SUFFIX})"
            )
        records = read_jsonl(path)
        if not records:
            raise ReportError(f"{path}: no chunk records")
        return records

    def trace_file(self, trace: str) -> Path | None:
        """The trace file a session's trace name refers to (file name, stem, or an emulated
        repeat's ``<stem>-r<k>``); None when there is no trace directory or no such file."""
        if self.traces_dir is None:
            return None
        if self._trace_index is None:
            index: dict[str, Path] = {}
            try:
                files = trace_files(self.traces_dir)
            except TraceError:
                files = []
            for p in files:
                index.setdefault(p.name, p)
            for p in files:
                index.setdefault(p.stem, p)
            self._trace_index = index
        found = self._trace_index.get(trace)
        if found is None:
            found = self._trace_index.get(_REPEAT_SUFFIX.sub("", trace))
        return found

    def rescore(self, qoe: QoEMetric, chunk_s: float) -> None:
        """Recompute every session's metrics from its chunk records under ``qoe`` (``report
        --qoe``); ``ReportError`` when a session has no records."""
        self.metrics = [
            session_metrics(rescore(self.records(m.algorithm, m.trace), qoe), chunk_s)
            for m in self.metrics
        ]
        self.summary = {**self.summary, "qoe": qoe.name, "qoe_rescored": True}

    def video_path(self) -> Path | None:
        """The content (or video description) the run names, when it exists here."""
        for key in ("content", "video_path"):
            named = self.summary.get(key)
            if isinstance(named, str) and named and Path(named).exists():
                return Path(named)
        return None

    def load_trace(self, trace: str) -> Trace | None:
        """The trace of a session, loaded (None when not found); ``TraceError`` if malformed."""
        path = self.trace_file(trace)
        return None if path is None else load_trace(path)


def load_report_dir(path: Path, traces: Path | None = None) -> ReportDir:
    """Read ``path`` (an eval or emulate output); ``traces`` is the trace directory to use when
    the summary names none (or names one that does not exist here)."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path}: no such report directory")
    run = RunDir(path)
    summary = _read_summary(run.summary_json)
    metrics = read_per_trace_csv(run.per_trace_csv)
    failed = _read_failed(run.failed_json)
    traces_dir: Path | None = None
    named = summary.get("traces_dir")
    if isinstance(named, str) and named and Path(named).is_dir():
        traces_dir = Path(named)
    elif traces is not None:
        traces_dir = Path(traces)
    return ReportDir(path, summary, metrics, failed, traces_dir)


def _safe_part(name: str) -> bool:
    return name not in ("", ".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def _read_summary(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ReportError(
            f"{path}: no such file (not a `streambed eval` or `streambed emulate` output)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_per_trace_csv(path: Path) -> list[SessionMetrics]:
    """The rows of a ``per_trace.csv`` (``ReportError`` naming the file, line and field)."""
    names = [f.name for f in fields(SessionMetrics)]
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [n for n in names if n not in (reader.fieldnames or [])]
            if missing:
                raise ReportError(f"{path}: missing column(s) {', '.join(missing)}")
            metrics = []
            for row in reader:
                try:
                    metrics.append(_row_metrics(row))
                except (TypeError, ValueError) as exc:
                    raise ReportError(f"{path}: line {reader.line_num}: {exc}") from None
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReportError(f"{path}: cannot read: {exc}") from None
    return metrics


def _row_metrics(row: dict[str, str | None]) -> SessionMetrics:
    """One row of per_trace.csv; ``ValueError`` says which field is wrong."""
    return SessionMetrics(
        algorithm=_text(row, "algorithm"),
        trace=_text(row, "trace"),
        qoe=_number(row, "qoe"),
        bitrate_mean_kbps=_number(row, "bitrate_mean_kbps"),
        rebuffer_s=_number(row, "rebuffer_s"),
        rebuffer_ratio=_number(row, "rebuffer_ratio"),
        switches_per_chunk=_number(row, "switches_per_chunk"),
        chunks=int(_number(row, "chunks", integer=True)),
    )


def _text(row: dict[str, str | None], name: str) -> str:
    text = row.get(name)
    if text is None:  # a short row
        raise ValueError(f"no value for {name}")
    if not text:
        raise ValueError(f"empty {name}")
    return text


def _number(row: dict[str, str | None], name: str, integer: bool = False) -> float:
    """A number (NaN allowed: a session of one chunk has no QoE over chunks 2..N)."""
    text = _text(row, name)
    try:
        return int(text) if integer else float(text)
    except ValueError:
        raise ValueError(
            f"{name} is not {'an integer' if integer else 'a number'} ({text!r})"
        ) from None


def _read_failed(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise ReportError(f"{path}: expected a JSON list of objects")
    return data
