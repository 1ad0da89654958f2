"""Chunk-level simulator (scalar and batched), Gymnasium env, offline optimum and evaluation.

The Gymnasium env ``streambed/ABR-v0`` is registered by ``import streambed`` (so also by
importing this package): ``gymnasium.make("streambed/ABR-v0")``.
"""

from streambed import ENV_ID

__all__ = ["ENV_ID"]
