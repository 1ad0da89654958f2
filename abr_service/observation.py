"""The Pensieve observation, defined once: a 6 x 8 matrix of the last 8 chunks.

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
zero (Pensieve left rolled-over leftovers there that no network reads). The same function
updates one observation (shape 6 x 8) or a batch (N x 6 x 8), so the simulator, the Gym env,
the batched trainer and the decision service build identical inputs.
"""

from __future__ import annotations

import numpy as np

from abr_service.video import Video

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
    obs[..., 4, :levels] = next_chunk_bytes / 1e6
    obs[..., 4, levels:] = 0.0
    obs[..., 5, -1] = np.minimum(chunks_left, CHUNKS_LEFT_CAP) / CHUNKS_LEFT_CAP
    return obs


def observe_chunk(
    obs: np.ndarray,
    video: Video,
    chunk_index: int,
    quality: int,
    buffer_s: float,
    chunk_bytes: float,
    download_s: float,
) -> np.ndarray:
    """Update one observation after chunk ``chunk_index`` of ``video`` was downloaded."""
    nxt = chunk_index + 1
    return update_observation(
        obs,
        video.bitrates_kbps[quality],
        video.bitrates_kbps[-1],
        buffer_s,
        chunk_bytes,
        download_s,
        video.sizes_at(nxt).astype(np.float64),
        video.num_chunks - nxt,
    )
