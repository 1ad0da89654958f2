"""The look every plot shares, fit for a paper: column-width figures with fonts readable in
print, embedded TrueType fonts in PDFs, one colour per algorithm in every figure, and one
line style per source (simulated solid, emulated dashed)."""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

COLUMN_IN = 3.5
"""One column of a two-column paper, in inches: figures are drawn at the size they print."""
DOUBLE_COLUMN_IN = 7.0
FONT_PT = 8.0

RC: dict[str, Any] = {
    "font.size": FONT_PT,
    "axes.titlesize": FONT_PT,
    "axes.labelsize": FONT_PT,
    "xtick.labelsize": FONT_PT,
    "ytick.labelsize": FONT_PT,
    "legend.fontsize": FONT_PT,
    "figure.titlesize": FONT_PT + 1,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "axes.linewidth": 0.6,
    "grid.linewidth": 0.4,
    "legend.frameon": False,
    # Editable, embedded TrueType rather than Type 3 fonts (conferences reject Type 3).
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "none",
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
}

# Colour-blind safe (Okabe-Ito, then the tab10 colours it lacks).
PALETTE = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#8C564B",
    "#7F7F7F",
    "#BCBD22",
)
# The shipped algorithms get fixed, distinct colours; any other name a colour from its hash,
# so it is the same in every figure whatever else is plotted with it.
_KNOWN = {
    "bba": 0,
    "robustmpc": 1,
    "ppo": 2,
    "bola": 3,
    "fastmpc": 4,
    "rb": 5,
    "optimal": 6,
}

SIMULATION = "simulation"
EMULATION = "emulation"
_LINESTYLES = {SIMULATION: "-", EMULATION: "--"}
_MARKERS = {SIMULATION: "o", EMULATION: "s"}

_SUFFIX = re.compile(r"\s*\([^()]*\)\s*$")


@dataclass(frozen=True)
class SeriesStyle:
    color: str
    linestyle: str
    marker: str


def base_algorithm(label: str) -> str:
    """The algorithm of a series label: ``bba (emulation)`` is ``bba``."""
    return _SUFFIX.sub("", label).strip() or label


def algorithm_color(algorithm: str) -> str:
    """The colour of ``algorithm`` (a label's ``(source)`` suffix ignored): the same in every
    figure, whatever other algorithms it is plotted with or in what order."""
    name = base_algorithm(algorithm).lower()
    index = _KNOWN.get(name)
    if index is None:
        index = zlib.crc32(name.encode()) % len(PALETTE)
    return PALETTE[index]


def series_style(algorithm: str, kind: str | None = None) -> SeriesStyle:
    """The colour of ``algorithm`` and the line style and marker of the source ``kind``
    (``simulation`` solid and round, ``emulation`` dashed and square, others dotted)."""
    if kind is None:
        kind = SIMULATION
    return SeriesStyle(
        algorithm_color(algorithm), _LINESTYLES.get(kind, ":"), _MARKERS.get(kind, "^")
    )


@contextmanager
def paper_style() -> Iterator[None]:
    """Matplotlib settings of every figure Streambed draws."""
    with plt.rc_context(cast(Any, RC)):
        yield


# Embedding a font subset in a PDF logs every table fontTools prunes at INFO: not news.
logging.getLogger("fontTools").setLevel(logging.WARNING)


def save_figure(fig: Figure, path: Path, dpi: int) -> Path:
    """Write ``fig`` to ``path`` (PNG, for the HTML report) and next to it as a PDF of the same
    stem (vector, for a paper); return ``path``."""
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    if path.suffix.lower() != ".pdf":
        fig.savefig(path.with_suffix(".pdf"))
    return path
