"""The wheel is whole: built, installed (not editable) into a fresh virtual environment, and run
from a folder that has its own ``traces/``, it works with no checkout in sight.

From the same install, ``streambed play --install-browser`` installs dash.js and playwright-core
(the pinned lockfile, npm's cache allowed) into ``$STREAMBED_WEB_DIR``, and a short
``play --browser`` session against an origin and a decision service started from the wheel
follows the service's decisions.

The fresh environment borrows the already-installed third-party packages (torch, numpy, ...)
through a path file, so the test needs no network; the wheel itself is installed with pip and
the checkout is never on its path. ``pip check`` then verifies the wheel's declared
dependencies against what it found.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_browser import CHUNK_S, LADDER, RESOLUTIONS, service_decisions

from streambed import __version__
from streambed.core.errors import ConfigError
from streambed.core.servers import free_port, wait_healthy
from streambed.server import web
from streambed.server.mpd import MPD_NAME

ROOT = Path(__file__).resolve().parents[1]
WEB_FILES = (
    "player.html",
    "streambed-abr.js",
    "streambed-player.js",
    "streambed-decide-worker.js",
    "drive.mjs",
    "package.json",
    "package-lock.json",
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return env | extra


def run(
    *cmd: str | Path,
    cwd: Path,
    timeout: float = 600,
    env: dict[str, str] | None = None,
    status: int = 0,
) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env() if env is None else env,
    )
    assert out.returncode == status, f"{cmd}: exit {out.returncode}\n{out.stdout}\n{out.stderr}"
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
        *(f"streambed/player/web/{name}" for name in WEB_FILES),
        "streambed/reports/templates/report.html.j2",
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


# ---------------------------------------------------------------------------------------------
# The dash.js player outside a checkout


@pytest.fixture
def bare_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shipped web files alone, as a wheel installs them (no node_modules)."""
    package = tmp_path / "package-web"
    package.mkdir()
    for name in WEB_FILES:
        shutil.copyfile(web.PACKAGE_WEB_DIR / name, package / name)
    monkeypatch.setattr(web, "PACKAGE_WEB_DIR", package)
    return package


def fake_npm(path: Path, status: int = 0) -> Path:
    """An ``npm`` that makes the two packages' package.json (or fails with ``status``)."""
    made = " && ".join(
        f"mkdir -p node_modules/{p} && echo {{}} > node_modules/{p}/package.json"
        for p in web.NODE_PACKAGES
    )
    path.write_text(f"#!/bin/sh\n{made if status == 0 else f'exit {status}'}\n")
    path.chmod(0o755)
    return path


def test_the_web_folder_is_the_installed_copy_of_these_very_files(
    bare_package: Path, tmp_path: Path
) -> None:
    target = tmp_path / "installed"
    env = {web.WEB_DIR_ENV: str(target)}
    with pytest.raises(ConfigError, match=r"not installed\): run streambed play --install-browser"):
        web.resolve_web_dir(env)
    # npm failing leaves no usable copy.
    with pytest.raises(ConfigError, match=r"npm ci in .* failed \(exit 7"):
        web.install_web(target, npm=str(fake_npm(tmp_path / "npm-fails", 7)))
    assert web.find_web_dir(env) is None
    assert web.install_web(target, npm=str(fake_npm(tmp_path / "npm"))) == target
    assert web.resolve_web_dir(env) == target
    assert {p.name for p in web.shipped_files(target)} == set(WEB_FILES)
    # Other shipped files (a newer wheel of the same version): the copy is stale.
    (bare_package / "player.html").write_text("<!-- changed -->\n")
    with pytest.raises(ConfigError, match=r"another streambed \(" + __version__):
        web.resolve_web_dir(env)
    with pytest.raises(ConfigError, match=r"needs npm \('no-such-npm'"):
        web.install_web(target, npm="no-such-npm")
    # The default folder is per version, under the user's cache.
    assert web.installed_web_dir({"XDG_CACHE_HOME": "/c"}) == Path(
        f"/c/streambed/web-{__version__}"
    )


@contextmanager
def server(argv: list[str | Path], env: dict[str, str], cwd: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(a) for a in argv] + ["--host", "127.0.0.1", "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_healthy(url, proc, 60) is None, f"{argv[:2]} did not start"
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.slow
def test_installed_wheel_plays_in_the_browser_after_install_browser(
    fresh: Path, tmp_path: Path
) -> None:
    streambed = fresh / "bin" / "streambed"
    env = clean_env(STREAMBED_WEB_DIR=str(tmp_path / "web"), npm_config_prefer_offline="true")
    play = [streambed, "play", "--browser", "--algorithm", "bba", "--session-id", "wheel-1"]
    # Before the install: one line naming the command that fixes it.
    before = run(
        *play, "--mpd", "http://127.0.0.1:9/m.mpd", "--abr", "http://127.0.0.1:9",
        "--log", tmp_path / "not-played", cwd=tmp_path, env=env, status=2,
    )  # fmt: skip
    assert "streambed play --install-browser" in before.stderr, before.stderr
    installed = run(streambed, "play", "--install-browser", cwd=tmp_path, env=env)
    assert f"installed in {tmp_path / 'web'}" in installed.stdout, installed.stdout
    assert (tmp_path / "web" / "node_modules" / "dashjs" / "package.json").is_file()
    chunks = 3
    content = tmp_path / "content"
    run(
        streambed, "origin", "build", "--out", content, "--duration-s", str(chunks * CHUNK_S),
        "--chunk-s", str(CHUNK_S), "--fps", "12",
        "--ladder-kbps", ",".join(map(str, LADDER)),
        "--resolutions", ",".join(f"{w}x{h}" for w, h in RESOLUTIONS),
        cwd=tmp_path, env=env,
    )  # fmt: skip
    decisions = tmp_path / "decisions"
    serve = [streambed, "serve", "--video", content / "video.json", "--log-dir", decisions]
    origin = [streambed, "origin", "--content", content]
    with server(origin, env, tmp_path) as mpd_at, server(serve, env, tmp_path) as abr:
        assert "dash.all.min.js" in run(
            fresh / "bin" / "python", "-c",
            f"import httpx; print(httpx.get('{mpd_at}/player.html').text)",
            cwd=tmp_path, env=env,
        ).stdout  # fmt: skip
        log = tmp_path / "played"
        played = run(
            *play, "--mpd", f"{mpd_at}/{MPD_NAME}", "--abr", abr, "--log", log,
            cwd=tmp_path, env=env, timeout=300,
        )  # fmt: skip
    summary = json.loads((log / "session.json").read_text())
    assert (summary["status"], summary["player"], summary["chunks"]) == ("done", "dashjs", chunks)
    assert summary["fallbacks"] == 0, played.stderr
    records = [json.loads(line) for line in (log / "chunks.jsonl").read_text().splitlines()]
    assert service_decisions(decisions, "wheel-1") == {
        r["chunk_index"]: r["quality"] for r in records
    }
    assert {r["algorithm"] for r in records} == {"bba"}
