"""The Helm chart: `helm lint`, and `helm template` output valid against the Kubernetes schemas."""

from __future__ import annotations

import pytest
import yaml
from kubernetes_validate import validate
from kubernetes_validate.utils import ValidationError

from tests.e2e.cluster.controlplane import ControlPlane
from tests.e2e.conftest import ROOT, helm

pytestmark = pytest.mark.e2e
CHART = str(ROOT / "charts" / "tideline")
K8S = "1.35.0"
OWN_KINDS = {"ClusterKopfPeering", "KopfPeering"}  # kinds of the chart's own CRDs

VALUES = {
    "defaults": [],
    "bundled redis, dashboard, two replicas": [
        "--set", "redis.bundled.enabled=true", "--set", "grafanaDashboard.enabled=true",
        "--set", "replicas=2",
    ],
    "namespaced RBAC": [
        "--set", "rbac.namespaced=true", "--set", "watchNamespaces={team-a,team-b}",
        "--set", "redis.existingSecret=redis-url",
    ],
}  # fmt: skip


def test_helm_lint_passes(cluster: ControlPlane) -> None:
    out = helm(cluster, "lint", CHART, "--strict")
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("args", VALUES.values(), ids=VALUES.keys())
def test_every_rendered_manifest_is_valid_against_the_api_schemas(
    cluster: ControlPlane, args: list[str]
) -> None:
    out = helm(cluster, "template", "tideline", CHART, "--namespace", "tideline-system",
               "--include-crds", *args)  # fmt: skip
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    kinds = {d["kind"] for d in docs}
    assert {"CustomResourceDefinition", "Deployment", "ServiceAccount"} <= kinds
    assert kinds & {"ClusterRole", "Role"}
    for doc in docs:
        if doc["kind"] in OWN_KINDS:
            continue
        try:
            validate(doc, K8S, strict=True)
        except ValidationError as e:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {e.message}")


def test_namespaced_rbac_without_namespaces_is_refused_with_a_message(
    cluster: ControlPlane,
) -> None:
    out = helm(cluster, "template", "t", CHART, "--set", "rbac.namespaced=true", check=False)
    assert out.returncode != 0 and "rbac.namespaced needs watchNamespaces" in out.stderr


def test_the_operator_gets_the_default_redis_from_the_values(cluster: ControlPlane) -> None:
    out = helm(cluster, "template", "t", CHART, "--set", "redis.url=redis://r:6379/0")
    dep = next(d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "Deployment")
    env = {
        e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["TIDELINE_REDIS_URL"] == "redis://r:6379/0"
    assert env["TIDELINE_RUNTIME_IMAGE"] == "ghcr.io/tideline/runtime:0.1.0"
    assert env["TIDELINE_RETIRED_GRACE_SECONDS"] == "120"
