"""The test bed itself: a real kube-apiserver that schedules pods onto a kwok node and collects garbage."""

from __future__ import annotations

import json

import pytest

from tests.e2e.cluster.controlplane import ControlPlane
from tests.helpers import wait_until

pytestmark = pytest.mark.e2e

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: probe, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: probe}}
  template:
    metadata: {labels: {app: probe}}
    spec:
      containers: [{name: c, image: registry.invalid/probe:1}]
      tolerations: [{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}]
"""


def test_the_api_server_reports_its_version_and_enforces_rbac(cluster: ControlPlane) -> None:
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    nobody = cluster.kubeconfig_for("not-a-token", "nobody")
    denied = cluster.kubectl("get", "pods", kubeconfig=nobody, check=False)
    assert denied.returncode != 0 and "Unauthorized" in denied.stderr


def test_pods_of_a_deployment_run_on_the_fake_node_and_are_collected_with_it(
    cluster: ControlPlane,
) -> None:
    cluster.kubectl("apply", "-f", "-", input=DEPLOYMENT)

    def running() -> bool:
        pods = json.loads(cluster.kubectl("get", "pods", "-l", "app=probe", "-o", "json").stdout)[
            "items"
        ]
        return len(pods) == 2 and all(p["status"].get("phase") == "Running" for p in pods)

    took = wait_until(running, 60.0, 0.3, "2 probe pods Running")
    print(f"\n[e2e] deployment to 2 Running pods in {took:.1f}s")
    cluster.kubectl("delete", "deployment", "probe", "--wait=false")
    wait_until(
        lambda: cluster.kubectl("get", "pods", "-l", "app=probe", "-o", "name").stdout.strip() == "",
        60.0, 0.3, "the probe pods gone",
    )  # fmt: skip
