"""ruff, mypy and import-linter over the one ``streambed`` package (what CI runs in tests/test_lint).

``streambed.traces`` lives in ``traces/`` through setuptools' ``package-dir``; the editable
install finds it with an import hook that mypy and import-linter cannot see. So both read a tree
of links, ``build/lint/streambed``, laid out as the wheel is (remade on every run, so new files
are always in it).

    python scripts/lint.py            # everything
    python scripts/lint.py mypy       # one of: ruff, format, mypy, imports
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
TREE = ROOT / "build" / "lint"
BIN = Path(sys.executable).parent


def link_tree() -> Path:
    """``build/lint/streambed``: the package as installed, its modules links into the checkout
    (folders are real: import-linter does not walk linked folders)."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    shutil.rmtree(TREE, ignore_errors=True)
    for name, folder in sorted(mapping.items(), key=lambda item: item[0].count(".")):
        target = TREE / Path(*name.split("."))
        for source in (ROOT / folder).rglob("*.py"):
            relative = source.relative_to(ROOT / folder)
            if name == "streambed" and (TREE / "streambed" / relative.parts[0]).is_symlink():
                continue
            if "node_modules" in relative.parts:
                continue
            link = target / relative
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source)
    return TREE


def run(*cmd: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> int:
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=cwd, env=env).returncode


def ruff() -> int:
    return run(str(BIN / "ruff"), "check", ".")


def format_check() -> int:
    return run(str(BIN / "ruff"), "format", "--check", ".")


def mypy() -> int:
    tree = link_tree()
    env = dict(os.environ, MYPYPATH=str(tree))
    return run(str(BIN / "mypy"), "-p", "streambed", env=env) or run(
        str(BIN / "mypy"), "benchmarks", env=env
    )


def imports() -> int:
    tree = link_tree()
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")])
    )
    # From inside the tree: the checkout's own streambed/ folder must not shadow it.
    config = str(ROOT / "pyproject.toml")
    return run(str(BIN / "lint-imports"), "--no-cache", config, env=env, cwd=tree)


STEPS = {"ruff": ruff, "format": format_check, "mypy": mypy, "imports": imports}


def main(argv: list[str]) -> int:
    names = argv or list(STEPS)
    unknown = [n for n in names if n not in STEPS]
    if unknown:
        print(f"lint: unknown step {unknown[0]!r}; steps: {', '.join(STEPS)}", file=sys.stderr)
        return 2
    failed = [n for n in names if STEPS[n]() != 0]
    if failed:
        print(f"lint: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
