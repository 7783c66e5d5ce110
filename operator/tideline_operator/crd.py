"""The OnlineModel CustomResourceDefinition, written out to ``crds/onlinemodel.yaml``.

Generated from the resource's field table, the dataclasses of
:mod:`tideline.spec` (each field's default, kind, bounds, choices and
description; see :class:`tideline.spec.Entry`), which the runtime's parser
reads too, so the CRD, the parser and the dataclasses cannot drift apart. The
fields whose manifest shape is not their dataclass's (the lists
``spec.model.features``, ``spec.rollout.steps`` and ``spec.notify``, ``spec.serving.networkPolicy``,
``spec.pods``, the ``secretRef`` wrappers, ...) are written here by hand, with
the table's groups and leaves inside them (:func:`_table`, :func:`_leaf`);
tests walk the schema and check the parser agrees with it field by field. Regenerate with
``python -m tideline_operator.crd > crds/onlinemodel.yaml`` (and copy it to the
chart's ``crds/``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from typing import Any

import yaml

from tideline.spec import (
    COMPONENTS,
    DURATION_PATTERN,
    EXTERNAL_PARAMS,
    EXTERNAL_REF,
    GROUP,
    KIND,
    MAX_FEATURES,
    MAX_NOTIFY,
    MAX_PULL_SECRETS,
    MAX_STEPS,
    MAX_TOLERATIONS,
    PARAM_TYPES,
    PLURAL,
    QUANTITY_PATTERN,
    TABLE,
    TAINT_EFFECTS,
    TOLERATION_OPERATORS,
    VERSION,
    Entry,
    Feature,
    KafkaSasl,
    KafkaSource,
    KafkaTls,
    LearningSpec,
    ModelSpec,
    Notify,
    PasswordRef,
    RedisSpec,
    RolloutSpec,
    ServingSpec,
    Spec,
    Step,
    TokenRef,
    UrlRef,
    VWParams,
    WarmStart,
    entry,
)

DURATION = DURATION_PATTERN


def _obj(description: str, properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "description": description, "properties": properties, **extra}


# The schemas of fields the table leaves to the CRD (their manifest shape is not their
# dataclass's), by dataclass; None: no field of the manifest (Spec.deprecated is the parser's).
Own = dict[type, dict[str, dict[str, Any] | None]]


def _table(cls: type, description: str, own: Own, **extra: Any) -> dict[str, Any]:
    """The object of a dataclass of the field table: each field's schema from its entry, or
    from ``own`` (which may add fields the dataclass has not: a deprecated name)."""
    mine = own.get(cls, {})
    props: dict[str, Any] = {}
    required = []
    for f in dataclasses.fields(cls):
        e: Entry | None = f.metadata.get(TABLE)
        if e is not None and e.required:
            required.append(f.name)
        if f.name in mine:
            if (schema := mine[f.name]) is not None:
                props[f.name] = schema
        elif e is None:
            raise TypeError(f"{cls.__name__}.{f.name} is neither in the field table nor given")
        else:
            props[f.name] = _field(f, e, own)
    names = {f.name for f in dataclasses.fields(cls)}
    props |= {k: v for k, v in mine.items() if k not in names and v is not None}
    if required:
        extra["required"] = required + extra.get("required", [])
    return _obj(description, props, **extra)


def _leaf(cls: type, name: str) -> dict[str, Any]:
    """The schema of the field ``name`` of ``cls``, for a group whose shape is written here
    (``spec.redis.secretRef.key`` is ``RedisSpec.secretKey``)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return _field(f, f.metadata[TABLE], {})


def _field(f: dataclasses.Field[Any], e: Entry, own: Own) -> dict[str, Any]:
    default: Any = f.default  # (MISSING for a group that is always there)
    match e.kind:
        case "object":
            assert e.group is not None
            out = _table(e.group, e.description, own)
            if default is dataclasses.MISSING:  # every parsed spec has it: the API server
                out["default"] = {}  # fills its fields too
            return out
        case "duration":
            assert e.text is not None
            return _duration(e.description, e.text)
        case "enum":
            return _enum(e.description, e.choices, default)
        case "any":
            out = {"x-kubernetes-preserve-unknown-fields": True, "description": e.description}
            if default is not None:
                out["default"] = default
            return out
        case "boolean":
            return {"type": "boolean", "description": e.description, "default": default}
        case "map":
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                    "description": e.description}  # fmt: skip
        case "names":  # (unique: the API server refuses a repeat)
            items: dict[str, Any] = {"type": "string", "minLength": 1}
            if e.choices:
                items["enum"] = list(e.choices)
            return {"type": "array", "minItems": e.lo, "maxItems": e.hi,
                    "x-kubernetes-list-type": "set", "items": items,
                    "description": e.description}  # fmt: skip
        case "string":
            out = {"type": "string", "description": e.description}
            if e.form is not None:
                out["pattern"] = e.form.pattern
            if e.crd_default and not e.required and default is not None:
                out["default"] = default
            if e.lo is not None:
                out["minLength"] = e.lo
            if e.hi is not None:
                out["maxLength"] = e.hi
            return out
        case "integer" | "number":
            if e.crd_default:
                return _num(e.description, default, e.lo, e.hi, integer=e.kind == "integer")
            description = f"{e.description} (default {default})"
            return _num(description, None, e.lo, e.hi, integer=e.kind == "integer")


def _num(description: str, default: float | None = None, minimum: float | None = None,
         maximum: float | None = None, integer: bool = False) -> dict[str, Any]:  # fmt: skip
    out: dict[str, Any] = {"type": "integer" if integer else "number", "description": description}
    if default is not None:
        out["default"] = default
    if minimum is not None:
        out["minimum"] = minimum
    if maximum is not None:
        out["maximum"] = maximum
    return out


def _enum(description: str, values: tuple[str, ...], default: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "string", "description": description, "enum": list(values)}
    if default is not None:
        out["default"] = default
    return out


def _duration(description: str, default: str) -> dict[str, Any]:
    # text like 500ms, or whole seconds (the parser takes both)
    return {"x-kubernetes-int-or-string": True, "pattern": DURATION, "default": default,
            "description": f"{description} (like 500ms, 10s, 30m, 1h)"}  # fmt: skip


def _params() -> dict[str, Any]:
    props: dict[str, Any] = {}
    for algorithm, cls in PARAM_TYPES.items():
        for f in dataclasses.fields(cls):
            e: Entry = f.metadata[TABLE]
            if f.name in props:
                props[f.name]["description"] += f", {algorithm}"
            elif e.kind == "enum":
                props[f.name] = _enum(e.description, e.choices)
            else:
                props[f.name] = _num(
                    f"hyperparameter of {algorithm}", None, e.lo, e.hi, integer=e.kind == "integer"
                )
    return _obj(
        "Hyperparameters of the algorithm (defaults depend on it: docs/resource.md, "
        '"Algorithms and their params")',
        props,
    )


def _external(algorithm: str) -> dict[str, Any]:
    """``spec.model.custom`` / ``spec.model.river``: what the model's pods load, and its
    keyword arguments (any JSON: the parser checks their names)."""
    cls, ref = EXTERNAL_PARAMS[algorithm], EXTERNAL_REF[algorithm]
    return _obj(
        f"algorithm: {algorithm}: the model, loaded from the pods' image",
        {ref: _leaf(cls, "ref"), "params": _leaf(cls, "params")},
        required=[ref],
    )


def _vw() -> dict[str, Any]:
    """``spec.model.vw``: Vowpal Wabbit's own arguments (the parser refuses those tideline owns,
    :data:`tideline.spec.VW_REFUSED`; VW itself, in the pods, the ones it does not know)."""
    return _obj(
        "algorithm: vw: Vowpal Wabbit, from the pods' image (tideline[vw])",
        {"args": _leaf(VWParams, "args")},
    )


def _pod_schema(component: str | None) -> dict[str, Any]:
    """``spec.pods`` (shared: no resources) or ``spec.pods.<component>``: Kubernetes' shapes."""
    quantity = {"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN}
    amounts = {"type": "object", "additionalProperties": quantity}
    props: dict[str, Any] = {
        "nodeSelector": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Node labels the pods must run on",
        },  # fmt: skip
        "tolerations": {
            "type": "array",
            "maxItems": MAX_TOLERATIONS,
            "description": "Taints the pods tolerate",
            "items": {
                "type": "object",
                "properties": {
                    "key": {"type": "string"},
                    "operator": {"type": "string", "enum": list(TOLERATION_OPERATORS)},
                    "value": {"type": "string"},
                    "effect": {"type": "string", "enum": list(TAINT_EFFECTS)},
                    "tolerationSeconds": {"type": "integer", "format": "int64"},
                },
            },
        },
        "affinity": {
            "type": "object",
            "description": "Node and pod (anti-)affinity, as in a pod spec",
            "properties": {
                k: {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                for k in ("nodeAffinity", "podAffinity", "podAntiAffinity")
            },
        },
        "imagePullSecrets": {
            "type": "array",
            "maxItems": MAX_PULL_SECRETS,
            "description": "Secrets to pull the runtime image with (a private registry)",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string", "minLength": 1}},
            },  # fmt: skip
        },
    }
    if component is None:
        return {
            "type": "object",
            "description": "Where the model's pods run: settings for every component, and per "
            "component (learner, server, monitor) over them",
            "properties": {**props, **{c: _pod_schema(c) for c in COMPONENTS}},
        }
    props["resources"] = {
        "type": "object",
        "description": f"The {component}'s requests and limits (replace the defaults)",
        "properties": {"requests": amounts, "limits": amounts},
    }
    return {"type": "object", "description": f"The {component}'s pods", "properties": props}


def spec_schema() -> dict[str, Any]:
    """``spec``: the field table's groups (:class:`tideline.spec.Spec`), with the fields
    whose shape is written here."""
    own: Own = {
        Spec: {
            "model": _model_schema(),
            "redis": _obj(
                "Where the streams and versions live",
                {
                    "url": _leaf(RedisSpec, "url"),
                    "secretRef": _obj(
                        "A Secret holding the URL",
                        {
                            "name": _leaf(RedisSpec, "secretName"),
                            "key": _leaf(RedisSpec, "secretKey"),
                        },
                    ),
                },
            ),  # fmt: skip
            "pods": _pod_schema(None),
            "source": _source_schema(),
            "notify": _notify_schema(),
            "deprecated": None,
        },
        LearningSpec: {
            "checkpointEvery": _num(
                "Deprecated: publishEvery's old name (read, reported in the status)",
                None,
                entry(LearningSpec, "publishEvery").lo,
                None,
                integer=True,
            ),  # fmt: skip
        },
        ServingSpec: {
            "feedbackAuth": _obj(
                "A token the write routes (feedback, :learn) require as "
                "Authorization: Bearer <token>",
                {"secretRef": _table(TokenRef, "The Secret holding the token", {})},
            ),
            "networkPolicy": _obj(
                "Who may reach the servers: NetworkPolicy peers per port "
                "(a list not given admits anyone)",
                {
                    "predictFrom": {
                        "type": "array",
                        "description": "Peers that may predict",
                        "items": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        },
                    },
                    "labelsFrom": {
                        "type": "array",
                        "description": "Peers that may send labels (labelsPort)",
                        "items": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        },
                    },
                },
            ),
        },
        RolloutSpec: {
            "steps": {
                "type": "array",
                "maxItems": MAX_STEPS,
                "description": "setWeight, pause (a duration, or {} for a manual promote), "
                "analysis, backtest",
                "items": _table(
                    Step,
                    "One step: exactly one of setWeight, pause, analysis, backtest",
                    {
                        Step: {
                            "analysis": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                                "description": "Wait for the analysis to pass",
                            },
                            "backtest": {
                                "type": "object",
                                "description": "The candidate against stable on the last "
                                "window of labelled history (spec.learning.history), before "
                                "it serves anyone",
                                "properties": {
                                    "window": {
                                        "type": "string",
                                        "description": "How much history (default: the "
                                        "history's, up to 1h)",
                                    }
                                },
                            },
                        }
                    },  # fmt: skip
                    **{
                        "x-kubernetes-validations": [
                            {
                                # (pause, a value of no single type, is out of CEL's
                                # sight: the parser refuses a step with it and another)
                                "rule": "!(has(self.setWeight) && has(self.analysis))",
                                "message": "a step has exactly one of setWeight, pause, analysis",
                            },
                        ]
                    },
                ),
            },
        },
    }
    return _table(Spec, "What to learn and serve, and how to roll it out", own, required=["model"])


def _notify_schema() -> dict[str, Any]:
    """``spec.notify``: webhooks, each with its URL in a Secret (never inline)."""
    receiver = _table(
        Notify,
        "A webhook the operator posts its Events to",
        {Notify: {"url": _obj("Where to post: a Secret holding the URL (never inline: a "
                              "webhook's URL carries its token)",
                              {"secretRef": _table(UrlRef, "The Secret holding the URL", {})},
                              required=["secretRef"])}},
        required=["url"],
    )  # fmt: skip
    return {
        "type": "array",
        "maxItems": MAX_NOTIFY,
        "description": "Webhooks on the operator's Events (rollback, unpin, promotion, abort, "
        "concept drift, ...): JSON or Slack messages; no revision changes",
        "items": receiver,
    }


def _model_schema() -> dict[str, Any]:
    feature = _table(Feature, "One feature of the typed schema", {})
    feature["x-kubernetes-validations"] = [
        {
            "rule": "!has(self.buckets) || self.type == 'categorical'",
            "message": "buckets: only a categorical feature has buckets",
            "fieldPath": ".buckets",
        },
    ]
    return _obj(
        "The model: task, algorithm, features",
        {
            "task": _leaf(ModelSpec, "task"),
            "algorithm": _leaf(ModelSpec, "algorithm"),
            "features": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_FEATURES,
                # names are unique: the API server refuses a second one
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
                "items": feature,
                "description": "The typed feature schema, in order",
            },  # fmt: skip
            "classes": _leaf(ModelSpec, "classes"),
            "metric": _leaf(ModelSpec, "metric"),
            "params": _params(),
            **{algorithm: _external(algorithm) for algorithm in EXTERNAL_REF},
            "vw": _vw(),
            "warmStart": _obj(
                "A batch-trained baseline snapshot to start from",
                {
                    "configMapRef": _obj(
                        "ConfigMap holding the snapshot",
                        {"name": _leaf(WarmStart, "configMapName")},
                    ),
                    "key": _leaf(WarmStart, "key"),
                    "file": _leaf(WarmStart, "file"),
                    **{
                        name: _leaf(WarmStart, name)
                        for name in ("storageUri", "sha256", "endpoint", "region")
                    },
                    "secretRef": _obj(
                        "s3:// and gs://: the Secret holding the store's keys",
                        {"name": _leaf(WarmStart, "secretName")},
                    ),
                    "caBundle": _obj(
                        "A private CA's certificates the store's or URL's server is checked "
                        "against",
                        {
                            "configMapRef": _obj(
                                "ConfigMap holding the bundle",
                                {"name": _leaf(WarmStart, "caConfigMapName")},
                            ),
                            "key": _leaf(WarmStart, "caKey"),
                        },
                    ),
                },
            ),
        },
        required=["features"],
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.classes) == (has(self.task) && self.task == 'multiclass')",
                    "message": "classes: required with task: multiclass, and only with it",
                    "fieldPath": ".classes",
                },
                {
                    "rule": "!has(self.metric) || (self.metric == 'squaredError') == "
                    "(has(self.task) && self.task == 'regression')",
                    "message": "metric: squaredError for task: regression, and only for it "
                    "(a classifier compares by accuracy or logloss)",
                    "fieldPath": ".metric",
                },
            ]
        },
    )


def _source_schema() -> dict[str, Any]:
    topics = _obj(
        "The topics labelled samples and feedback come from",
        {"samples": _leaf(KafkaSource, "samples"), "feedback": _leaf(KafkaSource, "feedback")},
        minProperties=1,
    )
    sasl = _table(
        KafkaSasl,
        "SASL credentials (with SASL_PLAINTEXT or SASL_SSL)",
        {KafkaSasl: {"password": None,  # (at secretRef)
                     "secretRef": _table(PasswordRef, "The Secret holding the password", {})}},
        required=["secretRef"],
    )  # fmt: skip
    tls = _obj(
        "Certificates (PEM) in Secrets, with SSL or SASL_SSL",
        {f"{f.name}SecretRef": _leaf(KafkaTls, f.name) for f in dataclasses.fields(KafkaTls)},
    )
    kafka = _table(
        KafkaSource,
        "Kafka topics (the predictions are still logged to Redis)",
        # (samples and feedback at topics)
        {KafkaSource: {"samples": None, "feedback": None, "topics": topics, "sasl": sasl,
                       "tls": tls}},
        required=["topics"],
    )  # fmt: skip
    return _obj(
        "Where labelled samples and feedback come from: Redis streams (default) or Kafka",
        {"redis": _obj("The model's Redis streams (the default)", {}),
         "kafka": kafka},  # fmt: skip
        **{"x-kubernetes-validations": [
            {"rule": "!(has(self.redis) && has(self.kafka))",
             "message": "one source: redis or kafka, not both"}]},
    )  # fmt: skip


def status_schema() -> dict[str, Any]:
    """What the operator writes: its fields typed (a patch with ``phase: Helthy`` is refused),
    the rest (kopf's own bookkeeping) kept."""

    def scalar(kind: str, description: str, **extra: Any) -> dict[str, Any]:
        return {"type": kind, "description": description, "nullable": True, **extra}

    def record(description: str) -> dict[str, Any]:
        return {"type": "object", "description": description, "nullable": True,
                "x-kubernetes-preserve-unknown-fields": True}  # fmt: skip

    condition = {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {
                "type": "string",
                "description": "Ready, Progressing, Degraded, Drifting, ModelQuality, LogCapacity, "
                "StoreDurable, StoreReset, ModelLoaded",
                "maxLength": 316,
            },  # fmt: skip
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string", "maxLength": 1024},
            "message": {"type": "string", "maxLength": 32768},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
        },
    }
    return {
        "type": "object",
        "description": "Written by the operator",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "phase": {
                "type": "string",
                "enum": ["Progressing", "Healthy", "Paused", "Degraded"],
                "description": "Progressing, Healthy, Paused (a manual step) or Degraded",
            },  # fmt: skip
            "observedGeneration": scalar(
                "integer", "The spec generation this status is of", format="int64", minimum=0
            ),  # fmt: skip
            "conditions": {
                "type": "array",
                "items": condition,
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "description": "Ready, Progressing, Degraded, Drifting, ModelQuality, LogCapacity, "
                "StoreDurable, StoreReset, ModelLoaded",
            },
            "stableRevision": scalar("string", "The revision serving the traffic"),
            "canaryRevision": scalar("string", "The revision in a canary, if any"),
            "canaryWeight": scalar("integer", "Canary share of traffic, %", minimum=0, maximum=100),
            "currentStep": scalar("integer", "The canary's step", minimum=0),
            "pauseStartedAt": scalar("number", "When the current pause began (Unix seconds)"),
            "analysisFailures": scalar("integer", "Failed analyses of this canary", minimum=0),
            "lastAnalysisAt": scalar("number", "Unix seconds"),
            "servedVersion": scalar("integer", "The version the servers answer with", minimum=0),
            "latestVersion": scalar("integer", "The newest published version", minimum=0),
            "lastGoodVersion": scalar("integer", "The last version proven on labels", minimum=0),
            "learnerLag": scalar(
                "integer",
                "Samples and labels the stable learner has not "
                "learned yet (Kafka: the topics' end less its position)",
                minimum=0,
            ),  # fmt: skip
            "replicas": scalar("integer", "Ready server replicas (scale subresource)", minimum=0),
            "selector": scalar("string", "The stable servers' pods (scale subresource)"),
            "onlineAccuracy": scalar(
                "number", "Served accuracy on joined labels", minimum=0, maximum=1
            ),  # fmt: skip
            "onlineError": {
                "type": "object",
                "description": "Regression: the served track's error on joined labels - rmse, "
                "mae, and relativeToConstant (its squared error over the best constant's, the "
                "labels' variance: 1 - R^2, below 1 where it beats a constant)",
                "properties": {
                    k: {"type": "number", "minimum": 0}
                    for k in ("rmse", "mae", "relativeToConstant")
                },
            },
            "drift": scalar("string", "What drifts, or none"),
            "learningPaused": scalar("boolean", "Learning paused (annotation or policy)"),
            "learningPausedBy": scalar(
                "string",
                "Why learning is paused: annotation, or conceptDrift "
                "(onConceptDrift: pause; held until the pause-learning annotation changes)",
            ),
            "pauseAnnotation": scalar(
                "string",
                "The pause-learning annotation as last read: a change of it is a "
                "person's word, which overrides a policy's pause",
            ),
            "pinned": scalar("boolean", "A rollback pinned the served version"),
            "manualRollbackTo": scalar(
                "integer", "The version an annotation rolled back to", minimum=0
            ),  # fmt: skip
            "requestsSeen": {
                "type": "object",
                "nullable": True,
                "description": "The promote and abort annotations as last read (a request "
                "is a change of one: one left on the object asks nothing of the next canary)",
                "additionalProperties": {"type": "string"},
            },
            "lastConceptAt": scalar("number", "The last concept drift (Unix seconds)"),
            "aborted": record("The canary aborted: revision, reason, at"),
            "lastRollback": record("The last rollback: at, revision, from, to, reason"),
            "analysis": record("The last canary analysis"),
            "quality": record("Served, lastGood and constant accuracy on the same labels"),
            "log": record("The prediction log's needs: rate, window, bytes"),
            "maturity": record(
                "With labelDefault: how far behind now the predictions "
                "scored are (afterSeconds, lagSeconds, heldRows, earlyRows)"
            ),
            "backtest": record(
                "The canary's catch-up on history and its backtest against stable (entries, "
                "rows, rowsPerSecond, samples, difference)"
            ),
            "liftOverBaseline": record(
                "The served version against the warm-start snapshot frozen, on the same "
                "labels (difference, interval)"
            ),
            "stableWarmStart": scalar("string", "The revision the stable learner started from"),
            "canaryWarmStart": scalar("string", "The revision the canary learner started from"),
            "storeEpoch": scalar(
                "string", "The store's epoch token: when Redis no longer holds it, it lost keys"
            ),  # fmt: skip
            "storeRestores": scalar(
                "integer",
                "How often a process had put back what the store lost, when last read",
                minimum=0,
            ),  # fmt: skip
            "storeReset": record(
                "The last store reset: at, cause, message, the versions lost, recoveredAt"
            ),  # fmt: skip
            "loadFaults": {
                "type": "array",
                "nullable": True,
                "description": "The model's pods that cannot load it (stable, canary): "
                "reason (ImportFailed, MissingMethod, BadParams, WarmStartFailed), the error's last line",
                "items": {
                    "type": "object",
                    "required": ["reason", "message", "component", "revision"],
                    "properties": {
                        "reason": {"type": "string", "maxLength": 64},
                        "message": {"type": "string", "maxLength": 4096},
                        "component": {"type": "string", "maxLength": 64},
                        "revision": {"type": "string", "maxLength": 253},
                        "at": {"type": "number", "description": "First reported (Unix seconds)"},
                    },
                },
                "maxItems": 16,
            },
        },
    }


COLUMNS = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Stable", "type": "string", "jsonPath": ".status.stableRevision"},
    {"name": "Canary-Weight", "type": "integer", "jsonPath": ".status.canaryWeight"},
    {"name": "Served", "type": "integer", "jsonPath": ".status.servedVersion"},
    {"name": "Accuracy", "type": "number", "jsonPath": ".status.onlineAccuracy"},
    {"name": "RMSE", "type": "number", "jsonPath": ".status.onlineError.rmse"},
    {"name": "Drift", "type": "string", "jsonPath": ".status.drift"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Canary", "type": "string", "jsonPath": ".status.canaryRevision", "priority": 1},
    {"name": "Latest", "type": "integer", "jsonPath": ".status.latestVersion", "priority": 1},
    {"name": "LastGood", "type": "integer", "jsonPath": ".status.lastGoodVersion", "priority": 1},
    {"name": "Lag", "type": "integer", "jsonPath": ".status.learnerLag", "priority": 1},
]


SCHEMA_ANNOTATION = "tideline.dev/schema"


def schema_hash(crd: dict[str, Any]) -> str:
    """A short hash of a CRD's spec: the operator compares the installed CRD's with its own."""
    blob = json.dumps(crd["spec"], sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def build_crd() -> dict[str, Any]:
    crd = _crd()
    crd["metadata"]["annotations"] = {SCHEMA_ANNOTATION: schema_hash(crd)}
    return crd


def outdated(annotations: dict[str, str] | None) -> str | None:
    """Why the installed CRD is not this release's (None when it is): Helm installs ``crds/``
    once and never upgrades it."""
    fix = "apply this release's: kubectl apply --server-side --force-conflicts -f crds/onlinemodel.yaml"
    if annotations is None:
        return f"the OnlineModel CRD is not installed: {fix}"
    want = build_crd()["metadata"]["annotations"][SCHEMA_ANNOTATION]
    have = annotations.get(SCHEMA_ANNOTATION)
    if have != want:
        return (f"the OnlineModel CRD in the cluster (schema {have or 'unmarked'}) is not this "
                f"release's (schema {want}); Helm does not upgrade CRDs: {fix}")  # fmt: skip
    return None


def _crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "plural": PLURAL,
                "singular": "onlinemodel",
                "shortNames": ["om"],
                "categories": ["tideline"],
            },  # fmt: skip
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.serving.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },  # fmt: skip
                    },
                    "additionalPrinterColumns": COLUMNS,
                    "schema": {
                        "openAPIV3Schema": _obj(
                            "An online-learning model: learner, servers, drift monitor, canary and guardrails",
                            {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                            required=["spec"],
                        )
                    },
                }
            ],
        },
    }


def render() -> str:
    header = "# Generated by `python -m tideline_operator.crd`; do not edit by hand.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)


if __name__ == "__main__":  # pragma: no cover
    sys.stdout.write(render())
