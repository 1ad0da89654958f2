"""``streambed serve``: settings from flags and STREAMBED_* variables, and a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from streambed.abr_service.app.settings import Settings
from streambed.cli import build_parser, main
from streambed.commands.serve import settings_from_args
from streambed.core.errors import ConfigError
from streambed.core.servers import free_port, wait_healthy


def parse(*argv: str) -> Settings:
    args = build_parser().parse_args(["serve", *argv])
    settings = settings_from_args(args)
    assert isinstance(settings, Settings)
    return settings


def test_defaults_env_and_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = parse()
    assert (s.port, s.algorithm, s.fallback_algorithm, s.first_quality) == (
        8333,
        "robustmpc",
        "bba",
        1,
    )
    monkeypatch.setenv("STREAMBED_PORT", "9001")
    monkeypatch.setenv("STREAMBED_ALGORITHM", "bola")
    monkeypatch.setenv("STREAMBED_MODELS_DIR", str(tmp_path))
    s = parse()
    assert (s.port, s.algorithm, s.models_dir) == (9001, "bola", tmp_path)
    s = parse("--port", "9002", "--video", "a", "--video", "b")  # flags win
    assert (s.port, s.algorithm, s.videos) == (9002, "bola", [Path("a"), Path("b")])


def test_bad_settings_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="port"):
        parse("--port", "70000")
    monkeypatch.setenv("STREAMBED_SESSION_IDLE_S", "-3")
    with pytest.raises(ConfigError, match="STREAMBED_SESSION_IDLE_S"):
        parse()
    monkeypatch.delenv("STREAMBED_SESSION_IDLE_S")
    empty = tmp_path / "token"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        parse("--token-file", str(empty)).read_token()
    with pytest.raises(ConfigError, match="missing"):
        parse("--token-file", str(tmp_path / "missing")).read_token()


def test_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMBED_TOKEN", "abc")
    assert parse().read_token() == "abc"


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--token-file" in out and "STREAMBED_" in out


def test_unknown_video_file_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["serve", "--video", str(tmp_path / "nope"), "--models-dir", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err


def test_serve_process(tmp_path: Path) -> None:
    port = free_port()
    token = tmp_path / "token"
    token.write_text("t0k\n")
    env = {**os.environ, "STREAMBED_RUN_ID": "proc"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streambed.cli",
            "serve",
            "--port",
            str(port),
            "--models-dir",
            str(tmp_path / "models"),
            "--token-file",
            str(token),
            "--log-dir",
            str(tmp_path / "logs"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_healthy(url, proc) is None, "serve did not start"
        health = httpx.get(f"{url}/healthz").json()
        assert health["uploads_enabled"] is True and health["default_algorithm"] == "robustmpc"
        r = httpx.post(f"{url}/decide", json={"session_id": "p", "chunk_index": 0, "buffer_s": 0})
        assert r.json()["quality"] == 1
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "listening on http://127.0.0.1" in out
    assert '"run_id": "proc"' in (tmp_path / "logs" / "p.jsonl").read_text()
