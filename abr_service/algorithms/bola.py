"""BOLA-BASIC (Spiteri et al., INFOCOM '16), parameterised as in dash.js.

Utilities are ``ln(bitrate / lowest) + 1``; with the minimum buffer Q_min and the buffer
target Q_T, ``gp = (u_max - 1) / (Q_T / Q_min - 1)`` and ``V = Q_min / gp``; the level chosen
maximises ``(V * (u_m + gp) - buffer) / bitrate_m``. The lowest level is kept below Q_min
and the highest reached at Q_T.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streambed.abr_service.algorithms.base import RANGE, ABRAlgorithm, PlayerState


@dataclass(frozen=True)
class BOLAParams:
    min_buffer_s: float = field(default=10.0, metadata={RANGE: (0.1, 3600.0)})
    """Buffer up to which the lowest level is chosen (dash.js MINIMUM_BUFFER_S), seconds."""
    buffer_target_s: float = field(default=22.0, metadata={RANGE: (0.1, 3600.0)})
    """Buffer at which the top level is reached (dash.js: 10 s + 2 s per level), seconds."""
    use_chunk_sizes: bool = False
    """Use the next chunk's real sizes instead of the ladder bitrates in the score."""

    def __post_init__(self) -> None:
        if self.buffer_target_s <= self.min_buffer_s:  # gp would divide by zero or flip sign
            raise ValueError(
                f"buffer_target_s ({self.buffer_target_s}) must exceed "
                f"min_buffer_s ({self.min_buffer_s})"
            )


class BOLA(ABRAlgorithm):
    name = "bola"
    Params = BOLAParams
    params: BOLAParams

    def select(self, state: PlayerState) -> int:
        p = self.params
        rates = self.video.bitrates
        utilities = np.log(rates / rates[0]) + 1.0
        gp = (utilities[-1] - 1.0) / (p.buffer_target_s / p.min_buffer_s - 1.0)
        v = p.min_buffer_s / gp
        cost = rates
        if p.use_chunk_sizes:
            sizes = self.video.sizes_at(state.next_chunk).astype(np.float64)
            if sizes.any():
                cost = sizes
        score = (v * (utilities + gp) - state.buffer_s) / cost
        return int(np.argmax(score))
