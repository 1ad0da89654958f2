"""``harmonic``: the highest level whose bitrate is below ``safety`` times the harmonic mean of
the last ``window`` measured throughputs.

A throughput rule like Streambed's ``rb``, written only against the public algorithm interface
(``ABRAlgorithm``: ``on_chunk`` records feedback, ``select`` picks the next level).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streambed.abr_service.algorithms.base import ABRAlgorithm, PlayerState


@dataclass(frozen=True)
class HarmonicParams:
    window: int = 5
    """Number of past chunks in the harmonic mean."""
    safety: float = 0.9
    """Fraction of the predicted throughput a level's bitrate may use."""

    def __post_init__(self) -> None:
        # Refused here, a bad value becomes a ConfigError (a 422 in /decide) naming it.
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if not 0 < self.safety <= 1:
            raise ValueError(f"safety must be in (0, 1], got {self.safety}")


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
