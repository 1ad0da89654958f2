"""The Docker stack without a Docker engine: the compose file parses and has what the issue asks
for, every ``streambed`` command it (and the image) runs exists in the CLI with those flags, and
the default services' commands run natively as written (paths, hosts and ports rewritten),
ending in the emulation's HTML report."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from streambed.cli import build_parser
from streambed.core.servers import free_port, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
OPERATORS = {"&&", "||", ";", ";;", "|", "&", "(", ")", "\n"}


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def interpolate(text: str) -> str:
    """Compose's variable interpolation with every variable unset: ``${X:-d}`` -> d, ``$$`` -> $."""
    text = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", text)
    return text.replace("$$", "$")


def shell_commands(script: str) -> list[list[str]]:
    """The simple commands of a shell script, split at ;, &&, ||, | and newlines."""
    lexer = shlex.shlex(script.replace("\n", " ; "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for word in lexer:
        if word in OPERATORS or set(word) <= set(";&|()"):
            commands.append([])
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


def streambed_argvs(service: dict[str, Any]) -> list[list[str]]:
    """Every ``streambed`` argv a compose service runs (after its first bare ``streambed`` word:
    skips ``exec``, ``setpriv ...``, ``if``/``then``)."""
    entrypoint = service.get("entrypoint") or ["streambed"]
    command = service.get("command") or []
    entrypoint = [entrypoint] if isinstance(entrypoint, str) else list(entrypoint)
    command = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
    if entrypoint[:2] == ["/bin/sh", "-c"]:
        words = [*entrypoint[2:], *command]
        return [c[c.index("streambed") + 1 :] for c in shell_commands(words[0]) if "streambed" in c]
    if entrypoint == ["streambed"]:
        return [command]
    return []


def all_argvs() -> list[tuple[str, list[str]]]:
    services = compose()["services"]
    cases = [
        (name, argv)
        for name, service in services.items()
        for argv in streambed_argvs(yaml.safe_load(interpolate(yaml.safe_dump(service))))
    ]
    # The image's own ENTRYPOINT + CMD.
    text = DOCKERFILE.read_text()
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert entry and cmd and yaml.safe_load(entry.group(1)) == ["streambed"]
    cases.append(("Dockerfile CMD", yaml.safe_load(cmd.group(1))))
    return cases


def test_compose_services_and_privileges() -> None:
    data = compose()
    services = data["services"]
    assert {"origin", "abr", "emulator", "trainer", "tensorboard"} <= set(services)
    assert "8333:8333" in services["abr"]["ports"]
    emulator = services["emulator"]
    assert emulator["cap_add"] == ["NET_ADMIN"]
    assert any(d.split(":")[0] == "/dev/net/tun" for d in emulator["devices"])
    assert str(emulator["sysctls"]["net.ipv4.ip_forward"]) == "1"
    assert any(v.startswith("./results:/results") for v in emulator["volumes"])
    assert any(v.endswith(":/traces:ro") for v in emulator["volumes"])
    assert emulator["depends_on"]["origin"]["condition"] == "service_healthy"
    assert emulator["depends_on"]["abr"]["condition"] == "service_healthy"
    assert services["abr"]["depends_on"]["origin"]["condition"] == "service_healthy"
    assert services["trainer"]["profiles"] == ["trainer"]
    assert services["tensorboard"]["profiles"] == ["tensorboard"]
    assert "--push" in " ".join(services["trainer"]["command"])
    for name in ("origin", "abr"):
        assert "healthz" in " ".join(services[name]["healthcheck"]["test"])
    for name in ("origin", "abr", "trainer", "tensorboard"):  # only the emulator is root
        assert "user" not in services[name] and "privileged" not in services[name]
    assert "USER streambed" in DOCKERFILE.read_text()
    # Named volumes used anywhere are declared.
    for service in services.values():
        for volume in service.get("volumes", []):
            source = interpolate(volume).split(":")[0]
            if not source.startswith((".", "/")):
                assert source in data["volumes"], source


def test_compose_config_validates() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on this machine")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"docker client has no compose plugin here: {probe.stderr.strip()}")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


CASES = all_argvs()


@pytest.mark.parametrize(
    "argv", [pytest.param(argv, id=f"{name}:{' '.join(argv[:2])}") for name, argv in CASES]
)
def test_every_command_parses(argv: list[str]) -> None:
    if argv == ["--help"]:
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(argv)
        assert exit_info.value.code == 0
        return
    build_parser(argv[0]).parse_args(argv)


def test_commands_found() -> None:
    names = {(name, argv[0], argv[1] if len(argv) > 1 else "") for name, argv in CASES}
    assert ("origin", "origin", "build") in names
    assert ("origin", "origin", "--content") in names
    assert ("abr", "serve", "--host") in names
    assert ("emulator", "emulate", "--traces") in names
    assert ("emulator", "report", "/results") in names
    assert ("trainer", "train", "ppo") in names
    assert ("traces", "traces", "generate") in names


def start(script: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            ["/bin/sh", "-c", script], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def assert_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, limit_s: float) -> None:
    why = wait_healthy(url, proc, limit_s)
    assert why is None, f"{url} {why}:\n{log.read_text()}"


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_native_stack(tmp_path: Path) -> None:
    """Every default service's compose command, run by /bin/sh as written, in compose's order,
    with the container paths, host names and ports rewritten. Three changes, all forced by the
    host: ``--duration-s 8`` (a 2-chunk real build, so the emulation takes seconds), the netns
    link for Mahimahi (Debian has no mahimahi package; the image has), and no ``setpriv``/``chown``
    (they drop root to the image's ``streambed`` user, which this host has not)."""
    services = compose()["services"]
    origin_port, abr_port = free_port(), free_port()
    origin_url, abr_url = f"http://127.0.0.1:{origin_port}", f"http://127.0.0.1:{abr_port}"
    rewrite = {
        "/data/content": str(tmp_path / "content"),
        "/data/secrets": str(tmp_path / "secrets"),
        "/data/models": str(tmp_path / "models"),
        "/app/models": str(ROOT / "models"),
        "/traces": str(tmp_path / "traces"),
        "/results": str(tmp_path / "results"),
        "http://origin:8080": origin_url,
        "http://abr:8333": abr_url,
        "--port 8080": f"--port {origin_port}",
        "--port 8333": f"--port {abr_port}",
    }
    scripts = {}
    for name in ("origin", "abr", "traces", "emulator"):
        script = interpolate(services[name]["command"][0])
        for old, new in rewrite.items():
            script = script.replace(old, new)
        scripts[name] = script
    build = f"streambed origin build --out {tmp_path / 'content'} --force"
    assert build in scripts["origin"]
    scripts["origin"] = scripts["origin"].replace(build, build + " --duration-s 8")
    drop_root = "setpriv --reuid=streambed --regid=streambed --init-groups streambed"
    assert scripts["emulator"].count(drop_root) == 2 and "--link mahimahi" in scripts["emulator"]
    scripts["emulator"] = (
        scripts["emulator"]
        .replace(drop_root, "streambed")
        .replace(f"chown streambed:streambed {tmp_path / 'results'}", "true")
        .replace("--link mahimahi", "--link netns")
    )
    # The image makes these folders; compose mounts ./results.
    for folder in ("content", "secrets", "models", "traces", "results"):
        (tmp_path / folder).mkdir()
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}

    origin = start(scripts["origin"], env, tmp_path / "origin.log")
    try:
        assert_healthy(origin_url, origin, tmp_path / "origin.log", 300)
        assert httpx.get(f"{origin_url}/manifest.mpd").status_code == 200
        abr = start(scripts["abr"], env, tmp_path / "abr.log")
        try:
            assert_healthy(abr_url, abr, tmp_path / "abr.log", 120)
            token = (tmp_path / "secrets" / "token").read_text().strip()
            assert len(token) >= 32 and (tmp_path / "secrets" / "token").stat().st_mode & 0o077 == 0
            for algorithm in ("robustmpc", "ppo"):
                body = {"session_id": f"docker-{algorithm}", "chunk_index": 0, "buffer_s": 0.0}
                r = httpx.post(f"{abr_url}/decide", json={**body, "algorithm": algorithm})
                assert r.status_code == 200, r.text
                decision = r.json()
                assert decision["algorithm"] == algorithm and not decision["fallback"], decision
                assert 0 <= decision["quality"] < 6
            for name in ("traces", "emulator"):
                job = start(scripts[name], env, tmp_path / f"{name}.log")
                assert job.wait(timeout=300) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
        finally:
            stop(abr)
    finally:
        stop(origin)
    assert origin.returncode == 0, (tmp_path / "origin.log").read_text()
    traces = sorted(p.name for p in (tmp_path / "traces").iterdir())
    assert len(traces) == 6
    results = tmp_path / "results"
    summary = json.loads((results / "summary.json").read_text())
    assert summary["complete"] is True and summary["link"] == "netns"
    assert {name: s["traces"] for name, s in summary["algorithms"].items()} == {
        "bba": 6,
        "robustmpc": 6,
        "ppo": 6,
    }
    with open(results / "sim_vs_emu.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 18
    page = (results / "report.html").read_text()
    assert "robustmpc" in page and "data:image/png;base64," in page
    assert 'id="sim-vs-emu"' in page
