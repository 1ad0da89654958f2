"""The kinds of emulated link, named once (the links themselves are ``streambed.emulation.link``).

On the ground floor so that the player's CLI offers ``--link`` without the emulation package.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

AUTO = "auto"
KINDS: tuple[str, ...] = ("mahimahi", "netns", "proxy")
"""Every kind, in the order ``auto`` tries them."""
CHOICES: tuple[str, ...] = (AUTO, *KINDS)
"""What ``--link``/``--kind`` accept."""
NAMESPACED: tuple[str, ...] = ("mahimahi", "netns")
"""Kinds that run the command in a network namespace of its own (the host is then
``$STREAMBED_HOST``, not 127.0.0.1)."""

READY = "ready"
FIRST_PACKET = "first-packet"
TRACE_STARTS: tuple[str, ...] = (FIRST_PACKET, READY)
"""When a link's trace time 0 is: the command's first packet (netns) or connection (proxy),
i.e. the session's first request, so that every player and every repeat sees the trace from
the same instant (the default); or ``ready``, when the link is up, as mm-link, whose trace
starts before it forks the command (mahimahi is always ``ready``)."""


def trace_start_help(default: str) -> str:
    """``--trace-start``'s help, saying which is the default."""
    return (
        "trace time 0: first-packet (the session's first request) or ready (when the link "
        f"comes up, as mm-link; mahimahi is always ready); default {default}"
    )


def address_of(port: int, env: Mapping[str, str] | None = None) -> tuple[str, int]:
    """Where the host's ``port`` answers from behind a link: ``(STREAMBED_HOST, port')``.

    For commands running behind a link (``streambed.emulation.link`` exports both variables);
    outside one it is ``("127.0.0.1", port)``. Here so that the player floor reads it too.
    """
    env = os.environ if env is None else env
    host = env.get("STREAMBED_HOST", "127.0.0.1")
    return host, int(env.get(f"STREAMBED_PORT_{port}", port))
