"""``harmonic``: the highest level whose bitrate is below ``safety`` times the harmonic mean of
the last ``window`` measured throughputs.

A throughput rule like Streambed's ``rb``, written only against the public algorithm interface
(``ABRAlgorithm``: ``on_chunk`` records feedback, ``select`` picks the next level).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streambed.abr_service.algorithms.base import RANGE, ABRAlgorithm, PlayerState


# Each field declares its valid range (both ends inclusive): a value outside is refused before
# the algorithm is built, naming the parameter, the value and the range (a 422 in /decide, exit
# status 2 from --param), and GET /algorithms and `streambed algorithms` show it.
@dataclass(frozen=True)
class HarmonicParams:
    window: int = field(default=5, metadata={RANGE: (1, 100)})
    """Number of past chunks in the harmonic mean."""
    safety: float = field(default=0.9, metadata={RANGE: (0.05, 1.0)})
    """Fraction of the predicted throughput a level's bitrate may use."""


class HarmonicRate(ABRAlgorithm):
    """Harmonic-mean throughput rule with a safety margin."""

    name = "harmonic"
    Params = HarmonicParams
    params: HarmonicParams

    def select(self, state: PlayerState) -> int:
        recent = self.throughputs_bps(self.params.window)  # bytes/s, oldest first
        recent = recent[recent > 0]
        if not len(recent):
            return 0
        predicted_kbps = len(recent) / float(np.sum(1.0 / recent)) * 8 / 1000
        fits = np.flatnonzero(self.video.bitrates <= self.params.safety * predicted_kbps)
        return int(fits[-1]) if len(fits) else 0
