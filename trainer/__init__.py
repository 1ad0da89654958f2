"""Chunk-level simulator (scalar and batched), Gymnasium env, offline optimum and evaluation.

The Gymnasium env ``streambed/ABR-v0`` is registered once Gymnasium and :mod:`streambed` are
both imported: ``gymnasium.make("streambed/ABR-v0")``.
"""

from streambed import ENV_ID, register_env

register_env()

__all__ = ["ENV_ID"]
