"""The CRD is generated, committed as generated, and agrees with the runtime's parser field by field."""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import manifest
from tideline.spec import (
    EXTERNAL_PARAMS,
    EXTERNAL_REF,
    PARAM_TYPES,
    ExternalParams,
    Feature,
    KafkaSasl,
    KafkaSource,
    KafkaTls,
    ModelSpec,
    Notify,
    PasswordRef,
    RedisSpec,
    SecretKey,
    Spec,
    SpecError,
    Step,
    TokenRef,
    UrlRef,
    VWParams,
    WarmStart,
    entries,
    entry,
    parse,
    parse_duration,
    table,
)
from tideline_operator.crd import build_crd, render

ROOT = Path(__file__).parents[3]
SPEC = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def test_the_committed_crd_is_the_generated_one() -> None:
    assert (ROOT / "crds" / "onlinemodel.yaml").read_text() == render()


TYPES = {"integer": "integer", "number": "number", "boolean": "boolean", "enum": "string",
         "string": "string", "object": "object", "duration": None, "any": None,
         "names": "array", "map": "object"}  # fmt: skip
# What bounds a field of each kind in the CRD.
BOUNDS = {("minimum", "maximum"): ("integer", "number"), ("minLength", "maxLength"): ("string",),
          ("minItems", "maxItems"): ("names",)}  # fmt: skip
# Where the CRD has each field of the field table (tideline.spec): the rows under spec, and the
# fields of groups whose shape the CRD writes by hand ("[]": an array's items).
PLACES: list[tuple[tuple[str, ...], type, str]] = [
    (row.path[1:], row.owner, row.field.name) for row in table(Spec, ("spec",))
] + [
    (("model", "task"), ModelSpec, "task"),
    (("model", "algorithm"), ModelSpec, "algorithm"),
    (("model", "classes"), ModelSpec, "classes"),
    (("model", "metric"), ModelSpec, "metric"),
    (("model", "custom", "params"), ExternalParams, "params"),
    *(
        (("model", algorithm, key), EXTERNAL_PARAMS[algorithm], name)
        for algorithm, ref in EXTERNAL_REF.items()
        for key, name in ((ref, "ref"), ("params", "params"))
    ),
    (("model", "vw", "args"), VWParams, "args"),
    (("rollout", "steps", "[]", "setWeight"), Step, "setWeight"),
    (("rollout", "steps", "[]", "pause"), Step, "pause"),
    *((("model", "features", "[]", f.name), Feature, f.name) for f in fields(Feature)),
    (("model", "warmStart", "configMapRef", "name"), WarmStart, "configMapName"),
    (("model", "warmStart", "key"), WarmStart, "key"),
    (("model", "warmStart", "file"), WarmStart, "file"),
    *(
        (("model", "warmStart", name), WarmStart, name)
        for name in ("storageUri", "sha256", "endpoint", "region")
    ),
    (("model", "warmStart", "secretRef", "name"), WarmStart, "secretName"),
    (("model", "warmStart", "caBundle", "configMapRef", "name"), WarmStart, "caConfigMapName"),
    (("model", "warmStart", "caBundle", "key"), WarmStart, "caKey"),
    (("redis", "url"), RedisSpec, "url"),
    (("redis", "secretRef", "name"), RedisSpec, "secretName"),
    (("redis", "secretRef", "key"), RedisSpec, "secretKey"),
    (("source", "kafka", "groupId"), KafkaSource, "groupId"),
    (("source", "kafka", "securityProtocol"), KafkaSource, "securityProtocol"),
    (("source", "kafka", "startFrom"), KafkaSource, "startFrom"),
    (("source", "kafka", "sasl", "mechanism"), KafkaSasl, "mechanism"),
    (("serving", "feedbackAuth", "secretRef", "name"), SecretKey, "name"),
    (("serving", "feedbackAuth", "secretRef", "name"), TokenRef, "name"),
    (("serving", "feedbackAuth", "secretRef", "key"), TokenRef, "key"),
    (("notify", "[]", "url", "secretRef", "name"), UrlRef, "name"),
    (("notify", "[]", "url", "secretRef", "key"), UrlRef, "key"),
    (("notify", "[]", "format"), Notify, "format"),
    (("notify", "[]", "events"), Notify, "events"),
    (("source", "kafka", "sasl", "secretRef", "name"), PasswordRef, "name"),
    (("source", "kafka", "sasl", "secretRef", "key"), PasswordRef, "key"),
    (("source", "kafka", "bootstrapServers"), KafkaSource, "bootstrapServers"),
    (("source", "kafka", "topics", "samples"), KafkaSource, "samples"),
    (("source", "kafka", "topics", "feedback"), KafkaSource, "feedback"),
    (("source", "kafka", "sasl", "username"), KafkaSasl, "username"),
    *(
        (("source", "kafka", "tls", f"{f.name}SecretRef"), KafkaTls, f.name)
        for f in fields(KafkaTls)
    ),
    *(
        (
            ("source", "kafka", "tls", f"{f.name}SecretRef", g.name),
            entry(KafkaTls, f.name).group,
            g.name,
        )
        for f in fields(KafkaTls)
        for g in fields(SecretKey)
    ),
]


def test_every_field_of_the_table_has_its_place_in_the_crd() -> None:
    # (the hyperparameters, whose schema merges the algorithms', have tests of their own)
    placed = {(cls, name) for _, cls, name in PLACES} | {
        (cls, f.name) for cls in PARAM_TYPES.values() for f in fields(cls)
    }
    assert {(cls, f.name) for cls, f in entries()} - placed == set()


@pytest.mark.parametrize(
    ("path", "cls", "name"), PLACES, ids=[f"spec.{'.'.join(p)}" for p, _, _ in PLACES]
)
def test_the_crd_says_what_the_field_table_says(
    path: tuple[str, ...], cls: type, name: str
) -> None:
    node = parent = SPEC
    for key in path:
        parent, node = node, node["items"] if key == "[]" else node["properties"][key]
    f = next(f for f in fields(cls) if f.name == name)
    e = entry(cls, name)
    assert (path[-1] in parent.get("required", [])) == e.required
    assert node.get("type") == TYPES[e.kind] and node["description"].startswith(e.description)
    for (lo, hi), kinds in BOUNDS.items():  # (the entry's bounds, in the keys of its kind)
        assert (node.get(lo), node.get(hi)) == ((e.lo, e.hi) if e.kind in kinds else (None, None))
    assert node.get("enum") == (list(e.choices) if e.kind == "enum" else None)
    if e.kind == "string":
        assert node.get("pattern") == (e.form.pattern if e.form is not None else None)
    if e.kind == "duration":
        want = e.text
    elif e.kind == "object":  # a group every parsed spec has is {} (filled by the API server)
        want = {} if f.default is MISSING else None
    else:
        want = f.default if e.crd_default and f.default is not MISSING else None  # (a map: {})
    assert node.get("default") == want


def _leaves(
    node: dict[str, Any], path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    out = []
    for name, sub in (node.get("properties") or {}).items():
        if sub.get("type") == "object" and "properties" in sub:
            out += _leaves(sub, (*path, name))
        elif sub.get("type") != "array":
            out.append(((*path, name), sub))
    return out


LEAVES = _leaves(SPEC)


# Optional objects need these siblings to be valid at all.
COMPANIONS = {
    ("model", "warmStart"): {"file": "/baseline.tdl"},
    ("learning", "labelDefault"): {"value": 0},
    ("serving", "autoscaling"): {"maxReplicas": 1000},
    ("serving", "feedbackAuth", "secretRef"): {"name": "labels-auth"},
    ("source", "kafka"): {"bootstrapServers": "kafka:9092", "topics": {"samples": "fraud"}},
    ("source", "kafka", "sasl"): {"username": "tideline"},
    ("source", "kafka", "sasl", "secretRef"): {"name": "kafka-auth"},
    ("source", "kafka", "tls", "caSecretRef"): {"name": "kafka-ca"},
    ("source", "kafka", "tls", "certSecretRef"): {"name": "kafka-user"},
    ("source", "kafka", "tls", "keySecretRef"): {"name": "kafka-user"},
}
# Fields a field needs elsewhere: SASL credentials go with a SASL protocol, and back.
SASL = {"securityProtocol": "SASL_PLAINTEXT"}
# Siblings an enum value needs: a multiclass model names its classes.
VALUE_COMPANIONS = {
    (("model", "task"), "multiclass"): {"classes": ["cat", "dog", "fox"]},
    (("learning", "lateLabel"), "correct"): {"labelDefault": {"value": 0}},
    (("model", "metric"), "squaredError"): {"task": "regression"},
}
# Where the parser keeps a field under another name.
RENAMED = {
    ("redis", "secretRef", "key"): ("redis", "secretKey"),
    ("model", "warmStart", "configMapRef", "name"): ("model", "warmStart", "configMapName"),
    ("model", "warmStart", "secretRef", "name"): ("model", "warmStart", "secretName"),
    ("model", "warmStart", "caBundle", "configMapRef", "name"): (
        "model",
        "warmStart",
        "caConfigMapName",
    ),
    ("model", "warmStart", "caBundle", "key"): ("model", "warmStart", "caKey"),
    ("serving", "feedbackAuth", "secretRef", "key"): ("serving", "feedbackAuth", "key"),
    ("serving", "feedbackAuth", "secretRef", "name"): ("serving", "feedbackAuth", "name"),
    ("source", "kafka", "topics", "samples"): ("source", "kafka", "samples"),
    ("source", "kafka", "topics", "feedback"): ("source", "kafka", "feedback"),
    ("source", "kafka", "sasl", "secretRef", "name"): (
        "source",
        "kafka",
        "sasl",
        "password",
        "name",
    ),
    ("source", "kafka", "sasl", "secretRef", "key"): ("source", "kafka", "sasl", "password", "key"),
    **{
        ("source", "kafka", "tls", f"{what}SecretRef", leaf): ("source", "kafka", "tls", what, leaf)
        for what in ("ca", "cert", "key")
        for leaf in ("name", "key")
    },
}


def _doc(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    doc = manifest()
    spec = doc["spec"]
    for parent, siblings in COMPANIONS.items():
        if path[: len(parent)] == parent:
            node = spec
            for k in parent:
                node = node.setdefault(k, {})
            for k, v in siblings.items():
                if k != path[-1]:
                    node[k] = v
    if path[:2] == ("model", "params"):  # a hyperparameter belongs to one algorithm (or more)
        spec["model"]["algorithm"] = next(
            a for a, cls in PARAM_TYPES.items() if path[2] in {f.name for f in fields(cls)}
        )
    node = spec
    for k in path[:-1]:
        node = node.setdefault(k, {})
    node[path[-1]] = value
    node.update(VALUE_COMPANIONS.get((path, value), {}))
    if path == ("model", "algorithm") and value in EXTERNAL_REF:  # what to load goes with it
        spec["model"][value] = {EXTERNAL_REF[value]: "teams.model:Model"}
    warm = spec.get("model", {}).get("warmStart", {})
    if "caBundle" in warm:  # a CA bundle goes with a storageUri (and names its ConfigMap)
        warm.pop("file", None)
        warm["storageUri"] = "https://models.example.com/baseline.tdl"
        warm["caBundle"].setdefault("configMapRef", {"name": "corp-ca"})
    kafka = spec.get("source", {}).get("kafka", {})
    if "sasl" in kafka:
        kafka.update(SASL)
        kafka["sasl"].setdefault("secretRef", {"name": "kafka-auth"})
    elif str(kafka.get("securityProtocol")).startswith("SASL"):
        kafka["sasl"] = {"username": "tideline", "secretRef": {"name": "kafka-auth"}}
    tls = kafka.get("tls")
    if tls is not None:  # certificates go with TLS, and a client's certificate with its key
        kafka["securityProtocol"] = "SASL_SSL" if "sasl" in kafka else "SSL"
        if "certSecretRef" in tls or "keySecretRef" in tls:
            for ref in ("certSecretRef", "keySecretRef"):
                tls.setdefault(ref, {"name": "kafka-user"})
    return doc


def _parsed(spec: Any, path: tuple[str, ...]) -> Any:
    path = RENAMED.get(path, path)
    node = spec
    for k in path:
        node = node[k] if isinstance(node, dict) else getattr(node, k)
    return node


def _id(leaf: tuple[tuple[str, ...], dict]) -> str:
    return "spec." + ".".join(leaf[0])


WITH_DEFAULT = [leaf for leaf in LEAVES if "default" in leaf[1]]


@pytest.mark.parametrize(("path", "schema"), WITH_DEFAULT, ids=[_id(x) for x in WITH_DEFAULT])
def test_the_parser_applies_the_crd_default(path: tuple[str, ...], schema: dict) -> None:
    # the parent object present but empty: the default fills the field
    doc = _doc(path, None)
    node = doc["spec"]
    for k in path[:-1]:
        node = node[k]
    del node[path[-1]]
    parsed = _parsed(parse(doc).spec, path)
    default = schema["default"]
    if schema.get("pattern"):
        default = parse_duration(default)
    assert parsed == default


BOUNDED = [(p, s, k) for p, s in LEAVES for k in ("minimum", "maximum") if k in s]


@pytest.mark.parametrize(
    ("path", "schema", "bound"), BOUNDED, ids=[f"{_id(x)} {x[2]}" for x in BOUNDED]
)
def test_the_parser_refuses_what_the_crd_bounds_refuse(
    path: tuple[str, ...], schema: dict, bound: str
) -> None:
    edge = schema[bound]
    step = 1 if schema["type"] == "integer" else max(abs(edge) * 0.5, 1e-6)
    outside = edge - step if bound == "minimum" else edge + step
    with pytest.raises(SpecError, match=r"spec\." + r"\.".join(path)):
        parse(_doc(path, outside))
    parse(_doc(path, edge))  # the bound itself is fine


ENUMS = [(p, s) for p, s in LEAVES if "enum" in s]


@pytest.mark.parametrize(("path", "schema"), ENUMS, ids=[_id(x) for x in ENUMS])
def test_the_parser_takes_every_crd_enum_value_and_nothing_else(
    path: tuple[str, ...], schema: dict
) -> None:
    for value in schema["enum"]:
        assert _parsed(parse(_doc(path, value)).spec, path) == value
    with pytest.raises(SpecError, match=r"spec\." + r"\.".join(path)):
        parse(_doc(path, "not-a-choice"))


def test_an_installed_crd_of_another_release_is_named_with_the_way_to_upgrade() -> None:
    from tideline_operator.crd import SCHEMA_ANNOTATION, outdated, schema_hash

    crd = build_crd()
    mine = crd["metadata"]["annotations"][SCHEMA_ANNOTATION]
    assert (
        mine == schema_hash({"spec": crd["spec"]}) and outdated({SCHEMA_ANNOTATION: mine}) is None
    )
    why = outdated({SCHEMA_ANNOTATION: "0123456789ab"})
    assert why is not None and "Helm does not upgrade CRDs" in why and "kubectl apply" in why
    assert "unmarked" in (outdated({}) or "") and "not installed" in (outdated(None) or "")
