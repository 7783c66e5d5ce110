"""Pure manifest builders: an OnlineModel (and the operator's settings) in, Kubernetes objects out.

Each ``build_<child>(model, ...)`` returns a plain dict; the handlers adopt
it (ownerReferences) and apply it. Nothing here touches the network, so
every builder is unit tested on its own. Names, labels and the hardened pod
template are decided here, once.
"""

from __future__ import annotations

import base64
import copy
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

import tideline
from tideline.contracts import (
    AWAIT_START_ENV,
    IMAGE_GID,
    IMAGE_UID,
    WARM_START_CA_ENV,
    WARM_START_KEYS,
)
from tideline.signing import KEY_ENV as SIGNING_KEY_ENV
from tideline.spec import KAFKA_PASSWORD_ENV, KAFKA_TLS_ENV, OnlineModel, SpecError

CONFIG_PATH = "/etc/tideline"
HTTP_PORT = 8080
GRPC_PORT = 8081  # the Open Inference Protocol over gRPC (KServe's runtimes' port)
WARM_START_DIR = "/etc/tideline/warm-start"  # where the learner reads a configMapRef baseline
WARM_START_CA_DIR = "/etc/tideline/warm-start-ca"  # where a warmStart.caBundle is mounted
METRICS_PORT = 9100
MONITOR_LABELS_ENV = "TIDELINE_MONITOR_LABELS"
# the labels the operator and the chart set themselves: not for a user to give or override
OWN_LABEL_PREFIXES = ("app.kubernetes.io/", "tideline.dev/", "helm.sh/")
# Kubernetes' label syntax: a name (and a value, which may also be empty) of at most 63
# characters, an optional key prefix a DNS subdomain of at most 253
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAME_RULE = "at most 63 letters, digits, '-', '_' or '.', a letter or digit at each end"


def parse_labels(text: str, where: str) -> tuple[tuple[str, str], ...]:
    """Labels written ``key=value,key=value`` (``kubectl label``'s pairs), checked as the
    API server checks them: a :class:`SpecError` naming ``where`` and the pair otherwise.

    >>> parse_labels("release=kube-prometheus-stack, team=ml", "TIDELINE_MONITOR_LABELS")
    (('release', 'kube-prometheus-stack'), ('team', 'ml'))
    >>> parse_labels("release=kube prometheus", "TIDELINE_MONITOR_LABELS")
    Traceback (most recent call last):
    ...
    tideline.spec.SpecError: TIDELINE_MONITOR_LABELS: 'release=kube prometheus': the value is no label value (at most 63 letters, digits, '-', '_' or '.', a letter or digit at each end, or empty)
    """
    out: dict[str, str] = {}
    for pair in (p.strip() for p in text.split(",")):
        if not pair:
            continue
        key, eq, value = (part.strip() for part in pair.partition("="))
        prefix, slash, name = key.rpartition("/")
        if not eq:
            problem = "no key=value"
        elif not _LABEL_NAME.fullmatch(name) or (
            slash and not (len(prefix) <= 253 and _LABEL_PREFIX.fullmatch(prefix))
        ):
            problem = (f"the key is no label key ({_NAME_RULE}, after an optional prefix: a "
                       "DNS subdomain and '/')")  # fmt: skip
        elif value and not _LABEL_NAME.fullmatch(value):
            problem = f"the value is no label value ({_NAME_RULE}, or empty)"
        elif key.startswith(OWN_LABEL_PREFIXES):
            problem = f"the operator sets the labels {', '.join(OWN_LABEL_PREFIXES)}... itself"
        elif key in out:
            problem = "the key is given twice"
        else:
            out[key] = value
            continue
        raise SpecError(where, f"{pair!r}: {problem}")
    return tuple(out.items())


@dataclass(frozen=True)
class OperatorConfig:
    """The operator's own settings (from the Helm values, through its environment)."""

    image: str = f"{tideline.IMAGE}:{tideline.__version__}"  # what `make image` tags
    redis_url: str | None = None
    image_pull_policy: str = "IfNotPresent"
    # a removed revision's Redis keys go this long after its objects: by then its pods,
    # which may write a last checkpoint as they stop (30 s grace by default), are gone
    retired_grace: float = 120.0
    # What a platform team lets an OnlineModel choose: image patterns (``*`` matches
    # anything, see image_allowed; empty: any image) and whether spec.redis.secretRef may
    # name a Secret.
    allowed_images: tuple[str, ...] = ()
    allow_redis_secret_ref: bool = True
    interval: float = 1.0  # seconds between two turns of a model
    workers: int = 16  # turns at once (kopf's executor)
    # labels on each model's ServiceMonitor and PodMonitor: the ones a Prometheus's
    # serviceMonitorSelector and podMonitorSelector pick (kube-prometheus-stack's: release)
    monitor_labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> OperatorConfig:
        """The operator's settings as its Deployment's environment gives them (the chart's
        values): ``TIDELINE_RUNTIME_IMAGE``, ``TIDELINE_REDIS_URL``,
        ``TIDELINE_IMAGE_PULL_POLICY``, ``TIDELINE_RETIRED_GRACE_SECONDS``,
        ``TIDELINE_ALLOWED_IMAGES`` (comma-separated), ``TIDELINE_ALLOW_REDIS_SECRET_REF``,
        ``TIDELINE_OPERATOR_INTERVAL``, ``TIDELINE_OPERATOR_WORKERS`` and
        ``TIDELINE_MONITOR_LABELS`` (``key=value,...``: :func:`parse_labels`).

        >>> OperatorConfig.from_env({"TIDELINE_ALLOWED_IMAGES": "a/*, b/c"}).allowed_images
        ('a/*', 'b/c')
        """
        return cls(
            image=env.get("TIDELINE_RUNTIME_IMAGE", cls.image),
            redis_url=env.get("TIDELINE_REDIS_URL") or None,
            image_pull_policy=env.get("TIDELINE_IMAGE_PULL_POLICY", cls.image_pull_policy),
            retired_grace=_env_number(env, "TIDELINE_RETIRED_GRACE_SECONDS", cls.retired_grace, 0),
            allowed_images=tuple(
                p.strip() for p in env.get("TIDELINE_ALLOWED_IMAGES", "").split(",") if p.strip()
            ),
            allow_redis_secret_ref=env.get("TIDELINE_ALLOW_REDIS_SECRET_REF", "true") == "true",
            interval=_env_number(env, "TIDELINE_OPERATOR_INTERVAL", cls.interval, 0.05),
            workers=int(_env_number(env, "TIDELINE_OPERATOR_WORKERS", cls.workers, 1, whole=True)),
            monitor_labels=parse_labels(env.get(MONITOR_LABELS_ENV, ""), MONITOR_LABELS_ENV),
        )


def _env_number(
    env: Mapping[str, str], name: str, default: float, least: float, whole: bool = False
) -> float:
    """The number ``env[name]`` (``default`` when unset or empty), at least ``least``, or a
    :class:`SpecError` naming the variable.

    >>> _env_number({"TIDELINE_OPERATOR_WORKERS": "16x"}, "TIDELINE_OPERATOR_WORKERS", 16, 1,
    ...             whole=True)
    Traceback (most recent call last):
    ...
    tideline.spec.SpecError: TIDELINE_OPERATOR_WORKERS: '16x' is not a whole number of at least 1
    """
    raw = env.get(name, "").strip()
    if not raw:
        return default
    kind = "a whole number" if whole else "a number"
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        value = math.nan
    if not value >= least or math.isinf(value):
        raise SpecError(name, f"{raw!r} is not {kind} of at least {least:g}")
    return value


def policy_violation(model: OnlineModel, settings: OperatorConfig) -> tuple[str, str] | None:
    """(field, why) when the spec asks for what the operator's policy forbids, else None.

    >>> from tideline.spec import parse
    >>> m = parse({"apiVersion": "tideline.dev/v1alpha1", "kind": "OnlineModel",
    ...            "metadata": {"name": "m"}, "spec": {"image": "docker.io/evil:1",
    ...            "model": {"features": [{"name": "x"}]}}})
    >>> policy_violation(m, OperatorConfig(allowed_images=("registry.corp/ml/*",)))
    ('spec.image', "'docker.io/evil:1' matches none of the allowed images: registry.corp/ml/*")
    """
    image = model.spec.image
    if (
        image is not None
        and settings.allowed_images
        and not image_allowed(image, settings.allowed_images)
    ):
        allowed = ", ".join(settings.allowed_images)
        return "spec.image", f"{image!r} matches none of the allowed images: {allowed}"
    if model.spec.redis.secretName and not settings.allow_redis_secret_ref:
        return (
            "spec.redis.secretRef",
            "naming a Secret is not allowed here (policy.allowRedisSecretRef)",
        )
    return None


def image_allowed(image: str, patterns: Iterable[str]) -> bool:
    """Whether ``image`` matches one of ``patterns`` as a whole reference, tag or digest
    included, where ``*`` matches anything and every other character only itself.

    The chart's ValidatingAdmissionPolicy applies the same rule (``regexQuoteMeta``, then
    ``\\*`` to ``.*``), so the API server and the operator never disagree; fnmatch, used
    before, also read ``?`` and ``[...]`` as wildcards, which the policy does not.

    >>> digest = "registry.corp/ml/runtime@sha256:" + "0" * 64
    >>> image_allowed(digest, ["registry.corp/ml/*"])
    True
    >>> image_allowed(digest, ["registry.corp/ml/runtime:*"])  # tags only
    False
    """
    return any(re.fullmatch(re.escape(p).replace(r"\*", ".*"), image) for p in patterns)


def labels(model: OnlineModel, component: str, revision: str | None = None) -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": "tideline",
        "app.kubernetes.io/instance": model.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "tideline",
        "app.kubernetes.io/managed-by": "tideline-operator",
        "tideline.dev/model": model.name,
        "tideline.dev/component": component,
    }
    if revision:
        out["tideline.dev/revision"] = revision
    return out


def selector(model: OnlineModel, component: str, revision: str | None = None) -> dict[str, str]:
    out = {"tideline.dev/model": model.name, "tideline.dev/component": component}
    if revision:
        out["tideline.dev/revision"] = revision
    return out


def config_map_name(model: OnlineModel, revision: str) -> str:
    return f"{model.name}-{revision}"


def image_of(model: OnlineModel, settings: OperatorConfig) -> str:
    """``spec.image``, else the operator's runtime image, verbatim: a tag or a digest
    (``registry/repo@sha256:...``) reference alike, never parsed nor rewritten."""
    return model.spec.image or settings.image


def redis_secret_name(model: OnlineModel) -> str:
    return f"{model.name}-redis"


def _redis_env(model: OnlineModel) -> dict[str, Any]:
    """The Redis URL as an env var from a Secret: never a plain value in the Deployment
    (``kubectl get deploy -o yaml`` shows those), never in argv (``ps`` shows that)."""
    r = model.spec.redis
    name, key = (r.secretName, r.secretKey) if r.secretName else (redis_secret_name(model), "url")
    return {"name": "TIDELINE_REDIS_URL", "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}


def _kafka_env(model: OnlineModel) -> list[dict[str, Any]]:
    """The Kafka SASL password and TLS certificates, from the Secrets
    ``spec.source.kafka.sasl.secretRef`` and ``tls.*SecretRef`` name."""
    k = model.spec.source.kafka
    if k is None:
        return []
    refs = [(KAFKA_PASSWORD_ENV, k.sasl.password)] if k.sasl is not None else []
    if k.tls is not None:
        refs += [(KAFKA_TLS_ENV[what], ref) for what, ref in k.tls.refs().items()]
    return [{"name": env, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
            for env, ref in refs]  # fmt: skip


def build_redis_secret(model: OnlineModel, settings: OperatorConfig) -> dict[str, Any] | None:
    """The model's own Secret with its Redis URL, unless ``spec.redis.secretRef`` names one.

    The URL is ``spec.redis.url`` or the operator's (which may itself come from a
    Secret in the operator's namespace, one a pod elsewhere cannot reference).
    """
    r = model.spec.redis
    if r.secretName:
        return None
    url = r.url or settings.redis_url
    if not url:
        raise ValueError("spec.redis: no url or secretRef, and the operator has no default Redis")
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": redis_secret_name(model),
            "namespace": model.namespace,
            "labels": labels(model, "redis-credentials"),
        },
        "type": "Opaque",
        "stringData": {"url": url},
    }


def signing_secret_name(model: OnlineModel) -> str:
    return f"{model.name}-tideline-signing"


SIGNING_SECRET_KEY = "key"  # the field of the signing Secret holding the key


def _signing_env(model: OnlineModel) -> dict[str, Any]:
    """The model's signing key (:mod:`tideline.signing`), from the Secret the operator keeps:
    every pod of the model, stable and canary alike, signs and verifies with the one key."""
    ref = {"name": signing_secret_name(model), "key": SIGNING_SECRET_KEY}
    return {"name": SIGNING_KEY_ENV, "valueFrom": {"secretKeyRef": ref}}


def build_signing_secret(model: OnlineModel, key: str) -> dict[str, Any]:
    """The model's signing key Secret (``key``: text, made by the caller - this module draws
    nothing at random - from 32 random bytes as base64url).

    Made once when missing and never written again (``immutable``: not even a stray apply
    could rotate it), since every version stored was signed with it; it goes with the
    OnlineModel. The value is text, not raw bytes, because it reaches the pods as an
    environment variable, where a NUL byte cannot be.
    """
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": signing_secret_name(model),
            "namespace": model.namespace,
            "labels": labels(model, "signing-key"),
        },
        "type": "Opaque",
        "immutable": True,
        "data": {SIGNING_SECRET_KEY: base64.b64encode(key.encode()).decode()},
    }


# The pod runs as the runtime image's user and group (tideline.contracts.IMAGE_UID, the
# Dockerfile's USER), the user the image is built and tested as - not a uid of the
# builders' own (10001 until real pods came to the suite). fsGroup: mounted volumes are
# the group's.
POD_SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": IMAGE_UID,
    "runAsGroup": IMAGE_GID,
    "fsGroup": IMAGE_GID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
# Nothing is written but /tmp (an emptyDir; the image's HOME): the root filesystem is
# read-only, and the config (and a warm-start baseline) are read-only mounts.
SECURITY_CONTEXT = {
    "runAsNonRoot": True,
    "runAsUser": IMAGE_UID,
    "runAsGroup": IMAGE_GID,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


# Each component's resources when spec.pods names none: a reservation a 2-core node can
# hold for a model with 2 servers and a canary beside the operator and its Redis (a server
# asking a whole core left the second replica of examples/fraud.yaml Pending on one).
# Measured on real pods (bench/pods.py, 1,000 one-row predictions/s and 200 labelled
# rows/s): a server 0.11-0.21 cores and 72 MiB, the learner 0.01 cores and 51 MiB, the
# monitor 0.04 cores and 53 MiB (cgroup RSS); a server passes its 250m near 1,400
# predictions/s, the monitor its 100m near 3,000/s. Memory limits well above that; no
# CPU limit (no throttling of a busy server: it takes what the node has spare).
DEFAULT_RESOURCES: dict[str, dict[str, Any]] = {
    "learner": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}},
    "server": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
    "monitor": {"requests": {"cpu": "100m", "memory": "192Mi"}, "limits": {"memory": "1Gi"}},
}


def _container(
    model: OnlineModel, settings: OperatorConfig, revision: str, role: str, args: list[str], ports: list[dict[str, Any]],
    probes: dict[str, Any], resources: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    return {
        "name": role,
        "image": image_of(model, settings),
        "imagePullPolicy": settings.image_pull_policy,
        # a process that stops writes why to /dev/termination-log (a model that cannot be
        # loaded: tideline.pods.faults); one that could not, its log's tail is the message
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "args": [role, "--config", f"{CONFIG_PATH}/model.yaml", *args],  # Redis: from the env
        "env": [
            _redis_env(model),
            _signing_env(model),
            {"name": "TIDELINE_REVISION", "value": revision},
            *_kafka_env(model),
        ],  # fmt: skip
        "ports": ports,
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_PATH, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],  # fmt: skip
        "securityContext": copy.deepcopy(SECURITY_CONTEXT),
        "resources": resources,
        **probes,
    }


def _pod(
    model: OnlineModel, revision: str, component: str, container: dict[str, Any]
) -> dict[str, Any]:
    """A component's pod; ``spec.pods`` (shared, then the component's own) places it, sets
    its resources (else the container's defaults) and its image pull secrets."""
    settings = model.spec.pods.of(component)
    if settings.resources is not None:
        container["resources"] = copy.deepcopy(settings.resources)
    spec: dict[str, Any] = {
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": {"name": config_map_name(model, revision)}},
            {"name": "tmp", "emptyDir": {}},
        ],
        "securityContext": copy.deepcopy(POD_SECURITY_CONTEXT),
        "automountServiceAccountToken": False,
    }
    if settings.nodeSelector is not None:
        spec["nodeSelector"] = dict(settings.nodeSelector)
    if settings.tolerations is not None:
        spec["tolerations"] = copy.deepcopy(list(settings.tolerations))
    if settings.affinity is not None:
        spec["affinity"] = copy.deepcopy(settings.affinity)
    if settings.imagePullSecrets is not None:
        spec["imagePullSecrets"] = [{"name": n} for n in settings.imagePullSecrets]
    # for a Prometheus without the Prometheus Operator (its usual scrape config reads these)
    port = container["ports"][0]["containerPort"]
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
              "prometheus.io/path": "/metrics"}  # fmt: skip
    return {
        "metadata": {"labels": labels(model, component, revision), "annotations": scrape},
        "spec": spec,
    }


def _deployment(name: str, model: OnlineModel, component: str, revision: str | None, replicas: int,
                pod: dict[str, Any], strategy: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": model.namespace,
            "labels": labels(model, component, revision),
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector(model, component, revision)},
            "strategy": strategy,
            "template": pod,
        },
    }


def _turn_probes() -> dict[str, Any]:
    """The learner's and the monitor's probes: ``GET /healthz`` on the metrics port, which
    answers 503 once the process's last successful turn is more than 60 s old
    (``tideline.pods.liveness.MAX_AGE``), not a TCP check (issue 30: a process whose every
    turn fails holds its port open, and a TCP probe calls it alive for ever).

    * startup: up to 60 s (30 x 2 s) to open the port (imports, the config, the first
      connection); liveness and readiness begin after it, with no fixed initial delay.
    * liveness: three failures 10 s apart. The first 503 comes within 10 s of the turn
      going 60 s stale, so a process is restarted 80-90 s after its last good turn: a
      Redis restart, a failover or a long block of learning (tens of seconds) is ridden
      out; one that never recovers is not alive for ever. A learner waiting for the
      operator's StartWord is alive and counts each read of the control hash as a good
      turn. A 5 s timeout: a learner busy in a large update answers late, not never.
    * readiness: the same answer, two failures 5 s apart. Nothing routes traffic to these
      pods; their readiness is the OnlineModel's ``Ready`` condition (phase Progressing
      when not), so a process gone stale stops counting as ready within ~10 s instead of
      being called Healthy until the restart.
    """
    healthz = {"httpGet": {"path": "/healthz", "port": "metrics"}, "timeoutSeconds": 5}
    return {
        "startupProbe": {**healthz, "periodSeconds": 2, "failureThreshold": 30},
        "livenessProbe": {**healthz, "periodSeconds": 10, "failureThreshold": 3},
        "readinessProbe": {**healthz, "periodSeconds": 5, "failureThreshold": 2},
    }


# --------------------------------------------------------------------------- builders
def build_config_map(model: OnlineModel, manifest: dict[str, Any], revision: str) -> dict[str, Any]:
    """The manifest every process of one revision reads (``--config``), status stripped."""
    doc = {k: v for k, v in manifest.items() if k in ("apiVersion", "kind", "spec")}
    doc["metadata"] = {"name": model.name, "namespace": model.namespace}
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(model, revision),
            "namespace": model.namespace,
            "labels": labels(model, "config", revision),
        },  # fmt: skip
        "data": {"model.yaml": yaml.safe_dump(doc, sort_keys=False)},
    }


def build_learner(model: OnlineModel, settings: OperatorConfig, revision: str,
                  warm_start_from: str | None = None) -> dict[str, Any]:  # fmt: skip
    """One learner per revision: 1 replica, Recreate (two learners must never share a group)."""
    args = ["--port", str(METRICS_PORT), "--revision", revision]
    if warm_start_from:
        args += ["--warm-start-revision", warm_start_from]
    container = _container(
        model, settings, revision, "learner", args,
        [{"name": "metrics", "containerPort": METRICS_PORT}], _turn_probes(),
        copy.deepcopy(DEFAULT_RESOURCES["learner"]),
    )  # fmt: skip
    # With nothing stored, wait for the operator's StartWord before publishing a v0: a
    # learner restarted after a store reset must not serve an untrained v0 over a model
    # that had versions (issue 30). A learner run by hand starts at once.
    container["env"].append({"name": AWAIT_START_ENV, "value": "1"})
    pod = _pod(model, revision, "learner", container)
    ws = model.spec.model.warmStart
    if ws is not None and ws.configMapName:
        # the baseline snapshot, read from /etc/tideline/warm-start/<key> (the only key mounted)
        pod["spec"]["volumes"].append({"name": "warm-start", "configMap": {
            "name": ws.configMapName, "items": [{"key": ws.key, "path": ws.key}]}})  # fmt: skip
        container["volumeMounts"].append(
            {"name": "warm-start", "mountPath": WARM_START_DIR, "readOnly": True}
        )
    if ws is not None and ws.secretName:
        # an s3:// or gs:// storageUri's keys, as env from the Secret (KServe's key names):
        # never in the spec, the Deployment or a log
        container["env"] += [
            {"name": key, "valueFrom": {"secretKeyRef": {"name": ws.secretName, "key": key}}}
            for key in WARM_START_KEYS
        ]
    if ws is not None and ws.caConfigMapName:
        pod["spec"]["volumes"].append({"name": "warm-start-ca", "configMap": {
            "name": ws.caConfigMapName, "items": [{"key": ws.caKey, "path": "ca.crt"}]}})  # fmt: skip
        container["volumeMounts"].append(
            {"name": "warm-start-ca", "mountPath": WARM_START_CA_DIR, "readOnly": True}
        )
        container["env"].append({"name": WARM_START_CA_ENV, "value": f"{WARM_START_CA_DIR}/ca.crt"})
    return _deployment(f"{model.name}-learner-{revision}", model, "learner", revision, 1,
                       pod, {"type": "Recreate"})  # fmt: skip


def _feedback_auth_env(model: OnlineModel) -> list[dict[str, Any]]:
    auth = model.spec.serving.feedbackAuth
    if auth is None:
        return []
    return [{"name": "TIDELINE_FEEDBACK_TOKEN",
             "valueFrom": {"secretKeyRef": {"name": auth.name, "key": auth.key}}}]  # fmt: skip


def build_server(
    model: OnlineModel, settings: OperatorConfig, revision: str, replicas: int | None = None
) -> dict[str, Any]:
    http = {"port": "http"}
    container = _container(
        model, settings, revision, "server", ["--port", str(HTTP_PORT), "--grpc-port", str(GRPC_PORT)],
        [{"name": "http", "containerPort": HTTP_PORT}, {"name": "grpc", "containerPort": GRPC_PORT}],
        {"readinessProbe": {"httpGet": {**http, "path": "/v2/health/ready"}, "periodSeconds": 2},
         "livenessProbe": {"httpGet": {**http, "path": "/v2/health/live"}, "periodSeconds": 10,
                           "initialDelaySeconds": 5}},
        copy.deepcopy(DEFAULT_RESOURCES["server"]),
    )  # fmt: skip
    container["env"] += _feedback_auth_env(model)
    labels_port = model.spec.serving.labelsPort
    if labels_port is not None:  # feedback and :learn answer there only
        container["args"] += ["--write-port", str(labels_port)]
        container["ports"].append({"name": "labels", "containerPort": labels_port})
    n = model.spec.serving.replicas if replicas is None else replicas
    return _deployment(
        f"{model.name}-server-{revision}", model, "server", revision, n, _pod(model, revision, "server", container),
        {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
    )  # fmt: skip


def build_service(model: OnlineModel, revision: str, canary: bool = False) -> dict[str, Any]:
    """``<name>`` always selects the stable revision's servers; ``<name>-canary`` a canary's."""
    name = f"{model.name}-canary" if canary else model.name
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": model.namespace,
            "labels": labels(model, "server", revision),
        },
        "spec": {
            "selector": selector(model, "server", revision),
            # appProtocol: cleartext HTTP/2, for gateways and meshes that route by it
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": "http"},
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "appProtocol": "kubernetes.io/h2c",
                },
            ]
            + (
                [{"name": "labels", "port": model.spec.serving.labelsPort, "targetPort": "labels"}]
                if model.spec.serving.labelsPort is not None
                else []
            ),
        },
    }


def build_network_policy(model: OnlineModel) -> dict[str, Any] | None:
    """Who may reach the model's servers (``spec.serving.networkPolicy``), port by port.

    Predictions (and ``/metrics``) on the HTTP and gRPC ports from ``predictFrom``; labels
    on ``labelsPort`` from ``labelsFrom``; a list not given admits anyone.
    """
    policy = model.spec.serving.networkPolicy
    if policy is None:
        return None

    def rule(ports: list[int], peers: tuple[dict[str, Any], ...] | None) -> dict[str, Any]:
        out: dict[str, Any] = {"ports": [{"port": port, "protocol": "TCP"} for port in ports]}
        if peers is not None:
            out["from"] = [copy.deepcopy(p) for p in peers]
        return out

    ingress = [rule([HTTP_PORT, GRPC_PORT], policy.predictFrom)]
    if model.spec.serving.labelsPort is not None:
        ingress.append(rule([model.spec.serving.labelsPort], policy.labelsFrom))
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{model.name}-server", "namespace": model.namespace,
                     "labels": labels(model, "server")},
        "spec": {"podSelector": {"matchLabels": selector(model, "server")},
                 "policyTypes": ["Ingress"], "ingress": ingress},
    }  # fmt: skip


def build_monitor(model: OnlineModel, settings: OperatorConfig, revision: str) -> dict[str, Any]:
    container = _container(
        model, settings, revision, "monitor", ["--port", str(METRICS_PORT)],
        [{"name": "metrics", "containerPort": METRICS_PORT}], _turn_probes(),
        copy.deepcopy(DEFAULT_RESOURCES["monitor"]),
    )  # fmt: skip
    dep = _deployment(f"{model.name}-monitor", model, "monitor", None, 1,
                      _pod(model, revision, "monitor", container), {"type": "Recreate"})  # fmt: skip
    return dep


def build_pdb(model: OnlineModel) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": f"{model.name}-server",
            "namespace": model.namespace,
            "labels": labels(model, "server"),
        },  # fmt: skip
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(model, "server")}},
    }


def build_hpa(model: OnlineModel, revision: str) -> dict[str, Any] | None:
    a = model.spec.serving.autoscaling
    if a is None:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": f"{model.name}-server",
            "namespace": model.namespace,
            "labels": labels(model, "server", revision),
        },  # fmt: skip
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": f"{model.name}-server-{revision}",
            },
            "minReplicas": a.minReplicas,
            "maxReplicas": a.maxReplicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": a.targetCPUUtilizationPercentage,
                        },
                    },
                }
            ],  # fmt: skip
        },
    }


def build_pod_monitor(model: OnlineModel, settings: OperatorConfig) -> dict[str, Any]:
    """Prometheus Operator scraping of the learners' and the monitor's ``/metrics`` (the
    accuracy, drift and learner series the dashboard reads), when its CRD exists."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": {
            "name": model.name,
            "namespace": model.namespace,
            "labels": {**labels(model, "metrics"), **dict(settings.monitor_labels)},
        },
        "spec": {
            "selector": {
                "matchLabels": {"tideline.dev/model": model.name},
                "matchExpressions": [
                    {
                        "key": "tideline.dev/component",
                        "operator": "In",
                        "values": ["learner", "monitor"],
                    }
                ],  # fmt: skip
            },
            "podMetricsEndpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
        },
    }


def build_service_monitor(model: OnlineModel, settings: OperatorConfig) -> dict[str, Any]:
    """Prometheus Operator scraping of the servers' ``/metrics`` (only when its CRD exists)."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {
            "name": model.name,
            "namespace": model.namespace,
            "labels": {**labels(model, "server"), **dict(settings.monitor_labels)},
        },
        "spec": {
            "selector": {"matchLabels": selector(model, "server")},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
        },
    }
