"""The command line's top floor: one module per ``streambed`` subcommand.

Each module exposes ``register(subparsers)`` (see :mod:`streambed.cli`) and stays light at
import time; nothing below this floor imports it.
"""
