"""The session log: one JSON line per chunk, and Pensieve's tab-separated log.

Pensieve's log line is ``time_s  bitrate_kbps  buffer_s  rebuffer_s  chunk_bytes  delay_ms
reward``, one line per chunk, the time being the session clock after the chunk (and any
sleep). Its readers (Pensieve's plotting scripts) skip the first chunk when averaging.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from streambed.abr_service.qoe import QoEMetric
from streambed.core.errors import StreambedError


@dataclass(frozen=True)
class ChunkRecord:
    """One downloaded chunk of one session."""

    run_id: str
    session_id: str
    trace: str
    algorithm: str
    chunk_index: int
    quality: int
    bitrate_kbps: int
    chunk_bytes: int
    request_start_s: float
    """Session clock when the request was sent, seconds."""
    request_end_s: float
    """Session clock when the last byte arrived, seconds."""
    download_s: float
    throughput_kbps: float
    buffer_before_s: float
    buffer_s: float
    """Buffer after the chunk was appended and after any wait, seconds."""
    rebuffer_s: float
    sleep_s: float
    """Wait after the chunk because the buffer was over its cap, seconds."""
    qoe: float
    """This chunk's QoE under the run's metric (no switch penalty on the first chunk)."""
    decision_ms: float = 0.0
    fallback: bool = False
    """True when something other than the session's algorithm chose the level (the player's
    local fallback, or the service's own)."""
    fallback_reason: str | None = None
    """Why (``service: ...`` when the service fell back itself)."""
    attempts: int = 1
    """Download attempts (emulated sessions; > 1 after a retried failure)."""
    retry_s: float = 0.0
    """Time lost to failed attempts and their backoff before ``request_start_s``, seconds."""
    quality_rendered: int | None = None
    """Level of the frames the player presented for this chunk (a browser player; None when
    not observed, as in the headless player and the simulator)."""
    dropped_frames: int | None = None
    """Frames the browser dropped while presenting this chunk (None when not observed)."""
    player: str = "streambed"
    """Which player played the session: ``streambed`` (the headless player, or the simulator)
    or ``dashjs`` (dash.js in headless Chromium)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def measured(
        cls,
        *,
        qoe: QoEMetric,
        bitrates_kbps: Sequence[int],
        chunk_index: int,
        quality: int,
        previous_quality: int | None,
        chunk_bytes: int,
        request_start_s: float,
        request_end_s: float,
        rebuffer_s: float,
        download_s: float | None = None,
        **rest: Any,
    ) -> ChunkRecord:
        """A record from what was measured; the derived fields computed one way for the
        simulator and both players: ``bitrate_kbps`` from the ladder, ``download_s`` (when not
        measured apart) the request's span, ``throughput_kbps`` bytes over it, and ``qoe``
        this chunk's QoE after ``previous_quality`` (None: the first chunk, no switch penalty).
        ``rest`` holds the other fields as they are."""
        if download_s is None:
            download_s = max(request_end_s - request_start_s, 0.0)
        return cls(
            chunk_index=chunk_index,
            quality=quality,
            bitrate_kbps=bitrates_kbps[quality],
            chunk_bytes=chunk_bytes,
            request_start_s=request_start_s,
            request_end_s=request_end_s,
            download_s=download_s,
            throughput_kbps=chunk_bytes * 8 / max(download_s, 1e-9) / 1000,
            rebuffer_s=rebuffer_s,
            qoe=float(qoe.chunk_qoe([quality], [rebuffer_s], previous_quality, chunk_index)[0]),
            **rest,
        )


def write_jsonl(records: Iterable[ChunkRecord], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(r.to_json() + "\n" for r in records))


def read_jsonl(path: Path) -> list[ChunkRecord]:
    names = {f.name for f in fields(ChunkRecord)}
    records = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            records.append(ChunkRecord(**{k: v for k, v in data.items() if k in names}))
        except (json.JSONDecodeError, TypeError) as exc:
            raise StreambedError(f"{path}: line {lineno}: not a chunk record ({exc})") from exc
    return records


def write_pensieve_log(records: Sequence[ChunkRecord], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{r.request_end_s + r.sleep_s}\t{r.bitrate_kbps}\t{r.buffer_s}\t{r.rebuffer_s}\t"
        f"{r.chunk_bytes}\t{r.download_s * 1000}\t{r.qoe}\n"
        for r in records
    ]
    path.write_text("".join(lines) + "\n")


def rescore(records: Sequence[ChunkRecord], qoe: QoEMetric) -> list[ChunkRecord]:
    """``records`` (one session, in order) with each ``qoe`` recomputed under another metric:
    each chunk after the record before it (the first without a change term)."""
    out = []
    previous: int | None = None
    for r in records:
        value = qoe.chunk_qoe([r.quality], [r.rebuffer_s], previous, r.chunk_index)[0]
        out.append(replace(r, qoe=float(value)))
        previous = r.quality
    return out
