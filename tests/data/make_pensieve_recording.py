"""Writes ``pensieve_dashjs_session.json``: one session of the requests Pensieve's modified
dash.js sends its ABR server, and the levels the server answered.

The bodies have that player's exact shape (its ``abr`` rule posts, synchronously and without a
content type, after every segment): ``nextChunkSize``, ``Type``, ``lastquality``, ``buffer``
and ``bufferAdjusted`` (s), ``bandwidthEst`` (kbps), ``lastRequest`` (index of the segment just
downloaded), ``RebufferTime`` (cumulative stall, ms), ``lastChunkFinishTime`` and
``lastChunkStartTime`` (wall clock, ms since the epoch: last byte, first byte) and
``lastChunkSize`` (bytes). The session is RobustMPC's on a generated trace and video in the
simulator, its times laid on a wall clock from 2026-11-21; the answers were recorded from
``streambed serve --algorithm robustmpc`` once. Run from the repository root to write it anew:

    .venv/bin/python tests/data/make_pensieve_recording.py
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from streambed.abr_service.video import default_video
from streambed.traces.synth import default_traces
from streambed.trainer.evaluate import evaluate

EPOCH_MS = 1_795_262_400_000.0  # 2026-11-21 00:00 UTC
OUT = Path(__file__).with_name("pensieve_dashjs_session.json")


def bodies() -> list[dict[str, object]]:
    video = default_video()
    trace = default_traces(count=3, seed=5)[2]
    records = evaluate([trace], video, ["robustmpc"], progress=False).sessions[
        ("robustmpc", trace.name)
    ]
    out = []
    rebuffer_ms = 0.0
    for k, r in enumerate(records):
        rebuffer_ms += 1000.0 * r.rebuffer_s
        start = EPOCH_MS + 1000.0 * r.request_start_s
        nxt = k + 1
        out.append(
            {
                "nextChunkSize": int(video.chunk_bytes[r.quality][nxt])
                if nxt < video.num_chunks
                else 0,
                "Type": "BB",
                "lastquality": r.quality,
                "buffer": round(r.buffer_s, 6),
                "bufferAdjusted": round(r.buffer_s, 6),
                "bandwidthEst": round(r.throughput_kbps, 3),
                "lastRequest": k,
                "RebufferTime": round(rebuffer_ms, 3),
                "lastChunkFinishTime": round(start + 1000.0 * r.download_s, 3),
                "lastChunkStartTime": round(start, 3),
                "lastChunkSize": r.chunk_bytes,
            }
        )
    return out


def main() -> None:
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from service_helpers import running_service

    requests = bodies()
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_service(Path(tmp), algorithm="robustmpc") as url,
    ):
        answers = [httpx.post(url + "/", content=json.dumps(b)).text for b in requests]
    OUT.write_text(json.dumps({"requests": requests, "answers": answers}, indent=0) + "\n")
    print(f"wrote {OUT}: {len(requests)} requests")


if __name__ == "__main__":
    main()
