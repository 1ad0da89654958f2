"""The HTML report: one self-contained page over one or more report directories.

The page needs nothing but itself: the plots are PNGs inlined as ``data:`` URIs, the style is
inline, and there is no script. Every string read from a file is escaped.

Contents: the inputs (mode, link or simulator constants, sessions), a summary table per
algorithm (QoE mean with a percentile-bootstrap 95% interval over traces), paired per-trace
comparisons of every two algorithms, the QoE CDF and bitrate-vs-rebuffer plots, and a timeline
per session for a bounded, deterministic choice of sessions (see :func:`select_timelines`).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from streambed import __version__
from streambed.core.errors import ConfigError, ReportError, TraceError
from streambed.core.fileio import atomic_write_bytes
from streambed.reports.load import ReportDir, load_report_dir
from streambed.reports.stats import PairedComparison, bootstrap_ci, paired_comparison
from streambed.reports.summary import SessionMetrics
from streambed.traces import Trace

OPTIMAL = "optimal"
MAX_FAILED_LISTED = 50
CONFIDENCE = 0.95


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
) -> Path:
    """Read the report directories ``inputs`` and write the page to ``html``; return ``html``.

    ``traces`` is the trace directory for the inputs whose ``summary.json`` names none (eval
    outputs). ``max_timelines``: sessions with a timeline (-1 all, 0 none). ``seed`` and
    ``resamples`` drive the bootstrap intervals.
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
    page = render_page(sources, max_timelines=max_timelines, seed=seed, resamples=resamples)
    html = Path(html)
    try:
        atomic_write_bytes(html, page.encode("utf-8"))
        os.chmod(html, 0o644)  # readable beside the other outputs (the temporary file was 0600)
    except OSError as exc:
        raise ReportError(f"{html}: cannot write: {exc.strerror or exc}") from None
    return html


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


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto;
  max-width: 1180px; padding: 0 16px; color: #1d1d1f; background: #fff; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d0d0; padding: 4px 8px; vertical-align: top; }
th { background: #f2f4f7; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.optimum td { background: #fbf7e8; }
.tag { display: inline-block; font-size: 0.78em; padding: 0 5px; margin-left: 4px;
  border-radius: 3px; background: #e9dca6; color: #5a4a00; }
td.better { background: #e3f4e3; }
td.worse { background: #f9e3e3; }
td.diag { background: #f4f4f4; }
.meta, .note, figcaption { color: #555; font-size: 0.88em; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; }
.plots figure { flex: 1 1 480px; max-width: 570px; }
figure { margin: 10px 0; }
.timelines h3 { font-size: 1.05em; margin: 1.2em 0 0.1em; }
.timelines .grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(540px, 1fr));
  gap: 4px 16px; }
.timelines figure { margin: 4px 0 8px; }
img { max-width: 100%; height: auto; }
code, pre { font-size: 0.9em; }
pre { background: #f6f8fa; padding: 8px; overflow-x: auto; }
"""


def render_page(
    sources: Sequence[ReportDir], *, max_timelines: int, seed: int, resamples: int
) -> str:
    series = build_series(sources)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Streambed report: {escape(', '.join(input_names(sources)))}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Streambed report</h1>",
        f'<p class="meta">Generated {escape(now)} by streambed {escape(__version__)}.</p>',
        _inputs_section(sources),
        _summary_section(series, seed=seed, resamples=resamples),
        _paired_section(series, seed=seed, resamples=resamples),
        _plots_section(series),
        _fidelity_section(sources),
        _timelines_section(series, max_timelines),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _fmt(value: float, spec: str = ".4f", signed: bool = False) -> str:
    if not math.isfinite(value):
        return "—"
    return format(value, ("+" if signed else "") + spec)


def _img(png: bytes, alt: str, element_id: str | None = None) -> str:
    data = base64.b64encode(png).decode("ascii")
    ident = f' id="{escape(element_id)}"' if element_id else ""
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}"{ident}>'


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


def _inputs_section(sources: Sequence[ReportDir]) -> str:
    rows = []
    for source, name in zip(sources, input_names(sources), strict=True):
        settings = "<br>".join(f"{escape(k)}: {escape(v)}" for k, v in _settings(source))
        failed = ""
        if source.failed:
            items = []
            for f in source.failed[:MAX_FAILED_LISTED]:
                reasons = f.get("reasons") or []
                last = reasons[-1] if isinstance(reasons, list) and reasons else ""
                items.append(
                    f"<li>{escape(str(f.get('algorithm', '?')))} / "
                    f"{escape(str(f.get('trace', '?')))}: {escape(str(last))}</li>"
                )
            more = len(source.failed) - MAX_FAILED_LISTED
            if more > 0:
                items.append(f"<li>… and {more} more (see failed.json)</li>")
            failed = (
                f"<details><summary>{len(source.failed)} failed session(s)</summary>"
                f"<ul>{''.join(items)}</ul></details>"
            )
        summary = {k: v for k, v in source.summary.items() if k != "algorithms"}
        raw = (
            "<details><summary>summary.json</summary>"
            f"<pre>{escape(json.dumps(summary, indent=1, sort_keys=True, default=str))}</pre>"
            "</details>"
        )
        rows.append(
            f"<tr><td><b>{escape(name)}</b><br><code>{escape(str(source.path))}</code></td>"
            f"<td>{escape(source.mode)}</td><td>{settings}{raw}</td>"
            f"<td>{escape(_sessions_line(source))}{failed}</td></tr>"
        )
    return (
        "<h2>Inputs</h2>"
        '<table id="inputs"><thead><tr><th>Input</th><th>Mode</th><th>Settings</th>'
        "<th>Sessions</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _finite(values: Sequence[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _mean(values: Sequence[float]) -> float:
    kept = _finite(values)
    return float(np.mean(kept)) if kept else math.nan


def _summary_section(series: Sequence[Series], *, seed: int, resamples: int) -> str:
    if not series:
        return '<h2>Summary</h2><p class="note">No sessions in per_trace.csv.</p>'
    rows = []
    for s in series:
        qoe = _finite([m.qoe for m in s.metrics])
        mean, low, high = (
            bootstrap_ci(qoe, resamples=resamples, confidence=CONFIDENCE, seed=seed)
            if qoe
            else (math.nan,) * 3
        )
        undefined = len(s.metrics) - len(qoe)
        traces = f"{len(s.metrics)}" + (f" ({undefined} without QoE)" if undefined else "")
        optimum = s.algorithm == OPTIMAL
        tag = '<span class="tag">offline optimum</span>' if optimum else ""
        css = ' class="optimum"' if optimum else ""
        rows.append(
            f'<tr{css} data-label="{escape(s.label)}">'
            f"<td>{escape(s.label)}{tag}</td>"
            f'<td class="num">{escape(traces)}</td>'
            f'<td class="num qoe">{_fmt(mean)}</td>'
            f'<td class="num ci">[{_fmt(low)}, {_fmt(high)}]</td>'
            f'<td class="num">{_fmt(_mean([m.bitrate_mean_kbps for m in s.metrics]), ".0f")}</td>'
            f'<td class="num">{_fmt(_mean([m.rebuffer_ratio for m in s.metrics]) * 100, ".3f")}%</td>'
            f'<td class="num">{_fmt(_mean([m.switches_per_chunk for m in s.metrics]), ".3f")}</td>'
            "</tr>"
        )
    note = (
        f"QoE: each trace's mean per-chunk QoE over chunks 2..N, averaged over traces; 95% CI: "
        f"percentile bootstrap of that mean over traces ({resamples} resamples, seed {seed}). "
        "Bitrate, rebuffer ratio (stall / (stall + content played)) and switches per chunk: "
        "means over traces, from per_trace.csv."
    )
    if any(s.algorithm == OPTIMAL for s in series):
        note += (
            " <b>optimal</b> is the offline optimum: planned per trace knowing the whole "
            "future bandwidth, an upper reference no real player can reach."
        )
    return (
        "<h2>Summary</h2>"
        '<table id="summary"><thead><tr><th>Algorithm</th><th>Traces</th><th>QoE mean</th>'
        "<th>QoE 95% CI</th><th>Bitrate (kbps)</th><th>Rebuffer ratio</th>"
        "<th>Switches / chunk</th></tr></thead><tbody>"
        + "".join(rows)
        + f'</tbody></table><p class="note">{note}</p>'
    )


def _paired_cell(c: PairedComparison) -> str:
    if c.traces == 0:
        return '<td class="none" title="no common traces">—</td>'
    css = "better" if c.low > 0 else "worse" if c.high < 0 else "even"
    return (
        f'<td class="{css}" data-traces="{c.traces}" data-wins="{c.wins}" data-ties="{c.ties}" '
        f'data-losses="{c.losses}">'
        f"<b>{c.win_fraction * 100:.0f}%</b> better, {c.tie_fraction * 100:.0f}% tied "
        f"<small>({c.wins}/{c.traces} better, {c.ties} tied)</small><br>"
        f"Δ {_fmt(c.mean_diff, signed=True)} [{_fmt(c.low, signed=True)}, "
        f"{_fmt(c.high, signed=True)}]</td>"
    )


def _paired_section(series: Sequence[Series], *, seed: int, resamples: int) -> str:
    if len(series) < 2:
        return ""
    qoe = [s.qoe_by_trace() for s in series]
    head = "".join(f"<th>vs {escape(s.label)}</th>" for s in series)
    rows = []
    for i, a in enumerate(series):
        cells = []
        for j in range(len(series)):
            if i == j:
                cells.append('<td class="diag"></td>')
                continue
            c = paired_comparison(qoe[i], qoe[j], resamples=resamples, seed=seed)
            cells.append(_paired_cell(c))
        rows.append(f"<tr><th>{escape(a.label)}</th>{''.join(cells)}</tr>")
    note = (
        "Row A against column B over the traces both played (with a defined QoE): the share "
        "of traces where A's QoE is higher, and where the two are equal (within 1e-9); Δ is "
        f"the mean over those traces of QoE(A) − QoE(B) with its 95% percentile-bootstrap "
        f"interval ({resamples} resamples, seed {seed}). Green: the interval is above 0; red: "
        "below 0."
    )
    return (
        "<h2>Paired per-trace comparisons</h2>"
        f'<table id="paired"><thead><tr><th>A \\ B</th>{head}</tr></thead><tbody>'
        + "".join(rows)
        + f'</tbody></table><p class="note">{note}</p>'
    )


def _plots_section(series: Sequence[Series]) -> str:
    from streambed.reports.plots import plot_bitrate_rebuffer, plot_qoe_cdf

    labelled = [replace(m, algorithm=s.label) for s in series for m in s.metrics]
    if not labelled:
        return ""
    cdf = _img(plot_qoe_cdf(labelled), "QoE CDF per algorithm", "qoe-cdf")
    scatter = _img(
        plot_bitrate_rebuffer(labelled), "mean bitrate against rebuffer ratio", "bitrate-rebuffer"
    )
    return (
        '<h2>Plots</h2><div class="plots">'
        f"<figure>{cdf}<figcaption>QoE per trace: CDF over traces.</figcaption></figure>"
        f"<figure>{scatter}<figcaption>Mean bitrate against rebuffer ratio.</figcaption>"
        "</figure></div>"
    )


def _fidelity_section(sources: Sequence[ReportDir]) -> str:
    """Each input's ``sim_vs_emu.json`` and plot (``streambed emulate --compare-sim``,
    ``streambed report --sim --emu``, the demo), when it has them."""
    import json

    from streambed.reports.fidelity import SIM_VS_EMU_JSON, SIM_VS_EMU_PNG

    blocks = []
    for source in sources:
        path = source.path / SIM_VS_EMU_JSON
        if not path.is_file():
            continue
        try:
            found = json.loads(path.read_text())
            groups = {"all": found["overall"], **found.get("algorithms", {})}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            blocks.append(
                f'<p class="note">{escape(str(path))}: unreadable ({escape(str(exc))})</p>'
            )
            continue
        columns = (
            ("sessions", "count", "d"),
            ("sim QoE", "sim_qoe_mean", ".4f"),
            ("emu QoE", "emu_qoe_mean", ".4f"),
            ("mean |QoE gap|", "qoe_gap_mean_abs", ".4f"),
            ("mean QoE gap", "qoe_gap_mean", ".4f"),
            ("mean |bitrate gap| kbps", "bitrate_gap_mean_abs_kbps", ".0f"),
            ("mean |rebuffer ratio gap|", "rebuffer_ratio_gap_mean_abs", ".4f"),
        )
        head = "".join(f"<th>{escape(c[0])}</th>" for c in columns)
        rows = []
        for name, stats in groups.items():
            cells = []
            for _, key, spec in columns:
                value = stats.get(key) if isinstance(stats, dict) else None
                cells.append(f"<td>{'—' if value is None else format(value, spec)}</td>")
            rows.append(f"<tr><th>{escape(str(name))}</th>{''.join(cells)}</tr>")
        png = source.path / SIM_VS_EMU_PNG
        plot = _img(png.read_bytes(), "emulated against simulated QoE") if png.is_file() else ""
        constants = found.get("sim_config") or {}
        blocks.append(
            f"<h3>{escape(source.name)}</h3>"
            f'<p class="note">Simulated: {escape(str(found.get("simulation", "?")))} with '
            f"rtt_s {escape(str(constants.get('rtt_s', '?')))}, payload_factor "
            f"{escape(str(constants.get('payload_factor', '?')))}. Gap = emulated minus "
            "simulated, per trace; negative means the simulator is optimistic.</p>"
            f"<table><tr><th>algorithm</th>{head}</tr>{''.join(rows)}</table>"
            f"<figure>{plot}</figure>"
        )
    if not blocks:
        return ""
    return '<h2 id="sim-vs-emu">Simulation versus emulation</h2>' + "".join(blocks)


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


def _timelines_section(series: Sequence[Series], max_timelines: int) -> str:
    from streambed.reports.plots import plot_timeline

    sessions = sum(len(s.metrics) for s in series)
    if sessions == 0:
        return ""
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
    groups: dict[tuple[int, str], list[str]] = {}
    headings: dict[tuple[int, str], str] = {}
    several = len({id(s.source) for s in series}) > 1
    for pick in picks:
        source, trace_name = pick.series.source, pick.metrics.trace
        key = (id(source), trace_name)
        trace, trace_note = _trace_for(source, trace_name)
        if key not in headings:
            where = f" ({source.name})" if several else ""
            headings[key] = (
                f"<h3>Trace {escape(trace_name)}{escape(where)}</h3>"
                f'<p class="note">{escape(trace_note)}</p>'
            )
        png = plot_timeline(source.records(pick.series.algorithm, trace_name), trace)
        caption = (
            f"<b>{escape(pick.series.label)}</b> on {escape(trace_name)}: QoE "
            f"{_fmt(pick.metrics.qoe, '.3f')} ({escape(pick.role)})"
        )
        alt = f"timeline of {pick.series.label} on {trace_name}"
        groups.setdefault(key, []).append(
            f'<figure class="timeline">{_img(png, alt)}<figcaption>{caption}</figcaption></figure>'
        )
    figures = [
        f'{headings[key]}<div class="grid">{"".join(items)}</div>' for key, items in groups.items()
    ]
    legend = (
        "Each timeline: the bitrate chosen per chunk (blue step), each chunk's measured "
        "throughput at its last byte (orange dots; triangles at the top edge are off the scale), "
        "the trace's bandwidth from session second 0, looped (grey), and the buffer level "
        "(green, right axis); stalls shaded red, the first chunk's start-up wait grey."
    )
    return (
        '<h2>Session timelines</h2><div class="timelines">'
        f'<p class="note" id="timelines-note">{escape(lead)}</p>'
        + (f'<p class="note">{legend}</p>' if figures else "")
        + "".join(figures)
        + "</div>"
    )
