"""kopf handlers, kept thin: configuration, one index, one timer per OnlineModel, and
the stop of the webhook sender (:mod:`tideline_operator.notify`) at shutdown.

The timer does a whole turn (:meth:`Reconciler.turn`) and hands kopf the
status patch; there are no create/update handlers, so kopf keeps no
last-handled-configuration annotation on the resource and writes nothing
besides its finalizer (timers need it to stop cleanly on deletion) and the
status. A new or changed OnlineModel is picked up on the timer's first run
(at once) or next tick (``TIDELINE_OPERATOR_INTERVAL``, 1 s by default).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from typing import Any

import kopf
from prometheus_client import REGISTRY, Gauge

from tideline.spec import GROUP, PLURAL, VERSION
from tideline_operator.builders import OperatorConfig
from tideline_operator.crd import outdated
from tideline_operator.kube import Kube
from tideline_operator.metrics import ModelConditions
from tideline_operator.notify import Notifier
from tideline_operator.reconcile import (
    ChildState,
    ModelMemory,
    Reconciler,
    current_status,
    status_patch,
)

CRD_OUTDATED = Gauge(
    "tideline_operator_crd_outdated",
    "1 when the cluster's OnlineModel CRD is not this release's (-1: it could not be read)",
)
log = logging.getLogger("tideline.operator")
# the operator's one configuration, read once (kopf fixes a timer's interval at import)
CONFIG = OperatorConfig.from_env(os.environ)
# each model's conditions as its last turn left them; gone a minute after its turns stop
MODEL_CONDITIONS = ModelConditions(stale_after=max(60.0, 10 * CONFIG.interval), registry=REGISTRY)
MANAGED: dict[str, Any] = {
    "app.kubernetes.io/managed-by": "tideline-operator",
    "tideline.dev/model": kopf.PRESENT,
}


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = "tideline.dev/finalizer"
    # kopf's own log lines become Events only when they are warnings; the
    # operator posts its own Events (Deployed, CanaryStarted, RolledBack, ...).
    settings.posting.level = logging.WARNING
    # "Timer 'turn' succeeded", per model per tick, is noise; failures still log.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.execution.max_workers = CONFIG.workers
    if "reconciler" not in memo:
        kube = Kube.from_environment(CONFIG.workers)
        notifier = Notifier()
        notifier.start()
        memo["reconciler"] = Reconciler(kube, CONFIG, notifier=notifier)
        _check_crd(kube)


@kopf.on.cleanup()
def stop_notifications(memo: kopf.Memo, **_: Any) -> None:
    """Send the queued webhooks for a few seconds more, then stop their sender."""
    reconciler: Reconciler | None = memo.get("reconciler")
    if reconciler is not None:
        reconciler.notifier.stop(timeout=5.0)


def _check_crd(kube: Kube) -> None:
    """Say so, loudly, when the cluster's OnlineModel CRD is not this release's (Helm installs
    ``crds/`` once and never upgrades it): fields this operator writes would be refused."""
    try:
        why = outdated(kube.crd_annotations(f"{PLURAL}.{GROUP}"))
    except Exception as e:  # noqa: BLE001 - a check, never a reason not to start
        log.warning("could not read the OnlineModel CRD to check its version: %s", e)
        CRD_OUTDATED.set(-1)
        return
    CRD_OUTDATED.set(1 if why else 0)
    if why:
        log.warning("%s", why)


@kopf.index("apps", "v1", "deployments", labels=MANAGED)
def deployments(
    *,
    namespace: str | None,
    name: str,
    labels: Mapping[str, str],
    spec: kopf.Spec,
    status: kopf.Status,
    **_: Any,
) -> dict[tuple[str | None, str], ChildState]:
    return {
        (namespace, labels["tideline.dev/model"]): ChildState(
            name=name,
            component=labels.get("tideline.dev/component", ""),
            revision=labels.get("tideline.dev/revision"),
            replicas=int(spec.get("replicas", 1) or 0),
            ready=int(status.get("readyReplicas", 0) or 0),
        )
    }


@kopf.timer(GROUP, VERSION, PLURAL, interval=CONFIG.interval, initial_delay=0)
def turn(
    *,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: Any,
    patch: kopf.Patch,
    **kwargs: Any,
) -> None:
    index: kopf.Index[tuple[str | None, str], ChildState] = kwargs["deployments"]
    reconciler: Reconciler = memo["reconciler"]
    mem = memo.setdefault("model", ModelMemory())
    before = current_status(body, mem)

    def event(kind: str, reason: str, message: str) -> None:
        kopf.event(body, type=kind, reason=reason, message=message)

    children = list(index.get((namespace, name), []))
    new = reconciler.turn(copy.deepcopy(dict(body)), mem, children, event)
    if new is not None:
        patch.status.update(status_patch(before, new))
    MODEL_CONDITIONS.record(namespace or "", name, new if new is not None else before)
