"""A team's own model that fails on the request path (the issue: "faults in user code never
stop learning or serving"): a ``predict`` that raises or gives scores that cannot be served
answers the fallback, or a 503 naming the error, counted; one that runs past
``serving.timeout`` answers the fallback in time while the server goes on answering; a
canary or a shadow that fails costs its own answer only; a version that cannot answer a
probe is named before it serves. Against a real redis-server (and the probe without)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from tests.helpers import FRAUD_FEATURES, Served, log_entries, manifest, wait_until
from tests.models import teams
from tideline import signing
from tideline.algorithms import make_learner
from tideline.demo.simulate import SyntheticStream
from tideline.pods.server.usercode import probe, probe_rows
from tideline.store import ModelStore, Reference

pytestmark = pytest.mark.integration

PREDICT = "/v1/models/fraud:predict"
INFER = "/v2/models/fraud/infer"
KEY = "k" * 32  # a team's own model's versions are signed: no server loads them without one
FINE = {"amount": 12.5, "hour": 3.0, "merchant": "m-1"}
RAISES = {**FINE, "amount": 99.0}  # tests.models.teams.Faulty raises on it
SLEEPS = {**FINE, "amount": 77.0}  # tests.models.teams.Sleepy sleeps on it


@pytest.fixture(autouse=True)
def _signing_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(signing.KEY_ENV, KEY)


def _model(cls: str, **params: Any) -> dict[str, Any]:
    return {"task": "binary", "algorithm": "custom", "features": FRAUD_FEATURES,
            "custom": {"class": f"tests.models.teams:{cls}", "params": params}}  # fmt: skip


def _taught(model: dict[str, Any], seed: int = 0):  # type: ignore[no-untyped-def]
    learner = make_learner(model)
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=seed).take(200)
    learner.learn_many(learner.schema.encode(rows), y)
    return learner


def _infer(*rows: dict[str, Any]) -> dict[str, Any]:
    """A V2 infer request of these rows, a tensor per feature."""
    return {"inputs": [
        {"name": "amount", "shape": [len(rows)], "datatype": "FP64", "data": [r["amount"] for r in rows]},
        {"name": "hour", "shape": [len(rows)], "datatype": "FP64", "data": [r["hour"] for r in rows]},
        {"name": "merchant", "shape": [len(rows)], "datatype": "BYTES", "data": [r["merchant"] for r in rows]},
    ]}  # fmt: skip


def _metric(s: Served, name: str, **labels: str) -> float:
    """A sample's value in the server's /metrics (0 when absent)."""
    want = name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    for line in s.client.get("/metrics").text.splitlines():
        if line.startswith(want + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _errors(s: Served, track: str, reason: str) -> float:
    return _metric(s, "tideline_server_model_errors_total", track=track, reason=reason)


@pytest.fixture
def serve(r, redis_server) -> Iterator[Any]:
    """``serve(model, serving, versions)``: a server of ``model`` (a custom model's spec),
    with ``versions`` ({version: learner}, the last one served) published first."""
    started: list[Served] = []

    def start(model: dict[str, Any], serving: dict[str, Any], versions: dict[int, Any],
              last_good: int | None = None) -> Served:  # fmt: skip
        doc = manifest(name="fraud", serving=serving)
        doc["spec"]["model"] = model
        s = Served(redis_server.url, doc)
        store = ModelStore(r, "test", "fraud")
        for version, learner in versions.items():
            store.publish(s.model.revision, version, learner)
        if last_good is not None:
            store.set_pointer(s.model.revision, "lastGood", last_good)
        s.client.__enter__()
        started.append(s)
        wait_until(lambda: s.dp.ready and s.dp.guarded)
        if last_good is not None:
            wait_until(lambda: s.dp.last_good is not None and s.dp.last_good.version == last_good)
        return s

    yield start
    for s in started:
        s.client.__exit__(None, None, None)


# --------------------------------------------------------------------------- the stable
# (a model that gives such scores for every row never serves: see the probe below; these
# pass on the feature defaults, and fail on some rows)
FAILING = [
    ("Faulty", [RAISES, FINE], "RuntimeError: cannot score 99"),
    ("Moody", [FINE, {**FINE, "amount": 98.0}], "Moody returned a score that is not finite"),
    ("Moody", [{**FINE, "amount": 97.0}], "Moody returned scores of shape (1, 2) for 1 rows"),
]


@pytest.mark.parametrize(
    ("cls", "rows", "error"), FAILING,
    ids=["a predict that raises", "scores that are not finite", "scores of the wrong shape"],
)  # fmt: skip
def test_a_model_that_fails_answers_the_fixed_fallback_flagged_counted_and_logged_once(
    serve, r, caplog, cls: str, rows: list, error: str
) -> None:
    model = _model(cls)
    s = serve(model, {"fallback": {"value": 0.25}}, {1: _taught(model)})
    with caplog.at_level(logging.WARNING, logger="tideline.server"):
        one = s.client.post(PREDICT, json={"instances": rows})
        two = s.client.post(INFER, json=_infer(*rows))
    assert one.status_code == 200 and two.status_code == 200
    assert one.json()["predictions"] == [0.25] * len(rows) and one.json()["fallback"] is True
    assert one.json()["model_version"] is None
    assert two.json()["outputs"][0]["data"] == [0.25] * len(rows)
    assert two.json()["parameters"]["fallback"] is True
    # counted: the metric, the fallbacks by reason, an error of the track (a faulty version)
    assert _errors(s, "stable", "model-error") == 2
    assert _metric(s, "tideline_server_fallbacks_total", reason="model-error") == 2
    assert (s.dp.stats["stable"].requests, s.dp.stats["stable"].errors) == (2, 2)
    # logged once for the two, with the error's last line and no traceback
    lines = [m for m in caplog.messages if "failed (model-error)" in m]
    assert len(lines) == 1 and error in lines[0] and "Traceback" not in lines[0]
    # and the prediction log says the fallback answered, and why
    wait_until(lambda: len(log_entries(r, s)) == 2)
    assert [e["meta"].fallback for e in log_entries(r, s)] == ["model-error"] * 2
    assert all(e["scores"] == [0.25] * len(rows) for e in log_entries(r, s))
    if cls == "Faulty":  # the rows it can score, it scores
        fine = s.client.post(PREDICT, json={"instances": [FINE]}).json()
        assert fine["fallback"] is False and fine["model_version"] == 1


@pytest.mark.parametrize(
    ("last_good", "why"),
    [(1, "the fallback is lastGood, which is that version"),
     (None, "the fallback is lastGood, and none is loaded")],
    ids=["lastGood is the version that fails", "no lastGood version"],
)  # fmt: skip
def test_with_no_other_version_to_fall_back_on_the_answer_is_a_503_naming_the_error(
    serve, last_good: int | None, why: str
) -> None:
    model = _model("Faulty")
    s = serve(model, {"fallback": "lastGood"}, {1: _taught(model)}, last_good=last_good)
    for path, body in ((PREDICT, {"instances": [RAISES]}), (INFER, _infer(RAISES))):
        resp = s.client.post(path, json=body)
        assert resp.status_code == 503, resp.text
        error = resp.json()["error"]
        assert error == f"model-error: {s.model.revision} v1: RuntimeError: cannot score 99; {why}"
    assert (s.dp.stats["stable"].requests, s.dp.stats["stable"].errors) == (2, 2)
    ok = s.client.post(PREDICT, json={"instances": [FINE]})  # the rows it can score, it scores
    assert ok.status_code == 200 and ok.json()["fallback"] is False


def test_with_fallback_last_good_another_version_answers_for_the_one_that_fails(serve) -> None:
    good = _taught(_model("Mean", prior=0.125), seed=1)
    faulty = _model("Faulty")
    s = serve(faulty, {"fallback": "lastGood"}, {1: good, 2: _taught(faulty)}, last_good=1)
    assert s.dp.stable.version == 2
    expected = good.predict_many(good.schema.encode([RAISES])).tolist()
    for path, body in ((PREDICT, {"instances": [RAISES]}), (INFER, _infer(RAISES))):
        resp = s.client.post(path, json=body)
        assert resp.status_code == 200, resp.text
        if path == PREDICT:
            assert resp.json()["predictions"] == expected and resp.json()["model_version"] == 1
            assert resp.json()["fallback"] is True
        else:
            assert resp.json()["outputs"][0]["data"] == expected
            assert resp.json()["model_version"] == "1"


# --------------------------------------------------------------------------- the timeout
def test_past_the_timeout_the_fallback_answers_in_time_and_the_server_goes_on(serve) -> None:
    model = _model("Sleepy", nap=2.0)
    s = serve(model, {"timeout": "200ms", "fallback": {"value": 0.25}}, {1: _taught(model)})
    with ThreadPoolExecutor(2) as pool:
        t0 = time.perf_counter()
        slow = pool.submit(s.client.post, PREDICT, json={"instances": [SLEEPS]})
        time.sleep(0.03)  # the sleeping call is in the model's thread now
        t1 = time.perf_counter()
        live = s.client.get("/v2/health/live")
        # the event loop is not held: another route answers at once, before the slow one does
        assert live.status_code == 200 and time.perf_counter() - t1 < 0.15
        assert not slow.done()
        answer = slow.result(timeout=5)
        took = time.perf_counter() - t0
    assert answer.status_code == 200 and answer.json()["fallback"] is True
    assert answer.json()["predictions"] == [0.25]
    assert 0.2 <= took < 1.0  # about the timeout, far from the model's 2 s
    assert _errors(s, "stable", "timeout") == 1
    # while that call runs on, requests for the model do not queue behind it: fallback, at once
    calls = teams.Sleepy.calls
    t2 = time.perf_counter()
    busy = s.client.post(PREDICT, json={"instances": [FINE]})
    assert busy.json()["fallback"] is True and time.perf_counter() - t2 < 0.15
    assert teams.Sleepy.calls == calls  # never asked
    assert _metric(s, "tideline_server_fallbacks_total", reason="busy") == 1
    assert _errors(s, "stable", "busy") == 1
    # (a timeout is counted as a fallback, not as the version's error: load can cause it)
    assert (s.dp.stats["stable"].fallbacks, s.dp.stats["stable"].errors) == (2, 0)
    # once the call is over, the model answers again
    wait_until(lambda: not s.client.post(PREDICT, json={"instances": [FINE]}).json()["fallback"], timeout=3)  # fmt: skip


def test_a_replaced_version_s_thread_ends_and_the_new_one_answers_in_its_own(serve, r) -> None:
    model = _model("Mean")
    s = serve(model, {}, {1: _taught(model)})
    assert s.client.post(PREDICT, json={"instances": [FINE]}).json()["model_version"] == 1
    rev = s.model.revision
    names = lambda: {t.name for t in threading.enumerate()}  # noqa: E731
    assert f"tideline-model-{rev}-v1" in names()
    ModelStore(r, "test", "fraud").publish(rev, 2, _taught(model, seed=2))
    wait_until(lambda: s.dp.stable.version == 2)
    wait_until(lambda: f"tideline-model-{rev}-v1" not in names())
    assert s.client.post(PREDICT, json={"instances": [FINE]}).json()["model_version"] == 2
    assert f"tideline-model-{rev}-v2" in names()


# --------------------------------------------------------------------------- canary, shadow
def _canary(s: Served, r, model: dict[str, Any], weight: int, shadow: bool = False) -> None:
    ModelStore(r, "test", "fraud").publish("canaryrev", 0, _taught(model, seed=3))
    r.hset(s.dp.keys.routing, mapping={"stable": s.model.revision, "canary": "canaryrev",
                                       "weight": weight, "shadow": int(shadow)})  # fmt: skip
    wait_until(lambda: s.dp.canary is not None and s.dp.routing.weight == weight, timeout=2)


def test_a_canary_that_fails_leaves_its_rows_to_the_stable_and_counts_an_error(serve, r) -> None:
    stable = _model("Mean")
    s = serve(stable, {"fallback": {"value": 0.25}}, {1: _taught(stable)})
    _canary(s, r, _model("Faulty"), weight=100)
    ok = s.client.post(PREDICT, json={"instances": [FINE]}).json()
    assert ok["tracks"] == ["canary"] and ok["fallback"] is False
    body = s.client.post(PREDICT, json={"instances": [RAISES, FINE]}).json()
    by_stable = s.dp.stable.predict(s.dp.stable.schema.encode([RAISES, FINE])).tolist()
    assert body["tracks"] == ["stable", "stable"] and body["predictions"] == by_stable
    assert body["fallback"] is False
    assert _errors(s, "canary", "model-error") == 1
    # the canary's analysis sees the failure: one of its two requests failed
    assert (s.dp.stats["canary"].requests, s.dp.stats["canary"].errors) == (2, 1)
    assert (s.dp.stats["stable"].requests, s.dp.stats["stable"].errors) == (1, 0)


def test_a_shadow_that_fails_is_just_not_scored(serve, r) -> None:
    stable = _model("Mean")
    s = serve(stable, {"fallback": {"value": 0.25}}, {1: _taught(stable)})
    _canary(s, r, _model("Faulty"), weight=100, shadow=True)
    for row in (FINE, RAISES):
        body = s.client.post(PREDICT, json={"instances": [row]}).json()
        assert body["tracks"] == ["stable"] and body["fallback"] is False
    wait_until(lambda: len(log_entries(r, s)) == 2)
    shadows = [e["meta"].shadow for e in log_entries(r, s)]
    assert shadows[0] is not None and shadows[0][:2] == ("canaryrev", 0) and shadows[1] is None
    assert _errors(s, "shadow", "model-error") == 1


def test_the_built_in_learners_answer_on_the_event_loop_as_before(served: Served, r) -> None:
    assert served.dp.guarded is False  # no thread, no await: DataPlane.predict
    _canary(served, r, {"task": "binary", "algorithm": "sgd", "features": FRAUD_FEATURES}, 50)
    assert served.dp.guarded is False


# --------------------------------------------------------------------------- the probe
def _learner(cls: str, **params: Any):  # type: ignore[no-untyped-def]
    return make_learner(_model(cls, **params))


@pytest.mark.parametrize(
    ("learner", "rows", "timeout", "refused"),
    [
        (lambda: _learner("Mean"), None, 5.0, None),
        (lambda: make_learner({"task": "binary", "algorithm": "sgd", "features": FRAUD_FEATURES}),
         None, 5.0, None),
        (lambda: _learner("Faulty"), None, 5.0, None),
        (lambda: _learner("Faulty"), [RAISES], 5.0, "RuntimeError: cannot score 99"),
        (lambda: _learner("NaNs"), None, 5.0,
         "tideline.algorithms.external.BadScores: tests.models.teams:NaNs returned a score that "
         "is not finite"),
        (lambda: _learner("Shapeless"), None, 5.0,
         "tideline.algorithms.external.BadScores: tests.models.teams:Shapeless returned scores "
         "of shape (1, 2) for 1 rows (a binary model gives (1,))"),
        (lambda: _learner("Sleepy", nap=2.0), [SLEEPS], 0.2,
         "predict did not answer 1 probe rows within 0.2 s"),
    ],
    ids=["a team's model that answers passes", "a built-in is not probed",
         "a model that fails on other rows passes on the defaults",
         "a model that raises on a probe row is refused", "scores that are not finite",
         "scores of the wrong shape", "a model that does not answer in time"],
)  # fmt: skip
def test_a_version_is_probed_before_it_serves(learner, rows, timeout: float, refused) -> None:
    m = learner()
    X = None if rows is None else m.schema.encode(rows)
    t0 = time.perf_counter()
    assert probe(m, X, timeout=timeout) == refused
    assert time.perf_counter() - t0 < timeout + 0.5


def test_probe_rows_are_the_defaults_then_the_drift_references_last_rows() -> None:
    m = _learner("Mean")
    ref = Reference(["hour", "amount"], np.array([[1.0, 10.0], [2.0, np.nan], [3.0, 30.0]]),
                    None, "baseline")  # fmt: skip
    X = probe_rows(m.schema, ref, n=2)
    merchant = m.schema.encode([{}])[0, 2]  # (no default: the missing code)
    assert X.tolist() == [[0.0, 12.0, merchant], [0.0, 2.0, merchant], [30.0, 3.0, merchant]]
    assert m.schema.missing.tolist() == [1, 1, 1]  # the line above only: the probe used a copy
