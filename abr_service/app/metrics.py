"""Counters and histograms of the decision service, rendered in Prometheus' text format.

Hand-written rather than a client library: a handful of series, updated from one event loop.
"""

from __future__ import annotations

import bisect
from collections import defaultdict

LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


def _labels(**labels: str) -> str:
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in labels.items()
    )
    return "{" + inner + "}" if inner else ""


class Metrics:
    def __init__(self) -> None:
        self.decisions: dict[tuple[str, bool], int] = defaultdict(int)
        self.fallbacks: dict[tuple[str, str], int] = defaultdict(int)
        self.evictions: dict[str, int] = defaultdict(int)
        self.latency_counts: dict[str, list[int]] = {}
        self.latency_sum: dict[str, float] = defaultdict(float)
        self.uploads: dict[str, int] = defaultdict(int)

    def observe_decision(self, algorithm: str, seconds: float, fallback: bool) -> None:
        self.decisions[(algorithm, fallback)] += 1
        counts = self.latency_counts.get(algorithm)
        if counts is None:
            counts = self.latency_counts[algorithm] = [0] * (len(LATENCY_BUCKETS_S) + 1)
        counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.latency_sum[algorithm] += seconds

    def observe_fallback(self, algorithm: str, reason: str) -> None:
        self.fallbacks[(algorithm, reason)] += 1

    def observe_eviction(self, reason: str, count: int = 1) -> None:
        self.evictions[reason] += count

    def observe_upload(self, outcome: str) -> None:
        self.uploads[outcome] += 1

    def render(self, active_sessions: int, active_models: dict[str, str]) -> str:
        out: list[str] = []

        def head(name: str, kind: str, text: str) -> None:
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} {kind}")

        head("streambed_decisions_total", "counter", "Decisions answered, by algorithm.")
        for (algo, fb), n in sorted(self.decisions.items()):
            out.append(
                f"streambed_decisions_total{_labels(algorithm=algo, fallback=str(fb).lower())} {n}"
            )
        head("streambed_decision_seconds", "histogram", "Time to decide, seconds.")
        for algo, counts in sorted(self.latency_counts.items()):
            running = 0
            for bound, n in zip((*LATENCY_BUCKETS_S, float("inf")), counts, strict=True):
                running += n
                le = "+Inf" if bound == float("inf") else repr(bound)
                out.append(
                    f"streambed_decision_seconds_bucket{_labels(algorithm=algo, le=le)} {running}"
                )
            out.append(
                f"streambed_decision_seconds_sum{_labels(algorithm=algo)} {self.latency_sum[algo]:.9f}"
            )
            out.append(f"streambed_decision_seconds_count{_labels(algorithm=algo)} {running}")
        head("streambed_fallbacks_total", "counter", "Decisions made by the fallback algorithm.")
        for (algo, reason), n in sorted(self.fallbacks.items()):
            out.append(f"streambed_fallbacks_total{_labels(algorithm=algo, reason=reason)} {n}")
        head("streambed_active_sessions", "gauge", "Sessions held in memory.")
        out.append(f"streambed_active_sessions {active_sessions}")
        head("streambed_sessions_evicted_total", "counter", "Sessions forgotten, by reason.")
        for reason, n in sorted(self.evictions.items()):
            out.append(f"streambed_sessions_evicted_total{_labels(reason=reason)} {n}")
        head("streambed_model_uploads_total", "counter", "Checkpoint uploads, by outcome.")
        for outcome, n in sorted(self.uploads.items()):
            out.append(f"streambed_model_uploads_total{_labels(outcome=outcome)} {n}")
        head("streambed_active_model", "gauge", "1 for the model version serving each algorithm.")
        for algo, version in sorted(active_models.items()):
            out.append(f"streambed_active_model{_labels(algorithm=algo, version=version)} 1")
        return "\n".join(out) + "\n"
