"""``streambed origin``: serve DASH content, and ``streambed origin build``: make it."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from streambed.core.errors import ConfigError, ContentError

log = logging.getLogger(__name__)


def _ladder(text: str) -> list[int]:
    try:
        ladder = [int(part) for part in text.split(",")]  # int("") fails: no empty entries
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: want whole kbps separated by commas, e.g. 300,750,1200"
        ) from None
    if len(ladder) < 2 or any(k <= 0 for k in ladder) or ladder != sorted(set(ladder)):
        raise argparse.ArgumentTypeError(
            f"{text!r}: want >= 2 positive bitrates in strictly increasing order"
        )
    return ladder


def _resolutions(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in text.split(","):
        width, sep, height = part.strip().lower().partition("x")
        if not sep or not width.isdigit() or not height.isdigit():
            raise argparse.ArgumentTypeError(f"{part!r}: want WIDTHxHEIGHT, e.g. 256x144")
        sizes.append((int(width), int(height)))
    return sizes


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be > 0")
    return value


def _flag_or_env(value: Any, name: str, default: Any, kind: Any) -> Any:
    """A flag's value, else the ``STREAMBED_*`` variable ``name``, else ``default``."""
    if value is not None:
        return value
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return kind(text)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise ConfigError(f"{name}={text!r}: {exc}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be >= 1")
    return value


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "origin",
        help="serve DASH content over HTTP (and build it: 'origin build')",
        description=(
            "Serve a content directory (MPD, init and media segments, video.json) over HTTP/1.1 "
            "with byte ranges, CORS and Cache-Control: no-store. 'streambed origin build' makes "
            "such a directory."
        ),
    )
    p.add_argument(
        "--content", type=Path, help="content directory to serve (made by 'origin build')"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    p.add_argument("--access-log", action="store_true", help="log every HTTP request")
    p.add_argument(
        "--head-timeout-s",
        type=_positive_float,
        help="close a connection whose request head takes longer (default 10; "
        "STREAMBED_HEAD_TIMEOUT_S)",
    )
    p.add_argument(
        "--body-timeout-s",
        type=_positive_float,
        help="close a connection whose request body takes longer after the head (default 30; "
        "STREAMBED_BODY_TIMEOUT_S)",
    )
    p.add_argument(
        "--max-connections",
        type=_positive_int,
        help="connections at once, 503 beyond (default 1000; STREAMBED_MAX_CONNECTIONS)",
    )
    p.set_defaults(func=run_serve)
    sub = p.add_subparsers(dest="origin_command", metavar="SUBCOMMAND")

    b = sub.add_parser(
        "build",
        help="build a content directory (ffmpeg encode, or size-exact synthetic segments)",
        description=(
            "Build DASH content: manifest.mpd, init-LEVEL.mp4, chunk-LEVEL-NNNNN.m4s (NNNNN "
            "from 00001) and video.json. By default ffmpeg encodes its testsrc2 pattern; "
            "--source encodes a file; --from-video writes synthetic segments whose sizes are "
            "exactly a video description's chunk sizes."
        ),
    )
    b.add_argument("--out", type=Path, required=True, help="content directory to create")
    what = b.add_mutually_exclusive_group()
    what.add_argument(
        "--from-video",
        type=Path,
        metavar="PATH",
        help="video description (video_size_* directory or video.json): synthetic segments of "
        "exactly its chunk sizes, no encoding",
    )
    what.add_argument(
        "--source", type=Path, metavar="FILE", help="media file to encode (audio is dropped)"
    )
    b.add_argument(
        "--duration-s",
        type=_positive_float,
        help="seconds to encode, a whole number of chunks (default 192 for the pattern, the "
        "whole source cut to whole chunks for --source)",
    )
    b.add_argument(
        "--ladder-kbps",
        type=_ladder,
        help="bitrates in kbps, lowest first (default 300,750,1200,1850,2850,4300; with "
        "--from-video, the ladder of a video_size_* directory)",
    )
    b.add_argument(
        "--chunk-s",
        type=_positive_float,
        help="segment duration in seconds (default 4; --from-video uses the description's)",
    )
    b.add_argument(
        "--fps",
        type=int,
        help="frames per second (default 24 for the pattern, the source's own for --source)",
    )
    b.add_argument(
        "--resolutions",
        type=_resolutions,
        help="WIDTHxHEIGHT per level, one aspect ratio, e.g. 256x144,640x360,1280x720 "
        "(default: 16:9 from 256x144 up to 1280x720 by bitrate)",
    )
    b.add_argument(
        "--preset", default="veryfast", help="libx264 preset (default veryfast; slower is smaller)"
    )
    b.add_argument(
        "--rate-control",
        choices=("cbr", "capped"),
        default="cbr",
        help="cbr: constant bitrate with filler, segment sizes track the ladder (default); "
        "capped: VBR capped at the ladder bitrate, easy scenes come out smaller",
    )
    b.add_argument(
        "--force", action="store_true", help="replace --out if it holds a previous build"
    )
    b.add_argument(
        "--no-quality",
        action="store_true",
        help="skip measuring every segment's SSIM (and VMAF) against the source; by default "
        "encoded content gets them in video.json (synthetic content never does)",
    )
    b.add_argument(
        "--no-vmaf",
        action="store_true",
        help="measure SSIM only, even when an ffmpeg with libvmaf is found (VMAF is the slow one)",
    )
    b.add_argument(
        "--vmaf-ffmpeg",
        metavar="PATH",
        help="ffmpeg built with libvmaf to measure VMAF with (default: the [vmaf] extra's "
        "imageio-ffmpeg when installed, else VMAF is skipped)",
    )
    b.add_argument("--no-progress", action="store_true", help="no progress bar while measuring")
    b.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    from streambed.server.build import (
        DEFAULT_CHUNK_S,
        DEFAULT_LADDER_KBPS,
        build_encoded,
        build_from_description,
    )

    if args.from_video is not None:
        for flag in ("duration_s", "fps", "resolutions", "source", "vmaf_ffmpeg"):
            if getattr(args, flag) is not None:
                raise ConfigError(
                    f"--{flag.replace('_', '-')} applies to encoded content, not --from-video"
                )
        out = build_from_description(
            args.from_video, args.out, args.ladder_kbps, args.chunk_s, force=args.force
        )
    else:
        if args.vmaf_ffmpeg is not None and (args.no_quality or args.no_vmaf):
            skip = "--no-quality" if args.no_quality else "--no-vmaf"
            raise ConfigError(f"--vmaf-ffmpeg measures VMAF, {skip} skips it: pass one of them")
        out = build_encoded(
            args.out,
            source=args.source,
            duration_s=args.duration_s,
            ladder_kbps=args.ladder_kbps or DEFAULT_LADDER_KBPS,
            chunk_s=args.chunk_s or DEFAULT_CHUNK_S,
            fps=args.fps,
            resolutions=args.resolutions,
            preset=args.preset,
            rate_control=args.rate_control,
            force=args.force,
            quality=not args.no_quality,
            vmaf=not args.no_vmaf,
            vmaf_ffmpeg=args.vmaf_ffmpeg,
            progress=not args.no_progress,
        )
    print(f"content: {out}\nserve it: streambed origin --content {out}")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from streambed.core.servers import (
        BODY_TIMEOUT_S,
        HEAD_TIMEOUT_S,
        MAX_CONNECTIONS,
        check_bindable,
        run_server,
    )
    from streambed.server.app import create_app
    from streambed.server.build import MPD_NAME, verify_content

    head_timeout_s = _flag_or_env(
        args.head_timeout_s, "STREAMBED_HEAD_TIMEOUT_S", HEAD_TIMEOUT_S, _positive_float
    )
    body_timeout_s = _flag_or_env(
        args.body_timeout_s, "STREAMBED_BODY_TIMEOUT_S", BODY_TIMEOUT_S, _positive_float
    )
    max_connections = _flag_or_env(
        args.max_connections, "STREAMBED_MAX_CONNECTIONS", MAX_CONNECTIONS, _positive_int
    )
    if args.content is None:
        raise ConfigError("origin: --content DIR is required (or use 'streambed origin build')")
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: must be 0..65535")
    check_bindable(args.host, args.port)
    app = create_app(args.content)
    try:
        manifest, video = verify_content(args.content)
        log.info(
            "content %s: %d levels %s kbps, %d segments of %g s",
            args.content,
            manifest.num_levels,
            ",".join(map(str, video.bitrates_kbps)),
            manifest.num_segments,
            manifest.segment_duration_s,
        )
    except ContentError as exc:  # still servable: any files are, only the check failed
        log.warning("content check failed: %s", exc)
    log.info("MPD at http://%s:%d/%s", args.host, args.port, MPD_NAME)
    run_server(
        app,
        args.host,
        args.port,
        args.access_log,
        head_timeout_s=head_timeout_s,
        body_timeout_s=body_timeout_s,
        max_connections=max_connections,
    )
    return 0
