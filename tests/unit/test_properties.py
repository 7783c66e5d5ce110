"""Property tests, seeded and bounded: the spec parser and decide() over what no table lists.

The parser meets any JSON-like document where a field is expected and must
answer with a SpecError naming a path, never another exception. decide()
meets random sequences of turns (pointers moving, summaries fresh or stale,
evidence for and against, concept drift, annotations, a new revision) and
must never raise, and must keep its invariants.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import comparison, health_at, manifest
from tideline import health as h
from tideline.spec import SpecError, parse
from tideline_operator.rollout import (
    ABORT,
    PROMOTE,
    ROLLBACK_TO,
    Observed,
    Prove,
    RollbackTo,
    RolloutStatus,
    decide,
)

SEEDED = settings(derandomize=True, max_examples=400, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow])  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8) | st.integers(-3, 3), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip

PATHS = [
    ("spec",), ("spec", "model"), ("spec", "model", "task"), ("spec", "model", "algorithm"),
    ("spec", "model", "features"), ("spec", "model", "features", 0),
    ("spec", "model", "features", 0, "type"), ("spec", "model", "features", 0, "default"),
    ("spec", "model", "features", 0, "buckets"), ("spec", "model", "params"),
    ("spec", "model", "params", "learningRate"), ("spec", "model", "warmStart"),
    ("spec", "learning"), ("spec", "learning", "batchSize"), ("spec", "learning", "labelWindow"),
    ("spec", "learning", "replay"), ("spec", "learning", "gate"), ("spec", "serving"),
    ("spec", "serving", "fallback"), ("spec", "serving", "timeout"), ("spec", "serving", "autoscaling"),
    ("spec", "drift"), ("spec", "drift", "features"), ("spec", "drift", "concept", "method"),
    ("spec", "guardrails"), ("spec", "guardrails", "onConceptDrift"), ("spec", "rollout"),
    ("spec", "rollout", "steps"), ("spec", "rollout", "steps", 0), ("spec", "rollout", "analysis"),
    ("spec", "rollout", "trafficRouting"), ("spec", "redis"), ("spec", "redis", "url"),
    ("metadata",), ("metadata", "name"), ("metadata", "namespace"), ("kind",),
]  # fmt: skip


def _base() -> dict[str, Any]:
    m = manifest(name="fraud", rollout={"steps": [{"setWeight": 10}, {"pause": "5s"}]})
    parse(m)  # the base is valid: every error below comes from a change
    return m


def _put(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    node: Any = doc
    for k in path[:-1]:
        if isinstance(node, dict):
            node = node.setdefault(k, {})
        elif isinstance(node, list) and isinstance(k, int) and k < len(node):
            node = node[k]
        else:
            return doc
    if (
        isinstance(node, dict)
        or isinstance(node, list)
        and isinstance(path[-1], int)
        and path[-1] < len(node)
    ):
        node[path[-1]] = value
    return doc


@SEEDED
@given(st.lists(st.tuples(st.sampled_from(PATHS), json_values), min_size=1, max_size=3))
def test_the_parser_answers_any_value_anywhere_with_a_spec_error_naming_a_path(changes) -> None:
    doc = _base()
    for path, value in changes:
        doc = _put(doc, path, value)
    try:
        parse(doc)
    except SpecError as e:
        assert e.path and e.reason, e
        assert e.path.startswith(("spec", "metadata", "kind", "apiVersion")), e


MAPPINGS = [p for p in PATHS if p[-1] in ("spec", "model", "learning", "serving", "drift", "guardrails",
                                         "rollout", "redis", "replay", "gate", "analysis", "params")]  # fmt: skip
mixed_keys = st.dictionaries(
    st.text(max_size=6) | st.integers(-5, 5), json_values, min_size=1, max_size=5
)


@SEEDED
@given(st.sampled_from(MAPPINGS), mixed_keys)
def test_a_mapping_with_unknown_keys_of_any_type_is_a_spec_error(path, value) -> None:
    try:
        parse(_put(_base(), path, value))
    except SpecError as e:
        assert e.path.startswith("spec"), e


def _health(now: float, d: dict[str, Any]) -> h.Health | None:
    if d["none"]:
        return None
    cands = {
        "served": h.Candidate(revision=d["rev"], version=d["served"], served_labelled=d["labelled"])
    }
    for role, version in (
        ("lastGood", d["lg"]),
        ("latest", d["latest"]),
        ("canary", 0),
        ("constant", None),
    ):
        if d.get(f"has_{role}"):
            diff, half = d[f"diff_{role}"], d[f"half_{role}"]
            cands[role] = h.Candidate(
                revision=d["rev"] if version is not None else None, version=version,
                vs_served=comparison(diff, half, d["samples"]),
            )  # fmt: skip
    concept = h.ConceptDrift(
        detected=d["concept"], last=h.ConceptEvent(ts=d["concept_ts"], method="adwin", version=d["served"])
        if d["concept"] else None,
    )  # fmt: skip
    return health_at(now - d["age"], stable={"error_rate": d["err"], "requests": 1000},
                  canary={"p95_latency": d["p95"]}, candidates=cands, window=0, concept=concept)  # fmt: skip


diffs = st.floats(-1, 1)
turns = st.fixed_dictionaries({
    "dt": st.floats(0.0, 30.0), "none": st.booleans(), "age": st.sampled_from([0.0, 1.0, 100.0]),
    "rev": st.sampled_from(["r1", "r2"]), "served": st.integers(0, 9), "lg": st.none() | st.integers(0, 9),
    "latest": st.integers(0, 12), "labelled": st.integers(0, 3000), "samples": st.integers(0, 3000),
    **{f"has_{r}": st.booleans() for r in ("lastGood", "latest", "canary", "constant")},
    **{f"diff_{r}": diffs for r in ("lastGood", "latest", "canary", "constant")},
    **{f"half_{r}": st.floats(0, 0.5) for r in ("lastGood", "latest", "canary", "constant")},
    "concept": st.booleans(), "concept_ts": st.sampled_from([10.0, 20.0]),
    "err": st.none() | st.floats(0, 1), "p95": st.none() | st.floats(0, 1),
    "revision": st.sampled_from(["r1", "r2", "r3"]),
    "ann": st.sampled_from([{}, {PROMOTE: "true"}, {ABORT: "true"}, {ROLLBACK_TO: "3"},
                            {ROLLBACK_TO: "\u00b2"}, {ROLLBACK_TO: "-1"}]),
    "ready": st.booleans(),
})  # fmt: skip
POLICIES = st.sampled_from(["adapt", "rollback", "pause", "alert"])


@SEEDED
@given(POLICIES, st.lists(turns, min_size=1, max_size=12))
def test_decide_never_raises_and_keeps_its_invariants(policy, sequence) -> None:
    spec = parse(manifest(name="fraud", guardrails={"onConceptDrift": policy},
                          rollout={"steps": [{"setWeight": 10}, {"pause": "5s"}, {"analysis": {}},
                                             {"setWeight": 50}],
                                   "analysis": {"interval": "2s", "minSamples": 100}})).spec  # fmt: skip
    status: RolloutStatus | None = None
    now = 1000.0
    for d in sequence:
        now += d["dt"]
        obs = Observed(revision=d["revision"], annotations=d["ann"], served=d["served"],
                       last_good=d["lg"], latest=d["latest"], replicas_ready=d["ready"])  # fmt: skip
        before = copy.deepcopy(status)
        decision = decide(spec, status, obs, _health(now, d), now)
        assert status == before, "decide never mutates its input"
        st_ = decision.status
        assert st_.phase in ("Healthy", "Progressing", "Paused", "Degraded")
        assert 0 <= int(st_.canaryWeight or 0) <= 100
        assert RolloutStatus.from_status(st_.to_status()) == st_  # the resource's status holds it
        types = [c.type for c in st_.conditions]
        assert len(types) == len(set(types))
        for a in decision.actions:
            if isinstance(a, RollbackTo):
                assert isinstance(a.to, int) and a.to >= 0
                if a.pin.reason != "rolled back by annotation":
                    assert a.to == d["lg"], "only to the proven lastGood"
            if isinstance(a, Prove):  # the served version, and never a cold v0 (no baseline here)
                assert a.version == d["served"] and a.version != 0
        status = st_


@SEEDED
@given(st.lists(st.one_of(st.floats(), st.integers(-(2**62), 2**62), st.booleans(), st.none(),
                          st.text(max_size=3)), max_size=40), st.floats(-5, 5))  # fmt: skip
def test_the_monitor_reads_a_column_of_logged_values_as_it_reads_each(values, default) -> None:
    from tideline.monitoring.driftsample import _num, _numbers

    assert _numbers(values, default).tolist() == [_num(v, default) for v in values]


@SEEDED
@given(st.lists(st.lists(st.one_of(st.floats(), st.integers(-(2**53), 2**53), st.none()),
                         min_size=3, max_size=3), min_size=1, max_size=30),
       st.lists(st.floats(-5, 5), min_size=3, max_size=3))  # fmt: skip
def test_the_monitor_reads_typed_logged_rows_as_it_reads_each_value(rows, defaults) -> None:
    from tideline.monitoring.driftsample import _drift_body, _num, _typed_rows

    names = ["a", "b", "c"]
    objects = [{k: v for k, v in zip(names, row, strict=True) if v is not None} for row in rows]
    # (a value JSON cannot hold, inf or NaN, is logged as null: the server writes JSON)
    body = orjson.dumps({"instances": objects}, option=orjson.OPT_SERIALIZE_NUMPY)
    typed = _drift_body(names).decode(body).instances
    want = [[_num(o.get(k), d) for k, d in zip(names, defaults, strict=True)]
            for o in orjson.loads(body)["instances"]]  # fmt: skip
    assert _typed_rows(typed, defaults).tolist() == want
