"""Rule algorithms driving or labelling the batched simulator's sessions.

Imitation learning asks a rule teacher (RobustMPC, any built-in or plug-in rule) for every
decision its sessions reach; DQN's demonstrations (``--demo-teacher``) are sessions the teacher
plays. Either way each simulated session needs its own algorithm instance, fed the outcome of
every chunk and renewed when its video ends, which is what ``RuleSessions`` keeps.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from streambed.abr_service.algorithms.base import ABRAlgorithm, ChunkFeedback, PlayerState
from streambed.abr_service.algorithms.registry import make_algorithm, rule_names, run_params
from streambed.abr_service.video import Video
from streambed.core.errors import ConfigError
from streambed.trainer.batched import BatchedSimulator, BatchStep


def rule_factory(
    name: str, video: Video, qoe: str, param: list[str], flag: str
) -> Callable[[], ABRAlgorithm]:
    """A constructor of the rule algorithm ``name`` for one session, its ``--param NAME.KEY=VALUE``
    items checked now (``ConfigError`` naming ``flag`` for an unknown name or a bad value)."""
    if name not in rule_names():
        raise ConfigError(
            f"{flag}: unknown rule algorithm {name!r}; choose one of {', '.join(rule_names())}"
        )
    params = dict(run_params(param, [name], flag=flag).get(name, {}))
    if name == "robustmpc":
        params.setdefault("qoe", qoe)  # as deployed: horizon 5

    def make() -> ABRAlgorithm:
        return make_algorithm(name, video, params)

    return make


class RuleSessions:
    """One rule algorithm per session of a batched simulator."""

    def __init__(self, make: Callable[[], ABRAlgorithm], n: int) -> None:
        self.make = make
        self.algorithms = [make() for _ in range(n)]

    def reset(self) -> None:
        """Fresh algorithms for every session (their sessions restart too)."""
        self.algorithms = [self.make() for _ in self.algorithms]

    def select(
        self, sim: BatchedSimulator, last_quality: np.ndarray, sessions: np.ndarray
    ) -> np.ndarray:
        """The level each of ``sessions`` (indices) would fetch next."""
        return np.array(
            [
                self.algorithms[j].select(
                    PlayerState(
                        next_chunk=int(sim.chunk[j]),
                        buffer_s=float(sim.buffer_s[j]),
                        last_quality=int(last_quality[j]),
                    )
                )
                for j in sessions
            ],
            np.int64,
        )

    def feedback(self, step: BatchStep, quality: np.ndarray) -> None:
        """Every session's chunk outcome; a session whose video ended gets a new algorithm."""
        for k, algorithm in enumerate(self.algorithms):
            algorithm.on_chunk(
                ChunkFeedback(
                    int(step.chunk_index[k]),
                    int(quality[k]),
                    int(step.chunk_bytes[k]),
                    float(step.delay_s[k]),
                    float(step.buffer_s[k]),
                    float(step.rebuffer_s[k]),
                )
            )
        for ended in np.flatnonzero(step.end_of_video):
            self.algorithms[ended] = self.make()
