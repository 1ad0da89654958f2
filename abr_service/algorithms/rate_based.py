"""RB: rate-based adaptation: the highest level whose bitrate fits the predicted throughput.

The prediction is the harmonic mean of the last ``window`` measured throughputs (chunk bytes
over request-to-last-byte time), times a safety factor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streambed.abr_service.algorithms.base import RANGE, ABRAlgorithm, PlayerState


@dataclass(frozen=True)
class RateBasedParams:
    window: int = field(default=5, metadata={RANGE: (1, 1000)})
    """Number of past chunks in the harmonic mean."""
    safety: float = field(default=1.0, metadata={RANGE: (0.1, 10.0)})
    """Multiplier on the prediction (below 1 is more conservative)."""


def harmonic_mean(values: np.ndarray) -> float:
    values = values[values > 0]
    return float(len(values) / np.sum(1.0 / values)) if len(values) else 0.0


class RateBased(ABRAlgorithm):
    name = "rb"
    Params = RateBasedParams
    params: RateBasedParams

    def select(self, state: PlayerState) -> int:
        predicted_kbps = harmonic_mean(self.throughputs_bps(self.params.window)) * 8 / 1000
        fits = np.flatnonzero(self.video.bitrates <= predicted_kbps * self.params.safety)
        return int(fits[-1]) if len(fits) else 0
