"""The playout buffer in real time: seconds of content, drained by the session clock.

Playback starts when the first chunk is appended. From then on the buffer loses one second of
content per second of clock, whatever the player is doing (asking for a decision, downloading,
retrying); when it is empty the video stalls, and that time accumulates as stall until the
next chunk is appended. Before playback starts the buffer is empty and every second is start-up
stall, so the first chunk's stall is the time from the buffer's creation to its arrival, as the
simulator's first chunk (which starts with an empty buffer) has its whole delay as stall.
"""

from __future__ import annotations


class PlaybackBuffer:
    def __init__(self, now_s: float) -> None:
        self._level_s = 0.0
        self._at_s = now_s
        self._stall_s = 0.0
        self.playing = False
        self.started_at_s: float | None = None
        """Session clock when playback started (the first append)."""

    def level_at(self, now_s: float) -> float:
        """Buffer at ``now_s`` (not before the last update), seconds; changes nothing."""
        if not self.playing:
            return 0.0
        return max(self._level_s - (now_s - self._at_s), 0.0)

    def advance(self, now_s: float) -> float:
        """Drain the buffer up to ``now_s``, adding any stall; the buffer then, seconds."""
        elapsed = max(now_s - self._at_s, 0.0)
        if self.playing:
            drained = min(self._level_s, elapsed)
            self._level_s -= drained
            self._stall_s += elapsed - drained
        else:
            self._stall_s += elapsed
        self._at_s = max(now_s, self._at_s)
        return self._level_s

    def append(self, now_s: float, chunk_s: float) -> float:
        """Add a chunk of ``chunk_s`` seconds that arrived at ``now_s``; the stall since the
        previous append (seconds), which is then reset."""
        self.advance(now_s)
        stall, self._stall_s = self._stall_s, 0.0
        self._level_s += chunk_s
        if not self.playing:
            self.playing = True
            self.started_at_s = now_s
        return stall
