"""Helpers shared by the tests that run commands behind netns links."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable

from streambed.emulation import netns


def remove_namespaces_of(pids: Iterable[int]) -> list[str]:
    """Remove the netns links (``streambed-PID-K``) that the processes ``pids`` left behind,
    killing what still runs in them; return their names (a test asserts there were none)."""
    prefixes = tuple(f"{netns.NETNS_PREFIX}{pid}-" for pid in pids)
    left = [name for name in netns.list_namespaces() if prefixes and name.startswith(prefixes)]
    for name in left:
        netns.kill_namespace_processes(name)
        subprocess.run(["ip", "netns", "del", name], check=False)
    return left
