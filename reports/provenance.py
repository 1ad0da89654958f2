"""What a run measured over, and whether two runs can be compared.

Every QoE figure is a mean over some chunk window: a session that stopped after 12 chunks
(``emulate --max-chunks 12``) is not comparable with one that played all 48. ``summary.json``
therefore records the window (:func:`chunk_window`, per algorithm and overall), the video's
chunk count and digest and the ppo checkpoint's sha256 (:func:`run_provenance`), and every
printed QoE states its window (:func:`window_text`). :func:`compare_runs` says what differs
between a simulation and an emulation before they are compared trace by trace.

Summaries written before these fields existed read as "unknown" (a warning, never a crash).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from streambed.abr_service.video import Video


class _HasChunks(Protocol):
    @property
    def chunks(self) -> int: ...


def chunk_window(metrics: Iterable[_HasChunks], video_chunks: int | None = None) -> dict[str, Any]:
    """The chunks the sessions played: ``chunks_min``/``chunks_max`` (None: no sessions) and
    the video's chunk count (None: unknown)."""
    counts = [int(m.chunks) for m in metrics]
    return {
        "chunks_min": min(counts) if counts else None,
        "chunks_max": max(counts) if counts else None,
        "video_chunks": video_chunks,
    }


def window_short(window: Mapping[str, Any] | None) -> str:
    """``0-11 (12 of 48)``; ``0-11..0-47 (12-48 of 48)`` when sessions differ; ``unknown``."""
    if not isinstance(window, Mapping):
        return "unknown"
    low, high = window.get("chunks_min"), window.get("chunks_max")
    if not isinstance(low, int) or not isinstance(high, int) or low < 1:
        return "unknown"
    total = window.get("video_chunks")
    of = f" of {total}" if isinstance(total, int) else " of ? (video length unknown)"
    if low == high:
        return f"0-{high - 1} ({high}{of})"
    return f"0-{low - 1}..0-{high - 1} ({low}-{high}{of})"


def window_text(window: Mapping[str, Any] | None) -> str:
    """``over chunks 0-11 (12 of 48)``, or ``over an unknown chunk window``."""
    short = window_short(window)
    return "over an unknown chunk window" if short == "unknown" else f"over chunks {short}"


def video_digest(video: Video) -> str:
    """sha256 of what the ABR logic sees of a video: ladder, chunk length and the sizes of its
    chunks (the same for a video_size_* directory and the video.json built from it)."""
    h = hashlib.sha256()
    h.update(repr((tuple(int(b) for b in video.bitrates_kbps), float(video.chunk_s))).encode())
    sizes = np.ascontiguousarray(video.chunk_bytes[:, : video.num_chunks], dtype="<i8")
    h.update(sizes.tobytes())
    return h.hexdigest()


def file_sha256(path: str | Path | None) -> str | None:
    """sha256 of a file, or of a directory's files (sorted by relative path); None if absent."""
    if path is None:
        return None
    path = Path(path)
    h = hashlib.sha256()
    try:
        if path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                h.update(str(f.relative_to(path)).encode() + b"\0")
                h.update(f.read_bytes())
        else:
            h.update(path.read_bytes())
    except OSError:
        return None
    return h.hexdigest()


def run_provenance(video: Video | None, model: str | Path | None) -> dict[str, Any]:
    """The fields :func:`compare_runs` reads, for a run's ``summary.json``."""
    return {
        "video_chunks": None if video is None else video.num_chunks,
        "video_sha256": None if video is None else video_digest(video),
        "model_sha256": file_sha256(model),
    }


def _range(values: Sequence[int]) -> str:
    low, high = min(values), max(values)
    return f"{low}" if low == high else f"{low}-{high}"


def _short(digest: str) -> str:
    return digest[:12]


def compare_runs(
    sim: Mapping[str, Any],
    emu: Mapping[str, Any],
    chunk_pairs: Sequence[tuple[int, int]],
    algorithms: Iterable[str],
) -> tuple[list[str], list[str]]:
    """``(differences, unknowns)`` between the ``summary.json`` of a simulation and of an
    emulation, given each matched session's ``(sim chunks, emu chunks)``: one line each, e.g.
    ``chunk window: sim 48 chunks, emu 12 chunks (6 of 6 sessions)``."""
    differences: list[str] = []
    unknowns: list[str] = []
    off = [(s, e) for s, e in chunk_pairs if s != e]
    if off:
        differences.append(
            f"chunk window: sim {_range([s for s, _ in off])} chunks, emu "
            f"{_range([e for _, e in off])} chunks ({len(off)} of {len(chunk_pairs)} sessions)"
        )
    sim_video, emu_video = sim.get("video_sha256"), emu.get("video_sha256")
    if isinstance(sim_video, str) and isinstance(emu_video, str):
        if sim_video != emu_video:
            differences.append(
                f"video: sim {sim.get('video', '?')} (sha256 {_short(sim_video)}), emu "
                f"{emu.get('content', '?')} (sha256 {_short(emu_video)})"
            )
    else:
        side = "sim" if not isinstance(sim_video, str) else "emu"
        unknowns.append(f"video: unknown ({side} summary.json records no video_sha256)")
    if "ppo" in set(algorithms):
        sim_model, emu_model = sim.get("model_sha256"), emu.get("model_sha256")
        if isinstance(sim_model, str) and isinstance(emu_model, str):
            if sim_model != emu_model:
                differences.append(
                    f"ppo model: sim {_model_path(sim)} (sha256 {_short(sim_model)}), emu "
                    f"{_model_path(emu)} (sha256 {_short(emu_model)})"
                )
        else:
            side = "sim" if not isinstance(sim_model, str) else "emu"
            unknowns.append(
                f"ppo model: unknown ({side} summary.json records no model_sha256; sim "
                f"{_model_path(sim)}, emu {_model_path(emu)})"
            )
    return differences, unknowns


def _model_path(summary: Mapping[str, Any]) -> str:
    """The checkpoint a summary names: emulate's ``model``, eval's ``params.ppo.model``."""
    model = summary.get("model")
    if model is None:
        params = summary.get("params")
        ppo = params.get("ppo") if isinstance(params, Mapping) else None
        model = ppo.get("model") if isinstance(ppo, Mapping) else None
    return "?" if model is None else str(model)
