"""ABR algorithms behind one interface, and the registry that names them."""

from __future__ import annotations

from typing import Any

from abr_service.algorithms.base import (
    ABRAlgorithm,
    ChunkFeedback,
    PlayerState,
    parse_params,
)
from abr_service.algorithms.bola import BOLA
from abr_service.algorithms.buffer_based import BBA
from abr_service.algorithms.learned import LearnedPolicy
from abr_service.algorithms.mpc import MPC, RobustMPC
from abr_service.algorithms.rate_based import RateBased
from abr_service.video import Video
from streambed.errors import ConfigError

ALGORITHMS: dict[str, type[ABRAlgorithm]] = {
    cls.name: cls for cls in (BBA, RateBased, BOLA, MPC, RobustMPC, LearnedPolicy)
}
CLASSIC = ("bba", "rb", "bola", "fastmpc", "robustmpc")


def make_algorithm(name: str, video: Video, params: dict[str, Any] | None = None) -> ABRAlgorithm:
    """A fresh instance of algorithm ``name`` for one session of ``video``."""
    try:
        cls = ALGORITHMS[name]
    except KeyError:
        raise ConfigError(
            f"unknown algorithm {name!r}; known: {', '.join(sorted(ALGORITHMS))}"
        ) from None
    return cls(video, parse_params(cls.Params, params))


__all__ = [
    "ALGORITHMS",
    "CLASSIC",
    "ABRAlgorithm",
    "ChunkFeedback",
    "PlayerState",
    "make_algorithm",
]
