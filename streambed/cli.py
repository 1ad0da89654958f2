"""The ``streambed`` console script: one parser, one subcommand per capability.

Each capability module exposes ``register(subparsers)``, which adds its parser and sets
``func`` to the callable that runs it. User errors (``StreambedError``) become one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from streambed import __version__
from streambed.errors import StreambedError


def build_parser() -> argparse.ArgumentParser:
    from abr_service import serve_cli
    from emulation import link_cli
    from player import cli as play_cli
    from server import cli as origin_cli
    from streambed import demo
    from traces import cli as traces_cli
    from trainer import eval_cli, train_cli

    parser = argparse.ArgumentParser(
        prog="streambed",
        description="Trace-driven ABR streaming testbed (simulation, algorithms, reports).",
    )
    parser.add_argument("--version", action="version", version=f"streambed {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (
        eval_cli,
        train_cli,
        serve_cli,
        origin_cli,
        play_cli,
        traces_cli,
        link_cli,
        demo,
    ):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        result = args.func(args)
    except StreambedError as exc:
        print(f"streambed {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
