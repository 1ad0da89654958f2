"""``/algorithms`` and ``/videos``: what a session can ask for."""

from __future__ import annotations

from fastapi import APIRouter, Request

from streambed.abr_service.algorithms import available_algorithms
from streambed.abr_service.app.deps import state
from streambed.abr_service.app.schemas import AlgorithmOut, ParamOut, VideoOut

router = APIRouter(tags=["catalog"])


@router.get("/algorithms", response_model=list[AlgorithmOut])
async def list_algorithms(request: Request) -> list[AlgorithmOut]:
    app = state(request)
    infos = available_algorithms()
    out = [
        AlgorithmOut(
            name=info.name,
            kind="classic" if info.builtin else "plugin",
            source=info.source,
            params=info.defaults(),
            parameters=[ParamOut(**p.to_json()) for p in info.params],
        )
        for info in sorted(infos.values(), key=lambda i: (not i.builtin, i.name))
        if not info.learned
    ]
    learned_info = infos["ppo"]
    learned = {k: v for k, v in learned_info.defaults().items() if k != "model"}
    learned_params = [ParamOut(**p.to_json()) for p in learned_info.params if p.name != "model"]
    for name, active in sorted(app.store.active.items()):
        out.append(
            AlgorithmOut(
                name=name,
                kind="learned",
                source=f"model {active.info.label}",
                params=learned,
                parameters=learned_params,
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
