"""Server metrics: requests noted cheaply, added up in flush, exported as plain observe would."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from tideline.pods.metrics import ServerMetrics


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for m in registry.collect()
        for s in m.samples
        if s.name.startswith(name) and not s.name.endswith("_created")
    }


def test_flushed_requests_export_as_one_observe_per_request() -> None:
    rng = np.random.default_rng(3)
    seconds = np.concatenate(
        [rng.exponential(0.004, 500), ServerMetrics.LATENCY_BUCKETS, [0.0, 5.0]]
    )
    m = ServerMetrics(None)
    plain = CollectorRegistry()
    h = Histogram("tideline_server_request_seconds", "x", ["route", "track"],
                  buckets=ServerMetrics.LATENCY_BUCKETS, registry=plain)  # fmt: skip
    for i, s in enumerate(seconds.tolist()):
        track = "canary" if i % 3 == 0 else "stable"
        m.request("v1/predict", track, 200, s, rows=2)
        h.labels(route="v1/predict", track=track).observe(s)
    assert _samples(m.registry, "tideline_server_requests") == {}  # nothing until flushed
    m.flush()
    got, want = _samples(m.registry, "tideline_server_request_seconds"), _samples(plain, "tideline")
    assert got.keys() == want.keys()
    for key, value in want.items():  # bucket counts exactly, the sum up to rounding
        if key[0].endswith("_sum"):
            assert abs(got[key] - value) <= 1e-9 * max(1.0, abs(value))
        else:
            assert got[key] == value, key
    canary = sum(1 for i in range(len(seconds)) if i % 3 == 0)
    text = generate_latest(m.registry).decode()
    assert (
        f'tideline_server_requests_total{{route="v1/predict",status="200",track="canary"}} '
        f"{float(canary)}" in text
    )
    assert (
        f'tideline_server_predictions_total{{track="stable"}} {2.0 * (len(seconds) - canary)}'
        in text
    )


def test_predictions_and_fallbacks_are_exported_at_zero_before_any_happen() -> None:
    text = generate_latest(ServerMetrics(None).registry).decode()
    for track in ("stable", "canary"):
        assert f'tideline_server_predictions_total{{track="{track}"}} 0.0' in text
    for reason in ("timeout", "no-model", "canary-unreachable"):
        assert f'tideline_server_fallbacks_total{{reason="{reason}"}} 0.0' in text


def test_the_pending_list_is_bounded() -> None:
    m = ServerMetrics(None)
    for _ in range(ServerMetrics.PENDING + 10):
        m.request("v1/predict", "stable", 200, 0.001, rows=1)
    assert m._noted == 10 and [len(lat) for lat, _ in m._pending.values()] == [10]
    text = generate_latest(m.registry).decode()
    assert f'tideline_server_predictions_total{{track="stable"}} {ServerMetrics.PENDING}.0' in text


def test_unbatched_metrics_count_each_request_at_once() -> None:
    """--workers N: a scrape reads every worker's files and cannot make the others flush."""
    m = ServerMetrics(None, batch=False)
    m.request("v1/predict", "stable", 200, 0.001, rows=3)
    assert not m._pending
    text = generate_latest(m.registry).decode()
    assert 'tideline_server_predictions_total{track="stable"} 3.0' in text
    assert (
        'tideline_server_request_seconds_bucket{le="0.001",route="v1/predict",track="stable"} 1.0'
        in text
    )


def test_a_regression_track_exports_its_rmse_mae_and_error_relative_to_a_constant() -> None:
    from types import SimpleNamespace

    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from tideline import health as h
    from tideline.pods.metrics import MonitorMetrics
    from tideline.pods.monitor import Monitor
    from tideline.tasks import Task

    metrics = MonitorMetrics(None)
    track = h.TrackHealth(rmse=2.0, mae=1.5, relative_mse=0.25, labelled=10, window=10)
    fake = SimpleNamespace(metrics=metrics, task=Task("regression"))
    Monitor._export(fake, h.Health(ts=0.0, tracks={"stable": track}))  # type: ignore[arg-type]
    got = {(s.name, s.labels.get("track")): s.value
           for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())
           for s in f.samples}  # fmt: skip
    assert got[("tideline_monitor_rmse", "stable")] == 2.0
    assert got[("tideline_monitor_mae", "stable")] == 1.5
    assert got[("tideline_monitor_relative_mse", "stable")] == 0.25
