"""Runs decisions in worker threads, so a slow one never blocks the event loop.

A session's requests run one at a time, in arrival order (its algorithm's state is not
thread-safe, and a player's requests must be answered in order); other sessions go on in other
threads. At most ``max_pending`` decisions run or wait at once: beyond it, :class:`Overloaded`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from streambed.abr_service.app.errors import Overloaded

T = TypeVar("T")


class DecisionRunner:
    def __init__(self, threads: int, max_pending: int) -> None:
        self.limiter = anyio.CapacityLimiter(threads)
        self.max_pending = max_pending
        self.pending = 0
        self._locks: dict[str, tuple[anyio.Lock, int]] = {}

    async def run(self, session_id: str, fn: Callable[[], T]) -> T:
        if self.pending >= self.max_pending:
            raise Overloaded(
                f"{self.pending} decisions are running or queued (--max-pending-decisions); "
                "retry shortly",
                retry_after_s=1,
            )
        self.pending += 1
        lock, users = self._locks.get(session_id) or (anyio.Lock(), 0)
        self._locks[session_id] = (lock, users + 1)
        try:
            async with lock:
                return await anyio.to_thread.run_sync(fn, limiter=self.limiter)
        finally:
            self.pending -= 1
            lock, users = self._locks[session_id]
            if users <= 1:
                del self._locks[session_id]
            else:
                self._locks[session_id] = (lock, users - 1)
