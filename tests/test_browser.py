"""Issue 7: a real player, dash.js 5 in headless Chromium, deciding through ``POST /decide``.

Real parts only: 40 s of ffmpeg content (ten 4 s segments on Pensieve's six-level ladder at
small frame sizes, one size per level so that the frames presented say which level was
rendered), the origin under uvicorn on 0.0.0.0 (it serves /player.html), ``streambed serve``
with its per-session decision log and the shipped learned model (``models/ppo-norway.pt``, for six
levels), and ``streambed play --browser``: Node.js driving the system's Chromium through
playwright-core, on loopback and behind the netns link on a stepped trace.

What must hold for a session: every segment's level is the service's decision for it (its
decision log), the level rendered (frames presented) is the level requested, ``currentTime``
reaches the end of the video, nothing was logged to the console as an error, the browser
requested nothing but the test's hosts, and the session's files are the headless player's
(``chunks.jsonl``, ``pensieve.log``, ``session.json``) that the reports read.

Like the other emulation tests these fail rather than skip when something is missing
(Node.js, ``player/web/node_modules``, Chromium, root for netns): ``scripts/setup.sh --dev``
installs them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from link_helpers import remove_namespaces_of

from streambed.abr_service.video import VIDEO_JSON
from streambed.core.errors import ConfigError
from streambed.core.servers import free_port, serve_in_thread, wait_healthy
from streambed.emulation import netns
from streambed.player.browser import (
    EVENTS_JSONL,
    WEB_DIR,
    BrowserSession,
    find_chromium,
    missing_requirements,
    play_browser,
    read_events,
    require_browser,
)
from streambed.player.session import CHUNKS_JSONL, PENSIEVE_LOG, SESSION_JSON, PlayerConfig
from streambed.reports.sessionlog import ChunkRecord, read_jsonl
from streambed.reports.summary import session_metrics
from streambed.server.app import create_app as create_origin
from streambed.server.build import build_encoded
from streambed.server.mpd import MPD_NAME

CHUNK_S = 4.0
NUM_CHUNKS = 10
LADDER = (300, 750, 1200, 1850, 2850, 4300)
RESOLUTIONS = [(256, 144), (320, 180), (384, 216), (448, 252), (512, 288), (640, 360)]
STREAMBED = Path(sys.executable).with_name("streambed")
MODEL = Path(__file__).resolve().parents[1] / "models" / "ppo-norway.pt"
LINK_MBPS = (3.0, 1.0)  # the stepped trace: 10 s at each, repeating
SESSION_TIMEOUT_S = 150.0
# Headless-player keys that session.json keeps for the browser (plus player and browser).
SUMMARY_KEYS = {
    "format",
    "status",
    "exit_code",
    "reason",
    "session_id",
    "run_id",
    "trace",
    "algorithm",
    "mpd_url",
    "abr_url",
    "started_at",
    "duration_s",
    "link",
    "config",
    "ladder_kbps",
    "chunk_s",
    "num_chunks",
    "chunks",
    "startup_s",
    "chunk_bytes_total",
    "rebuffer_s_total",
    "fallbacks",
    "fallbacks_local",
    "fallbacks_service",
    "metrics",
    "files",
}


@pytest.fixture(scope="module", autouse=True)
def requirements() -> None:
    missing = missing_requirements()
    if missing:
        pytest.fail(
            f"the dash.js player needs {'; '.join(missing)}: run scripts/setup.sh --dev "
            "(as root: it installs nodejs, npm and chromium, then npm ci in player/web)"
        )


@pytest.fixture(scope="module")
def content(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten 4 s segments of ffmpeg's test pattern on Pensieve's ladder (CBR, 12 frames/s, one
    frame size per level): about 5 s of encoding."""
    return build_encoded(
        tmp_path_factory.mktemp("browser") / "content",
        duration_s=NUM_CHUNKS * CHUNK_S,
        ladder_kbps=LADDER,
        chunk_s=CHUNK_S,
        resolutions=RESOLUTIONS,
        fps=12,
        vmaf=False,
    )


@pytest.fixture(scope="module")
def origin(content: Path) -> Iterator[str]:
    with serve_in_thread(create_origin(content), host="0.0.0.0") as url:
        yield url.replace("0.0.0.0", "127.0.0.1")


@pytest.fixture(scope="module")
def service(content: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``streambed serve`` on 0.0.0.0: RobustMPC by default, ppo-norway.pt as ``ppo``, a decision
    log per session; yields its URL and the log directory."""
    tmp = tmp_path_factory.mktemp("service")
    port = free_port()
    argv = [str(STREAMBED), "serve", "--host", "0.0.0.0", "--port", str(port)]
    argv += ["--video", str(content / VIDEO_JSON), "--algorithm", "robustmpc"]
    argv += ["--model", str(MODEL), "--models-dir", str(tmp / "models")]
    argv += ["--log-dir", str(tmp / "decisions")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_healthy(url, proc, 60) is None, "streambed serve did not start"
        yield url, tmp / "decisions"
    finally:
        proc.terminate()
        proc.wait(30)


def service_decisions(log_dir: Path, session_id: str) -> dict[int, int]:
    """chunk index -> level, as the service's decision log has them."""
    path = log_dir / f"{session_id}.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {d["chunk_index"]: d["quality"] for d in lines}


def config(origin: str, abr: str, log_dir: Path | None, **kw: Any) -> PlayerConfig:
    return PlayerConfig(
        mpd_url=f"{origin}/{MPD_NAME}", abr_url=abr, log_dir=log_dir, player="dashjs", **kw
    )


def check_session(
    log_dir: Path, decisions_dir: Path, session_id: str, hosts: set[str], algorithm: str
) -> tuple[list[ChunkRecord], dict[str, Any]]:
    """Everything a finished dash.js session must show; its records and session.json."""
    records = read_jsonl(log_dir / CHUNKS_JSONL)
    summary = json.loads((log_dir / SESSION_JSON).read_text())
    browser = summary["browser"]
    report = [(r.chunk_index, r.quality, r.quality_rendered, r.fallback) for r in records]
    assert (summary["status"], summary["exit_code"], summary["player"]) == ("done", 0, "dashjs")
    assert set(summary) >= SUMMARY_KEYS, SUMMARY_KEYS - set(summary)
    assert [r.chunk_index for r in records] == list(range(NUM_CHUNKS)), report
    assert {r.player for r in records} == {"dashjs"}
    assert {r.algorithm for r in records} == {algorithm}
    # Every segment was fetched at the service's decision for it, and none was a fallback.
    decided = service_decisions(decisions_dir, session_id)
    assert decided == {r.chunk_index: r.quality for r in records}, (decided, report)
    assert not any(r.fallback for r in records), report
    assert browser["decisions_applied"] == NUM_CHUNKS
    # Real decoding: every segment's frames were presented, at the level requested.
    assert all(r.quality_rendered == r.quality for r in records), report
    events = read_events(log_dir / EVENTS_JSONL)
    played = [e for e in events if e["type"] == "segment_played"]
    assert sorted(e["chunk_index"] for e in played) == list(range(NUM_CHUNKS))
    for e in played:
        q = records[e["chunk_index"]].quality
        w, h = RESOLUTIONS[q]
        assert set(e["sizes"]) == {f"{w}x{h}"}, e  # the decoder's frames, not dash.js's word
        assert e["quality_dashjs"] == q, e
        assert e["frames"] >= CHUNK_S * 12 * 0.5, e  # 12 frames/s, most of them presented
    # currentTime reached the end (within a segment) and the video ended.
    assert browser["ended"] is True
    assert browser["current_time_s"] >= NUM_CHUNKS * CHUNK_S - CHUNK_S
    assert browser["frames_decoded"] >= NUM_CHUNKS * CHUNK_S * 12 * 0.9
    # Nothing went wrong in the page, and the browser reached only the test's hosts.
    assert browser["console_errors"] == [] and browser["errors"] == [], browser
    # The page and its scripts came from the driver on loopback, inside the namespace: only the
    # session's own requests crossed the link, and its trace began with the first (the MPD),
    # just after the page clock's zero, as the headless player's does.
    assert set(browser["hosts"]) <= hosts | {"127.0.0.1"}, browser["hosts"]
    requests = [e for e in events if e["type"] == "request"]
    requested = {e["host"] for e in requests}
    assert requested and requested <= hosts | {"127.0.0.1"}, requested
    urls = [urlsplit(e["url"]) for e in requests]
    media = {u.netloc for u in urls if u.path.endswith((".mpd", ".m4s"))}
    page = [u for u in urls if u.path == "/player.html" or u.path.startswith("/_streambed/")]
    assert page and media and all(u.hostname == "127.0.0.1" and u.netloc not in media for u in page)
    if summary["link"] is not None:
        assert -3.0 < summary["link"]["trace_offset_s"] <= 0, summary["link"]
    assert browser["decision_mode"] == "worker" and browser["cross_origin_isolated"] is True
    # The QoE report: the same files, and the same metrics, as the headless player's.
    assert len((log_dir / PENSIEVE_LOG).read_text().strip().splitlines()) == NUM_CHUNKS
    metrics = session_metrics(records, CHUNK_S)
    assert metrics.chunks == NUM_CHUNKS and summary["metrics"]["qoe"] == pytest.approx(metrics.qoe)
    assert summary["ladder_kbps"] == list(LADDER) and summary["chunk_s"] == CHUNK_S
    print(
        f"{session_id}: levels {[r.quality for r in records]}, qoe {metrics.qoe:.3f}, "
        f"rebuffer {metrics.rebuffer_s:.3f} s, decisions {browser['decisions_by_source']}, "
        f"longest wait {browser['decision_wait_ms_max']:.1f} ms, startup "
        f"{browser['startup_s']:.3f} s, currentTime {browser['current_time_s']:.3f} s"
    )
    return records, summary


# ---------------------------------------------------------------------------------------------
# Without a browser


def test_missing_parts_are_named_with_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"Node\.js .*scripts/setup\.sh"):
        require_browser(node="no-such-node-binary")
    with pytest.raises(ConfigError, match=r"Chromium .*scripts/setup\.sh"):
        require_browser(chromium="/nonexistent/chromium")
    assert missing_requirements(web_dir=Path("/nonexistent")) == [
        "the driver /nonexistent/drive.mjs",
        "the npm package dashjs in /nonexistent/node_modules",
        "the npm package playwright-core in /nonexistent/node_modules",
    ]


def test_play_argv_round_trips_the_browser_flag(tmp_path: Path) -> None:
    from streambed.cli import build_parser
    from streambed.commands.play import config_from_args
    from streambed.player.argv import play_argv

    cfg = config("http://127.0.0.1:8080", "http://127.0.0.1:8333", tmp_path, algorithm="bba")
    argv = play_argv(cfg, via_link=False)
    assert "--browser" in argv
    assert config_from_args(build_parser().parse_args(argv[3:])) == cfg
    headless = PlayerConfig(mpd_url=cfg.mpd_url, abr_url=cfg.abr_url, log_dir=tmp_path)
    assert "--browser" not in play_argv(headless)
    with pytest.raises(ConfigError, match="player 'vlc'"):
        PlayerConfig(mpd_url=cfg.mpd_url, abr_url=cfg.abr_url, player="vlc")


def test_events_become_records_with_each_kind_of_fallback() -> None:
    """The conversion alone: a service that fell back itself, a rule that decided locally, and
    a segment dash.js fetched at another level than decided are all fallbacks, with reasons;
    the stall charged to a chunk and its QoE follow the headless player's definitions."""
    cfg = PlayerConfig(mpd_url="http://h:1/m.mpd", abr_url="http://h:2", qoe="lin")
    manifest = {"type": "manifest", "ladder_kbps": [300, 750, 1200], "chunk_s": 4.0}
    manifest |= {"num_chunks": 4, "download_ms": 5.0}
    events: list[dict[str, Any]] = [{"type": "start", "t_ms": 0}, manifest]
    answers = [
        {"quality": 1, "algorithm": "robustmpc", "fallback": False},
        {"quality": 2, "algorithm": "robustmpc", "fallback": True, "reason": "model failed"},
        None,
        {"quality": 2, "algorithm": "robustmpc", "fallback": False},
    ]
    fetched = [1, 2, 0, 1]
    for k in range(4):
        answer = answers[k]
        events.append(
            {"type": "answer", "chunk_index": k, "ok": answer is not None, "answer": answer}
            | {"t_ms": 100.0 * k + 10, "error": None if answer else "TypeError: failed"}
        )
        events.append(
            {"type": "decision", "chunk_index": k, "quality": fetched[k] if k != 3 else 2}
            | {"fallback": answer is None, "reason": None if answer else "TypeError: failed"}
            | {"source": "local" if answer is None else "prefetched", "sent_ms": 100.0 * k}
            | {"applied_ms": 100.0 * k + 20, "waited_ms": 0.0}
        )
        events.append(
            {"type": "chunk", "chunk_index": k, "quality": fetched[k], "bytes": 1000 * (k + 1)}
            | {"start_ms": 100.0 * k + 30, "end_ms": 100.0 * k + 80, "buffer_s": 4.0}
            | {"buffer_before_s": 0.0, "rebuffer_ms": 500.0 if k == 2 else 0.0, "attempts": 1}
        )
    session = BrowserSession(events, cfg, "s")
    records = session.records()
    assert [r.quality for r in records] == fetched
    assert [r.fallback for r in records] == [False, True, True, True]
    assert records[1].fallback_reason == "service: model failed"
    assert records[2].fallback_reason == "TypeError: failed"
    assert records[3].fallback_reason == "dash.js fetched level 1, the rule decided 2"
    assert records[0].decision_ms == pytest.approx(10.0)  # sent at 0, answered at 10
    assert records[2].rebuffer_s == pytest.approx(0.5)
    assert records[2].download_s == pytest.approx(0.05)
    # lin QoE: 0.3 Mbit/s - 4.3 * 0.5 s - |0.3 - 1.2| for chunk 2.
    assert records[2].qoe == pytest.approx(0.3 - 4.3 * 0.5 - 0.9)
    assert {r.algorithm for r in records} == {"robustmpc"}
    assert session.outcome() == ("error", 1, "browser: the driver ended without a result")


def test_the_browser_reaches_nothing_but_the_allowed_hosts(origin: str) -> None:
    """Chromium with the driver's flags: the origin on loopback answers; an address on the
    internet, a host name and a private address do not (whether or not this machine could)."""
    script = f"""
import {{ chromium }} from "playwright-core";
import {{ chromiumArgs }} from "./drive.mjs";
const browser = await chromium.launch({{
  executablePath: {json.dumps(find_chromium())}, args: chromiumArgs(["127.0.0.1"], "{origin}") }});
const page = await browser.newPage();
await page.goto("{origin}/healthz");
const result = await page.evaluate(async () => {{
  const out = {{}};
  for (const url of ["{origin}/healthz", "http://1.1.1.1/", "http://93.184.215.14/",
                     "https://example.com/", "http://192.168.255.254/"]) {{
    try {{
      await fetch(url, {{ mode: "no-cors", signal: AbortSignal.timeout(10000) }});
      out[url] = "reached";
    }} catch (exc) {{
      out[url] = "failed";
    }}
  }}
  return out;
}});
await browser.close();
console.log(JSON.stringify(result));
"""
    out = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        cwd=WEB_DIR,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result.pop(f"{origin}/healthz") == "reached"
    assert set(result.values()) == {"failed"}, result


# ---------------------------------------------------------------------------------------------
# Sessions on loopback


@pytest.mark.slow
def test_loopback_session_follows_the_service(
    origin: str, service: tuple[str, Path], tmp_path: Path
) -> None:
    """A whole 40 s session on loopback with RobustMPC, through the Python API."""
    abr, decisions = service
    result = play_browser(
        config(origin, abr, tmp_path / "log", algorithm="robustmpc", session_id="loop-1"),
        timeout_s=SESSION_TIMEOUT_S,
    )
    assert result.ok, result.reason
    check_session(tmp_path / "log", decisions, "loop-1", {"127.0.0.1"}, "robustmpc")


@pytest.mark.slow
def test_service_down_or_waited_for_synchronously(
    origin: str, service: tuple[str, Path], tmp_path: Path
) -> None:
    """The service down from the start: the rule decides every segment with local BBA (chunk
    0 at the first level, as the service would), marked as fallbacks, and the session
    finishes. And without the decision worker (decider=xhr: a late answer is waited for with a
    synchronous request), the decisions are still the service's. Three chunks each."""
    dead = f"http://127.0.0.1:{free_port()}"
    down = play_browser(
        config(origin, dead, tmp_path / "down", max_chunks=3, session_id="down-1"),
        timeout_s=60,
    )
    assert (down.status, down.exit_code) == ("no_service", 4), down.reason
    assert f"no decision came from the decision service at {dead}" in (down.reason or "")
    assert [r.chunk_index for r in down.records] == [0, 1, 2]
    assert all(r.fallback and "Failed to fetch" in (r.fallback_reason or "") for r in down.records)
    assert down.records[0].quality == 1
    assert down.summary["fallbacks_local"] == 3 and down.summary["algorithm"] == "service-default"

    abr, decisions = service
    sync = play_browser(
        config(origin, abr, tmp_path / "sync", max_chunks=3, session_id="xhr-1"),
        page_params={"decider": "xhr"},
        timeout_s=60,
    )
    assert sync.ok, sync.reason
    assert sync.summary["browser"]["decision_mode"] == "xhr"
    assert not any(r.fallback for r in sync.records)
    assert service_decisions(decisions, "xhr-1") == {r.chunk_index: r.quality for r in sync.records}


@pytest.mark.slow
def test_sigterm_stops_the_browser_and_keeps_the_log(
    origin: str, service: tuple[str, Path], tmp_path: Path
) -> None:
    """``streambed play --browser`` stopped by SIGTERM mid-playback: exit status 143, the
    segments downloaded so far logged, session.json says interrupted."""
    abr, _ = service
    log_dir = tmp_path / "term"
    argv = [str(STREAMBED), "play", "--browser", "--mpd", f"{origin}/{MPD_NAME}", "--abr", abr]
    proc = subprocess.Popen(
        [*argv, "--log", str(log_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            events = read_events(log_dir / EVENTS_JSONL)
            if any(e["type"] == "segment_played" for e in events):
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    summary = json.loads((log_dir / SESSION_JSON).read_text())
    records = read_jsonl(log_dir / CHUNKS_JSONL)
    assert (summary["status"], summary["exit_code"]) == ("interrupted", 143)
    assert summary["browser"]["ended"] is False
    assert 1 <= summary["chunks"] == len(records) <= NUM_CHUNKS
    driver = [e for e in read_events(log_dir / EVENTS_JSONL) if e["type"] == "driver"]
    assert driver[-1]["what"] == "done" and driver[-1]["status"] == "interrupted"


# ---------------------------------------------------------------------------------------------
# Behind the netns link


@pytest.fixture
def namespaces() -> Iterator[list[int]]:
    """Pids of the ``streambed play`` processes a test starts; none of their namespaces may be
    left afterwards (any that is, is removed and the test fails)."""
    pids: list[int] = []
    yield pids
    left = remove_namespaces_of(pids)
    assert not left, f"namespaces left behind: {left}"


@pytest.mark.slow
def test_behind_the_netns_link_with_robustmpc_and_the_learned_model(
    origin: str, service: tuple[str, Path], tmp_path: Path, namespaces: list[int]
) -> None:
    """Two sessions at once, RobustMPC and ppo-norway.pt (``ppo``), each with Chromium inside its
    own namespace behind a link stepping between 3 and 1 Mbit/s every 10 s: every check of a
    session holds, the browser reached only the link's host address, and every segment crossed
    the link (no faster than its top rate)."""
    reason = netns.missing_privileges()
    assert not reason, f"the netns link needs {reason} (run the tests as root)"
    trace = tmp_path / "steps.txt"
    trace.write_text("".join(f"{10 * i}\t{LINK_MBPS[i % 2]}\n" for i in range(20)))
    abr, decisions = service

    def run(algorithm: str) -> tuple[str, Path, str]:
        log_dir = tmp_path / algorithm
        argv = [str(STREAMBED), "play", "--browser", "--mpd", f"{origin}/{MPD_NAME}"]
        argv += ["--abr", abr, "--algorithm", algorithm, "--session-id", f"link-{algorithm}"]
        argv += ["--trace", str(trace), "--link", "netns", "--log", str(log_dir)]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        namespaces.append(proc.pid)
        try:
            out, err = proc.communicate(timeout=SESSION_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
        assert proc.returncode == 0, f"{algorithm}: exit {proc.returncode}\n{out}\n{err[-3000:]}"
        return algorithm, log_dir, out

    with ThreadPoolExecutor(2) as pool:
        finished = list(pool.map(run, ["robustmpc", "ppo"]))
    for algorithm, log_dir, out in finished:
        assert f"session link-{algorithm} (dash.js) done: 10 of 10 chunks" in out
        summary = json.loads((log_dir / SESSION_JSON).read_text())
        host = summary["link"]["host"]
        assert summary["link"]["kind"] == "netns" and host.startswith("10.")
        records, _ = check_session(log_dir, decisions, f"link-{algorithm}", {host}, algorithm)
        assert {r.trace for r in records} == {"steps"}
        top_kbps = max(LINK_MBPS) * 1000
        assert all(r.throughput_kbps < top_kbps * 1.05 for r in records), [
            round(r.throughput_kbps) for r in records
        ]


@pytest.mark.slow
def test_emulate_both_players_side_by_side(content: Path, tmp_path: Path) -> None:
    """``streambed emulate --player dashjs`` and the headless player on the same two traces
    (3 chunks each, netns links): both reports are the same kind, and ``streambed report``
    puts them side by side, paired per trace."""
    from streambed.cli import main

    traces = tmp_path / "traces"
    traces.mkdir()
    for name, mbps in (("flat3", 3.0), ("flat1", 1.0)):
        (traces / name).write_text("".join(f"{t}\t{mbps}\n" for t in range(60)))
    outs = {}
    for player in ("streambed", "dashjs"):
        out = tmp_path / player
        argv = ["emulate", "--traces", str(traces), "--content", str(content)]
        argv += ["--algorithms", "robustmpc", "--player", player, "--link", "netns"]
        argv += ["--parallel", "2", "--max-chunks", "3", "--no-progress", "--out", str(out)]
        assert main(argv) == 0, (out / "failed.json").read_text()
        summary = json.loads((out / "summary.json").read_text())
        assert summary["player"] == player and summary["sessions"]["done"] == 2
        for trace in ("flat3", "flat1"):
            info = json.loads((out / "sessions" / "robustmpc" / trace / SESSION_JSON).read_text())
            assert info["player"] == player and info["fallbacks"] == 0
            assert len(read_jsonl(out / "sessions" / "robustmpc" / trace / CHUNKS_JSONL)) == 3
        outs[player] = out
    page = tmp_path / "players.html"
    assert main(["report", str(outs["streambed"]), str(outs["dashjs"]), "--html", str(page)]) == 0
    text = page.read_text()
    assert "robustmpc (streambed)" in text and "robustmpc (dashjs)" in text
    assert "dash.js in Chromium" in text and "headless" in text
    # the paired matrix compares the players per trace; 2 traces are too few for a verdict
    assert "vs robustmpc (dashjs)" in text and "n=2, too few" in text


@pytest.mark.slow
def test_headless_and_dashjs_share_one_link_scored_by_ssim(content: Path, tmp_path: Path) -> None:
    """``--mix bba=1,bba@dashjs=1 --qoe ssim``: a headless player and dash.js behind one netns
    link, each with its own session; both read the SSIM table beside the MPD and score each
    chunk with Puffer's formula, and the link's report names both players."""
    from streambed.abr_service.qoe import make_qoe
    from streambed.abr_service.video import load_video
    from streambed.cli import main
    from streambed.reports.sessionlog import rescore

    traces = tmp_path / "traces"
    traces.mkdir()
    (traces / "flat4").write_text("".join(f"{t}\t4.0\n" for t in range(60)))
    out = tmp_path / "out"
    argv = ["emulate", "--traces", str(traces), "--content", str(content), "--qoe", "ssim"]
    argv += ["--mix", "bba=1,bba@dashjs=1", "--link", "netns", "--max-chunks", "3"]
    assert main([*argv, "--no-progress", "--out", str(out)]) == 0, (out / "failed.json").read_text()
    metric = make_qoe("ssim", load_video(content))
    players = set()
    for label in ("flat4-p1", "flat4-p2"):
        session = out / "sessions" / "bba" / label
        info = json.loads((session / SESSION_JSON).read_text())
        records = read_jsonl(session / CHUNKS_JSONL)
        assert info["status"] == "done" and len(records) == 3
        assert [r.qoe for r in records] == pytest.approx([r.qoe for r in rescore(records, metric)])
        players.add(info["player"])
    assert players == {"streambed", "dashjs"}
    assert "flat4" in (out / "links.csv").read_text()


def test_emulate_dashjs_needs_encoded_content(tmp_path: Path) -> None:
    from streambed.emulation.orchestrate import EmulateConfig

    with pytest.raises(ConfigError, match="--player dashjs decodes the media"):
        EmulateConfig(
            traces=tmp_path, algorithms=("bba",), out=tmp_path, video=tmp_path, player="dashjs"
        )
