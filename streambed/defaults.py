"""Embedded defaults: a trace set and a video Streambed generates itself (no data, no network)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from streambed.abr_service.video import Video, generate_video
from streambed.traces import SynthParams, Trace, generate_trace

SHIPPED_MODEL = Path(str(files("streambed.models") / "ppo-norway.pt"))
"""The learned policy Streambed ships (see models/README.md): trained on norway-train, Envivio."""
DEFAULT_TRACE_COUNT = 24
DEFAULT_SEED = 0
DEFAULT_TRACE_PARAMS = SynthParams(duration_s=320.0, outage_prob=0.003)


def default_traces(count: int = DEFAULT_TRACE_COUNT, seed: int = DEFAULT_SEED) -> list[Trace]:
    """Markov-modulated synthetic traces (0.5 to 6 Mbit/s states, rare short outages)."""
    return [
        generate_trace(DEFAULT_TRACE_PARAMS, seed=seed * 1000 + i, name=f"synth_{i:03d}")
        for i in range(count)
    ]


def default_video(seed: int = DEFAULT_SEED) -> Video:
    """A 48-chunk, 4 s, 6-level variable-bitrate video on Pensieve's ladder."""
    return generate_video(seed=seed)
