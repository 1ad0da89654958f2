"""Streambed: a trace-driven ABR streaming testbed.

One import package. Its subpackages keep the repository's top-level folders (``traces/`` is
:mod:`streambed.traces`, ``abr_service/`` is :mod:`streambed.abr_service`, ...); the folder
``streambed/`` itself holds the ground floor (:mod:`streambed.core`) and the command line on top
(:mod:`streambed.cli`, :mod:`streambed.demo`). README's "Architecture" says which way imports
point.

Importing it registers the Gymnasium env ``streambed/ABR-v0`` (the env module itself, and torch,
load only when an env is made)::

    import gymnasium
    import streambed

    env = gymnasium.make("streambed/ABR-v0")
"""

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

ENV_ID = "streambed/ABR-v0"
"""The Gymnasium id of the chunk-level ABR env (:class:`streambed.trainer.env.ABREnv`)."""

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="streambed.trainer.env:ABREnv")
