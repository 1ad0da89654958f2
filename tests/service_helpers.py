"""Helpers shared by the decision-service tests: checkpoints, apps on loopback, replay bodies."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from streambed.abr_service.app.main import create_app
from streambed.abr_service.app.settings import Settings
from streambed.abr_service.architectures import PensievePPOActor
from streambed.abr_service.checkpoint import CHECKPOINT_FORMAT
from streambed.abr_service.observation import OBS_VERSION
from streambed.abr_service.video import Video, default_video
from streambed.core.servers import serve_in_thread
from streambed.reports.sessionlog import ChunkRecord

TOKEN = "s3cret-token"


def checkpoint_bytes(levels: int = 6, seed: int = 0, overflow: bool = False) -> bytes:
    """A Streambed checkpoint of a random Pensieve-PPO actor, as uploaded bytes.

    ``overflow``: huge input-layer and merge weights. On the zero observation only the biases
    reach the merge layer, so the output stays finite and the checkpoint passes validation; on
    any real observation +inf and -inf meet in the merge layer and the output is NaN.
    """
    torch.manual_seed(seed)
    actor = PensievePPOActor(levels)
    if overflow:
        with torch.no_grad():
            for name, param in actor.named_parameters():
                if name.endswith("weight") and not name.startswith("pi_head"):
                    param.mul_(1e30 if name.startswith("fc4") else 1e38)
    data = {
        "format": CHECKPOINT_FORMAT,
        "arch": "pensieve-ppo",
        "num_levels": levels,
        "obs_version": OBS_VERSION,
        "actor": actor.state_dict(),
        "meta": {"trainer": "test", "seed": seed},
    }
    buffer = io.BytesIO()
    torch.save(data, buffer)
    return buffer.getvalue()


@contextmanager
def running_service(tmp_path: Path, video: Video | None = None, **overrides: Any) -> Iterator[str]:
    """A real uvicorn serving the decision service on a loopback port; yields its URL."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    values: dict[str, Any] = {"models_dir": tmp_path / "models", "token_file": token_file}
    values.update(overrides)
    app = create_app(Settings(**values), videos=[video or default_video()])
    with serve_in_thread(app) as url:
        yield url


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def replay_body(records: list[ChunkRecord], k: int, session_id: str) -> dict[str, Any]:
    """The /decide body a player sends before chunk ``k`` of a logged session."""
    if k == 0:
        return {"session_id": session_id, "chunk_index": 0, "buffer_s": 0.0}
    prev = records[k - 1]
    return {
        "session_id": session_id,
        "chunk_index": k,
        "last_quality": prev.quality,
        "buffer_s": prev.buffer_s,
        "last_chunk_bytes": prev.chunk_bytes,
        "last_chunk_download_s": prev.download_s,
        "rebuffer_s": prev.rebuffer_s,
    }
