"""``streambed emulate --cluster``: sessions as Ray tasks on a real local Ray cluster of two
nodes (``ray.cluster_utils.Cluster``: a head and a worker raylet on this machine, each
declaring 2 ``netns_slot``), behind netns links (needs root, as test_emulate).

4 constant traces x 2 algorithms over a small generated video; the cluster's report has the
local executor's structure, its sessions ran on both nodes, and each session's QoE agrees with
a local run's within the local executor's own run-to-run spread. A worker node killed mid-run
has its sessions retried on the head, and the run completes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streambed.abr_service.video import generate_video
from streambed.cli import main
from streambed.emulation import netns

ray = pytest.importorskip("ray", reason="the cluster extra: pip install 'streambed-abr[cluster]'")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the netns link needs root")
TRACES = {"c4": 4.0, "c5": 5.0, "c6": 6.0, "c8": 8.0}
ALGOS = "bba,robustmpc"
SLOT = {"netns_slot": 2}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cluster-inputs")
    video = generate_video(num_chunks=6, chunk_s=1.0, bitrates_kbps=(300, 750, 1850))
    video_json = video.save(root / "video.json")
    traces = root / "traces"
    traces.mkdir()
    for name, mbps in TRACES.items():
        (traces / name).write_text("".join(f"{t}\t{mbps}\n" for t in range(60)))
    return traces, video_json


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": SLOT})
    nodes.add_node(num_cpus=1, resources=SLOT)
    nodes.wait_for_nodes()
    try:
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()
        _remove_orphan_links()


def _remove_orphan_links() -> None:
    """Links of processes that were killed with their node (a machine's death takes them)."""
    for name in netns.list_namespaces():
        pid = name.removeprefix(netns.NETNS_PREFIX).split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run(["ip", "netns", "pids", name], capture_output=True)
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def emulate(inputs: tuple[Path, Path], out: Path, *extra: str) -> int:
    traces, video_json = inputs
    argv = ["emulate", "--traces", str(traces), "--video", str(video_json), "--algorithms", ALGOS]
    argv += ["--link", "netns", "--parallel", "4", "--no-progress", "--out", str(out)]
    return main([*argv, *extra])


def qoe(out: Path) -> dict[tuple[str, str], float]:
    rows = (out / "per_trace.csv").read_text().splitlines()
    header = rows[0].split(",")
    found = {}
    for row in rows[1:]:
        cells = dict(zip(header, row.split(","), strict=True))
        found[(cells["algorithm"], cells["trace"])] = float(cells["qoe"])
    return found


def files(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in (out / "sessions").rglob("*") if p.is_file()}


def test_a_two_node_cluster_runs_the_local_executors_sessions(
    inputs: tuple[Path, Path], cluster: Cluster, tmp_path: Path
) -> None:
    assert emulate(inputs, tmp_path / "local-a") == 0
    assert emulate(inputs, tmp_path / "local-b") == 0
    assert emulate(inputs, tmp_path / "ray", "--cluster", cluster.address) == 0
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["complete"] and summary["sessions"] == {"planned": 8, "done": 8, "failed": 0}
    per_node = summary["cluster"]["sessions_per_node"]
    assert len(per_node) == 2 and sum(per_node.values()) == 8, per_node  # both nodes ran some
    local = json.loads((tmp_path / "local-a" / "summary.json").read_text())
    assert set(summary) - {"cluster"} == set(local) - {"cluster"}
    assert files(tmp_path / "ray") == files(tmp_path / "local-a")
    a, b, on_ray = qoe(tmp_path / "local-a"), qoe(tmp_path / "local-b"), qoe(tmp_path / "ray")
    assert set(on_ray) == set(a) and len(a) == 8
    spread = max(abs(a[k] - b[k]) for k in a)  # the local executor's run to run
    worst = max(abs(on_ray[k] - a[k]) for k in a)
    print(f"local run-to-run {spread:.4f}, cluster against local {worst:.4f} (QoE per session)")
    assert worst <= max(2 * spread, 0.05), (spread, worst, on_ray, a)
    # --resume on the cluster: nothing left to run
    assert emulate(inputs, tmp_path / "ray", "--cluster", cluster.address, "--resume") == 0
    again = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert again["sessions"] == summary["sessions"] and again["cluster"]["sessions_per_node"] == {}


def test_ctrl_c_cancels_the_cluster_sessions(
    inputs: tuple[Path, Path], cluster: Cluster, tmp_path: Path
) -> None:
    """SIGINT to ``streambed emulate --cluster``: the tasks are cancelled, each tearing its link
    down, and the partial report is written (exit 130), as the local executor does."""
    traces, video_json = inputs
    argv = [sys.executable, "-m", "streambed", "emulate", "--traces", str(traces)]
    argv += ["--video", str(video_json), "--algorithms", ALGOS, "--link", "netns"]
    argv += ["--no-progress", "--cluster", cluster.address, "--out", str(tmp_path / "ray")]
    before = set(netns.list_namespaces())
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # a CI run started in the background inherits SIGINT ignored: a terminal's Ctrl-C is not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not set(netns.list_namespaces()) - before:  # sessions are running
        assert time.monotonic() < deadline and proc.poll() is None, proc.stdout
        time.sleep(0.2)
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output[-3000:]
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["interrupted"] and summary["sessions"]["done"] < 8
    deadline = time.monotonic() + 20
    while set(netns.list_namespaces()) - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not set(netns.list_namespaces()) - before  # every link torn down


def test_a_killed_worker_node_has_its_sessions_retried(
    inputs: tuple[Path, Path], cluster: Cluster, tmp_path: Path
) -> None:
    worker = next(iter(cluster.worker_nodes))
    # sessions (about 8 s each) are running on both nodes 4 s in
    kill = threading.Timer(4, cluster.remove_node, (worker,), {"allow_graceful": False})
    kill.start()
    try:
        assert emulate(inputs, tmp_path / "ray", "--cluster", cluster.address) == 0
    finally:
        kill.cancel()
    assert not worker.any_processes_alive()
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["complete"] and summary["sessions"] == {"planned": 8, "done": 8, "failed": 0}
    assert sum(summary["cluster"]["sessions_per_node"].values()) == 8
    # the dead node's scratch (on a real cluster, on that machine)
    for scratch in Path(tempfile.gettempdir()).glob(f"streambed-{summary['run_id']}-*"):
        shutil.rmtree(scratch, ignore_errors=True)


def test_central_servers_on_a_cluster_are_checked_before_any_session(
    inputs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One line, before Ray is asked for anything: a loopback --abr (every node's loopback is
    itself), or a central --abr behind netns links (they reach their own node only)."""
    traces, video_json = inputs
    argv = ["emulate", "--traces", str(traces), "--video", str(video_json), "--algorithms", "bba"]
    argv += ["--no-progress", "--cluster", "198.51.100.1:6379", "--out", str(tmp_path / "o")]
    for link, abr, message in (
        ("mahimahi", "http://127.0.0.1:8333", "every node's loopback is itself"),
        ("netns", "http://198.51.100.9:8333", "reached through Mahimahi's NAT only"),
    ):
        assert main([*argv, "--link", link, "--abr", abr]) == 2
        err = capsys.readouterr().err
        assert f"--abr {abr}: with --cluster" in err and message in err, err
