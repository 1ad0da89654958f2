"""The ABR algorithm interface: feedback on a downloaded chunk, then select the next level.

An algorithm instance serves one session of one video. The simulator, the decision service
and the player drive it the same way::

    algo = make_algorithm("robustmpc", video)
    algo.on_chunk(ChunkFeedback(...))          # after every download, chunk 0 included
    level = algo.select(PlayerState(...))      # before every download but the first

Parameters are a frozen dataclass per algorithm (``Params``), with units in field names.

An algorithm may read a registered observation (:mod:`streambed.abr_service.observation`): a class that
sets ``observation = "VERSION"`` (or an instance that calls :meth:`ABRAlgorithm.use_observation`,
as the learned policy does with its checkpoint's) finds ``self.obs`` (that observation's shape,
float64) updated by ``on_chunk`` through the observation's ``update``, the same inputs a network
over it was trained on.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from streambed.abr_service.observation import Observation, get_observation, observe_one
from streambed.abr_service.video import Video
from streambed.core.errors import ConfigError


@dataclass(frozen=True)
class ChunkFeedback:
    """What the player measured for one downloaded chunk."""

    chunk_index: int
    """Index of the chunk just downloaded (0-based)."""
    quality: int
    """Ladder level it was fetched at."""
    chunk_bytes: int
    """Its size in bytes."""
    download_s: float
    """Request to last byte, seconds (round trip included)."""
    buffer_s: float
    """Buffer after the chunk was appended (and after any wait), seconds."""
    rebuffer_s: float = 0.0
    """Stall while fetching it, seconds."""

    @property
    def throughput_bps(self) -> float:
        """Measured throughput in bytes per second."""
        return self.chunk_bytes / max(self.download_s, 1e-9)


@dataclass(frozen=True)
class PlayerState:
    """The player's state when it asks for the next level."""

    next_chunk: int
    """Index of the chunk about to be requested."""
    buffer_s: float
    """Current buffer, seconds."""
    last_quality: int
    """Level of the previous chunk."""


@dataclass(frozen=True)
class NoParams:
    """An algorithm without parameters."""


class ABRAlgorithm(ABC):
    """Base class: subclasses set ``name``, ``Params`` and implement the two calls."""

    name: ClassVar[str]
    Params: ClassVar[type] = NoParams
    observation: ClassVar[str | None] = None
    """Version of a registered observation to keep in ``self.obs`` (None: none)."""

    obs: np.ndarray
    """The observation after the last chunk (zeros before the first); only with one."""
    obs_version: str | None
    """The observation this instance keeps in ``self.obs`` (None: none)."""

    def __init__(self, video: Video, params: Any = None) -> None:
        self.video = video
        self.params = params if params is not None else self.Params()
        self.history: list[ChunkFeedback] = []
        self.obs_version = None
        self._observer: Observation | None = None
        if self.observation is not None:
            self.use_observation(self.observation)

    def use_observation(self, version: str) -> None:
        """Keep observation ``version`` in ``self.obs`` from now on (ConfigError if unknown)."""
        self._observer = get_observation(version)
        self.obs_version = version
        self.obs = np.zeros(self._observer.shape)

    def on_chunk(self, feedback: ChunkFeedback) -> None:
        """Record a downloaded chunk (and update ``self.obs``); subclasses extend this to keep
        their own state."""
        self.history.append(feedback)
        if self._observer is not None:
            observe_one(
                self._observer,
                self.obs,
                self.video,
                feedback.chunk_index,
                feedback.quality,
                feedback.buffer_s,
                feedback.chunk_bytes,
                feedback.download_s,
                feedback.rebuffer_s,
            )

    @abstractmethod
    def select(self, state: PlayerState) -> int:
        """The level of chunk ``state.next_chunk``."""

    def throughputs_bps(self, last: int) -> np.ndarray:
        """The last ``last`` measured throughputs, bytes per second, oldest first."""
        return np.asarray([fb.throughput_bps for fb in self.history[-last:]], dtype=np.float64)


def parse_params(cls: type, overrides: dict[str, Any] | None) -> Any:
    """Build ``cls`` (a Params dataclass) from string or typed overrides, naming bad keys."""
    if not overrides:
        return cls()
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in overrides.items():
        if key not in known:
            raise ConfigError(
                f"unknown parameter {key!r} for {cls.__qualname__}; "
                f"known: {', '.join(known) or 'none'}"
            )
        default = getattr(cls(), key)
        try:
            if isinstance(default, bool):
                values[key] = (
                    raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes")
                )
            elif default is None:
                values[key] = raw
            else:
                values[key] = type(default)(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"parameter {key}={raw!r}: {exc}") from exc
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:  # a Params' own check (__post_init__) refused them
        given = ", ".join(f"{k}={v!r}" for k, v in values.items())
        raise ConfigError(f"parameters {given} of {cls.__qualname__}: {exc}") from exc
