"""ABR algorithms behind one interface, and the registry that names them.

``ALGORITHMS`` holds the built-in classes; :mod:`streambed.abr_service.algorithms.registry` adds the
plug-ins of the ``streambed.algorithms`` entry-point group, and :func:`make_algorithm` builds
either by name.
"""

from __future__ import annotations

from streambed.abr_service.algorithms.base import (
    ABRAlgorithm,
    ChunkFeedback,
    PlayerState,
    parse_params,
)
from streambed.abr_service.algorithms.registry import (
    BUILTIN,
    AlgorithmInfo,
    algorithm_info,
    algorithm_names,
    available_algorithms,
    build_algorithm,
    load_errors,
    make_algorithm,
    rule_names,
)

ALGORITHMS = BUILTIN  # the built-ins; plug-ins too: available_algorithms()
CLASSIC = ("bba", "rb", "bola", "fastmpc", "robustmpc")  # eval's default set

__all__ = [
    "ALGORITHMS",
    "CLASSIC",
    "ABRAlgorithm",
    "AlgorithmInfo",
    "ChunkFeedback",
    "PlayerState",
    "algorithm_info",
    "algorithm_names",
    "available_algorithms",
    "build_algorithm",
    "load_errors",
    "make_algorithm",
    "parse_params",
    "rule_names",
]
