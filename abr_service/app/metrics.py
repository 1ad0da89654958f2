"""Counters and histograms of the decision service, served in Prometheus' text format.

Built on ``prometheus_client`` with one ``CollectorRegistry`` per app (not the process-wide
default), so that several apps in one process (the tests) keep separate counts. The live
values (sessions held, the model serving each algorithm) are read at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Live(Collector):
    """The gauges whose values live elsewhere (the engine, the model store): set just before
    each rendering, from the event loop that renders."""

    def __init__(self) -> None:
        self.sessions = 0
        self.models: dict[str, str] = {}

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "streambed_active_sessions", "Sessions held in memory.", value=self.sessions
        )
        info = InfoMetricFamily(
            "streambed_active_model",
            "The model version serving each algorithm.",
            labels=["algorithm"],
        )
        for algorithm, version in sorted(self.models.items()):
            info.add_metric([algorithm], {"version": version})
        yield info


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._decisions = Counter(
            "streambed_decisions",
            "Decisions answered, by algorithm.",
            ["algorithm", "fallback"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "streambed_decision_seconds",
            "Time to decide, seconds.",
            ["algorithm"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._fallbacks = Counter(
            "streambed_fallbacks",
            "Decisions made by the fallback algorithm.",
            ["algorithm", "reason"],
            registry=self.registry,
        )
        self._evictions = Counter(
            "streambed_sessions_evicted",
            "Sessions forgotten, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self._uploads = Counter(
            "streambed_model_uploads",
            "Checkpoint uploads, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self._live = _Live()
        self.registry.register(self._live)

    def observe_decision(self, algorithm: str, seconds: float, fallback: bool) -> None:
        self._decisions.labels(algorithm=algorithm, fallback=str(fallback).lower()).inc()
        self._latency.labels(algorithm=algorithm).observe(seconds)

    def observe_fallback(self, algorithm: str, reason: str) -> None:
        self._fallbacks.labels(algorithm=algorithm, reason=reason).inc()

    def observe_eviction(self, reason: str, count: int = 1) -> None:
        self._evictions.labels(reason=reason).inc(count)

    def observe_upload(self, outcome: str) -> None:
        self._uploads.labels(outcome=outcome).inc()

    def render(self, active_sessions: int, active_models: dict[str, str]) -> bytes:
        """The exposition (``CONTENT_TYPE``), with the live values given."""
        self._live.sessions = active_sessions
        self._live.models = dict(active_models)
        return generate_latest(self.registry)
