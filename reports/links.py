"""How players shared a link: Jain's fairness, the link's utilisation, and one timeline per link.

For each ``links/<link>/link.json`` of a run (``streambed emulate --clients-per-link N``):

* ``jain_bitrate``: Jain's index over the players' mean bitrates (chunks 2..N, as
  ``reports.summary.session_metrics``); ``jain_throughput``: over their mean throughputs, each
  the player's chunk bytes over its chunk download time (kbit/s while downloading);
* ``utilisation``: the delivery log's bytes delivered over the bytes its opportunities offered
  (``reports.delivery``; empty for the proxy kind, which keeps no packet log);
* ``delivered_bytes`` (IP bytes, the log), ``origin_payload_bytes`` (TCP payload the netns
  shaper delivered from the origin's port; empty for the other kinds) and ``players_bytes``
  (what the players counted: chunks, init segment and MPD bodies, from their session.json);
  ``cross_bytes``: the cross-traffic downloader's.

``write_links_report`` writes ``links.csv`` and each link's ``timeline.pdf`` and returns the
summary's ``links`` entry (means over links); None when the run has no shared links.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from streambed.core.errors import StreambedError
from streambed.reports.delivery import Delivery, read_delivery_log
from streambed.reports.rundir import LinkDir, RunDir
from streambed.reports.sessionlog import ChunkRecord, read_jsonl

log = logging.getLogger(__name__)


def jain(values: Sequence[float]) -> float | None:
    """Jain's fairness index ``(sum x)^2 / (n * sum x^2)``: 1 when all equal, 1/n when one
    takes all; None for no values or all zero (undefined)."""
    xs = [float(v) for v in values]
    square = sum(x * x for x in xs)
    if not xs or square == 0 or any(math.isnan(x) for x in xs):
        return None
    return sum(xs) ** 2 / (len(xs) * square)


@dataclass(frozen=True)
class PlayerShare:
    label: str
    algorithm: str
    bitrate_mean_kbps: float | None
    throughput_kbps: float | None
    bytes: int | None
    offset_s: float
    """The player's session clock zero on the link's clock (s after the trace's time 0)."""
    records: tuple[ChunkRecord, ...] = ()


@dataclass(frozen=True)
class LinkRow:
    """One row of ``links.csv``."""

    link: str
    trace: str
    kind: str
    players: int
    players_done: int
    algorithms: str
    jain_bitrate: float | None
    jain_throughput: float | None
    utilisation: float | None
    delivered_bytes: int | None
    origin_payload_bytes: int | None
    players_bytes: int
    cross_bytes: int | None
    queue_max_bytes: int | None


def _json(path: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            return data
    return None


def _player(out: Path, entry: dict[str, Any], zero: float | None) -> PlayerShare | None:
    from streambed.reports.summary import session_metrics

    session_dir = out / str(entry.get("session_dir", ""))
    info = _json(session_dir / "session.json")
    if info is None or info.get("status") != "done":
        return None
    records = tuple(read_jsonl(session_dir / "chunks.jsonl"))
    if not records:
        return None
    metrics = session_metrics(records, float(info.get("chunk_s") or 1.0))
    busy = sum(r.download_s for r in records)
    chunk_bytes = sum(r.chunk_bytes for r in records)
    total = chunk_bytes + int(info.get("init_bytes") or 0) + int(info.get("mpd_bytes") or 0)
    link = info.get("link") or {}
    offset = link.get("trace_offset_s")
    if offset is None:  # mahimahi: no epoch; the group's zero is about when mm-link started
        t0 = info.get("clock_zero_monotonic_s")
        offset = 0.0 if t0 is None or zero is None else float(t0) - zero
    bitrate = metrics.bitrate_mean_kbps
    return PlayerShare(
        label=str(entry.get("session_dir", "")).removeprefix("sessions/"),
        algorithm=str(entry.get("algorithm", records[0].algorithm)),
        bitrate_mean_kbps=None if math.isnan(bitrate) else bitrate,
        throughput_kbps=chunk_bytes * 8 / 1000 / busy if busy > 0 else None,
        bytes=total,
        offset_s=float(offset),
        records=records,
    )


def link_report(out: Path, link: LinkDir, plot: bool = True) -> LinkRow | None:
    """The row of one link (None: no readable link.json); draws its timeline with ``plot``."""
    info = _json(link.link_json)
    if info is None:
        return None
    group = _json(link.group_json) or {}
    zero = group.get("zero_monotonic_s")
    entries = [p for p in info.get("players", []) if isinstance(p, dict)]
    shares = [_player(out, p, zero) for p in entries]
    done = [s for s in shares if s is not None]
    delivery: Delivery | None = None
    if link.delivery_log.is_file():
        try:
            delivery = read_delivery_log(link.delivery_log)
        except StreambedError as exc:
            log.warning("%s", exc)
    stats = info.get("stats") or {}
    origin_port = info.get("origin_port")
    by_port = stats.get("down_by_port") or {}
    origin = by_port.get(str(origin_port), {}).get("payload_bytes") if by_port else None
    cross = _json(link.cross_json)
    row = LinkRow(
        link=str(info.get("label", link.path.name)),
        trace=str(info.get("trace", "")),
        kind=str(info.get("kind", "")),
        players=len(entries),
        players_done=len(done),
        algorithms="+".join(dict.fromkeys(str(p.get("algorithm")) for p in entries)),
        jain_bitrate=jain([s.bitrate_mean_kbps for s in done if s.bitrate_mean_kbps is not None])
        if len(done) == len(entries)
        else None,
        jain_throughput=jain([s.throughput_kbps for s in done if s.throughput_kbps is not None])
        if len(done) == len(entries)
        else None,
        utilisation=None if delivery is None else delivery.utilisation,
        delivered_bytes=None if delivery is None else delivery.delivered_bytes,
        origin_payload_bytes=None if origin is None else int(origin),
        players_bytes=sum(s.bytes or 0 for s in done),
        cross_bytes=None if cross is None else int(cross.get("bytes", 0)),
        queue_max_bytes=None if delivery is None else delivery.queue_max_bytes,
    )
    if plot and done:
        try:
            plot_link_timeline(row, done, delivery, link.timeline_pdf, info)
        except (OSError, ValueError) as exc:  # a figure must not cost the report
            log.warning("%s: no timeline: %s", link.timeline_pdf, exc)
    return row


def _mean(values: Sequence[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return sum(found) / len(found) if found else None


def write_links_report(out: Path, plot: bool = True) -> dict[str, Any] | None:
    """``links.csv`` and the timelines of a run's shared links; the summary's ``links``
    entry (None when the run has none)."""
    run = RunDir(out)
    if not run.links_dir.is_dir():
        return None
    rows = [
        row
        for path in sorted(run.links_dir.iterdir())
        if path.is_dir() and (row := link_report(out, LinkDir(path), plot)) is not None
    ]
    if not rows:
        return None
    with open(run.links_csv, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(LinkRow.__dataclass_fields__))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in asdict(row).items()})
    return {
        "count": len(rows),
        "players_per_link": _mean([float(r.players) for r in rows]),
        "jain_bitrate_mean": _mean([r.jain_bitrate for r in rows]),
        "jain_throughput_mean": _mean([r.jain_throughput for r in rows]),
        "utilisation_mean": _mean([r.utilisation for r in rows]),
        "csv": run.links_csv.name,
    }


def plot_link_timeline(
    row: LinkRow,
    players: Sequence[PlayerShare],
    delivery: Delivery | None,
    path: Path,
    info: dict[str, Any],
) -> Path:
    """Upper panel: the link's capacity per second (its delivery opportunities; the trace when
    there is no log) and each player's bitrate (steps) and chunk throughput (dots) on the
    link's clock; lower panel: the queue's bytes."""
    import matplotlib.pyplot as plt
    import numpy as np

    from streambed.reports.style import DOUBLE_COLUMN_IN, PALETTE, paper_style

    with paper_style():
        fig, (ax, qax) = plt.subplots(
            2,
            1,
            figsize=(DOUBLE_COLUMN_IN, 3.6),
            sharex=True,
            gridspec_kw={"height_ratios": [3, 1]},
        )
        end = max(p.offset_s + max(r.request_end_s for r in p.records) for p in players)
        if delivery is not None and delivery.capacity_per_s:
            cap = np.array(delivery.capacity_per_s, dtype=float) * 8 / 1000
            t = np.arange(len(cap) + 1, dtype=float)
            ax.stairs(cap, t, color="0.55", lw=0.9, label="link capacity")
            sent = np.array(delivery.delivered_per_s, dtype=float) * 8 / 1000
            ax.stairs(sent, t, color="0.2", lw=0.6, ls=":", label="delivered (all)")
        else:
            _trace_steps(ax, info, end)
        for i, p in enumerate(players):
            color = PALETTE[i % len(PALETTE)]
            starts = np.array([p.offset_s + r.request_start_s for r in p.records])
            ends = np.array([p.offset_s + r.request_end_s for r in p.records])
            rates = np.array([r.bitrate_kbps for r in p.records], dtype=float)
            ax.step(
                np.append(starts, ends[-1]),
                np.append(rates, rates[-1]),
                where="post",
                color=color,
                lw=1.2,
                label=f"{p.label} bitrate",
            )
            ax.plot(ends, [r.throughput_kbps for r in p.records], ".", color=color, ms=2.5)
        ax.set_ylabel("kbit/s")
        ax.set_title(
            f"{row.link}: {row.players} players, {row.kind} link, Jain (bitrate) "
            + ("n/a" if row.jain_bitrate is None else f"{row.jain_bitrate:.3f}")
        )
        ax.grid(alpha=0.25)
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: 8 players fit
        if delivery is not None and delivery.queue:
            qt = np.array([t for t, _ in delivery.queue])
            qb = np.array([q for _, q in delivery.queue], dtype=float) / 1000
            qax.step(qt, qb, where="post", color="#D55E00", lw=0.8)
        else:
            qax.text(0.5, 0.5, "no packet log (proxy link)", ha="center", transform=qax.transAxes)
        qax.set_ylabel("queue (kB)")
        qax.set_xlabel("link time (s)")
        qax.set_xlim(0, end)
        qax.grid(alpha=0.25)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
    return path


def _trace_steps(ax: Any, info: dict[str, Any], end: float) -> None:
    from streambed.reports.plots import looped_bandwidth
    from streambed.traces.formats import load_trace

    try:
        trace = load_trace(Path(str(info.get("trace_file"))))
    except (StreambedError, OSError):
        return
    t, kbps = looped_bandwidth(trace, end)
    ax.step(t, kbps, where="pre", color="0.55", lw=0.9, label="trace bandwidth")
