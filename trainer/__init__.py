"""Chunk-level simulator (scalar and batched), Gymnasium env, offline optimum and evaluation.

Importing this package registers the Gymnasium env ``streambed/ABR-v0``; with Gymnasium 1.x,
``gymnasium.make("trainer:streambed/ABR-v0")`` imports it for you.
"""

from gymnasium.envs.registration import register, registry

ENV_ID = "streambed/ABR-v0"

if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="trainer.env:ABREnv")
