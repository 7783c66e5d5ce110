"""Every builder on its own: names, labels, selectors, hardening."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.helpers import manifest
from tideline.contracts import AWAIT_START_ENV, IMAGE_GID, IMAGE_UID
from tideline.pods.liveness import MAX_AGE
from tideline.spec import SpecError, parse
from tideline_operator.builders import (
    DEFAULT_RESOURCES,
    OperatorConfig,
    build_config_map,
    build_hpa,
    build_learner,
    build_monitor,
    build_network_policy,
    build_pdb,
    build_pod_monitor,
    build_redis_secret,
    build_server,
    build_service,
    build_service_monitor,
    policy_violation,
)

SETTINGS = OperatorConfig(image="registry.local/tideline:1", redis_url="redis://redis:6379/0")
DOC = manifest(name="fraud")
MODEL = parse(DOC)
REV = MODEL.revision


def _pod(dep):
    return dep["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    "build",
    [lambda: build_learner(MODEL, SETTINGS, REV), lambda: build_server(MODEL, SETTINGS, REV),
     lambda: build_monitor(MODEL, SETTINGS, REV)],
    ids=["the learner", "the server", "the monitor"],
)  # fmt: skip
def test_every_container_is_hardened_probed_and_limited(build) -> None:
    dep = build()
    [c] = _pod(dep)["containers"]
    sc = c["securityContext"]
    assert (
        sc["runAsNonRoot"]
        and sc["readOnlyRootFilesystem"]
        and sc["capabilities"] == {"drop": ["ALL"]}
    )
    assert sc["allowPrivilegeEscalation"] is False
    assert "readinessProbe" in c and "livenessProbe" in c
    # why it stopped: what it wrote to /dev/termination-log, else its log's tail
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert c["image"] == "registry.local/tideline:1"
    # the Redis URL comes from a Secret: not in the Deployment, not in argv
    assert {"name": "TIDELINE_REDIS_URL",
            "valueFrom": {"secretKeyRef": {"name": "fraud-redis", "key": "url"}}} in c["env"]  # fmt: skip
    assert "redis://" not in json.dumps(dep) and not any("redis" in a for a in c["args"])
    labels = dep["metadata"]["labels"]
    assert (
        labels["tideline.dev/model"] == "fraud"
        and labels["app.kubernetes.io/managed-by"] == "tideline-operator"
    )
    # the selector matches the pod template's labels
    sel = dep["spec"]["selector"]["matchLabels"]
    assert sel.items() <= dep["spec"]["template"]["metadata"]["labels"].items()


WARM = parse(manifest(name="fraud", model={"features": [{"name": "amount"}],
                                         "warmStart": {"configMapRef": {"name": "base"}}}))  # fmt: skip
POD_BUILDS = {
    "the learner": lambda: build_learner(MODEL, SETTINGS, REV),
    "a learner warm-starting from a config map": lambda: build_learner(WARM, SETTINGS, REV),
    "the server": lambda: build_server(MODEL, SETTINGS, REV),
    "the monitor": lambda: build_monitor(MODEL, SETTINGS, REV),
}


@pytest.mark.parametrize("build", POD_BUILDS.values(), ids=POD_BUILDS.keys())
def test_model_pods_run_as_the_images_user_and_write_nothing_but_an_emptydir_tmp(build) -> None:
    """The image is ``USER 65532:65532`` (IMAGE_UID); a pod run as another uid (10001, until
    real pods) is a stranger to what the image owns and to what it wrote itself."""
    pod = _pod(build())
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": IMAGE_UID,
        "runAsGroup": IMAGE_GID,
        "fsGroup": IMAGE_GID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert (IMAGE_UID, IMAGE_GID) == (65532, 65532)
    [c] = pod["containers"]
    assert c["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": IMAGE_UID,
        "runAsGroup": IMAGE_GID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    # under the read-only root, /tmp (the image's HOME and tempfile's directory) is the one
    # writable path: an emptyDir; every other mount is read-only
    volumes = {v["name"]: v for v in pod["volumes"]}
    writable = [m for m in c["volumeMounts"] if not m.get("readOnly")]
    assert [m["mountPath"] for m in writable] == ["/tmp"]
    assert volumes[writable[0]["name"]] == {"name": writable[0]["name"], "emptyDir": {}}


DIGEST = "registry.corp/ml/tideline@sha256:" + "0123456789abcdef" * 4


def test_a_digest_reference_reaches_every_pod_unchanged() -> None:
    pinned = parse(manifest(name="fraud", image=DIGEST))
    for dep in (build_learner(pinned, SETTINGS, REV), build_server(pinned, SETTINGS, REV),
                build_monitor(pinned, SETTINGS, REV)):  # fmt: skip
        assert _pod(dep)["containers"][0]["image"] == DIGEST
    # the operator's own runtime image (the chart's image.digest) when the spec names none
    by_digest = OperatorConfig(image=DIGEST, redis_url="redis://redis:6379/0")
    assert _pod(build_server(MODEL, by_digest, REV))["containers"][0]["image"] == DIGEST


IMAGE_POLICY = {
    "a digest under an allowed registry path": (DIGEST, ["registry.corp/ml/*"], True),
    "a tag under an allowed registry path": ("registry.corp/ml/x:1", ["registry.corp/ml/*"], True),
    "a digest against a pattern for tags only": (DIGEST, ["registry.corp/ml/tideline:*"], False),
    "a digest allowed by its own exact reference": (DIGEST, [DIGEST], True),
    "a digest allowed by a digest pattern": (DIGEST, ["registry.corp/ml/tideline@sha256:*"], True),
    "an image elsewhere": ("docker.io/evil@sha256:" + "0" * 64, ["registry.corp/ml/*"], False),
    "a prefix of the pattern is not the pattern": ("registry.corp/ml", ["registry.corp/ml/*"], False),
    # the chart's ValidatingAdmissionPolicy quotes every character but *: so does the operator
    "a ? in a pattern is a ?, not any character": ("registry.corp/ml/ab", ["registry.corp/ml/a?"], False),
    "[...] in a pattern is itself, not a set": ("registry.corp/ml/a", ["registry.corp/ml/[ab]"], False),
}  # fmt: skip


@pytest.mark.parametrize(("image", "patterns", "allowed"), IMAGE_POLICY.values(),
                         ids=IMAGE_POLICY.keys())  # fmt: skip
def test_allowed_images_match_the_whole_reference_tag_or_digest(
    image: str, patterns: list[str], allowed: bool
) -> None:
    m = parse(manifest(name="fraud", image=image))
    verdict = policy_violation(m, OperatorConfig(allowed_images=tuple(patterns)))
    assert (verdict is None) is allowed, verdict


def test_the_learner_is_one_recreated_replica_per_revision_that_can_warm_start() -> None:
    dep = build_learner(MODEL, SETTINGS, REV, warm_start_from="oldrev")
    assert dep["metadata"]["name"] == f"fraud-learner-{REV}"
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    args = _pod(dep)["containers"][0]["args"]
    assert args[:2] == ["learner", "--config"] and args[-2:] == ["--warm-start-revision", "oldrev"]
    assert dep["spec"]["template"]["metadata"]["labels"]["tideline.dev/revision"] == REV


PROBED = {"the learner": build_learner, "the monitor": build_monitor}


@pytest.mark.parametrize("build", PROBED.values(), ids=PROBED.keys())
def test_learner_and_monitor_probes_read_the_age_of_the_last_good_turn_not_a_port(build) -> None:
    [c] = _pod(build(MODEL, SETTINGS, REV))["containers"]
    metrics = next(p for p in c["ports"] if p["name"] == "metrics")
    assert metrics["containerPort"] == 9100
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        probe = c[kind]
        assert "tcpSocket" not in probe, kind
        assert probe["httpGet"] == {"path": "/healthz", "port": "metrics"}, kind
        assert "initialDelaySeconds" not in probe, "the startup probe covers the start"


@pytest.mark.parametrize("build", PROBED.values(), ids=PROBED.keys())
def test_a_stale_process_is_restarted_after_a_minute_and_a_half_at_most_never_before_one(
    build,
) -> None:
    [c] = _pod(build(MODEL, SETTINGS, REV))["containers"]
    live = c["livenessProbe"]
    period, failures = live["periodSeconds"], live["failureThreshold"]
    # /healthz answers 503 once the last good turn is MAX_AGE old; the first failing probe
    # comes within one period of that, the restart failureThreshold probes later
    earliest = MAX_AGE + (failures - 1) * period
    latest = MAX_AGE + failures * period
    assert earliest >= 60 and latest <= 90, (earliest, latest)
    assert failures >= 2, "one slow answer is not a dead process"
    assert live["timeoutSeconds"] >= 5
    # not ready well before the restart: the OnlineModel stops being called Ready
    ready = c["readinessProbe"]
    assert ready["periodSeconds"] * ready["failureThreshold"] < failures * period
    start = c["startupProbe"]
    assert start["periodSeconds"] * start["failureThreshold"] >= 60, "time to import and connect"


def test_only_the_learner_waits_for_the_operators_start_word() -> None:
    env = _pod(build_learner(MODEL, SETTINGS, REV))["containers"][0]["env"]
    assert {"name": AWAIT_START_ENV, "value": "1"} in env
    assert AWAIT_START_ENV == "TIDELINE_AWAIT_START"
    for other in (build_server(MODEL, SETTINGS, REV), build_monitor(MODEL, SETTINGS, REV)):
        assert all(e["name"] != AWAIT_START_ENV for e in _pod(other)["containers"][0]["env"])


def test_the_service_named_after_the_model_selects_the_stable_revision() -> None:
    svc = build_service(MODEL, REV)
    assert svc["metadata"]["name"] == "fraud"
    assert svc["spec"]["selector"] == {"tideline.dev/model": "fraud", "tideline.dev/component": "server",
                                       "tideline.dev/revision": REV}  # fmt: skip
    assert build_service(MODEL, "canrev", canary=True)["metadata"]["name"] == "fraud-canary"


def test_the_server_takes_its_replicas_from_the_spec_and_rolls_without_downtime() -> None:
    dep = build_server(parse(manifest(name="fraud", serving={"replicas": 5})), SETTINGS, REV)
    assert dep["spec"]["replicas"] == 5
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    probe = _pod(dep)["containers"][0]["readinessProbe"]["httpGet"]
    assert probe["path"] == "/v2/health/ready"


def test_the_config_map_holds_the_manifest_the_processes_read() -> None:
    cm = build_config_map(MODEL, {**DOC, "status": {"phase": "Healthy"}}, REV)
    doc = yaml.safe_load(cm["data"]["model.yaml"])
    assert "status" not in doc and parse(doc).revision == REV
    assert cm["metadata"]["name"] == f"fraud-{REV}"


def test_redis_from_a_secret_and_no_redis_at_all() -> None:
    m = parse(manifest(name="fraud", redis={"secretRef": {"name": "redis-auth", "key": "url"}}))
    env = _pod(build_server(m, SETTINGS, REV))["containers"][0]["env"][0]
    assert env["valueFrom"]["secretKeyRef"] == {"name": "redis-auth", "key": "url"}
    assert build_redis_secret(m, SETTINGS) is None  # the user's Secret: nothing of ours
    own = build_redis_secret(MODEL, SETTINGS)
    assert own is not None and own["metadata"]["name"] == "fraud-redis"
    assert own["stringData"] == {"url": "redis://redis:6379/0"}
    with pytest.raises(ValueError, match="spec.redis: no url or secretRef"):
        build_redis_secret(MODEL, OperatorConfig(redis_url=None))


def test_pdb_and_hpa() -> None:
    assert build_pdb(MODEL)["spec"]["maxUnavailable"] == 1
    assert build_hpa(MODEL, REV) is None
    m = parse(manifest(name="fraud", serving={"autoscaling": {"minReplicas": 2, "maxReplicas": 8}}))
    hpa = build_hpa(m, REV)
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"fraud-server-{REV}"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)


def test_learners_and_the_monitor_are_scraped_by_pod_monitor_or_annotations() -> None:
    pm = build_pod_monitor(MODEL, SETTINGS)
    sel = pm["spec"]["selector"]
    for dep in (build_learner(MODEL, SETTINGS, REV), build_monitor(MODEL, SETTINGS, REV)):
        pod = dep["spec"]["template"]
        labels = pod["metadata"]["labels"]
        assert all(labels[k] == v for k, v in sel["matchLabels"].items())
        assert labels["tideline.dev/component"] in sel["matchExpressions"][0]["values"]
        port = pod["spec"]["containers"][0]["ports"][0]
        assert pm["spec"]["podMetricsEndpoints"][0]["port"] == port["name"]
        ann = pod["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true"
        assert ann["prometheus.io/port"] == str(port["containerPort"])
    server = build_server(MODEL, SETTINGS, REV)["spec"]["template"]
    assert (
        server["metadata"]["labels"]["tideline.dev/component"]
        not in sel["matchExpressions"][0]["values"]
    )
    assert server["metadata"]["annotations"]["prometheus.io/port"] == "8080"


def test_the_service_monitor_scrapes_the_servers_of_every_revision() -> None:
    sm = build_service_monitor(MODEL, SETTINGS)
    stable, canary = build_service(MODEL, REV), build_service(MODEL, "other", canary=True)
    want = sm["spec"]["selector"]["matchLabels"]
    for svc in (stable, canary):
        labels = svc["metadata"]["labels"]
        assert all(labels[k] == v for k, v in want.items())
    assert sm["spec"]["endpoints"][0]["port"] == stable["spec"]["ports"][0]["name"]
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"


@pytest.mark.parametrize("build", [build_service_monitor, build_pod_monitor],
                         ids=["the ServiceMonitor", "the PodMonitor"])  # fmt: skip
def test_the_monitor_labels_go_on_each_monitor_beside_the_operator_s_own(build) -> None:
    bare = build(MODEL, SETTINGS)["metadata"]["labels"]
    settings = OperatorConfig.from_env(
        {"TIDELINE_MONITOR_LABELS": "release=kps,example.com/team=ml"}
    )
    labelled = build(MODEL, settings)["metadata"]["labels"]
    assert labelled == {**bare, "release": "kps", "example.com/team": "ml"}


@pytest.mark.parametrize(
    ("text", "labels"),
    [("", ()), (" release = kps , ,team=", (("release", "kps"), ("team", ""))),
     ("example.com/team=ml-1.a_b", (("example.com/team", "ml-1.a_b"),)),
     ("k=" + "v" * 63, (("k", "v" * 63),))],
    ids=["none given are none", "spaces around pairs and empty ones are dropped, a value may be empty",
         "a key may have a DNS subdomain prefix", "a value may have 63 characters"],
)  # fmt: skip
def test_monitor_labels_are_read_from_key_value_pairs(text, labels) -> None:
    assert OperatorConfig.from_env({"TIDELINE_MONITOR_LABELS": text}).monitor_labels == labels


@pytest.mark.parametrize(
    ("text", "said"),
    [("release", "'release': no key=value"),
     ("rel ease=kps", "'rel ease=kps': the key is no label key"),
     ("Example.com/team=ml", "'Example.com/team=ml': the key is no label key"),
     ("/team=ml", "'/team=ml': the key is no label key"),
     ("-release=kps", "'-release=kps': the key is no label key"),
     ("k" * 64 + "=v", f"'{'k' * 64}=v': the key is no label key"),
     ("release=kube prometheus", "'release=kube prometheus': the value is no label value"),
     ("release=kps-", "'release=kps-': the value is no label value"),
     ("k=" + "v" * 64, f"'k={'v' * 64}': the value is no label value"),
     ("app.kubernetes.io/name=x", "'app.kubernetes.io/name=x': the operator sets the labels"),
     ("tideline.dev/model=x", "'tideline.dev/model=x': the operator sets the labels"),
     ("release=a,release=b", "'release=b': the key is given twice")],
    ids=["a pair without '='", "a key with a space", "a prefix in capitals", "an empty prefix",
         "a key beginning with '-'", "a key of 64 characters", "a value with a space",
         "a value ending with '-'", "a value of 64 characters",
         "a label of app.kubernetes.io, which the operator sets",
         "a label of tideline.dev, which the operator sets", "a key given twice"],
)  # fmt: skip
def test_a_bad_monitor_label_stops_the_operator_naming_the_variable_and_the_pair(
    text, said
) -> None:
    with pytest.raises(SpecError) as e:
        OperatorConfig.from_env({"TIDELINE_MONITOR_LABELS": text})
    assert str(e.value).startswith(f"TIDELINE_MONITOR_LABELS: {said}")
    assert e.value.path == "TIDELINE_MONITOR_LABELS"


def test_a_config_map_baseline_is_mounted_for_the_learner_and_only_its_key() -> None:
    m = parse(manifest(name="fraud", model={"features": [{"name": "amount"}],
                                            "warmStart": {"configMapRef": {"name": "base"}, "key": "v3.tdl"}}))  # fmt: skip
    pod = _pod(build_learner(m, SETTINGS, REV))
    vol = next(v for v in pod["volumes"] if v["name"] == "warm-start")
    assert vol["configMap"] == {"name": "base", "items": [{"key": "v3.tdl", "path": "v3.tdl"}]}
    mount = next(v for v in pod["containers"][0]["volumeMounts"] if v["name"] == "warm-start")
    assert mount == {
        "name": "warm-start",
        "mountPath": "/etc/tideline/warm-start",
        "readOnly": True,
    }
    assert all(v["name"] != "warm-start" for v in _pod(build_server(m, SETTINGS, REV))["volumes"])


@pytest.mark.parametrize(
    ("warm", "env"),
    [({"storageUri": "s3://models/fraud/v3.tdl", "secretRef": {"name": "s3-keys"}},
      [{"name": key, "valueFrom": {"secretKeyRef": {"name": "s3-keys", "key": key}}}
       for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]),
     ({"storageUri": "gs://models/fraud/v3.tdl"}, []),
     ({"storageUri": "https://models.example.com/fraud/v3.tdl"}, [])],
    ids=["an S3 object's Secret becomes the learner's env from it, key by key",
         "a public bucket's needs none", "an https URL's needs none"],
)  # fmt: skip
def test_a_storage_uri_s_keys_come_to_the_learner_alone_from_its_secret(warm, env) -> None:
    m = parse(manifest(name="fraud", model={"features": [{"name": "amount"}], "warmStart": warm}))
    learner = _pod(build_learner(m, SETTINGS, REV))
    got = [e for e in learner["containers"][0]["env"] if e["name"].startswith("AWS_")]
    assert got == env
    assert all(v["name"] != "warm-start" for v in learner["volumes"])  # (no ConfigMap)
    for other in (build_server(m, SETTINGS, REV), build_monitor(m, SETTINGS, REV)):
        assert not any(e["name"].startswith("AWS_") for c in _pod(other)["containers"]
                       for e in c.get("env", []))  # fmt: skip


def test_a_ca_bundle_is_mounted_for_the_learner_and_named_for_the_warm_start_alone() -> None:
    warm = {"storageUri": "https://models.example.com/fraud/v3.tdl",
            "caBundle": {"configMapRef": {"name": "corp-ca"}, "key": "root.pem"}}  # fmt: skip
    m = parse(manifest(name="fraud", model={"features": [{"name": "amount"}], "warmStart": warm}))
    pod = _pod(build_learner(m, SETTINGS, REV))
    vol = next(v for v in pod["volumes"] if v["name"] == "warm-start-ca")
    assert vol["configMap"] == {"name": "corp-ca", "items": [{"key": "root.pem", "path": "ca.crt"}]}
    container = pod["containers"][0]
    mount = next(v for v in container["volumeMounts"] if v["name"] == "warm-start-ca")
    assert mount == {"name": "warm-start-ca", "mountPath": "/etc/tideline/warm-start-ca",
                     "readOnly": True}  # fmt: skip
    env = {e["name"]: e.get("value") for e in container["env"]}
    # (not SSL_CERT_FILE: the learner's Redis and Kafka clients keep their own trust)
    assert env["TIDELINE_WARM_START_CA"] == "/etc/tideline/warm-start-ca/ca.crt"
    assert "SSL_CERT_FILE" not in env


def test_feedback_auth_gives_the_servers_the_token_from_its_secret() -> None:
    m = parse(
        manifest(name="fraud", serving={"feedbackAuth": {"secretRef": {"name": "labels-auth"}}})
    )
    env = _pod(build_server(m, SETTINGS, REV))["containers"][0]["env"]
    assert {"name": "TIDELINE_FEEDBACK_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "labels-auth", "key": "token"}}} in env  # fmt: skip
    assert all(e["name"] != "TIDELINE_FEEDBACK_TOKEN"
               for e in _pod(build_server(MODEL, SETTINGS, REV))["containers"][0]["env"])  # fmt: skip


@pytest.mark.parametrize("build", [build_learner, build_server, build_monitor])
def test_a_kafka_sasl_password_reaches_every_component_from_its_secret(build) -> None:
    kafka = {"bootstrapServers": "kafka:9092", "topics": {"feedback": "fraud-labels"},
             "securityProtocol": "SASL_SSL",
             "sasl": {"username": "fraud", "secretRef": {"name": "kafka-fraud"}}}  # fmt: skip
    m = parse(manifest(name="fraud", source={"kafka": kafka}))
    env = _pod(build(m, SETTINGS, m.revision))["containers"][0]["env"]
    assert {"name": "TIDELINE_KAFKA_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "kafka-fraud", "key": "password"}}} in env  # fmt: skip
    plain = _pod(build(MODEL, SETTINGS, REV))["containers"][0]["env"]
    assert all(e["name"] != "TIDELINE_KAFKA_PASSWORD" for e in plain)


@pytest.mark.parametrize("build", [build_learner, build_server, build_monitor])
def test_kafka_tls_certificates_reach_every_component_from_their_secrets(build) -> None:
    kafka = {"bootstrapServers": "kafka:9093", "topics": {"samples": "fraud"},
             "securityProtocol": "SSL",
             "tls": {"caSecretRef": {"name": "my-cluster-cluster-ca-cert"},
                     "certSecretRef": {"name": "fraud-user"},
                     "keySecretRef": {"name": "fraud-user"}}}  # fmt: skip
    m = parse(manifest(name="fraud", source={"kafka": kafka}))
    env = _pod(build(m, SETTINGS, m.revision))["containers"][0]["env"]
    for name, secret, key in (("TIDELINE_KAFKA_CA", "my-cluster-cluster-ca-cert", "ca.crt"),
                              ("TIDELINE_KAFKA_CERT", "fraud-user", "user.crt"),
                              ("TIDELINE_KAFKA_KEY", "fraud-user", "user.key")):  # fmt: skip
        assert {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}} in env
    assert all(e["name"] != "TIDELINE_KAFKA_PASSWORD" for e in env)
    assert m.revision == parse(manifest(name="fraud", source={"kafka": {
        "bootstrapServers": "kafka:9092", "topics": {"samples": "fraud"}}})).revision  # fmt: skip


def test_labels_on_a_port_of_their_own_and_a_policy_per_port() -> None:
    ops = {"namespaceSelector": {"matchLabels": {"team": "fraud-ops"}}}
    web = {"podSelector": {"matchLabels": {"app": "checkout"}}}
    m = parse(manifest(name="fraud", serving={"labelsPort": 8082, "networkPolicy": {
        "predictFrom": [web], "labelsFrom": [ops]}}))  # fmt: skip
    [c] = _pod(build_server(m, SETTINGS, REV))["containers"]
    assert c["args"][-2:] == ["--write-port", "8082"]
    assert {"name": "labels", "containerPort": 8082} in c["ports"]
    assert {"name": "labels", "port": 8082, "targetPort": "labels"} in build_service(m, REV)[
        "spec"
    ]["ports"]
    policy = build_network_policy(m)
    assert policy is not None and policy["spec"]["podSelector"]["matchLabels"] == {
        "tideline.dev/model": "fraud", "tideline.dev/component": "server"}  # fmt: skip
    assert policy["spec"]["ingress"] == [
        {
            "ports": [{"port": 8080, "protocol": "TCP"}, {"port": 8081, "protocol": "TCP"}],
            "from": [web],
        },
        {"ports": [{"port": 8082, "protocol": "TCP"}], "from": [ops]},
    ]
    assert build_network_policy(MODEL) is None
    open_predict = parse(manifest(name="fraud", serving={"networkPolicy": {}}))
    assert build_network_policy(open_predict)["spec"]["ingress"] == [
        {"ports": [{"port": 8080, "protocol": "TCP"}, {"port": 8081, "protocol": "TCP"}]}
    ]


def test_the_client_knows_the_path_of_every_kind_the_builders_make() -> None:
    from tideline_operator.kube import KINDS

    m = parse(manifest(name="fraud", serving={"labelsPort": 8082, "networkPolicy": {},
                                              "autoscaling": {"maxReplicas": 4}}))  # fmt: skip
    made = [build_config_map(m, manifest(name="fraud"), REV), build_learner(m, SETTINGS, REV),
            build_server(m, SETTINGS, REV), build_service(m, REV), build_monitor(m, SETTINGS, REV),
            build_pdb(m), build_hpa(m, REV), build_service_monitor(m, SETTINGS), build_pod_monitor(m, SETTINGS),
            build_network_policy(m),
            build_redis_secret(m, SETTINGS)]  # fmt: skip
    assert all(o is not None and (o["apiVersion"], o["kind"]) in KINDS for o in made), [
        (o["apiVersion"], o["kind"])
        for o in made
        if o and (o["apiVersion"], o["kind"]) not in KINDS
    ]


def test_spec_pods_place_and_size_each_component_and_change_no_revision() -> None:
    gpu = {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}
    pods = {
        "nodeSelector": {"pool": "ml"},
        "imagePullSecrets": [{"name": "regcred"}],
        "server": {"resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                                 "limits": {"cpu": 2, "memory": "1Gi"}},
                   "tolerations": [gpu], "nodeSelector": {"pool": "serving"}},
        "learner": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}}},
    }  # fmt: skip
    model = parse(manifest(name="fraud", pods=pods))
    assert model.revision == REV  # where pods run is not what is learned
    server = _pod(build_server(model, SETTINGS, REV))
    assert server["nodeSelector"] == {"pool": "serving"} and server["tolerations"] == [gpu]
    assert server["imagePullSecrets"] == [{"name": "regcred"}]
    assert server["containers"][0]["resources"]["requests"] == {"cpu": "250m", "memory": "256Mi"}
    learner = _pod(build_learner(model, SETTINGS, REV))
    assert learner["nodeSelector"] == {"pool": "ml"} and "nodeAffinity" in learner["affinity"]
    assert learner["imagePullSecrets"] == [{"name": "regcred"}] and "tolerations" not in learner
    assert learner["containers"][0]["resources"] == DEFAULT_RESOURCES["learner"]  # the default
    monitor = _pod(build_monitor(model, SETTINGS, REV))
    assert monitor["imagePullSecrets"] == [{"name": "regcred"}]


@pytest.mark.parametrize(
    ("pods", "message"),
    [
        (
            {"server": {"resources": {"requests": {"cpu": "lots"}}}},
            "spec.pods.server.resources.requests.cpu: must be a quantity",
        ),
        ({"resources": {"requests": {"cpu": 1}}}, "spec.pods.resources: unknown field"),
        ({"tolerations": [{"effect": "Sometimes"}]}, "spec.pods.tolerations[0].effect"),
        ({"imagePullSecrets": ["regcred"]}, "spec.pods.imagePullSecrets[0]: must be an object"),
        (
            {"imagePullSecrets": [{"name": "regcred"}] * 21},
            "spec.pods.imagePullSecrets: at most 20",
        ),
        (
            {"server": {"tolerations": [{"operator": "Exists"}] * 101}},
            "spec.pods.server.tolerations: at most 100 .got 101.",
        ),
        ({"scheduler": {}}, "spec.pods.scheduler: unknown field"),
    ],
    ids=[
        "a bad quantity",
        "resources shared",
        "a bad effect",
        "a bare secret name",
        "more pull secrets than the CRD takes",
        "more tolerations than the CRD takes",
        "a typo",
    ],
)
def test_spec_pods_errors_name_the_field(pods: dict, message: str) -> None:
    from tideline.spec import SpecError

    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse(manifest(name="fraud", pods=pods))


def _millicores(q: str) -> int:
    return int(q[:-1]) if q.endswith("m") else int(float(q) * 1000)


def test_the_default_requests_of_a_model_and_its_canary_fit_a_2_core_node_beside_the_chart() -> (
    None
):
    """examples/fraud.yaml (2 servers) with a canary revision (its learner and a server)
    beside the chart's operator and bundled Redis: a 2-core node schedules them all (a
    server asking a whole core left the second replica Pending on a real 2-core node)."""
    from pathlib import Path

    doc = yaml.safe_load((Path(__file__).parents[3] / "examples" / "fraud.yaml").read_text())
    doc["metadata"]["namespace"] = "default"
    model = parse(doc)
    pods = [build_learner(model, SETTINGS, "a"), build_server(model, SETTINGS, "a"),
            build_monitor(model, SETTINGS, "a"), build_learner(model, SETTINGS, "b"),
            build_server(model, SETTINGS, "b", replicas=1)]  # fmt: skip
    cpu = sum(
        _millicores(c["resources"]["requests"]["cpu"]) * d["spec"]["replicas"]
        for d in pods
        for c in d["spec"]["template"]["spec"]["containers"]
    )
    values = yaml.safe_load(
        (Path(__file__).parents[3] / "charts" / "tideline" / "values.yaml").read_text()
    )
    cpu += _millicores(values["resources"]["requests"]["cpu"])
    cpu += _millicores(values["redis"]["bundled"]["resources"]["requests"]["cpu"])
    assert cpu <= 2000, f"{cpu}m of requests"
