"""Streambed: a trace-driven ABR streaming testbed.

One import package. Its subpackages keep the repository's top-level folders (``traces/`` is
:mod:`streambed.traces`, ``abr_service/`` is :mod:`streambed.abr_service`, ...); the folder
``streambed/`` itself holds the ground floor (:mod:`streambed.core`) and the command line on top
(:mod:`streambed.cli`, and one module per command in :mod:`streambed.commands`). README's
"Architecture" says which way imports point.

``import streambed`` is enough to make the Gymnasium env ``streambed/ABR-v0``::

    import gymnasium
    import streambed

    env = gymnasium.make("streambed/ABR-v0")
    envs = gymnasium.make_vec("streambed/ABR-v0", num_envs=4096,
                              vectorization_mode="vector_entry_point")  # one batched simulator

It is registered as soon as both are imported, in either order, without importing Gymnasium
itself: the command line and each player process start without it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

__version__ = "0.1.0"

ENV_ID = "streambed/ABR-v0"
"""The Gymnasium id of the chunk-level ABR env (:class:`streambed.trainer.env.ABREnv`); its
vector entry point is :class:`streambed.trainer.vector_env.ABRVectorEnv`."""


def register_env() -> None:
    """Register ``streambed/ABR-v0`` with Gymnasium (idempotent), the single env and the
    vector one (``make_vec(..., vectorization_mode="vector_entry_point")``)."""
    from gymnasium.envs.registration import register, registry

    if ENV_ID not in registry:
        register(
            id=ENV_ID,
            entry_point="streambed.trainer.env:ABREnv",
            vector_entry_point="streambed.trainer.vector_env:ABRVectorEnv",
        )


class _RegisterOnGymnasiumImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when ``gymnasium`` is first imported, lets the usual finders load
    it and registers the env right after the module has run."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "gymnasium":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run_module = loader.exec_module

        def run_and_register(module: ModuleType) -> None:
            run_module(module)
            register_env()

        loader.exec_module = run_and_register  # type: ignore[method-assign]
        return spec


if "gymnasium" in sys.modules:
    register_env()
elif not any(isinstance(f, _RegisterOnGymnasiumImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterOnGymnasiumImport())
