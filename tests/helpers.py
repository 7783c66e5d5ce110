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
                   versions: dict | None = None, quality: dict | None = None,
                   served_labelled: int = 5000) -> bytes:  # fmt: skip
    """A monitor health summary with the given tracks and evidence, for playing the monitor.

    ``quality``: role -> ``(revision, version)`` for ``served``, and
    ``(revision, version, difference, half_width, samples)`` for the others:
    the candidate's quality minus served's on the same samples, and its interval.
    """
    from tideline import health as h

    tracks = {"stable": h.TrackHealth(**(stable or {}))}
    if canary is not None:
        tracks["canary"] = h.TrackHealth(**canary)
    candidates = {}
    for role, t in (quality or {}).items():
        vs = None
        if len(t) == 5:
            vs = h.Comparison(samples=t[4], difference=t[2], lower=t[2] - t[3], upper=t[2] + t[3])
        candidates[role] = h.Candidate(
            revision=t[0], version=t[1], samples=2000, vs_served=vs,
            served_labelled=served_labelled if role == "served" else 0,
        )  # fmt: skip
    return h.encode(
        h.Health(
            ts=now,
            tracks=tracks,
            versions={k: h.VersionHealth(**v) for k, v in (versions or {}).items()},
            quality=h.Quality(window=2000, candidates=candidates) if candidates else None,
        )
    )
