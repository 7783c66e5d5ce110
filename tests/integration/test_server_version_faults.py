"""A server that cannot load a version published after its start keeps serving what it holds
and says why (needs the call in ModelVersions._load_pointer: tideline.pods.faults.VersionFaults)."""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path

import pytest

from tests.helpers import manifest
from tideline.algorithms import make_learner
from tideline.contracts import Keys, ModelFault
from tideline.pods.metrics import ServerMetrics
from tideline.pods.server.dataplane import DataPlane
from tideline.spec import parse
from tideline.store import ModelStore

TEAM = """
import json
import numpy as np
class Mean:
    def __init__(self, info, prior=0.5):
        self.n, self.mean = 0, float(prior)
    def learn(self, X, y):
        for v in y.tolist():
            self.n += 1
            self.mean += (v - self.mean) / self.n
    def predict(self, X):
        return np.full(len(X), self.mean)
    def save(self):
        return json.dumps([self.n, self.mean]).encode()
    def load(self, state):
        self.n, self.mean = json.loads(state)
"""


def test_a_version_the_server_cannot_load_is_reported_and_the_held_one_served(
    redis_server, r, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIDELINE_SIGNING_KEY", "k" * 32)
    (tmp_path / "vanishing_team.py").write_text(TEAM)
    monkeypatch.syspath_prepend(str(tmp_path))
    doc = manifest()
    doc["spec"]["model"].update(algorithm="custom", custom={"class": "vanishing_team:Mean"})
    model = parse(doc)
    rev, keys = model.revision, Keys(model.namespace, model.name)
    store = ModelStore(r, model.namespace, model.name)
    learner = make_learner(model.spec.model.to_dict())
    store.publish(rev, 1, learner)
    store.publish(rev, 2, learner)
    store.set_pointer(rev, "served", 1)

    async def scenario() -> None:
        dp = DataPlane(model, redis_server.url, metrics=ServerMetrics(None), poll_interval=0.1)
        await dp.start()
        try:
            assert dp.stable is not None and dp.stable.version == 1
            # the module goes (an image without it): v2 cannot be loaded
            sys.modules.pop("vanishing_team", None)
            (tmp_path / "vanishing_team.py").rename(tmp_path / "elsewhere.py")
            importlib.invalidate_caches()
            store.set_pointer(rev, "served", 2)
            for _ in range(50):
                await asyncio.sleep(0.1)
                if r.hexists(keys.faults(rev), "server"):
                    break
            fault = ModelFault.decode(r.hget(keys.faults(rev), "server"))
            assert fault is not None and fault.reason == "ImportFailed"
            assert fault.message == "ModuleNotFoundError: No module named 'vanishing_team'"
            await asyncio.sleep(0.5)  # the loops go on (polling, pub/sub), still on v1
            assert dp.stable.version == 1
            assert all(not t.done() for t in dp._tasks), "no loop died of it"
            # the module is back: the next version loads, the fault goes
            (tmp_path / "elsewhere.py").rename(tmp_path / "vanishing_team.py")
            importlib.invalidate_caches()
            store.publish(rev, 3, learner)
            store.set_pointer(rev, "served", 3)
            for _ in range(50):
                await asyncio.sleep(0.1)
                if dp.stable.version == 3:
                    break
            assert dp.stable.version == 3
            assert not r.exists(keys.faults(rev))
        finally:
            await dp.stop()

    asyncio.run(scenario())


def test_a_version_the_monitor_cannot_load_is_reported_not_a_failed_turn(
    r, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tideline.pods.monitor import Monitor

    monkeypatch.setenv("TIDELINE_SIGNING_KEY", "k" * 32)
    (tmp_path / "vanishing_team2.py").write_text(TEAM)
    monkeypatch.syspath_prepend(str(tmp_path))
    doc = manifest()
    doc["spec"]["model"].update(algorithm="custom", custom={"class": "vanishing_team2:Mean"})
    model = parse(doc)
    rev, keys = model.revision, Keys(model.namespace, model.name)
    store = ModelStore(r, model.namespace, model.name)
    store.publish(rev, 1, make_learner(model.spec.model.to_dict()))
    mon = Monitor(model, r, clock=lambda: 42.0)
    sys.modules.pop("vanishing_team2", None)
    (tmp_path / "vanishing_team2.py").unlink()
    importlib.invalidate_caches()
    assert mon._load((rev, 1)) is None
    assert mon._load((rev, 1)) is None  # (not tried, nor reported, again)
    fault = ModelFault.decode(r.hget(keys.faults(rev), "monitor"))
    assert fault == ModelFault(
        "ImportFailed",
        "ModuleNotFoundError: No module named 'vanishing_team2'",
        "monitor",
        rev,
        42.0,
    )
    store.set_pointer(rev, "served", 1)
    assert mon._served_model() is None
