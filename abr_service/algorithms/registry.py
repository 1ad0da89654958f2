"""Every ABR algorithm by name: the built-ins, and plug-ins from installed packages.

A package adds algorithms through the entry-point group ``streambed.algorithms``; each entry
point names an :class:`~streambed.abr_service.algorithms.base.ABRAlgorithm` subclass::

    [project.entry-points."streambed.algorithms"]
    harmonic = "streambed_example.harmonic:HarmonicRate"

The contract:

* The **entry point's name is the registered name** (what ``--algorithms``, ``/decide`` and
  ``--teacher`` accept). It is what pip records and what is unique in the group, so it wins
  over the class's ``name`` attribute; when the two differ, every instance made through the
  registry carries the registered name (session logs and reports are keyed by it).
* ``Params`` is a dataclass whose every field has a default: ``Params()`` must build.
  Per-run values (``--param NAME.KEY=VALUE``, ``/decide``'s ``params``) are checked and
  converted to each field's default's type (bool, int, float or str) by
  :func:`~streambed.abr_service.algorithms.base.parse_params`, the one validation of parameters.
* **Ranges**: declare each numeric field's valid range, both ends inclusive (None: unbounded),
  and each string field's valid values, in the field's metadata::

      from dataclasses import field
      from streambed.abr_service.algorithms.base import CHOICES, RANGE

      window: int = field(default=5, metadata={RANGE: (1, 1000)})
      qoe: str = field(default="lin", metadata={CHOICES: ("lin", "log")})

  ``RANGE`` may also be a zero-argument callable returning the pair (a limit the operator
  sets, as MPC's horizon). A value outside is refused, naming the parameter, the value and the
  range (a 422 from ``/decide``, exit status 2 from the CLI). Without a declaration a number is
  still refused when it is not finite (NaN, inf) or, an integer, beyond 64 bits; types are
  strict either way: a JSON value must have the field's type (no ``true`` for 1, no ``"5"``
  for 5; an integral float is an int), and a command-line string is parsed by it. A range keeps
  a client from making a decision slow or large: declare one for anything that sizes work.
  ``__post_init__`` may refuse combinations (``ValueError``, named in the message).
* The class is built as ``cls(video, params)`` once per session.
* ``observation`` (optional): the version of a registered observation
  (:mod:`streambed.abr_service.observation`) the base class keeps in ``self.obs``.

Discovery runs once per process (cached; :func:`clear_cache` forgets it). An entry point that
fails to import, does not name an ``ABRAlgorithm`` subclass, whose ``Params()`` cannot be built,
that declares an unknown observation, or whose name clashes with a built-in or an earlier
plug-in, is logged as a warning naming it, kept in :func:`load_errors`, and skipped: nothing
else is affected (the discovery every registry shares: :mod:`streambed.abr_service.plugins`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, fields, is_dataclass
from dataclasses import field as dataclass_field
from importlib import metadata
from typing import Any

from streambed.abr_service.algorithms.base import (
    ABRAlgorithm,
    Bounds,
    describe_valid,
    param_choices,
    param_range,
    parse_params,
)
from streambed.abr_service.algorithms.bola import BOLA
from streambed.abr_service.algorithms.buffer_based import BBA
from streambed.abr_service.algorithms.learned import LearnedPolicy
from streambed.abr_service.algorithms.mpc import MPC, RobustMPC
from streambed.abr_service.algorithms.rate_based import RateBased
from streambed.abr_service.observation import observations
from streambed.abr_service.plugins import PluginRegistry, Refused
from streambed.abr_service.video import Video
from streambed.core.errors import ConfigError, StreambedError
from streambed.core.fielddocs import field_docs

log = logging.getLogger(__name__)

GROUP = "streambed.algorithms"
"""The entry-point group plug-in packages register their algorithms in."""

BUILTIN: dict[str, type[ABRAlgorithm]] = {
    cls.name: cls for cls in (BBA, RateBased, BOLA, MPC, RobustMPC, LearnedPolicy)
}
"""The algorithms that ship with Streambed, by name."""

BUILTIN_SOURCE = "built-in"


@dataclass(frozen=True)
class ParamInfo:
    """One parameter of an algorithm's ``Params`` dataclass."""

    name: str
    type: str
    """The field's annotation as written (``int``, ``float``, ``str``...)."""
    default: Any
    doc: str = ""
    """The field's docstring (the string literal under it), if any."""
    field: Field[Any] | None = dataclass_field(default=None, repr=False, compare=False)

    @property
    def range(self) -> Bounds | None:
        """The declared range (resolved now: an operator's limit may change it)."""
        return param_range(self.field) if self.field is not None else None

    @property
    def choices(self) -> tuple[str, ...] | None:
        return param_choices(self.field) if self.field is not None else None

    @property
    def valid(self) -> str:
        """What the parameter accepts, in words (``an integer in [1, 5]``)."""
        return describe_valid(self.field, self.default) if self.field is not None else ""

    def to_json(self) -> dict[str, Any]:
        bounds = self.range
        return {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "doc": self.doc,
            "range": list(bounds) if bounds is not None else None,
            "choices": list(self.choices) if self.choices is not None else None,
            "valid": self.valid,
        }


@dataclass(frozen=True)
class AlgorithmInfo:
    """An algorithm the registry can build."""

    name: str
    cls: type[ABRAlgorithm]
    source: str
    """``built-in``, or ``plugin <dist> <version> (<module:attr>)``."""
    params: tuple[ParamInfo, ...]

    @property
    def builtin(self) -> bool:
        return self.source == BUILTIN_SOURCE

    @property
    def learned(self) -> bool:
        """Served from a checkpoint (needs a model), not a rule."""
        return issubclass(self.cls, LearnedPolicy)

    @property
    def observation(self) -> str | None:
        """The observation the class declares (a learned policy's comes from its checkpoint)."""
        return self.cls.observation

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "class": f"{self.cls.__module__}:{self.cls.__qualname__}",
            "source": self.source,
            "observation": self.observation,
            "params": [p.to_json() for p in self.params],
        }


def describe_params(cls: type[ABRAlgorithm]) -> tuple[ParamInfo, ...]:
    """The parameters of ``cls.Params`` with types, defaults and docstrings.

    Raises ``ConfigError`` when ``Params`` is not a dataclass or ``Params()`` does not build.
    """
    params_cls = getattr(cls, "Params", None)
    if not isinstance(params_cls, type) or not is_dataclass(params_cls):
        raise ConfigError(f"{cls.__qualname__}.Params is not a dataclass: {params_cls!r}")
    try:
        defaults = params_cls()
    except Exception as exc:  # any failure here is the plug-in's, reported by name
        raise ConfigError(
            f"{cls.__qualname__}.Params() cannot be built with defaults: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    docs = field_docs(params_cls)
    out = []
    for f in fields(params_cls):
        _check_declaration(cls, f)
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", repr(f.type))
        has_default = f.default is not MISSING or f.default_factory is not MISSING
        default = getattr(defaults, f.name) if has_default else None
        out.append(ParamInfo(f.name, kind, default, docs.get(f.name, ""), f))
    return tuple(out)


def _check_declaration(cls: type[ABRAlgorithm], f: Field[Any]) -> None:
    """``ConfigError`` unless field ``f``'s declared range is two numbers (or None) and its
    choices strings: a bad declaration skips the plug-in, it never fails a request."""
    where = f"{cls.__qualname__}.Params.{f.name}"
    try:
        bounds = param_range(f)
        choices = param_choices(f)
    except Exception as exc:  # a plug-in's callable range, or a malformed pair
        raise ConfigError(f"{where}: bad range or choices: {type(exc).__name__}: {exc}") from exc
    if bounds is not None and not all(
        b is None or (isinstance(b, (int, float)) and not isinstance(b, bool)) for b in bounds
    ):
        raise ConfigError(f"{where}: range {bounds!r} is not two numbers (or None)")
    if choices is not None and not all(isinstance(c, str) for c in choices):
        raise ConfigError(f"{where}: choices {choices!r} are not strings")


def _entry_point_source(ep: metadata.EntryPoint) -> str:
    dist = ep.dist
    where = f"{dist.name} {dist.version}" if dist is not None else "<unknown distribution>"
    return f"plugin {where} ({ep.value})"


def _load_plugin(ep: metadata.EntryPoint) -> AlgorithmInfo:
    """The plug-in ``ep`` names, checked against the contract; ``ConfigError`` says why not."""
    try:
        obj = ep.load()
    except Exception as exc:  # an import error, a missing attribute, a plug-in's own bug
        raise ConfigError(f"cannot import {ep.value}: {type(exc).__name__}: {exc}") from exc
    if not (isinstance(obj, type) and issubclass(obj, ABRAlgorithm)):
        raise ConfigError(f"{ep.value} is {obj!r}, not an ABRAlgorithm subclass")
    if inspect.isabstract(obj):
        raise ConfigError(f"{ep.value} is abstract (does it implement select?)")
    declared = getattr(obj, "observation", None)
    if declared is not None:
        known = observations()
        if declared not in known:
            raise ConfigError(
                f"{ep.value} declares the unknown observation {declared!r}; "
                f"known: {', '.join(known)}"
            )
    return AlgorithmInfo(ep.name, obj, _entry_point_source(ep), describe_params(obj))


def _builtin_infos() -> dict[str, AlgorithmInfo]:
    return {
        name: AlgorithmInfo(name, cls, BUILTIN_SOURCE, describe_params(cls))
        for name, cls in BUILTIN.items()
    }


def _build(
    ep: metadata.EntryPoint, taken: Mapping[str, AlgorithmInfo]
) -> tuple[str, AlgorithmInfo]:
    if ep.name in taken:
        raise Refused(f"name clashes with the {taken[ep.name].source} algorithm {ep.name!r}")
    try:
        info = _load_plugin(ep)
    except ConfigError as exc:
        raise Refused(str(exc)) from exc
    declared = getattr(info.cls, "name", None)
    if declared != ep.name:
        log.info(
            "algorithm plug-in %r: class %s declares name %r; registered as %r",
            ep.name,
            info.cls.__qualname__,
            declared,
            ep.name,
        )
    log.debug("algorithm plug-in %r loaded from %s", ep.name, info.source)
    return ep.name, info


_registry: PluginRegistry[AlgorithmInfo] = PluginRegistry(
    GROUP, "algorithm", _builtin_infos, _build, log
)


def _discover() -> tuple[dict[str, AlgorithmInfo], dict[str, str]]:
    return _registry.all(), _registry.errors()


def available_algorithms() -> dict[str, AlgorithmInfo]:
    """Every usable algorithm by registered name: built-ins first, then plug-ins."""
    return _registry.all()


def load_errors() -> dict[str, str]:
    """Plug-ins that were skipped, by entry-point name, with the reason."""
    return _registry.errors()


def clear_cache() -> None:
    """Forget discovered plug-ins (the next call looks at the installed packages again)."""
    _registry.clear()


def algorithm_names() -> list[str]:
    return sorted(_discover()[0])


def rule_names() -> tuple[str, ...]:
    """Algorithms that decide by a rule, without a checkpoint: built-ins and plug-ins."""
    return tuple(sorted(n for n, i in _discover()[0].items() if not i.learned))


def algorithm_info(name: str) -> AlgorithmInfo:
    """The algorithm registered as ``name``; ``ConfigError`` names the known ones (and says why
    a plug-in of that name was skipped)."""
    found, errors = _discover()
    try:
        return found[name]
    except KeyError:
        why = f" (plug-in skipped: {errors[name]})" if name in errors else ""
        raise ConfigError(
            f"unknown algorithm {name!r}{why}; known: {', '.join(sorted(found))}"
        ) from None


def check_names(names: Mapping[str, object] | list[str] | tuple[str, ...], *extra: str) -> None:
    """``ConfigError`` naming every entry of ``names`` that is not an algorithm (nor in
    ``extra``, e.g. ``optimal``)."""
    found, errors = _discover()
    unknown = [n for n in names if n not in found and n not in extra]
    if unknown:
        skipped = [f"{n}: {errors[n]}" for n in unknown if n in errors]
        raise ConfigError(
            f"unknown algorithm(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted([*found, *extra]))}"
            + (f" (skipped plug-ins: {'; '.join(skipped)})" if skipped else "")
        )


def parse_param_args(items: list[str]) -> dict[str, dict[str, str]]:
    """``--param ALGO.KEY=VALUE`` items as ``{ALGO: {KEY: VALUE}}``; the values stay strings
    until the algorithm's ``Params`` types convert them."""
    params: dict[str, dict[str, str]] = {}
    for item in items:
        name_key, sep, value = item.partition("=")
        name, dot, key = name_key.partition(".")
        if not sep or not dot or not name or not key:
            raise ConfigError(f"--param {item!r}: expected ALGO.KEY=VALUE")
        params.setdefault(name.strip(), {})[key.strip()] = value.strip()
    return params


def run_params(
    items: list[str],
    algorithms: Sequence[str],
    *,
    validate: bool = True,
    skip: tuple[str, ...] = (),
    flag: str = "--algorithms",
) -> dict[str, dict[str, str]]:
    """``--param ALGO.KEY=VALUE`` items for a run of ``algorithms``: ``ConfigError`` for an
    algorithm the run does not have and, with ``validate``, for a value its ``Params`` refuse
    (before any work starts); ``skip`` names entries that take no parameters (``optimal``);
    ``flag`` is the option that names the run's algorithms, for the message."""
    params = parse_param_args(items)
    stray = sorted(set(params) - set(algorithms))
    if stray:
        raise ConfigError(
            f"--param for {', '.join(map(repr, stray))}, which {flag} does not run "
            f"({', '.join(algorithms)})"
        )
    if validate:
        for name, values in params.items():
            if name not in skip:
                parse_params(algorithm_info(name).cls.Params, values, owner=name)
    return params


def build_algorithm(
    name: str,
    cls: type[ABRAlgorithm],
    video: Video,
    params: dict[str, Any] | None = None,
    *,
    from_text: bool = True,
) -> ABRAlgorithm:
    """An instance of ``cls`` for one session, its parameters parsed from ``params``, carrying
    the name ``name`` (also for classes that are not registered, e.g. in tests).
    ``from_text``: as :func:`~streambed.abr_service.algorithms.base.parse_params`'s (False for
    JSON values, which must already have their type)."""
    parsed = parse_params(cls.Params, params, from_text=from_text, owner=name)
    try:
        algo = cls(video, parsed)
    except StreambedError:  # already names what is wrong (a bad checkpoint: ModelError)
        raise
    except Exception as exc:  # a plug-in's constructor must not crash the caller (the service)
        raise ConfigError(
            f"algorithm {name!r} cannot be built with {parsed!r}: {type(exc).__name__}: {exc}"
        ) from exc
    if getattr(algo, "name", None) != name:
        setattr(algo, "name", name)  # noqa: B010  (records are keyed by the registered name)
    return algo


def make_algorithm(
    name: str, video: Video, params: dict[str, Any] | None = None, *, from_text: bool = True
) -> ABRAlgorithm:
    """A fresh instance of algorithm ``name`` (built-in or plug-in) for one session of
    ``video``; ``ConfigError`` for an unknown name or a bad parameter (``ParamError``)."""
    return build_algorithm(name, algorithm_info(name).cls, video, params, from_text=from_text)
