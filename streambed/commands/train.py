"""``streambed train {ppo,a3c,dqn,imitate}``: flags generated from each trainer's argument
dataclass.

Every field of the dataclass is a flag (``learning_rate`` -> ``--learning-rate``) whose help is
the field's docstring; booleans take ``--x/--no-x``. ``--arch NAME`` picks the policy
architecture; the hyperparameters it suggests fill the flags of the same names that the command
line did not give (see :mod:`streambed.abr_service.architectures`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from streambed.core.errors import ConfigError
from streambed.core.fielddocs import field_docs

log = logging.getLogger(__name__)


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type) -> None:
    docs = {name: " ".join(doc.split()) for name, doc in field_docs(cls).items()}
    for f in fields(cls):
        default = f.default if f.default is not MISSING else None
        flag = "--" + f.name.replace("_", "-")
        if f.default_factory is list:  # a repeatable flag
            help_text = f"{docs.get(f.name, '')} (repeatable)".replace("%", "%%")
            parser.add_argument(
                flag, action="append", default=None, metavar=f.name.upper(), help=help_text
            )
            continue
        help_text = f"{docs.get(f.name, '')} (default: {default!r})".replace("%", "%%")
        if isinstance(default, bool):
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            kind = type(default) if default is not None else str
            parser.add_argument(
                flag, type=kind, default=None, metavar=f.name.upper(), help=help_text
            )


# algorithm -> (module of its arguments dataclass, the dataclass, one-line help)
ALGORITHMS: dict[str, tuple[str, str, str]] = {
    "ppo": (
        "streambed.trainer.ppo",
        "PPOArgs",
        "PPO with dual clip and adaptive or scheduled entropy",
    ),
    "a3c": (
        "streambed.trainer.a3c",
        "A3CArgs",
        "synchronous advantage actor-critic with an entropy schedule (Pensieve)",
    ),
    "dqn": (
        "streambed.trainer.dqn",
        "DQNArgs",
        "double DQN with a target network, replay and an epsilon schedule",
    ),
    "imitate": (
        "streambed.trainer.imitate",
        "ImitateArgs",
        "behaviour cloning and DAgger from a teacher (Comyco-style)",
    ),
}


class _AlgorithmParser(argparse.ArgumentParser):
    """An algorithm's parser, which adds its flags when it is first used: they are the fields of
    the trainer's dataclass, whose module imports torch; ``streambed train --help`` must not."""

    algorithm: str | None = None

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self.algorithm is not None:
            module_name, cls_name, _ = ALGORITHMS[self.algorithm]
            self.algorithm = None
            module = importlib.import_module(module_name)
            cls = getattr(module, cls_name)
            self.description = module.__doc__
            add_dataclass_args(self, cls)
            self.set_defaults(func=run, args_cls=cls)
        return super().parse_known_args(args, namespace)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a policy (ppo, a3c, dqn, imitate) on the batched simulator",
        description="Train an ABR policy offline; runs live under --out (args.json, best.pt, "
        "last.pt, metrics.csv, TensorBoard events in tb/). An --out that holds a previous run "
        "is refused unless --resume continues it or --force replaces it.",
    )
    sub = p.add_subparsers(
        dest="algorithm", metavar="ALGORITHM", required=True, parser_class=_AlgorithmParser
    )
    for name, (_, _, text) in ALGORITHMS.items():
        q = sub.add_parser(name, help=text, formatter_class=argparse.RawDescriptionHelpFormatter)
        q.algorithm = name


def run(ns: argparse.Namespace) -> int:
    from streambed.trainer.args import check_args
    from streambed.trainer.loop import train

    cls = ns.args_cls
    given = {
        f.name: getattr(ns, f.name) for f in fields(cls) if getattr(ns, f.name, None) is not None
    }
    if given.get("resume"):
        previous = saved_args(Path(given.get("out") or cls().out) / "args.json", ns.algorithm, cls)
        values = {**previous, **given}  # flags given now (e.g. a longer budget) win
    else:
        values = {**arch_suggestions(cls, given.get("arch") or cls().arch, given), **given}
    args = cls(**values)
    check_args(args, given)
    summary = train(_trainer_class(ns.algorithm), args)
    print(json.dumps(summary, indent=2))
    return 0


def saved_args(path: Path, algorithm: str, cls: type) -> dict[str, Any]:
    """The arguments a run saved in ``path`` (its args.json), for ``--resume``."""
    if not path.is_file():
        raise ConfigError(f"--resume: {path} does not exist")
    try:
        previous = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--resume: {path} is not readable JSON ({exc})") from None
    if not isinstance(previous, dict):
        raise ConfigError(f"--resume: {path} is not a JSON object")
    saved_algorithm = previous.pop("algorithm", algorithm)
    if saved_algorithm != algorithm:
        raise ConfigError(
            f"--resume: {path} is a {saved_algorithm} run; resume it with "
            f"streambed train {saved_algorithm}"
        )
    defaults = cls()
    names = {f.name for f in fields(cls)}
    for key, value in previous.items():
        if key not in names:
            raise ConfigError(f"--resume: {path} has an unknown argument {key!r}")
        kind = type(getattr(defaults, key))
        fits = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not (fits or (kind is float and type(value) is int)):
            raise ConfigError(f"--resume: {path}: {key} is {value!r}, not a {kind.__name__}")
    return previous


def arch_suggestions(cls: type, arch: str, given: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters ``arch`` suggests for fields of ``cls`` that ``given`` lacks."""
    from streambed.abr_service.architectures import suggested_defaults
    from streambed.trainer.networks import get_architecture

    names = {f.name: f for f in fields(cls)}
    applied: dict[str, Any] = {}
    for key, value in suggested_defaults(get_architecture(arch)).items():
        if key in names and key not in given:
            kind = type(getattr(cls(), key))
            try:
                applied[key] = kind(value)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"--arch {arch}: suggested {key}={value!r} is not a {kind.__name__}"
                ) from None
    if applied:
        log.info("--arch %s suggests %s", arch, ", ".join(f"{k}={v}" for k, v in applied.items()))
    return applied


def _trainer_class(name: str) -> Any:
    if name == "ppo":
        from streambed.trainer.ppo import PPO

        return PPO
    if name == "a3c":
        from streambed.trainer.a3c import A3C

        return A3C
    if name == "dqn":
        from streambed.trainer.dqn import DQN

        return DQN
    from streambed.trainer.imitate import Imitate

    return Imitate
