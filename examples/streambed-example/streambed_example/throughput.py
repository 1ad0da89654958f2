"""``example-throughput/1``: a small observation, 3 x 8, of the last 8 chunks.

=====  ===========================================  =============================
 row    meaning                                       unit / normalisation
=====  ===========================================  =============================
 0      measured throughput of the last 8 chunks      MB/s (bytes / download_s / 1e6)
 1      buffer after each of the last 8 chunks        seconds / 10
 2      bitrate of each of the last 8 chunks          / top bitrate (0..1)
=====  ===========================================  =============================

The newest chunk is the last column. Registered in ``pyproject.toml`` as::

    [project.entry-points."streambed.observations"]
    example-throughput = "streambed_example.throughput:ThroughputObservation"

The contract is described in ``streambed.abr_service.observation``: ``version``, ``shape``, optional
``high``/``low``, and ``update``, which writes a whole batch of sessions in place.
"""

from __future__ import annotations

import numpy as np

from streambed.abr_service.video import Video


class ThroughputObservation:
    version = "example-throughput/1"
    """Bump the number whenever a value changes meaning: old checkpoints are then refused."""
    shape = (3, 8)
    low = 0.0

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
        """``obs``: (N, 3, 8); the others: (N,), for the chunk each session just downloaded."""
        obs[:, :, :-1] = obs[:, :, 1:]  # one column older
        obs[:, 0, -1] = chunk_bytes / np.maximum(download_s, 1e-6) / 1e6
        obs[:, 1, -1] = buffer_s / 10.0
        obs[:, 2, -1] = video.bitrates[quality] / video.bitrates[-1]
