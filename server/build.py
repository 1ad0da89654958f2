"""Build DASH content for the origin: encoded with ffmpeg, or size-exact synthetic segments.

Both ways give the same directory layout (names from :mod:`streambed.server.mpd`)::

    DIR/manifest.mpd                     SegmentTemplate MPD, $Number$ from 1, one AdaptationSet
    DIR/init-<level>.mp4                 initialization segment of level 0..K-1
    DIR/chunk-<level>-<NNNNN>.m4s        media segment NNNNN (1-based, 5 digits) of that level
    DIR/video.json                       the video description (abr_service.video.Video)

``video.json``'s ``chunk_bytes[level][chunk]`` is the size in bytes of
``chunk-<level>-<chunk + 1>.m4s`` on disk for ``chunk < num_chunks``; a synthetic build from a
description with look-ahead entries (Pensieve's ``video_size_*`` files) keeps them, so
decisions on the content equal decisions on the source description.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

from streambed.abr_service.video import PENSIEVE_BITRATES_KBPS, VIDEO_JSON, Video, load_video
from streambed.core.errors import ContentError, StreambedError, VideoError
from streambed.server.mpd import (
    INIT_TEMPLATE,
    MEDIA_TEMPLATE,
    MPD_NAME,
    START_NUMBER,
    Manifest,
    build_mpd,
    expand_template,
    parse_mpd,
)
from streambed.server.quality import (
    VMAF_FILTER,
    Reference,
    find_vmaf_ffmpeg,
    measure_quality,
    quality_summary,
)

log = logging.getLogger(__name__)
STAGING_PREFIX = ".building-"  # a build in progress (removed when it ends)

DEFAULT_LADDER_KBPS: tuple[int, ...] = PENSIEVE_BITRATES_KBPS
DEFAULT_CHUNK_S = 4.0
DEFAULT_DURATION_S = 192.0  # 48 chunks of 4 s, as Pensieve's test video
DEFAULT_FPS = 24
DEFAULT_PRESET = "veryfast"
# 16:9 sizes only: ffmpeg's dash muxer refuses an AdaptationSet whose aspect ratios differ.
_RESOLUTION_BY_KBPS: tuple[tuple[float, tuple[int, int]], ...] = (
    (400, (256, 144)),
    (900, (512, 288)),
    (1500, (640, 360)),
    (2400, (768, 432)),
    (3500, (1024, 576)),
    (math.inf, (1280, 720)),
)
_STDERR_LINES = 15


def default_resolutions(ladder_kbps: Sequence[int]) -> list[tuple[int, int]]:
    """(width, height) per level: 256x144 below 400 kbps up to 1280x720 from 3500 kbps."""
    return [
        next(size for limit, size in _RESOLUTION_BY_KBPS if kbps < limit) for kbps in ladder_kbps
    ]


def check_resolutions(resolutions: Sequence[tuple[int, int]], levels: int) -> None:
    """One even-sized resolution per level, all of one aspect ratio (ffmpeg's dash muxer)."""
    if len(resolutions) != levels:
        raise ContentError(f"{len(resolutions)} resolutions for a {levels}-level ladder")
    for w, h in resolutions:
        if w <= 0 or h <= 0 or w % 2 or h % 2:
            raise ContentError(f"resolution {w}x{h}: width and height must be positive and even")
    ratios = {(w // math.gcd(w, h), h // math.gcd(w, h)) for w, h in resolutions}
    if len(ratios) > 1:
        shown = ", ".join(f"{w}x{h}" for w, h in resolutions)
        raise ContentError(
            f"resolutions {shown} mix aspect ratios {sorted(ratios)}: ffmpeg's dash muxer needs "
            "one aspect ratio per AdaptationSet (e.g. 16:9: 256x144, 512x288, 1280x720)"
        )


# ------------------------------------------------------------------------------------------
# Output directory


@contextmanager
def _staged(out: Path, force: bool) -> Iterator[Path]:
    """Yield an empty directory beside ``out`` that becomes ``out`` if the build succeeds.

    A failed build leaves ``out`` untouched. ``force`` replaces a previous build (a directory
    holding an MPD); any other non-empty directory is refused, so a typo cannot wipe data.
    """
    out = out.absolute()
    if out.exists():
        if not out.is_dir():
            raise ContentError(f"{out}: exists and is not a directory")
        if any(not p.name.startswith(STAGING_PREFIX) for p in out.iterdir()):
            if not force:
                raise ContentError(f"{out}: not empty; pass --force to replace a previous build")
            if not (out / MPD_NAME).is_file():
                raise ContentError(
                    f"{out}: not empty and holds no {MPD_NAME}: refusing to replace a directory "
                    "that is not origin content"
                )
    out.parent.mkdir(parents=True, exist_ok=True)
    # An existing directory may be a mount point (a container's volume, which Python cannot
    # tell from a bind mount of the same filesystem): it can be neither removed nor renamed
    # onto, and its parent may be another filesystem. Stage inside it and swap its entries.
    in_place = out.exists()
    staging = Path(
        tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out)
        if in_place
        else tempfile.mkdtemp(prefix=f".{out.name}{STAGING_PREFIX}", dir=out.parent)
    )
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it owner-only; content is meant to be served
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not in_place:
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
        return
    for old in out.iterdir():
        if old != staging:
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    # video.json last: a build cut short here has none, so the next start builds again
    for new in sorted(staging.iterdir(), key=lambda p: p.name == VIDEO_JSON):
        new.rename(out / new.name)
    staging.rmdir()


# ------------------------------------------------------------------------------------------
# Synthetic, size-exact content


def _box_header(kind: bytes, size: int) -> bytes:
    """ISO BMFF box header for a box of ``size`` bytes in all (64-bit size when needed)."""
    if size < 2**32:
        return struct.pack(">I4s", size, kind)
    return struct.pack(">I4sQ", 1, kind, size)


def _write_box_file(path: Path, prefix: bytes, size: int) -> None:
    """Write exactly ``size`` bytes: ``prefix`` boxes, then one ``mdat`` of zeros filling the rest.

    The zeros are left as a sparse hole (``truncate``), so a 270 MB ladder costs no disk.
    """
    head = prefix
    rest = size - len(prefix)
    if rest >= 8:
        head += _box_header(b"mdat", rest)
    elif size >= 8:  # too small for styp + mdat: one free box of the whole size
        head = _box_header(b"free", size)
    else:  # smaller than any box header: plain zeros keep the byte count exact
        head = b""
    with open(path, "wb") as file:
        file.write(head)
        file.truncate(size)


def _ftyp(major: bytes, compatible: Sequence[bytes]) -> bytes:
    body = major + struct.pack(">I", 0) + b"".join(compatible)
    return _box_header(b"ftyp", 8 + len(body)) + body


def build_synthetic(video: Video, out: Path, force: bool = False) -> Path:
    """Content whose media segments have exactly ``video``'s chunk sizes (bytes).

    Each media segment is a ``styp`` box and an ``mdat`` box of zeros; each init segment an
    ``ftyp`` and a ``free`` box naming the level. They carry no pictures: a byte-counting
    player can stream them, a browser cannot decode them. Returns ``out``.
    """
    styp = _ftyp(b"msdh", [b"msdh", b"msix"]).replace(b"ftyp", b"styp", 1)
    with _staged(out, force) as staging:
        for level, kbps in enumerate(video.bitrates_kbps):
            note = f"streambed synthetic init, level {level}, {kbps} kbps".encode()
            init = _ftyp(b"iso6", [b"iso6", b"dash", b"mp41"]) + _box_header(b"free", 8 + len(note))
            (staging / _name_init(level)).write_bytes(init + note)
            for chunk in range(video.num_chunks):
                size = int(video.chunk_bytes[level, chunk])
                _write_box_file(staging / _name_chunk(level, chunk), styp, size)
        mpd = build_mpd(video.bitrates_kbps, video.chunk_s, video.num_chunks)
        (staging / MPD_NAME).write_text(mpd)
        video.save(staging / VIDEO_JSON)
    log.info(
        "built %s: %d levels x %d synthetic segments of %g s",
        out,
        video.num_levels,
        video.num_chunks,
        video.chunk_s,
    )
    return out


def _name_init(level: int) -> str:
    return expand_template(INIT_TEMPLATE, str(level), 0, 0)


def _name_chunk(level: int, chunk: int) -> str:
    """File name of 0-based ``chunk`` of ``level`` (its ``$Number$`` is ``chunk + 1``)."""
    return expand_template(MEDIA_TEMPLATE, str(level), 0, START_NUMBER + chunk)


def build_from_description(
    path: Path,
    out: Path,
    ladder_kbps: Sequence[int] | None = None,
    chunk_s: float | None = None,
    force: bool = False,
) -> Path:
    """Synthetic content for the video description at ``path`` (a ``video_size_*`` directory or
    a ``video.json``). ``ladder_kbps`` names a Pensieve directory's ladder; given for a
    description that has its own, or ``chunk_s`` differing from the description's, is an error.
    """
    video = load_video(path, ladder_kbps)
    if ladder_kbps is not None and tuple(ladder_kbps) != video.bitrates_kbps:
        raise ContentError(
            f"{path}: its ladder is {list(video.bitrates_kbps)} kbps, --ladder-kbps says "
            f"{list(ladder_kbps)}"
        )
    if chunk_s is not None and abs(chunk_s - video.chunk_s) > 1e-9:
        raise ContentError(f"{path}: its chunks last {video.chunk_s} s, --chunk-s says {chunk_s}")
    return build_synthetic(video, out, force=force)


# ------------------------------------------------------------------------------------------
# Encoded content (ffmpeg)


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ContentError(f"{name} not found on PATH: install Debian's ffmpeg package")
    return found


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-_STDERR_LINES:]) or "(no output)"


def probe_duration_s(source: Path) -> float:
    """Duration in seconds of a media file's container, from ffprobe."""
    result = subprocess.run(
        [
            _tool("ffprobe"),
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "default=noprint_wrappers=1:nokey=1",
            str(source),
        ],
        capture_output=True,
        text=True,
    )
    try:
        if result.returncode != 0:
            raise ValueError
        return float(result.stdout.strip().splitlines()[0])
    except (ValueError, IndexError):
        raise ContentError(
            f"{source}: ffprobe cannot read its duration:\n{_tail(result.stderr)}"
        ) from None


def probe_frame_rate(source: Path) -> float:
    """Frames per second of a media file's first video stream (its average rate), from ffprobe."""
    result = subprocess.run(
        [
            _tool("ffprobe"),
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=avg_frame_rate,r_frame_rate",
            "-of",
            "default=noprint_wrappers=1",
            str(source),
        ],
        capture_output=True,
        text=True,
    )
    fields = dict(line.partition("=")[::2] for line in result.stdout.split())
    for key in ("avg_frame_rate", "r_frame_rate"):
        num, _, den = fields.get(key, "").partition("/")
        try:
            rate = float(num) / float(den or 1)
        except (ValueError, ZeroDivisionError):
            continue
        if math.isfinite(rate) and rate > 0:
            return rate
    raise ContentError(
        f"{source}: ffprobe finds no video frame rate (pass --fps):\n{_tail(result.stderr)}"
    )


def _input_args(
    source: Path | None, duration_s: float, size: tuple[int, int], fps: int | None
) -> list[str]:
    """ffmpeg's options opening the source: the file, or testsrc2 at ``size`` (the top level's)."""
    if source is None:
        width, height = size
        pattern = (
            f"testsrc2=size={width}x{height}:rate={fps or DEFAULT_FPS}:duration={duration_s:g}"
        )
        return ["-f", "lavfi", "-i", pattern]
    return ["-t", f"{duration_s:g}", "-i", str(source)]


def _rate_filter(source: Path | None, fps: int | None) -> str:
    """The frame-rate conversion of a source file asked for with ``fps`` ("" or "fps=N,")."""
    return f"fps={fps}," if fps and source is not None else ""


def _fit_filter(width: int, height: int) -> str:
    """Scale into ``width`` x ``height``: pad keeps a source of another shape letterboxed rather
    than stretched, and setsar=1 gives every level the same aspect ratio."""
    return (
        f"scale={width}:{height}:force_original_aspect_ratio=decrease,"
        f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,setsar=1,format=yuv420p"
    )


def ffmpeg_command(
    out_dir: Path,
    ladder_kbps: Sequence[int],
    resolutions: Sequence[tuple[int, int]],
    chunk_s: float,
    duration_s: float,
    source: Path | None = None,
    fps: int | None = DEFAULT_FPS,
    preset: str = DEFAULT_PRESET,
    rate_control: str = "cbr",
) -> list[str]:
    """The ffmpeg command line encoding every level into ``out_dir``'s DASH layout."""
    levels = len(ladder_kbps)
    width, height = max(resolutions, key=lambda wh: wh[0] * wh[1])
    cmd = [_tool("ffmpeg"), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    cmd += _input_args(source, duration_s, (width, height), fps)
    # One decode, split into every level
    head = f"[0:v]{_rate_filter(source, fps)}split={levels}"
    head += "".join(f"[s{i}]" for i in range(levels))
    scales = [f"[s{i}]{_fit_filter(w, h)}[v{i}]" for i, (w, h) in enumerate(resolutions)]
    cmd += ["-filter_complex", ";".join([head, *scales])]
    for i in range(levels):
        cmd += ["-map", f"[v{i}]"]
    cmd += ["-an", "-sn", "-dn", "-map_metadata", "-1", "-c:v", "libx264", "-preset", preset]
    for i, kbps in enumerate(ladder_kbps):
        bitrate = f"{int(kbps)}k"
        if rate_control == "cbr":
            # HRD CBR pads with filler data, so every segment is close to kbps * chunk_s.
            cmd += [f"-b:v:{i}", bitrate, f"-minrate:v:{i}", bitrate, f"-maxrate:v:{i}", bitrate]
            cmd += [f"-bufsize:v:{i}", bitrate]
        else:  # capped VBR: easy scenes come out smaller than the ladder says
            cmd += [f"-b:v:{i}", bitrate, f"-maxrate:v:{i}", bitrate]
            cmd += [f"-bufsize:v:{i}", f"{2 * int(kbps)}k"]
    if rate_control == "cbr":
        cmd += ["-x264-params", "nal-hrd=cbr"]
    # A keyframe exactly every chunk_s and nowhere else, so every segment lasts chunk_s.
    cmd += ["-force_key_frames", f"expr:gte(t,n_forced*{chunk_s:g})", "-sc_threshold", "0"]
    if fps:
        cmd += [
            "-g",
            str(max(1, round(fps * chunk_s))),
            "-keyint_min",
            str(max(1, round(fps * chunk_s))),
        ]
    cmd += [
        "-f",
        "dash",
        "-seg_duration",
        f"{chunk_s:g}",
        "-use_template",
        "1",
        "-use_timeline",
        "0",
        "-adaptation_sets",
        "id=0,streams=v",
        "-init_seg_name",
        INIT_TEMPLATE,
        "-media_seg_name",
        MEDIA_TEMPLATE,
        str(out_dir / MPD_NAME),
    ]
    return cmd


def build_encoded(
    out: Path,
    source: Path | None = None,
    duration_s: float | None = None,
    ladder_kbps: Sequence[int] = DEFAULT_LADDER_KBPS,
    chunk_s: float = DEFAULT_CHUNK_S,
    fps: int | None = None,
    resolutions: Sequence[tuple[int, int]] | None = None,
    preset: str = DEFAULT_PRESET,
    rate_control: str = "cbr",
    force: bool = False,
    quality: bool = True,
    vmaf: bool = True,
    vmaf_ffmpeg: Path | str | None = None,
    progress: bool = True,
) -> Path:
    """Encode ``source`` (default: ffmpeg's ``testsrc2`` pattern) at every ladder level.

    H.264 (libx264) in fragmented MP4, ``chunk_s``-second segments, no audio. ``duration_s``
    defaults to 192 s for the pattern and to the source's whole length (cut to whole chunks)
    for a file; ``fps`` (frames/s) defaults to 24 for the pattern and the source's own rate.
    ``video.json`` gets the segments' sizes as measured on disk and, with ``quality``, every
    segment's SSIM in dB and (with ``vmaf``, when an ffmpeg with libvmaf is found:
    ``vmaf_ffmpeg``, else the ``imageio-ffmpeg`` package's) its VMAF, measured against the
    source at the top level's resolution (:mod:`streambed.server.quality`); a progress bar
    shows on a terminal unless ``progress`` is false. Returns ``out``.
    """
    ladder = [int(k) for k in ladder_kbps]
    if len(ladder) < 2 or any(k <= 0 for k in ladder) or ladder != sorted(set(ladder)):
        raise ContentError(
            f"ladder {ladder} kbps: need >= 2 positive, strictly increasing bitrates"
        )
    if not chunk_s > 0:
        raise ContentError(f"chunk duration {chunk_s} s must be positive")
    if fps is not None and fps <= 0:
        raise ContentError(f"fps {fps} must be positive")
    if rate_control not in ("cbr", "capped"):
        raise ContentError(f"rate control {rate_control!r}: choose cbr or capped")
    sizes = list(resolutions) if resolutions is not None else default_resolutions(ladder)
    check_resolutions(sizes, len(ladder))
    _tool("ffmpeg")
    # before the encode, so a bad --vmaf-ffmpeg fails in a second, not after minutes
    measure_vmaf = quality and vmaf
    vmaf_exe = find_vmaf_ffmpeg(vmaf_ffmpeg) if measure_vmaf else None
    if measure_vmaf and vmaf_exe is None:
        log.info(
            "VMAF skipped: no ffmpeg with %s (install the [vmaf] extra or pass --vmaf-ffmpeg)",
            VMAF_FILTER,
        )
    if source is not None:
        if not source.is_file():
            raise ContentError(f"{source}: no such file")
        available = probe_duration_s(source)
        if duration_s is None:
            duration_s = math.floor(available / chunk_s + 1e-6) * chunk_s
        elif duration_s > available + 1e-3:
            raise ContentError(f"{source}: lasts {available:.3f} s, shorter than {duration_s} s")
    elif duration_s is None:
        duration_s = DEFAULT_DURATION_S
    chunks = duration_s / chunk_s
    if duration_s <= 0 or abs(chunks - round(chunks)) > 1e-6 or round(chunks) < 1:
        raise ContentError(
            f"duration {duration_s} s must be a positive whole number of {chunk_s} s chunks"
        )
    num_chunks = round(chunks)
    fps_used = fps if fps is not None else (DEFAULT_FPS if source is None else None)
    name = source.stem if source is not None else "testsrc2"
    with _staged(out, force) as staging:
        cmd = ffmpeg_command(
            staging, ladder, sizes, chunk_s, duration_s, source, fps_used, preset, rate_control
        )
        log.info(
            "encoding %s: %d levels x %d chunks of %g s (%s)",
            name,
            len(ladder),
            num_chunks,
            chunk_s,
            ", ".join(f"{k} kbps {w}x{h}" for k, (w, h) in zip(ladder, sizes, strict=True)),
        )
        log.debug("%s", " ".join(cmd))
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise ContentError(
                f"ffmpeg failed (exit status {result.returncode}) encoding {name} into {out}:\n"
                f"{_tail(result.stderr)}"
            )
        video = _measure(staging, name, ladder, chunk_s, num_chunks, rate_control)
        if quality:
            top = max(sizes, key=lambda wh: wh[0] * wh[1])
            if fps_used is not None:
                rate = float(fps_used)
            else:  # a source file at its own rate
                assert source is not None
                rate = probe_frame_rate(source)
            reference = Reference(
                input_args=tuple(_input_args(source, duration_s, top, fps_used)),
                chain=_rate_filter(source, fps_used) + _fit_filter(*top),
                size=top,
                frame_rate=rate,
            )
            level_files = [
                [_name_init(level), *(_name_chunk(level, c) for c in range(num_chunks))]
                for level in range(len(ladder))
            ]
            ssim_db, vmaf_table = measure_quality(
                _tool("ffmpeg"), staging, level_files, chunk_s, reference, vmaf_exe, progress
            )
            video = dataclasses.replace(video, ssim_db=ssim_db, vmaf=vmaf_table)
            log.info("%s", quality_summary(video))
        video.save(staging / VIDEO_JSON)
    log.info("built %s: %d levels x %d segments", out, len(ladder), num_chunks)
    return out


def _measure(
    directory: Path,
    name: str,
    ladder: Sequence[int],
    chunk_s: float,
    num_chunks: int,
    rate_control: str,
) -> Video:
    """Check ffmpeg's MPD and segments against the request and read the segments' sizes."""
    manifest = parse_mpd((directory / MPD_NAME).read_bytes(), _file_url(directory / MPD_NAME))
    if manifest.bitrates_kbps != tuple(ladder):
        raise ContentError(f"ffmpeg's MPD lists {manifest.bitrates_kbps} kbps, asked {ladder}")
    if [r.id for r in manifest.representations] != [str(i) for i in range(len(ladder))]:
        ids = [r.id for r in manifest.representations]
        raise ContentError(f"ffmpeg's MPD has Representation ids {ids}, expected 0..K-1")
    if abs(manifest.segment_duration_s - chunk_s) > 1e-3 or manifest.num_segments != num_chunks:
        raise ContentError(
            f"ffmpeg's MPD has {manifest.num_segments} segments of {manifest.segment_duration_s} "
            f"s, asked {num_chunks} of {chunk_s} s"
        )
    sizes = np.zeros((len(ladder), num_chunks), dtype=np.int64)
    for level in range(len(ladder)):
        found = sorted(directory.glob(f"chunk-{level}-*.m4s"))
        if len(found) != num_chunks:
            raise ContentError(
                f"ffmpeg wrote {len(found)} segments for level {level}, expected {num_chunks} "
                "(is the source shorter than the duration asked?)"
            )
        for chunk in range(num_chunks):
            sizes[level, chunk] = (directory / _name_chunk(level, chunk)).stat().st_size
    try:
        return Video(name, tuple(ladder), chunk_s, sizes, num_chunks)
    except VideoError as exc:
        hint = " (try --rate-control cbr)" if rate_control != "cbr" else ""
        raise ContentError(f"encoded segments do not make a valid ladder: {exc}{hint}") from None


# ------------------------------------------------------------------------------------------
# Checking a content directory


def _file_url(path: Path) -> str:
    return path.absolute().as_uri()


def _url_path(url: str) -> Path:
    return Path(unquote(urlparse(url).path))


def verify_content(directory: Path) -> tuple[Manifest, Video]:
    """Check a content directory: MPD and ``video.json`` agree, and every segment is on disk
    with the size ``video.json`` gives. Returns both; raises :class:`ContentError` naming the
    first mismatch.
    """
    mpd_path = directory / MPD_NAME
    if not mpd_path.is_file():
        raise ContentError(f"{directory}: no {MPD_NAME}")
    manifest = parse_mpd(mpd_path.read_bytes(), _file_url(mpd_path))
    try:
        video = load_video(directory / VIDEO_JSON)
    except StreambedError as exc:
        raise ContentError(f"{directory}: {exc}") from None
    if manifest.bitrates_kbps != video.bitrates_kbps:
        raise ContentError(
            f"{directory}: MPD ladder {manifest.bitrates_kbps} kbps, "
            f"{VIDEO_JSON} {video.bitrates_kbps} kbps"
        )
    if manifest.num_segments != video.num_chunks:
        raise ContentError(
            f"{directory}: MPD has {manifest.num_segments} segments, "
            f"{VIDEO_JSON} {video.num_chunks} chunks"
        )
    if abs(manifest.segment_duration_s - video.chunk_s) > 1e-3:
        raise ContentError(
            f"{directory}: MPD segments last {manifest.segment_duration_s} s, "
            f"{VIDEO_JSON} says {video.chunk_s} s"
        )
    for level in range(manifest.num_levels):
        init = _url_path(manifest.init_url(level))
        if not init.is_file():
            raise ContentError(f"{directory}: level {level}: init segment {init.name} missing")
        for chunk in range(manifest.num_segments):
            path = _url_path(manifest.chunk_url(level, chunk))
            expected = int(video.chunk_bytes[level, chunk])
            actual = path.stat().st_size if path.is_file() else None
            if actual != expected:
                raise ContentError(
                    f"{directory}: {path.name} is {actual} bytes, {VIDEO_JSON} says {expected}"
                )
    return manifest, video
