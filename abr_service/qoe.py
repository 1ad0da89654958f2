"""Quality of experience, defined once: Pensieve's three metrics, Puffer's SSIM and Comyco's VMAF.

Per chunk k, with u(q, k) the utility of chunk k at level q, T_k its stall in seconds and
du = u(q_k, k) - u(q_{k-1}, k-1) the quality change from the chunk before::

    QoE_k = scale * u(q_k, k) - rebuffer_penalty * T_k
            - up_penalty * max(du, 0) - down_penalty * max(-du, 0) + offset

with no change term on the first chunk. A session's QoE is the mean over chunks 2..N (the first
chunk, fetched at a fixed level with the start-up stall, is left out), as Pensieve's and
Pensieve-PPO's reports do.

* ``lin``: u = bitrate in Mbit/s, rebuffer penalty 4.3 (the top bitrate of 4.3 Mbit/s), both
  change penalties 1.
* ``log``: u = ln(R / R_min), penalty 2.66.
* ``hd``: u = an HD score per level (1, 2, 3, 12, 15, 20 for Pensieve's ladder), penalty 8.
* ``ssim``: Puffer's (Fugu, NSDI '20, ``src/abr/puffer.hh``): u = the chunk's SSIM in dB as
  measured on the video, rebuffer penalty 100 per second, both change penalties 1.
* ``vmaf``: Comyco's (MM '19): 0.8469 VMAF - 28.7959 T + 0.2980 max(dVMAF, 0)
  - 1.0610 |min(dVMAF, 0)| - 2.6616, u = the chunk's VMAF as measured on the video.

The first three score a level; ``ssim`` and ``vmaf`` score each chunk at each level, so they
need a video description that carries the measurements (``streambed origin build`` of real
content) and refuse one without with one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from streambed.core.errors import ConfigError, VideoError

if TYPE_CHECKING:
    from streambed.abr_service.video import Video

PENSIEVE_HD_SCORES: tuple[float, ...] = (1.0, 2.0, 3.0, 12.0, 15.0, 20.0)

QOE_WINDOW_START = 1
"""Index of the first chunk a session's QoE counts: chunks 2..N (Pensieve's window)."""

QOE_NAMES = ("lin", "log", "hd", "ssim", "vmaf")
MEASURED = {"ssim": "ssim_db", "vmaf": "vmaf"}
"""Metrics scored from per-chunk measurements, and the ``Video`` field that holds them."""

_T = TypeVar("_T")


def qoe_window(chunks: Sequence[_T]) -> Sequence[_T]:
    """The chunks a session's QoE and its other per-session metrics count (chunks 2..N)."""
    return chunks[QOE_WINDOW_START:]


@dataclass(frozen=True)
class QoEMetric:
    """A QoE metric: a utility table and the penalties (see the module docstring).

    ``table[level, chunk]`` is the utility; a table of one column scores levels only (the
    bitrate metrics), and chunks past the last column read the last one (look-ahead entries).
    """

    name: str
    table: np.ndarray = field(repr=False, compare=False)
    rebuffer_penalty: float
    up_penalty: float = 1.0
    down_penalty: float = 1.0
    scale: float = 1.0
    offset: float = 0.0

    def __post_init__(self) -> None:
        table = np.asarray(self.table, dtype=np.float64)
        if table.ndim == 1:
            table = table[:, None]
        object.__setattr__(self, "table", table)

    @property
    def per_chunk(self) -> bool:
        """True when the utility depends on the chunk, not the level alone."""
        return bool(self.table.shape[1] > 1)

    @property
    def utilities(self) -> tuple[float, ...]:
        """Per-level utilities of a level-only metric (raises for a per-chunk one)."""
        if self.per_chunk:
            raise ConfigError(f"qoe {self.name!r} scores each chunk, not each level")
        return tuple(float(u) for u in self.table[:, 0])

    def utility(self, quality: np.ndarray | int, chunk: np.ndarray | int) -> np.ndarray:
        """u(quality, chunk), element-wise."""
        column = np.minimum(chunk, self.table.shape[1] - 1)
        return np.asarray(self.table[quality, column], dtype=np.float64)

    def change_penalty(self, du: np.ndarray) -> np.ndarray:
        """What a quality change ``du`` (utility units) costs, element-wise."""
        return self.up_penalty * np.maximum(du, 0.0) + self.down_penalty * np.maximum(-du, 0.0)

    def transition(
        self,
        quality: np.ndarray | int,
        previous_quality: np.ndarray | int,
        rebuffer_s: np.ndarray | float,
        chunk: np.ndarray | int = 0,
    ) -> np.ndarray:
        """QoE of chunk ``chunk`` fetched at ``quality`` after chunk ``chunk - 1`` at
        ``previous_quality`` (element-wise; at chunk 0 the previous level is read at chunk 0,
        so passing the same level there means no change term)."""
        chunk = np.asarray(chunk, dtype=np.int64)
        now = self.utility(quality, chunk)
        before = self.utility(previous_quality, np.maximum(chunk - 1, 0))
        return (
            self.scale * now
            - self.rebuffer_penalty * np.asarray(rebuffer_s, np.float64)
            - self.change_penalty(now - before)
            + self.offset
        )

    def chunk_qoe(
        self,
        qualities: Sequence[int] | np.ndarray,
        rebuffer_s: Sequence[float] | np.ndarray,
        previous_quality: int | None = None,
        first_chunk: int = 0,
    ) -> np.ndarray:
        """Per-chunk QoE of consecutive chunks from ``first_chunk``; ``previous_quality`` is
        the level of the chunk before (None: no change term on the first one)."""
        q = np.asarray(qualities, dtype=np.int64)
        stall = np.asarray(rebuffer_s, np.float64)
        prev = np.empty_like(q)
        prev[1:] = q[:-1]
        if len(q):
            prev[0] = q[0] if previous_quality is None else previous_quality
        qoe = self.transition(q, prev, stall, first_chunk + np.arange(len(q)))
        if len(q) and previous_quality is None:
            now = self.utility(q[0], first_chunk)
            qoe[0] = self.scale * now - self.rebuffer_penalty * stall[0] + self.offset
        return qoe

    def session_qoe(self, qualities: Sequence[int], rebuffer_s: Sequence[float]) -> float:
        """Mean per-chunk QoE over chunks 2..N (NaN for a session of one chunk)."""
        window = self.chunk_qoe(qualities, rebuffer_s)[QOE_WINDOW_START:]
        return float(np.mean(window)) if len(window) else float("nan")


def make_qoe(
    name: str,
    video: Video | Sequence[float],
    hd_scores: Sequence[float] | None = None,
) -> QoEMetric:
    """The metric ``name`` for a video (or, for the level-only metrics, a ladder in kbps).

    ``ssim`` and ``vmaf`` need a ``Video`` with the measurements; without them: ``VideoError``.
    """
    from streambed.abr_service.video import Video

    ladder = video.bitrates_kbps if isinstance(video, Video) else video
    rates = np.asarray(ladder, dtype=np.float64)
    if name == "lin":
        return QoEMetric("lin", rates / 1000.0, 4.3)
    if name == "log":
        return QoEMetric("log", np.log(rates / rates[0]), 2.66)
    if name == "hd":
        scores = tuple(hd_scores) if hd_scores is not None else PENSIEVE_HD_SCORES
        if len(scores) != len(rates):
            raise ConfigError(
                f"qoe 'hd' needs one score per level: {len(scores)} scores for {len(rates)} levels"
            )
        return QoEMetric("hd", np.asarray(scores, dtype=np.float64), 8.0)
    if name in MEASURED:
        if not isinstance(video, Video):
            raise VideoError(
                f"qoe {name!r} scores each chunk as measured on the video: it needs the video "
                "description (video.json of `streambed origin build`), not a ladder"
            )
        table = video.quality_table(MEASURED[name])
        if name == "ssim":
            return QoEMetric("ssim", table, 100.0)
        return QoEMetric(
            "vmaf",
            table,
            28.7959,
            up_penalty=-0.2980,
            down_penalty=1.0610,
            scale=0.8469,
            offset=-2.6616,
        )
    raise ConfigError(f"unknown QoE metric {name!r}; choose {', '.join(QOE_NAMES)}")
