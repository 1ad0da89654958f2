"""The mahimahi link against the real Mahimahi (``mm-link``/``mm-delay``), and netns beside it.

These tests FAIL, not skip, when mm-link is missing: CI builds it (scripts/setup.sh --dev runs
scripts/install-mahimahi.sh). As root (CI, the compose emulator), Mahimahi runs as the
unprivileged ``$STREAMBED_MAHIMAHI_USER`` (default streambed, else nobody), who must be able to
execute the Python that runs behind the link: when this interpreter is not reachable by that user
(a pyenv under a mode-700 /root), a venv of Debian's /usr/bin/python3 that imports this venv's
site-packages is made for the tests, and the checkout itself must be readable (checked, and
explained when not).

The side-by-side cases download 2 and 5 MB through netns and mm-link (median of 3 each,
interleaved) on a constant and a variable trace at 0 and 40 ms, and require agreement within 3%:
real Mahimahi is the reference of the netns shaper.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from streambed.core.errors import ConfigError
from streambed.emulation import mahimahi
from streambed.emulation.link import LinkSpec, resolve_kind, start_behind_link
from streambed.traces.formats import save_mahimahi

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = os.urandom(5_000_000)
MB = 1_000_000


def require_real_mahimahi() -> None:
    missing = mahimahi.mahimahi_missing()
    assert not missing, (
        f"{' and '.join(missing)} not on PATH: run scripts/setup.sh --dev as root (it builds "
        "Mahimahi from ../shared/vendor/mahimahi-*.tar.gz) or scripts/install-mahimahi.sh"
    )
    assert Path(mahimahi.IP_FORWARD).read_text().strip() == "1", (
        "net.ipv4.ip_forward is 0: run `sysctl -w net.ipv4.ip_forward=1` (setup.sh --dev does)"
    )


@pytest.fixture(scope="module")
def python() -> str:
    """An interpreter the Mahimahi user can run that imports this checkout's streambed."""
    require_real_mahimahi()
    if not mahimahi.run_as_root():
        return sys.executable
    user = mahimahi.run_user()
    py = mahimahi.readable_python()
    check = subprocess.run(
        [
            py,
            "-c",
            "from streambed.emulation import mahimahi as m; m.check_command(m.sys.executable)",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert check.returncode == 0, (
        f"user {user.pw_name!r} cannot run streambed from {ROOT} even with {py}: "
        f"{check.stderr.strip().splitlines()[-1:]}"
    )
    return py


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A directory the Mahimahi user can reach and write (pytest's tmp_path is mode 700)."""
    path = Path(tempfile.mkdtemp(prefix="streambed-mm-test-"))
    path.chmod(0o755)
    mahimahi.grant(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def streambed(python: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "streambed", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def constant(tmp: Path, opps_per_ms: int, name: str = "constant.mm") -> Path:
    path = tmp / name
    save_mahimahi([t for t in range(1, 1001) for _ in range(opps_per_ms)], path)
    return path


def steps_trace(tmp: Path) -> Path:
    """2 s steps of 12, 3, 6, 1.5, 24 Mbit/s (Pensieve format; the link converts it)."""
    path = tmp / "steps.txt"
    rates = (12, 3, 6, 1.5, 24)
    path.write_text("".join(f"{2 * i} {r}\n" for i, r in enumerate(rates)) + "10 12\n")
    return path


# ---------------------------------------------------------------------------------------------
# Exit statuses and the unprivileged user


def test_exit_statuses_pass_through_real_mm_link(tmp_path: Path, python: str) -> None:
    trace = constant(tmp_path, 1)
    script = (
        "import sys; from pathlib import Path; from streambed.emulation.link import "
        "LinkSpec, run_behind_link as r; s = LinkSpec(Path(sys.argv[1]), kind='mahimahi', "
        "delay_ms=10); print([r(s, ['sh', '-c', c]) for c in sys.argv[2:]])"
    )
    result = subprocess.run(
        [python, "-c", script, str(trace), "exit 0", "exit 9", "exit 3", "kill -TERM $$"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[0, 9, 3, 143]"


def test_the_cli_runs_as_root_and_keeps_the_status(
    tmp_path: Path, python: str, reachable: Path
) -> None:
    trace = steps_trace(tmp_path)
    out = reachable
    cmd = f'echo "$STREAMBED_HOST $(id -u)" > {out}/env; exit 7'
    result = streambed(
        python, "link", "--kind", "mahimahi", "--delay-ms", "20", str(trace), "--", "sh", "-c", cmd
    )
    assert result.returncode == 7, result.stderr
    host, uid = (out / "env").read_text().split()
    assert host.startswith("10.0.0.")  # $MAHIMAHI_BASE
    assert (int(uid) != 0) == (os.getuid() == 0 or int(uid) == os.getuid())


def test_unusable_user_or_interpreter_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_real_mahimahi()
    if not mahimahi.run_as_root():
        monkeypatch.setattr(mahimahi, "run_as_root", lambda: True)
    monkeypatch.setenv(mahimahi.USER_ENV, "no-such-user-here")
    with pytest.raises(ConfigError, match="STREAMBED_MAHIMAHI_USER='no-such-user-here'"):
        resolve_kind("mahimahi")
    monkeypatch.setenv(mahimahi.USER_ENV, "root")
    with pytest.raises(ConfigError, match="unprivileged"):
        resolve_kind("mahimahi")
    monkeypatch.setenv(mahimahi.USER_ENV, "nobody")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "python").symlink_to(sys.executable)
    with pytest.raises(ConfigError) as info:
        mahimahi.check_command(str(private / "python"))
    message = str(info.value)
    assert "\n" not in message and str(private) in message and "nobody" in message
    # auto as root passes Mahimahi over (for netns) instead of switching users
    if os.getuid() == 0:
        assert resolve_kind("auto") == "netns"


# ---------------------------------------------------------------------------------------------
# netns beside the real mm-link


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = memoryview(PAYLOAD)[: int(self.path.rsplit("/", 1)[1])]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("0.0.0.0", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def download_s(spec: LinkSpec, port: int, size: int, tmp: Path) -> float:
    """curl's total time for ``size`` bytes from the host server, through ``spec``'s link."""
    out = tmp / f"curl-{spec.kind}"  # the command may run as another user: it writes in tmp
    url = f"http://$STREAMBED_HOST:{port}/bytes/{size}"
    cmd = f"curl -sS -o /dev/null -w '%{{time_total}}' {url} > {out}.tmp; s=$?; cat {out}.tmp > {out}; exit $s"
    with start_behind_link(spec, ["sh", "-c", cmd]) as linked:
        status = linked.wait(120)
    assert status == 0, f"curl through {spec.kind}: status {status}"
    return float(out.read_text())


CASES = [
    (trace, delay, size) for trace in ("constant", "steps") for delay in (0, 40) for size in (2, 5)
]


@pytest.mark.parametrize(("trace", "delay", "size"), CASES)
def test_netns_agrees_with_real_mm_link(
    tmp_path: Path,
    python: str,
    reachable: Path,
    server_port: int,
    trace: str,
    delay: int,
    size: int,
) -> None:
    path = constant(tmp_path, 1) if trace == "constant" else steps_trace(tmp_path)
    times: dict[str, list[float]] = {"mahimahi": [], "netns": []}
    for _ in range(3):  # interleaved, so that load on the machine hits both alike
        for kind in times:
            spec = LinkSpec(path, delay_ms=delay, kind=kind)
            times[kind].append(download_s(spec, server_port, size * MB, reachable))
    mm, ns = (statistics.median(times[k]) for k in ("mahimahi", "netns"))
    # 3%, or mm-link's own run-to-run spread where that is larger: on the stepping trace a
    # download can end within tens of ms of a step, and start-up jitter (in mm-link as in netns)
    # then moves its end by up to half a second (seen: mm-link 4.10 and 4.66 s for the same case).
    # The same jitter moves netns's runs, so the larger of the two spreads counts.
    spread = max(max(t) - min(t) for t in times.values())
    tolerance = max(0.03 * mm, spread)
    assert abs(ns - mm) <= tolerance, (
        f"netns {ns:.3f} s vs mm-link {mm:.3f} s (tolerance {tolerance:.3f} s): {json.dumps(times)}"
    )


# ---------------------------------------------------------------------------------------------
# play and emulate behind the real Mahimahi (both players)


@pytest.fixture(scope="module")
def emulate_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three traces, and 4 x 2 s of ffmpeg-encoded content (dash.js decodes it)."""
    from streambed.server.build import build_encoded

    root = tmp_path_factory.mktemp("mm-emulate")
    root.chmod(0o755)
    content = build_encoded(
        root / "content",
        duration_s=8,
        ladder_kbps=(300, 750, 1200),
        chunk_s=2.0,
        resolutions=[(256, 144), (320, 180), (384, 216)],
        fps=12,
        vmaf=False,
    )
    traces = root / "traces"
    traces.mkdir()
    for name, mbps in (("flat6", 6.0), ("flat3", 3.0)):
        (traces / name).write_text("".join(f"{t}\t{mbps}\n" for t in range(60)))
    (traces / "steps").write_text(steps_trace(root).read_text())
    return traces, content


@pytest.mark.parametrize("player", ["streambed", "dashjs"])
def test_emulate_behind_real_mahimahi(
    python: str, reachable: Path, emulate_inputs: tuple[Path, Path], player: str
) -> None:
    traces, content = emulate_inputs
    out = reachable / "out"
    args = ["emulate", "--traces", str(traces), "--content", str(content), "--algorithms"]
    args += ["bba", "--link", "mahimahi", "--delay-ms", "20", "--player", player]
    args += ["--max-chunks", "3", "--parallel", "2", "--no-progress", "--out", str(out)]
    result = streambed(python, *args, timeout=600)
    failed = out / "failed.json"
    assert result.returncode == 0, result.stderr[-2000:] + (
        failed.read_text() if failed.exists() else ""
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["player"] == player and summary["sessions"]["done"] == 3
    for trace in ("flat6", "flat3", "steps"):
        info = json.loads((out / "sessions" / "bba" / trace / "session.json").read_text())
        assert info["status"] == "done" and info["chunks"] == 3
        assert info["mpd_url"].startswith("http://10.0.0.")  # through Mahimahi


def test_play_behind_real_mahimahi(python: str, reachable: Path, tmp_path: Path) -> None:
    from streambed.abr_service.app.main import create_app as create_service
    from streambed.abr_service.app.settings import Settings
    from streambed.abr_service.video import generate_video
    from streambed.core.servers import serve_in_thread
    from streambed.server.app import create_app as create_origin
    from streambed.server.build import build_synthetic
    from streambed.server.mpd import MPD_NAME

    video = generate_video(seed=3, num_chunks=4, chunk_s=1.0, name="mm-play")
    content = build_synthetic(video, tmp_path / "content")
    service = create_service(Settings(models_dir=tmp_path / "models"), videos=[video])
    trace = steps_trace(tmp_path)
    log_dir = reachable / "log"
    with (
        serve_in_thread(create_origin(content), host="0.0.0.0") as origin,
        serve_in_thread(service, host="0.0.0.0") as abr,
    ):
        result = streambed(
            python,
            "play",
            "--mpd",
            f"{origin}/{MPD_NAME}",
            "--abr",
            abr,
            "--max-chunks",
            "3",
            "--trace",
            str(trace),
            "--link",
            "mahimahi",
            "--log",
            str(log_dir),
        )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((log_dir / "session.json").read_text())
    assert summary["status"] == "done" and summary["chunks"] == 3
    # re-pointed at $MAHIMAHI_BASE (10.0.0.x: Mahimahi picks a free subnet per shell)
    assert summary["mpd_url"].startswith("http://10.0.0.")
