"""The chunk-level simulator: hand-computed answers, and scalar/batched agreement."""

from __future__ import annotations

import numpy as np
import pytest

from streambed.abr_service.qoe import make_qoe
from streambed.abr_service.video import Video, generate_video
from streambed.core.errors import ConfigError, TraceError
from streambed.traces import SynthParams, Trace, constant_trace, generate_trace, step_trace
from streambed.trainer.batched import BatchedSimulator
from streambed.trainer.simulator import SimConfig, Simulator

# 1 Mbit/s carries 1e6 / 8 * 0.95 = 118,750 payload bytes per second.
RATE_1MBPS = 118_750


def small_video(sizes: list[list[int]], chunk_s: float = 4.0) -> Video:
    return Video("hand", (300, 750, 1200), chunk_s, np.asarray(sizes), len(sizes[0]))


def test_constant_bandwidth_closed_form() -> None:
    # Level 1 = 1 s of trace, level 2 = 2 s, level 0 = 0.5 s at 1 Mbit/s.
    video = small_video([[59_375] * 3, [RATE_1MBPS] * 3, [2 * RATE_1MBPS] * 3])
    sim = Simulator([constant_trace(1.0, 100, "c")], video)
    first = sim.download(1)
    assert first.trace_s == pytest.approx(1.0, abs=1e-12)
    assert first.delay_s == pytest.approx(1.08, abs=1e-12)  # + 80 ms round trip
    assert first.rebuffer_s == pytest.approx(1.08, abs=1e-12)  # empty buffer stalls it all
    assert first.buffer_s == pytest.approx(4.0, abs=1e-12)
    second = sim.download(2)
    assert second.delay_s == pytest.approx(2.08, abs=1e-12)
    assert second.rebuffer_s == 0.0
    assert second.buffer_s == pytest.approx(4.0 - 2.08 + 4.0, abs=1e-12)  # 5.92
    third = sim.download(0)
    assert third.delay_s == pytest.approx(0.58, abs=1e-12)
    assert third.buffer_s == pytest.approx(5.92 - 0.58 + 4.0, abs=1e-12)  # 9.34
    assert third.end_of_video and third.chunks_left == 0

    qoe = make_qoe("lin", video.bitrates_kbps)
    per_chunk = qoe.chunk_qoe([1, 2, 0], [first.rebuffer_s, 0.0, 0.0])
    # 0.75 - 4.3 * 1.08; 1.2 - |1.2 - 0.75|; 0.3 - |0.3 - 1.2|
    np.testing.assert_allclose(per_chunk, [0.75 - 4.644, 0.75, -0.6], atol=1e-12)
    assert qoe.session_qoe([1, 2, 0], [first.rebuffer_s, 0, 0]) == pytest.approx(0.075)


def test_buffer_cap_sleeps_in_steps_and_advances_the_trace() -> None:
    # 1 Mbit/s for the first 4 s, then 2 Mbit/s. Cap 5 s: after chunk 1 the buffer is 5.92 s,
    # so the player sleeps ceil(0.92 / 0.5) * 0.5 = 1.0 s, leaving 4.92 s; the trace is then
    # at 1 + 2 + 1 = 4 s, where 2 Mbit/s starts: one level-1 chunk (118,750 B) takes 0.5 s.
    video = small_video([[59_375] * 3, [RATE_1MBPS] * 3, [2 * RATE_1MBPS] * 3])
    trace = step_trace([1.0, 2.0], 4.0, "step")
    sim = Simulator([trace], video, SimConfig(buffer_cap_s=5.0))
    sim.download(1)
    second = sim.download(2)
    assert second.sleep_s == pytest.approx(1.0)
    assert second.buffer_s == pytest.approx(4.92)
    third = sim.download(1)
    assert third.trace_s == pytest.approx(0.5, abs=1e-12)


def test_trace_loops_and_outages_stall() -> None:
    video = small_video([[RATE_1MBPS * 12] * 2] * 3)
    sim = Simulator([constant_trace(1.0, 10, "ten")], video)
    assert sim.download(0).trace_s == pytest.approx(12.0, abs=1e-9)  # 10 s, then 2 s again

    # 2 s at 1 Mbit/s, a 3 s outage, then 1 Mbit/s: 3 s worth of bytes needs 6 s.
    outage = Trace("outage", np.arange(11.0), np.array([1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1.0]))
    sim = Simulator([outage], small_video([[RATE_1MBPS * 3] * 2] * 3))
    result = sim.download(0)
    assert result.trace_s == pytest.approx(6.0, abs=1e-9)
    assert result.rebuffer_s == pytest.approx(6.08, abs=1e-9)


def test_exact_fit_before_an_outage_ends_after_it() -> None:
    # Pensieve's loop moves on when a chunk fits an interval exactly, so a download that
    # completes right at an outage's start is only done at its end: both simulators agree.
    outage = Trace("outage", np.arange(11.0), np.array([1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1.0]))
    video = small_video([[RATE_1MBPS * 2] * 2] * 3)
    scalar = Simulator([outage], video).download(0)
    batched = BatchedSimulator([outage], video, 1, mode="test").step(np.array([0]))
    assert scalar.trace_s == pytest.approx(5.0, abs=1e-9)
    assert batched.trace_s[0] == pytest.approx(5.0, abs=1e-9)


def test_training_mode_noise_is_within_bounds() -> None:
    video = small_video([[RATE_1MBPS] * 200] * 3)
    sim = Simulator(
        [constant_trace(1.0, 100, "c")], video, mode="train", rng=np.random.default_rng(1)
    )
    factors = [sim.download(0).delay_s / 1.08 for _ in range(150)]
    assert 0.9 <= min(factors) < 0.92 and 1.08 < max(factors) <= 1.1


def _random_traces(count: int, seed: int) -> list[Trace]:
    params = SynthParams(duration_s=120.0, interval_s=0.7, outage_prob=0.02)
    return [generate_trace(params, seed=seed + i, name=f"t{i}") for i in range(count)]


def test_wall_timing_moves_the_trace_during_the_waits() -> None:
    """1 Mbit/s for 2 s, then 2 Mbit/s; a wait of 0.5 s before chunk 0, 0.1 s before the
    others, a round trip of 80 ms. Chunk 0 (1 s of bytes at 1 Mbit/s) is requested at trace
    time 0.5 and its bytes start at 0.58: it ends at 1.58 (delay 1.08, stall 0.5 + 1.08).
    Chunk 1 is requested at 1.68, its bytes start at 1.76: 0.24 s at 1 Mbit/s carry 28,500 B,
    the other 90,250 B take 0.38 s at 2 Mbit/s (delay 0.70). Pensieve's timing starts chunk 1
    where chunk 0's bytes ended (1.0): a whole second at 1 Mbit/s."""
    video = small_video([[59_375] * 3, [RATE_1MBPS] * 3, [2 * RATE_1MBPS] * 3])
    trace = step_trace([1.0, 2.0], 2.0, "step")
    wall = SimConfig(timing="wall", decision_s=0.1, start_s=0.5)
    sim = Simulator([trace], video, wall)
    first = sim.download(1)
    assert (first.wait_s, first.delay_s) == (0.5, pytest.approx(1.08, abs=1e-12))
    assert first.rebuffer_s == pytest.approx(1.58, abs=1e-12) and first.buffer_s == 4.0
    second = sim.download(1)
    assert second.wait_s == 0.1 and second.trace_s == pytest.approx(0.62, abs=1e-12)
    assert second.delay_s == pytest.approx(0.70, abs=1e-12)
    assert second.buffer_before_s == pytest.approx(3.9, abs=1e-12)
    assert second.rebuffer_s == 0.0 and second.buffer_s == pytest.approx(7.2, abs=1e-12)
    pensieve = Simulator([trace], video)
    pensieve.download(1)
    assert pensieve.download(1).trace_s == pytest.approx(1.0, abs=1e-12)
    batched = BatchedSimulator([trace], video, 1, wall, mode="test")
    batched.step(np.array([1]))
    step = batched.step(np.array([1]))
    assert step.delay_s[0] == pytest.approx(0.70, abs=1e-12)
    assert step.buffer_s[0] == pytest.approx(7.2, abs=1e-12)


def test_faithful_constants_come_from_the_emulation_settings() -> None:
    """40 ms each way: every HTTP request costs the decision's round trip as measured (or the
    link's 80 ms plus 25 ms); 1504 of every 1500 trace bytes, 1448 of each 1500-byte packet
    payload; before chunk 0 the MPD and the first decision (each a handshake and a request)
    and the init segment (a request)."""
    measured = SimConfig.faithful(40.0, 0.105, buffer_cap_s=30.0)
    assert (measured.timing, measured.rtt_s, measured.decision_s) == ("wall", 0.105, 0.105)
    assert measured.payload_factor == pytest.approx(1504 * 1448 / 1500**2)
    assert measured.start_s == pytest.approx(2 * 0.08 + 3 * 0.105)
    assert measured.buffer_cap_s == 30.0
    assert SimConfig.faithful(0.0).decision_s == pytest.approx(0.025)
    with pytest.raises(ConfigError, match="timing"):
        SimConfig(timing="fast")


@pytest.mark.parametrize("timing", ["pensieve", "wall"])
def test_scalar_and_batched_agree_to_1e9(timing: str) -> None:
    traces = _random_traces(7, seed=10)
    video = generate_video(seed=3, num_chunks=20)
    n, steps = 40, 90
    rng = np.random.default_rng(0)
    config = SimConfig() if timing == "pensieve" else SimConfig.faithful(40.0, 0.1)
    batched = BatchedSimulator(traces, video, n, config, mode="train", rng=np.random.default_rng(5))
    scalars = [Simulator(traces, video, config, mode="train") for _ in range(n)]

    def restart(mask: np.ndarray) -> None:
        idx = np.flatnonzero(mask)
        trace = rng.integers(len(traces), size=len(idx))
        line = np.array([rng.integers(len(traces[t].times_s) - 1) for t in trace])
        batched.reset(mask, trace=trace, start_line=line)
        for i, t, s in zip(idx, trace, line, strict=True):
            scalars[i].start_session(int(t), int(s))

    restart(np.ones(n, bool))
    compared = 0
    for _ in range(steps):
        quality = rng.integers(video.num_levels, size=n)
        noise = rng.uniform(0.9, 1.1, size=n)
        step = batched.step(quality, noise)
        for i, sim in enumerate(scalars):
            r = sim.download(int(quality[i]), float(noise[i]))
            for field in ("delay_s", "trace_s", "sleep_s", "rebuffer_s", "buffer_s"):
                assert abs(getattr(r, field) - getattr(step, field)[i]) < 1e-9, (field, i)
            assert r.end_of_video == step.end_of_video[i]
            compared += 1
        if step.end_of_video.any():
            restart(step.end_of_video)
    assert compared == n * steps


def test_batched_observation_matches_the_env_definition() -> None:
    traces = _random_traces(3, seed=1)
    video = generate_video(seed=0, num_chunks=12)
    batched = BatchedSimulator(traces, video, 3, mode="test")
    scalar = [Simulator(traces, video) for _ in range(3)]
    from streambed.abr_service.observation import empty_observation, update_observation

    obs = [empty_observation() for _ in range(3)]
    for sim, i in zip(scalar, range(3), strict=True):
        sim.start_session(i)
    for step_index in range(8):
        quality = np.array([step_index % 6, 5 - step_index % 6, 2])
        batched.step(quality)
        for i, sim in enumerate(scalar):
            r = sim.download(int(quality[i]))
            update_observation(
                obs[i],
                video.bitrates_kbps[r.quality],
                video.bitrates_kbps[-1],
                r.buffer_s,
                r.chunk_bytes,
                r.delay_s,
                r.next_chunk_bytes.astype(float),
                r.chunks_left,
            )
    assert batched.obs is not None
    np.testing.assert_allclose(batched.obs, np.stack(obs), atol=1e-12)


def test_bad_inputs_are_refused() -> None:
    video = small_video([[100] * 2] * 3)
    with pytest.raises(ConfigError, match="quality 7"):
        Simulator([constant_trace(1.0, 10, "c")], video).download(7)
    with pytest.raises(ConfigError, match="mode"):
        Simulator([constant_trace(1.0, 10, "c")], video, mode="eval")
    with pytest.raises(TraceError, match="no traces"):
        BatchedSimulator([], video, 4)
    with pytest.raises(ConfigError, match="noise"):
        SimConfig(noise_low=1.2, noise_high=1.1)
