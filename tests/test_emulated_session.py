"""Issue 5's acceptance: real streaming sessions behind the netns link (needs root and ffmpeg).

Real parts only: content encoded by ffmpeg (10 chunks of 2 s, 3 levels, small frames), the
origin app under uvicorn on 0.0.0.0, the decision service (its app in this process, or a
``streambed serve`` process), and the player as ``streambed play --trace T --link netns``: a
process that re-runs itself in a network namespace behind the packet shaper.

Expected values come from the trace. The player's ``session.json`` says where its clock stood
on the trace (``link.trace_offset_s``, from ``$STREAMBED_LINK_EPOCH``), and
``streambed.emulation.analytic`` walks the trace's delivery opportunities.

Like ``test_link``, these tests fail rather than skip without root; each checks that the
sessions it started left no namespace or TUN device behind, also when it fails.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
from link_helpers import remove_namespaces_of
from starlette.types import ASGIApp, Receive, Scope, Send

from streambed.abr_service.app.main import create_app as create_service
from streambed.abr_service.app.settings import Settings
from streambed.abr_service.video import VIDEO_JSON, Video, load_video
from streambed.core.servers import free_port, serve_in_thread, wait_healthy
from streambed.emulation import analytic, netns
from streambed.player.session import CHUNKS_JSONL, SESSION_JSON
from streambed.reports.sessionlog import ChunkRecord, read_jsonl
from streambed.server.app import create_app as create_origin
from streambed.server.build import build_encoded
from streambed.server.mpd import MPD_NAME, parse_mpd
from streambed.traces.formats import (
    detect_format,
    load_mahimahi,
    load_pensieve,
    pensieve_to_mahimahi,
    save_mahimahi,
)

CHUNK_S = 2.0
NUM_CHUNKS = 10
LADDER = (300, 750, 1850)
STREAMBED = Path(sys.executable).with_name("streambed")
# The origin's response header for a segment (uvicorn's, the content and CORS headers): 412
# bytes, sent ahead of the body.
HEAD_BYTES = 412
# The origin's own time between the request's arrival and its first byte, ms.
ENDPOINT_MS = 1.0


@pytest.fixture(scope="module")
def content(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten 2 s chunks of ffmpeg's test pattern at 300, 750 and 1850 kbps (CBR: segment sizes
    track the ladder, about 75, 190 and 460 kB). About 2 s of encoding."""
    return build_encoded(
        tmp_path_factory.mktemp("session") / "content",
        duration_s=NUM_CHUNKS * CHUNK_S,
        ladder_kbps=LADDER,
        chunk_s=CHUNK_S,
        resolutions=[(256, 144), (384, 216), (640, 360)],
        fps=12,
        vmaf=False,
    )


@pytest.fixture(scope="module")
def video(content: Path) -> Video:
    return load_video(content / VIDEO_JSON)


@pytest.fixture(scope="module")
def origin(content: Path) -> Iterator[str]:
    with serve_in_thread(create_origin(content), host="0.0.0.0") as url:
        yield url.replace("0.0.0.0", "127.0.0.1")


@contextmanager
def service_in_thread(content: Path, tmp: Path, log_dir: Path) -> Iterator[str]:
    """The decision service's app (RobustMPC on the content's video.json) on 0.0.0.0."""
    settings = Settings(
        videos=[content / VIDEO_JSON],
        algorithm="robustmpc",
        models_dir=tmp / "models",
        log_dir=log_dir,
    )
    with serve_in_thread(create_service(settings), host="0.0.0.0") as url:
        yield url.replace("0.0.0.0", "127.0.0.1")


def link_devices() -> set[str]:
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    names = {line.split(": ")[1].split("@")[0] for line in links.splitlines()}
    return {d for d in names if d.startswith(("sbh", "sbn"))}


@pytest.fixture
def sessions() -> Iterator[list[int]]:
    """Collects the pids of the ``streambed play`` processes a test starts. Afterwards none of
    their namespaces (``streambed-PID-K``) or TUN devices may remain; any that does is removed
    and the test fails."""
    pids: list[int] = []
    devices_before = link_devices()
    yield pids
    left = remove_namespaces_of(pids)
    assert not left, f"namespaces left behind: {left}"
    # Links of other processes on this machine (a concurrent test run) have live namespaces
    # streambed-PID-K for their devices sbhK; ours were deleted above.
    live = {name.rpartition("-")[2] for name in netns.list_namespaces()}
    leaked = {d for d in link_devices() - devices_before if d[3:] not in live}
    assert not leaked, f"TUN devices left behind: {sorted(leaked)}"


def play(args: list[str], pids: list[int], timeout_s: float = 60) -> str:
    """Run ``streambed play ARGS`` to its end; its stdout. One that overruns is stopped with
    SIGTERM (which tears its link down) and fails the test."""
    proc = subprocess.Popen(
        [str(STREAMBED), "play", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pids.append(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"streambed play ran over {timeout_s} s\n{out}\n{err[-3000:]}")
    finally:
        if proc.poll() is None:  # an interrupted test: stop it, its link goes with it
            proc.terminate()
            proc.wait(30)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err[-3000:]}"
    return out


def session_files(log_dir: Path) -> tuple[list[ChunkRecord], dict[str, Any]]:
    return read_jsonl(log_dir / CHUNKS_JSONL), json.loads((log_dir / SESSION_JSON).read_text())


def trace_ms(path: Path) -> list[int]:
    """The delivery opportunities the link replays for ``path`` (either format)."""
    if detect_format(path) == "mahimahi":
        return [int(t) for t in load_mahimahi(path)]
    return [int(t) for t in pensieve_to_mahimahi(load_pensieve(path))]


def expected_download_s(ms: list[int], start_s: float, chunk_bytes: int) -> float:
    """Seconds from a GET sent at trace time ``start_s`` to the body's last byte: the request
    (one small packet) leaves with the uplink's next opportunity, the origin answers, and
    its header and body drain through the downlink's opportunities (a fluid backlog)."""
    sent_ms = start_s * 1000.0
    up_ms = sent_ms + analytic.drain_s(ms, sent_ms, 1) * 1000.0
    first_ms = up_ms + ENDPOINT_MS
    ip_bytes = analytic.ip_bytes(chunk_bytes, head_bytes=HEAD_BYTES)
    return (first_ms - sent_ms) / 1000.0 + analytic.drain_s(ms, first_ms, ip_bytes)


def check_records(
    records: list[ChunkRecord], video: Video, count: int, trace: str, retried: int = -1
) -> None:
    """What holds for every chunk record of a finished session of this content; only chunk
    ``retried`` may have needed a second attempt."""
    assert [r.chunk_index for r in records] == list(range(count))
    previous_end = 0.0
    for r in records:
        k = r.chunk_index
        assert 0 <= r.quality < len(LADDER) and r.bitrate_kbps == LADDER[r.quality]
        assert r.chunk_bytes == video.chunk_bytes[r.quality, k]  # every byte, nothing more
        assert previous_end <= r.request_start_s < r.request_end_s
        assert r.download_s == pytest.approx(r.request_end_s - r.request_start_s)
        assert r.throughput_kbps == pytest.approx(r.chunk_bytes * 8 / r.download_s / 1000)
        assert r.buffer_before_s >= 0 and r.buffer_s > 0
        assert r.rebuffer_s >= 0 and r.sleep_s >= 0 and r.decision_ms > 0
        assert (r.attempts, r.retry_s) == (1, 0) or (k == retried and r.attempts == 2)
        assert r.trace == trace
        assert math.isfinite(r.qoe)
        previous_end = r.request_end_s + r.sleep_s
    assert 0 < records[0].rebuffer_s <= records[0].request_end_s  # start-up


def service_decisions(log_dir: Path, session_id: str) -> dict[int, int]:
    """chunk index -> quality, as the service's decision log has them."""
    path = log_dir / f"{session_id}.jsonl"
    if not path.exists():
        return {}
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return {d["chunk_index"]: d["quality"] for d in lines}


def player_args(origin: str, abr: str, trace: Path, log_dir: Path, *extra: str) -> list[str]:
    return [
        "--mpd",
        f"{origin}/{MPD_NAME}",
        "--abr",
        abr,
        "--trace",
        str(trace),
        "--link",
        "netns",
        "--log",
        str(log_dir),
        *extra,
    ]


# ---------------------------------------------------------------------------------------------


def test_session_on_a_variable_trace_follows_it(
    content: Path, video: Video, origin: str, tmp_path: Path, sessions: list[int]
) -> None:
    """Ten chunks through the netns link on a trace stepping between 1 and 4 Mbit/s every
    2.5 s (Pensieve format), every level decided by the service: the log is complete, and each
    chunk's download takes the time the trace gives it: no less than 97% of the model's, no
    more than 105% of it plus 50 ms.

    The model walks the trace's opportunities exactly (1504 bytes each, full 1500-byte
    packets carrying 1448 payload bytes, the request's wait for an uplink opportunity), so a
    download beating it by more than timer noise would be a shaper bug. What it leaves out
    costs time and never saves it: TCP needs a few round trips to fill a link whose rate has
    just stepped up (measured: a chunk starting 0.35 s before a 1 -> 4 Mbit/s step took 37 ms,
    5.6%, more than the model), and the origin's and the player's own latency, a few ms that
    grow on a loaded machine."""
    rates = [1.0, 4.0, 1.5, 3.5, 1.0, 4.0, 2.0, 3.0]  # Mbit/s, 2.5 s each, repeating
    trace = tmp_path / "steps.txt"
    trace.write_text(
        "".join(
            f"{2.5 * i:g}\t{rates[(i - 1) % len(rates)] if i else rates[0]}\n" for i in range(25)
        )
    )
    log_dir, decisions = tmp_path / "log", tmp_path / "decisions"
    with service_in_thread(content, tmp_path, decisions) as abr:
        out = play(
            player_args(origin, abr, trace, log_dir, "--session-id", "steps-1")
            + ["--decision-timeout-s", "5"],
            sessions,
        )
    assert "steps-1 done: 10 of 10 chunks" in out
    records, summary = session_files(log_dir)
    assert (summary["status"], summary["exit_code"], summary["chunks"]) == ("done", 0, 10)
    assert summary["link"]["kind"] == "netns" and summary["link"]["host"].startswith("10.")
    check_records(records, video, NUM_CHUNKS, "steps")
    # Every level is the service's decision for that chunk.
    assert not any(r.fallback for r in records)
    assert {r.algorithm for r in records} == {"robustmpc"}
    assert service_decisions(decisions, "steps-1") == {r.chunk_index: r.quality for r in records}
    # The throughput the player measured follows the trace, chunk by chunk.
    ms = trace_ms(trace)
    offset = summary["link"]["trace_offset_s"]
    assert 0 < offset + records[0].request_start_s < 30  # the session ran in the trace's span
    expected = np.array(
        [expected_download_s(ms, r.request_start_s + offset, r.chunk_bytes) for r in records]
    )
    measured = np.array([r.download_s for r in records])
    report = [
        (r.chunk_index, r.quality, round(r.throughput_kbps), round(r.chunk_bytes * 8 / e / 1000))
        for r, e in zip(records, expected, strict=True)
    ]
    print("chunk, level, measured kbps, trace kbps:", report)
    assert (measured >= expected * 0.97).all(), report
    assert (measured <= expected * 1.05 + 0.05).all(), report
    # Not a vacuous check: the chunks met different rates of the trace.
    trace_kbps = [row[3] for row in report]
    assert max(trace_kbps) > 2 * min(trace_kbps), report


def test_ssim_session_scores_what_the_viewer_sees(
    content: Path, video: Video, origin: str, tmp_path: Path, sessions: list[int]
) -> None:
    """``--qoe ssim`` through the link: the player reads the video.json beside the MPD and
    scores each chunk with Puffer's formula at the SSIM ffmpeg measured for that segment and
    level; the service plans on SSIM (``qoe=ssim``). Recomputed here from the table."""
    assert video.ssim_db is not None  # origin build measured it
    trace = tmp_path / "flat.txt"
    trace.write_text("".join(f"{i}\t3.0\n" for i in range(60)))
    log_dir = tmp_path / "log"
    with service_in_thread(content, tmp_path, tmp_path / "decisions") as abr:
        out = play(
            player_args(origin, abr, trace, log_dir, "--session-id", "ssim-1")
            + ["--qoe", "ssim", "--param", "qoe=ssim", "--decision-timeout-s", "5"],
            sessions,
        )
    assert "ssim-1 done" in out
    records, summary = session_files(log_dir)
    assert summary["status"] == "done" and not any(r.fallback for r in records)
    ssim = video.ssim_db
    expected = [ssim[records[0].quality, 0] - 100 * records[0].rebuffer_s]
    for before, r in zip(records, records[1:], strict=False):
        now = ssim[r.quality, r.chunk_index]
        change = abs(now - ssim[before.quality, before.chunk_index])
        expected.append(now - 100 * r.rebuffer_s - change)
    assert [r.qoe for r in records] == pytest.approx(expected)
    assert summary["metrics"]["qoe"] == pytest.approx(float(np.mean(expected[1:])))


def test_an_outage_stalls_the_session_which_then_finishes(
    content: Path, video: Video, origin: str, tmp_path: Path, sessions: list[int]
) -> None:
    """A Mahimahi trace at 12 Mbit/s (one opportunity per ms) that carries nothing from 7 s to
    17 s. With a 4 s buffer cap the player paces itself at the cap when the link goes dark,
    so the stall is the 10 s outage minus the 3.5 to 6 s it had buffered; the log says so,
    and the session finishes with exit status 0."""
    outage = (7000, 17000)
    ms = [t for t in range(1, 40001) if not outage[0] < t <= outage[1]]
    trace = tmp_path / "outage.mm"
    save_mahimahi(ms, trace)
    cap = 4.0
    log_dir = tmp_path / "log"
    with service_in_thread(content, tmp_path, tmp_path / "decisions") as abr:
        args = player_args(origin, abr, trace, log_dir, "--buffer-cap-s", str(cap))
        play([*args, "--max-chunks", "8"], sessions)
    records, summary = session_files(log_dir)
    assert (summary["status"], summary["exit_code"], summary["chunks"]) == ("done", 0, 8)
    offset = summary["link"]["trace_offset_s"]
    start, end = (t / 1000.0 - offset for t in outage)  # the outage on the session clock
    assert records[0].request_end_s < start, "the session began after the outage had"
    stalled = [r for r in records[1:] if r.rebuffer_s > 0.05]
    assert len(stalled) == 1 and stalled[0].request_end_s > end, stalled
    # A request sent on a connection idle for more than uvicorn's 5 s keep-alive timeout
    # before the link came back finds it closed by the origin meanwhile: one retry (0.25 s
    # backoff and a new connection), counted in the stall.
    check_records(records, video, 8, "outage", retried=stalled[0].chunk_index)
    # The buffer when the link went dark: the last chunk appended before then, drained since.
    before = [r for r in records if r.request_end_s <= start][-1]
    buffered = max(0.0, before.buffer_s + before.sleep_s - (start - before.request_end_s))
    assert cap - 1.0 <= buffered <= cap + CHUNK_S  # pacing at the cap, as planned
    expected = (end - start) - buffered  # 4 to 7 s
    rebuffer = sum(r.rebuffer_s for r in records[1:])
    print(f"buffered {buffered:.3f} s at the outage; rebuffer {rebuffer:.3f} s, {expected=:.3f}")
    # Beyond the stall itself: the chunk's remaining bytes (< 0.4 s at 12 Mbit/s), TCP's
    # recovery from its timeouts in the dark, a retry (above), or a decision request caught by
    # the outage (1 s timeout, then local BBA).
    assert expected - 0.1 <= rebuffer <= expected + 1.5
    assert summary["rebuffer_s_total"] == pytest.approx(rebuffer)


@contextmanager
def service_process(content: Path, port: int, log_dir: Path, tmp: Path) -> Iterator[Any]:
    """``streambed serve`` on 0.0.0.0:port; yields its Popen once it answers."""
    argv = [str(STREAMBED), "serve", "--host", "0.0.0.0", "--port", str(port)]
    argv += ["--video", str(content / VIDEO_JSON), "--algorithm", "robustmpc"]
    argv += ["--log-dir", str(log_dir), "--models-dir", str(tmp / "models")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_healthy(f"http://127.0.0.1:{port}", proc, 30) is None, "serve did not start"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


class ChunkGate:
    """Wraps the origin: before it serves chunk ``k`` (any level) for the first time, runs
    ``actions[k]`` in a worker thread and only then answers. The player is single-threaded and
    fetches chunk k only after it has its level, so while an action runs no decision request is
    in flight: a service killed there cannot have computed a decision it never delivered."""

    def __init__(self, app: ASGIApp, content: Path, actions: dict[int, Callable[[], object]]):
        manifest = parse_mpd((content / MPD_NAME).read_bytes(), f"http://origin/{MPD_NAME}")
        self.app = app
        self.pending = {
            urlsplit(manifest.chunk_url(level, k)).path: k
            for k in actions
            for level in range(manifest.num_levels)
        }
        self.actions = dict(actions)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        k = self.pending.get(scope.get("path", ""))
        action = self.actions.pop(k, None) if k is not None else None
        if action is not None:
            await asyncio.to_thread(action)
        await self.app(scope, receive, send)


def test_service_killed_mid_session_behind_the_link(
    content: Path, video: Video, tmp_path: Path, sessions: list[int]
) -> None:
    """``streambed serve`` is killed (SIGKILL) while the player fetches chunk 3, whose level
    it gave, and a new one is started on its port (and answers) before the player gets chunk
    4, which it decided locally: the session decides locally for that chunk only (fallback,
    logged), asks the new service again, and finishes.

    The origin holds each of those two chunks until the kill or the start is done, so no
    decision request is in flight then: earlier, a kill racing the answer for chunk 3 could
    leave that decision in the old service's log but not in the player's."""
    trace = tmp_path / "flat.txt"
    trace.write_text("".join(f"{t}\t4.0\n" for t in range(61)))
    port = free_port()
    log_dir, first, second = tmp_path / "log", tmp_path / "dec1", tmp_path / "dec2"
    with ExitStack() as stack:
        old = stack.enter_context(service_process(content, port, first, tmp_path))

        def kill_old() -> None:
            old.kill()
            old.wait()

        def start_new() -> None:
            stack.enter_context(service_process(content, port, second, tmp_path))

        gate = ChunkGate(create_origin(content), content, {3: kill_old, 4: start_new})
        origin = stack.enter_context(serve_in_thread(gate, host="0.0.0.0"))
        origin = origin.replace("0.0.0.0", "127.0.0.1")
        args = player_args(origin, f"http://127.0.0.1:{port}", trace, log_dir)
        # Long limits: a slow answer on a loaded machine must not pass for the outage.
        args += ["--decision-timeout-s", "10", "--origin-timeout-s", "90"]
        play([*args, "--buffer-cap-s", "4", "--session-id", "kill-1"], sessions, 180)
        assert not gate.actions, "the origin never saw chunk 3 or 4"
    records, summary = session_files(log_dir)
    assert (summary["status"], summary["exit_code"], summary["chunks"]) == ("done", 0, 10)
    check_records(records, video, NUM_CHUNKS, "flat")
    flags = [r.fallback for r in records]
    assert flags == [k == 4 for k in range(NUM_CHUNKS)], flags  # exactly the chunk it missed
    assert "Error" in (records[4].fallback_reason or ""), records[4].fallback_reason
    # Each service logged exactly the chunks it decided, and those are the levels played.
    assert service_decisions(first, "kill-1") == {r.chunk_index: r.quality for r in records[:4]}
    assert service_decisions(second, "kill-1") == {r.chunk_index: r.quality for r in records[5:]}
    assert summary["fallbacks_local"] == 1 and summary["service_decisions"] == 9
