"""The Helm chart: `helm lint`, and `helm template` output valid against the Kubernetes schemas.

Rendering needs the e2e suite's ``helm`` binary (``make e2e-bin``), not a running control
plane: these tests start none.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import redis
import yaml
from kubernetes_validate import validate
from kubernetes_validate.utils import ValidationError

import tideline
from tests.e2e.cluster.controlplane import find_binaries
from tests.e2e.conftest import ROOT, Installed
from tideline.demo.embedded import free_port, redis_server_binary
from tideline_operator.builders import OWN_LABEL_PREFIXES

pytestmark = pytest.mark.e2e
CHART = str(ROOT / "charts" / "tideline")
K8S = "1.35.0"
OWN_KINDS = {"ClusterKopfPeering", "KopfPeering"}  # kinds of the chart's own CRDs
BUNDLED = ["--set", "redis.bundled.enabled=true"]


@pytest.fixture(scope="module")
def helm_bin() -> Path:
    try:
        return find_binaries() / "helm"
    except RuntimeError as e:  # not built: `make e2e-bin` names what failed
        pytest.fail(str(e), pytrace=False)


def helm(helm_bin: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm_bin), *args], capture_output=True, text=True, check=check,
                          timeout=120)  # fmt: skip


def render(helm_bin: Path, *args: str) -> dict[tuple[str, str], dict]:
    """``helm template t`` with these values: each object by (kind, name)."""
    out = helm(helm_bin, "template", "t", CHART, *args)
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out.stdout) if d}


def _flags(args: list[str]) -> dict[str, str]:
    """Redis's ``--name value`` arguments as a mapping."""
    assert len(args) % 2 == 0 and all(a.startswith("--") for a in args[::2]), args
    return {k[2:]: v for k, v in zip(args[::2], args[1::2], strict=True)}


VALUES = {
    "defaults": [],
    "bundled redis, dashboard, two replicas": [
        "--set", "redis.bundled.enabled=true", "--set", "grafanaDashboard.enabled=true",
        "--set", "replicas=2",
    ],
    "bundled redis on an emptyDir, no network policy": [
        "--set", "redis.bundled.enabled=true", "--set", "redis.bundled.persistence.enabled=false",
        "--set", "networkPolicy.enabled=false",
    ],
    "bundled redis on a named storage class, no maxmemory": [
        "--set", "redis.bundled.enabled=true", "--set", "redis.bundled.persistence.storageClassName=fast",
        "--set", "redis.bundled.maxmemory=",
    ],
    "bundled redis for named namespaces and a namespace selector, images by digest": [
        "--set", "redis.bundled.enabled=true", "--set", "redis.bundled.clientNamespaces={ml,ml-2}",
        "--set", "redis.bundled.clientNamespaceSelector.matchLabels.team=ml",
        "--set", "image.digest=sha256:" + "0" * 64, "--set", "redis.bundled.image=redis@sha256:" + "0" * 64,
    ],
    "namespaced RBAC": [
        "--set", "rbac.namespaced=true", "--set", "watchNamespaces={team-a,team-b}",
        "--set", "redis.existingSecret=redis-url",
    ],
}  # fmt: skip


def test_helm_lint_passes(helm_bin: Path) -> None:
    out = helm(helm_bin, "lint", CHART, "--strict")
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("args", VALUES.values(), ids=VALUES.keys())
def test_every_rendered_manifest_is_valid_against_the_api_schemas(
    helm_bin: Path, args: list[str]
) -> None:
    out = helm(helm_bin, "template", "tideline", CHART, "--namespace", "tideline-system",
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
    helm_bin: Path,
) -> None:
    out = helm(helm_bin, "template", "t", CHART, "--set", "rbac.namespaced=true", check=False)
    assert out.returncode != 0 and "rbac.namespaced needs watchNamespaces" in out.stderr


def test_the_operator_gets_the_default_redis_from_the_values(helm_bin: Path) -> None:
    out = helm(helm_bin, "template", "t", CHART, "--set", "redis.url=redis://r:6379/0")
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
    helm_bin: Path,
) -> None:
    out = helm(helm_bin, "template", "t", CHART, "--set", "redis.bundled.enabled=true")
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    secret = by[("Secret", "t-tideline-redis-auth")]["stringData"]
    assert len(secret["password"]) == 32 and secret["url"].startswith(
        f"redis://:{secret['password']}@"
    )
    redis_pod = by[("StatefulSet", "t-tideline-redis")]["spec"]["template"]
    server = redis_pod["spec"]["containers"][0]
    assert server["args"][-2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    # as a platform team's checks want it: no API token, probed, limited, labelled as itself
    assert redis_pod["spec"]["automountServiceAccountToken"] is False
    assert server["livenessProbe"]["tcpSocket"] and server["readinessProbe"]["exec"]
    assert redis_pod["metadata"]["labels"]["app.kubernetes.io/component"] == "redis"
    for kind, name in (("StatefulSet", "t-tideline-redis"), ("Service", "t-tideline-redis"),
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
    # who gets in: test_the_bundled_redis_admits_the_operator_and_model_pods_of_named_namespaces
    assert by[("NetworkPolicy", "t-tideline")]["spec"]["ingress"] == [
        {"ports": [{"port": 9100, "protocol": "TCP"}]}
    ]
    two = helm(helm_bin, "template", "t", CHART, "--set", "redis.bundled.enabled=true").stdout
    assert secret["password"] not in two, "a template run without a cluster generates anew"


def test_the_bundled_redis_keeps_every_write_on_a_claim_and_never_evicts(helm_bin: Path) -> None:
    sts = render(helm_bin, *BUNDLED)[("StatefulSet", "t-tideline-redis")]["spec"]
    assert sts["replicas"] == 1 and sts["serviceName"] == "t-tideline-redis"
    [claim] = sts["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"] == {"requests": {"storage": "8Gi"}}
    assert "storageClassName" not in claim["spec"], "the cluster's default class"
    assert sts["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    pod = sts["template"]["spec"]
    assert "volumes" not in pod, "the claim, not an emptyDir"
    [server] = pod["containers"]
    assert server["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    flags = _flags(server["args"])
    assert flags == {"dir": "/data", "appendonly": "yes", "appendfsync": "everysec",
                     "save": "", "maxmemory-policy": "noeviction", "maxmemory": "768mb",
                     "requirepass": "$(REDIS_PASSWORD)"}  # fmt: skip
    # hardened as the rest of the chart: the data dir is the one writable place
    sc = server["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsUser"] != 0 and pod["securityContext"]["fsGroup"]
    # ready when it answers PONG (not while it loads its file); the password from the env
    assert "redis-cli ping" in server["readinessProbe"]["exec"]["command"][-1]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in server["env"]}
    assert env["REDISCLI_AUTH"] == env["REDIS_PASSWORD"] == {
        "name": "t-tideline-redis-auth", "key": "password"}  # fmt: skip


CLAIMS = {
    "a size and a storage class": (
        ["--set", "redis.bundled.persistence.size=20Gi",
         "--set", "redis.bundled.persistence.storageClassName=fast"],
        {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast",
         "resources": {"requests": {"storage": "20Gi"}}},
    ),
    "'-' asks for no storage class (a PersistentVolume made by hand)": (
        ["--set", "redis.bundled.persistence.storageClassName=-",
         "--set", "redis.bundled.persistence.accessModes={ReadWriteOncePod}"],
        {"accessModes": ["ReadWriteOncePod"], "storageClassName": "",
         "resources": {"requests": {"storage": "8Gi"}}},
    ),
}  # fmt: skip


@pytest.mark.parametrize(("args", "want"), CLAIMS.values(), ids=CLAIMS.keys())
def test_the_redis_claim_takes_its_size_class_and_modes_from_the_values(
    helm_bin: Path, args: list[str], want: dict
) -> None:
    sts = render(helm_bin, *BUNDLED, *args)[("StatefulSet", "t-tideline-redis")]["spec"]
    assert sts["volumeClaimTemplates"][0]["spec"] == want


def test_without_persistence_redis_is_on_an_emptydir(helm_bin: Path) -> None:
    off = [*BUNDLED, "--set", "redis.bundled.persistence.enabled=false",
           "--set", "redis.bundled.maxmemory="]  # fmt: skip
    sts = render(helm_bin, *off)[("StatefulSet", "t-tideline-redis")]["spec"]
    assert "volumeClaimTemplates" not in sts
    assert sts["template"]["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}]
    flags = _flags(sts["template"]["spec"]["containers"][0]["args"])
    assert "maxmemory" not in flags and flags["maxmemory-policy"] == "noeviction"
    assert flags["appendonly"] == "yes", "a restarted container still finds its file"


def test_the_notes_warn_when_redis_keeps_nothing_and_name_the_claim_when_it_does(
    installed: Installed,
) -> None:
    # (helm renders NOTES.txt only for an install: a client-side dry run, which still maps
    # every kind through the API server's discovery, the chart's peering CRD's included)
    def notes(*args: str) -> str:
        return installed.helm("install", "t", CHART, "--dry-run=client", *BUNDLED, *args).stdout

    lost = notes("--set", "redis.bundled.persistence.enabled=false")
    assert "WARNING: the bundled Redis keeps its data on an emptyDir" in lost
    assert "loses every model's versions" in lost
    kept = notes()
    assert "WARNING" not in kept and "data-t-tideline-redis-0 (8Gi" in kept
    # which namespaces' models reach it (the release's, default, and no other unless named)
    assert "admits the model pods of these namespaces only: default." in kept
    named = notes("--set", "redis.bundled.clientNamespaces={ml}")
    assert "admits the model pods of these namespaces only: default, ml." in named


def _start(args: list[str], cwd: Path) -> tuple[subprocess.Popen[bytes], redis.Redis]:
    port = free_port()
    proc = subprocess.Popen([redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
                             *args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    client = redis.Redis(port=port, password="pw", socket_timeout=5)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return proc, client
        except redis.ConnectionError:
            assert proc.poll() is None, "redis-server refused the chart's arguments"
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.05)


def test_a_redis_killed_with_the_charts_arguments_comes_back_with_its_data(
    helm_bin: Path, tmp_path: Path
) -> None:
    server = render(helm_bin, *BUNDLED)[("StatefulSet", "t-tideline-redis")]["spec"]["template"]
    args = [a.replace("$(REDIS_PASSWORD)", "pw").replace("/data", str(tmp_path))
            for a in server["spec"]["containers"][0]["args"]]  # fmt: skip
    proc, client = _start(args, tmp_path)
    try:
        config = {k: client.config_get(k)[k] for k in
                  ("appendonly", "appendfsync", "maxmemory-policy", "maxmemory", "save")}  # fmt: skip
        assert config == {"appendonly": "yes", "appendfsync": "everysec",
                          "maxmemory-policy": "noeviction", "maxmemory": str(768 * 2**20),
                          "save": ""}  # fmt: skip
        client.hset("tideline:{ns/m}:pointers", mapping={"latest": 7, "lastGood": 5})
        time.sleep(1.5)  # appendfsync everysec: on disk within a second
    finally:
        proc.kill()  # no clean shutdown: what a lost node does
        proc.wait()
        client.close()
    proc, client = _start(args, tmp_path)
    try:
        assert client.hgetall("tideline:{ns/m}:pointers") == {b"latest": b"7", b"lastGood": b"5"}
    finally:
        proc.kill()
        proc.wait()
        client.close()


def test_watch_namespaces_alone_gives_namespaced_roles_and_no_cluster_wide_write(
    helm_bin: Path,
) -> None:
    out = helm(helm_bin, "template", "t", CHART, "--set", "watchNamespaces={team-a,team-b}")
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    roles = [d for d in docs if d["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    [cluster_role] = [d for d in docs if d["kind"] == "ClusterRole"]
    verbs = {v for rule in cluster_role["rules"] for v in rule["verbs"]}
    assert verbs <= {"list", "watch"}, "cluster-wide: discovery only"
    secrets = next(rule for rule in roles[0]["rules"] if "secrets" in rule["resources"])
    assert set(secrets["verbs"]) == {"get", "create", "patch"}


# --------------------------------------------------------------------------- who reaches Redis
def _selects(selector: dict, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector's verdict ({} selects everything)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        if not {"In": key in labels and labels[key] in values,
                "NotIn": key not in labels or labels[key] not in values,
                "Exists": key in labels, "DoesNotExist": key not in labels}[op]:  # fmt: skip
            return False
    return True


def _admits(
    policy: dict, pod_ns: str, pod_labels: dict[str, str], ns_labels: dict[str, str]
) -> bool:
    """Whether a NetworkPolicy's ingress admits a pod (on any port), as the API defines its
    peers: a podSelector alone means the policy's namespace; a namespaceSelector names
    namespaces by their labels (which always include kubernetes.io/metadata.name)."""
    ns_labels = {**ns_labels, "kubernetes.io/metadata.name": pod_ns}
    for rule in policy["spec"]["ingress"]:
        if "from" not in rule:
            return True
        for peer in rule["from"]:
            if "namespaceSelector" in peer:
                ns_ok = _selects(peer["namespaceSelector"], ns_labels)
            else:
                ns_ok = pod_ns == policy["metadata"]["namespace"]
            if ns_ok and _selects(peer.get("podSelector", {}), pod_labels):
                return True
    return False


def _model_pods(namespace: str) -> list[dict[str, str]]:
    """The labels of the pods the operator builds for examples/fraud.yaml in ``namespace``."""
    from tideline.spec import parse
    from tideline_operator.builders import (
        OperatorConfig,
        build_learner,
        build_monitor,
        build_server,
    )

    doc = yaml.safe_load((ROOT / "examples" / "fraud.yaml").read_text())
    assert "namespace" not in doc["metadata"], "kubectl apply puts it in the current namespace"
    doc["metadata"]["namespace"] = namespace
    model, settings = parse(doc), OperatorConfig(redis_url="redis://r:6379/0")
    return [build(model, settings, model.revision)["spec"]["template"]["metadata"]["labels"]
            for build in (build_learner, build_server, build_monitor)]  # fmt: skip


RELEASE_NS = "tideline-system"
OPERATOR = {"app.kubernetes.io/name": "tideline", "app.kubernetes.io/instance": "t",
            "app.kubernetes.io/component": "operator"}  # fmt: skip
FORGED = {"app.kubernetes.io/part-of": "tideline", "app.kubernetes.io/managed-by": "tideline-operator",
          "app.kubernetes.io/instance": "t", "tideline.dev/component": "server"}  # fmt: skip
# (values, pod namespace, pod labels or "model" for fraud's pods there, namespace labels, admitted)
REACH = {
    "the operator": ([], RELEASE_NS, OPERATOR, {}, True),
    "the quick start's model in default, with default values": ([], "default", "model", {}, True),
    "a model in the release's namespace": ([], RELEASE_NS, "model", {}, True),
    "a pod labelled as a model's in a namespace nobody named": ([], "team-x", FORGED, {}, False),
    "the operator's labels in another namespace": ([], "team-x", OPERATOR, {}, False),
    "an unlabelled pod in the release's namespace": ([], RELEASE_NS, {"app": "x"}, {}, False),
    "an unlabelled pod in default": ([], "default", {"app": "x"}, {}, False),
    "a model in a watched namespace": (["--set", "watchNamespaces={team-a}"], "team-a", "model", {}, True),
    "default, once watchNamespaces names the namespaces":
        (["--set", "watchNamespaces={team-a}"], "default", "model", {}, False),
    "a model in a namespace of clientNamespaces":
        (["--set", "redis.bundled.clientNamespaces={ml,ml-2}"], "ml-2", "model", {}, True),
    "default, once clientNamespaces lists others":
        (["--set", "redis.bundled.clientNamespaces={ml}"], "default", "model", {}, False),
    "default with clientNamespaces empty":
        (["--set-json", "redis.bundled.clientNamespaces=[]"],
         "default", "model", {}, False),
    "a model in a namespace the clientNamespaceSelector picks":
        (["--set", "redis.bundled.clientNamespaceSelector.matchLabels.tideline\\.dev/models=yes"],
         "team-y", "model", {"tideline.dev/models": "yes"}, True),
    "a namespace the clientNamespaceSelector does not pick":
        (["--set", "redis.bundled.clientNamespaceSelector.matchLabels.tideline\\.dev/models=yes"],
         "team-z", "model", {}, False),
}  # fmt: skip


@pytest.mark.parametrize(("args", "namespace", "pod", "ns_labels", "admitted"), REACH.values(),
                         ids=REACH.keys())  # fmt: skip
def test_the_bundled_redis_admits_the_operator_and_model_pods_of_named_namespaces(
    helm_bin: Path, args: list[str], namespace: str, pod: dict | str, ns_labels: dict,
    admitted: bool,
) -> None:  # fmt: skip
    """Not every pod labelled part-of: tideline anywhere (a label anyone can set): the
    operator, and the operator's model pods in the namespaces an admin named."""
    policy = render(helm_bin, "--namespace", RELEASE_NS, *BUNDLED, *args)[
        ("NetworkPolicy", "t-tideline-redis")
    ]
    for peer in (p for rule in policy["spec"]["ingress"] for p in rule["from"]):
        assert peer.get("namespaceSelector") != {}, "every namespace"
    pods = _model_pods(namespace) if pod == "model" else [pod]
    for labels in pods:
        assert _admits(policy, namespace, labels, ns_labels) is admitted, labels


# --------------------------------------------------------------------------- who the pods are
def test_the_operator_pod_runs_as_the_images_user_with_only_tmp_writable(helm_bin: Path) -> None:
    from tideline.contracts import IMAGE_GID, IMAGE_UID

    pod = render(helm_bin)[("Deployment", "t-tideline")]["spec"]["template"]["spec"]
    assert pod["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": IMAGE_UID, "runAsGroup": IMAGE_GID,
        "fsGroup": IMAGE_GID, "seccompProfile": {"type": "RuntimeDefault"},
    }  # fmt: skip
    [c] = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
    assert [m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")] == ["/tmp"]
    assert {"name": "tmp", "emptyDir": {}} in pod["volumes"]


def test_each_operator_replica_is_named_among_its_peers_by_its_pods_name(helm_bin: Path) -> None:
    """kopf names a peer ``user@host`` unless POD_ID is set, and the image's uid has no
    passwd entry: on a real kubelet the operator died at start (getpwuid: uid not found)."""
    pod = render(helm_bin)[("Deployment", "t-tideline")]["spec"]["template"]["spec"]
    [c] = pod["containers"]
    [pod_id] = [e for e in c["env"] if e["name"] == "POD_ID"]
    assert pod_id["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


# --------------------------------------------------------------------------- images by digest
SHA = "sha256:" + "0123456789abcdef" * 4


def _operator(helm_bin: Path, *args: str) -> tuple[str, dict[str, str | None]]:
    dep = render(helm_bin, *args)[("Deployment", "t-tideline")]
    [c] = dep["spec"]["template"]["spec"]["containers"]
    return c["image"], {e["name"]: e.get("value") for e in c["env"]}


DIGESTS = {
    "image.digest pins the operator and, through it, the model pods": (
        ["--set", f"image.digest={SHA}"], f"{tideline.IMAGE}@{SHA}", f"{tideline.IMAGE}@{SHA}",
    ),
    "a digest wins over a tag": (
        ["--set", "image.tag=9.9", "--set", f"image.digest={SHA}", "--set", "image.repository=reg/x"],
        f"reg/x@{SHA}", f"reg/x@{SHA}",
    ),
    "without a digest, the tag": (["--set", "image.tag=9.9"], f"{tideline.IMAGE}:9.9", f"{tideline.IMAGE}:9.9"),
    "runtimeImage by digest reaches the model pods unchanged": (
        ["--set", f"runtimeImage=reg/ml/runtime@{SHA}"],
        f"{tideline.IMAGE}:{tideline.__version__}", f"reg/ml/runtime@{SHA}",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("args", "operator", "runtime"), DIGESTS.values(), ids=DIGESTS.keys())
def test_images_by_digest(helm_bin: Path, args: list[str], operator: str, runtime: str) -> None:
    image, env = _operator(helm_bin, *args)
    assert image == operator and env["TIDELINE_RUNTIME_IMAGE"] == runtime


def test_a_digest_that_is_none_is_refused_with_a_message(helm_bin: Path) -> None:
    for digest in ("latest", "sha256:abc", f"@{SHA}"):
        out = helm(helm_bin, "template", "t", CHART, "--set", f"image.digest={digest}", check=False)
        assert out.returncode != 0 and "is no digest: write it as sha256:" in out.stderr, digest


def test_the_bundled_redis_takes_an_image_by_digest(helm_bin: Path) -> None:
    ref = f"redis:7.4-alpine@{SHA}"
    sts = render(helm_bin, *BUNDLED, "--set", f"redis.bundled.image={ref}")[
        ("StatefulSet", "t-tideline-redis")
    ]
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == ref


VAP_IMAGES = [
    f"registry.corp/ml/tideline@{SHA}", "registry.corp/ml/tideline:1", f"docker.io/evil@{SHA}",
    f"registry.corp/pinned/x@{SHA}", "registry.corp/pinned/x:1", "registry.corp/ml", "registry.corp/mlx:1",
    "registry.corp/q/ab",
]  # fmt: skip


def test_the_admission_policy_and_the_operator_agree_on_tags_and_digests(helm_bin: Path) -> None:
    """The API server's verdict (the CEL policy's regular expressions) and the operator's
    (image_allowed) on the same images, digests among them."""
    import re

    from tideline_operator.builders import image_allowed

    allowed = ["registry.corp/ml/*", "registry.corp/pinned/x@sha256:*", "registry.corp/q/a?"]
    out = render(helm_bin, "--set", f"policy.allowedImages={{{','.join(allowed)}}}",
                 "--api-versions", "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy")  # fmt: skip
    [rule] = [v for v in out[("ValidatingAdmissionPolicy", "t-tideline-policy")]["spec"]["validations"]
              if "spec.image" in v["message"]]  # fmt: skip
    # `!has(object.spec.image) || ["^...$", ...].exists(p, object.spec.image.matches(p))`
    patterns = yaml.safe_load(re.search(r"(\[.*\])\.exists", rule["expression"]).group(1))
    assert len(patterns) == len(allowed)
    api = {i: any(re.search(p, i) for p in patterns) for i in VAP_IMAGES}  # CEL matches(): RE2
    operator = {i: image_allowed(i, allowed) for i in VAP_IMAGES}
    assert api == operator
    assert api[f"registry.corp/ml/tideline@{SHA}"] and api[f"registry.corp/pinned/x@{SHA}"]
    assert not api["registry.corp/pinned/x:1"] and not api[f"docker.io/evil@{SHA}"]


@pytest.mark.parametrize(
    ("args", "monitors"),
    [([], 0), (["--set", "metrics.serviceMonitor.enabled=true"], 1)],
    ids=["no ServiceMonitor by default", "metrics.serviceMonitor.enabled: one for the operator"],
)
def test_a_service_monitor_scrapes_the_operator_s_metrics_service_when_asked(
    helm_bin: Path, args: list[str], monitors: int
) -> None:
    by = render(helm_bin, *args, "--set", "metrics.monitorLabels.release=kps")
    found = [d for (kind, _), d in by.items() if kind == "ServiceMonitor"]
    assert len(found) == monitors
    if not found:
        return
    [sm] = found
    service = by[("Service", "t-tideline-metrics")]
    # it picks the operator's metrics Service (and no other the chart makes) by its port's name
    picked = [d for (kind, _), d in by.items() if kind == "Service"
              and sm["spec"]["selector"]["matchLabels"].items() <= d["metadata"]["labels"].items()]  # fmt: skip
    assert picked == [service]
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [sm["metadata"]["namespace"]]}
    [endpoint] = sm["spec"]["endpoints"]
    assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]
    assert (endpoint["path"], endpoint["interval"]) == ("/metrics", "15s")
    assert sm["metadata"]["labels"]["release"] == "kps"  # for a serviceMonitorSelector


@pytest.mark.parametrize(
    ("args", "labels"),
    [([], {}),
     (["--set", "metrics.monitorLabels.release=kps", "--set", "metrics.monitorLabels.n=1",
       "--set", "metrics.monitorLabels.example\\.com/team=ml"],
      {"release": "kps", "n": "1", "example.com/team": "ml"}),
     (["--set-json", 'metrics.monitorLabels={"z": 12345678901, "r": 1.5}'],
      {"z": "12345678901", "r": "1.5"})],
    ids=["none by default", "each label, a number among them as a string, on the operator's "
         "monitors and on the chart's", "a values file's whole number as digits, not 1.2e+10"],
)  # fmt: skip
def test_monitor_labels_go_on_the_chart_s_service_monitor_and_to_the_operator(
    helm_bin: Path, args: list[str], labels: dict[str, str]
) -> None:
    from tideline_operator.builders import MONITOR_LABELS_ENV, OperatorConfig

    by = render(helm_bin, "--set", "metrics.serviceMonitor.enabled=true", *args)
    own = render(helm_bin, "--set", "metrics.serviceMonitor.enabled=true")
    sm = by[("ServiceMonitor", "t-tideline")]["metadata"]["labels"]
    assert sm == {**own[("ServiceMonitor", "t-tideline")]["metadata"]["labels"], **labels}
    _, env = _operator(helm_bin, *args)
    # what the operator reads is what the chart's own ServiceMonitor carries
    read = OperatorConfig.from_env({MONITOR_LABELS_ENV: env[MONITOR_LABELS_ENV] or ""})
    assert dict(read.monitor_labels) == labels


@pytest.mark.parametrize("prefix", OWN_LABEL_PREFIXES)  # (the operator refuses the same)
def test_a_monitor_label_the_operator_sets_itself_is_refused_with_a_message(
    helm_bin: Path, prefix: str
) -> None:
    key = f"{prefix}x"
    escaped = key.replace(".", "\\.")  # (--set reads a dot as a level)
    out = helm(helm_bin, "template", "t", CHART,
               "--set", f"metrics.monitorLabels.{escaped}=x", check=False)  # fmt: skip
    assert out.returncode != 0
    assert f'"{key}" is a label the operator or the chart sets itself' in out.stderr
