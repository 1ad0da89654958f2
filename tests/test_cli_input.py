"""Careless input to the commands: one line and exit status 2 (ports in use, comma lists)."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streambed.cli import comma_list, main
from streambed.core.errors import ConfigError
from streambed.core.servers import check_bindable


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_check_bindable(taken_port: int) -> None:
    with pytest.raises(ConfigError, match=rf"127\.0\.0\.1:{taken_port}: already in use"):
        check_bindable("127.0.0.1", taken_port)
    check_bindable("127.0.0.1", 0)
    with pytest.raises(ConfigError, match="unknown address"):
        check_bindable("no-such-host.invalid", 8080)


def _streambed(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streambed", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("command", ["serve", "origin"])
def test_port_in_use_is_one_line_and_status_2(
    command: str, taken_port: int, tmp_path: Path
) -> None:
    # Before: serve logged "listening on ..." and then uvicorn's 7-line report, status 3.
    extra = ["--models-dir", str(tmp_path)] if command == "serve" else ["--content", str(tmp_path)]
    done = _streambed(command, "--host", "127.0.0.1", "--port", str(taken_port), *extra)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        f"streambed {command}: error: cannot listen on 127.0.0.1:{taken_port}: already in use"
    ]
    assert "listening" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bba,,robustmpc", "empty name"),
        (",bba", "empty name"),
        ("bba, bba", "bba given more than once"),
    ],
)
def test_comma_list(value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        comma_list(value, "--algorithms")
    assert comma_list(" bba , robustmpc", "--algorithms") == ["bba", "robustmpc"]


def test_emulate_refuses_an_empty_algorithm_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["emulate", "--traces", str(tmp_path), "--algorithms", "bba,,rb"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("streambed emulate: error: --algorithms 'bba,,rb': empty name")
    assert not (tmp_path / "out").exists()


def test_origin_ladder_refuses_an_empty_entry() -> None:
    from streambed.commands.origin import _ladder

    with pytest.raises(argparse.ArgumentTypeError, match="300,,750"):
        _ladder("300,,750,1200")
    assert _ladder("300, 750,1200") == [300, 750, 1200]
