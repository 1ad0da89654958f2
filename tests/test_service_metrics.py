"""``/metrics``: prometheus_client's exposition from one registry per app."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from service_helpers import running_service

from streambed.abr_service.app.metrics import Metrics

GOOD = {"session_id": "m", "chunk_index": 0, "buffer_s": 0.0, "algorithm": "bba"}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_render_parses_and_escapes_labels() -> None:
    metrics = Metrics()
    odd = 'a"b\\c\nd'
    metrics.observe_decision(odd, 0.0003, fallback=False)
    metrics.observe_decision(odd, 0.2, fallback=True)
    metrics.observe_fallback(odd, "timeout")
    metrics.observe_eviction("idle", 2)
    metrics.observe_upload("stored")
    body = metrics.render(5, {"ppo": "pensieve@v2"})
    text = body.decode("utf-8")
    found = samples(text)
    assert (
        found[("streambed_decisions_total", frozenset({("algorithm", odd), ("fallback", "false")}))]
        == 1
    )
    assert (
        found[("streambed_decisions_total", frozenset({("algorithm", odd), ("fallback", "true")}))]
        == 1
    )
    assert (
        found[
            ("streambed_decision_seconds_bucket", frozenset({("algorithm", odd), ("le", "0.0005")}))
        ]
        == 1
    )
    assert (
        found[
            ("streambed_decision_seconds_bucket", frozenset({("algorithm", odd), ("le", "+Inf")}))
        ]
        == 2
    )
    assert found[("streambed_decision_seconds_count", frozenset({("algorithm", odd)}))] == 2
    assert (
        found[("streambed_fallbacks_total", frozenset({("algorithm", odd), ("reason", "timeout")}))]
        == 1
    )
    assert found[("streambed_sessions_evicted_total", frozenset({("reason", "idle")}))] == 2
    assert found[("streambed_model_uploads_total", frozenset({("outcome", "stored")}))] == 1
    assert found[("streambed_active_sessions", frozenset())] == 5
    info = (
        "streambed_active_model_info",
        frozenset({("algorithm", "ppo"), ("version", "pensieve@v2")}),
    )
    assert found[info] == 1
    assert "# TYPE streambed_active_model_info gauge" in text
    assert "streambed_active_model{" not in text  # renamed: an info metric ends in _info
    # The live values are those of the latest rendering, not accumulated.
    again = samples(metrics.render(0, {}).decode("utf-8"))
    assert again[("streambed_active_sessions", frozenset())] == 0
    assert info not in again


def test_each_app_counts_alone(tmp_path: Path) -> None:
    """Two services in one process: each has its own registry (the process-wide default
    would refuse the second app's metrics, or mix their counts)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with (
        running_service(tmp_path / "a") as a,
        running_service(tmp_path / "b") as b,
    ):
        assert httpx.post(f"{a}/decide", json=GOOD).status_code == 200
        reply = httpx.get(f"{a}/metrics")
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain; version=")
        key = (
            "streambed_decisions_total",
            frozenset({("algorithm", "bba"), ("fallback", "false")}),
        )
        assert samples(reply.text)[key] == 1
        assert samples(reply.text)[("streambed_active_sessions", frozenset())] == 1
        other = samples(httpx.get(f"{b}/metrics").text)
        assert key not in other
        assert other[("streambed_active_sessions", frozenset())] == 0
