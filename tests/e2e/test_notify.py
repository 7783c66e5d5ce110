"""spec.notify on a real kube-apiserver: what kubectl takes and refuses, as the parser does,
and the operator (the chart's RBAC, its own process) posting a rollback to a receiver."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
import yaml

from tests.e2e.cluster.controlplane import ControlPlane
from tests.e2e.conftest import Installed, Operator, until
from tests.e2e.test_operator import _apply, _events, _model, _ns, _status
from tests.helpers import health_summary
from tests.integration.test_notify import TOKEN, receiving
from tideline.algorithms import make_learner
from tideline.contracts import Keys
from tideline.spec import NOTIFY_DEFAULT, SpecError, parse
from tideline.store import ModelStore

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[2]
HEAD = ("apiVersion: tideline.dev/v1alpha1\nkind: OnlineModel\nmetadata: {name: hooked}\n"
        "spec:\n  model: {features: [{name: a}]}\n")  # fmt: skip


@pytest.fixture(scope="module")
def crd(cluster: ControlPlane) -> ControlPlane:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                    str(ROOT / "crds" / "onlinemodel.yaml"))  # fmt: skip
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/onlinemodels.tideline.dev", "--timeout=60s"
    )
    return cluster


def test_a_receiver_is_taken_with_its_defaults_filled(crd: ControlPlane) -> None:
    text = HEAD + "  notify:\n    - url: {secretRef: {name: ml-alerts}}\n      format: slack\n"
    parse(yaml.safe_load(text))
    crd.kubectl("apply", "-f", "-", input=text)
    obj = json.loads(crd.kubectl("get", "om", "hooked", "-o", "json").stdout)
    (hook,) = obj["spec"]["notify"]
    assert hook == {"url": {"secretRef": {"name": "ml-alerts", "key": "url"}}, "format": "slack"}
    assert parse(obj).spec.notify[0].events == NOTIFY_DEFAULT  # (the parser's default)
    crd.kubectl("delete", "om", "hooked", "--wait=false")


REFUSED = [
    ("a URL written inline", "    - url: https://hooks.slack.com/services/T0/B0/s3cret\n",
     "spec.notify[0].url"),
    ("an Event the operator never posts",
     "    - url: {secretRef: {name: h}}\n      events: [RolledBak]\n", "spec.notify[0].events[0]"),
    ("an unquoted on:, which YAML reads as true", "    - url: {secretRef: {name: h}}\n"
     "      on: [Promoted]\n", 'unknown field "spec.notify[0].true"'),
]  # fmt: skip


@pytest.mark.parametrize(("text", "field"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_kubectl_and_the_parser_refuse_a_bad_receiver(
    crd: ControlPlane, text: str, field: str
) -> None:
    # (a name of its own: the model the test before deleted may be going as this one is
    # applied, and kubectl's patch of it then says NotFound, not what is refused)
    head = HEAD.replace("name: hooked", "name: refused")
    out = crd.kubectl("apply", "-f", "-", input=head + "  notify:\n" + text, check=False)
    assert out.returncode != 0 and field in out.stderr, out.stderr
    assert "s3cret" not in out.stderr, "a URL given inline is not echoed"
    with pytest.raises(SpecError):
        parse(yaml.safe_load(HEAD + "  notify:\n" + text))


def test_a_rollback_is_posted_by_the_operator_with_its_own_rbac_and_a_missing_secret_said(
    installed: Installed, operator: Operator, rc: redis.Redis
) -> None:
    ns = _ns(installed, "e2e-notify")
    with receiving(200) as hook:
        installed.cluster.kubectl("create", "secret", "generic", "hooks", "-n", ns,
                                  f"--from-literal=url={hook.url}")  # fmt: skip
        m = _model("fraud", ns, guardrails={"maxAccuracyDrop": 0.05},
                   rollout={"analysis": {"interval": "2s", "minSamples": 100}},
                   notify=[{"url": {"secretRef": {"name": "hooks"}}},
                           {"url": {"secretRef": {"name": "absent"}}, "format": "slack"}])  # fmt: skip
        rev = parse(m).revision
        store = ModelStore(rc, ns, "fraud")
        learner = make_learner(m["spec"]["model"])
        for v in range(1, 6):
            store.publish(rev, v, learner)
        store.set_pointer(rev, "lastGood", 4)
        _apply(installed, m)
        until(lambda: _status(installed, ns, "fraud").get("servedVersion") == 5, 60, "served v5")
        rc.set(Keys(ns, "fraud").health,
               health_summary(time.time(), stable={"accuracy": 0.80, "window": 1000},
                              quality={"served": (rev, 5), "lastGood": (rev, 4, 0.12, 0.03, 1000)}))  # fmt: skip
        took = until(lambda: hook.got, 10, "the RolledBack notice")
        (sent,) = hook.bodies()
        assert (sent["reason"], sent["model"], sent["namespace"], sent["servedVersion"]) == (
            "RolledBack", "fraud", ns, 4)  # fmt: skip
        said = [e["message"] for e in _events(installed, ns, "NotificationFailed")]
        assert "spec.notify[1]: Secret 'absent' not found: its notifications cannot be sent" in said
        assert "RolledBack not sent: Secret 'absent' not found" in said
        delivered = [line for line in operator.metrics().splitlines()
                     if line.startswith('tideline_operator_notifications_total{outcome="delivered"}')]  # fmt: skip
        assert delivered and float(delivered[0].split()[1]) >= 1
    assert TOKEN not in operator.tail(10**7)
    print(f"\n[e2e] breach in Redis -> RolledBack notice at the receiver in {took:.2f}s")
