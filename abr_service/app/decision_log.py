"""The per-session decision logs, appended by one background thread.

A decision hands its line to a bounded queue and goes on; the disk never slows a decision, and
a disk slower than the decisions loses lines (counted and logged) rather than memory.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import defaultdict
from pathlib import Path

log = logging.getLogger(__name__)

MAX_QUEUED_LINES = 10_000
_BATCH = 1000


class DecisionLog:
    def __init__(self, log_dir: Path, max_queued: int = MAX_QUEUED_LINES) -> None:
        self.log_dir = log_dir
        self.dropped = 0
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue(max_queued)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    def write(self, session_id: str, line: str) -> None:
        """Queue one JSON line for ``SESSION_ID.jsonl``; drop it when the queue is full."""
        try:
            self._queue.put_nowait((session_id, line))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "decision log %s is behind: %d lines dropped", self.log_dir, self.dropped
                )

    def flush(self) -> None:
        """Wait until every queued line is written."""
        self._queue.join()

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then stop the thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < _BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            lines: dict[str, list[str]] = defaultdict(list)
            for item in batch:
                if item is not None:
                    lines[item[0]].append(item[1])
            for session_id, texts in lines.items():
                try:
                    with open(self.log_dir / f"{session_id}.jsonl", "a") as fh:
                        fh.write("".join(t + "\n" for t in texts))
                except OSError as exc:
                    log.error("decision log %s: %s", self.log_dir, exc)
            for _ in batch:
                self._queue.task_done()
            if None in batch:
                return
