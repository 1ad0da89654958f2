"""The QoE metric a player scores its records with.

Level-only metrics (lin, log, hd) need the MPD's ladder alone. ``ssim`` and ``vmaf`` score each
chunk as measured on the video: the player reads the measurements from the ``video.json`` that
``streambed origin build`` writes beside the MPD (the origin serves it), and refuses a session
whose content has none, or whose description is not the MPD's ladder, with one line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from streambed.abr_service.qoe import MEASURED, QoEMetric, make_qoe
from streambed.abr_service.video import VIDEO_JSON, parse_video_json
from streambed.core.errors import ContentError, VideoError


def video_json_url(mpd_url: str) -> str:
    """The ``video.json`` beside an MPD."""
    return f"{mpd_url.rsplit('/', 1)[0]}/{VIDEO_JSON}"


def player_metric(
    name: str, ladder: Sequence[int], mpd_url: str, fetch_text: Callable[[str], str]
) -> QoEMetric:
    """The metric ``name``; ``fetch_text(url)`` downloads a text (only for ssim and vmaf)."""
    if name not in MEASURED:
        return make_qoe(name, ladder)
    url = video_json_url(mpd_url)
    try:
        video = parse_video_json(fetch_text(url), url)
        if tuple(video.bitrates_kbps) != tuple(ladder):
            raise VideoError(
                f"{url}: ladder {list(video.bitrates_kbps)} kbps is not the MPD's {list(ladder)}"
            )
        return make_qoe(name, video)
    except VideoError as exc:
        raise ContentError(f"qoe {name!r}: {exc}") from None
