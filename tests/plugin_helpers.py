"""Installed-looking plug-ins without installing anything, shared by the plug-in tests."""

from __future__ import annotations

import textwrap
from pathlib import Path


def fake_distribution(
    site: Path,
    name: str,
    version: str,
    entry_points: dict[str, dict[str, str]],
    modules: dict[str, str] | None = None,
) -> Path:
    """A ``<name>-<version>.dist-info`` (METADATA, entry_points.txt by group) and module files
    in ``site``: importlib.metadata finds the entry points once ``site`` is on sys.path."""
    site.mkdir(parents=True, exist_ok=True)
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines: list[str] = []
    for group, entries in entry_points.items():
        lines += [f"[{group}]", *(f"{k} = {v}" for k, v in entries.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines))
    for module, source in (modules or {}).items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
    return info
