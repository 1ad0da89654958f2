"""The ``streambed`` console script: one parser, one subcommand per capability.

Each capability module exposes ``register(subparsers)``, which adds its parser and sets
``func`` to the callable that runs it. User errors (``StreambedError``) become one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from streambed import __version__
from streambed.core.errors import ConfigError, StreambedError

# Subcommand -> the module whose ``register(subparsers)`` adds it, in the order --help lists
# them. Imported only when needed: most pull in heavy libraries (torch, matplotlib), and a
# command such as ``streambed play``, run once per emulated session, must start and exit fast.
COMMANDS: dict[str, str] = {
    "eval": "streambed.trainer.eval_cli",
    "algorithms": "streambed.abr_service.algorithms_cli",
    "train": "streambed.trainer.train_cli",
    "serve": "streambed.abr_service.serve_cli",
    "origin": "streambed.server.cli",
    "play": "streambed.player.cli",
    "traces": "streambed.traces.cli",
    "link": "streambed.emulation.link_cli",
    "emulate": "streambed.emulation.emulate_cli",
    "calibrate": "streambed.emulation.calibrate_cli",
    "report": "streambed.reports.report_cli",
    "demo": "streambed.demo",
}


def comma_list(text: str, flag: str) -> list[str]:
    """The names of a comma-separated flag value; ``ConfigError`` (one line) for an empty name
    (``bba,,rb``, a comma at either end) or a name given twice."""
    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise ConfigError(f"{flag} {text!r}: empty name (a doubled comma or one at either end)")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"{flag} {text!r}: {', '.join(twice)} given more than once")
    return names


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI's parser; with ``command`` (a subcommand's name), only that subcommand is
    registered, so only its module is imported."""
    parser = argparse.ArgumentParser(
        prog="streambed",
        description="Trace-driven ABR streaming testbed (simulation, algorithms, reports).",
    )
    parser.add_argument("--version", action="version", version=f"streambed {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    names = [command] if command is not None and command in COMMANDS else list(COMMANDS)
    for name in names:
        importlib.import_module(COMMANDS[name]).register(sub)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names: its first word that is not an option (the top-level
    options take no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_of(words))
    args = parser.parse_args(words)
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
