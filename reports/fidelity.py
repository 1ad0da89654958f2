"""Simulation versus emulation: the same traces, video and algorithms in both, trace by trace.

* :func:`compare` joins the ``per_trace.csv`` of a simulation (``streambed eval``) and of an
  emulation (``streambed emulate``) on (algorithm, trace) into :class:`FidelityRow` s: each
  side's QoE, mean bitrate and rebuffering, and the gaps, always *emulated minus simulated*.
  Sessions present on one side only are left out with a warning.
* :func:`write_sim_vs_emu` writes ``sim_vs_emu.csv`` (the rows), ``sim_vs_emu.json`` (per
  algorithm and overall: mean absolute QoE gap, mean QoE gap (the bias), mean absolute bitrate
  and rebuffer gaps, count) and ``sim_vs_emu.png`` (emulated against simulated QoE with the
  y = x line, and the distribution of the QoE gaps).
Re-simulating what an emulation ran lives with the simulator (:mod:`streambed.trainer.replay`):
* :func:`~streambed.trainer.replay.simulate_like` runs the test-mode simulator on what an emulation ran: the traces of
  its ``traces_dir`` that it has sessions of, its video (the summary's ``content``, else
  ``content/video.json``, or one given)
  and its algorithms, and writes an eval-style directory whose trace labels are the
  emulation's (a repeated session ``<stem>-rR`` gets the one simulated session of ``<stem>``:
  test mode is deterministic). Sessions cut short (``--max-chunks``) are compared on as many
  chunks: the simulator plays the whole video (so the algorithm sees the video the emulated
  player announced to it) and its records are cut to the emulated session's chunk count.
  A simulated session starts at the trace's beginning, as ``streambed eval``'s; an emulated
  one starts where the link's trace clock was when the player sent its first request
  (``link.trace_offset_s`` in session.json, seconds to tens of seconds on a loaded host). With
  ``align_start`` each simulated session starts there too (:func:`rotate_trace`), which
  compares like with like.
* :func:`~streambed.trainer.replay.sim_vs_emu` does both for an emulation directory: simulate,
  compare (:func:`write_comparison`, here), write.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streambed.core.errors import ConfigError, ReportError
from streambed.reports.load import read_per_trace_csv
from streambed.reports.repeats import base_trace
from streambed.reports.rundir import (
    PER_TRACE_CSV,
    SIM_VS_EMU_CSV,
    SIM_VS_EMU_JSON,
    SIM_VS_EMU_PNG,
    SUMMARY_JSON,
)
from streambed.reports.summary import SessionMetrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FidelityRow:
    """One (algorithm, trace) session simulated and emulated; every gap is emu - sim."""

    algorithm: str
    trace: str
    sim_qoe: float
    emu_qoe: float
    qoe_gap: float
    sim_bitrate_kbps: float
    emu_bitrate_kbps: float
    bitrate_gap_kbps: float
    sim_rebuffer_ratio: float
    emu_rebuffer_ratio: float
    rebuffer_ratio_gap: float
    sim_rebuffer_s: float
    emu_rebuffer_s: float
    rebuffer_s_gap: float
    sim_chunks: int
    emu_chunks: int


@dataclass
class Matched:
    """The rows of the sessions on both sides, and the (algorithm, trace) keys on one only."""

    rows: list[FidelityRow]
    only_sim: list[tuple[str, str]] = field(default_factory=list)
    only_emu: list[tuple[str, str]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Reading and joining


def read_per_trace(directory: Path) -> list[SessionMetrics]:
    """The rows of ``directory/per_trace.csv`` (``ConfigError`` naming the file, line, column)."""
    path = Path(directory) / PER_TRACE_CSV
    if not path.is_file():
        raise ConfigError(f"{path}: no such file (not a streambed eval/emulate output directory?)")
    try:
        return read_per_trace_csv(path)
    except ReportError as exc:
        raise ConfigError(str(exc)) from None


def _by_key(metrics: Sequence[SessionMetrics], where: str) -> dict[tuple[str, str], SessionMetrics]:
    keyed: dict[tuple[str, str], SessionMetrics] = {}
    for m in metrics:
        key = (m.algorithm, m.trace)
        if key in keyed:
            raise ConfigError(f"{where}: algorithm {m.algorithm!r} trace {m.trace!r} twice")
        keyed[key] = m
    return keyed


def match(
    sim: Sequence[SessionMetrics],
    emu: Sequence[SessionMetrics],
    *,
    sim_where: str = "simulation",
    emu_where: str = "emulation",
) -> Matched:
    """Join two sets of per-trace metrics on (algorithm, trace), in the emulation's order.

    ``streambed eval`` names a trace by its file name and ``streambed emulate`` by the file's
    stem, so a simulated ``x.log`` matches an emulated ``x`` when no simulated ``x`` exists."""
    sim_by, emu_by = _by_key(sim, sim_where), _by_key(emu, emu_where)
    by_stem: dict[tuple[str, str], tuple[str, str]] = {}
    for a, t in sim_by:
        by_stem.setdefault((a, Path(t).stem), (a, t))
    rows = []
    used = set()
    for key, e in emu_by.items():
        sim_key = key if key in sim_by else by_stem.get(key)
        if sim_key is None:
            continue
        used.add(sim_key)
        s = sim_by[sim_key]
        rows.append(
            FidelityRow(
                algorithm=key[0],
                trace=key[1],
                sim_qoe=s.qoe,
                emu_qoe=e.qoe,
                qoe_gap=e.qoe - s.qoe,
                sim_bitrate_kbps=s.bitrate_mean_kbps,
                emu_bitrate_kbps=e.bitrate_mean_kbps,
                bitrate_gap_kbps=e.bitrate_mean_kbps - s.bitrate_mean_kbps,
                sim_rebuffer_ratio=s.rebuffer_ratio,
                emu_rebuffer_ratio=e.rebuffer_ratio,
                rebuffer_ratio_gap=e.rebuffer_ratio - s.rebuffer_ratio,
                sim_rebuffer_s=s.rebuffer_s,
                emu_rebuffer_s=e.rebuffer_s,
                rebuffer_s_gap=e.rebuffer_s - s.rebuffer_s,
                sim_chunks=s.chunks,
                emu_chunks=e.chunks,
            )
        )
    return Matched(
        rows=rows,
        only_sim=[k for k in sim_by if k not in used],
        only_emu=[k for k in emu_by if k not in sim_by and by_stem.get(k) is None],
    )


def _warn_unmatched(matched: Matched) -> None:
    for side, keys in (("simulation", matched.only_sim), ("emulation", matched.only_emu)):
        if keys:
            shown = ", ".join(f"{a}/{t}" for a, t in keys[:10])
            more = f" and {len(keys) - 10} more" if len(keys) > 10 else ""
            log.warning(
                "%d session(s) only in the %s, left out of the comparison: %s%s",
                len(keys),
                side,
                shown,
                more,
            )


def compare_matched(sim_dir: Path, emu_dir: Path) -> Matched:
    """:func:`compare`, with the sessions found on one side only."""
    sim_dir, emu_dir = Path(sim_dir), Path(emu_dir)
    matched = match(
        read_per_trace(sim_dir),
        read_per_trace(emu_dir),
        sim_where=str(sim_dir / PER_TRACE_CSV),
        emu_where=str(emu_dir / PER_TRACE_CSV),
    )
    _warn_unmatched(matched)
    if not matched.rows:
        raise ConfigError(
            f"{sim_dir / PER_TRACE_CSV} and {emu_dir / PER_TRACE_CSV} have no (algorithm, trace) "
            "session in common"
        )
    return matched


def compare(sim_dir: Path, emu_dir: Path) -> list[FidelityRow]:
    """Join the ``per_trace.csv`` of a simulation and an emulation (module docstring)."""
    return compare_matched(sim_dir, emu_dir).rows


# ---------------------------------------------------------------------------------------------
# Summaries, files and the plot


def _finite_mean(values: Sequence[float], absolute: bool = False) -> float | None:
    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    if not len(array):
        return None
    return float(np.mean(np.abs(array) if absolute else array))


def _over_repeats(rows: Sequence[FidelityRow]) -> float | None:
    """Mean |QoE gap| per trace of the sessions' means over repeats (``TRACE-rR``): the
    emulation's expected session against the simulation's; None without repeats."""
    groups: dict[tuple[str, str], list[FidelityRow]] = {}
    for r in rows:
        groups.setdefault((r.algorithm, base_trace(r.trace)), []).append(r)
    if all(len(g) < 2 for g in groups.values()):
        return None
    gaps = []
    for group in groups.values():
        emu = _finite_mean([r.emu_qoe for r in group])
        sim = _finite_mean([r.sim_qoe for r in group])
        if emu is not None and sim is not None:
            gaps.append(emu - sim)
    return _finite_mean(gaps, absolute=True)


def _stats(rows: Sequence[FidelityRow]) -> dict[str, Any]:
    gaps = [r.qoe_gap for r in rows]
    return {
        "count": len(rows),
        "qoe_gap_mean_abs": _finite_mean(gaps, absolute=True),
        "qoe_gap_mean_abs_over_repeats": _over_repeats(rows),
        "qoe_gap_mean": _finite_mean(gaps),
        "sim_qoe_mean": _finite_mean([r.sim_qoe for r in rows]),
        "emu_qoe_mean": _finite_mean([r.emu_qoe for r in rows]),
        "bitrate_gap_mean_abs_kbps": _finite_mean([r.bitrate_gap_kbps for r in rows], True),
        "bitrate_gap_mean_kbps": _finite_mean([r.bitrate_gap_kbps for r in rows]),
        "rebuffer_ratio_gap_mean_abs": _finite_mean([r.rebuffer_ratio_gap for r in rows], True),
        "rebuffer_ratio_gap_mean": _finite_mean([r.rebuffer_ratio_gap for r in rows]),
        "rebuffer_s_gap_mean_abs": _finite_mean([r.rebuffer_s_gap for r in rows], True),
    }


def fidelity_summary(rows: Sequence[FidelityRow]) -> dict[str, Any]:
    """Overall and per-algorithm statistics of the gaps (None where no value is finite).

    ``qoe_gap_mean_abs`` is the mean absolute per-trace QoE gap; ``qoe_gap_mean`` its signed
    mean (emulation minus simulation: negative when the simulator is optimistic);
    ``qoe_gap_mean_abs_over_repeats`` (repeated sessions only) the same of each trace's means
    over its repeats.
    """
    return {
        "overall": _stats(rows),
        "algorithms": {
            a: _stats([r for r in rows if r.algorithm == a])
            for a in dict.fromkeys(r.algorithm for r in rows)
        },
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def write_sim_vs_emu(
    rows: Sequence[FidelityRow], out_dir: Path, *, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write ``sim_vs_emu.csv``, ``.json`` and ``.png`` into ``out_dir``; return the summary
    (:func:`fidelity_summary` plus ``extra``, as written to the JSON)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / SIM_VS_EMU_CSV, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[f.name for f in dataclasses.fields(FidelityRow)])
        writer.writeheader()
        for row in rows:
            writer.writerow(dataclasses.asdict(row))
    summary = _json_safe({**fidelity_summary(rows), **(extra or {})})
    (out_dir / SIM_VS_EMU_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    if rows:
        plot_sim_vs_emu(rows, out_dir / SIM_VS_EMU_PNG)
    return summary


def plot_sim_vs_emu(rows: Sequence[FidelityRow], path: Path) -> Path:
    """:func:`sim_vs_emu_figure` written as ``path`` (PNG) and a PDF of the same stem."""
    import matplotlib.pyplot as plt

    from streambed.reports.style import paper_style, save_figure

    fig = sim_vs_emu_figure(rows)
    try:
        with paper_style():
            return save_figure(fig, path, dpi=200)
    finally:
        plt.close(fig)


def sim_vs_emu_figure(rows: Sequence[FidelityRow]) -> Figure:
    """Emulated against simulated QoE per trace (y = x: perfect agreement), and the gaps, in
    the paper style (double-column wide)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from streambed.reports.plots import qoe_label
    from streambed.reports.style import DOUBLE_COLUMN_IN, algorithm_color, paper_style

    with paper_style():
        fig, (ax, hist) = plt.subplots(1, 2, figsize=(DOUBLE_COLUMN_IN, 2.8))
        finite = [r for r in rows if math.isfinite(r.sim_qoe) and math.isfinite(r.emu_qoe)]
        algorithms = list(dict.fromkeys(r.algorithm for r in rows))
        # Shared bins, so the algorithms' histograms compare.
        bins = np.histogram_bin_edges([r.qoe_gap for r in finite] or [0.0], bins=30)
        for algorithm in algorithms:
            mine = [r for r in finite if r.algorithm == algorithm]
            if not mine:
                continue
            stats = _stats(mine)
            color = algorithm_color(algorithm)
            label = f"{algorithm} (mean |gap| {stats['qoe_gap_mean_abs']:.2f}, n={len(mine)})"
            ax.scatter(
                [r.sim_qoe for r in mine],
                [r.emu_qoe for r in mine],
                s=8,
                alpha=0.7,
                color=color,
                label=label,
            )
            hist.hist([r.qoe_gap for r in mine], bins=bins, alpha=0.5, color=color, label=algorithm)
        if finite:
            values = [v for r in finite for v in (r.sim_qoe, r.emu_qoe)]
            low, high = min(values), max(values)
            pad = 0.05 * (high - low or 1.0)
            ax.plot([low - pad, high + pad], [low - pad, high + pad], "k--", lw=0.8, label="y = x")
            ax.set_xlim(low - pad, high + pad)
            ax.set_ylim(low - pad, high + pad)
        ax.set_xlabel(qoe_label(None, "simulated"))
        ax.set_ylabel(qoe_label(None, "emulated"))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
        hist.axvline(0.0, color="k", lw=0.8, ls="--")
        hist.set_xlabel("QoE gap per trace (emulated - simulated, per chunk)")
        hist.set_ylabel("sessions")
        hist.yaxis.set_major_locator(MaxNLocator(integer=True))
        hist.grid(alpha=0.3)
        hist.legend()
        overall = _stats(finite)
        if overall["qoe_gap_mean_abs"] is not None:
            fig.suptitle(
                f"simulation vs emulation: mean |QoE gap| {overall['qoe_gap_mean_abs']:.3f}, "
                f"mean gap {overall['qoe_gap_mean']:+.3f} over {len(finite)} sessions"
            )
        fig.tight_layout()
    return fig


def _read_summary(directory: Path) -> dict[str, Any]:
    path = Path(directory) / SUMMARY_JSON
    try:
        found = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (not a streambed eval/emulate output)") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable: {exc}") from None
    if not isinstance(found, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return found


def check_comparable(
    sim_dir: Path, emu_dir: Path, rows: Sequence[FidelityRow], *, allow_mismatch: bool = False
) -> tuple[list[str], list[str]]:
    """``(differences, unknowns)`` of the two runs (:func:`~streambed.reports.provenance.
    compare_runs`); a difference is a ``ConfigError`` unless ``allow_mismatch`` (then a
    warning, as is every unknown)."""
    from streambed.reports.provenance import compare_runs

    differences, unknowns = compare_runs(
        _read_summary(sim_dir),
        _read_summary(emu_dir),
        [(r.sim_chunks, r.emu_chunks) for r in rows],
        {r.algorithm for r in rows},
    )
    if differences and not allow_mismatch:
        raise ConfigError(
            f"simulation {sim_dir} and emulation {emu_dir} differ: {'; '.join(differences)} "
            "(compare like with like, or give --allow-mismatch)"
        )
    for line in differences:
        log.warning("MISMATCH, compared anyway (--allow-mismatch): %s", line)
    for line in unknowns:
        log.warning("cannot check: %s", line)
    return differences, unknowns


def write_comparison(
    sim_dir: Path,
    emu_dir: Path,
    out_dir: Path | None = None,
    *,
    allow_mismatch: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """Compare the eval-style ``sim_dir`` with the emulation ``emu_dir``; write the
    ``sim_vs_emu`` files into ``out_dir`` (default ``emu_dir``); return the summary, which
    also names both, the simulator's constants, ``extra``, the sessions left unmatched and
    what :func:`check_comparable` found (``mismatches``, ``unknown``): runs over different
    chunk windows, videos or ppo checkpoints are refused unless ``allow_mismatch``."""
    sim_dir, emu_dir = Path(sim_dir), Path(emu_dir)
    matched = compare_matched(sim_dir, emu_dir)
    differences, unknowns = check_comparable(
        sim_dir, emu_dir, matched.rows, allow_mismatch=allow_mismatch
    )
    summary = _read_summary(sim_dir)
    described = {
        "simulation": str(sim_dir),
        "emulation": str(emu_dir),
        "sim_config": summary.get("sim_config"),
        **extra,
        "mismatches": differences,
        "unknown": unknowns,
        "only_sim": [list(k) for k in matched.only_sim],
        "only_emu": [list(k) for k in matched.only_emu],
    }
    return write_sim_vs_emu(matched.rows, emu_dir if out_dir is None else out_dir, extra=described)
