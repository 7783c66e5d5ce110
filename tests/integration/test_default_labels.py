"""Labels that never come (``spec.learning.labelDefault``): the learner learns every logged
prediction once, with its label when one came within ``after``, else with the default."""

from __future__ import annotations

import os
import time

import orjson
import pytest

from tests.helpers import (
    FRAUD_FEATURES,
    LoggedRequest,
    learn_until,
    manifest,
    monitor_for,
    summary_of,
)
from tideline import predlog
from tideline.contracts import Keys
from tideline.demo.simulate import SyntheticStream
from tideline.pods.learner import LearnerProcess
from tideline.spec import parse

pytestmark = pytest.mark.integration

AFTER = 2.0
LEARNING = {"publishEvery": 500, "maxBatchDelay": "20ms", "labelWindow": "10m",
            "labelDefault": {"value": 0, "after": f"{AFTER}s"}}  # fmt: skip


def _proc(r, **learning) -> LearnerProcess:
    p = LearnerProcess(
        parse(manifest(learning={**LEARNING, **learning})), r, checkpoint_seconds=0.0
    )
    p.start()
    return p


def _impressions(
    r, p: LearnerProcess, n: int, servers: int = 2, each: int = 8, odd: int = 0
) -> list[str]:
    """``n`` predictions logged now by ``servers`` server processes, ``each`` rows a request
    and a request an entry: their ids, in order. With ``odd``, every odd-th request's rows
    have a name the schema does not (read as a label's rows are, not typed)."""
    rows, _ = SyntheticStream(FRAUD_FEATURES, "binary", seed=4).take(n)
    if odd:
        for at in range(0, n, each * odd):
            rows[at : at + each] = [{**row, "campaign": "c-7"} for row in rows[at : at + each]]
    instances = [os.urandom(predlog.INSTANCE_HEX // 2).hex() for _ in range(servers)]
    now = time.time()
    ids: list[str] = []
    pipe = r.pipeline(transaction=False)
    for k, at in enumerate(range(0, n, each)):
        req = LoggedRequest(rows[at : at + each], ts=now, instance=instances[k % servers], seq=k)
        ids += req.write(pipe, p.keys).ids
    pipe.execute()
    return ids


def _click(r, p: LearnerProcess, pid: str, label: int = 1) -> None:
    r.xadd(p.keys.feedback, {"data": orjson.dumps({"id": pid, "label": label})})


@pytest.mark.parametrize("odd", [0, 3], ids=["rows of the schema", "every third request odd"])
def test_clicks_and_defaults_each_prediction_learned_once_and_a_late_click_dead_lettered(
    r, odd: int
) -> None:
    p = _proc(r)
    ids = _impressions(r, p, 320, odd=odd)
    clicked = ids[::10]
    for pid in clicked:
        _click(r, p, pid)
    started = time.monotonic()
    # the clicks wait for their predictions to be 'after' old: then they are learned with
    # the defaults of their time, in prediction-time order
    learn_until(p, lambda: p.defaulting.maturing.held == len(clicked), timeout=AFTER)
    assert p.counters["samples"] == 0 and p.counters.get("defaults", 0) == 0
    assert p.status()["heldLabels"] == str(len(clicked))
    learn_until(p, lambda: p.counters["samples"] >= 320, timeout=30)
    assert time.monotonic() - started >= AFTER and p.defaulting.maturing.held == 0
    c = p.counters
    assert (c["samples"], c["defaults"], c["label_sum"]) == (320, 288, 32.0)
    # a click 'after' its prediction's time: its default was learned; the click is not
    _click(r, p, ids[1])
    learn_until(p, lambda: p.counters.get("after-default", 0) == 1)
    [dead] = r.xrange(p.keys.deadletter)
    assert dead[1][b"reason"].startswith(b"after-default")
    # a second learner on the same checkpoint learns nothing again
    again = _proc(r)
    deadline = time.monotonic() + AFTER + 3
    while time.monotonic() < deadline:
        again.step(block_ms=20)
    assert again.counters["samples"] == 320 and again.counters["defaults"] == 288


def test_the_monitor_scores_clicks_with_the_defaults_once_the_predictions_are_mature(r) -> None:
    """Impressions not clicked yet do not read as accuracy: the clicks wait for their
    predictions to be 'after' old, then count with the defaults of the rest."""
    model = parse(manifest(learning=LEARNING))
    mon = monitor_for(model, r)
    mon.start()
    k = Keys(model.namespace, model.name)
    rows, _ = SyntheticStream(FRAUD_FEATURES, "binary", seed=4).take(200)
    # every answer says "no click" (0.2): right for the 180 not clicked, wrong for the clicks
    logged = LoggedRequest(rows, scores=[0.2] * 200, revision=model.revision).write(r, k)
    for pid in logged.ids[::10]:
        r.xadd(k.feedback, {"data": orjson.dumps({"id": pid, "label": 1})})
    mon.step(block_ms=20)
    mon.step(block_ms=20)
    early = summary_of(mon)["tracks"].get("stable", {})
    assert early.get("labelled", 0) == 0, "20 clicks alone would read as 0 % accuracy"
    assert mon.defaulting.maturing.held == 20
    deadline = time.monotonic() + AFTER + 5
    while summary_of(mon)["tracks"].get("stable", {}).get("labelled", 0) < 200:
        assert time.monotonic() < deadline, summary_of(mon)["tracks"]
        mon.step(block_ms=50)
    stable = summary_of(mon)["tracks"]["stable"]
    assert stable["labelled"] == 200 and stable["accuracy"] == pytest.approx(0.9)
    maturity = summary_of(mon)["maturity"]
    assert maturity["after"] == AFTER and "held" not in maturity and "early" not in maturity  # (0s)
    assert AFTER < maturity["lagSeconds"] < AFTER + 5
    # a click 'after' the prediction's time changes nothing: its default was scored
    r.xadd(k.feedback, {"data": orjson.dumps({"id": logged.ids[1], "label": 1})})
    for _ in range(3):
        mon.step(block_ms=50)
    assert summary_of(mon)["tracks"]["stable"]["labelled"] == 200
    # a restarted monitor scores nothing twice
    again = monitor_for(model, r)
    again.start()
    for _ in range(int((AFTER + 3) / 0.05)):
        again.step(block_ms=50)
    assert summary_of(again)["tracks"].get("stable", {}).get("labelled", 0) == 0


def test_a_late_click_is_learned_as_a_correction_of_its_default_once(r) -> None:
    """``lateLabel: correct``: a click past 'after' is learned beside its default (counted
    as corrected), one late label a prediction; one saying what the default said is not."""
    p = _proc(r, lateLabel="correct")
    ids = _impressions(r, p, 40, each=4)
    learn_until(p, lambda: p.counters["samples"] == 40, timeout=AFTER + 10)
    assert p.counters["defaults"] == 40 and p.counters["label_sum"] == 0.0
    for pid in ids[:3]:
        _click(r, p, pid)
    _click(r, p, ids[0])  # the same click again: a duplicate
    _click(r, p, ids[5], label=0)  # "no click", past 'after': what the default said
    learn_until(p, lambda: p.counters.get("corrected", 0) == 3)
    learn_until(p, lambda: p.counters.get("duplicate", 0) == 1)
    c = p.counters
    assert (c["samples"], c["defaults"], c["label_sum"]) == (43, 40, 3.0)
    assert c["after-default"] == 1 and c["not_default"] == 3
    sample = p.metrics.registry.get_sample_value
    assert sample("tideline_learner_corrected_total") == 3.0
    assert sample("tideline_learner_defaults_total") == 40.0
    assert p.status()["heldLabels"] == "0"
    reasons = sorted(e[1][b"reason"].decode() for e in r.xrange(p.keys.deadletter))
    assert reasons == ["after-default: the default learned was this label", "duplicate"]
    # once a late label is counted, the rows are weighted: q = 3 / 3 here
    assert p.training.correction is not None and p.training.correction.q == 1.0
    # a second learner on the same checkpoint learns nothing again, and weighs as it did
    again = _proc(r, lateLabel="correct")
    _click(r, p, ids[1])
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        again.step(block_ms=20)
    assert again.counters["samples"] == 43 and again.counters["corrected"] == 3
    assert again.counters["duplicate"] == 2  # (that click: its late label was learned)
    assert again.training.correction is not None and again.training.correction.q == 1.0
    # a click learned in time, sent again past 'after' (a client's retry): a duplicate, not
    # a correction - no default took its prediction
    more = _impressions(r, again, 8, each=4)
    _click(r, again, more[0])
    learn_until(again, lambda: again.counters["samples"] == 51, timeout=AFTER + 10)
    assert again.counters["defaults"] == 47 and again.counters["label_sum"] == 4.0
    _click(r, again, more[0])
    learn_until(again, lambda: again.counters["duplicate"] == 3)
    assert again.counters["samples"] == 51 and again.counters["corrected"] == 3
