"""The HTML report: one self-contained page over one or more report directories.

The page needs nothing but itself: the plots are PNGs inlined as ``data:`` URIs, the style is
inline, and there is no script. The page's structure is the Jinja2 template
``templates/report.html.j2``, which escapes every value (autoescape).

Contents: the inputs (mode, link or simulator constants, sessions), a summary table per
algorithm (QoE mean with a percentile-bootstrap 95% interval over traces), paired per-trace
comparisons of every two algorithms, the QoE CDF and bitrate-vs-rebuffer plots, and a timeline
per session for a bounded, deterministic choice of sessions (see :func:`select_timelines`).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from streambed import __version__
from streambed.core.errors import ConfigError, ReportError, TraceError
from streambed.core.fileio import atomic_write_bytes
from streambed.reports.load import ReportDir, load_report_dir
from streambed.reports.provenance import chunk_window, window_short
from streambed.reports.sessionlog import ChunkRecord
from streambed.reports.stats import PairedComparison, bootstrap_ci, paired_comparison
from streambed.reports.summary import SessionMetrics
from streambed.traces import Trace

OPTIMAL = "optimal"
MAX_FAILED_LISTED = 50
CONFIDENCE = 0.95
MIN_PAIRED_TRACES = 10
"""Fewest common traces for a paired cell to be coloured better/worse. Below it a win share
(2 of 2 is "100% better") and a bootstrap interval over a handful of differences say more
about which traces were drawn than about the algorithms, so the cell is marked, not coloured."""
TEMPLATE = "report.html.j2"


@dataclass(frozen=True)
class Series:
    """One algorithm of one input directory: a row of the summary table."""

    label: str
    source: ReportDir
    algorithm: str
    metrics: tuple[SessionMetrics, ...]

    def qoe_by_trace(self) -> dict[str, float]:
        return {m.trace: m.qoe for m in self.metrics}


@dataclass(frozen=True)
class Timeline:
    """A session chosen for a timeline, and why."""

    series: Series
    metrics: SessionMetrics
    role: str


def write_html_report(
    inputs: Sequence[Path],
    html: Path,
    *,
    traces: Path | None = None,
    max_timelines: int = 24,
    seed: int = 0,
    resamples: int = 2000,
    comparisons: Sequence[Path] = (),
    qoe: str | None = None,
    video: Path | None = None,
) -> Path:
    """Read the report directories ``inputs`` and write the page to ``html``; return ``html``.

    ``qoe``: rescore every session under this metric (from its chunk records) with the video
    ``video`` (default: the content each run names; ssim and vmaf need the measurements).

    ``traces`` is the trace directory for the inputs whose ``summary.json`` names none (eval
    outputs). ``max_timelines``: sessions with a timeline (-1 all, 0 none). ``seed`` and
    ``resamples`` drive the bootstrap intervals. ``comparisons``: directories of
    simulation-vs-emulation files (``report --sim --emu``'s) shown besides the inputs' own.
    """
    if not inputs:
        raise ConfigError("no report directories given")
    if max_timelines < -1:
        raise ConfigError(
            f"--max-timelines must be -1 (all), 0 (none) or more, not {max_timelines}"
        )
    if resamples < 1:
        raise ConfigError("resamples must be >= 1")
    sources = [load_report_dir(Path(p), traces) for p in inputs]
    if qoe is not None:
        for source in sources:
            rescore_source(source, qoe, video)
    page = render_page(
        sources,
        max_timelines=max_timelines,
        seed=seed,
        resamples=resamples,
        comparisons=[Path(p) for p in comparisons],
    )
    html = Path(html)
    try:
        atomic_write_bytes(html, page.encode("utf-8"))
        os.chmod(html, 0o644)  # readable beside the other outputs (the temporary file was 0600)
    except OSError as exc:
        raise ReportError(f"{html}: cannot write: {exc.strerror or exc}") from None
    return html


def rescore_source(source: ReportDir, qoe: str, video: Path | None) -> None:
    """``source`` rescored under ``qoe`` with ``video`` or the content its run names."""
    from streambed.abr_service.qoe import make_qoe
    from streambed.abr_service.video import load_video

    path = video if video is not None else source.video_path()
    if path is None:
        raise ConfigError(
            f"{source.path}: --qoe {qoe} needs the video: its summary names no content here; "
            "give --video (a video.json, or the content directory)"
        )
    described = load_video(path)
    source.rescore(make_qoe(qoe, described), described.chunk_s)


def input_names(sources: Sequence[ReportDir]) -> list[str]:
    """Each input's label: its directory name, or its path when two names collide."""
    names = [s.name for s in sources]
    return [str(s.path) if names.count(n) > 1 else n for s, n in zip(sources, names, strict=True)]


def build_series(sources: Sequence[ReportDir]) -> list[Series]:
    """One series per (input, algorithm), labelled ``alg`` or, with several inputs,
    ``alg (input)``."""
    names = input_names(sources)
    out = []
    for source, name in zip(sources, names, strict=True):
        for algorithm in source.algorithms:
            label = algorithm if len(sources) == 1 else f"{algorithm} ({name})"
            rows = tuple(m for m in source.metrics if m.algorithm == algorithm)
            out.append(Series(label, source, algorithm, rows))
    return out


def select_timelines(series: Sequence[Series], limit: int) -> tuple[list[Timeline], int]:
    """Sessions to draw (at most ``limit``; -1 all) and how many sessions have chunk records.

    Order of choice: for each series its worst, median and best QoE trace; then the same
    traces for the other algorithms of the same input (so that a chosen trace can be compared
    across algorithms); then every other session in ``per_trace.csv`` order. Sessions
    without chunk records are skipped.
    """
    available = [
        (s, m) for s in series for m in s.metrics if s.source.session_file(s.algorithm, m.trace)
    ]
    have = {(id(s), m.trace) for s, m in available}
    chosen: dict[tuple[int, str], Timeline] = {}

    def add(s: Series, m: SessionMetrics, role: str) -> None:
        key = (id(s), m.trace)
        if key in have and key not in chosen:
            chosen[key] = Timeline(s, m, role)

    for s in series:
        ranked = sorted(
            (m for m in s.metrics if math.isfinite(m.qoe) and (id(s), m.trace) in have),
            key=lambda m: (m.qoe, m.trace),
        )
        if ranked:
            add(s, ranked[0], f"worst QoE of {s.label}")
            add(s, ranked[(len(ranked) - 1) // 2], f"median QoE of {s.label}")
            add(s, ranked[-1], f"best QoE of {s.label}")
    by_trace = {(id(s.source), m.trace, s.algorithm): (s, m) for s, m in available}
    for picked in list(chosen.values()):
        for other in series:
            if other.source is picked.series.source and other is not picked.series:
                found = by_trace.get((id(other.source), picked.metrics.trace, other.algorithm))
                if found:
                    add(*found, f"same trace as the {picked.role}")
    for s, m in available:
        add(s, m, "in order")
    picks = list(chosen.values())
    if limit >= 0:
        picks = picks[:limit]
    # Shown grouped by trace, in order of choice, each trace's algorithms in table order.
    first: dict[tuple[int, str], int] = {}
    for i, t in enumerate(picks):
        first.setdefault((id(t.series.source), t.metrics.trace), i)
    order = {id(s): i for i, s in enumerate(series)}
    picks.sort(key=lambda t: (first[(id(t.series.source), t.metrics.trace)], order[id(t.series)]))
    return picks, len(available)


# ---------------------------------------------------------------------------------------------
# The page
#
# The structure is the template ``templates/report.html.j2``; the functions below compute what
# it shows (formatted numbers, PNGs as data URIs, notes) and leave every escape to it.


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("streambed.reports", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_page(
    sources: Sequence[ReportDir],
    *,
    max_timelines: int,
    seed: int,
    resamples: int,
    comparisons: Sequence[Path] = (),
) -> str:
    series = build_series(sources)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return (
        _environment()
        .get_template(TEMPLATE)
        .render(
            title=", ".join(input_names(sources)),
            generated=now,
            version=__version__,
            seed=seed,
            resamples=resamples,
            inputs=_inputs(sources),
            summary=_summary(series, seed=seed, resamples=resamples),
            has_optimum=any(s.algorithm == OPTIMAL for s in series),
            paired=_paired(series, seed=seed, resamples=resamples),
            plots=_plots(series),
            fidelity=_fidelity(
                [(s.path, s.name) for s in sources] + [(p, str(p)) for p in comparisons]
            ),
            min_paired=MIN_PAIRED_TRACES,
            timelines=_timelines(series, max_timelines),
        )
    )


def _fmt(value: float, spec: str = ".4f", signed: bool = False) -> str:
    if not math.isfinite(value):
        return "—"
    return format(value, ("+" if signed else "") + spec)


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _settings(source: ReportDir) -> list[tuple[str, str]]:
    """The settings worth a line in the header, by mode."""
    s = source.summary
    rows: list[tuple[str, str]] = []
    if source.mode == "emulation":
        if "player" in s:
            rows.append(
                ("player", "dash.js in Chromium" if s["player"] == "dashjs" else "headless")
            )
        if "link" in s:
            rows.append(("link", _scalar(s["link"])))
        if "delay_ms" in s:
            rows.append(("one-way delay", f"{_scalar(s['delay_ms'])} ms each direction"))
        for key in (
            "traces_dir",
            "content",
            "model",
            "repeat",
            "max_chunks",
            "run_id",
            "complete",
            "interrupted",
        ):
            if s.get(key) is not None:
                rows.append((key, _scalar(s[key])))
    else:
        for key in ("qoe", "video", "traces", "seed"):
            if key in s:
                rows.append((key, _scalar(s[key])))
        config = s.get("sim_config")
        if isinstance(config, dict):
            rows.append(("simulator", ", ".join(f"{k} {_scalar(v)}" for k, v in config.items())))
        if s.get("params"):
            rows.append(("params", json.dumps(s["params"], sort_keys=True)))
    return rows


def _sessions_line(source: ReportDir) -> str:
    counts = source.summary.get("sessions")
    if isinstance(counts, dict):
        words = [f"{_scalar(counts[k])} {k}" for k in ("planned", "done", "failed") if k in counts]
        return ", ".join(words)
    return f"{len(source.metrics)} (rows of per_trace.csv)"


def _inputs(sources: Sequence[ReportDir]) -> list[dict[str, Any]]:
    out = []
    for source, name in zip(sources, input_names(sources), strict=True):
        failed = []
        for f in source.failed[:MAX_FAILED_LISTED]:
            reasons = f.get("reasons") or []
            last = reasons[-1] if isinstance(reasons, list) and reasons else ""
            failed.append((str(f.get("algorithm", "?")), str(f.get("trace", "?")), str(last)))
        summary = {k: v for k, v in source.summary.items() if k != "algorithms"}
        out.append(
            {
                "name": name,
                "path": str(source.path),
                "mode": source.mode,
                "settings": _settings(source),
                "summary_json": json.dumps(summary, indent=1, sort_keys=True, default=str),
                "sessions": _sessions_line(source),
                "failed": failed,
                "failed_count": len(source.failed),
                "failed_more": len(source.failed) - MAX_FAILED_LISTED,
            }
        )
    return out


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _mean(values: Sequence[float]) -> float:
    kept = _finite(values)
    return float(np.mean(kept)) if kept else math.nan


def _summary(series: Sequence[Series], *, seed: int, resamples: int) -> list[dict[str, Any]]:
    """The summary table's rows (none: no sessions)."""
    rows = []
    for s in series:
        qoe = _finite([m.qoe for m in s.metrics])
        mean, low, high = (
            bootstrap_ci(qoe, resamples=resamples, confidence=CONFIDENCE, seed=seed)
            if qoe
            else (math.nan,) * 3
        )
        undefined = len(s.metrics) - len(qoe)
        total = s.source.summary.get("video_chunks")
        window = chunk_window(s.metrics, total if isinstance(total, int) else None)
        rows.append(
            {
                "label": s.label,
                "optimum": s.algorithm == OPTIMAL,
                "traces": f"{len(s.metrics)}"
                + (f" ({undefined} without QoE)" if undefined else ""),
                "qoe": _fmt(mean),
                "low": _fmt(low),
                "high": _fmt(high),
                "bitrate": _fmt(_mean([m.bitrate_mean_kbps for m in s.metrics]), ".0f"),
                "rebuffer_pct": _fmt(_mean([m.rebuffer_ratio for m in s.metrics]) * 100, ".3f"),
                "switches": _fmt(_mean([m.switches_per_chunk for m in s.metrics]), ".3f"),
                "chunks": window_short(window),
            }
        )
    return rows


def _paired_cell(c: PairedComparison, a: str, b: str) -> dict[str, Any]:
    """One cell: short text (Δ, interval, win share of n), the details in its title; with
    fewer than :data:`MIN_PAIRED_TRACES` common traces marked "too few" and not coloured."""
    few = c.traces < MIN_PAIRED_TRACES
    diff, low, high = (_fmt(v, ".2f", signed=True) for v in (c.mean_diff, c.low, c.high))
    win_pct = f"{c.win_fraction * 100:.0f}"
    title = (
        f"{a} vs {b} over {c.traces} common traces: {a} better on {c.wins}, tied on {c.ties}, "
        f"worse on {c.losses}; mean QoE difference {_fmt(c.mean_diff, signed=True)}, 95% "
        f"interval [{_fmt(c.low, signed=True)}, {_fmt(c.high, signed=True)}]"
    )
    if few:
        title += f"; fewer than {MIN_PAIRED_TRACES} traces: no verdict"
    return {
        "css": "few" if few else "better" if c.low > 0 else "worse" if c.high < 0 else "even",
        "few": few,
        "text": f"n={c.traces}, too few" if few else f"{diff} [{low},{high}]",
        "share": "" if few else f"{win_pct}% of {c.traces}",
        "title": title,
        "traces": c.traces,
        "wins": c.wins,
        "ties": c.ties,
        "losses": c.losses,
        "win_pct": f"{c.win_fraction * 100:.0f}",
        "tie_pct": f"{c.tie_fraction * 100:.0f}",
        "diff": _fmt(c.mean_diff, signed=True),
        "low": _fmt(c.low, signed=True),
        "high": _fmt(c.high, signed=True),
    }


def _paired(series: Sequence[Series], *, seed: int, resamples: int) -> dict[str, Any] | None:
    """Row A against column B; a cell is None on the diagonal."""
    if len(series) < 2:
        return None
    qoe = [s.qoe_by_trace() for s in series]
    rows = []
    for i, a in enumerate(series):
        cells: list[dict[str, Any] | None] = []
        for j in range(len(series)):
            if i == j:
                cells.append(None)
                continue
            c = paired_comparison(qoe[i], qoe[j], resamples=resamples, seed=seed)
            cells.append(_paired_cell(c, a.label, series[j].label))
        rows.append((a.label, cells))
    return {"labels": [s.label for s in series], "rows": rows}


def _plots(series: Sequence[Series]) -> dict[str, str] | None:
    from streambed.reports.plots import plot_bitrate_rebuffer, plot_qoe_cdf
    from streambed.reports.style import series_style

    labelled = [replace(m, algorithm=s.label) for s in series for m in s.metrics]
    if not labelled:
        return None
    # A simulated and an emulated run of one algorithm: one colour, two line styles.
    styles = {s.label: series_style(s.algorithm, s.source.mode) for s in series}
    return {
        "cdf": _png_uri(plot_qoe_cdf(labelled, styles=styles)),
        "scatter": _png_uri(plot_bitrate_rebuffer(labelled, styles=styles)),
    }


_FIDELITY_COLUMNS = (
    ("sessions", "count", "d"),
    ("sim QoE", "sim_qoe_mean", ".4f"),
    ("emu QoE", "emu_qoe_mean", ".4f"),
    ("mean |QoE gap|", "qoe_gap_mean_abs", ".4f"),
    ("mean QoE gap", "qoe_gap_mean", ".4f"),
    ("mean |bitrate gap| kbps", "bitrate_gap_mean_abs_kbps", ".0f"),
    ("mean |rebuffer ratio gap|", "rebuffer_ratio_gap_mean_abs", ".4f"),
)


def _fidelity(places: Sequence[tuple[Path, str]]) -> list[dict[str, Any]]:
    """The ``sim_vs_emu.json`` and plot of each ``(directory, name)`` that has them (an input
    after ``streambed emulate --compare-sim`` or the demo; ``report --sim --emu``'s own)."""
    from streambed.reports.rundir import SIM_VS_EMU_JSON, SIM_VS_EMU_PNG

    blocks: list[dict[str, Any]] = []
    for where, name in places:
        path = where / SIM_VS_EMU_JSON
        if not path.is_file():
            continue
        try:
            found = json.loads(path.read_text())
            groups = {"all": found["overall"], **found.get("algorithms", {})}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            blocks.append({"path": str(path), "error": str(exc)})
            continue
        rows = []
        for name, stats in groups.items():
            cells = []
            for _, key, spec in _FIDELITY_COLUMNS:
                value = stats.get(key) if isinstance(stats, dict) else None
                cells.append("—" if value is None else format(value, spec))
            rows.append((str(name), cells))
        png = where / SIM_VS_EMU_PNG
        constants = found.get("sim_config") or {}
        blocks.append(
            {
                "error": None,
                "name": name,
                "mismatches": [str(x) for x in found.get("mismatches") or []],
                "unknown": [str(x) for x in found.get("unknown") or []],
                "simulation": str(found.get("simulation", "?")),
                "rtt_s": str(constants.get("rtt_s", "?")),
                "payload_factor": str(constants.get("payload_factor", "?")),
                "columns": [c[0] for c in _FIDELITY_COLUMNS],
                "rows": rows,
                "plot": _png_uri(png.read_bytes()) if png.is_file() else None,
            }
        )
    return blocks


def _trace_for(source: ReportDir, trace_name: str) -> tuple[Trace | None, str]:
    """The trace of a session (None when not found or unreadable) and a note saying which."""
    try:
        trace = source.load_trace(trace_name)
    except TraceError as exc:
        return None, f"Trace file unreadable, no bandwidth drawn: {exc}"
    path = source.trace_file(trace_name)
    if trace is not None and path is not None:
        return trace, f"Trace bandwidth from {path}."
    if source.traces_dir is None:
        return None, "No trace directory, no bandwidth drawn (give --traces DIR)."
    return None, f"No trace file for {trace_name} in {source.traces_dir}, no bandwidth drawn."


def _timelines(series: Sequence[Series], max_timelines: int) -> dict[str, Any] | None:
    from streambed.reports.plots import TimelineLimits, plot_timeline, timeline_limits
    from streambed.reports.style import series_style

    sessions = sum(len(s.metrics) for s in series)
    if sessions == 0:
        return None
    picks, available = select_timelines(series, max_timelines)
    omitted = sessions - len(picks)
    why = []
    if available < sessions:
        why.append(f"{sessions - available} without chunk records")
    if available > len(picks):
        why.append(f"{available - len(picks)} over --max-timelines {max_timelines}")
    lead = (
        f"{len(picks)} of {sessions} sessions shown"
        + (f"; {omitted} omitted ({', '.join(why)})" if omitted else "")
        + ". Chosen: each algorithm's worst, median and best QoE trace, the same traces for "
        "the other algorithms, then the rest in order."
    )
    groups: dict[tuple[int, str], dict[str, Any]] = {}
    several = len({id(s.source) for s in series}) > 1
    # Timelines of one group stand side by side: they share their y-limits, so first the
    # records of every pick, then the union of the group's limits.
    loaded: list[tuple[Timeline, tuple[int, str], list[ChunkRecord], Trace | None]] = []
    limits: dict[tuple[int, str], TimelineLimits] = {}
    for pick in picks:
        source, trace_name = pick.series.source, pick.metrics.trace
        key = (id(source), trace_name)
        trace, trace_note = _trace_for(source, trace_name)
        groups.setdefault(
            key,
            {
                "trace": trace_name,
                "where": source.name if several else "",
                "note": trace_note,
                "figures": [],
            },
        )
        records = source.records(pick.series.algorithm, trace_name)
        loaded.append((pick, key, records, trace))
        mine = timeline_limits(records, trace)
        limits[key] = limits[key].union(mine) if key in limits else mine
    for pick, key, records, trace in loaded:
        png = plot_timeline(
            records,
            trace,
            limits=limits[key],
            style=series_style(pick.series.algorithm, pick.series.source.mode),
        )
        groups[key]["figures"].append(
            {
                "uri": _png_uri(png),
                "alt": f"timeline of {pick.series.label} on {pick.metrics.trace}",
                "label": pick.series.label,
                "trace": pick.metrics.trace,
                "qoe": _fmt(pick.metrics.qoe, ".3f"),
                "role": pick.role,
            }
        )
    return {"lead": lead, "groups": list(groups.values())}
