"""The CRD on a real kube-apiserver: established, examples accepted, bad specs refused naming the field."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.cluster.controlplane import ControlPlane
from tideline.spec import parse

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.fixture(scope="module")
def crd(cluster: ControlPlane) -> ControlPlane:
    # as docs/operator.md's upgrade does: the chart's tests installed the CRD with helm (which then
    # owns .spec.versions), and a server-side apply over it needs --force-conflicts
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                    str(ROOT / "crds" / "onlinemodel.yaml"))  # fmt: skip
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/onlinemodels.tideline.dev", "--timeout=60s"
    )
    return cluster


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_is_accepted_with_its_defaults_filled(crd: ControlPlane, path: Path) -> None:
    crd.kubectl("apply", "-f", str(path))
    name = yaml.safe_load(path.read_text())["metadata"]["name"]
    obj = json.loads(crd.kubectl("get", "om", name, "-o", "json").stdout)
    assert obj["spec"]["learning"]["batchSize"] >= 1  # defaulted by the API server where unset
    assert obj["spec"]["guardrails"]["onConceptDrift"] in ("adapt", "rollback", "pause", "alert")
    crd.kubectl("delete", "om", name, "--wait=false")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"learning": {"batchSize": 0}}, "spec.learning.batchSize"),
        ({"model": {"algorithm": "xgboost", "features": [{"name": "a"}]}}, "spec.model.algorithm"),
        ({"drift": {"concept": {"method": "cusum"}}}, "spec.drift.concept.method"),
        ({"learning": {"labelWindow": "three weeks"}}, "spec.learning.labelWindow"),
        ({"model": {"features": [{"name": "a", "buckets": 8}]}}, "spec.model.features[0].buckets"),
        (
            {"model": {"features": [{"name": "a"}, {"name": "a"}]}},
            'duplicate entries for key [name="a"]',
        ),
        (
            {"model": {"features": [{"name": "a", "typ": "categorical"}]}},
            ".typ: field not declared",
        ),
        ({"rollout": {"steps": [{"setweight": 10}]}}, "steps[0].setweight: field not declared"),
        (
            {"pods": {"server": {"resources": {"requests": {"cpu": "lots"}}}}},
            "spec.pods.server.resources.requests.cpu",
        ),
        ({"pods": {"tolerations": [{"effect": "Sometimes"}]}}, "spec.pods.tolerations[0].effect"),
    ],
    ids=[
        "a zero batch size",
        "an unknown algorithm",
        "an unknown concept detector",
        "a duration without a unit",
        "buckets on a numeric feature",
        "a feature named twice",
        "a typo in a feature",
        "a typo in a step",
        "a quantity that is none",
        "an unknown taint effect",
    ],
)
def test_kubectl_refuses_a_bad_spec_naming_the_field(
    crd: ControlPlane, change: dict, field: str
) -> None:
    doc = {"apiVersion": "tideline.dev/v1alpha1", "kind": "OnlineModel", "metadata": {"name": "bad"},
           "spec": {"model": {"features": [{"name": "a"}]}, **change}}  # fmt: skip
    out = crd.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(doc), check=False)
    assert out.returncode != 0
    assert field in out.stderr


def test_printer_columns_and_short_name(crd: ControlPlane) -> None:
    crd.kubectl("apply", "-f", str(EXAMPLES[0]))
    time.sleep(0.2)
    header = crd.kubectl("get", "om").stdout.splitlines()[0].split()
    assert header[:4] == ["NAME", "PHASE", "STABLE", "CANARY-WEIGHT"] and "AGE" in header
    wide = crd.kubectl("get", "om", "-o", "wide").stdout.splitlines()[0].split()
    assert "LASTGOOD" in wide


def test_what_the_parser_takes_the_api_server_takes(crd: ControlPlane) -> None:
    """A fractional default, durations with a space or in whole seconds, every kind of pause."""
    spec = {"model": {"features": [{"name": "amount", "default": 12.5},
                                   {"name": "country", "type": "categorical", "default": "fr"}]},
            "learning": {"maxBatchDelay": "500 ms", "labelWindow": 600},
            "rollout": {"steps": [{"setWeight": 10}, {"pause": "60s"}, {"pause": 30}, {"pause": {}},
                                  {"analysis": {}}]},
            "pods": {"nodeSelector": {"pool": "ml"}, "imagePullSecrets": [{"name": "regcred"}],
                     "server": {"resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                                              "limits": {"cpu": 2}},
                                "tolerations": [{"key": "gpu", "operator": "Exists"}]},
                     "learner": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}}}}  # fmt: skip
    doc = {"apiVersion": "tideline.dev/v1alpha1", "kind": "OnlineModel",
           "metadata": {"name": "takes"}, "spec": spec}  # fmt: skip
    parse(doc)  # the parser takes it
    crd.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(doc))
    obj = json.loads(crd.kubectl("get", "om", "takes", "-o", "json").stdout)
    assert obj["spec"]["model"]["features"][0]["default"] == 12.5
    crd.kubectl("delete", "om", "takes", "--wait=false")


def test_the_status_is_typed_and_keeps_what_it_does_not_know(crd: ControlPlane) -> None:
    doc = {"apiVersion": "tideline.dev/v1alpha1", "kind": "OnlineModel",
           "metadata": {"name": "typed"}, "spec": {"model": {"features": [{"name": "a"}]}}}  # fmt: skip
    crd.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    for bad, field in (({"phase": "Helthy"}, "status.phase"),
                       ({"observedGeneration": "one"}, "status.observedGeneration")):  # fmt: skip
        out = crd.kubectl("patch", "om", "typed", "--subresource=status", "--type=merge",
                          "-p", json.dumps({"status": bad}), check=False)  # fmt: skip
        assert out.returncode != 0 and field in out.stderr
    good = {"phase": "Healthy", "observedGeneration": 1, "kopf": {"progress": {}}}
    crd.kubectl("patch", "om", "typed", "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": good}))  # fmt: skip
    obj = json.loads(crd.kubectl("get", "om", "typed", "-o", "json").stdout)
    assert obj["status"]["phase"] == "Healthy" and "kopf" in obj["status"]
    crd.kubectl("delete", "om", "typed", "--wait=false")
