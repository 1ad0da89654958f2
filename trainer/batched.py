"""The chunk-level simulator, batched: thousands of sessions stepped at once with numpy.

Same semantics and constants as :class:`streambed.trainer.simulator.Simulator` (tests check agreement to
1e-9); downloads invert each trace's cumulative deliverable bytes (:class:`TraceBank`) instead
of looping over intervals. Every session has its own trace, position, buffer and chunk
counter; sessions that reach the end of the video are restarted by the caller with
:meth:`BatchedSimulator.reset` (the trainer restarts them all together). ``obs`` holds every
session's observation, built by ``observation`` (:mod:`streambed.abr_service.observation`; Pensieve's by
default) after each step.

Bandwidth augmentation: a session reset with a ``bandwidth_scale`` k sees its trace's bandwidth
times k. A chunk of S bytes moves the trace as S / k bytes would (so the trace time it takes is
divided by k); the observation, ``chunk_bytes`` and the reward see the real S and the real
resulting delay, and the round trip, the noise and the sleeps are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from streambed.abr_service.observation import PENSIEVE, Observation
from streambed.abr_service.qoe import QoEMetric
from streambed.abr_service.video import Video
from streambed.core.errors import ConfigError
from streambed.traces import Trace
from streambed.trainer.simulator import MODES, SimConfig, buffer_after_download, check_traces
from streambed.trainer.tracebank import TraceBank


@dataclass(frozen=True)
class BatchStep:
    """Arrays of shape (N,) (``next_chunk_bytes``: (N, levels)), fields as in ChunkResult."""

    chunk_index: np.ndarray
    quality: np.ndarray
    chunk_bytes: np.ndarray
    delay_s: np.ndarray
    trace_s: np.ndarray
    sleep_s: np.ndarray
    rebuffer_s: np.ndarray
    buffer_s: np.ndarray
    chunks_left: np.ndarray
    end_of_video: np.ndarray
    sizes_by_chunk: np.ndarray = field(repr=False, compare=False)
    """Sizes in bytes by (chunk, level), a zero row past the last entry."""

    @property
    def next_chunk_bytes(self) -> np.ndarray:
        # Gathered on demand: the training loop never reads it.
        return self.sizes_by_chunk[self.chunk_index + 1]

    def reward(self, qoe: QoEMetric, previous_quality: np.ndarray) -> np.ndarray:
        """Each session's reward for this step: the QoE of the chunk just downloaded after one
        at ``previous_quality`` (shape (N,)), as the trainers, their validation and
        :class:`~streambed.trainer.vector_env.ABRVectorEnv` score it."""
        return qoe.transition(self.quality, previous_quality, self.rebuffer_s, self.chunk_index)


class BatchedSimulator:
    """``num_sessions`` independent sessions over one list of traces."""

    def __init__(
        self,
        traces: Sequence[Trace],
        video: Video,
        num_sessions: int,
        config: SimConfig | None = None,
        mode: str = "train",
        rng: np.random.Generator | None = None,
        observe: bool = True,
        obs_dtype: type = np.float64,
        observation: Observation | None = None,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"unknown simulator mode {mode!r}; choose test or train")
        if num_sessions < 1:
            raise ConfigError(f"num_sessions must be >= 1, got {num_sessions}")
        check_traces(traces)
        self.config = config or SimConfig()
        self.video = video
        self.mode = mode
        self.rng = rng if rng is not None else np.random.default_rng()
        self.bank = TraceBank(traces, self.config.payload_factor)
        self.n = num_sessions
        # One zero column past the last entry: "next chunk" after the end reads zeros.
        self._sizes = video.padded_sizes
        self._sizes_by_chunk = np.ascontiguousarray(self._sizes.T)
        self.trace = np.zeros(num_sessions, np.int64)
        self.tau = np.zeros(num_sessions)
        self.line = np.zeros(num_sessions, np.int64)  # global index of tau's interval
        self.buffer_s = np.zeros(num_sessions)
        self.chunk = np.zeros(num_sessions, np.int64)
        self.bandwidth_scale: np.ndarray | None = None
        """Each session's bandwidth factor k, shape (N,); None while every session's is 1 (the
        fast path: no division)."""
        self.observation = observation if observation is not None else PENSIEVE
        shape = (num_sessions, *self.observation.shape)
        self.obs: np.ndarray | None = np.zeros(shape, dtype=obs_dtype) if observe else None
        self.reset()

    def reset(
        self,
        mask: np.ndarray | None = None,
        trace: np.ndarray | None = None,
        start_line: np.ndarray | None = None,
        bandwidth_scale: np.ndarray | float | None = None,
    ) -> None:
        """Restart the sessions in ``mask`` (all by default).

        Training mode draws each a random trace and start line unless given; test mode starts
        at the first line of ``trace`` (default: session i plays trace i modulo the count).
        ``bandwidth_scale``: each restarted session's bandwidth factor k (positive; one per
        restarted session, or one for all of them); not given, they play at k = 1.
        """
        idx = np.arange(self.n) if mask is None else np.flatnonzero(mask)
        if trace is None:
            if self.mode == "train":
                trace = self.rng.integers(len(self.bank), size=len(idx))
            else:
                trace = idx % len(self.bank)
        trace = np.asarray(trace, np.int64)
        lengths = self.bank.stop[trace] - self.bank.start[trace]
        if start_line is None:
            if self.mode == "train":
                start_line = (self.rng.random(len(idx)) * (lengths - 1)).astype(np.int64)
            else:
                start_line = np.zeros(len(idx), np.int64)
        start_line = np.asarray(start_line, np.int64)
        self.trace[idx] = trace
        self.tau[idx] = self.bank.time[self.bank.start[trace] + start_line]
        self.line[idx] = self.bank.start[trace] + start_line + 1
        self.buffer_s[idx] = 0.0
        self.chunk[idx] = 0
        if self.obs is not None:
            self.obs[idx] = 0.0
        self._set_scale(idx, bandwidth_scale)

    def _set_scale(self, idx: np.ndarray, scale: np.ndarray | float | None) -> None:
        if scale is None:
            if self.bandwidth_scale is not None:
                self.bandwidth_scale[idx] = 1.0
        else:
            scale = np.broadcast_to(np.asarray(scale, np.float64), idx.shape)
            if not (np.isfinite(scale).all() and (scale > 0).all()):
                raise ConfigError("bandwidth_scale must be positive and finite")
            if self.bandwidth_scale is None:
                self.bandwidth_scale = np.ones(self.n)
            self.bandwidth_scale[idx] = scale
        if self.bandwidth_scale is not None and (self.bandwidth_scale == 1.0).all():
            self.bandwidth_scale = None  # back to the fast path

    def _round_trip(self, mean_s: float) -> float | np.ndarray:
        jitter = self.config.jitter_s
        if jitter == 0:
            return mean_s
        return np.maximum(0.0, mean_s + self.rng.normal(0.0, jitter, size=self.n))

    def step(self, quality: np.ndarray, noise: np.ndarray | None = None) -> BatchStep:
        """Download every session's next chunk at ``quality`` (shape (N,))."""
        cfg = self.config
        quality = np.asarray(quality, np.int64)
        chunk = self.chunk
        sizes = self._sizes[quality, chunk]
        tau, line = self.tau, self.line
        wait = None
        request: float | np.ndarray = cfg.rtt_s
        if cfg.wall:  # the wait, then the request's round trip, pass on the trace
            wait = np.where(chunk == 0, cfg.start_s, self._round_trip(cfg.decision_s))
            request = self._round_trip(cfg.rtt_s)
            tau = self.bank.advance_time(self.trace, tau, wait + request)
            line = self.bank.line_after(self.trace, tau)
        scale = self.bandwidth_scale
        moved = sizes if scale is None else sizes / scale  # k times the bandwidth: S/k bytes
        tau, trace_s, line = self.bank.advance_bytes(self.trace, tau, moved, line)

        delay = trace_s + request
        if noise is None and self.mode == "train":
            noise = self.rng.uniform(cfg.noise_low, cfg.noise_high, size=self.n)
        if noise is not None:
            delay = delay * noise

        rebuffer, buffer, sleep = buffer_after_download(
            self.buffer_s, delay if wait is None else delay + wait, self.video.chunk_s, cfg
        )
        slept = np.flatnonzero(sleep)
        if slept.size:
            trace = self.trace[slept]
            tau[slept] = self.bank.advance_time(trace, tau[slept], sleep[slept])
            line[slept] = self.bank.line_after(trace, tau[slept])
        self.tau = tau
        self.line = line
        self.buffer_s = buffer

        self.chunk = chunk + 1
        left = self.video.num_chunks - self.chunk
        if self.obs is not None:
            self.observation.update(
                self.obs, self.video, chunk, quality, buffer, sizes, delay, rebuffer
            )
        return BatchStep(
            chunk_index=chunk,
            quality=quality,
            chunk_bytes=sizes,
            delay_s=delay,
            trace_s=trace_s,
            sleep_s=sleep,
            rebuffer_s=rebuffer,
            buffer_s=buffer,
            chunks_left=left,
            end_of_video=left <= 0,
            sizes_by_chunk=self._sizes_by_chunk,
        )
