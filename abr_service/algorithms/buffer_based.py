"""BBA: buffer-based adaptation (Huang et al., SIGCOMM '14), as in Pensieve's baseline.

Below the reservoir the lowest level; above reservoir + cushion the highest; in between a
linear map of the buffer onto the ladder, rounded down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streambed.abr_service.algorithms.base import RANGE, ABRAlgorithm, PlayerState


@dataclass(frozen=True)
class BBAParams:
    reservoir_s: float = field(default=5.0, metadata={RANGE: (0.0, 3600.0)})
    """Buffer below which the lowest level is chosen, seconds."""
    cushion_s: float = field(default=10.0, metadata={RANGE: (0.0, 3600.0)})  # 0: a step
    """Width of the linear region above the reservoir, seconds."""


def bba_level(buffer_s: float, num_levels: int, reservoir_s: float, cushion_s: float) -> int:
    if buffer_s < reservoir_s:
        return 0
    if buffer_s >= reservoir_s + cushion_s:
        return num_levels - 1
    return int((num_levels - 1) * (buffer_s - reservoir_s) / cushion_s)


class BBA(ABRAlgorithm):
    name = "bba"
    Params = BBAParams
    params: BBAParams

    def select(self, state: PlayerState) -> int:
        p = self.params
        return bba_level(state.buffer_s, self.video.num_levels, p.reservoir_s, p.cushion_s)
