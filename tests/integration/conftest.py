"""Fixtures the integration tests share: a model served on the Redis under test, a canary of
another image beside it, and the operator's reconciler on an in-memory Kubernetes API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import Clock, FakeKube, Served, fraud_model, listening, manifest, wait_until
from tideline.store import ModelStore


@pytest.fixture
def served(r, redis_under_test) -> Iterator[Served]:  # type: ignore[no-untyped-def]
    """A model published in ``redis_under_test`` and an app serving it, ready."""
    s = Served(redis_under_test.url, manifest(name="fraud"))
    ModelStore(r, "test", "fraud").publish(s.model.revision, 0, fraud_model())
    with s.client:
        wait_until(lambda: s.dp.ready)
        yield s


@pytest.fixture
def other_image_canary(r, redis_under_test) -> Iterator[tuple[Served, str]]:  # type: ignore[no-untyped-def]
    """A second server, for a canary revision whose image differs, on a real port."""
    canary = Served(redis_under_test.url, manifest(name="fraud", image="tideline:canary"))
    ModelStore(r, "test", "fraud").publish(canary.model.revision, 0, fraud_model(seed=4))
    with listening(canary) as url:
        yield canary, url


@pytest.fixture
def setup(r, redis_under_test) -> tuple:  # type: ignore[no-untyped-def]
    """A reconciler (on ``redis_under_test``), its API, its clock, the Events it posted, one
    model's memory."""
    from tideline_operator.builders import OperatorConfig
    from tideline_operator.reconcile import ModelMemory, Reconciler

    kube, clock = FakeKube(), Clock()
    settings = OperatorConfig(image="img:1", redis_url=redis_under_test.url)
    rec = Reconciler(kube, settings, clock=clock)  # type: ignore[arg-type]
    return rec, kube, clock, [], ModelMemory()
