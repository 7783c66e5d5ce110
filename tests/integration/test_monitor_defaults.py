"""The monitor of a clicks-only model (``spec.learning.labelDefault``) against a real Redis: it
scores a prediction's click only with the defaults of its time."""

from __future__ import annotations

import os
import time

import orjson
import pytest

from tests.helpers import FRAUD_FEATURES, LoggedRequest, manifest, monitor_for, summary_of
from tideline import predlog
from tideline.contracts import Keys
from tideline.demo.simulate import SyntheticStream
from tideline.pods.defaults import CLOCK_SLACK
from tideline.spec import OnlineModel, parse

pytestmark = pytest.mark.integration

AFTER = 1.0
LEARNING = {"labelWindow": "10m", "labelDefault": {"value": 0, "after": f"{AFTER}s"}}
ROWS = 32  # a request's rows


class Traffic:
    """Requests of a cold model (every answer 0.5: a click, right on the clicks alone) logged
    by one server process, and a click on every other row."""

    def __init__(self, r, model: OnlineModel) -> None:  # type: ignore[no-untyped-def]
        self.r, self.keys = r, Keys(model.namespace, model.name)
        self.revision = model.revision
        self.instance = os.urandom(predlog.INSTANCE_HEX // 2).hex()
        self.rows, _ = SyntheticStream(FRAUD_FEATURES, "binary", seed=3).take(3000 * ROWS)
        self.seq = 0  # (the log's entry ids grow)

    def log(self, first: float, requests: int, apart: float = 0.005) -> list[str]:
        """``requests`` logged from ``first`` on: the ids of the rows to click."""
        pipe = self.r.pipeline(transaction=False)
        clicked: list[str] = []
        for i in range(requests):
            at = (self.seq % 3000) * ROWS
            req = LoggedRequest(self.rows[at : at + ROWS], ts=first + apart * i,
                                instance=self.instance, seq=self.seq,
                                revision=self.revision)  # fmt: skip
            self.seq += 1
            clicked += req.write(pipe, self.keys).ids[::2]
        pipe.execute()
        return clicked

    def click(self, ids: list[str]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for pid in ids:
            pipe.xadd(self.keys.feedback, {"data": orjson.dumps({"id": pid, "label": 1})})
        pipe.execute()


def test_the_clicks_of_predictions_made_before_the_monitor_started_are_not_scored(r) -> None:
    """A monitor reads the labels that come after it started, and gives defaults to the
    predictions made after it started: the clicks of the traffic just before it, scored
    alone, read as a cold model right on every one, then wrong on half once the defaults
    came - a concept drift at v0, as 40 s clicks-only runs of examples/ads-ctr-ftrl.yaml
    showed when the monitor started after the first requests."""
    model = parse(manifest(learning=LEARNING))
    traffic = Traffic(r, model)
    before = traffic.log(time.time() - 0.5, requests=40)
    mon = monitor_for(model, r)
    mon.start()
    time.sleep(0.01)
    traffic.click(before)  # 640 clicks of predictions made before the monitor started
    began = time.monotonic()
    while time.monotonic() - began < AFTER + CLOCK_SLACK + 2.5:  # traffic goes on meanwhile
        at = time.time()
        traffic.click(traffic.log(at, requests=1))
        mon.step(block_ms=5)
        time.sleep(max(0.0, at + 0.01 - time.time()))  # (a request of 32 rows each 10 ms)
    assert mon.drift.concept_events == []
    # what the concept detector read: half the answers wrong, as they were from the start
    assert mon.drift.concept.width >= 40 * ROWS
    assert mon.drift.concept.estimation == pytest.approx(0.5, abs=0.02)
    assert mon.outcomes.before == len(before)


def test_a_restarted_monitor_scores_the_clicks_of_a_log_it_resumes(r) -> None:
    """A monitor that resumes a log from its saved cursor gives the defaults of the traffic
    it missed: their clicks are scored with them."""
    model = parse(manifest(learning=LEARNING))
    k = Keys(model.namespace, model.name)
    traffic = Traffic(r, model)
    first = time.time() - 0.5
    r.hset(k.cursors("monitor"), traffic.instance, f"{int(first * 1000)}-0")
    before = traffic.log(first, requests=40)
    mon = monitor_for(model, r)
    mon.start()
    traffic.click(before)
    deadline = time.monotonic() + AFTER + 8
    while summary_of(mon)["tracks"].get("stable", {}).get("labelled", 0) < 40 * ROWS:
        assert time.monotonic() < deadline, summary_of(mon)["tracks"]
        mon.step(block_ms=50)
    assert mon.outcomes.before == 0
    assert summary_of(mon)["tracks"]["stable"]["accuracy"] == pytest.approx(0.5)
