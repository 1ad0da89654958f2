"""The video description: bitrate ladder, chunk duration and every chunk's size.

One home for "the video": the simulator, the algorithms, the service and the reports all read
a :class:`Video`. Three sources:

* Pensieve's ``video_size_0..K`` directory: one file per level, lowest bitrate first, one
  chunk size in bytes per line. Pensieve's files carry one entry more than the chunks played
  (the last is read only as the look-ahead "next chunk"), so ``num_chunks`` defaults to the
  entry count minus one there. The ladder is not in those files: pass ``bitrates_kbps`` or get
  Pensieve's (300, 750, 1200, 1850, 2850, 4300) kbps for a 6-level directory.
* Streambed's own description, ``video.json`` (see :meth:`Video.to_json`).
* :func:`generate_video`: a seeded variable-bitrate description for the embedded defaults.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from streambed.core.errors import VideoError

PENSIEVE_BITRATES_KBPS: tuple[int, ...] = (300, 750, 1200, 1850, 2850, 4300)
VIDEO_JSON = "video.json"
FIRST_QUALITY = 1
"""The level of chunk 0 in every test session, fetched without asking the algorithm (Pensieve's
test harness): the simulator, the service and both players start there unless told otherwise."""
FORMAT_TAG = "streambed-video/1"
SSIM_DB_CAP = 60.0
"""SSIM in dB of a segment indistinguishable from the source (SSIM = 1 would be infinite): the
ceiling of ``ssim_db``, reached at 1 - SSIM <= 1e-6."""
QUALITY_RANGES: dict[str, tuple[float, float]] = {
    "ssim_db": (-math.inf, SSIM_DB_CAP),  # below 0 dB only for SSIM < 0 (anti-correlated)
    "vmaf": (0.0, 100.0),
}
"""The per-segment quality measurements a description may carry, and their valid ranges."""


@dataclass(frozen=True)
class Video:
    """A video as the ABR logic sees it.

    ``chunk_bytes[level, chunk]`` is the size in bytes of chunk ``chunk`` at ``level``
    (level 0 is the lowest bitrate). It may have more columns than ``num_chunks``: extra
    entries are look-ahead only (Pensieve's convention).

    ``ssim_db[level, chunk]`` and ``vmaf[level, chunk]`` (shape ``(levels, num_chunks)``,
    float64) are the measured picture quality of each segment against the source at the top
    level's resolution, present only for encoded content (``streambed origin build``):
    SSIM in dB, ``-10 log10(1 - SSIM)`` (Puffer's convention, capped at
    :data:`SSIM_DB_CAP`), and VMAF on its 0..100 scale. ``None`` when not measured.
    """

    name: str
    bitrates_kbps: tuple[int, ...]
    chunk_s: float
    chunk_bytes: np.ndarray = field(repr=False)
    num_chunks: int
    ssim_db: np.ndarray | None = field(default=None, repr=False, compare=False)
    vmaf: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        sizes = np.asarray(self.chunk_bytes, dtype=np.int64)
        object.__setattr__(self, "chunk_bytes", sizes)
        where = f"video {self.name!r}"
        if len(self.bitrates_kbps) < 2:
            raise VideoError(f"{where}: a ladder needs at least 2 levels")
        if any(b <= 0 for b in self.bitrates_kbps):
            raise VideoError(f"{where}: bitrates_kbps must be positive, got {self.bitrates_kbps}")
        if list(self.bitrates_kbps) != sorted(set(self.bitrates_kbps)):
            raise VideoError(
                f"{where}: bitrates_kbps must increase strictly, got {self.bitrates_kbps}"
            )
        if not self.chunk_s > 0:
            raise VideoError(f"{where}: chunk_s must be positive, got {self.chunk_s}")
        if sizes.ndim != 2 or sizes.shape[0] != len(self.bitrates_kbps):
            raise VideoError(
                f"{where}: chunk_bytes has shape {sizes.shape}, expected "
                f"({len(self.bitrates_kbps)}, chunks)"
            )
        if not 1 <= self.num_chunks <= sizes.shape[1]:
            raise VideoError(
                f"{where}: num_chunks={self.num_chunks} but only {sizes.shape[1]} sizes per level"
            )
        if (sizes <= 0).any():
            level, chunk = np.argwhere(sizes <= 0)[0]
            raise VideoError(f"{where}: level {level} chunk {chunk} has size {sizes[level, chunk]}")
        bad = np.argwhere(np.diff(sizes, axis=0) < 0)
        if len(bad):
            level, chunk = bad[0]
            raise VideoError(
                f"{where}: chunk {chunk} is {sizes[level + 1, chunk]} bytes at level {level + 1} "
                f"but {sizes[level, chunk]} bytes at level {level}: sizes must not decrease "
                "with bitrate"
            )
        for kind in QUALITY_RANGES:
            table = getattr(self, kind)
            if table is not None:
                object.__setattr__(self, kind, self._check_quality(kind, table))

    def _check_quality(self, kind: str, table: object) -> np.ndarray:
        """``table`` as a read-only float64 array of shape (levels, num_chunks), every value
        finite and within ``QUALITY_RANGES[kind]``; else one VideoError line naming the field."""
        low, high = QUALITY_RANGES[kind]
        where = f"video {self.name!r}: field {kind!r}"
        try:
            values = np.array(table, dtype=np.float64)
        except (TypeError, ValueError):
            raise VideoError(f"{where} is not a table of numbers (one row per level)") from None
        expected = (self.num_levels, self.num_chunks)
        if values.shape != expected:
            raise VideoError(f"{where} has shape {values.shape}, expected {expected}")
        bad = np.argwhere(~np.isfinite(values) | (values < low) | (values > high))
        if len(bad):
            level, chunk = bad[0]
            bounds = f">= {low:g} and <= {high:g}" if math.isfinite(low) else f"<= {high:g}"
            raise VideoError(
                f"{where}: level {level} chunk {chunk} is {values[level, chunk]}, expected a "
                f"finite number {bounds}"
            )
        values.setflags(write=False)
        return values

    @property
    def num_levels(self) -> int:
        return len(self.bitrates_kbps)

    @property
    def bitrates(self) -> np.ndarray:
        """Ladder in kbps as a float array."""
        return np.asarray(self.bitrates_kbps, dtype=np.float64)

    @cached_property
    def padded_sizes(self) -> np.ndarray:
        """``chunk_bytes`` as float64 with one zero column appended, shape (levels, entries + 1):
        a "next chunk" past the last entry reads zeros, without a bounds check per lookup."""
        return np.concatenate(
            [self.chunk_bytes.astype(np.float64), np.zeros((self.num_levels, 1))], axis=1
        )

    def sizes_at(self, chunk: int) -> np.ndarray:
        """Sizes in bytes of ``chunk`` at every level; zeros past the last entry."""
        if chunk >= self.chunk_bytes.shape[1]:
            return np.zeros(self.num_levels, dtype=np.int64)
        return self.chunk_bytes[:, chunk]

    def quality_table(self, kind: str) -> np.ndarray:
        """The measured per-segment quality ``kind`` ("ssim_db" or "vmaf"), shape
        ``(levels, num_chunks)``; :class:`VideoError` (one line saying how to get it) when this
        description has none."""
        if kind not in QUALITY_RANGES:
            raise VideoError(
                f"unknown quality measurement {kind!r}: choose one of {', '.join(QUALITY_RANGES)}"
            )
        table: np.ndarray | None = getattr(self, kind)
        if table is None:
            what = "SSIM" if kind == "ssim_db" else "VMAF"
            raise VideoError(
                f"video {self.name!r} has no per-segment {what} measurements ({kind}): build real "
                "content with `streambed origin build` (ffmpeg measures SSIM; VMAF needs the "
                "[vmaf] extra)"
            )
        return table

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "format": FORMAT_TAG,
            "name": self.name,
            "chunk_s": self.chunk_s,
            "bitrates_kbps": list(self.bitrates_kbps),
            "num_chunks": self.num_chunks,
            "chunk_bytes": self.chunk_bytes.tolist(),
        }
        for kind in QUALITY_RANGES:
            table = getattr(self, kind)
            if table is not None:
                data[kind] = table.tolist()
        return data

    def save(self, path: str | Path) -> Path:
        """Write Streambed's description; ``path`` may be a directory (gets ``video.json``)."""
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path.mkdir(parents=True, exist_ok=True)
            path = path / VIDEO_JSON
        path.write_text(json.dumps(self.to_json(), indent=1))
        return path

    def save_pensieve(self, directory: str | Path) -> Path:
        """Write ``video_size_0..K`` files (one size per line, lowest level first)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for level in range(self.num_levels):
            lines = "\n".join(str(int(s)) for s in self.chunk_bytes[level])
            (directory / f"video_size_{level}").write_text(lines + "\n")
        return directory


def load_video(path: str | Path, bitrates_kbps: Sequence[int] | None = None) -> Video:
    """Load a video description: a Pensieve ``video_size_*`` directory, a ``video.json``, or an
    origin content directory or its MPD (both read the ``video.json`` beside the MPD)."""
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / VIDEO_JSON).is_file():
            return _load_json(path / VIDEO_JSON)
        if any(path.glob("video_size_*")):
            return _load_pensieve_dir(path, bitrates_kbps)
        raise VideoError(
            f"{path}: not a video description (expected {VIDEO_JSON} or video_size_0..K files)"
        )
    if path.suffix == ".json":
        return _load_json(path)
    if path.suffix == ".mpd":
        # An MPD lacks the segments' sizes; the origin's content directory carries them in
        # the video.json beside its MPD (`streambed origin build`).
        if (path.parent / VIDEO_JSON).is_file():
            return _load_json(path.parent / VIDEO_JSON)
        raise VideoError(
            f"{path}: an MPD has no chunk sizes and there is no {VIDEO_JSON} beside it; build "
            "content with 'streambed origin build' and pass its MPD or directory"
        )
    raise VideoError(f"{path}: unknown video description (want a directory or a .json file)")


def _load_json(path: Path) -> Video:
    try:
        text = path.read_text()
    except OSError as exc:
        raise VideoError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return parse_video_json(text, path)


def parse_video_json(text: str, path: Path | str) -> Video:
    """Streambed's description from its JSON text; ``path`` names it in errors (a file or
    the URL it came from)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise VideoError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise VideoError(f"{path}: expected a JSON object")
    for key in ("bitrates_kbps", "chunk_s", "chunk_bytes"):
        if key not in data:
            raise VideoError(f"{path}: missing field {key!r}")
    sizes = data["chunk_bytes"]
    if not isinstance(sizes, list) or not all(isinstance(row, list) for row in sizes):
        raise VideoError(f"{path}: field 'chunk_bytes' must be a list of lists (one per level)")
    lengths = {len(row) for row in sizes}
    if len(lengths) > 1:
        raise VideoError(f"{path}: levels have different chunk counts: {[len(r) for r in sizes]}")
    try:
        array = np.asarray(sizes, dtype=np.int64)
        bitrates = tuple(int(b) for b in data["bitrates_kbps"])
        chunk_s = float(data["chunk_s"])
    except (TypeError, ValueError) as exc:
        raise VideoError(f"{path}: bad value: {exc}") from exc
    num_chunks = int(data.get("num_chunks") or (array.shape[1] if array.ndim == 2 else 0))
    quality = {kind: data.get(kind) for kind in QUALITY_RANGES}
    try:
        return Video(
            str(data.get("name", Path(str(path)).parent.name)),
            bitrates,
            chunk_s,
            array,
            num_chunks,
            ssim_db=quality["ssim_db"],
            vmaf=quality["vmaf"],
        )
    except VideoError as exc:
        raise VideoError(f"{path}: {exc}") from exc


def _load_pensieve_dir(directory: Path, bitrates_kbps: Sequence[int] | None) -> Video:
    files = []
    level = 0
    while (directory / f"video_size_{level}").is_file():
        files.append(directory / f"video_size_{level}")
        level += 1
    # A gap (video_size_2 missing beside video_size_3) must not pass as a shorter ladder.
    found = sorted(
        int(f.name.removeprefix("video_size_"))
        for f in directory.glob("video_size_*")
        if f.name.removeprefix("video_size_").isdigit()
    )
    missing = sorted(set(range(found[-1] + 1)) - set(found)) if found else []
    if missing:
        names = ", ".join(f"video_size_{n}" for n in missing)
        raise VideoError(
            f"{directory}: {names} missing (levels are video_size_0..{found[-1]}, one file each)"
        )
    rows: list[list[int]] = []
    for file in files:
        row: list[int] = []
        for lineno, line in enumerate(file.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            first = line.split()[0]
            try:
                value = int(first)
            except ValueError:
                raise VideoError(
                    f"{file}: line {lineno}: {first!r} is not a whole number of bytes"
                ) from None
            if value <= 0:
                raise VideoError(f"{file}: line {lineno}: chunk size {value} is not positive")
            row.append(value)
        if not row:
            raise VideoError(f"{file}: empty file")
        rows.append(row)
    counts = [len(r) for r in rows]
    if len(set(counts)) > 1:
        detail = ", ".join(f"{f.name}: {n}" for f, n in zip(files, counts, strict=True))
        raise VideoError(f"{directory}: levels have different chunk counts ({detail})")
    if bitrates_kbps is None:
        if len(files) != len(PENSIEVE_BITRATES_KBPS):
            raise VideoError(
                f"{directory}: {len(files)} levels; the ladder is only known for Pensieve's "
                "6-level video, so give bitrates_kbps"
            )
        bitrates_kbps = PENSIEVE_BITRATES_KBPS
    if len(bitrates_kbps) != len(files):
        raise VideoError(
            f"{directory}: {len(files)} video_size files but {len(bitrates_kbps)} bitrates"
        )
    try:
        return Video(
            directory.name,
            tuple(int(b) for b in bitrates_kbps),
            4.0,
            np.asarray(rows, dtype=np.int64),
            max(counts[0] - 1, 1),
        )
    except VideoError as exc:
        raise VideoError(f"{directory}: {exc}") from exc


def generate_video(
    seed: int = 0,
    num_chunks: int = 48,
    bitrates_kbps: Sequence[int] = PENSIEVE_BITRATES_KBPS,
    chunk_s: float = 4.0,
    complexity_cv: float = 0.3,
    complexity_rho: float = 0.8,
    name: str = "synthetic-vbr",
) -> Video:
    """A variable-bitrate video description.

    Each chunk's scene complexity is a log-normal AR(1) process (``complexity_rho`` is the
    lag-1 correlation, ``complexity_cv`` the spread) shared by all levels, as in real encodes
    where a hard scene is large at every bitrate; each level adds a few percent of its own noise.
    Sizes are scaled so each level's mean bitrate equals its ladder bitrate, and forced to
    increase with the level. One look-ahead entry is appended, as in Pensieve's files.
    """
    rng = np.random.default_rng(seed)
    entries = num_chunks + 1
    sigma = float(np.sqrt(np.log1p(complexity_cv**2)))
    z = np.empty(entries)
    z[0] = rng.normal()
    for i in range(1, entries):
        z[i] = complexity_rho * z[i - 1] + np.sqrt(1 - complexity_rho**2) * rng.normal()
    complexity = np.exp(sigma * z - sigma**2 / 2)
    rates = np.asarray(bitrates_kbps, dtype=np.float64)
    jitter = np.exp(rng.normal(0.0, 0.03, size=(len(rates), entries)))
    sizes = rates[:, None] * 1000 / 8 * chunk_s * complexity[None, :] * jitter
    sizes *= (rates * 1000 / 8 * chunk_s / sizes[:, :num_chunks].mean(axis=1))[:, None]
    sizes = np.maximum.accumulate(np.round(sizes), axis=0).astype(np.int64)
    return Video(name, tuple(int(b) for b in bitrates_kbps), chunk_s, sizes, num_chunks)


def default_video(seed: int = 0) -> Video:
    """The embedded default video: 48 chunks of 4 s on Pensieve's 6-level ladder, variable
    bitrate, generated here (no data, no network)."""
    return generate_video(seed=seed)
