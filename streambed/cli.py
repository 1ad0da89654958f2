"""The ``streambed`` console script: one parser, one subcommand per capability.

Each command has its module in :mod:`streambed.commands` (the top floor), which exposes
``register(subparsers)``: it adds the command's parser and sets ``func`` to the callable that
runs it. A command module imports argparse-level things only; heavy libraries (torch,
matplotlib, FastAPI, pydantic) are imported by the run functions. User errors (``StreambedError``) become one line on
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

# Subcommand -> (the module whose ``register(subparsers)`` adds it, its one-line help), in the
# order --help lists them. ``streambed --help`` is built from this table alone, and
# ``streambed X ...`` imports only X's module: a command such as ``streambed play``, run once per
# emulated session, must start and exit fast. The helps must match the modules' own
# (tests/test_cli_start.py checks).
COMMANDS: dict[str, tuple[str, str]] = {
    "eval": (
        "streambed.commands.eval",
        "evaluate ABR algorithms on a trace set in the simulator",
    ),
    "algorithms": (
        "streambed.commands.algorithms",
        "list the ABR algorithms (built-in and plug-ins) and their parameters",
    ),
    "train": (
        "streambed.commands.train",
        "train a policy (ppo, a3c, dqn, imitate) on the batched simulator",
    ),
    "serve": (
        "streambed.commands.serve",
        "run the ABR decision service (POST /decide, Pensieve's POST /, models)",
    ),
    "origin": (
        "streambed.commands.origin",
        "serve DASH content over HTTP (and build it: 'origin build')",
    ),
    "play": (
        "streambed.commands.play",
        "play a DASH session headlessly, asking the decision service for every chunk",
    ),
    "traces": (
        "streambed.commands.traces",
        "convert, generate and summarise network traces",
    ),
    "link": (
        "streambed.commands.link",
        "run a command behind a trace-driven network link (like mm-link)",
    ),
    "emulate": (
        "streambed.commands.emulate",
        "run real sessions of ABR algorithms over a trace set behind emulated links",
    ),
    "calibrate": (
        "streambed.commands.calibrate",
        "fit the simulator's rtt and payload factor to an emulation; report the QoE gap",
    ),
    "report": (
        "streambed.commands.report",
        "write a self-contained HTML report of eval/emulate output directories",
    ),
    "demo": (
        "streambed.commands.demo",
        "generate traces and real content, emulate BBA, RobustMPC and PPO, write a report",
    ),
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


def build_parser(command: str | None = None, *, listing: bool = False) -> argparse.ArgumentParser:
    """The whole CLI's parser; with ``command`` (a subcommand's name), only that subcommand is
    registered, so only its module is imported. With ``listing``, every subcommand is named with
    its help from :data:`COMMANDS` and no module is imported: enough for ``streambed --help``,
    ``--version`` and an unknown command's error."""
    parser = argparse.ArgumentParser(
        prog="streambed",
        description="Trace-driven ABR streaming testbed (simulation, algorithms, reports).",
    )
    parser.add_argument("--version", action="version", version=f"streambed {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if listing:
        for name, (_, help_text) in COMMANDS.items():
            sub.add_parser(name, help=help_text, add_help=False)
        return parser
    names = [command] if command is not None and command in COMMANDS else list(COMMANDS)
    for name in names:
        importlib.import_module(COMMANDS[name][0]).register(sub)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names: its first word that is not an option (the top-level
    options take no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    command = _command_of(words)
    parser = build_parser(command, listing=command not in COMMANDS)
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
