"""ruff, ruff format, mypy and import-linter are part of the test run (``scripts/lint.py``).

import-linter holds the floors of the house (pyproject's ``[tool.importlinter]``): a layers
contract (each floor imports only the floors below it) and an acyclic-siblings contract (no two
sibling packages or modules import each other, at any depth).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("step", ["ruff", "format", "mypy", "imports"])
def test_lint(step: str) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lint.py"), step],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
