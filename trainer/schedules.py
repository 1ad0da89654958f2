"""Entropy-weight schedules by iteration, as the Pensieve literature used them.

``constant:W``; ``linear:A:B:N`` (A to B over N iterations, then B); ``staged`` (5, 4, 3, 2,
1, 0.5, 0.1 from 0/20k/40k/60k/70k/80k/90k iterations, the decay of Pensieve's follow-ups);
or breakpoints ``ITER=W,ITER=W,...`` (piecewise constant, the weight of the last breakpoint
reached). ``pensieve-linear`` is ``linear:1:0.1:100000``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from streambed.core.errors import ConfigError

STAGED = "0=5,20000=4,40000=3,60000=2,70000=1,80000=0.5,90000=0.1"
NAMED = {"staged": STAGED, "pensieve-linear": "linear:1:0.1:100000"}


@dataclass(frozen=True)
class Schedule:
    kind: str
    points: tuple[tuple[int, float], ...]

    @classmethod
    def parse(cls, text: str) -> Schedule:
        spec = NAMED.get(text, text)
        try:
            if spec.startswith("constant:"):
                return cls("constant", ((0, float(spec.split(":")[1])),))
            if spec.startswith("linear:"):
                _, a, b, n = spec.split(":")
                if int(n) <= 0:
                    raise ValueError("the iteration count must be positive")
                return cls("linear", ((0, float(a)), (int(n), float(b))))
            points = []
            for part in spec.split(","):
                it, w = part.split("=")
                points.append((int(it), float(w)))
            points.sort()
            if not points or points[0][0] != 0:
                raise ValueError("breakpoints must start at iteration 0")
            return cls("steps", tuple(points))
        except ValueError as exc:
            raise ConfigError(
                f"entropy schedule {text!r}: {exc} (use constant:W, linear:A:B:ITERS, staged, "
                "pensieve-linear or ITER=W,ITER=W,...)"
            ) from None

    def __call__(self, iteration: int) -> float:
        if self.kind == "constant":
            return self.points[0][1]
        if self.kind == "linear":
            (_, a), (n, b) = self.points
            return a + (b - a) * min(iteration / n, 1.0)
        starts = [p[0] for p in self.points]
        return self.points[bisect.bisect_right(starts, iteration) - 1][1]
