"""The few Kubernetes API calls the operator makes, on the official client.

Children are written with server-side apply (one field manager, conflicts
forced: the operator owns what it builds), so applying an unchanged object
is a no-op at the API server: no new resourceVersion, no rollout. The one
object made once and never written again - a model's signing key Secret - is
created (``POST``: an object of that name already there is left as it is). The kinds
the operator writes are listed in :data:`KINDS`; one generic request path
serves them all instead of a typed call per kind.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("tideline.operator")

FIELD_MANAGER = "tideline-operator"


@dataclass(frozen=True)
class Kind:
    prefix: str  # /api/v1 or /apis/<group>/<version>
    plural: str


KINDS: dict[tuple[str, str], Kind] = {
    ("v1", "ConfigMap"): Kind("/api/v1", "configmaps"),
    ("v1", "Service"): Kind("/api/v1", "services"),
    ("v1", "Secret"): Kind("/api/v1", "secrets"),
    ("apps/v1", "Deployment"): Kind("/apis/apps/v1", "deployments"),
    ("policy/v1", "PodDisruptionBudget"): Kind("/apis/policy/v1", "poddisruptionbudgets"),
    ("networking.k8s.io/v1", "NetworkPolicy"): Kind(
        "/apis/networking.k8s.io/v1", "networkpolicies"
    ),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): Kind(
        "/apis/autoscaling/v2", "horizontalpodautoscalers"
    ),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): Kind(
        "/apis/monitoring.coreos.com/v1", "servicemonitors"
    ),
    ("monitoring.coreos.com/v1", "PodMonitor"): Kind(
        "/apis/monitoring.coreos.com/v1", "podmonitors"
    ),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): Kind(
        "/apis/gateway.networking.k8s.io/v1", "httproutes"
    ),
}

# What a revision's children are, for removing a revision; owned objects go
# with the OnlineModel itself through garbage collection.
REVISION_KINDS = [("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "ConfigMap")]


def load_credentials() -> None:
    """The pod's ServiceAccount in a cluster, else the kubeconfig (``ConfigException`` or
    ``OSError`` when there is neither)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


class KubeAPI(Protocol):
    """What the reconciler asks of a Kubernetes API: :class:`Kube` against a real one, the
    local demo's process-backed stand-in (:mod:`tideline.demo.cluster`), a test's dict."""

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]: ...

    def create(self, obj: dict[str, Any]) -> dict[str, Any] | None: ...

    def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None: ...

    def list(
        self, api_version: str, kind: str, namespace: str, selector: str
    ) -> list[dict[str, Any]]: ...

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool: ...

    def merge_patch(self, obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]: ...

    def has_api(self, group_version: str, plural: str) -> bool: ...


class Kube:
    """A thin, synchronous client: path building, server-side apply, JSON in and out."""

    def __init__(self, api: client.ApiClient, timeout: float = 10.0) -> None:
        self.api = api
        self.timeout = timeout

    @classmethod
    def from_environment(cls, connections: int = 16) -> Kube:
        """In cluster with the pod's ServiceAccount, else from the kubeconfig."""
        load_credentials()
        conf = client.Configuration.get_default_copy()
        conf.connection_pool_maxsize = connections  # one per worker thread
        return cls(client.ApiClient(conf))

    # -- plumbing ---------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        m, url, headers, data, post = self.api.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        resp = self.api.call_api(m, url, headers, data, post, _request_timeout=self.timeout)
        resp.read()
        if resp.status >= 400:
            raise ApiException(http_resp=resp)
        return json.loads(resp.data) if resp.data else {}

    @staticmethod
    def path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
        k = KINDS[(api_version, kind)]
        base = f"{k.prefix}/namespaces/{namespace}/{k.plural}"
        return f"{base}/{name}" if name else base

    # -- verbs ------------------------------------------------------------------------
    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        md = obj["metadata"]
        return self.request(
            "PATCH",
            self.path(obj["apiVersion"], obj["kind"], md["namespace"], md["name"]),
            body=obj,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )

    def create(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """Create ``obj``; None when an object of its name exists already (409), which is left
        as it is - never overwritten, unlike :meth:`apply`."""
        md = obj["metadata"]
        try:
            return self.request(
                "POST",
                self.path(obj["apiVersion"], obj["kind"], md["namespace"]),
                body=obj,
                query=[("fieldManager", FIELD_MANAGER)],
            )
        except ApiException as e:
            if e.status == 409:
                return None
            raise

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", self.path(api_version, kind, namespace, name))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def list(
        self, api_version: str, kind: str, namespace: str, selector: str
    ) -> list[dict[str, Any]]:
        out = self.request(
            "GET", self.path(api_version, kind, namespace), query=[("labelSelector", selector)]
        )
        return list(out.get("items") or [])

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        try:
            self.request(
                "DELETE",
                self.path(api_version, kind, namespace, name),
                body={"propagationPolicy": "Background"},
            )
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    def merge_patch(self, obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
        md = obj["metadata"]
        return self.request(
            "PATCH",
            self.path(obj["apiVersion"], obj["kind"], md["namespace"], md["name"]),
            body=patch,
            content_type="application/merge-patch+json",
        )

    def crd_annotations(self, name: str) -> dict[str, str] | None:
        """A CRD's annotations (None when it is not installed); through ``list``, the verb
        the operator's role has on CRDs."""
        out = self.request(
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            query=[("fieldSelector", f"metadata.name={name}")],
        )
        items = out.get("items") or []
        return dict(items[0]["metadata"].get("annotations") or {}) if items else None

    def has_api(self, group_version: str, plural: str) -> bool:
        """Whether the cluster serves a resource (ServiceMonitor, HTTPRoute: only when installed)."""
        try:
            out = self.request("GET", f"/apis/{group_version}")
        except ApiException:
            return False
        return any(r.get("name") == plural for r in out.get("resources") or [])
