"""``streambed link``: run any command behind an emulated link, as mm-link does.

    streambed link [--kind auto|mahimahi|netns|proxy] [--delay-ms D] [--uplink TRACE]
                   [--queue-packets N] [--queue-bytes N] [--port P ...] DOWNLINK_TRACE -- COMMAND ...

The exit status is the command's (128 + N if signal N killed it); 2 for a Streambed error.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from streambed.core.errors import ConfigError
from streambed.core.linkkinds import AUTO, CHOICES, READY, TRACE_STARTS, trace_start_help
from streambed.emulation.link import LinkSpec, start_behind_link


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "link",
        help="run a command behind a trace-driven network link (like mm-link)",
        description=(
            "Run COMMAND behind an emulated link that replays DOWNLINK_TRACE (Pensieve "
            "'time_s Mbit/s' or Mahimahi 'ms per 1504-byte opportunity'; the trace repeats). "
            "Inside, $STREAMBED_HOST is the host's address: a server the host binds on 0.0.0.0 "
            "answers there at $STREAMBED_PORT_<P> for each --port P. Kinds: mahimahi "
            "(mm-delay + mm-link), netns (Streambed's packet shaper in a network namespace; "
            "root), proxy (userspace relay pacing byte streams; no privileges, --port needed); "
            "auto takes the first available in that order."
        ),
        epilog="example: streambed link --delay-ms 40 trace.txt -- curl $STREAMBED_HOST:8000/",
    )
    p.add_argument("--kind", choices=CHOICES, default=AUTO, help="link kind (default: auto)")
    p.add_argument(
        "--delay-ms", type=float, default=0.0, help="one-way delay in each direction (default 0)"
    )
    p.add_argument("--uplink", type=Path, help="uplink trace (default: the downlink trace)")
    p.add_argument(
        "--trace-start", choices=TRACE_STARTS, default=READY, help=trace_start_help(READY)
    )
    p.add_argument(
        "--queue-packets", type=int, help="drop-tail queue limit in packets (default unbounded)"
    )
    p.add_argument("--queue-bytes", type=int, help="drop-tail queue limit in bytes")
    p.add_argument(
        "--port",
        type=int,
        action="append",
        default=[],
        metavar="P",
        help="host port the command uses, exported as STREAMBED_PORT_<P> (repeatable; "
        "the proxy relays only these)",
    )
    p.add_argument("--stats", type=Path, help="write the link's counters as JSON to this file")
    p.add_argument("downlink", metavar="DOWNLINK_TRACE", type=Path, help="downlink trace file")
    p.add_argument(
        "link_command", metavar="COMMAND", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS ...]"
    )
    p.set_defaults(func=run)


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run(args: argparse.Namespace) -> int:
    command = list(args.link_command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ConfigError("no COMMAND given: streambed link TRACE -- COMMAND [ARGS ...]")
    spec = LinkSpec(
        downlink=args.downlink,
        uplink=args.uplink,
        delay_ms=args.delay_ms,
        queue_packets=args.queue_packets,
        queue_bytes=args.queue_bytes,
        kind=args.kind,
        ports=tuple(args.port),
        trace_start=args.trace_start,
    )
    # A SIGTERM to streambed must still tear the link down (namespace, devices, command).
    previous = signal.signal(signal.SIGTERM, _raise_exit)
    try:
        with start_behind_link(spec, command) as linked:
            try:
                status = linked.wait()
            except KeyboardInterrupt:
                # The command got the terminal's SIGINT too; let it finish, then report it.
                status = linked.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.stats is not None:
        stats = linked.stats
        payload = asdict(stats) if stats is not None else {"kind": linked.kind}
        try:
            args.stats.write_text(json.dumps(payload, indent=1) + "\n")
        except OSError as exc:
            raise ConfigError(f"--stats {args.stats}: cannot write: {exc.strerror}") from None
    sys.stdout.flush()
    return status
