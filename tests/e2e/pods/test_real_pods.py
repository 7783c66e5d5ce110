"""tideline on real pods: the chart installed with ``helm install``, examples/fraud.yaml
applied, every pod started by a kubelet from the runtime image under the chart's and the
builders' securityContext, predictions through the model's Service, a kill -9 the kubelet
repairs, and nothing left after the model and the release are deleted.

The tests run in order and build on each other (one model, one release), as a person
trying tideline would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.cluster.node import RealCluster
from tests.e2e.pods.kit import (
    COMPONENTS,
    MODEL,
    MODEL_NS,
    NAMESPACE,
    RELEASE,
    ROOT,
    SELECTOR,
    Release,
    all_ready,
    columns,
    container_pid,
    explain,
    get,
    model,
    pods,
    service_url,
    until,
)
from tests.helpers import FRAUD_FEATURES
from tideline.contracts import Keys
from tideline.demo.simulate import SyntheticStream

pytestmark = pytest.mark.e2e


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def root_mount_options(pid: int) -> list[str]:
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            return fields[5].split(",")
    raise AssertionError(f"no root mount for pid {pid}")


@pytest.fixture(scope="module")
def fraud(release: Release) -> Release:
    real = release.real
    started = time.monotonic()
    real.cp.kubectl("apply", "-n", MODEL_NS, "-f", str(ROOT / "examples" / "fraud.yaml"))
    try:
        for component, n in COMPONENTS.items():
            until(lambda c=component, n=n: all_ready(real, MODEL_NS, f"{SELECTOR},app.kubernetes.io/component={c}", n),
                  180, f"the {component} pods Ready")  # fmt: skip
    except AssertionError:
        print(explain(real, MODEL_NS))
        raise
    print(
        f"\n[pods] apply fraud.yaml -> learner, 2 servers, monitor Ready: {time.monotonic() - started:.1f}s"
    )
    return release


def test_helm_install_runs_every_pod_non_root_read_only_without_capabilities(
    fraud: Release,
) -> None:
    real = fraud.real
    checked = []
    for namespace, selector in (
        (NAMESPACE, f"app.kubernetes.io/instance={RELEASE}"),  # the operator and Redis
        (MODEL_NS, SELECTOR),
    ):
        for pod in pods(real, namespace, selector):
            for spec in pod["spec"]["containers"]:
                pid = container_pid(real, pod, spec["name"])
                status = proc_status(pid)
                uid = status["Uid"].split()
                assert uid[0] != "0" and len(set(uid)) == 1, (
                    pod["metadata"]["name"],
                    status["Uid"],
                )
                assert int(status["CapEff"], 16) == 0, (pod["metadata"]["name"], status["CapEff"])
                assert status["NoNewPrivs"] == "1", pod["metadata"]["name"]
                assert "ro" in root_mount_options(pid), pod["metadata"]["name"]
                checked.append((pod["metadata"]["name"], uid[0]))
    names = " ".join(n for n, _ in checked)
    assert "operator" in names or RELEASE in names
    assert all(f"{MODEL}-{c}" in names for c in COMPONENTS), names
    print(f"\n[pods] uids: {sorted(set(checked))}")
    policies = {p["metadata"]["name"] for p in get(real, "networkpolicy", "-A")["items"]}
    # the chart's (the operator's metrics, the bundled Redis); fraud.yaml asks for none
    assert {RELEASE, f"{RELEASE}-redis"} <= policies, policies


def test_predictions_and_labels_through_the_models_service(
    fraud: Release, traffic: Traffic
) -> None:
    real = fraud.real
    url = service_url(real)
    stream = traffic.sim.stream
    with httpx.Client(base_url=url, timeout=10) as http:
        rows, _ = stream.take(4)
        v1 = http.post(f"/v1/models/{MODEL}:predict", json={"instances": rows})
        assert v1.status_code == 200, v1.text
        assert len(v1.json()["predictions"]) == 4
        # labelled rows for the learner through the Service, until a version is published
        spec = model(real)["spec"]
        publish_every = spec["learning"]["publishEvery"]
        sent = 0
        while sent < publish_every + 500:
            rows, y = stream.take(500)
            r = http.post(
                f"/v1/models/{MODEL}:learn", json={"instances": rows, "labels": y.tolist()}
            )
            assert r.status_code == 202, r.text
            sent += len(rows)

        def served() -> int:
            answer = http.post(f"/v1/models/{MODEL}:predict", json={"instances": rows[:1]}).json()
            return int(answer["model_version"] or 0)

        took = until(lambda: served() >= 1, 120, "a published version served")
        print(
            f"\n[pods] {sent} labelled rows -> v{served()} served through the Service in {took:.1f}s"
        )
        # V2 (Open Inference Protocol) through the same Service
        inputs = [
            {
                "name": k,
                "shape": [1],
                "datatype": "BYTES" if isinstance(v, str) else "FP64",
                "data": [v],
            }
            for k, v in rows[0].items()
        ]
        v2 = http.post(f"/v2/models/{MODEL}/infer", json={"inputs": inputs})
        assert v2.status_code == 200, v2.text
        assert v2.json()["model_version"] not in (None, "0")
        # labels of logged predictions through /feedback
        rows, y = stream.take(200)
        answer = http.post(f"/v1/models/{MODEL}:predict", json={"instances": rows}).json()
        fb = http.post(f"/v1/models/{MODEL}/feedback", json={"feedback": [
            {"id": i, "label": int(label)} for i, label in zip(answer["ids"], y, strict=True)]})  # fmt: skip
        assert fb.status_code == 202 and fb.json()["accepted"] == 200, fb.text
    status = model(real)["status"]
    until(
        lambda: int(model(real)["status"].get("servedVersion") or 0) >= 1,
        60,
        "status.servedVersion",
    )
    table = real.cp.kubectl("get", "om", MODEL, "-n", MODEL_NS).stdout
    print(f"\n{table}")
    shown = columns(table)[0]
    assert shown["STABLE"] == status["stableRevision"] and int(shown["SERVED"]) >= 1, table


def test_kill_9_of_the_learner_is_restarted_by_the_kubelet_and_counts_stay_exact(
    fraud: Release, traffic: Traffic
) -> None:
    real = fraud.real
    revision = model(real)["status"]["stableRevision"]
    keys = Keys(MODEL_NS, MODEL)
    r = fraud.redis()
    selector = f"{SELECTOR},app.kubernetes.io/component=learner"
    [pod] = pods(real, MODEL_NS, selector)
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]

    def learned() -> dict[str, float]:
        raw = r.hgetall(keys.learner(revision))
        return {k.decode(): float(v) for k, v in raw.items() if k != b"quality"}

    def settled() -> dict[str, float]:  # the learner caught up: no change in 3 s
        first = learned()
        time.sleep(3)
        return first if learned() == first and first["samples"] > 0 else {}

    before = settled()
    until(lambda: before or before.update(settled()), 60, "the learner caught up")
    stream = traffic.sim.stream
    url = service_url(real)
    total, label_sum = 0, 0
    with httpx.Client(base_url=url, timeout=10) as http:
        for chunk in range(20):
            rows, y = stream.take(250)
            answer = http.post(
                f"/v1/models/{MODEL}:learn", json={"instances": rows, "labels": y.tolist()}
            )
            assert answer.status_code == 202, answer.text
            total += len(rows)
            label_sum += int(y.sum())
            if chunk == 6:
                pid = container_pid(real, pod, "learner")
                os.kill(pid, signal.SIGKILL)
    until(lambda: pods(real, MODEL_NS, selector)[0]["status"]["containerStatuses"][0]["restartCount"] > restarts,
          60, "the kubelet to restart the learner")  # fmt: skip
    took = until(lambda: all_ready(real, MODEL_NS, selector, 1), 120, "the restarted learner Ready")
    until(lambda: learned()["samples"] >= before["samples"] + total, 120, "every sample learned")
    time.sleep(2)  # had anything been learned twice, it would show by now
    after = learned()
    assert after["samples"] == before["samples"] + total, (before, after, total)
    assert after["label_sum"] == before["label_sum"] + label_sum, (before, after, label_sum)
    print(
        f"\n[pods] learner killed -9: restarted and Ready in {took:.1f}s, {total} samples counted once"
    )


# a changed revision (a slower forgetting) rolled out in steps short enough for a test; the
# p95 bound is the 2-core test machine's, not a fraud team's
CANARY_PATCH = {
    "spec": {
        "model": {"params": {"optimizer": "newton", "forgetting": 0.998}},
        "rollout": {
            "steps": [{"setWeight": 50}, {"pause": "10s"}, {"analysis": {}}],
            "analysis": {"interval": "2s", "minSamples": 200, "maxAccuracyDrop": 0.05,
                         "maxErrorRate": 0.01, "maxP95Latency": "200ms", "failureLimit": 3},
        },
    }
}  # fmt: skip


class Traffic:
    """The demo's simulator against the model's Service: predictions, their labels late
    through /feedback, a poisoning on demand (flipped labels through :learn)."""

    def __init__(self, real: RealCluster, rate: float = 400.0) -> None:
        from tideline.demo.local import Simulator
        from tideline.spec import parse

        doc = model(real)
        doc["metadata"] = {"name": MODEL, "namespace": MODEL_NS}
        svc = get(real, "service", MODEL, "-n", MODEL_NS)
        self.port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "http")
        self.sim = Simulator(parse(doc), rate, None, seed=23, host=svc["spec"]["clusterIP"])
        self.start = time.monotonic()
        self.poison_for: float | None = None

    def run(
        self, seconds: float, until: Callable[[], bool] | None = None, every: float = 1.0
    ) -> bool:
        """Traffic for ``seconds``, or until ``until()`` (checked each ``every`` s) holds; at
        the rate from where the last run stopped (no burst for the time in between)."""
        self.start = time.monotonic() - self.sim.sent / self.sim.rate
        if self.poison_for is not None:
            self.sim.poison, self.poison_for = (
                (self.elapsed(), self.elapsed() + self.poison_for),
                None,
            )
        deadline = time.monotonic() + seconds
        checked = 0.0
        while time.monotonic() < deadline:
            now = time.monotonic()
            self.sim.step(now - self.start, time.time(), [self.port])
            if until is not None and now - checked >= every:
                checked = now
                try:
                    if until():
                        return True
                except (subprocess.CalledProcessError, KeyError, TypeError, ValueError):
                    pass
            time.sleep(0.02)
        return False

    def poison(self, seconds: float) -> None:
        """Flipped labels through :learn for the first ``seconds`` of the next run."""
        self.poison_for = seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.start


@pytest.fixture(scope="module")
def traffic(fraud: Release) -> Traffic:
    """One concept for the whole module: every labelled row comes from its stream."""
    return Traffic(fraud.real)


def test_a_canary_on_real_pods_splits_traffic_is_promoted_and_a_poisoning_is_rolled_back(
    fraud: Release, traffic: Traffic
) -> None:
    real = fraud.real
    old = model(real)["status"]["stableRevision"]
    # a stable revision trained to its plateau, on the concept the traffic follows, to
    # warm-start the canary from: the analysis pairs the canary's v0 (a copy of stable's
    # served version) with stable's versions to come, and a stable still learning the
    # concept would rightly win and abort the canary
    with httpx.Client(base_url=service_url(real), timeout=10) as http:
        for _ in range(40):
            rows, y = traffic.sim.stream.take(500)
            answer = http.post(
                f"/v1/models/{MODEL}:learn", json={"instances": rows, "labels": y.tolist()}
            )
            assert answer.status_code == 202, answer.text
    r, keys = fraud.redis(), Keys(MODEL_NS, MODEL)

    def caught_up() -> bool:  # every row learned, and the newest version served
        first = r.hget(keys.learner(old), "samples")
        time.sleep(2)
        pointers = r.hgetall(keys.pointers(old))
        return (
            first == r.hget(keys.learner(old), "samples")
            and pointers[b"served"] == pointers[b"latest"]
        )

    until(caught_up, 120, "the learner caught up, its newest version served")
    traffic.run(5)  # labelled traffic on the stable revision first
    real.cp.kubectl(
        "patch", "om", MODEL, "-n", MODEL_NS, "--type=merge", "-p", json.dumps(CANARY_PATCH)
    )
    status = lambda: model(real)["status"]  # noqa: E731
    assert traffic.run(90, lambda: status().get("canaryRevision") not in (None, "", old)), status()
    new = status()["canaryRevision"]
    started = time.monotonic()
    # the canary's pods started by the kubelet (its learner, warm-started from the stable's)
    assert traffic.run(
        120, lambda: all_ready(real, MODEL_NS, f"{SELECTOR},tideline.dev/revision={new}")
    ), explain(real, MODEL_NS)
    ready_in = time.monotonic() - started
    # the Service's servers split the answers by weight: half to each track at setWeight 50
    assert traffic.run(60, lambda: status().get("canaryWeight") == 50), status()
    # (from the canary's first answer: each server answers the canary's share from stable
    # until it has loaded the canary's first version, which a busy node can take seconds)
    answered = traffic.sim.tracks.get("canary", 0)
    assert traffic.run(60, lambda: traffic.sim.tracks.get("canary", 0) > answered, 0.1), status()
    before = dict(traffic.sim.tracks)
    traffic.run(8)
    split = {k: v - before.get(k, 0) for k, v in traffic.sim.tracks.items()}
    share = split.get("canary", 0) / max(1, sum(split.values()))
    print(
        f"\n[pods] canary {new}: pods Ready in {ready_in:.1f}s; at weight 50 it answered {share:.0%} of {sum(split.values())} rows"
    )
    assert 0.35 <= share <= 0.65, split
    promoted = traffic.run(180, lambda: status().get("stableRevision") == new)
    if not promoted:
        print(json.dumps(status(), indent=1))
    assert promoted, (json.dumps({k: status().get(k) for k in ("aborted", "analysis", "servedVersion", "latestVersion")}),
                      traffic.sim.tracks, traffic.sim.errors, traffic.sim.accuracy_timeline()[-40:])  # fmt: skip
    print(
        f"[pods] promoted {time.monotonic() - started:.0f}s after the canary began; errors {traffic.sim.errors}"
    )
    until(
        lambda: not pods(real, MODEL_NS, f"{SELECTOR},tideline.dev/revision={old}"),
        120,
        "the old revision's pods gone",
    )
    # a label producer gone wrong: flipped labels through :learn; the guardrail pins the
    # servers to lastGood, and they answer from it
    keys = Keys(MODEL_NS, MODEL)
    r = fraud.redis()
    assert not status().get("lastRollback"), status()["lastRollback"]  # none before it
    served_before = int(r.hget(keys.pointers(new), "served") or 0)
    wall = time.time()
    traffic.poison(20)
    rolled = traffic.run(150, lambda: (status().get("lastRollback") or {}).get("at", 0) >= wall)
    if not rolled:
        st = status()
        conditions = [
            (c["type"], c["status"], c.get("reason"), c.get("message"))
            for c in st.get("conditions", [])
        ]
        health = r.get(keys.health)
        raise AssertionError(
            f"no rollback: poisoned {traffic.sim.poisoned} rows, errors {traffic.sim.errors}, "
            f"accuracy by second {traffic.sim.accuracy_timeline()[-60:]}\n"
            f"pointers {r.hgetall(keys.pointers(new))}\nconditions {conditions}\n"
            f"status { ({k: v for k, v in st.items() if k != 'conditions'}) }\nhealth {health!r}"[
                :8000
            ]
        )
    pointers = {k.decode(): v.decode() for k, v in r.hgetall(keys.pointers(new)).items()}
    rollback = status()["lastRollback"]
    assert rollback["from"] > served_before, (rollback, served_before)  # a version learned since
    print(f"[pods] poisoning rolled back {rollback['at'] - wall:.1f}s after it began: {rollback}")
    assert pointers.get("pinned") == "1" and pointers["served"] == pointers["lastGood"], pointers
    with httpx.Client(base_url=service_url(real), timeout=10) as http:
        rows, _ = SyntheticStream(FRAUD_FEATURES, "binary", seed=5).take(20)
        answers = [http.post(f"/v1/models/{MODEL}:predict", json={"instances": rows[i : i + 1]}).json()
                   for i in range(20)]  # fmt: skip
    versions = {int(a["model_version"]) for a in answers}
    assert versions == {int(pointers["lastGood"])}, (versions, pointers)


def test_deleting_the_model_and_the_release_leaves_nothing_of_tideline(fraud: Release) -> None:
    real = fraud.real
    kinds = "deployments,replicasets,pods,services,configmaps,secrets,networkpolicies,poddisruptionbudgets"
    real.cp.kubectl("delete", "onlinemodel", MODEL, "-n", MODEL_NS, "--wait=true", "--timeout=120s")

    def children() -> list[str]:
        out = real.cp.kubectl("get", kinds, "-n", MODEL_NS, "-l", SELECTOR, "-o", "name").stdout
        return out.split()

    took = until(lambda: children() == [], 120, f"every child of {MODEL} gone")
    print(f"\n[pods] delete om {MODEL}: every child gone in {took:.1f}s")
    fraud.helm("uninstall", RELEASE, "--namespace", NAMESPACE, "--wait", "--timeout", "120s")
    leftover_kinds = f"{kinds},statefulsets,serviceaccounts,roles,rolebindings"
    cluster_kinds = "clusterroles,clusterrolebindings,validatingadmissionpolicies,validatingadmissionpolicybindings"

    def leftovers() -> list[str]:
        label = f"app.kubernetes.io/instance={RELEASE}"
        found = real.cp.kubectl(
            "get", leftover_kinds, "-A", "-l", label, "-o", "name"
        ).stdout.split()
        found += real.cp.kubectl("get", cluster_kinds, "-l", label, "-o", "name").stdout.split()
        found += [
            f"pod/{p['metadata']['name']}"
            for p in pods(real, "", "app.kubernetes.io/part-of=tideline")
        ]
        return found

    until(lambda: leftovers() == [], 120, "nothing of the release left")
    # kept on purpose: the CRD (helm never deletes a chart's CRDs: every model would go
    # with it) and the Redis claim (persistentVolumeClaimRetentionPolicy Retain)
    kept = real.cp.kubectl("get", "pvc", "-n", NAMESPACE, "-o", "name").stdout.split()
    assert kept == [f"persistentvolumeclaim/data-{RELEASE}-redis-0"], kept
    # and on the node, no container of theirs still running (they were the only pods)
    until(
        lambda: real.node.ctr("tasks", "ls", "-q").stdout.split() == [],
        60,
        "every container stopped",
    )
