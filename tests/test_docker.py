"""The Docker stack's files, checked without a Docker engine: the compose file has the services,
capabilities and volumes the README describes, and every ``streambed`` command it (and the
image) runs parses with the CLI's own parser, with the compose defaults substituted.
The stack itself is built and run for real by ``scripts/compose-ci.sh`` (a stage of CI)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from streambed.cli import build_parser

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
        script = [*entrypoint[2:], *command][0]
        for name, value in (service.get("environment") or {}).items():
            script = re.sub(rf"\${name}\b", str(value), script)
        return [c[c.index("streambed") + 1 :] for c in shell_commands(script) if "streambed" in c]
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
    # Mahimahi's shells: TUN devices and NAT (NET_ADMIN), a network namespace (SYS_ADMIN)
    assert emulator["cap_add"] == ["NET_ADMIN", "SYS_ADMIN"]
    assert "security_opt" not in emulator and "privileged" not in emulator
    assert "--link mahimahi" in emulator["command"][0]  # the one kind that reaches other containers
    assert any(d.split(":")[0] == "/dev/net/tun" for d in emulator["devices"])
    assert str(emulator["sysctls"]["net.ipv4.ip_forward"]) == "1"
    assert any(v.startswith("./results:/results") for v in emulator["volumes"])
    assert emulator["depends_on"]["origin"]["condition"] == "service_healthy"
    assert emulator["depends_on"]["abr"]["condition"] == "service_healthy"
    assert services["abr"]["depends_on"]["origin"]["condition"] == "service_healthy"
    # `up --exit-code-from emulator` aborts when any container exits: no one-shot services
    one_shot = [n for n, s in services.items() if "profiles" not in s and n != "emulator"]
    assert all("healthcheck" in services[n] for n in one_shot), one_shot
    assert services["trainer"]["profiles"] == ["trainer"]
    assert services["tensorboard"]["profiles"] == ["tensorboard"]
    assert "--push" in " ".join(services["trainer"]["command"])
    for name in ("origin", "abr"):
        assert "healthz" in " ".join(services[name]["healthcheck"]["test"])
    for name in ("origin", "abr", "trainer", "tensorboard"):  # only the emulator is root
        assert "user" not in services[name] and "cap_add" not in services[name]
    assert "USER streambed" in DOCKERFILE.read_text()
    # Named volumes used anywhere are declared.
    for service in services.values():
        for volume in service.get("volumes", []):
            source = interpolate(volume).split(":")[0]
            if not source.startswith((".", "/")):
                assert source in data["volumes"], source


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
    assert ("emulator", "traces", "generate") in names
    assert ("trainer", "traces", "generate") in names
