"""Observations: what a learned policy reads, as plug-ins. Built in: the Pensieve 6 x 8 matrix.

The contract
------------
An observation is an object with:

* ``version: str``: its name and version, e.g. ``pensieve-6x8/1``. Checkpoints record it (as
  ``obs_version``) and architectures declare it; change it whenever the meaning of a value
  changes, so an old checkpoint is refused instead of misread.
* ``shape: tuple[int, ...]``: one session's observation, e.g. ``(6, 8)``.
* ``high: float`` (optional, default ``inf``) and ``low: float`` (optional, default ``-inf``):
  the bounds of the Gym env's ``Box``.
* ``update(obs, video, chunk_index, quality, buffer_s, chunk_bytes, download_s, rebuffer_s)
  -> None``: write the chunk just downloaded into ``obs`` **in place**. ``obs`` has shape
  ``(N, *shape)`` (float32 in training, float64 elsewhere) and holds each session's previous
  observation (zeros before its first chunk); the others are arrays of shape ``(N,)``:
  ``chunk_index`` the chunk just downloaded (0-based), ``quality`` its level, ``buffer_s`` the
  buffer after it (seconds), ``chunk_bytes`` its size (bytes), ``download_s`` request to last
  byte (seconds, round trip included), ``rebuffer_s`` the stall while fetching it (seconds), as
  in :class:`streambed.abr_service.algorithms.base.ChunkFeedback`. ``video`` (:class:`Video`) gives the
  ladder and every chunk's size (the look-ahead). The batched simulator calls it with
  thousands of sessions per step: keep it vectorised.

The same ``update`` builds the observation in the batched simulator (training, validation),
the Gym env, the decision service and ``streambed eval`` (through
:class:`~streambed.abr_service.algorithms.base.ABRAlgorithm`), so a policy reads identical inputs
everywhere.

Plug-ins
--------
A package registers an observation in the entry-point group ``streambed.observations``; the
entry point names a class (instantiated without arguments) or a zero-argument factory. The
registry is keyed by the object's ``version``; the entry point's name is only a label::

    [project.entry-points."streambed.observations"]
    example-throughput = "streambed_example.throughput:ThroughputObservation"

Discovery runs once per process (:func:`observations`; :func:`clear_cache` forgets it). Each
plug-in is built and given two updates of a batch of 2 sessions of a 6-level video (chunk 0
and the last chunk); one that fails to import or to build, breaks the contract, raises, leaves
non-finite values, or reuses a version already taken (a built-in's or an earlier plug-in's) is
named in a logging warning and skipped. :func:`get_observation` finds one by version.

The Pensieve observation
------------------------

=====  ============================================  ===============================
 row    meaning                                        unit / normalisation
=====  ============================================  ===============================
 0      bitrate of the last chunk (newest column)      / top bitrate (0..1)
 1      buffer after the last chunk                    seconds / 10
 2      throughput of the last 8 chunks                bytes / download_s / 1e6 (MB/s)
 3      download time of the last 8 chunks             seconds / 10
 4      sizes of the next chunk at each level          MB (columns 0..levels-1)
 5      chunks left to download                        min(left, 48) / 48
=====  ============================================  ===============================

Rows 0, 1 and 5 keep a history too (the networks read only the newest column). The download
time includes the request round trip, as a player measures it. Row 4 beyond the ladder is
zero (Pensieve left rolled-over leftovers there that no network reads). :func:`update_observation`
updates one observation (shape 6 x 8) or a batch (N x 6 x 8) from precomputed values;
:class:`PensieveObservation` is it behind the contract above.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from importlib.metadata import EntryPoint
from typing import Any, Protocol

import numpy as np

from streambed.abr_service.plugins import PluginRegistry, Refused, instantiate
from streambed.abr_service.video import Video, generate_video
from streambed.core.errors import ConfigError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "streambed.observations"

OBS_VERSION = "pensieve-6x8/1"
S_INFO = 6
S_LEN = 8
BUFFER_NORM_S = 10.0
CHUNKS_LEFT_CAP = 48.0


def empty_observation(batch: int | None = None, dtype: type = np.float64) -> np.ndarray:
    shape = (S_INFO, S_LEN) if batch is None else (batch, S_INFO, S_LEN)
    return np.zeros(shape, dtype=dtype)


def update_observation(
    obs: np.ndarray,
    bitrate_kbps: np.ndarray | float,
    top_bitrate_kbps: float,
    buffer_s: np.ndarray | float,
    chunk_bytes: np.ndarray | float,
    download_s: np.ndarray | float,
    next_chunk_bytes: np.ndarray,
    chunks_left: np.ndarray | float,
) -> np.ndarray:
    """Shift ``obs`` one column left in place and write the newest chunk into the last column.

    ``next_chunk_bytes`` has shape (levels,) or (N, levels).
    """
    levels = next_chunk_bytes.shape[-1]
    if obs.flags.c_contiguous:
        # One contiguous move: each row's last column takes the next row's first value,
        # but every last column is rewritten below.
        flat = obs.reshape(-1)
        flat[:-1] = flat[1:]
    else:
        obs[..., :, :-1] = obs[..., :, 1:]
    obs[..., 0, -1] = np.asarray(bitrate_kbps) / top_bitrate_kbps
    obs[..., 1, -1] = np.asarray(buffer_s) / BUFFER_NORM_S
    obs[..., 2, -1] = np.asarray(chunk_bytes) / np.asarray(download_s) / 1e6
    obs[..., 3, -1] = np.asarray(download_s) / BUFFER_NORM_S
    np.divide(next_chunk_bytes, 1e6, out=obs[..., 4, :levels])  # no (N, levels) temporary
    obs[..., 4, levels:] = 0.0
    obs[..., 5, -1] = np.minimum(chunks_left, CHUNKS_LEFT_CAP) / CHUNKS_LEFT_CAP
    return obs


# ------------------------------------------------------------------------------------------
# The contract


class Observation(Protocol):
    """What an entry point in ``streambed.observations`` provides (see the module docstring)."""

    @property
    def version(self) -> str: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    def update(
        self,
        obs: np.ndarray,
        video: Video,
        chunk_index: np.ndarray,
        quality: np.ndarray,
        buffer_s: np.ndarray,
        chunk_bytes: np.ndarray,
        download_s: np.ndarray,
        rebuffer_s: np.ndarray,
    ) -> None: ...


def bounds(observation: Observation) -> tuple[float, float]:
    """``(low, high)`` of the observation's values, for a Gym ``Box`` (unbounded by default)."""
    return (
        float(getattr(observation, "low", -math.inf)),
        float(getattr(observation, "high", math.inf)),
    )


def observe_one(
    observation: Observation,
    obs: np.ndarray,
    video: Video,
    chunk_index: int,
    quality: int,
    buffer_s: float,
    chunk_bytes: float,
    download_s: float,
    rebuffer_s: float = 0.0,
) -> np.ndarray:
    """Update one session's observation ``obs`` (shape ``observation.shape``) in place."""
    observation.update(
        obs[None],  # a view: the batch of one writes into obs
        video,
        np.array([chunk_index], np.int64),
        np.array([quality], np.int64),
        np.array([buffer_s], np.float64),
        np.array([chunk_bytes], np.float64),
        np.array([download_s], np.float64),
        np.array([rebuffer_s], np.float64),
    )
    return obs


class PensieveObservation:
    """The Pensieve 6 x 8 observation (the table above), behind the :class:`Observation`
    contract; exactly :func:`update_observation`."""

    version = OBS_VERSION
    shape: tuple[int, ...] = (S_INFO, S_LEN)
    low = 0.0
    high = 1e4  # MB/s, seconds/10: far above anything a trace produces

    def update(
        self,
        obs: np.ndarray,
        video: Video,
        chunk_index: np.ndarray,
        quality: np.ndarray,
        buffer_s: np.ndarray,
        chunk_bytes: np.ndarray,
        download_s: np.ndarray,
        rebuffer_s: np.ndarray,
    ) -> None:
        bitrates = video.bitrates
        nxt = chunk_index + 1
        update_observation(
            obs,
            bitrates[quality],
            bitrates[-1],
            buffer_s,
            chunk_bytes,
            download_s,
            video.padded_sizes[:, nxt].T,
            video.num_chunks - nxt,
        )


PENSIEVE = PensieveObservation()

BUILTIN: dict[str, Observation] = {OBS_VERSION: PENSIEVE}


# ------------------------------------------------------------------------------------------
# Discovery


def check_observation(observation: Any) -> Observation:
    """``observation`` checked against the contract, with a smoke update; ValueError or
    TypeError say what is wrong."""
    version = getattr(observation, "version", None)
    if not isinstance(version, str) or not version.strip():
        raise TypeError(f"its version is {version!r}, not a non-empty string")
    shape = getattr(observation, "shape", None)
    if (
        not isinstance(shape, tuple)
        or not shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    ):
        raise TypeError(f"its shape is {shape!r}, not a tuple of positive ints")
    low, high = bounds(observation)
    if not low < high:
        raise ValueError(f"its bounds are low={low}, high={high}")
    if not callable(getattr(observation, "update", None)):
        raise TypeError("it has no update(obs, video, chunk_index, ...) method")
    # Two sessions of a 6-level video: the first chunk, then the last (look-ahead past the end).
    video = generate_video(num_chunks=4, chunk_s=4.0)
    obs = np.zeros((2, *shape))
    for chunks in ((0, 2), (1, video.num_chunks - 1)):
        chunk = np.array(chunks, np.int64)
        quality = np.array([1, video.num_levels - 1], np.int64)
        result = observation.update(
            obs,
            video,
            chunk,
            quality,
            np.array([4.0, 12.5]),
            video.chunk_bytes[quality, chunk].astype(np.float64),
            np.array([0.8, 2.5]),
            np.array([0.0, 0.3]),
        )
        if result is not None and result is not obs:
            raise TypeError("its update returns a new array; it must write obs in place")
        if obs.shape != (2, *shape):
            raise ValueError(f"its update changed obs to shape {obs.shape}, not {(2, *shape)}")
    if not np.isfinite(obs).all():
        raise ValueError(f"its update gives non-finite values for {(2, *shape)}")
    return observation


def _build(point: EntryPoint, taken: Mapping[str, Observation]) -> tuple[str, Observation]:
    observation = check_observation(instantiate(point.load()))
    if observation.version in taken:
        raise Refused(f"version {observation.version!r} is already taken")
    return observation.version, observation


_registry: PluginRegistry[Observation] = PluginRegistry(
    ENTRY_POINT_GROUP, "observation", BUILTIN, _build, log
)


def observations() -> dict[str, Observation]:
    """Every usable observation by version: the built-in, then the plug-ins (cached)."""
    return _registry.all()


def load_errors() -> dict[str, str]:
    """Plug-ins that were skipped, by entry-point name, with the reason (as the warning)."""
    return _registry.errors()


def clear_cache() -> None:
    """Forget the discovered plug-ins (the next :func:`observations` looks again)."""
    _registry.clear()


def get_observation(version: str) -> Observation:
    """The registered observation ``version``; ConfigError names it and the known ones."""
    known = observations()
    if version not in known:
        raise ConfigError(f"unknown observation {version!r}; known: {', '.join(known)}")
    return known[version]
