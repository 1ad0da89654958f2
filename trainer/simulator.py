"""The chunk-level simulator, scalar: Pensieve's semantics, written to read like the definition.

A chunk of S bytes downloads over the trace from the current trace position: trace interval i,
from ``times[i-1]`` to ``times[i]`` at ``mbps[i]`` (the first line's bandwidth is never used),
delivers ``mbps[i] * 1e6 / 8 * duration * payload_factor`` bytes. The download's delay is the
trace time it took plus one round trip, multiplied in training mode by uniform noise in
``[noise_low, noise_high]`` (the round trip and the noise do not move the trace position).
The stall is ``max(delay - buffer, 0)``; the buffer loses the delay (not below 0) and gains the
chunk duration; a buffer over the cap is drained in whole ``drain_step_s`` sleeps during which
the trace advances. The trace loops at its end. Every constant is a :class:`SimConfig` field.

``SimConfig.faithful`` (``timing="wall"``) models what an emulated session spends instead:
before each request a wait (the decision's round trip; before chunk 0 the MPD, the first
decision and the init segment) and the request's round trip, during which the trace moves on;
the stall and the buffer count the wait as well as the delay.

Test mode plays each trace once from its beginning with no noise; training mode picks a random
trace and a random start line (Pensieve's ``randint(1, len)``) and applies the noise.
:mod:`streambed.trainer.batched` implements the same semantics for thousands of sessions at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streambed.abr_service.video import FIRST_QUALITY, Video
from streambed.core.errors import ConfigError, TraceError
from streambed.traces import Trace

PENSIEVE_TIMING = "pensieve"
WALL_TIMING = "wall"
TIMINGS = (PENSIEVE_TIMING, WALL_TIMING)
WIRE_PAYLOAD_FACTOR = (1504 / 1500) * (1448 / 1500)
"""Payload bytes a Mahimahi link delivers per byte of a Pensieve trace: the trace converts to
one opportunity per 1500 bytes, each opportunity carries 1504 bytes, and a full 1500-byte
IPv4 packet with TCP timestamps carries 1448 bytes of payload."""
_SERVICE_S = 0.025  # the hosts' own time per HTTP request, when the players measured none


@dataclass(frozen=True)
class SimConfig:
    """Link and player constants (defaults: Pensieve's and Pensieve-PPO's)."""

    rtt_s: float = 0.08
    """Round trip added to every chunk's delay, seconds."""
    payload_factor: float = 0.95
    """Share of the trace's throughput that carries payload (TCP/IP headers take the rest)."""
    noise_low: float = 0.9
    """Lower bound of the training-mode multiplicative delay noise."""
    noise_high: float = 1.1
    """Upper bound of the training-mode multiplicative delay noise."""
    buffer_cap_s: float = 60.0
    """Buffer above which the player sleeps instead of downloading, seconds."""
    drain_step_s: float = 0.5
    """Granularity of those sleeps, seconds."""
    default_quality: int = FIRST_QUALITY
    """Level of the first chunk of every session (Pensieve: 1, i.e. 750 kbps)."""
    timing: str = PENSIEVE_TIMING
    """``pensieve``: the round trip is added to each download's delay but the trace does not
    move during it, and nothing happens between chunks. ``wall``: what an emulated session
    spends (:meth:`faithful`): every second moves the trace, the request's round trip (the
    response's bytes reach the link ``rtt_s`` after the request) and the wait before each
    request (``decision_s``; ``start_s`` before chunk 0) too, and the buffer drains during
    the wait."""
    decision_s: float = 0.0
    """``wall``: the wait before each request after the first: the decision's round trip."""
    start_s: float = 0.0
    """``wall``: trace time before chunk 0's request (the MPD, the first decision, the init
    segment)."""
    jitter_s: float = 0.0
    """``wall``: standard deviation of each request's round trip (the decision's and the
    chunk's; normal, cut at 0), drawn from the simulator's generator: the emulation's timing
    noise, for ensembles of simulated sessions (a few milliseconds decide whether a stall lands
    before an outage)."""

    @classmethod
    def faithful(
        cls,
        delay_ms: float,
        decision_s: float | None = None,
        jitter_s: float = 0.0,
        **overrides: float,
    ) -> SimConfig:
        """The constants of an emulated session from its settings, not from a fit.

        Every HTTP request costs one round trip of the link (``2 * delay_ms``) plus the hosts'
        own time: the decision's round trip as the players measured it (``decision_s``;
        default the link's round trip plus 25 ms) is that cost, for the decision before each
        chunk and for the chunk's request alike (both are requests through the same link to
        servers on the host; on a loaded host the difference is tens of milliseconds). The
        payload share is a Mahimahi link's (:data:`WIRE_PAYLOAD_FACTOR`). Before chunk 0: the
        MPD on a new connection (its handshake and the request), the first decision on another
        (a handshake more) and the init segment. ``jitter_s``: the spread of the measured round
        trips (see the field)."""
        link_rtt = 2.0 * float(delay_ms) / 1000.0
        request = link_rtt + _SERVICE_S if decision_s is None else float(decision_s)
        values: dict[str, object] = {
            "rtt_s": request,
            "payload_factor": WIRE_PAYLOAD_FACTOR,
            "timing": WALL_TIMING,
            "decision_s": request,
            "start_s": (link_rtt + request) + (link_rtt + request) + request,
            "jitter_s": float(jitter_s),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def wall(self) -> bool:
        return self.timing == WALL_TIMING

    def __post_init__(self) -> None:
        if self.rtt_s < 0 or not 0 < self.payload_factor <= 1:
            raise ConfigError(
                f"bad link constants: rtt_s={self.rtt_s}, payload={self.payload_factor}"
            )
        if not 0 < self.noise_low <= self.noise_high:
            raise ConfigError(f"bad noise range [{self.noise_low}, {self.noise_high}]")
        if self.buffer_cap_s <= 0 or self.drain_step_s <= 0:
            raise ConfigError("buffer_cap_s and drain_step_s must be positive")
        if self.timing not in TIMINGS:
            raise ConfigError(f"timing {self.timing!r}: expected one of {', '.join(TIMINGS)}")
        if not (0 <= self.decision_s < 60 and 0 <= self.start_s < 600 and 0 <= self.jitter_s < 10):
            raise ConfigError(
                f"bad waits: decision_s={self.decision_s}, start_s={self.start_s}, "
                f"jitter_s={self.jitter_s} (seconds)"
            )


MODES = ("test", "train")


def buffer_after_download(
    buffer_s: np.ndarray, delay_s: np.ndarray, chunk_s: float, config: SimConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised buffer step: (stall, buffer after the chunk and any sleep, sleep)."""
    rebuffer = np.maximum(delay_s - buffer_s, 0.0)
    buffer = np.maximum(buffer_s - delay_s, 0.0) + chunk_s
    excess = buffer - config.buffer_cap_s
    sleep = np.where(excess > 0, np.ceil(excess / config.drain_step_s) * config.drain_step_s, 0.0)
    return rebuffer, buffer - sleep, sleep


@dataclass(frozen=True)
class ChunkResult:
    """One chunk download as the player experienced it."""

    chunk_index: int
    quality: int
    chunk_bytes: int
    wait_s: float
    """Before the request (``wall`` timing): the decision's round trip, or chunk 0's start."""
    buffer_before_s: float
    """Buffer when the request was sent."""
    delay_s: float
    """Request to last byte: trace time plus round trip (times noise in training mode)."""
    trace_s: float
    """Trace time the bytes took (what moved the trace position)."""
    sleep_s: float
    rebuffer_s: float
    buffer_s: float
    """Buffer after the chunk was appended and after any sleep."""
    chunks_left: int
    end_of_video: bool
    next_chunk_bytes: np.ndarray


def check_traces(traces: Sequence[Trace]) -> None:
    """Reject traces the simulator cannot play (no interval, or no bytes at all)."""
    if not traces:
        raise TraceError("no traces given")
    for trace in traces:
        where = trace.source or trace.name
        if len(trace.times_s) < 2:
            raise TraceError(f"{where}: a trace needs at least two lines")
        if trace.times_s[-1] <= trace.times_s[0]:
            raise TraceError(f"{where}: the trace lasts no time")
        if not (np.diff(trace.times_s) * trace.mbps[1:]).sum() > 0:
            raise TraceError(f"{where}: the trace delivers no bytes (bandwidth is zero throughout)")


class Simulator:
    """One simulated streaming session at a time over a list of traces."""

    def __init__(
        self,
        traces: Sequence[Trace],
        video: Video,
        config: SimConfig | None = None,
        mode: str = "test",
        rng: np.random.Generator | None = None,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"unknown simulator mode {mode!r}; choose test or train")
        check_traces(traces)
        self.traces = list(traces)
        self.video = video
        self.config = config or SimConfig()
        self.mode = mode
        self.rng = rng if rng is not None else np.random.default_rng()
        self.start_session(0 if mode == "test" else None)

    def start_session(self, trace_index: int | None = None, start_line: int | None = None) -> None:
        """Begin a session: test mode starts at the trace's first line, train mode anywhere."""
        if trace_index is None:
            trace_index = int(self.rng.integers(len(self.traces)))
        self.trace_index = trace_index
        trace = self.traces[trace_index]
        self._times = trace.times_s - trace.times_s[0]
        self._mbps = trace.mbps
        if start_line is None:
            start_line = (
                0 if self.mode == "test" else int(self.rng.integers(1, len(self._times))) - 1
            )
        self._ptr = start_line + 1
        self._last_time = float(self._times[start_line])
        self.buffer_s = 0.0
        self.chunk = 0

    def download(self, quality: int, noise: float | None = None) -> ChunkResult:
        """Download the next chunk at ``quality``; ``noise`` overrides the random delay factor."""
        cfg = self.config
        if not 0 <= quality < self.video.num_levels:
            raise ConfigError(
                f"quality {quality} outside the ladder 0..{self.video.num_levels - 1}"
            )
        size = int(self.video.chunk_bytes[quality, self.chunk])

        wait = 0.0
        request = cfg.rtt_s
        if cfg.wall:  # the wait, then the request's round trip, pass on the trace
            wait = cfg.start_s if self.chunk == 0 else self._round_trip(cfg.decision_s)
            request = self._round_trip(cfg.rtt_s)
            self._pass(wait + request)
        trace_s = 0.0
        sent = 0.0
        while True:
            throughput = self._mbps[self._ptr] * 1e6 / 8
            duration = self._times[self._ptr] - self._last_time
            payload = throughput * duration * cfg.payload_factor
            if sent + payload > size:
                fraction = (size - sent) / throughput / cfg.payload_factor
                trace_s += fraction
                self._last_time += fraction
                break
            sent += payload
            trace_s += duration
            self._last_time = self._times[self._ptr]
            self._advance_line()

        delay = trace_s + request
        if self.mode == "train" or noise is not None:
            if noise is None:
                noise = float(self.rng.uniform(cfg.noise_low, cfg.noise_high))
            delay *= noise

        cycle = wait + delay
        buffer_before = max(self.buffer_s - wait, 0.0)
        rebuffer = max(cycle - self.buffer_s, 0.0)
        self.buffer_s = max(self.buffer_s - cycle, 0.0) + self.video.chunk_s

        sleep = 0.0
        if self.buffer_s > cfg.buffer_cap_s:
            excess = self.buffer_s - cfg.buffer_cap_s
            sleep = float(np.ceil(excess / cfg.drain_step_s) * cfg.drain_step_s)
            self.buffer_s -= sleep
            self._pass(sleep)

        index = self.chunk
        self.chunk += 1
        left = self.video.num_chunks - self.chunk
        return ChunkResult(
            chunk_index=index,
            quality=quality,
            chunk_bytes=size,
            wait_s=wait,
            buffer_before_s=buffer_before,
            delay_s=delay,
            trace_s=trace_s,
            sleep_s=sleep,
            rebuffer_s=rebuffer,
            buffer_s=self.buffer_s,
            chunks_left=left,
            end_of_video=left <= 0,
            next_chunk_bytes=self.video.sizes_at(self.chunk),
        )

    def _round_trip(self, mean_s: float) -> float:
        jitter = self.config.jitter_s
        return mean_s if jitter == 0 else max(0.0, mean_s + float(self.rng.normal(0.0, jitter)))

    def _pass(self, seconds: float) -> None:
        """Move the trace position ``seconds`` on (time passes, no bytes counted)."""
        remaining = seconds
        while True:
            duration = self._times[self._ptr] - self._last_time
            if duration > remaining:
                self._last_time += remaining
                return
            remaining -= duration
            self._last_time = self._times[self._ptr]
            self._advance_line()

    def _advance_line(self) -> None:
        self._ptr += 1
        if self._ptr >= len(self._times):
            self._ptr = 1
            self._last_time = 0.0
