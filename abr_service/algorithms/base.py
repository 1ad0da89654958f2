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

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import Field, dataclass, fields
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


RANGE = "range"
"""Field-metadata key of a numeric parameter's valid range: ``(lo, hi)``, both inclusive, either
None for no bound; or a zero-argument callable returning one (a limit an operator sets)."""
CHOICES = "choices"
"""Field-metadata key of a string parameter's valid values: a tuple of strings."""

Bounds = tuple[float | None, float | None]

INT_LIMIT = 2**63 - 1
"""Integers without a declared range must still fit a signed 64-bit integer."""


class ParamError(ConfigError):
    """One parameter refused: ``param`` names it, ``value`` is what was given, ``valid`` what
    it accepts (the range, the choices or the type)."""

    def __init__(self, message: str, param: str, value: Any, valid: str) -> None:
        super().__init__(message)
        self.param = param
        self.value = value
        self.valid = valid


def param_range(f: Field[Any]) -> Bounds | None:
    """The declared range of parameter field ``f`` (None: undeclared)."""
    declared = f.metadata.get(RANGE)
    if callable(declared):
        declared = declared()
    if declared is None:
        return None
    lo, hi = declared
    return (lo, hi)


def param_choices(f: Field[Any]) -> tuple[str, ...] | None:
    """The declared choices of string parameter field ``f`` (None: any string)."""
    declared = f.metadata.get(CHOICES)
    return tuple(declared) if declared is not None else None


def _show(value: Any) -> str:
    """A short repr of a client's value (a huge int or string must not flood a message)."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's digit limit for str()
        return f"<int of {value.bit_length()} bits>"
    return text if len(text) <= 60 else text[:57] + "..."


def _bounds_text(bounds: Bounds) -> str:
    lo, hi = bounds
    return f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"


def describe_valid(f: Field[Any], default: Any) -> str:
    """What parameter field ``f`` accepts, in words: ``an integer in [1, 5]``, ``one of lin,
    log``..."""
    kind = type(default)
    if kind is bool:
        return "a boolean (true or false)"
    if kind is str:
        choices = param_choices(f)
        return f"one of {', '.join(choices)}" if choices else "a string"
    if kind in (int, float):
        bounds = param_range(f)
        if bounds is None:
            return "a finite number" if kind is float else "an integer (64-bit)"
        return f"{'an integer' if kind is int else 'a number'} in {_bounds_text(bounds)}"
    return f"a {kind.__name__}" if default is not None else "any value"


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _convert(default: Any, raw: Any, from_text: bool) -> Any:
    """``raw`` as the type of ``default``; ValueError when it is not one. Strings are parsed
    only ``from_text``; bools are never numbers."""
    kind = type(default)
    text = from_text and isinstance(raw, str) and kind is not str
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if text and raw.strip().lower() in _TRUE + _FALSE:
            return raw.strip().lower() in _TRUE
        raise ValueError
    if kind is int:
        if text:
            return int(raw.strip())
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        raise ValueError
    if kind is float:
        if text:
            return float(raw.strip())
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)  # OverflowError (an ArithmeticError) for a huge int
        raise ValueError
    if default is None:  # an optional parameter: no type to hold it to
        return raw
    if kind is str:
        if isinstance(raw, str):
            return raw
        raise ValueError
    if isinstance(raw, kind):
        return raw
    if text:
        return kind(raw)
    raise ValueError


def check_param(
    f: Field[Any], default: Any, raw: Any, *, from_text: bool = True, where: str = ""
) -> Any:
    """``raw`` converted to parameter field ``f``'s type (its ``default``'s) and checked against
    its declared range or choices; ``ParamError`` naming the parameter, the value and what is
    valid otherwise. Numbers must be finite, with or without a declared range."""
    valid = describe_valid(f, default)

    def refuse(problem: str) -> ParamError:
        return ParamError(
            f"parameter {where}{f.name}={_show(raw)}: {problem}; valid: {valid}",
            f.name,
            raw,
            valid,
        )

    try:
        value = _convert(default, raw, from_text)
    except (TypeError, ValueError, ArithmeticError):
        raise refuse(f"not a valid {type(default).__name__}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise refuse("not finite")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        bounds = param_range(f)
        if bounds is None and isinstance(value, int) and abs(value) > INT_LIMIT:
            raise refuse("out of range")
        if bounds is not None:
            lo, hi = bounds
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise refuse("out of range")
    if isinstance(value, str):
        choices = param_choices(f)
        if choices is not None and value not in choices:
            raise refuse("not one of the choices")
    return value


def parse_params(
    cls: type, overrides: Mapping[str, Any] | None, *, from_text: bool = True, owner: str = ""
) -> Any:
    """Build ``cls`` (a Params dataclass) from ``overrides``, each checked by
    :func:`check_param`: ``ParamError`` names an unknown or refused parameter, ``ConfigError``
    a combination the class's own ``__post_init__`` refuses.

    ``from_text``: strings are parsed by the declared type (the command line's ``--param``);
    False for JSON values, which must already have their type (no ``"5"`` for 5, no ``true``
    for 1). ``owner``: the algorithm's name, for the messages.
    """
    where = f"{owner}." if owner else ""
    if not overrides:
        return cls()
    known = {f.name: f for f in fields(cls)}
    defaults = cls()
    values: dict[str, Any] = {}
    for key, raw in overrides.items():
        f = known.get(key)
        if f is None:
            raise ParamError(
                f"unknown parameter {_show(key)} for {owner or cls.__qualname__}; "
                f"known: {', '.join(known) or 'none'}",
                key,
                raw,
                ", ".join(known) or "none",
            )
        values[key] = check_param(f, getattr(defaults, key), raw, from_text=from_text, where=where)
    try:
        return cls(**values)
    except Exception as exc:  # a Params' own check (__post_init__) refused the combination
        given = ", ".join(f"{k}={_show(v)}" for k, v in values.items())
        raise ConfigError(f"parameters {given} of {owner or cls.__qualname__}: {exc}") from exc
