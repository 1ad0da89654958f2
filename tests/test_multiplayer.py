"""Several players behind one link (issue 22): Jain's index, the delivery log, and real shared
netns and mahimahi links under ``streambed emulate --clients-per-link``.

The real runs use a small generated video of large chunks (2 levels of 2-3 Mbit/s, 1 s each)
so that the HTTP headers the players do not count stay far below the 1% the byte check allows.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_mahimahi import python, reachable  # noqa: F401 (fixtures)

from streambed.abr_service.video import generate_video
from streambed.cli import main
from streambed.core.errors import ConfigError
from streambed.emulation.schedule import OPPORTUNITY_BYTES, DeliveryLog, PacketLink, Schedule
from streambed.emulation.shared import parse_mix, parse_windows
from streambed.reports.delivery import parse_delivery_log, read_delivery_log
from streambed.reports.links import jain

ROOT = Path(__file__).resolve().parent.parent
CHUNKS = 6


# ---------------------------------------------------------------------------------------------
# Pure parts


def test_jain_index_hand_computed() -> None:
    assert jain([5.0, 5.0, 5.0, 5.0]) == 1.0
    assert jain([1.0, 0.0, 0.0, 0.0]) == 0.25  # one takes all: 1/n
    # (1+2+3)^2 / (3 * (1+4+9)) = 36/42
    assert jain([1.0, 2.0, 3.0]) == pytest.approx(36 / 42)
    assert jain([]) is None and jain([0.0, 0.0]) is None


HAND_LOG = """\
# mahimahi mm-link (downlink) [trace] > log
# base timestamp: 1000
1000 + 1500
1000 + 1000
1002 # 1504
1002 - 1500 2
1004 # 1504
1004 - 1000 4
1500 # 1504
2100 + 700
2100 d 1 700
2200 # 1504
"""


def test_delivery_log_parser_on_a_hand_written_log() -> None:
    found = parse_delivery_log(HAND_LOG.splitlines())
    assert found.base_ms == 1000
    assert found.delivered_bytes == 2500 and found.arrived_bytes == 3200
    assert found.dropped_bytes == 700
    assert found.capacity_bytes == 4 * 1504
    assert found.delivered_per_s == [2500, 0]  # second 0: [1000, 2000) ms; second 1: none
    assert found.capacity_per_s == [3 * 1504, 1504]
    assert found.utilisation == pytest.approx(2500 / (4 * 1504))
    # queue bytes after each millisecond with a change: 2500, 1000, 0, then +700 -700 = 0
    assert found.queue == [(0.0, 2500), (0.002, 1000), (0.004, 0), (1.1, 0)]
    assert found.queue_max_bytes == 2500


def test_delivery_log_errors_name_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "delivery.log"
    bad.write_text("# base timestamp: 5\n7 ? 10\n")
    with pytest.raises(ConfigError, match=r"delivery.log:2: unknown event"):
        read_delivery_log(bad)
    bad.write_text("7 + 10\n")
    with pytest.raises(ConfigError, match="before '# base timestamp'"):
        read_delivery_log(bad)


def test_the_shaper_queue_log_reads_back(tmp_path: Path) -> None:
    """The netns shaper's writer and the parser agree: idle opportunities are logged too."""
    path = tmp_path / "down.log"
    events = DeliveryLog(str(path), 100.0)
    link = PacketLink(Schedule([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 100.0))
    link.events = events
    out: list[tuple[float, bytes]] = []
    link.enqueue(b"x" * 1500, 100.5)
    link.advance(103.0, out)  # departs at 101; 102, 103 pass idle (not logged yet)
    link.enqueue(b"y" * 3000, 105.5)  # 102..105 logged as idle opportunities now
    link.advance(110.0, out)  # 106 and 107 carry it (1504 + 1496)
    events.close()
    found = read_delivery_log(path)
    assert [len(p) for _, p in out] == [1500, 3000]
    assert found.delivered_bytes == 4500 and found.arrived_bytes == 4500
    assert found.capacity_bytes == 7 * OPPORTUNITY_BYTES  # 101..107
    assert found.queue[-1][1] == 0 and found.queue_max_bytes == 3000


def test_mix_and_window_parsing() -> None:
    assert parse_mix("ppo=2,robustmpc=2") == (
        ("ppo", "streambed", 2),
        ("robustmpc", "streambed", 2),
    )
    assert parse_mix("bba=1,bba@dashjs=1") == (("bba", "streambed", 1), ("bba", "dashjs", 1))
    for bad, why in (
        ("bba", "expected ALGORITHM"),
        ("bba=0", "COUNT must be >= 1"),
        ("bba@vlc=1", "player 'vlc'"),
        ("bba=1,bba=2", "given twice"),
        ("bba=1,,mpc=1", "expected ALGORITHM"),
    ):
        with pytest.raises(ConfigError, match=why):
            parse_mix(bad)
    assert parse_windows(["10:20,2:4", "30:31"]) == ((2.0, 4.0), (10.0, 20.0), (30.0, 31.0))
    for bad in ("5", "5:3", "a:b", "-1:2"):
        with pytest.raises(ConfigError, match="START:STOP"):
            parse_windows([bad])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--mix", "bba=two"], "--mix 'bba=two'"),
        (["--mix", "bba=1", "--algorithms", "bba"], "drop --algorithms"),
        (["--mix", "bba=1,robustmpc=1", "--clients-per-link", "3"], "make them agree"),
        (["--algorithms", "bba", "--clients-per-link", "0"], "--clients-per-link 0"),
        (
            ["--algorithms", "bba", "--clients-per-link", "2", "--compare-sim"],
            "one session per link",
        ),
        (["--algorithms", "bba", "--cross-traffic", "9:3"], "--cross-traffic '9:3'"),
        (["--algorithms", "bba", "--stagger-s", "-1", "--clients-per-link", "2"], "--stagger-s"),
        ([], "give --algorithms"),
    ],
)
def test_bad_shared_link_flags_fail_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "t").write_text("0 6\n1 6\n")
    argv = ["emulate", "--traces", str(tmp_path / "traces"), "--video", str(tmp_path / "v")]
    code = main([*argv, *extra, "--link", "proxy", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err, err
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# Real links


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("multiplayer-inputs")
    root.chmod(0o755)  # the mahimahi user reads the traces
    video = generate_video(num_chunks=CHUNKS, chunk_s=1.0, bitrates_kbps=(2000, 3000))
    video_json = video.save(root / "video.json")
    traces = root / "traces"
    traces.mkdir()
    (traces / "flat6").write_text("".join(f"{t}\t6.0\n" for t in range(60)))
    for path in (root, traces, video_json, traces / "flat6"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return traces, video_json


@pytest.fixture(scope="module")
def shared_netns(inputs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    traces, video_json = inputs
    out = tmp_path_factory.mktemp("multiplayer") / "out"
    argv = ["emulate", "--traces", str(traces), "--video", str(video_json)]
    argv += ["--algorithms", "bba", "--clients-per-link", "2", "--link", "netns"]
    argv += ["--cross-traffic", "0.5:2.5", "--no-progress", "--out", str(out)]
    code = main(argv)
    assert code == 0, (out / "failed.json").read_text()
    return out


def test_two_players_share_one_netns_link(shared_netns: Path) -> None:
    out = shared_netns
    for i in (1, 2):
        session = out / "sessions" / "bba" / f"flat6-p{i}"
        info = json.loads((session / "session.json").read_text())
        assert info["status"] == "done" and info["chunks"] == CHUNKS
        assert (session / "chunks.jsonl").is_file() and (session / "pensieve.log").is_file()
    link_dir = out / "links" / "bba-flat6"
    link = json.loads((link_dir / "link.json").read_text())
    assert link["status"] == "done" and link["kind"] == "netns"
    assert [p["session_dir"] for p in link["players"]] == [
        "sessions/bba/flat6-p1",
        "sessions/bba/flat6-p2",
    ]
    group = json.loads((link_dir / "group.json").read_text())
    assert [p["exit_status"] for p in group["players"]] == [0, 0]
    (row,) = list(csv.DictReader((out / "links.csv").read_text().splitlines()))
    assert row["link"] == "bba-flat6" and row["players"] == "2"
    assert 0 < float(row["jain_bitrate"]) <= 1 and 0 < float(row["utilisation"]) <= 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["links"]["count"] == 1 and summary["sessions"]["done"] == 2
    assert (link_dir / "timeline.pdf").stat().st_size > 1000
    per_trace = [
        r["trace"] for r in csv.DictReader((out / "per_trace.csv").read_text().splitlines())
    ]
    assert sorted(per_trace) == ["flat6-p1", "flat6-p2"]


def test_the_origin_delivered_what_the_players_counted(shared_netns: Path) -> None:
    """TCP payload the shaper delivered from the origin's port = the players' chunk, init and
    MPD bytes, within 1% (the difference: HTTP response headers)."""
    link = json.loads((shared_netns / "links" / "bba-flat6" / "link.json").read_text())
    delivered = link["stats"]["down_by_port"][str(link["origin_port"])]["payload_bytes"]
    players = 0
    for i in (1, 2):
        info = json.loads((shared_netns / "sessions/bba" / f"flat6-p{i}/session.json").read_text())
        players += info["chunk_bytes_total"] + info["init_bytes"] + info["mpd_bytes"]
    assert players > 3_000_000
    assert delivered >= players and delivered == pytest.approx(players, rel=0.01)
    (row,) = list(csv.DictReader((shared_netns / "links.csv").read_text().splitlines()))
    assert int(row["origin_payload_bytes"]) == delivered and int(row["players_bytes"]) == players


def test_cross_traffic_carries_bytes_through_the_link(shared_netns: Path) -> None:
    link_dir = shared_netns / "links" / "bba-flat6"
    cross = json.loads((link_dir / "cross.json").read_text())
    (window,) = cross["windows"]
    assert window["error"] is None and window["connected_s"] >= 0.5
    assert cross["bytes"] > 100_000
    link = json.loads((link_dir / "link.json").read_text())
    by_port = link["stats"]["down_by_port"]
    # what the downloader read crossed the link (the rest was queued when it closed)
    assert by_port[str(link["cross_port"])]["payload_bytes"] >= cross["bytes"]
    log = read_delivery_log(link_dir / "delivery.log")
    ip_total = sum(c["ip_bytes"] for c in by_port.values())
    assert log.delivered_bytes == ip_total  # the log and the counters saw the same packets
    origin = by_port[str(link["origin_port"])]["payload_bytes"]
    assert log.delivered_bytes > origin + cross["bytes"]


def test_resume_skips_done_links_and_reruns_an_unfinished_one(
    shared_netns: Path, inputs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    traces, video_json = inputs
    argv = ["emulate", "--traces", str(traces), "--video", str(video_json)]
    argv += ["--algorithms", "bba", "--clients-per-link", "2", "--link", "netns", "--resume"]
    argv += ["--no-progress", "--out", str(shared_netns)]
    capsys.readouterr()
    assert main(argv) == 0
    assert "2 planned, 2 already done, 0 run" in capsys.readouterr().out
    session = shared_netns / "sessions/bba/flat6-p2/session.json"
    session.unlink()  # one player unfinished: the whole link runs again
    assert main(argv) == 0
    assert "2 planned, 0 already done, 2 run" in capsys.readouterr().out
    assert json.loads(session.read_text())["status"] == "done"


def test_two_players_behind_real_mahimahi(
    python: str,  # noqa: F811
    reachable: Path,  # noqa: F811
    inputs: tuple[Path, Path],
) -> None:
    traces, video_json = inputs
    out = reachable / "out"
    args = ["emulate", "--traces", str(traces), "--video", str(video_json), "--mix", "bba=2"]
    args += ["--link", "mahimahi", "--stagger-s", "0.5", "--no-progress", "--out", str(out)]
    result = subprocess.run(
        [python, "-m", "streambed", *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    failed = out / "failed.json"
    assert result.returncode == 0, result.stderr[-2000:] + (
        failed.read_text() if failed.exists() else ""
    )
    link_dir = out / "links" / "mix-flat6"
    group = json.loads((link_dir / "group.json").read_text())
    assert [p["start_s"] for p in group["players"]] == [0.0, 0.5]
    log = read_delivery_log(link_dir / "delivery.log")  # mm-link's own log
    players = sum(
        json.loads((out / "sessions/bba" / f"flat6-p{i}/session.json").read_text())[
            "chunk_bytes_total"
        ]
        for i in (1, 2)
    )
    assert log.delivered_bytes > players  # IP bytes: headers on top of the payload
    assert log.delivered_bytes < players * 1.1
    (row,) = list(csv.DictReader((out / "links.csv").read_text().splitlines()))
    assert row["kind"] == "mahimahi" and float(row["utilisation"]) > 0


def test_two_plays_under_one_streambed_link(tmp_path: Path) -> None:
    """The README's one-liner: two ``streambed play`` behind one ``streambed link``."""
    from streambed.abr_service.app.main import create_app as create_service
    from streambed.abr_service.app.settings import Settings
    from streambed.core.servers import serve_in_thread
    from streambed.server.app import create_app as create_origin
    from streambed.server.build import build_synthetic
    from streambed.server.mpd import MPD_NAME

    video = generate_video(num_chunks=3, chunk_s=1.0, bitrates_kbps=(300, 750))
    content = build_synthetic(video, tmp_path / "content")
    service = create_service(Settings(models_dir=tmp_path / "models"), videos=[video])
    trace = tmp_path / "flat6"
    trace.write_text("".join(f"{t}\t6.0\n" for t in range(60)))
    with (
        serve_in_thread(create_origin(content), host="0.0.0.0") as origin,
        serve_in_thread(service, host="0.0.0.0") as abr,
    ):
        o, a = origin.rsplit(":", 1)[1], abr.rsplit(":", 1)[1]
        play = (
            f"{sys.executable} -m streambed play --via-link --algorithm bba "
            f"--mpd http://127.0.0.1:{o}/{MPD_NAME} --abr http://127.0.0.1:{a}"
        )
        script = f"{play} --log {tmp_path}/p1 & p1=$!; {play} --log {tmp_path}/p2 & p2=$!; "
        script += "wait $p1 && wait $p2"
        result = subprocess.run(
            [sys.executable, "-m", "streambed", "link", "--kind", "netns", "--port", o]
            + ["--port", a, "--delay-ms", "20", str(trace), "--", "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("p1", "p2"):
        info = json.loads((tmp_path / name / "session.json").read_text())
        assert info["status"] == "done" and info["chunks"] == 3
        assert info["link"]["kind"] == "netns"


def test_the_group_forwards_sigterm_and_still_writes_its_status(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    status = tmp_path / "group.json"
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    players = [
        {"label": f"p{i}", "argv": sleeper, "start_s": 0.0, "log": str(tmp_path / f"p{i}.log")}
        for i in (1, 2)
    ]
    spec.write_text(json.dumps({"players": players, "status": str(status)}))
    group = subprocess.Popen([sys.executable, "-m", "streambed.player.group", f"--spec={spec}"])
    deadline = time.monotonic() + 30
    while not all((tmp_path / f"p{i}.log").exists() for i in (1, 2)):
        assert time.monotonic() < deadline and group.poll() is None
        time.sleep(0.05)
    group.send_signal(signal.SIGTERM)
    assert group.wait(20) == 143
    found = json.loads(status.read_text())
    assert found["terminated"] is True
    assert [p["exit_status"] for p in found["players"]] == [128 + signal.SIGTERM] * 2


def test_a_bad_group_spec_is_one_line(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"players": []}))
    result = subprocess.run(
        [sys.executable, "-m", "streambed.player.group", f"--spec={spec}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and result.stderr.strip() == f"error: --spec {spec}: no players"
