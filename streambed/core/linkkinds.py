"""The kinds of emulated link, named once (the links themselves are ``streambed.emulation.link``).

On the ground floor so that the player's CLI offers ``--link`` without the emulation package.
"""

from __future__ import annotations

AUTO = "auto"
KINDS: tuple[str, ...] = ("mahimahi", "netns", "proxy")
"""Every kind, in the order ``auto`` tries them."""
CHOICES: tuple[str, ...] = (AUTO, *KINDS)
"""What ``--link``/``--kind`` accept."""
NAMESPACED: tuple[str, ...] = ("mahimahi", "netns")
"""Kinds that run the command in a network namespace of its own (the host is then
``$STREAMBED_HOST``, not 127.0.0.1)."""
