"""The monitor's evidence for proving a replaced version and for unpinning after a rollback."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from tests.helpers import FRAUD_FEATURES, LoggedRequest, manifest, monitor_for
from tideline import health as health_summary
from tideline import predlog
from tideline.algorithms import make_learner
from tideline.contracts import Keys, Pointers
from tideline.demo.simulate import SyntheticStream
from tideline.pods.monitor import Monitor
from tideline.spec import parse
from tideline.store import ModelStore
from tideline_operator import rollout
from tideline_operator.rollout import RolloutStatus

pytestmark = pytest.mark.integration


def _model():
    return parse(manifest(name="fraud", rollout={"analysis": {"interval": "100ms",
                                                              "minSamples": 200}}))  # fmt: skip


def _trained(model, rows, y):
    m = make_learner(model.spec.model.to_dict())
    m.learn_many(m.schema.encode(rows), y)
    return m


def _answered(r, model, store, version, rows, y, prefix):
    """Requests answered by ``version`` (logged as a server logs them), then their labels."""
    k = Keys(model.namespace, model.name)
    served, _ = store.load(model.revision, version)
    ids = [f"{prefix}{i}" for i in range(len(rows))]
    scores = [float(x) for x in served.predict_many(served.schema.encode(rows))]
    LoggedRequest(rows, ids=ids, scores=scores, track="stable", revision=model.revision,
                  version=version).write(r, k)  # fmt: skip
    pipe = r.pipeline()
    for i, label in zip(ids, y.tolist(), strict=True):
        pipe.xadd(k.feedback, {"data": orjson.dumps({"id": i, "label": label})})
    pipe.execute()


def _quality(mon: Monitor) -> dict:
    return orjson.loads(health_summary.encode(mon.write()))["quality"]


def test_a_version_replaced_before_its_labels_came_is_offered_with_lastgood_and_constant(
    r,
) -> None:
    model = _model()
    stream = SyntheticStream(FRAUD_FEATURES, "binary", seed=3)
    store = ModelStore(r, model.namespace, model.name)
    rows, y = stream.take(3000)
    store.publish(model.revision, 1, _trained(model, rows[:1000], y[:1000]))
    store.set_pointer(model.revision, "lastGood", 1)
    store.publish(model.revision, 2, _trained(model, rows, y))
    mon = Monitor(model, r)
    mon.list_logs_every = 0.0
    mon.start()
    test_rows, test_y = stream.take(600)
    _answered(r, model, store, 2, test_rows, test_y, "a")
    # the learner published v3 before v2's labels came: v3 is served, v2 was replaced
    store.publish(model.revision, 3, _trained(model, rows[:2000], y[:2000]))
    mon.step(block_ms=50)
    c = _quality(mon)["candidates"]
    assert c["served"]["version"] == 3 and c["served"].get("servedLabelled", 0) == 0
    recent = c["recent"]
    assert (recent["version"], recent["servedLabelled"]) == (2, 600)
    assert recent["versus"]["lastGood"]["samples"] == 600
    assert recent["versus"]["constant"]["lower"] > 0, "surely better than the best constant"


def test_while_pinned_latest_is_compared_on_the_labels_since_the_pin_alone(r) -> None:
    model = _model()
    stream = SyntheticStream(FRAUD_FEATURES, "binary", seed=4)
    store = ModelStore(r, model.namespace, model.name)
    k = Keys(model.namespace, model.name)
    rows, y = stream.take(3000)
    store.publish(model.revision, 1, _trained(model, rows, y))
    store.set_pointer(model.revision, "lastGood", 1)
    store.publish(model.revision, 2, _trained(model, rows, 1.0 - y))  # poisoned
    mon = Monitor(model, r)
    mon.list_logs_every = 0.0
    mon.start()
    before_rows, before_y = stream.take(500)
    _answered(r, model, store, 2, before_rows, before_y, "b")
    mon.step(block_ms=50)
    assert _quality(mon).get("pin") is None
    # the rollback: v1 pinned, its details beside the pin; then the learner publishes v3
    r.hset(k.pointers(model.revision), mapping=Pointers.pin_hash(
        from_=2, to=1, at=123.0, reason="lastGood v1 beats served v2", latest=2))  # fmt: skip
    store.set_pointer(model.revision, "served", 1, pin=True)
    store.publish(model.revision, 3, _trained(model, rows[:2500], y[:2500]))
    q = _quality(mon)
    assert q["pin"]["at"] == 123.0 and q["pin"]["version"] == 1
    assert q["pin"].get("samples", 0) == 0 and q["pin"]["errorBefore"] < 0.5
    assert q["candidates"]["latest"]["sincePin"]["samples"] == 0
    after_rows, after_y = stream.take(400)
    _answered(r, model, store, 1, after_rows, after_y, "c")
    mon.step(block_ms=50)
    q = _quality(mon)
    assert q["window"] == 900
    assert q["candidates"]["latest"]["sincePin"]["samples"] == 400
    assert q["candidates"]["latest"]["vsServed"]["samples"] == 900
    assert q["pin"]["samples"] == 400 and q["pin"]["errorSince"] < 0.5
    # unpinned: the pin's evidence goes
    store.set_pointer(model.revision, "served", 3, pin=False)
    q = _quality(mon)
    assert q.get("pin") is None and "sincePin" not in q["candidates"]["latest"]


# -- out of sample: a memorising model is judged on the labels it has not learned ---------------


_MEMORIZER = "tests.models.teams:Memorizer"


def _memorized(rows, y):
    """A Memorizer that learned ``rows`` (the features of :func:`_model`'s)."""
    m = make_learner({"task": "binary", "algorithm": "custom", "features": FRAUD_FEATURES,
                      "custom": {"class": _MEMORIZER}})  # fmt: skip
    m.learn_many(m.schema.encode(rows), y)
    return m


def _labelled(r, mon: Monitor, model, store, version, rows, y, prefix) -> list[float]:
    """:func:`_answered`, read by the monitor; when each label arrived (its feedback entry's
    time: the clock ``learnedUntil`` is on)."""
    k = Keys(model.namespace, model.name)
    before = r.xlen(k.feedback)
    _answered(r, model, store, version, rows, y, prefix)
    total = mon.evidence.total + len(rows)
    for _ in range(20):
        if mon.evidence.total >= total:
            break
        mon.step(block_ms=50)
    assert mon.evidence.total == total, "the monitor read every label"
    return [predlog.entry_seconds(e) for e, _ in r.xrange(k.feedback)][before:]


def _streams_now(r) -> float:
    """Redis's clock, the one its stream entry ids are on."""
    s, us = r.time()
    return s + us / 1e6


def _summary(mon: Monitor) -> health_summary.Health:
    """The summary the monitor writes, as the operator reads it back from Redis (a comparison
    on no samples, right after a version is published, must decode too)."""
    mon.write()
    s = health_summary.decode(mon.r.get(mon.keys.health))
    assert s is not None and s.quality is not None
    return s


_WITH_OR_WITHOUT = pytest.mark.parametrize(
    "learned_until",
    [True, False],
    ids=[
        "a memorising version stored with learnedUntil is scored on the labels after it alone",
        "the same version stored without it is scored on the labels it learned (the control)",
    ],
)


@_WITH_OR_WITHOUT
def test_a_memorising_version_is_not_proven_on_the_labels_it_learned(
    r, monkeypatch, learned_until
) -> None:
    monkeypatch.setenv("TIDELINE_SIGNING_KEY", "k" * 32)  # (a custom class's versions are signed)
    model = _model()
    stream = SyntheticStream(FRAUD_FEATURES, "binary", seed=3)
    store = ModelStore(r, model.namespace, model.name)
    rows, y = stream.take(3000)
    # v1, honest, learned labels that came before the window's (none of them in it)
    store.publish(model.revision, 1, _trained(model, rows, y), {"learnedUntil": _streams_now(r)})
    store.set_pointer(model.revision, "lastGood", 1)
    mon = monitor_for(model, r)
    mon.start()
    a_rows, a_y = stream.take(1500)
    came = _labelled(r, mon, model, store, 1, a_rows, a_y, "a")
    # the memorising learner publishes v2: it learned every label in the window
    meta = {"learnedUntil": max(came)} if learned_until else {}
    store.publish(model.revision, 2, _memorized(a_rows, a_y), meta)
    s = _summary(mon)
    served, good = s.quality.get("served"), s.quality.get("lastGood")
    assert served is not None and good is not None and good.vs_served is not None
    assert (served.version, good.version) == (2, 1)
    if learned_until:  # nothing it has not learned yet: no evidence either way
        assert served.samples == 0 and served.accuracy is None
        assert good.vs_served.samples == 0
    else:  # perfect on its own training data, surely better than the honest version
        assert (served.samples, served.accuracy) == (1500, 1.0)
        assert good.vs_served.samples == 1500 and good.vs_served.worse(0.0)
    # v2 answers new requests; their labels come after everything it learned
    b_rows, b_y = stream.take(250)
    later = _labelled(r, mon, model, store, 2, b_rows, b_y, "b")
    assert min(later) > max(came)
    s = _summary(mon)
    served, recent, good = (s.quality.get(role) for role in ("served", "recent", "lastGood"))
    assert served is not None and recent is not None and good is not None
    assert (recent.version, recent.served_labelled) == (2, 250)
    vs, back = recent.versus["lastGood"], good.vs_served
    assert vs is not None and back is not None
    status = RolloutStatus(stableRevision=model.revision, servedVersion=2, lastGoodVersion=1)
    proven = rollout.proven(model.spec, status, s, s.ts)
    if learned_until:  # judged on the 250 new labels: a coin flip, surely worse than v1
        assert served.samples == vs.samples == back.samples == 250
        assert served.accuracy is not None and served.accuracy < 0.6
        assert good.accuracy is not None and good.accuracy > 0.85
        assert vs.worse(0.0) and back.better(0.0)
        assert proven is None
    else:  # its training data outweighs the new labels: proven, though it learned nothing
        assert served.samples == vs.samples == 1750
        assert served.accuracy is not None and served.accuracy > 0.9
        assert not vs.worse(0.0)
        assert proven == 2


@_WITH_OR_WITHOUT
def test_a_memorising_canary_does_not_win_on_the_labels_it_learned(
    r, monkeypatch, learned_until
) -> None:
    """A canary is judged by what it answered as each sample came (its track), so even a
    version stored without learnedUntil - scored as a version on the labels it learned - is
    not judged on them."""
    monkeypatch.setenv("TIDELINE_SIGNING_KEY", "k" * 32)  # (a custom class's versions are signed)
    model = _model()
    k = Keys(model.namespace, model.name)
    stream = SyntheticStream(FRAUD_FEATURES, "binary", seed=3)
    store = ModelStore(r, model.namespace, model.name)
    rows, y = stream.take(3000)
    store.publish(model.revision, 1, _trained(model, rows, y), {"learnedUntil": _streams_now(r)})
    mon = monitor_for(model, r)
    mon.start()
    a_rows, a_y = stream.take(1400)
    came = _labelled(r, mon, model, store, 1, a_rows, a_y, "a")
    # a canary revision whose class memorises: its served version learned the window's labels
    meta = {"learnedUntil": max(came)} if learned_until else {}
    store.publish("memo", 1, _memorized(a_rows, a_y), meta)
    r.hset(k.routing, mapping={"stable": model.revision, "canary": "memo"})
    s = _summary(mon)
    canary = s.quality.get("canary")
    assert canary is not None and canary.vs_served is not None
    assert (canary.revision, canary.version) == ("memo", 1)
    if learned_until:  # as a version: no label it has not learned
        assert (canary.samples, canary.accuracy) == (0, None)
    else:  # as a version: perfect on what it learned
        assert (canary.samples, canary.accuracy) == (1400, 1.0)
    # its track answered nothing yet: the analysis waits
    assert canary.vs_served.samples == 0
    assert rollout.analyze(model.spec, s, s.ts).outcome == "inconclusive"
    # stable answers new requests; their labels come after everything the canary learned
    b_rows, b_y = stream.take(300)
    later = _labelled(r, mon, model, store, 1, b_rows, b_y, "b")
    assert min(later) > max(came)
    s = _summary(mon)
    canary, served = s.quality.get("canary"), s.quality.get("served")
    assert canary is not None and canary.vs_served is not None and served is not None
    vs = canary.vs_served
    result = rollout.analyze(model.spec, s, s.ts)
    # judged on the 300 new labels: surely worse than stable, it fails
    assert vs.samples == 300
    assert canary.samples == (300 if learned_until else 1700)
    assert served.accuracy is not None and served.accuracy > 0.85
    assert vs.worse(model.spec.rollout.analysis.maxAccuracyDrop)
    assert (result.outcome, result.metric) == ("fail", "accuracy")


def test_a_canary_is_judged_across_its_versions(r) -> None:
    """A canary learner replaces its version before the version's labels come: its track's
    comparison grows across versions (a version's own, on the labels after it, would start
    again with each)."""
    model = _model()
    k = Keys(model.namespace, model.name)
    stream = SyntheticStream(FRAUD_FEATURES, "binary", seed=5)
    store = ModelStore(r, model.namespace, model.name)
    rows, y = stream.take(3000)
    store.publish(model.revision, 1, _trained(model, rows, y), {"learnedUntil": _streams_now(r)})
    store.publish("next", 1, _trained(model, rows[:2000], y[:2000]),
                  {"learnedUntil": _streams_now(r)})  # fmt: skip
    r.hset(k.routing, mapping={"stable": model.revision, "canary": "next"})
    mon = monitor_for(model, r)
    mon.start()
    learned = 2000
    for part in range(4):  # four canary versions, 60 labels each after it was published
        b_rows, b_y = stream.take(60)
        came = _labelled(r, mon, model, store, 1, b_rows, b_y, f"p{part}-")
        rows, y = [*rows, *b_rows], [*y, *b_y]
        learned += 60
        store.publish("next", part + 2, _trained(model, rows[:learned], np.array(y[:learned])),
                      {"learnedUntil": max(came)})  # fmt: skip
        store.set_pointer("next", "served", part + 2)
        mon._versions_looked = 0.0  # (the monitor looks at the pointers every 0.25 s)
        s = _summary(mon)
        canary = s.quality.get("canary")
        assert canary is not None and canary.vs_served is not None
        assert canary.version == part + 2 and canary.samples == 0
        assert canary.vs_served.samples == 60 * part  # (the first batch came before it was seen)
