"""The wheel is whole: built, installed (not editable) into a fresh virtual environment, and run
from a folder that has its own ``traces/``, it works with no checkout in sight.

The fresh environment borrows the already-installed third-party packages (torch, numpy, ...)
through a path file, so the test needs no network; the wheel itself is installed with pip and
the checkout is never on its path. ``pip check`` then verifies the wheel's declared
dependencies against what it found.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*cmd: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
    assert out.returncode == 0, f"{cmd}: exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    # The build goes through a copy of the tree: setuptools writes build/ and egg-info beside it.
    run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", dist, ROOT, cwd=dist,
    )  # fmt: skip
    (found,) = dist.glob("streambed_abr-*.whl")
    return found


@pytest.fixture(scope="module")
def fresh(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv)
    python = venv / "bin" / "python"
    purelib = run(
        python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=venv
    ).stdout.strip()
    # Third-party packages only: a plain path line, so the checkout's editable hook (a .pth
    # there) is never run in the fresh environment.
    Path(purelib, "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel,
        cwd=venv)  # fmt: skip
    return venv


def test_the_wheel_holds_one_import_name_and_the_run_time_files(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"streambed"}
    for needed in (
        "streambed/models/ppo-norway.pt",
        "streambed/player/web/player.html",
        "streambed/player/web/streambed-abr.js",
        "streambed/player/web/drive.mjs",
        "streambed/player/web/package-lock.json",
        "streambed/traces/__init__.py",
        "streambed/abr_service/app/routers/__init__.py",
        "streambed/core/errors.py",
    ):
        assert needed in names, needed


def test_installed_wheel_runs_from_a_folder_with_its_own_traces(
    fresh: Path, tmp_path: Path
) -> None:
    (tmp_path / "traces").mkdir()  # a user's data folder, named like a subpackage
    (tmp_path / "traces" / "__init__.py").write_text("raise ImportError('the wrong traces')\n")
    bin_ = fresh / "bin"
    where = run(bin_ / "python", "-c", "import streambed; print(streambed.__file__)", cwd=tmp_path)
    assert where.stdout.strip().startswith(str(fresh)), where.stdout
    assert "usage: streambed" in run(bin_ / "streambed", "--help", cwd=tmp_path).stdout
    run(bin_ / "python", "-m", "streambed", "traces", "--help", cwd=tmp_path)
    made = run(
        bin_ / "python", "-c",
        "import streambed, gymnasium; env = gymnasium.make('streambed/ABR-v0'); "
        "print(env.reset(seed=0)[0].shape)",
        cwd=tmp_path,
    )  # fmt: skip
    assert made.stdout.strip() == "(6, 8)"
    run(bin_ / "streambed", "demo", "--sim-only", "--out", "demo", cwd=tmp_path)
    summary = json.loads((tmp_path / "demo" / "eval" / "summary.json").read_text())
    assert {"bba", "robustmpc", "ppo"} <= set(summary["algorithms"])


def test_pip_check_finds_every_declared_dependency(fresh: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(fresh / "bin" / "python"), "check"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    relevant = [line for line in out.stdout.splitlines() if "streambed-abr" in line.lower()]
    assert not relevant, out.stdout
