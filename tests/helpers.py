"""Small builders the tests share."""

from __future__ import annotations

import copy

FRAUD_FEATURES = [
    {"name": "amount", "type": "numeric", "default": 0.0},
    {"name": "hour", "type": "numeric", "default": 12.0},
    {"name": "merchant", "type": "categorical", "buckets": 64},
]


def manifest(name: str = "m", **spec: object) -> dict:
    """An OnlineModel manifest with a small default model; keyword args override spec parts."""
    base: dict = {
        "model": {"task": "binary", "algorithm": "sgd", "features": copy.deepcopy(FRAUD_FEATURES)},
    }
    base.update(spec)
    return {
        "apiVersion": "tideline.dev/v1alpha1",
        "kind": "OnlineModel",
        "metadata": {"name": name, "namespace": "test"},
        "spec": base,
    }


def push_samples(r, stream: str, rows: list, labels) -> None:  # type: ignore[no-untyped-def]
    """Labelled rows onto a samples stream, as `POST :learn` writes them."""
    import orjson

    pipe = r.pipeline(transaction=False)
    for row, label in zip(rows, list(labels), strict=True):
        pipe.xadd(stream, {"data": orjson.dumps({"features": row, "label": float(label)})})
    pipe.execute()


def health_summary(now: float, *, stable: dict | None = None, canary: dict | None = None,
                   versions: dict | None = None) -> bytes:  # fmt: skip
    """A monitor health summary (JSON) with the given tracks, for playing the monitor."""
    import orjson

    tracks = {"stable": stable or {}}
    if canary is not None:
        tracks["canary"] = canary
    return orjson.dumps({"ts": now, "tracks": tracks, "versions": versions or {}, "drift": {}})
