"""``streambed play``: one headless DASH session against an origin and the decision service.

A thin layer over :func:`streambed.player.session.play_session` (which defines the semantics and the
files). Exit status: 0 the session finished; 3 it gave up on the origin (the reason is in
``session.json`` and on stderr); 4 it finished but not one decision came from the decision
service (local BBA decided every chunk: a wrong ``--abr`` or a service down throughout); 2 a
usage error; 130/143 interrupted by SIGINT/SIGTERM (files written). The decision service
being down never stops a session.

With ``--browser`` the session is played by dash.js in headless Chromium
(:func:`streambed.player.browser.play_browser`; same files and exit statuses; ``PlayerConfig.player``
``dashjs``, which ``play_argv`` passes on). With ``--trace``, the same command is re-run
behind an emulated link replaying the trace (:func:`streambed.emulation.link.run_behind_link`; Chromium
then runs behind it too, in the netns kind inside the namespace); inside, ``--via-link``
re-points the URLs at the host as seen through the link (``$STREAMBED_HOST`` and
``$STREAMBED_PORT_<P>``), so the origin and the decision service must run on this host (on
0.0.0.0 for the netns and mahimahi kinds).
:func:`streambed.player.argv.play_argv` gives that command line for any ``PlayerConfig`` (for an
orchestrator that starts many sessions behind links itself).

``--install-browser`` (alone, like ``--help``) installs what ``--browser`` needs outside a
checkout: :func:`streambed.server.web.install_web`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from streambed.abr_service.qoe import QOE_NAMES
from streambed.core.errors import ConfigError
from streambed.player.argv import FLAGS, play_argv

if TYPE_CHECKING:
    from streambed.player.session import PlayerConfig

log = logging.getLogger(__name__)


class InstallBrowser(argparse.Action):
    """``--install-browser``: install the player's npm packages, say where, and exit (the
    other options are not needed, as with ``--help``)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        from streambed.core.errors import StreambedError
        from streambed.server.web import WEB_DIR_ENV, install_web, installed_web_dir

        target = installed_web_dir()
        print(f"streambed play: installing the dash.js player in {target} (npm ci)", flush=True)
        try:
            install_web(target)
        except StreambedError as exc:
            parser.exit(2, f"streambed play: error: {exc}\n")
        print(
            f"streambed play: the dash.js player is installed in {target}: play --browser and "
            f"origin use it (with ${WEB_DIR_ENV}={target} if you set it); Chromium is the "
            "system's (apt-get install chromium, or $STREAMBED_CHROMIUM)"
        )
        parser.exit(0)


def register(subparsers: Any) -> None:
    from streambed.abr_service.video import FIRST_QUALITY
    from streambed.core.linkkinds import AUTO, FIRST_PACKET, TRACE_STARTS, trace_start_help
    from streambed.core.linkkinds import CHOICES as LINK_KINDS

    p = subparsers.add_parser(
        "play",
        help="play a DASH session headlessly, asking the decision service for every chunk",
        description=(
            "Stream the MPD chunk by chunk in real time over HTTP: ask POST ABR/decide for each "
            "chunk's level (local BBA when the service is slow, down or answers nonsense), "
            "download it, keep a real-time playout buffer, and log every chunk. Writes "
            "LOG/chunks.jsonl (one JSON line per chunk, as it happens), LOG/pensieve.log "
            "(Pensieve's format) and LOG/session.json (outcome and totals). Exit status: 0 "
            "done, 3 gave up on the origin, 4 played to the end but no decision ever came "
            "from the service (every chunk local BBA: check --abr), 2 usage error, 130/143 "
            "interrupted."
        ),
        epilog=(
            "example: streambed play --mpd http://127.0.0.1:8080/manifest.mpd "
            "--abr http://127.0.0.1:8333 --algorithm bba --log out/play1"
        ),
    )
    p.add_argument("--mpd", required=True, metavar="URL", help="the MPD's http(s) URL")
    p.add_argument(
        "--abr", required=True, metavar="URL", help="decision service base URL (POST URL/decide)"
    )
    p.add_argument(
        "--log",
        required=True,
        type=Path,
        metavar="DIR",
        help="directory for chunks.jsonl, pensieve.log and session.json (created; files replaced)",
    )
    p.add_argument("--algorithm", help="algorithm asked of the service (default: the service's)")
    p.add_argument("--video", metavar="NAME", help="video name at the service (default: its own)")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="algorithm parameter sent to the service, e.g. reservoir_s=8 (repeatable)",
    )
    p.add_argument(
        "--session-id", help="session id at the service and in the log (default: play-<random>)"
    )
    p.add_argument("--run-id", default="", help="tag written into every chunk record")
    p.add_argument(
        "--trace-name",
        default=None,
        metavar="NAME",
        help="trace name written into every record (default: the --trace file's stem, or empty)",
    )
    p.add_argument(
        "--buffer-cap-s",
        type=float,
        default=60.0,
        help="wait (in 500 ms steps) before the next request while the buffer is above this "
        "(default 60)",
    )
    p.add_argument(
        "--sleep-step-s",
        type=float,
        default=0.5,
        help="the wait above the cap lasts a whole number of these steps (default 0.5)",
    )
    p.add_argument(
        "--decision-timeout-s",
        type=float,
        default=1.0,
        help="limit on each phase of a decision request; beyond it BBA decides locally "
        "(default 1.0)",
    )
    p.add_argument(
        "--first-quality",
        type=int,
        default=FIRST_QUALITY,
        help="level of chunk 0 when the service cannot be asked (default 1, as the service)",
    )
    p.add_argument("--max-chunks", type=int, help="stop after N chunks (default: all)")
    p.add_argument(
        "--qoe",
        default="lin",
        choices=QOE_NAMES,
        help="QoE metric logged (default lin; ssim and vmaf read the video.json beside the MPD)",
    )
    p.add_argument(
        "--attempts", type=int, default=3, help="attempts per download before giving up (default 3)"
    )
    p.add_argument(
        "--retry-backoff-s",
        type=float,
        default=0.25,
        help="wait before the 2nd attempt, doubled after (default 0.25)",
    )
    p.add_argument(
        "--origin-timeout-s",
        type=float,
        default=30.0,
        help="limit on each phase of an origin request, e.g. no byte for this long (default 30)",
    )
    p.add_argument(
        "--browser",
        action="store_true",
        help="play with dash.js in headless Chromium (the origin's /player.html, Streambed's "
        "remote ABR rule) instead of the headless player; same logs, with the rendered level "
        "and dropped frames per chunk (needs Node.js, Chromium and the npm packages: "
        "scripts/setup.sh in a checkout, else --install-browser)",
    )
    p.add_argument(
        "--install-browser",
        action=InstallBrowser,
        help="install what --browser needs outside a checkout, then exit: copy the player's "
        "page, rule and driver to $STREAMBED_WEB_DIR (default ~/.cache/streambed/web-VERSION) "
        "and npm ci its pinned dash.js and playwright-core there (needs Node.js and npm; no "
        "browser is downloaded: the system's Chromium is driven); the origin and play "
        "--browser find it there",
    )
    link = p.add_argument_group("emulated link (needs the emulation package)")
    link.add_argument(
        "--trace",
        type=Path,
        help="replay this trace (Pensieve or Mahimahi format) on a link the session runs behind",
    )
    link.add_argument(
        "--link", choices=LINK_KINDS, default=AUTO, help="kind of link for --trace (default auto)"
    )
    link.add_argument(
        "--delay-ms",
        type=float,
        default=0.0,
        help="one-way delay added in each direction of the link (default 0)",
    )
    link.add_argument(
        "--trace-start",
        choices=TRACE_STARTS,
        default=FIRST_PACKET,
        help=trace_start_help(FIRST_PACKET),
    )
    link.add_argument(
        "--via-link",
        action="store_true",
        help="(set by --trace for the re-run behind the link) re-point the URLs at the host "
        "through $STREAMBED_HOST and $STREAMBED_PORT_<P>",
    )
    p.set_defaults(func=run)


def _params(items: list[str]) -> dict[str, str | int | float | bool] | None:
    params: dict[str, str | int | float | bool] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param {item!r}: want KEY=VALUE, e.g. reservoir_s=8")
        params[key.strip()] = value.strip()
    return params or None


def config_from_args(args: argparse.Namespace) -> PlayerConfig:
    from streambed.player.session import PlayerConfig

    values = {field: getattr(args, flag) for flag, field in FLAGS.items()}
    if values["trace"] is None:
        values["trace"] = args.trace.stem if args.trace is not None else ""
    if args.via_link:
        from streambed.emulation.link import via_link_url

        values["mpd_url"] = via_link_url(values["mpd_url"])
        values["abr_url"] = via_link_url(values["abr_url"])
    player = "dashjs" if args.browser else "streambed"
    return PlayerConfig(**values, params=_params(args.param), player=player)


def _run_behind_link(args: argparse.Namespace) -> int:
    try:
        from streambed.emulation.link import (
            LinkSpec,
            link_ports,
            outside_url,
            resolve_kind,
            run_behind_link,
        )
    except ImportError as exc:
        raise ConfigError(f"--trace needs the emulation package ({exc})") from None
    if args.via_link:
        raise ConfigError("--trace and --via-link do not go together")
    config = config_from_args(args)  # usage errors here, not from behind the link
    kind = resolve_kind(args.link)
    config = replace(
        config, mpd_url=outside_url(config.mpd_url, kind), abr_url=outside_url(config.abr_url, kind)
    )
    spec = LinkSpec(
        downlink=args.trace,
        delay_ms=args.delay_ms,
        kind=kind,
        ports=link_ports([config.mpd_url, config.abr_url]),
        trace_start=args.trace_start,
    )
    log.info("playing behind a %s link replaying %s", args.link, args.trace)
    # As root, a mahimahi link runs the player as an unprivileged user: it writes the log there.
    argv = play_argv(config)  # needs a log_dir
    return run_behind_link(spec, argv, writable=[config.log_dir] if config.log_dir else [])


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    from streambed.player.session import Terminated

    raise Terminated()


def run(args: argparse.Namespace) -> int:
    from streambed.player.session import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, play_session

    config = None if args.trace is not None else config_from_args(args)
    # SIGTERM unwinds like Ctrl-C: the session finishes its files, a link is torn down.
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        if config is None:
            return _run_behind_link(args)
        result = play_session(config)
    except Terminated:
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary = result.summary
    metrics = summary.get("metrics") or {}
    qoe = metrics.get("qoe")
    print(
        f"session {result.session_id}{' (dash.js)' if config.player == 'dashjs' else ''} "
        f"{result.status}: {summary['chunks']} of "
        f"{summary['num_chunks']} chunks, qoe {'n/a' if qoe is None else f'{qoe:.4f}'}, "
        f"rebuffer {summary['rebuffer_s_total']:.3f} s, fallbacks {summary['fallbacks']}"
        + (f", reason: {result.reason}" if result.reason else "")
        + f"; logs in {config.log_dir}"
    )
    if not result.ok:
        print(f"streambed play: {result.reason}", file=sys.stderr)
    return result.exit_code
