"""Fit the simulator's link constants (``SimConfig.rtt_s``, ``payload_factor``) to an emulation.

The simulator's link model (:mod:`streambed.trainer.simulator`): a chunk of ``S`` bytes requested at
trace position ``p`` takes ``T(p, S / payload_factor) + rtt_s`` seconds, where ``T(p, B)`` is
the trace time from ``p`` until the trace has delivered ``B`` bytes (looping at its end). The
emulated link replays the same trace (Mahimahi's opportunities from the same trace time 0), but
what rides on it is real TCP (slow start, also after idle; acknowledgement clocking; request
legs of ``2 * delay_ms``), HTTP overheads and a player in real time.

Two objectives:

``download`` (default)
    Every emulated chunk downloaded at the first attempt is one sample: its size, the trace
    position at which it was requested (``request_start_s`` plus the session's
    ``link.trace_offset_s`` from ``session.json``: the trace time of the session clock's zero),
    and its measured time. By default that time is the chunk's whole *cycle*, the decision gap
    (from the previous chunk's end and sleep to this request: the decision request) plus
    ``download_s``, because that is what the simulator's per-chunk delay stands for: the time
    the buffer drains between two chunks; so ``rtt_s`` absorbs the player's decision latency
    (``include_decision=False``, ``--download-only``: ``download_s`` alone; the first chunk,
    which has no gap, is then a sample too). For each ``payload_factor`` on a grid over
    [0.2, 1] the model's trace time is computed for every sample at once (vectorised over the
    grid and the samples: cumulative bytes of the looped trace, inverted by
    ``searchsorted``); the best ``rtt_s`` for that factor is closed-form (``l2``: the mean
    residual, ``l1``: the median, clipped at 0), and the factor with the smallest loss is
    refined on finer grids around it. Sessions without a recorded offset (Mahimahi links)
    share one fitted offset (a third parameter, on a grid).
``qoe``
    Searches (``rtt_s``, ``payload_factor``) for the smallest mean absolute per-trace QoE gap
    by re-simulating the emulation's sessions (:func:`streambed.trainer.replay.simulate_plan`): a
    coarse grid, then pattern-search refinements with halving steps around the best point.

Either way the QoE gap before (default constants) and after (fitted) is measured by
re-simulating, with the simulated sessions starting where the emulated ones started in their
traces (``streambed.trainer.replay.rotate_trace``: like with like, the main comparison by default) and
at the traces' beginning (as ``streambed eval`` and ``simulate_like`` by default);
:func:`calibrate` writes both comparisons and ``calibration.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streambed.core.errors import ConfigError
from streambed.reports.fidelity import fidelity_summary, match, read_per_trace, write_sim_vs_emu
from streambed.reports.rundir import SessionDir
from streambed.reports.sessionlog import read_jsonl
from streambed.reports.summary import SessionMetrics
from streambed.traces import Trace
from streambed.trainer.replay import (
    EmulationPlan,
    plan_from_emulation,
    session_dir,
    simulate_plan,
    write_simulation,
)
from streambed.trainer.simulator import WALL_TIMING, SimConfig

log = logging.getLogger(__name__)

OBJECTIVES = ("download", "qoe")
LOSSES = ("l2", "l1")
CALIBRATION_JSON = "calibration.json"
PAYLOAD_MIN = 0.2  # below this the "link" would be mostly overhead: no plausible fit
PAYLOAD_GRID = np.round(np.arange(PAYLOAD_MIN, 1.0 + 1e-9, 0.01), 6)
OFFSET_GRID_S = np.round(np.arange(0.0, 5.0 + 1e-9, 0.1), 6)
QOE_RTT_GRID_S = (0.0, 0.08, 0.16, 0.24, 0.32, 0.48)
QOE_PAYLOAD_GRID = (0.6, 0.7, 0.8, 0.9, 0.95, 1.0)


# ---------------------------------------------------------------------------------------------
# The simulator's link model, vectorised


class TraceLink:
    """The simulator's link over one trace: ``trace_s`` for many downloads at once.

    Interval ``i`` (``times[i]`` to ``times[i+1]``, trace times from 0) delivers
    ``mbps[i+1] * 1e6 / 8`` bytes per second; the trace loops with period ``times[-1]``.
    """

    def __init__(self, trace: Trace) -> None:
        times = np.asarray(trace.times_s, dtype=np.float64) - float(trace.times_s[0])
        self.times = times
        self.period = float(times[-1])
        self.rate = np.asarray(trace.mbps[1:], dtype=np.float64) * 1e6 / 8
        self.cum = np.concatenate(([0.0], np.cumsum(self.rate * np.diff(times))))
        self.per_period = float(self.cum[-1])
        if not (self.period > 0 and self.per_period > 0):
            raise ConfigError(f"trace {trace.name!r} delivers no bytes")

    def bytes_at(self, t: np.ndarray) -> np.ndarray:
        """Bytes delivered from trace time 0 to ``t`` (unwrapped, so loops count)."""
        t = np.asarray(t, dtype=np.float64)
        loops = np.floor(t / self.period)
        r = t - loops * self.period
        j = np.clip(np.searchsorted(self.times, r, side="right") - 1, 0, len(self.rate) - 1)
        return loops * self.per_period + self.cum[j] + self.rate[j] * (r - self.times[j])

    def time_of(self, b: np.ndarray) -> np.ndarray:
        """The trace time at which the bytes delivered reach ``b``.

        As the simulator (``sent + payload > size`` ends the download within an interval), a
        download ends inside the first interval whose end has delivered more than ``b``.
        """
        b = np.asarray(b, dtype=np.float64)
        loops = np.floor(b / self.per_period)
        rem = np.minimum(b - loops * self.per_period, np.nextafter(self.per_period, 0.0))
        rem = np.maximum(rem, 0.0)
        j = np.searchsorted(self.cum, rem, side="right")  # cum[j-1] <= rem < cum[j]
        j = np.clip(j, 1, len(self.rate))
        return loops * self.period + self.times[j - 1] + (rem - self.cum[j - 1]) / self.rate[j - 1]

    def trace_s(self, start_s: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
        """Trace seconds to deliver ``nbytes`` from trace position ``start_s`` (broadcast)."""
        start_s = np.asarray(start_s, dtype=np.float64)
        return self.time_of(self.bytes_at(start_s) + np.asarray(nbytes, dtype=np.float64)) - start_s


def model_download_s(
    link: TraceLink,
    start_s: np.ndarray,
    chunk_bytes: np.ndarray,
    rtt_s: float,
    payload_factor: float,
) -> np.ndarray:
    """The simulator's (noise-free) delay of chunks requested at trace positions ``start_s``."""
    return link.trace_s(start_s, np.asarray(chunk_bytes, dtype=np.float64) / payload_factor) + rtt_s


# ---------------------------------------------------------------------------------------------
# Samples


@dataclass(frozen=True)
class SessionSamples:
    """The chunks of one emulated session used by the download fit."""

    algorithm: str
    label: str
    stem: str
    start_s: np.ndarray
    """Session-clock ``request_start_s`` of each chunk."""
    chunk_bytes: np.ndarray
    download_s: np.ndarray
    cycle_s: np.ndarray
    """The decision gap before the request plus ``download_s`` (NaN for the first chunk)."""
    offset_s: float | None
    """The trace time of the session clock's zero (None: not recorded, fitted)."""

    def __len__(self) -> int:
        return len(self.start_s)


def load_samples(plan: EmulationPlan) -> list[SessionSamples]:
    """Every emulated session's chunks downloaded at the first attempt (a ``StreambedError``
    naming the file and line when a session's chunk log is malformed)."""
    out = []
    for s in plan.sessions:
        where = session_dir(plan.emu_dir, s.algorithm, s.label)
        files = SessionDir(where)
        records = read_jsonl(files.chunks_jsonl) if files.chunks_jsonl.is_file() else []
        if not records:
            log.warning("%s: no chunk records, session left out of the fit", where)
            continue
        offset = None
        try:
            info = json.loads(files.session_json.read_text())
            link = info.get("link") or {}
            if link.get("trace_offset_s") is not None:
                offset = float(link["trace_offset_s"])
        except (OSError, ValueError, AttributeError, TypeError):
            log.warning("%s: unreadable session.json; its trace offset is fitted", where)
        starts, sizes, downloads, cycles = [], [], [], []
        previous_end: float | None = None
        for r in records:
            if r.attempts == 1 and r.download_s > 0:
                gap = math.nan if previous_end is None else r.request_start_s - previous_end
                starts.append(r.request_start_s)
                sizes.append(r.chunk_bytes)
                downloads.append(r.download_s)
                cycles.append(gap + r.download_s)
            previous_end = r.request_end_s + r.sleep_s
        out.append(
            SessionSamples(
                algorithm=s.algorithm,
                label=s.label,
                stem=s.stem,
                start_s=np.asarray(starts, dtype=np.float64),
                chunk_bytes=np.asarray(sizes, dtype=np.float64),
                download_s=np.asarray(downloads, dtype=np.float64),
                cycle_s=np.asarray(cycles, dtype=np.float64),
                offset_s=offset,
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# The download fit


@dataclass(frozen=True)
class DownloadFit:
    rtt_s: float
    payload_factor: float
    offset_s: float | None
    """The offset fitted for the sessions that record none (None: every session records one)."""
    loss: str
    target: str
    """``download`` (download_s) or ``cycle`` (decision gap + download_s)."""
    chunks: int
    sessions: int
    traces: int
    errors_default: dict[str, float]
    """Model errors (seconds) with the default constants: rmse, mae, median_abs, bias."""
    errors_fitted: dict[str, float]
    decision_gap_mean_s: float | None
    """Mean time between a chunk's end (and sleep) and the next request, over chunks 1..N."""


ERROR_PERCENTILES = (5, 25, 50, 75, 95)


def _errors(residual: np.ndarray) -> dict[str, float]:
    """Summary of per-chunk time errors (emulated minus modelled, seconds): the distribution's
    percentiles as well as its moments."""
    found = {
        "rmse_s": float(np.sqrt(np.mean(residual**2))),
        "mae_s": float(np.mean(np.abs(residual))),
        "median_abs_s": float(np.median(np.abs(residual))),
        "bias_s": float(np.mean(residual)),
    }
    for q, value in zip(ERROR_PERCENTILES, np.percentile(residual, ERROR_PERCENTILES), strict=True):
        found[f"p{q}_s"] = float(value)
    return found


class _Problem:
    """The samples grouped per trace, for evaluating many payload factors at once."""

    def __init__(
        self, samples: Sequence[SessionSamples], traces: dict[str, Trace], include_decision: bool
    ) -> None:
        self.links = {stem: TraceLink(traces[stem]) for stem in {s.stem for s in samples}}
        self.groups: list[tuple[TraceLink, np.ndarray, np.ndarray, np.ndarray, bool]] = []
        targets = []
        for s in samples:
            y = s.cycle_s if include_decision else s.download_s
            keep = np.isfinite(y)
            if not keep.any():
                continue
            known = s.offset_s is not None
            start = s.start_s[keep] + (s.offset_s or 0.0)
            self.groups.append((self.links[s.stem], start, s.chunk_bytes[keep], y[keep], known))
            targets.append(y[keep])
        if not targets:
            raise ConfigError("no emulated chunk to fit (every session empty or retried)")
        self.y = np.concatenate(targets)
        self.needs_offset = any(not known for *_, known in self.groups)

    def trace_s(self, payload: np.ndarray, offset_s: float) -> np.ndarray:
        """Model trace seconds, shape (len(payload), chunks)."""
        payload = np.asarray(payload, dtype=np.float64)[:, None]
        parts = []
        for link, start, size, _, known in self.groups:
            p = start if known else start + offset_s
            parts.append(link.trace_s(p[None, :], size[None, :] / payload))
        return np.concatenate(parts, axis=1)

    def best(self, payload: np.ndarray, offset_s: float, loss: str) -> tuple[float, float, float]:
        """(loss, rtt_s, payload_factor) of the best factor in ``payload``."""
        residual = self.y[None, :] - self.trace_s(payload, offset_s)
        if loss == "l1":
            rtt = np.maximum(np.median(residual, axis=1), 0.0)
            losses = np.mean(np.abs(residual - rtt[:, None]), axis=1)
        else:
            rtt = np.maximum(np.mean(residual, axis=1), 0.0)
            losses = np.mean((residual - rtt[:, None]) ** 2, axis=1)
        i = int(np.argmin(losses))
        return float(losses[i]), float(rtt[i]), float(payload[i])


def fit_download(
    samples: Sequence[SessionSamples],
    traces: dict[str, Trace],
    *,
    loss: str = "l2",
    include_decision: bool = True,
    default: SimConfig | None = None,
) -> DownloadFit:
    """Fit ``rtt_s`` and ``payload_factor`` to the emulated downloads (module docstring).

    ``traces`` maps each sample's ``stem`` to its trace; ``default`` gives the constants whose
    errors are reported for comparison (default :class:`SimConfig`).
    """
    if loss not in LOSSES:
        raise ConfigError(f"loss {loss!r}: choose {', '.join(LOSSES)}")
    missing = sorted({s.stem for s in samples} - set(traces))
    if missing:
        raise ConfigError(f"no trace for the emulated sessions over {', '.join(missing)}")
    problem = _Problem(samples, traces, include_decision)
    offsets = OFFSET_GRID_S if problem.needs_offset else np.zeros(1)
    best: tuple[float, float, float, float] | None = None  # loss, rtt, payload, offset
    for offset in offsets:
        found = problem.best(PAYLOAD_GRID, float(offset), loss)
        if best is None or found[0] < best[0]:
            best = (*found, float(offset))
    assert best is not None
    _, rtt, payload, offset = best
    # Refine: finer payload grids around the best, then the offset (when fitted) likewise.
    step = 0.01
    for _ in range(3):
        grid = np.clip(np.linspace(payload - step, payload + step, 41), PAYLOAD_MIN, 1.0)
        _, rtt, payload = problem.best(grid, offset, loss)
        step /= 20
    if problem.needs_offset:
        candidates = np.clip(np.linspace(offset - 0.1, offset + 0.1, 41), 0.0, None)
        scored = [(problem.best(np.array([payload]), float(o), loss), float(o)) for o in candidates]
        (_, rtt, payload), offset = min(scored, key=lambda item: item[0][0])
    default = default or SimConfig()
    base = problem.trace_s(np.array([default.payload_factor]), offset)[0] + default.rtt_s
    fitted = problem.trace_s(np.array([payload]), offset)[0] + rtt
    gaps = np.concatenate([s.cycle_s - s.download_s for s in samples]) if samples else np.array([])
    gaps = gaps[np.isfinite(gaps)]
    return DownloadFit(
        rtt_s=rtt,
        payload_factor=payload,
        offset_s=offset if problem.needs_offset else None,
        loss=loss,
        target="cycle" if include_decision else "download",
        chunks=len(problem.y),
        sessions=len(problem.groups),
        traces=len(problem.links),
        errors_default=_errors(problem.y - base),
        errors_fitted=_errors(problem.y - fitted),
        decision_gap_mean_s=float(np.mean(gaps)) if len(gaps) else None,
    )


# ---------------------------------------------------------------------------------------------
# The QoE gap and the qoe objective


def qoe_gap(plan: EmulationPlan, emulated: Sequence[SessionMetrics], config: SimConfig) -> float:
    """Mean absolute per-trace QoE gap of the simulator with ``config`` against ``emulated``."""
    simulated, _ = simulate_plan(plan, config)
    value = fidelity_summary(match(simulated, emulated).rows)["overall"]["qoe_gap_mean_abs"]
    return math.inf if value is None else float(value)


@dataclass
class QoeSearch:
    rtt_s: float
    payload_factor: float
    gap: float
    evaluations: list[dict[str, float]] = field(default_factory=list)


def fit_qoe(
    plan: EmulationPlan,
    emulated: Sequence[SessionMetrics],
    *,
    refinements: int = 4,
    progress: bool = False,
    evaluate: Callable[[SimConfig], float] | None = None,
) -> QoeSearch:
    """Grid, then pattern search (halving steps) of the constants minimising the QoE gap."""
    from tqdm import tqdm

    score = evaluate or (lambda config: qoe_gap(plan, emulated, config))
    cache: dict[tuple[float, float], float] = {}
    bar = tqdm(desc="qoe fit", unit="sim", disable=not progress, leave=False)

    def gap(rtt: float, payload: float) -> float:
        key = (round(max(rtt, 0.0), 6), round(min(max(payload, 0.05), 1.0), 6))
        if key not in cache:
            config = dataclasses.replace(plan.base_config, rtt_s=key[0], payload_factor=key[1])
            cache[key] = score(config)
            bar.update(1)
            bar.set_postfix(best=f"{min(cache.values()):.4f}", refresh=False)
        return cache[key]

    try:
        for rtt in QOE_RTT_GRID_S:
            for payload in QOE_PAYLOAD_GRID:
                gap(rtt, payload)
        (rtt, payload) = min(cache, key=cache.__getitem__)
        d_rtt, d_payload = 0.04, 0.05
        for _ in range(refinements):
            for dr in (-d_rtt, 0.0, d_rtt):
                for dp in (-d_payload, 0.0, d_payload):
                    gap(rtt + dr, payload + dp)
            (rtt, payload) = min(cache, key=cache.__getitem__)
            d_rtt, d_payload = d_rtt / 2, d_payload / 2
    finally:
        bar.close()
    evaluations = [
        {"rtt_s": r, "payload_factor": p, "qoe_gap_mean_abs": g} for (r, p), g in cache.items()
    ]
    return QoeSearch(rtt, payload, cache[(rtt, payload)], evaluations)


# ---------------------------------------------------------------------------------------------
# The whole calibration


@dataclass
class CalibrationResult:
    default: SimConfig
    fitted: SimConfig
    objective: str
    qoe_gap_default: float | None
    """Mean absolute per-trace QoE gap with the default constants (re-simulated)."""
    qoe_gap_fitted: float | None
    """The same with the fitted constants (re-simulated)."""
    report: dict[str, Any]
    """What ``calibration.json`` holds."""


@contextlib.contextmanager
def _quiet_evaluate() -> Iterator[None]:
    """The evaluator logs a line per algorithm and run: too many when re-simulating often."""
    logger = logging.getLogger("streambed.trainer.evaluate")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _comparison(
    plan: EmulationPlan,
    emulated: Sequence[SessionMetrics],
    config: SimConfig,
    out: Path,
    progress: bool,
) -> dict[str, Any]:
    """Simulate with ``config`` into ``out/sim``, write the sim_vs_emu files into ``out``."""
    simulated = write_simulation(plan, out / "sim", config, progress=progress)
    matched = match(simulated, emulated)
    extra = {
        "simulation": str(out / "sim"),
        "emulation": str(plan.emu_dir),
        "sim_config": dataclasses.asdict(config),
        "align_start": any(s.start_s is not None for s in plan.sessions),
    }
    return write_sim_vs_emu(matched.rows, out, extra=extra)


def calibrate(
    emu_dir: Path,
    out: Path | None = None,
    *,
    video: Path | None = None,
    model: Path | None = None,
    traces: Path | None = None,
    objective: str = "download",
    loss: str = "l2",
    include_decision: bool = True,
    align_start: bool = True,
    timing: str = WALL_TIMING,
    progress: bool = True,
) -> CalibrationResult:
    """Fit the constants to the emulation in ``emu_dir``, compare before and after.

    Writes ``out`` (default ``emu_dir/calibration``): ``calibration.json``; ``default/`` and
    ``fitted/`` (each a simulation ``sim/`` and the ``sim_vs_emu`` files, the simulated
    sessions starting where the emulated ones started in their traces, or with
    ``align_start=False`` at the traces' beginning), and ``default-unaligned/`` and
    ``fitted-unaligned/`` (or ``-aligned``: the other way of starting). The ``qoe``
    objective minimises the gap of the ``align_start`` way.
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective {objective!r}: choose {', '.join(OBJECTIVES)}")
    if loss not in LOSSES:
        raise ConfigError(f"loss {loss!r}: choose {', '.join(LOSSES)}")
    emu_dir = Path(emu_dir)
    out = emu_dir / "calibration" if out is None else Path(out)
    plan = plan_from_emulation(
        emu_dir, video=video, model=model, traces=traces, align_start=align_start, timing=timing
    )
    other = dataclasses.replace(
        plan,
        sessions=plan_from_emulation(
            emu_dir,
            video=video,
            model=model,
            traces=traces,
            align_start=not align_start,
            timing=timing,
        ).sessions,
    )
    emulated = read_per_trace(emu_dir)
    default = plan.base_config
    report: dict[str, Any] = {
        "emulation": str(emu_dir),
        "objective": objective,
        "align_start": align_start,
        "sim_config_default": dataclasses.asdict(plan.base_config),
        "link": plan.summary.get("link"),
        "delay_ms": plan.summary.get("delay_ms"),
        "sessions": len(plan.sessions),
        "traces": len(plan.traces),
        "algorithms": plan.algorithms,
        "emulated_chunks": sum(m.chunks for m in emulated),
    }
    with _quiet_evaluate():
        if objective == "download":
            by_stem = {t.name: t for t in plan.traces}
            fit = fit_download(
                load_samples(plan),
                by_stem,
                loss=loss,
                # The emulation's timing models the decision as its own wait: fit the
                # downloads alone; Pensieve's has no wait and lets rtt_s absorb it.
                include_decision=include_decision and not default.wall,
                default=default,
            )
            fitted = dataclasses.replace(
                default, rtt_s=fit.rtt_s, payload_factor=fit.payload_factor
            )
            report["download_fit"] = dataclasses.asdict(fit)
            log.info(
                "download fit over %d chunks of %d sessions: rtt_s %.4f, payload_factor %.4f "
                "(rmse %.3f s -> %.3f s)",
                fit.chunks,
                fit.sessions,
                fit.rtt_s,
                fit.payload_factor,
                fit.errors_default["rmse_s"],
                fit.errors_fitted["rmse_s"],
            )
        else:
            search = fit_qoe(plan, emulated, progress=progress)
            fitted = dataclasses.replace(
                default, rtt_s=search.rtt_s, payload_factor=search.payload_factor
            )
            report["qoe_fit"] = {"evaluations": search.evaluations}
        suffix = "-unaligned" if align_start else "-aligned"
        before = _comparison(plan, emulated, default, out / "default", progress)
        after = _comparison(plan, emulated, fitted, out / "fitted", progress)
        other_before = _comparison(other, emulated, default, out / f"default{suffix}", progress)
        other_after = _comparison(other, emulated, fitted, out / f"fitted{suffix}", progress)
    gap_before = before["overall"]["qoe_gap_mean_abs"]
    gap_after = after["overall"]["qoe_gap_mean_abs"]
    worse = gap_before is not None and gap_after is not None and gap_after > gap_before
    if worse:
        log.warning(
            "the fitted constants are WORSE than the defaults (%s timing): mean |QoE gap| "
            "%.4f fitted against %.4f with the defaults; keep the defaults",
            default.timing,
            gap_after,
            gap_before,
        )
    report.update(
        timing=default.timing,
        fit_worse_than_default=worse,
        default={"rtt_s": default.rtt_s, "payload_factor": default.payload_factor},
        fitted={"rtt_s": fitted.rtt_s, "payload_factor": fitted.payload_factor},
        sim_config_fitted=dataclasses.asdict(fitted),
        qoe_gap_mean_abs={"default": gap_before, "fitted": gap_after},
        qoe_gap_mean={
            "default": before["overall"]["qoe_gap_mean"],
            "fitted": after["overall"]["qoe_gap_mean"],
        },
        **{
            f"qoe_gap_mean_abs{suffix.replace('-', '_')}": {
                "default": other_before["overall"]["qoe_gap_mean_abs"],
                "fitted": other_after["overall"]["qoe_gap_mean_abs"],
            }
        },
        comparison={
            "default": before,
            "fitted": after,
            f"default{suffix}": other_before,
            f"fitted{suffix}": other_after,
        },
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / CALIBRATION_JSON).write_text(json.dumps(report, indent=2, default=str) + "\n")
    return CalibrationResult(default, fitted, objective, gap_before, gap_after, report)
