"""``/algorithms`` and ``/videos``: what a session can ask for."""

from __future__ import annotations

from fastapi import APIRouter, Request

from abr_service.algorithms import ALGORITHMS
from abr_service.app.deps import state
from abr_service.app.engine import CLASSIC_NAMES, params_of
from abr_service.app.schemas import AlgorithmOut, VideoOut

router = APIRouter(tags=["catalog"])


@router.get("/algorithms", response_model=list[AlgorithmOut])
async def list_algorithms(request: Request) -> list[AlgorithmOut]:
    app = state(request)
    out = [
        AlgorithmOut(name=n, kind="classic", source="builtin", params=params_of(ALGORITHMS[n]))
        for n in CLASSIC_NAMES
    ]
    learned = {k: v for k, v in params_of(ALGORITHMS["ppo"]).items() if k != "model"}
    for name, active in sorted(app.store.active.items()):
        out.append(
            AlgorithmOut(
                name=name,
                kind="learned",
                source=f"model {active.info.label}",
                params=learned,
                model_version=active.info.label,
            )
        )
    return out


@router.get("/videos", response_model=list[VideoOut])
async def list_videos(request: Request) -> list[VideoOut]:
    engine = state(request).engine
    return [
        VideoOut(
            name=v.name,
            bitrates_kbps=[float(b) for b in v.bitrates_kbps],
            chunk_s=float(v.chunk_s),
            num_chunks=v.num_chunks,
            default=v is engine.default_video,
        )
        for v in engine.videos.values()
    ]
