"""The Helm chart: `helm lint`, and `helm template` output valid against the Kubernetes schemas."""

from __future__ import annotations

import pytest
import yaml
from kubernetes_validate import validate
from kubernetes_validate.utils import ValidationError

import tideline
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
    # the image `make image` tags, named in one place (tideline.IMAGE, tideline.__version__)
    assert env["TIDELINE_RUNTIME_IMAGE"] == f"{tideline.IMAGE}:{tideline.__version__}"
    assert (
        dep["spec"]["template"]["spec"]["containers"][0]["image"] == env["TIDELINE_RUNTIME_IMAGE"]
    )
    assert env["TIDELINE_RETIRED_GRACE_SECONDS"] == "120"


def test_the_bundled_redis_has_a_generated_password_and_only_tideline_reaches_it(
    cluster: ControlPlane,
) -> None:
    out = helm(cluster, "template", "t", CHART, "--set", "redis.bundled.enabled=true")
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    secret = by[("Secret", "t-tideline-redis-auth")]["stringData"]
    assert len(secret["password"]) == 32 and secret["url"].startswith(
        f"redis://:{secret['password']}@"
    )
    redis_pod = by[("Deployment", "t-tideline-redis")]["spec"]["template"]
    redis = redis_pod["spec"]["containers"][0]
    assert redis["args"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    # as a platform team's checks want it: no API token, probed, limited, labelled as itself
    assert redis_pod["spec"]["automountServiceAccountToken"] is False
    assert redis["livenessProbe"]["tcpSocket"] and redis["readinessProbe"]["tcpSocket"]
    assert redis_pod["metadata"]["labels"]["app.kubernetes.io/component"] == "redis"
    for kind, name in (("Deployment", "t-tideline-redis"), ("Service", "t-tideline-redis"),
                       ("Secret", "t-tideline-redis-auth")):  # fmt: skip
        assert by[(kind, name)]["metadata"]["labels"]["app.kubernetes.io/component"] == "redis"
    op_pod = by[("Deployment", "t-tideline")]["spec"]["template"]["spec"]
    assert op_pod["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/healthz"
    for pod in (redis_pod["spec"], op_pod):
        assert all(c["resources"]["limits"]["cpu"] for c in pod["containers"])
    operator = by[("Deployment", "t-tideline")]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in operator["env"]}
    assert env["TIDELINE_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "t-tideline-redis-auth",
        "key": "url",
    }
    assert "redis://" not in yaml.safe_dump(by[("Deployment", "t-tideline")])
    policy = by[("NetworkPolicy", "t-tideline-redis")]["spec"]
    assert policy["ingress"][0]["ports"] == [{"port": 6379, "protocol": "TCP"}]
    assert {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "tideline"}},
    } in policy["ingress"][0]["from"]
    assert by[("NetworkPolicy", "t-tideline")]["spec"]["ingress"] == [
        {"ports": [{"port": 9100, "protocol": "TCP"}]}
    ]
    two = helm(cluster, "template", "t", CHART, "--set", "redis.bundled.enabled=true").stdout
    assert secret["password"] not in two, "a template run without a cluster generates anew"


def test_watch_namespaces_alone_gives_namespaced_roles_and_no_cluster_wide_write(
    cluster: ControlPlane,
) -> None:
    out = helm(cluster, "template", "t", CHART, "--set", "watchNamespaces={team-a,team-b}")
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    roles = [d for d in docs if d["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    [cluster_role] = [d for d in docs if d["kind"] == "ClusterRole"]
    verbs = {v for rule in cluster_role["rules"] for v in rule["verbs"]}
    assert verbs <= {"list", "watch"}, "cluster-wide: discovery only"
    secrets = next(rule for rule in roles[0]["rules"] if "secrets" in rule["resources"])
    assert set(secrets["verbs"]) == {"get", "create", "patch"}
