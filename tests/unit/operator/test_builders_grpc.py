"""The servers' gRPC port in what the operator builds: container, Service, NetworkPolicy."""

from __future__ import annotations

import pytest

from tests.helpers import manifest
from tideline.spec import SpecError, parse
from tideline_operator.builders import (
    GRPC_PORT,
    OperatorConfig,
    build_network_policy,
    build_server,
    build_service,
)

SETTINGS = OperatorConfig(image="registry.local/tideline:1", redis_url="redis://redis:6379/0")
MODEL = parse(manifest(name="fraud"))


def test_the_server_listens_for_grpc_on_a_named_port_with_its_probes_on_http() -> None:
    [c] = build_server(MODEL, SETTINGS, MODEL.revision)["spec"]["template"]["spec"]["containers"]
    assert c["args"][c["args"].index("--grpc-port") + 1] == str(GRPC_PORT) == "8081"
    assert c["ports"] == [{"name": "http", "containerPort": 8080},
                          {"name": "grpc", "containerPort": 8081}]  # fmt: skip
    assert c["readinessProbe"]["httpGet"]["port"] == "http"
    assert c["livenessProbe"]["httpGet"]["port"] == "http"


@pytest.mark.parametrize("canary", [False, True], ids=["the stable Service", "the canary's"])
def test_each_service_carries_grpc_as_cleartext_http2(canary: bool) -> None:
    ports = build_service(MODEL, MODEL.revision, canary)["spec"]["ports"]
    assert ports[0]["name"] == "http"  # (a ServiceMonitor scrapes the first)
    assert {"name": "grpc", "port": 8081, "targetPort": "grpc",
            "appProtocol": "kubernetes.io/h2c"} in ports  # fmt: skip


def test_a_network_policy_admits_grpc_where_it_admits_predictions() -> None:
    web = {"podSelector": {"matchLabels": {"app": "checkout"}}}
    m = parse(manifest(name="fraud", serving={"networkPolicy": {"predictFrom": [web]}}))
    policy = build_network_policy(m)
    assert policy is not None
    [predict] = policy["spec"]["ingress"]
    assert {"port": 8081, "protocol": "TCP"} in predict["ports"] and predict["from"] == [web]


def test_labels_cannot_take_the_grpc_port() -> None:
    with pytest.raises(
        SpecError, match=r"labelsPort: must differ from the servers' ports 8080, 8081 \(gRPC\)"
    ):
        parse(manifest(name="fraud", serving={"labelsPort": 8081}))
