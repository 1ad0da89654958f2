"""Discovery of plug-in objects by entry point, shared by every registry: algorithms
(``streambed.algorithms``), observations (``streambed.observations``) and policy architectures
(``streambed.policies``).

A :class:`PluginRegistry` holds the built-ins and, once per process (:meth:`~PluginRegistry.all`,
cached; :meth:`~PluginRegistry.clear` forgets it), the plug-ins of one entry-point group. Each
entry point goes through the registry's ``build`` function, which loads it, checks it against
its contract and returns ``(key, object)``; whatever it raises is logged as one warning,
``<kind> plug-in '<name>' (<module:attr>) skipped: <reason>``, kept in
:meth:`~PluginRegistry.errors` by entry-point name, and the entry point is skipped. Nothing a
plug-in does can break the caller.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Refused(Exception):
    """A plug-in refused for a reason already worded for the warning (no exception type)."""


def describe(exc: BaseException) -> str:
    """The first line of ``exc`` with its type, as a warning or error names it."""
    text = str(exc).strip()
    first = text.splitlines()[0][:200] if text else ""
    if isinstance(exc, Refused):
        return first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def instantiate(target: Any) -> Any:
    """What an entry point names: a class instantiated without arguments or a zero-argument
    factory, called."""
    if not callable(target):
        raise TypeError(f"{target!r} is neither a class nor a factory")
    return target()


class PluginRegistry(Generic[T]):
    """The built-ins and the plug-ins of entry-point group ``group``, by key."""

    def __init__(
        self,
        group: str,
        kind: str,
        builtin: Mapping[str, T] | Callable[[], Mapping[str, T]],
        build: Callable[[EntryPoint, Mapping[str, T]], tuple[str, T]],
        log: logging.Logger,
    ) -> None:
        """``builtin``: the built-ins, or a function giving them (called at discovery);
        ``build(point, taken)`` loads and checks one entry point; ``taken`` holds what is
        registered so far (built-ins included), for it to refuse a clash."""
        self.group = group
        self.kind = kind
        self._builtin = builtin
        self._build = build
        self._log = log
        self._lock = threading.Lock()
        self._cache: tuple[dict[str, T], dict[str, str]] | None = None

    def all(self) -> dict[str, T]:
        """Every usable object by key: the built-ins, then the plug-ins (cached)."""
        return dict(self._discovered()[0])

    def errors(self) -> dict[str, str]:
        """The skipped plug-ins by entry-point name, each with the reason its warning gave."""
        return dict(self._discovered()[1])

    def clear(self) -> None:
        """Forget the discovered plug-ins (the next :meth:`all` looks again)."""
        with self._lock:
            self._cache = None

    def _discovered(self) -> tuple[dict[str, T], dict[str, str]]:
        with self._lock:
            if self._cache is None:
                self._cache = self._discover()
            return self._cache

    def _discover(self) -> tuple[dict[str, T], dict[str, str]]:
        builtin = self._builtin() if callable(self._builtin) else self._builtin
        found = dict(builtin)
        errors: dict[str, str] = {}
        try:
            points = list(entry_points(group=self.group))
        except Exception as exc:  # a broken installed distribution must not stop the service
            self._log.warning("cannot list %s entry points: %s", self.group, exc)
            return found, errors
        for point in points:
            try:
                key, obj = self._build(point, found)
            except Exception as exc:  # anything a third-party module raises
                errors[point.name] = describe(exc)
                self._log.warning(
                    "%s plug-in %r (%s) skipped: %s",
                    self.kind,
                    point.name,
                    point.value,
                    errors[point.name],
                )
                continue
            found[key] = obj
        return found, errors
