"""Per-segment picture quality of encoded content: SSIM with ffmpeg's ``ssim`` filter, VMAF with
its ``libvmaf`` filter when an ffmpeg built with it is found.

Each level is decoded (its init segment and media segments in order), scaled to the top level's
resolution (bicubic) and compared frame by frame with the source at that resolution; a
segment's score is the mean over its frames. SSIM is stored in dB (:func:`ssim_to_db`), VMAF on
its own 0..100 scale, both as ``(levels, segments)`` tables in ``video.json``
(:class:`streambed.abr_service.video.Video`).

Debian's ffmpeg has ``ssim`` but not ``libvmaf``; the ``imageio-ffmpeg`` wheel (the ``[vmaf]``
extra) bundles an ffmpeg that has both, found by path and never required.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from streambed.abr_service.video import SSIM_DB_CAP, Video
from streambed.core.errors import ContentError

log = logging.getLogger(__name__)

VMAF_FILTER = "libvmaf"
_SSIM_LOG = ".quality-ssim.log"  # in the build's staging directory while measuring
_VMAF_LOG = ".quality-vmaf.json"
_SSIM_ALL = re.compile(r"\bAll:(\S+)")
_STDERR_LINES = 15


def ssim_to_db(ssim: float | np.ndarray) -> np.ndarray:
    """SSIM in dB, ``-10 log10(1 - SSIM)`` (Puffer's convention): 0.99 is 20 dB, 0.999 is 30 dB.

    ``1 - SSIM`` is floored at ``10 ** (-SSIM_DB_CAP / 10)`` (1e-6), so a segment equal to the
    source reads :data:`SSIM_DB_CAP` (60 dB) rather than infinity.
    """
    error = 1.0 - np.asarray(ssim, dtype=np.float64)
    return -10.0 * np.log10(np.maximum(error, 10.0 ** (-SSIM_DB_CAP / 10.0)))


def has_libvmaf(ffmpeg: str) -> bool:
    """Whether the ffmpeg binary at ``ffmpeg`` lists the ``libvmaf`` filter."""
    try:
        result = subprocess.run(
            [ffmpeg, "-hide_banner", "-filters"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(line.split()[1:2] == [VMAF_FILTER] for line in result.stdout.splitlines())


def find_vmaf_ffmpeg(path: Path | str | None = None) -> str | None:
    """The ffmpeg to measure VMAF with: ``path`` when given (it must run and list ``libvmaf``,
    else :class:`ContentError`), else the ``imageio-ffmpeg`` package's binary when that package
    is installed and its binary has ``libvmaf``, else ``None`` (VMAF is skipped)."""
    if path is not None:
        found = shutil.which(str(path))
        if found is None:
            raise ContentError(f"--vmaf-ffmpeg {path}: no such executable")
        if not has_libvmaf(found):
            raise ContentError(
                f"--vmaf-ffmpeg {path}: this ffmpeg has no {VMAF_FILTER} filter (see its "
                "'-filters'); the [vmaf] extra's imageio-ffmpeg has one"
            )
        return found
    try:
        import imageio_ffmpeg  # the [vmaf] extra; optional
    except ImportError:
        return None
    try:
        exe = str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError:  # the package is there but its binary is not
        return None
    return exe if has_libvmaf(exe) else None


@dataclass(frozen=True)
class Reference:
    """How to make the source frames every level is compared with.

    ``input_args`` open the source (ffmpeg options up to and including ``-i``); ``chain`` is the
    filter chain that turns its video into the encoder's input at the top level's resolution
    (the same chain the encode used, so the reference is exactly what the top level encoded).
    """

    input_args: tuple[str, ...]
    chain: str
    size: tuple[int, int]
    frame_rate: float


def measure_quality(
    ffmpeg: str,
    directory: Path,
    level_files: Sequence[Sequence[str]],
    chunk_s: float,
    reference: Reference,
    vmaf_ffmpeg: str | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-segment SSIM in dB and (with ``vmaf_ffmpeg``) VMAF of the content in ``directory``.

    ``level_files[level]`` names that level's init segment then its media segments in order,
    in ``directory``. One ffmpeg run per level: ``vmaf_ffmpeg`` runs both filters when given,
    ``ffmpeg`` runs SSIM alone otherwise. Both sides are resampled to
    ``reference.frame_rate``, so frame ``n`` belongs to segment
    ``floor(n / (frame_rate * chunk_s))``. Returns float64 tables of shape
    ``(levels, segments)``; the second is ``None`` without VMAF.
    """
    from tqdm import tqdm  # only when measuring

    levels, segments = len(level_files), len(level_files[0]) - 1
    ssim_db = np.zeros((levels, segments))
    vmaf = np.zeros((levels, segments)) if vmaf_ffmpeg is not None else None
    what = "SSIM+VMAF" if vmaf is not None else "SSIM"
    log.info("measuring %s of %d levels x %d segments", what, levels, segments)
    per_segment = reference.frame_rate * chunk_s
    # disable=None: a bar only on a terminal, so logs and tests stay clean
    with tqdm(
        total=levels * segments,
        desc=what,
        unit="segment",
        disable=None if progress else True,
        dynamic_ncols=True,
    ) as bar:
        for level, files in enumerate(level_files):
            bar.set_postfix(level=level, refresh=False)
            base = level * segments

            def advance(seconds: float, base: int = base) -> None:
                done = min(segments, int(seconds / chunk_s + 1e-9))
                if base + done > bar.n:
                    bar.update(base + done - bar.n)

            ssim_frames, vmaf_frames = _run_level(
                vmaf_ffmpeg or ffmpeg, directory, files, reference, vmaf is not None, advance
            )
            where = f"level {level} ({files[0]})"
            means = _segment_means(ssim_frames, per_segment, segments, f"SSIM of {where}")
            ssim_db[level] = ssim_to_db(means)
            if vmaf is not None and vmaf_frames is not None:
                means = _segment_means(vmaf_frames, per_segment, segments, f"VMAF of {where}")
                vmaf[level] = np.clip(means, 0.0, 100.0)
            bar.update(base + segments - bar.n)
    return ssim_db, vmaf


def quality_summary(video: Video) -> str:
    """One line: each level's mean SSIM in dB (and VMAF when measured), lowest level first."""
    parts = []
    for kind, label in (("ssim_db", "SSIM dB"), ("vmaf", "VMAF")):
        table = getattr(video, kind)
        if table is not None:
            parts.append(f"{label} " + " ".join(f"{m:.1f}" for m in table.mean(axis=1)))
    return f"mean quality per level of {video.name}: " + "; ".join(parts)


def _segment_means(frames: np.ndarray, per_segment: float, segments: int, where: str) -> np.ndarray:
    """Mean of ``frames`` over each segment, frame ``n`` in ``floor(n / per_segment)``; a
    frame or two past the end (rate conversion rounding) counts in the last segment. A count
    off by half a segment or more, or a segment without frames, is a :class:`ContentError`."""
    expected = per_segment * segments
    index = np.floor(np.arange(len(frames)) / per_segment + 1e-9).astype(np.int64)
    index = np.minimum(index, segments - 1)
    counts = np.bincount(index, minlength=segments)
    if abs(len(frames) - expected) >= max(per_segment / 2, 1) or (counts == 0).any():
        empty = f": segment {int(np.argmax(counts == 0))} has none" if (counts == 0).any() else ""
        raise ContentError(f"{where}: {len(frames)} frames measured, {expected:g} expected{empty}")
    return np.bincount(index, weights=frames, minlength=segments) / counts


def _run_level(
    ffmpeg: str,
    directory: Path,
    files: Sequence[str],
    reference: Reference,
    with_vmaf: bool,
    advance: Any,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run ffmpeg over one level; per-frame SSIM (0..1) and VMAF (or None), in frame order."""
    width, height = reference.size
    rate = f"{reference.frame_rate:.6g}"
    # the logs go beside the segments (ffmpeg runs there): plain names need no filter escaping
    ssim_log, vmaf_log = directory / _SSIM_LOG, directory / _VMAF_LOG
    # setpts: both sides start at 0 whatever the container's edit list says; fps: one frame
    # per 1/rate s on both sides, so the filters pair frame n with frame n
    graph = [
        f"[0:v]setpts=PTS-STARTPTS,fps={rate},scale={width}:{height}:flags=bicubic,"
        "setsar=1,format=yuv420p[dist]",
        f"[1:v]{reference.chain},setpts=PTS-STARTPTS,fps={rate}[ref]",
    ]
    ssim = f"ssim=stats_file={_SSIM_LOG}:shortest=1"
    if with_vmaf:
        threads = max(1, os.cpu_count() or 1)
        graph += [
            "[dist]split[d1][d2]",
            "[ref]split[r1][r2]",
            f"[d1][r1]{ssim}[o1]",  # libvmaf: distorted first, reference second
            f"[d2][r2]{VMAF_FILTER}=log_fmt=json:log_path={_VMAF_LOG}:"
            f"n_threads={threads}:shortest=1[o2]",
        ]
        outputs = ["-map", "[o1]", "-f", "null", "-", "-map", "[o2]", "-f", "null", "-"]
    else:
        graph.append(f"[dist][ref]{ssim}[o1]")
        outputs = ["-map", "[o1]", "-f", "null", "-"]
    # concat: the init segment and the media segments as one byte stream (fragmented MP4)
    cmd = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-nostats"]
    cmd += ["-progress", "pipe:1", "-i", "concat:" + "|".join(files), *reference.input_args]
    cmd += ["-filter_complex", ";".join(graph), *outputs]
    log.debug("%s", " ".join(cmd))
    try:
        with tempfile.TemporaryFile() as stderr:
            with subprocess.Popen(
                cmd, cwd=directory, stdout=subprocess.PIPE, stderr=stderr, text=True
            ) as proc:
                assert proc.stdout is not None
                for line in proc.stdout:  # -progress: key=value lines, out_time_us among them
                    key, _, value = line.strip().partition("=")
                    if key == "out_time_us" and value.lstrip("-").isdigit():
                        advance(max(0, int(value)) / 1e6)
            if proc.returncode != 0:
                raise ContentError(
                    f"ffmpeg failed (exit status {proc.returncode}) measuring {files[0]}'s level "
                    f"in {directory}:\n{_tail(stderr)}"
                )
        ssim_frames = _read_ssim(ssim_log)
        vmaf_frames = _read_vmaf(vmaf_log) if with_vmaf else None
    finally:
        ssim_log.unlink(missing_ok=True)
        vmaf_log.unlink(missing_ok=True)
    return ssim_frames, vmaf_frames


def _read_ssim(path: Path) -> np.ndarray:
    """Per-frame SSIM ("All", the luma and chroma planes weighted by size) from a stats file."""
    values = []
    for line in path.read_text().splitlines():
        match = _SSIM_ALL.search(line)
        if match is None:
            continue
        try:
            values.append(float(match.group(1)))
        except ValueError:
            raise ContentError(f"ffmpeg's SSIM stats line {line!r}: not a number") from None
    if not values:
        raise ContentError("ffmpeg's SSIM stats file is empty: no frame was compared")
    return np.asarray(values)


def _read_vmaf(path: Path) -> np.ndarray:
    """Per-frame VMAF from libvmaf's JSON log (``frames[i].metrics.vmaf``, in frame order)."""
    try:
        frames = json.loads(path.read_text())["frames"]
        ordered = sorted(frames, key=lambda f: int(f["frameNum"]))
        values = np.asarray([float(f["metrics"]["vmaf"]) for f in ordered])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ContentError(f"libvmaf's log cannot be read: {exc!r}") from None
    if not len(values):
        raise ContentError("libvmaf's log lists no frame: nothing was compared")
    return values


def _tail(handle: IO[bytes]) -> str:
    handle.seek(0)
    lines = [ln for ln in handle.read().decode(errors="replace").splitlines() if ln.strip()]
    return "\n".join(lines[-_STDERR_LINES:]) or "(no output)"
