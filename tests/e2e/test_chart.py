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
    assert {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "tideline"}},
    } in policy["ingress"][0]["from"]
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
