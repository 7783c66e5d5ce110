"""The operator on a real control plane: install, apply, GitOps, canary, rollback, bad input,
resilience, scale. The tests play the monitor by writing health summaries to Redis."""

from __future__ import annotations

import copy
import json
import subprocess
import time
from pathlib import Path

import pytest
import redis
import yaml

from tests.e2e.conftest import NAMESPACE, ROOT, Installed, Operator, get, until
from tests.helpers import health_summary, manifest
from tideline.algorithms import make_learner
from tideline.algorithms.external import ModelLoadError
from tideline.contracts import Keys
from tideline.pods import faults
from tideline.spec import parse
from tideline.store import ModelStore

pytestmark = pytest.mark.e2e
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
CHILD_KINDS = ["configmap", "deployment", "service", "poddisruptionbudget"]


def _ns(installed: Installed, name: str) -> str:
    installed.cluster.kubectl("create", "namespace", name, check=False)
    return name


def _apply(installed: Installed, doc: dict | str, *extra: str) -> None:
    text = doc if isinstance(doc, str) else yaml.safe_dump(doc)
    installed.cluster.kubectl("apply", *extra, "-f", "-", input=text)


def _om(installed: Installed, ns: str, name: str) -> dict:
    return get(installed.cluster, "om", name, "-n", ns)


def _status(installed: Installed, ns: str, name: str) -> dict:
    return _om(installed, ns, name).get("status") or {}


def _owned(installed: Installed, ns: str, name: str) -> list[dict]:
    items = get(installed.cluster, ",".join(CHILD_KINDS), "-n", ns,
                "-l", f"tideline.dev/model={name}")["items"]  # fmt: skip
    return items


def _model(name: str, ns: str, **spec: object) -> dict:
    m = manifest(name, **spec)
    m["metadata"]["namespace"] = ns
    m["spec"].setdefault("serving", {"replicas": 1})
    return m


def _stable_then_canary(installed: Installed, ns: str, name: str, rollout: dict) -> tuple[str, str]:
    """Apply a model, wait for its stable revision, change its params: (old, new) revisions."""
    m = _model(name, ns, rollout=rollout)
    _apply(installed, m)
    until(lambda: _status(installed, ns, name).get("stableRevision"), 60, "stable")
    m2 = copy.deepcopy(m)
    m2["spec"]["model"]["params"] = {"optimizer": "adagrad"}
    _apply(installed, m2)
    return parse(m).revision, parse(m2).revision


def _events(installed: Installed, ns: str, reason: str) -> list[dict]:
    items = get(installed.cluster, "events", "-n", ns)["items"]
    return [e for e in items if e.get("reason") == reason]


# --------------------------------------------------------------------------- 1. helm install
def test_helm_install_creates_the_crd_rbac_and_operator_and_the_operator_runs_with_its_token(
    installed: Installed, operator: Operator
) -> None:
    cp = installed.cluster
    crd = get(cp, "crd", "onlinemodels.tideline.dev")
    assert any(c["type"] == "Established" and c["status"] == "True"
               for c in crd["status"]["conditions"])  # fmt: skip
    get(cp, "crd", "clusterkopfpeerings.kopf.dev")
    role = get(cp, "clusterrole", "tideline")
    assert any("onlinemodels/status" in r.get("resources", []) for r in role["rules"])
    get(cp, "clusterrolebinding", "tideline")
    dep = get(cp, "deployment", "tideline", "-n", NAMESPACE)
    sc = dep["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"]
    # the operator's identity is the chart's ServiceAccount, and it cannot do more than the chart grants
    who = cp.kubectl("auth", "whoami", "-o", "json", kubeconfig=installed.kubeconfig)
    assert json.loads(who.stdout)["status"]["userInfo"]["username"] == (
        f"system:serviceaccount:{NAMESPACE}:tideline"
    )
    denied = cp.kubectl("get", "secrets", "-A", kubeconfig=installed.kubeconfig, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    until(
        lambda: "tideline_operator_reconciles_total" in operator.metrics(), 30, "operator metrics"
    )
    assert operator.alive(), operator.tail()
    # the chart installed this release's CRD: the operator read it (with its list-only role)
    assert "tideline_operator_crd_outdated 0.0" in operator.metrics()
    assert "could not read the OnlineModel CRD" not in operator.tail(100_000)


# --------------------------------------------------------------------------- 2. examples
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_each_example_gets_its_owned_children_running_and_reports_ready(
    installed: Installed, operator: Operator, path: Path
) -> None:
    cp = installed.cluster
    ns = _ns(installed, "e2e-examples")
    doc = yaml.safe_load(path.read_text())
    name = doc["metadata"]["name"]
    start = time.monotonic()
    cp.kubectl("apply", "-n", ns, "-f", str(path))
    om = _om(installed, ns, name)
    children = until(lambda: len(_owned(installed, ns, name)) >= 6, 60, "children")
    items = _owned(installed, ns, name)
    kinds = sorted(i["kind"] for i in items)
    assert kinds == ["ConfigMap", "Deployment", "Deployment", "Deployment",
                     "PodDisruptionBudget", "Service"]  # fmt: skip
    for i in items:
        refs = i["metadata"]["ownerReferences"]
        assert refs[0]["uid"] == om["metadata"]["uid"] and refs[0]["controller"] is True
        assert i["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "tideline-operator"

    def pods_running() -> bool:
        pods = get(cp, "pods", "-n", ns, "-l", f"tideline.dev/model={name}")["items"]
        want = doc["spec"].get("serving", {}).get("replicas", 2) + 2
        return len(pods) >= want and all(p["status"].get("phase") == "Running" for p in pods)

    sm = get(cp, "servicemonitor", name, "-n", ns)  # its CRD exists in this cluster
    assert sm["metadata"]["ownerReferences"][0]["uid"] == om["metadata"]["uid"]
    # the learners' and the monitor's metrics (accuracy, drift) are scraped too
    pm = get(cp, "podmonitor", name, "-n", ns)
    assert pm["metadata"]["ownerReferences"][0]["uid"] == om["metadata"]["uid"]
    assert pm["spec"]["selector"]["matchExpressions"][0]["values"] == ["learner", "monitor"]
    until(pods_running, 90, "pods Running on the fake node")
    until(lambda: _status(installed, ns, name).get("phase") == "Healthy", 60, "phase Healthy")
    took = time.monotonic() - start
    st = _status(installed, ns, name)
    ready = next(c for c in st["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True"
    assert st["observedGeneration"] == om["metadata"]["generation"]
    row = cp.kubectl("get", "om", name, "-n", ns, "--no-headers").stdout.split()
    assert row[0] == name and row[1] == "Healthy" and row[2] == st["stableRevision"]
    wide = cp.kubectl("get", "om", name, "-n", ns, "-o", "wide").stdout.splitlines()[0]
    for column in ("PHASE", "STABLE", "CANARY-WEIGHT", "SERVED", "ACCURACY", "DRIFT", "AGE",
                   "LATEST", "LASTGOOD"):  # fmt: skip
        assert column in wide
    print(f"\n[e2e] {path.name}: apply -> children {children:.1f}s, -> Healthy {took:.1f}s")


# --------------------------------------------------------------------------- 3. GitOps
def test_reapplying_the_same_manifest_changes_nothing_and_the_operator_never_writes_spec(
    installed: Installed, operator: Operator
) -> None:
    ns = _ns(installed, "e2e-gitops")
    m = _model("gitops", ns)
    _apply(installed, m, "--server-side", "--field-manager=argocd-controller")
    until(lambda: _status(installed, ns, "gitops").get("phase") == "Healthy", 90, "Healthy")
    time.sleep(2)  # let the last status write settle
    before = get(installed.cluster, "om", "gitops", "-n", ns, "--show-managed-fields")
    children = {i["metadata"]["name"]: i["metadata"]["resourceVersion"]
                for i in _owned(installed, ns, "gitops")}  # fmt: skip
    for _ in range(3):
        _apply(installed, m, "--server-side", "--field-manager=argocd-controller")
        time.sleep(1.5)
    after = get(installed.cluster, "om", "gitops", "-n", ns, "--show-managed-fields")
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], (
        "no status flapping: nothing wrote the object"
    )
    assert after["status"] == before["status"]
    now = {i["metadata"]["name"]: i["metadata"]["resourceVersion"]
           for i in _owned(installed, ns, "gitops")}  # fmt: skip
    assert now == children, "no child was updated"
    for entry in after["metadata"]["managedFields"]:
        fields = json.dumps(entry.get("fieldsV1", {}))
        if '"f:spec"' in fields:
            assert entry["manager"] == "argocd-controller", entry["manager"]


# --------------------------------------------------------------------------- 4. canary
CANARY_ROLLOUT = {
    "steps": [{"setWeight": 20}, {"pause": "2s"}, {"analysis": {}}, {"setWeight": 60}, {"pause": "2s"}],
    "analysis": {"interval": "1s", "minSamples": 50, "maxAccuracyDrop": 0.02, "failureLimit": 2},
}  # fmt: skip


def _weights_seen(rc: redis.Redis, keys: Keys, seconds: float) -> list[int]:
    seen: list[int] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        w = rc.hget(keys.routing, "weight")
        if w is not None and (not seen or seen[-1] != int(w)):
            seen.append(int(w))
        time.sleep(0.05)
    return seen


def test_a_changed_model_rolls_out_as_a_canary_that_follows_the_steps_and_is_promoted(
    installed: Installed, operator: Operator, rc: redis.Redis
) -> None:
    cp = installed.cluster
    ns = _ns(installed, "e2e-canary")
    old, new = _stable_then_canary(installed, ns, "ctr", CANARY_ROLLOUT)
    keys = Keys(ns, "ctr")
    # what the learners would have left (the fake node runs none)
    model = parse(_model("ctr", ns, rollout=CANARY_ROLLOUT))
    for rev in (old, new):
        ModelStore(rc, ns, "ctr").publish(rev, 0, make_learner(model.spec.model.to_dict()))
    rc.set(keys.checkpoint(old), b"state")
    until(lambda: _status(installed, ns, "ctr").get("canaryRevision") == new, 30, "canary")
    learner = get(cp, "deployment", f"ctr-learner-{new}", "-n", ns)
    args = learner["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-2:] == ["--warm-start-revision", old]
    # the analysis step waits for labels: no data is not a failure
    rc.set(keys.health, health_summary(time.time(), stable={"accuracy": 0.9},
                                       quality={"served": (old, 0), "canary": (new, 0, 0.0, 0.3, 10)}))  # fmt: skip
    seen = _weights_seen(rc, keys, 4.0)
    assert seen and seen[-1] == 20, seen
    st = _status(installed, ns, "ctr")
    assert st["phase"] == "Progressing" and st["analysis"]["outcome"] == "inconclusive"

    weights: list[int] = []

    def play_monitor() -> bool:
        rc.set(keys.health, health_summary(time.time(), stable={"accuracy": 0.9},
                                           quality={"served": (old, 0), "canary": (new, 0, 0.01, 0.02, 500)}))  # fmt: skip
        weights.append(int(rc.hget(keys.routing, "weight") or 0))
        return _status(installed, ns, "ctr").get("stableRevision") == new

    until(play_monitor, 30, "promotion")
    assert 60 in weights, weights
    assert rc.hget(keys.routing, "stable") == new.encode()
    svc = get(cp, "service", "ctr", "-n", ns)
    assert svc["spec"]["selector"]["tideline.dev/revision"] == new
    until(lambda: not get(cp, "deployments", "-n", ns, "-l", f"tideline.dev/revision={old}")["items"],
          30, "old revision removed")  # fmt: skip
    assert _events(installed, ns, "Promoted")
    # its Redis keys go once the grace (2 s here) has passed; the new revision's stay
    until(lambda: not rc.keys(f"{keys.prefix}:rev:{old}:*"), 30, "old revision's keys deleted")
    assert rc.hget(keys.pointers(new), "served") == b"0"


def test_a_canary_that_loses_accuracy_aborts_to_weight_zero_with_a_degraded_condition(
    installed: Installed, operator: Operator, rc: redis.Redis
) -> None:
    ns = _ns(installed, "e2e-abort")
    m = _model("ads", ns, rollout=CANARY_ROLLOUT)
    _apply(installed, m)
    until(lambda: _status(installed, ns, "ads").get("stableRevision"), 60, "stable")
    keys = Keys(ns, "ads")
    m2 = copy.deepcopy(m)
    m2["spec"]["model"]["params"] = {"optimizer": "sgd", "learningRate": 0.5}
    _apply(installed, m2)

    old, new = parse(m).revision, parse(m2).revision

    def play_monitor() -> bool:
        # on the same 500 labelled samples the canary is surely 4-6 points worse
        rc.set(keys.health, health_summary(time.time(), stable={"accuracy": 0.90},
                                           quality={"served": (old, 0), "canary": (new, 0, -0.05, 0.01, 500)}))  # fmt: skip
        return _status(installed, ns, "ads").get("phase") == "Degraded"

    until(play_monitor, 30, "abort")
    st = _status(installed, ns, "ads")
    degraded = next(c for c in st["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and "accuracy" in degraded["message"]
    assert st["canaryWeight"] == 0 and rc.hget(keys.routing, "weight") == b"0"
    assert rc.hget(keys.routing, "canary") == b""
    assert st["stableRevision"] == parse(m).revision, "stable untouched"
    assert _om(installed, ns, "ads")["spec"]["model"]["params"]["learningRate"] == 0.5, (
        "the spec is not edited"
    )
    assert _events(installed, ns, "RolloutAborted")


def _condition(installed: Installed, ns: str, name: str, kind: str) -> dict:
    """The condition of that type ({} while there is none: a KeyError for `until`)."""
    conditions = _status(installed, ns, name).get("conditions", [])
    return next((c for c in conditions if c["type"] == kind), {})


def test_a_model_its_pods_cannot_load_shows_as_model_loaded_false_and_aborts_its_canary(
    installed: Installed, operator: Operator, rc: redis.Redis
) -> None:
    """What the pods write when a team's class cannot be loaded (tideline.pods.faults; the
    fake node runs no pod: the test writes it as the learner would) is the ModelLoaded
    condition with the reason and the error's last line, an Event, Degraded; a canary
    with it is aborted."""
    ns = _ns(installed, "e2e-model-faults")
    m = _model("teamm", ns, rollout=CANARY_ROLLOUT)
    _apply(installed, m)
    until(lambda: _status(installed, ns, "teamm").get("phase") == "Healthy", 90, "Healthy")
    keys, rev = Keys(ns, "teamm"), parse(m).revision
    missing = ModelLoadError(
        "MissingMethod", "fraud_team.model:Scorer has no save (see tideline.model)"
    )
    faults.report(rc, keys, faults.fault_of(missing, "learner", rev, time.time()))
    faults.report(rc, keys, faults.fault_of(missing, "server", rev, time.time()))
    said = f"learner and server of revision {rev}: fraud_team.model:Scorer has no save (see tideline.model)"
    until(lambda: _condition(installed, ns, "teamm", "ModelLoaded")["status"] == "False", 30,
          "ModelLoaded False")  # fmt: skip
    loaded = _condition(installed, ns, "teamm", "ModelLoaded")
    assert (loaded["reason"], loaded["message"]) == ("MissingMethod", said)
    st = _status(installed, ns, "teamm")
    assert st["phase"] == "Degraded"
    degraded = _condition(installed, ns, "teamm", "Degraded")
    assert (degraded["reason"], degraded["message"]) == (
        "MissingMethod", f"the model cannot be loaded: {said}")  # fmt: skip
    assert [f["component"] for f in st["loadFaults"]] == ["learner", "server"]
    until(lambda: len(_events(installed, ns, "MissingMethod")) == 2, 20, "an Event per fault")
    # the pods load it again (a fixed image): each clears its own
    faults.clear(rc, keys, rev, "learner")
    faults.clear(rc, keys, rev, "server")
    until(lambda: _status(installed, ns, "teamm").get("phase") == "Healthy", 30, "Healthy again")
    loaded = _condition(installed, ns, "teamm", "ModelLoaded")
    assert (loaded["status"], loaded["reason"]) == ("True", "Loaded")
    assert "loadFaults" not in _status(installed, ns, "teamm")
    until(lambda: _events(installed, ns, "ModelLoaded"), 20, "the ModelLoaded Event")

    # a canary whose learner cannot import the team's class: aborted with the reason
    m2 = copy.deepcopy(m)
    m2["spec"]["model"]["params"] = {"optimizer": "adagrad"}
    _apply(installed, m2)
    new = parse(m2).revision
    until(lambda: _status(installed, ns, "teamm").get("canaryRevision") == new, 30, "canary")
    gone = ModelLoadError("ImportFailed", "ModuleNotFoundError: No module named 'fraud_team'")
    faults.report(rc, keys, faults.fault_of(gone, "learner", new, time.time()))
    until(lambda: (_status(installed, ns, "teamm").get("aborted") or {}).get("revision") == new,
          30, "aborted")  # fmt: skip
    st = _status(installed, ns, "teamm")
    line = f"learner of revision {new}: ModuleNotFoundError: No module named 'fraud_team'"
    assert st["aborted"]["reason"] == f"the model cannot be loaded (ImportFailed): {line}"
    assert st["phase"] == "Degraded" and st["stableRevision"] == rev and st["canaryWeight"] == 0
    loaded = _condition(installed, ns, "teamm", "ModelLoaded")
    assert (loaded["status"], loaded["reason"], loaded["message"]) == (
        "False",
        "ImportFailed",
        line,
    )
    assert rc.hget(keys.routing, "weight") == b"0"
    until(lambda: _events(installed, ns, "ImportFailed"), 20, "the ImportFailed Event")
    until(lambda: not get(installed.cluster, "deployments", "-n", ns, "-l",
                          f"tideline.dev/revision={new}")["items"], 30, "the canary's pods removed")  # fmt: skip


@pytest.mark.parametrize(("annotation", "expect"), [("promote", "stable"), ("abort", "aborted")])
def test_annotations_promote_or_abort_a_canary_at_once(
    installed: Installed, operator: Operator, annotation: str, expect: str
) -> None:
    cp = installed.cluster
    ns = _ns(installed, f"e2e-{annotation}")
    rollout = {**CANARY_ROLLOUT, "steps": [{"setWeight": 10}, {"pause": {}}]}
    _, new = _stable_then_canary(installed, ns, "rec", rollout)
    until(lambda: _status(installed, ns, "rec").get("phase") == "Paused", 30, "Paused")
    cp.kubectl("annotate", "om", "rec", "-n", ns, f"tideline.dev/{annotation}=true")
    if expect == "stable":
        until(lambda: _status(installed, ns, "rec").get("stableRevision") == new, 30, "promoted")
    else:
        until(lambda: (_status(installed, ns, "rec").get("aborted") or {}).get("revision") == new,
              30, "aborted")  # fmt: skip


def test_with_gateway_api_routing_the_canary_gets_its_own_servers_and_the_httproute_its_weights(
    installed: Installed, operator: Operator, rc: redis.Redis
) -> None:
    cp = installed.cluster
    ns = _ns(installed, "e2e-gateway")
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
             "metadata": {"name": "shop", "namespace": ns},
             "spec": {"parentRefs": [{"name": "gw"}],
                      "rules": [{"backendRefs": [{"name": "gw", "port": 8080}]}]}}  # fmt: skip
    _apply(installed, route)
    rollout = {**CANARY_ROLLOUT, "steps": [{"setWeight": 25}, {"pause": {}}],
               "trafficRouting": {"gatewayAPI": {"httpRoute": "shop"}}}  # fmt: skip
    old, new = _stable_then_canary(installed, ns, "gw", rollout)

    def refs() -> list[dict]:
        return get(cp, "httproute", "shop", "-n", ns)["spec"]["rules"][0]["backendRefs"]

    until(lambda: len(refs()) == 2, 30, "the canary's backendRef")
    assert refs() == [{"name": "gw", "port": 8080, "weight": 75},
                      {"name": "gw-canary", "port": 8080, "weight": 25}]  # fmt: skip
    get(cp, "deployment", f"gw-server-{new}", "-n", ns)
    assert get(cp, "service", "gw-canary", "-n", ns)["spec"]["selector"][
        "tideline.dev/revision"] == new  # fmt: skip
    assert (
        rc.hget(Keys(ns, "gw").routing, "canaryURL") == f"http://gw-canary.{ns}.svc:8080".encode()
    )
    cp.kubectl("annotate", "om", "gw", "-n", ns, "tideline.dev/promote=true")
    until(lambda: refs() == [{"name": "gw", "port": 8080, "weight": 100}], 30, "weights back")
    until(lambda: cp.kubectl("get", "service", "gw-canary", "-n", ns, check=False).returncode,
          30, "the canary Service removed")  # fmt: skip
    assert get(cp, "service", "gw", "-n", ns)["spec"]["selector"]["tideline.dev/revision"] == new
    assert not get(cp, "deployments", "-n", ns, "-l", f"tideline.dev/revision={old}")["items"]


def test_kubectl_scale_sets_the_server_replicas_through_the_scale_subresource(
    installed: Installed, operator: Operator
) -> None:
    cp = installed.cluster
    ns = _ns(installed, "e2e-scale-sub")
    m = _model("sc", ns)
    rev = parse(m).revision
    _apply(installed, m)
    until(lambda: _status(installed, ns, "sc").get("replicas") == 1, 60, "1 ready server")
    cp.kubectl("scale", "om", "sc", "-n", ns, "--replicas=3")
    until(lambda: get(cp, "deployment", f"sc-server-{rev}", "-n", ns)["spec"]["replicas"] == 3,
          30, "server Deployment scaled")  # fmt: skip
    until(lambda: _status(installed, ns, "sc").get("replicas") == 3, 60, "status.replicas")


# --------------------------------------------------------------------------- 5. rollback
def test_a_guardrail_breach_pins_served_to_last_good_within_5_seconds_with_an_event(
    installed: Installed, operator: Operator, rc: redis.Redis
) -> None:
    ns = _ns(installed, "e2e-rollback")
    m = _model("fraud", ns, guardrails={"maxAccuracyDrop": 0.05},
               rollout={"analysis": {"interval": "2s", "minSamples": 100}})  # fmt: skip
    rev = parse(m).revision
    store = ModelStore(rc, ns, "fraud")
    learner = make_learner(m["spec"]["model"])
    for v in range(1, 6):
        store.publish(rev, v, learner)  # served 5
    store.set_pointer(rev, "lastGood", 4)  # proven on labels earlier
    _apply(installed, m)
    until(lambda: _status(installed, ns, "fraud").get("servedVersion") == 5, 60, "served v5")
    keys = Keys(ns, "fraud")
    start = time.monotonic()
    # on the same 1000 labelled samples lastGood v4 is 12 points more accurate than v5
    rc.set(keys.health, health_summary(time.time(), stable={"accuracy": 0.80, "window": 1000},
                                       quality={"served": (rev, 5), "lastGood": (rev, 4, 0.12, 0.03, 1000)}))  # fmt: skip
    took = until(lambda: store.pointers(rev).served == 4, 5.0, "served -> lastGood")
    assert store.pointers(rev).pinned is True
    assert rc.hget(keys.control(rev), "resetTo") == b"4"
    until(lambda: (_status(installed, ns, "fraud").get("lastRollback") or {}).get("to") == 4, 10,
          "status.lastRollback")  # fmt: skip
    rb = _status(installed, ns, "fraud")["lastRollback"]
    assert rb["from"] == 5 and "accuracy" in rb["reason"]
    until(lambda: _events(installed, ns, "RolledBack"), 10, "RolledBack event")
    rollbacks = [line for line in operator.metrics().splitlines()
                 if line.startswith("tideline_operator_rollbacks_total ")]  # fmt: skip
    assert rollbacks and float(rollbacks[0].split()[1]) >= 1
    print(f"\n[e2e] breach in Redis -> served switched to lastGood in {took:.2f}s "
          f"({time.monotonic() - start:.2f}s to status)")  # fmt: skip


# --------------------------------------------------------------------------- 6. bad input
def test_bad_specs_are_refused_or_degraded_and_other_models_keep_reconciling(
    installed: Installed, operator: Operator
) -> None:
    cp = installed.cluster
    ns = _ns(installed, "e2e-bad")
    bad = _model("bad-schema", ns)
    bad["spec"]["learning"] = {"batchSize": 0}
    out = cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert out.returncode != 0 and "spec.learning.batchSize" in out.stderr
    twice = _model("bad-names", ns)  # names are a map's keys: the API server refuses a second
    twice["spec"]["model"]["features"].append({"name": "amount", "type": "numeric"})
    out = cp.kubectl("apply", "-f", "-", input=yaml.safe_dump(twice), check=False)
    assert out.returncode != 0 and 'features[3]: Duplicate value: {"name":"amount"}' in out.stderr
    only_operator = _model("bad-params", ns)  # a default of no single type: the parser's to check
    only_operator["spec"]["model"]["features"].append({"name": "extra", "default": "abc"})
    _apply(installed, only_operator)
    until(lambda: _status(installed, ns, "bad-params").get("phase") == "Degraded", 30, "Degraded")
    cond = next(c for c in _status(installed, ns, "bad-params")["conditions"]
                if c["type"] == "Degraded")  # fmt: skip
    assert cond["reason"] == "InvalidSpec" and "spec.model.features[3].default" in cond["message"]
    assert "must be a number (got 'abc')" in cond["message"]
    assert not _owned(installed, ns, "bad-params")
    _apply(installed, _model("good", ns))
    until(lambda: _status(installed, ns, "good").get("phase") == "Healthy", 90, "the good one")
    # the scale subresource names the stable servers' pods: an HPA on the model can work
    scale = json.loads(cp.kubectl("get", "om", "good", "-n", ns, "--subresource=scale",
                                  "-o", "json").stdout)  # fmt: skip
    revision = _status(installed, ns, "good")["stableRevision"]
    assert scale["spec"]["replicas"] == 1 and scale["status"]["selector"] == (
        f"tideline.dev/model=good,tideline.dev/component=server,tideline.dev/revision={revision}"
    )


def test_objects_it_does_not_own_are_left_alone_and_credentials_stay_out_of_sight(
    installed: Installed, operator: Operator
) -> None:
    cp = installed.cluster
    ns = _ns(installed, "e2e-owner")
    for name in ("theirs", "theirs-canary"):  # a team's own Services, with the model's names
        cp.kubectl("create", "service", "clusterip", name, "--tcp=80:8080", "-n", ns)
    ops = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}
    _apply(installed, _model("theirs", ns, serving={"replicas": 1, "labelsPort": 8082,
                                                    "networkPolicy": {"labelsFrom": [ops]}}))  # fmt: skip

    def degraded() -> bool:
        cond = next(
            c for c in _status(installed, ns, "theirs")["conditions"] if c["type"] == "Degraded"
        )
        return cond["status"] == "True" and cond["reason"] == "ResourceExists"

    until(degraded, 60, "Degraded with ResourceExists")
    cond = next(
        c for c in _status(installed, ns, "theirs")["conditions"] if c["type"] == "Degraded"
    )
    assert "Service 'theirs'" in cond["message"]
    svc = get(cp, "service", "theirs", "-n", ns)
    assert svc["spec"]["selector"] == {"app": "theirs"} and not svc["metadata"].get(
        "ownerReferences"
    )
    until(lambda: _events(installed, ns, "ResourceExists"), 20, "ResourceExists event")
    # the name freed: the model deploys; the other Service is never deleted nor taken
    cp.kubectl("delete", "service", "theirs", "-n", ns)
    try:
        until(lambda: _status(installed, ns, "theirs").get("phase") == "Healthy", 90, "Healthy")
    except AssertionError:
        raise AssertionError(f"{_status(installed, ns, 'theirs')}\n{operator.tail()}") from None
    canary = get(cp, "service", "theirs-canary", "-n", ns)
    assert not canary["metadata"].get("ownerReferences")
    # the Redis URL is in the model's own Secret, read through secretKeyRef: not in any
    # Deployment (kubectl get -o yaml shows those) nor in any container's args
    deployments = get(cp, "deployments", "-n", ns, "-l", "tideline.dev/model=theirs")["items"]
    assert len(deployments) == 3
    text = json.dumps(deployments)
    assert installed.redis.url not in text and "redis://" not in text
    for d in deployments:
        [c] = d["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in c["env"]}
        assert env["TIDELINE_REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "theirs-redis"
        assert not any("redis" in a for a in c["args"])
    secret = get(cp, "secret", "theirs-redis", "-n", ns)
    assert secret["metadata"]["ownerReferences"][0]["name"] == "theirs"
    # predictions from anyone on 8080 (and gRPC's 8081), labels from the ops namespace only
    # on 8082
    policy = get(cp, "networkpolicy", "theirs-server", "-n", ns)
    assert policy["metadata"]["ownerReferences"][0]["name"] == "theirs"
    assert policy["spec"]["ingress"] == [
        {"ports": [{"port": 8080, "protocol": "TCP"}, {"port": 8081, "protocol": "TCP"}]},
        {"ports": [{"port": 8082, "protocol": "TCP"}], "from": [ops]}]  # fmt: skip


def test_a_platform_policy_refuses_foreign_images_and_secrets_at_admission(
    installed: Installed, operator: Operator
) -> None:
    from tests.e2e.conftest import NAMESPACE, RELEASE, ROOT

    chart = str(ROOT / "charts" / "tideline")
    ns = _ns(installed, "e2e-policy")

    def apply(doc: dict) -> subprocess.CompletedProcess[str]:
        # a server-side dry run: admission runs on every try, nothing is stored
        return installed.cluster.kubectl("apply", "--dry-run=server", "-f", "-",
                                         input=yaml.safe_dump(doc), check=False)  # fmt: skip

    bad = _model("foreign", ns)
    bad["spec"]["image"] = "docker.io/someone/tideline:latest"
    secret = _model("secretive", ns, redis={"secretRef": {"name": "their-redis"}})
    secret["spec"]["image"] = "registry.corp/ml/tideline:1"
    good = _model("allowed", ns)
    good["spec"]["image"] = "registry.corp/ml/tideline:1"
    installed.helm("upgrade", RELEASE, chart, "-n", NAMESPACE, "--reuse-values",
                   "--set", "policy.allowedImages={registry.corp/ml/*}",
                   "--set", "policy.allowRedisSecretRef=false")  # fmt: skip
    try:
        until(lambda: "spec.image must match one of: registry.corp/ml/*" in apply(bad).stderr,
              90, "the ValidatingAdmissionPolicy to refuse the image")  # fmt: skip
        out = apply(secret)
        assert out.returncode != 0 and "spec.redis.secretRef is not allowed" in out.stderr
        assert apply(good).returncode == 0
    finally:
        # back to the values the suite installed with
        installed.helm("upgrade", RELEASE, chart, "-n", NAMESPACE, "--reset-values",
                       "--set", f"redis.url={installed.redis.url}")  # fmt: skip
    names = [
        p["metadata"]["name"]
        for p in get(installed.cluster, "validatingadmissionpolicies")["items"]
    ]
    assert not [n for n in names if n.startswith(RELEASE)], names
    until(lambda: apply(bad).returncode == 0, 90, "images free again")


# --------------------------------------------------------------------------- 7. resilience
def test_a_restarted_operator_resumes_the_canary_and_deleting_the_model_collects_children(
    installed: Installed, operator: Operator, rc: redis.Redis
) -> None:
    cp = installed.cluster
    ns = _ns(installed, "e2e-resilience")
    rollout = {**CANARY_ROLLOUT, "steps": [{"setWeight": 30}, {"pause": "6s"}, {"setWeight": 70},
                                           {"pause": {}}]}  # fmt: skip
    _, new = _stable_then_canary(installed, ns, "res", rollout)
    until(lambda: _status(installed, ns, "res").get("canaryWeight") == 30, 30, "weight 30")
    operator.stop()
    time.sleep(7)  # the pause runs out while nobody watches
    operator.start()
    until(lambda: _status(installed, ns, "res").get("phase") == "Paused", 30, "resumed to step 4")
    st = _status(installed, ns, "res")
    assert st["canaryRevision"] == new and st["canaryWeight"] == 70
    assert rc.hget(Keys(ns, "res").routing, "weight") == b"70"

    cp.kubectl("delete", "om", "res", "-n", ns, "--wait=true", "--timeout=60s")
    until(lambda: not _owned(installed, ns, "res"), 60, "children garbage-collected")


def test_the_monitor_labels_an_operator_starts_with_go_on_the_monitors_it_made_before(
    installed: Installed, operator: Operator
) -> None:
    """A Prometheus of kube-prometheus-stack picks monitors by a label (release): the
    operator's, restarted with other TIDELINE_MONITOR_LABELS (a chart upgrade), relabels the
    ServiceMonitor and PodMonitor every model has, and removes the labels it no longer sets."""
    ns = _ns(installed, "e2e-monitors")
    _apply(installed, _model("mon", ns))
    kinds = ("servicemonitor", "podmonitor")

    def labels() -> list[dict[str, str]]:
        return [get(installed.cluster, kind, "mon", "-n", ns)["metadata"].get("labels") or {}
                for kind in kinds]  # fmt: skip

    until(lambda: all(labels()), 30, "a ServiceMonitor and a PodMonitor")
    assert all("release" not in each for each in labels())
    try:
        operator.stop()
        operator.env["TIDELINE_MONITOR_LABELS"] = "release=kps,team=ml"
        operator.start()
        until(lambda: all(each.get("release") == "kps" and each.get("team") == "ml"
                          for each in labels()), 30, "the monitors relabelled")  # fmt: skip
    finally:
        operator.stop()
        operator.env.pop("TIDELINE_MONITOR_LABELS", None)
        operator.start()
    until(lambda: all("release" not in each and "team" not in each for each in labels()),
          30, "the labels removed")  # fmt: skip
    assert all(each["tideline.dev/model"] == "mon" for each in labels())
    installed.cluster.kubectl("delete", "om", "mon", "-n", ns, "--wait=true", "--timeout=60s")


# --------------------------------------------------------------------------- 8. scale
@pytest.mark.timeout(1500)
def test_two_hundred_models_applied_at_once_reach_healthy(
    installed: Installed, operator: Operator
) -> None:
    cp = installed.cluster
    ns = _ns(installed, "e2e-scale")
    n = 200
    docs = [_model(f"m{i:03d}", ns) for i in range(n)]
    start = time.monotonic()
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    def healthy() -> int:
        items = get(cp, "om", "-n", ns)["items"]
        return sum((i.get("status") or {}).get("phase") == "Healthy" for i in items)

    last = [0]

    def all_healthy() -> bool:
        last[0] = healthy()
        return last[0] == n

    try:
        until(all_healthy, 900, f"{n} models Healthy")
    finally:
        took = time.monotonic() - start
        print(f"\n[e2e] {n} OnlineModels: {last[0]} Healthy after {took:.0f}s; "
              f"operator RSS {operator.rss_mib():.0f} MiB")  # fmt: skip
    cp.kubectl("delete", "namespace", ns, "--wait=false")
