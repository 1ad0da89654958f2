"""Fast start: ``streambed --help`` and every subcommand's ``--help`` import no heavy library.

Checked on ``sys.modules`` in a fresh interpreter (deterministic), not timed:
benchmarks/bench_cli.py times them.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from streambed.cli import COMMANDS, build_parser, main

HEAVY = ("torch", "matplotlib", "fastapi", "uvicorn", "gymnasium", "pydantic", "pandas")

_PROBE = """
import sys
from streambed.cli import main
try:
    main({argv!r})
except SystemExit as exc:
    print("exit", exc.code)
print(sorted(m for m in {heavy!r} if m in sys.modules))
print(sorted(m for m in sys.modules if m.startswith("streambed.commands.")))
"""


def _help_imports(argv: list[str]) -> tuple[str, list[str], list[str]]:
    """``streambed ARGV`` in a fresh interpreter: its output, the heavy modules it imported and
    the command modules it imported."""
    code = _PROBE.format(argv=argv, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = out.stdout.splitlines()
    assert len(lines) >= 3 and lines[-3] == "exit 0", out.stdout + out.stderr
    return out.stdout, eval(lines[-2]), eval(lines[-1])


def test_top_level_help_imports_no_command_module() -> None:
    stdout, heavy, commands = _help_imports(["--help"])
    assert heavy == [] and commands == []
    for name, (_, help_text) in COMMANDS.items():
        assert name in stdout
        assert help_text.split()[0] in stdout


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_command_help_imports_nothing_heavy(command: str) -> None:
    _, heavy, commands = _help_imports([command, "--help"])
    assert heavy == [], f"streambed {command} --help imported {heavy}"
    assert commands == [COMMANDS[command][0]]  # its own module only


def test_the_table_matches_the_modules() -> None:
    """The one-line helps of ``streambed --help`` (from COMMANDS) are the modules' own."""
    for name, (module, help_text) in COMMANDS.items():
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(module).register(sub)
        assert [a.dest for a in sub._choices_actions] == [name]
        assert sub._choices_actions[0].help == help_text


def test_an_unknown_command_and_none_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["nope"], []):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err
    assert "required: COMMAND" in err


def test_train_algorithm_flags_are_added_when_used() -> None:
    """``streambed train --help`` lists the algorithms without importing the trainer (torch);
    ``streambed train ppo ...`` still gets every flag of ``PPOArgs``."""
    args = build_parser("train").parse_args(["train", "ppo", "--gamma", "0.9", "--steps", "7"])
    assert args.algorithm == "ppo" and args.gamma == 0.9 and args.steps == 7
    assert args.args_cls.__name__ == "PPOArgs"
    _, heavy, _ = _help_imports(["train", "--help"])
    assert "torch" not in heavy
