"""``streambed algorithms``: every algorithm this installation knows, where it comes from, the
observation it declares (if any), its parameters and their defaults; the policy architectures
and observations; algorithm plug-ins that could not be loaded, with the reason (architecture
and observation plug-ins that fail are named in the log's warnings)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from streambed.abr_service.algorithms.registry import (
    GROUP,
    AlgorithmInfo,
    available_algorithms,
    load_errors,
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "algorithms",
        help="list the ABR algorithms (built-in and plug-ins) and their parameters",
        description=(
            "List every ABR algorithm usable by name (eval --algorithms, POST /decide, emulate, "
            f"play, train imitate --teacher): the built-ins and the plug-ins of the {GROUP!r} "
            "entry-point group, with their parameters and defaults (set them with --param "
            "NAME.KEY=VALUE). Plug-ins that failed to load are listed with the reason."
        ),
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def as_json() -> dict[str, Any]:
    """What ``--json`` prints: ``{"algorithms": [...], "errors": {name: reason},
    "architectures": [...], "observations": [...]}``."""
    return {
        "algorithms": [info.to_json() for info in available_algorithms().values()],
        "errors": load_errors(),
        **networks(),
    }


def _where(obj: Any) -> str:
    return f"{type(obj).__module__}:{type(obj).__qualname__}"


def networks() -> dict[str, list[dict[str, Any]]]:
    """The policy architectures (``--arch``) and the observations they may read."""
    from streambed.abr_service.architectures import (
        architectures,  # imports torch: only when listing
    )
    from streambed.abr_service.observation import observations

    return {
        "architectures": [
            {"name": name, "obs_version": arch.obs_version, "class": _where(arch)}
            for name, arch in architectures().items()
        ],
        "observations": [
            {"version": version, "shape": list(obs.shape), "class": _where(obs)}
            for version, obs in observations().items()
        ],
    }


def _format(info: AlgorithmInfo) -> list[str]:
    lines = [f"{info.name}  [{info.source}]  {info.cls.__module__}:{info.cls.__qualname__}"]
    if info.observation is not None:
        lines.append(f"    observation: {info.observation}")
    for p in info.params:
        doc = f"  {p.doc.splitlines()[0]}" if p.doc else ""
        bounds = p.range
        valid = f"  {list(bounds)}" if bounds is not None else ""
        if p.choices is not None:
            valid = f"  {{{', '.join(p.choices)}}}"
        lines.append(f"    {p.name}: {p.type} = {p.default!r}{valid}{doc}")
    if not info.params:
        lines.append("    (no parameters)")
    return lines


def run(args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(as_json(), indent=2, default=str))
        return 0
    lines: list[str] = []
    for info in available_algorithms().values():
        lines += _format(info)
    nets = networks()
    lines.append("")
    lines.append("policy architectures (train --arch; streambed.policies):")
    lines += [
        f"  {a['name']}  reads {a['obs_version']}  {a['class']}" for a in nets["architectures"]
    ]
    lines.append("observations (streambed.observations):")
    lines += [
        f"  {o['version']}  shape {tuple(o['shape'])}  {o['class']}" for o in nets["observations"]
    ]
    errors = load_errors()
    if errors:
        lines.append("")
        lines.append(f"plug-ins not loaded ({GROUP}):")
        lines += [f"  {name}: {reason}" for name, reason in sorted(errors.items())]
    print("\n".join(lines))
    return 0
