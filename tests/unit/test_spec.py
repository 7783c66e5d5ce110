from __future__ import annotations

import copy
import math
from dataclasses import MISSING, Field, fields, replace
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import pytest
import yaml

from tests.helpers import manifest
from tideline.spec import (
    MAX_STEPS,
    PARAM_TYPES,
    TABLE,
    ExternalParams,
    Feature,
    KafkaSasl,
    KafkaSource,
    ModelSpec,
    Notify,
    PasswordRef,
    Row,
    SGDParams,
    Spec,
    SpecError,
    UrlRef,
    WarmStart,
    entries,
    entry,
    load_manifest,
    parse,
    parse_duration,
    revision,
    table,
)

EXAMPLES = sorted(Path(__file__).parents[2].joinpath("examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_parses(path: Path) -> None:
    m = parse(path)
    assert m.spec.model.features
    assert len(m.revision) == 10


def test_defaults_are_those_of_the_design() -> None:
    s = parse(manifest()).spec
    assert (s.learning.batchSize, s.learning.maxBatchDelay, s.learning.publishEvery) == (
        64,
        0.5,
        5000,
    )
    assert (s.learning.replay.size, s.learning.replay.fraction) == (10_000, 0.2)
    assert (s.learning.keepVersions, s.learning.labelWindow) == (20, 1800.0)
    assert (s.learning.gate.holdout, s.learning.gate.maxLossIncrease) == (2000, 0.02)
    assert (s.serving.replicas, s.serving.timeout, s.serving.fallback) == (2, 0.01, "lastGood")
    assert (s.drift.features.method, s.drift.concept.method) == ("psi", "adwin")
    assert [st.setWeight or st.pause for st in s.rollout.steps] == [10, 60.0, 50, 60.0]
    assert s.rollout.trafficRouting == "builtin"
    assert s.guardrails.onConceptDrift == "adapt"


def _with(path: str, value: object) -> dict:
    m = manifest()
    node = m
    keys = path.split(".")
    for k in keys[:-1]:
        if k.endswith("]"):
            name, idx = k[:-1].split("[")
            node = node[name][int(idx)]
        else:
            node = node.setdefault(k, {})
    node[keys[-1]] = value
    return m


BAD = [
    (
        "a batch size of zero",
        "spec.learning.batchSize",
        0,
        "spec.learning.batchSize: must be >= 1 (got 0)",
    ),
    ("a batch size that is not an integer", "spec.learning.batchSize", 2.5, "must be an integer"),
    (
        "an unknown algorithm",
        "spec.model.algorithm",
        "xgboost",
        "spec.model.algorithm: must be one of sgd, ftrl, forest",
    ),
    (
        "an unknown task",
        "spec.model.task",
        "ranking",
        "spec.model.task: must be one of binary, regression",
    ),
    (
        "a misspelt field, with a suggestion",
        "spec.learning.batchsize",
        10,
        "spec.learning.batchsize: unknown field (did you mean batchSize?)",
    ),
    (
        "a duration without a unit it knows",
        "spec.learning.labelWindow",
        "3 weeks",
        "spec.learning.labelWindow: must be a duration",
    ),
    (
        "a replay fraction of one",
        "spec.learning.replay.fraction",
        1.0,
        "spec.learning.replay.fraction: must be <= 0.9",
    ),
    (
        "a numeric feature with a text default",
        "spec.model.features[0].default",
        "zero",
        "spec.model.features[0].default: must be a number",
    ),
    (
        "too many categorical buckets",
        "spec.model.features[2].buckets",
        1 << 30,
        "spec.model.features[2].buckets: must be <=",
    ),
    (
        "an unknown hyperparameter",
        "spec.model.params",
        {"learningrate": 0.1},
        "spec.model.params.learningrate: unknown field (did you mean learningRate?)",
    ),
    ("a negative L2", "spec.model.params", {"l2": -1}, "spec.model.params.l2: must be >= 0"),
    (
        "a weight over 100",
        "spec.rollout.steps",
        [{"setWeight": 120}],
        "spec.rollout.steps[0].setWeight: must be <= 100",
    ),
    (
        "a step with two actions",
        "spec.rollout.steps",
        [{"setWeight": 5, "pause": "1s"}],
        "spec.rollout.steps[0]: must have exactly one",
    ),
    (
        "a fallback that is neither lastGood nor a value",
        "spec.serving.fallback",
        "zero",
        "spec.serving.fallback: must be lastGood",
    ),
    (
        "a policy that does not exist",
        "spec.guardrails.onConceptDrift",
        "panic",
        "spec.guardrails.onConceptDrift: must be one of",
    ),
    (
        "NaN as a threshold",
        "spec.drift.features.threshold",
        math.nan,
        "spec.drift.features.threshold: must be finite",
    ),
    (
        "a boolean where a number goes",
        "spec.serving.replicas",
        True,
        "spec.serving.replicas: must be a number",
    ),
    ("unknown keys of mixed types", "spec.learning", {"batchsize": 8, 1: "x"}, "spec.learning.1: unknown field"),
    ("a Redis URL that is not one", "spec.redis.url", "http://x", "spec.redis.url: must be a redis://"),
    ("a Redis database that is no number", "spec.redis.url", "redis://h/abc", "must be a number (got 'abc')"),
    ("a fallback that is no probability for a binary model", "spec.serving.fallback", {"value": 2},
     "spec.serving.fallback.value: must be a probability in [0, 1]"),
    ("more features than any model should hold", "spec.model.features",
     [{"name": f"f{i}"} for i in range(100_000)], "spec.model.features: at most 2000 features"),
    ("feedbackAuth without a Secret name", "spec.serving.feedbackAuth", {"secretRef": {}},
     "spec.serving.feedbackAuth.secretRef.name: required"),
    ("a labels port on the predict port", "spec.serving.labelsPort", 8080, "spec.serving.labelsPort: must differ"),
    ("labelsFrom without a labels port", "spec.serving.networkPolicy", {"labelsFrom": [{"podSelector": {}}]},
     "spec.serving.networkPolicy.labelsFrom: needs spec.serving.labelsPort"),
    ("a peer with a typo", "spec.serving.networkPolicy", {"predictFrom": [{"podselector": {}}]},
     "spec.serving.networkPolicy.predictFrom[0].podselector: unknown field"),
    ("a warm-start key that is a path", "spec.model.warmStart", {"configMapRef": {"name": "b"}, "key": "/etc/hostname"},
     "spec.model.warmStart.key: must be a ConfigMap key"),
    ("a warm-start key that climbs out", "spec.model.warmStart", {"configMapRef": {"name": "b"}, "key": ".."},
     "spec.model.warmStart.key: must be a ConfigMap key"),
    ("a warm start from two places", "spec.model.warmStart", {"file": "/b.tdl", "storageUri": "s3://models/b.tdl"},
     "spec.model.warmStart: needs exactly one of configMapRef.name, file or storageUri (got file and storageUri)"),
    ("a warm start from nowhere", "spec.model.warmStart", {"key": "b.tdl"},
     "spec.model.warmStart: needs exactly one of configMapRef.name, file or storageUri"),
    ("a storage URI of a scheme no store speaks", "spec.model.warmStart", {"storageUri": "ftp://h/b.tdl"},
     "spec.model.warmStart.storageUri: must be s3://bucket/key, gs://bucket/key or an http(s):// URL"),
    ("a bucket without a key", "spec.model.warmStart", {"storageUri": "s3://models"},
     "spec.model.warmStart.storageUri: must be s3://bucket/key"),
    ("a checksum that is no SHA-256", "spec.model.warmStart", {"storageUri": "gs://models/b.tdl", "sha256": "abc"},
     "spec.model.warmStart.sha256: must be 64 lowercase hex digits (got 'abc')"),
    ("an S3 endpoint that is no URL", "spec.model.warmStart", {"storageUri": "s3://models/b.tdl", "endpoint": "minio:9000"},
     "spec.model.warmStart.endpoint: must be http(s)://host[:port]"),
    ("store credentials for an https URL", "spec.model.warmStart",
     {"storageUri": "https://models.example.com/b.tdl", "secretRef": {"name": "s3-keys"}},
     "spec.model.warmStart.secretRef: only with a storageUri of s3:// or gs://"),
    ("a region for a file", "spec.model.warmStart", {"file": "/b.tdl", "region": "eu-west-1"},
     "spec.model.warmStart.region: only with a storageUri of s3:// or gs://"),
    ("a CA bundle for a file", "spec.model.warmStart", {"file": "/b.tdl", "caBundle": {"configMapRef": {"name": "corp-ca"}}},
     "spec.model.warmStart.caBundle: only with a storageUri"),
    ("a CA bundle without its ConfigMap's name", "spec.model.warmStart",
     {"storageUri": "https://models.example.com/b.tdl", "caBundle": {"key": "ca.pem"}},
     "spec.model.warmStart.caBundle.configMapRef.name: required"),
    ("a CA bundle key that is a path", "spec.model.warmStart",
     {"storageUri": "https://models.example.com/b.tdl", "caBundle": {"configMapRef": {"name": "c"}, "key": "../ca"}},
     "spec.model.warmStart.caBundle.key: must be a ConfigMap key"),
    ("store credentials without the Secret's name", "spec.model.warmStart",
     {"storageUri": "s3://models/b.tdl", "secretRef": {}}, "spec.model.warmStart.secretRef.name: required"),
    ("more buckets than any model should hold", "spec.model.features",
     [{"name": f"c{i}", "type": "categorical", "buckets": 1 << 20} for i in range(5)],
     "buckets add up to 5242880, over 4194304"),
    ("certificates without TLS", "spec.source",
     {"kafka": {"bootstrapServers": "k:9093", "topics": {"samples": "s"},
                "tls": {"caSecretRef": {"name": "ca"}}}},
     "spec.source.kafka.tls: only used with securityProtocol SSL or SASL_SSL (got PLAINTEXT)"),
    ("a client certificate without its key", "spec.source",
     {"kafka": {"bootstrapServers": "k:9093", "topics": {"samples": "s"}, "securityProtocol": "SSL",
                "tls": {"certSecretRef": {"name": "user"}}}},
     "spec.source.kafka.tls.keySecretRef: required with certSecretRef"),
    ("a topic name Kafka refuses", "spec.source",
     {"kafka": {"bootstrapServers": "k:9093", "topics": {"samples": "fraud samples"}}},
     "spec.source.kafka.topics.samples: must be a Kafka topic name (got 'fraud samples')"),
    ("brokers without a port", "spec.source", {"kafka": {"bootstrapServers": "k", "topics": {"samples": "s"}}},
     "spec.source.kafka.bootstrapServers: must be host:port[,host:port...] (got 'k')"),
    ("a CA Secret without a name", "spec.source",
     {"kafka": {"bootstrapServers": "k:9093", "topics": {"samples": "s"}, "securityProtocol": "SSL",
                "tls": {"caSecretRef": {"key": "ca.crt"}}}},
     "spec.source.kafka.tls.caSecretRef.name: required"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "value", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_a_bad_field_is_named_in_the_error(path: str, value: object, message: str) -> None:
    with pytest.raises(SpecError) as e:
        parse(_with(path, value))
    assert message in str(e.value)


def test_a_feature_name_is_as_long_as_the_crd_lets_it_be() -> None:
    name = "f" * entry(Feature, "name").hi
    assert parse(_with("spec.model.features", [{"name": name}])).spec.model.features[0].name == name
    with pytest.raises(SpecError, match=r"features\[0\]\.name: must be at most 253 characters"):
        parse(_with("spec.model.features", [{"name": name + "f"}]))


def test_duplicate_feature_names_are_rejected() -> None:
    m = manifest()
    m["spec"]["model"]["features"] = [{"name": "a"}, {"name": "a"}]
    with pytest.raises(SpecError, match=r"spec.model.features\[1\].name: duplicate"):
        parse(m)


def test_missing_model_and_bad_name_are_reported() -> None:
    m = manifest()
    del m["spec"]["model"]
    with pytest.raises(SpecError, match="spec.model: required"):
        parse(m)
    m = manifest(name="Not_A_Name")
    with pytest.raises(SpecError, match="metadata.name: must be a DNS-1123 label"):
        parse(m)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("kind: OnlineModel\nspec: [unclosed\n", "line 3, column 1: expected ',' or ']'"),
        (
            "kind: OnlineModel\nspec:\n  a: 1\n   b: 2\n",
            "line 4, column 5: mapping values are not allowed here",
        ),
        (
            "kind: OnlineModel\nspec: {a: *nowhere}\n",
            "line 2, column 11: found undefined alias 'nowhere'",
        ),
        ("kind: OnlineModel\nspec: '\\xff'\n\t\n", "line 3, column 1: found character '\\t'"),
        (b"kind: \xff\xfe\n", "unacceptable character"),
    ],
    ids=[
        "an unclosed flow sequence is reported where the file ends",
        "a mapping indented under a scalar is reported at the colon",
        "an alias to no anchor is reported at the alias",
        "a tab where indentation is expected is reported at the tab",
        "bytes that are not UTF-8 are reported with their position",
    ],
)
def test_a_file_that_is_not_yaml_is_reported_by_its_path_line_and_column(
    tmp_path: Path, text: str | bytes, where: str
) -> None:
    p = tmp_path / "bad.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(SpecError) as e:
        parse(p)
    message = str(e.value)
    assert message.startswith(f"{p}: not valid YAML: ") and where in message, message
    assert "<unicode string>" not in message and "\n" not in message, message


def test_a_file_that_cannot_be_read_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="missing.yaml: cannot read"):
        parse(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("500ms", 0.5), ("10s", 10.0), ("30m", 1800.0), ("1.5h", 5400.0), ("2d", 172800.0), (3, 3.0)],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


def test_a_rollout_has_at_most_max_steps_steps() -> None:
    steps = [{"setWeight": 10}] * MAX_STEPS
    assert len(parse(_with("spec.rollout.steps", steps)).spec.rollout.steps) == MAX_STEPS
    with pytest.raises(SpecError, match=r"spec\.rollout\.steps: at most 100 steps \(got 101\)"):
        parse(_with("spec.rollout.steps", [*steps, {"pause": "1s"}]))


def test_pause_without_duration_waits_for_a_manual_promote() -> None:
    s = parse(_with("spec.rollout.steps", [{"setWeight": 20}, {"pause": {}}])).spec
    assert s.rollout.steps[1].pause == math.inf


def test_revision_changes_with_what_is_learned_and_not_with_serving() -> None:
    base = parse(manifest()).spec
    assert revision(replace(base, serving=replace(base.serving, replicas=9))) == revision(base)
    assert revision(
        replace(base, guardrails=replace(base.guardrails, maxErrorRate=0.5))
    ) == revision(base)
    changed = copy.deepcopy(manifest())
    changed["spec"]["model"]["params"] = {"l2": 0.5}
    assert revision(parse(changed).spec) != revision(base)
    assert revision(replace(base, image="other:1")) != revision(base)


def test_a_file_may_hold_other_documents_beside_its_one_online_model(tmp_path) -> None:
    path = tmp_path / "model.yaml"
    doc = yaml.safe_dump(manifest(name="fraud"))
    path.write_text(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: ml}}\n---\n{doc}")
    assert load_manifest(path)["metadata"]["name"] == "fraud"
    assert parse(path).name == "fraud"
    path.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: ml}\n")
    with pytest.raises(SpecError, match="must hold exactly one OnlineModel"):
        load_manifest(path)


def test_a_numeric_default_may_be_fractional_or_quoted_and_nothing_else() -> None:
    def default(value: object) -> object:
        doc = manifest(model={"features": [{"name": "a", "default": value}]})
        return parse(doc).spec.model.features[0].default

    assert default(12.5) == 12.5 and default("12.5") == 12.5 and default(3) == 3
    with pytest.raises(SpecError, match=r"spec\.model\.features\[0\]\.default: must be a number"):
        default("abc")


def test_checkpoint_every_is_read_as_publish_every_reported_deprecated_and_hashed_the_same() -> (
    None
):
    old = parse(manifest(learning={"checkpointEvery": 700}))
    new = parse(manifest(learning={"publishEvery": 700}))
    assert old.spec.learning.publishEvery == new.spec.learning.publishEvery == 700
    assert old.spec.deprecated == (("spec.learning.checkpointEvery", "spec.learning.publishEvery"),)
    assert new.spec.deprecated == ()
    # the rename makes no model a new revision (a rollout of every model at upgrade)
    assert old.revision == new.revision
    fraud = load_manifest(Path(__file__).parents[2] / "examples" / "fraud.yaml")
    assert parse(fraud).revision == "d6567a8af9"  # as hashed before the rename
    with pytest.raises(SpecError) as e:
        parse(manifest(learning={"checkpointEvery": 700, "publishEvery": 800}))  # (the same: fine)
    assert e.value.path == "spec.learning.checkpointEvery" and "old name" in e.value.reason


# The field table (issue 33): every row under spec, its groups and their fields, and each
# algorithm's hyperparameters, with the algorithm a hyperparameter is read for.
ROWS = [(row, "sgd") for row in table(Spec, ("spec",))] + [
    (row, algorithm)
    for algorithm, cls in PARAM_TYPES.items()
    for row in table(cls, ("spec", "model", "params"))
]
ROW_IDS = [
    ".".join(row.path) + (f" of {algorithm}" if row.path[-2] == "params" else "")
    for row, algorithm in ROWS
]
# and every field of the table, in every dataclass of tideline.spec (those of groups with a
# shape of their own too, such as spec.redis)
FIELDS = entries()
KINDS = {"integer": int, "number": float, "duration": float, "boolean": bool, "string": str,
         "names": tuple[str, ...], "map": dict[str, Any]}  # fmt: skip
# what a dataclass needs given to be built
REQUIRED: dict[type, dict[str, Any]] = {
    Spec: {"model": ModelSpec(features=(Feature("x"),), params=SGDParams())},
    ModelSpec: {"features": (Feature("x"),), "params": SGDParams()},
    KafkaSource: {"bootstrapServers": "kafka:9092"},
    KafkaSasl: {"username": "u", "password": PasswordRef("kafka", "password")},
    ExternalParams: {"ref": "teams.model:Model"},
    Notify: {"url": UrlRef("hooks", "url")},
}


# what an optional group needs given to be read at all
NEEDED: dict[tuple[str, ...], dict[str, Any]] = {
    ("spec", "learning", "labelDefault"): {"value": 0},
}


def _table_default(cls: type, f: Field[Any]) -> Any:
    """The default the table gives a field: a duration's text in seconds, a group's own
    defaults (an optional group's None), else its dataclass default."""
    e = entry(cls, f.name)
    if e.kind == "duration":
        return parse_duration(e.text)
    if e.kind == "object" and f.default is MISSING:
        assert e.group is not None
        return e.group()
    if f.default_factory is not MISSING:  # (a map's {})
        return f.default_factory()
    return f.default


@pytest.mark.parametrize(("cls", "f"), FIELDS, ids=[f"{c.__name__}.{f.name}" for c, f in FIELDS])
def test_a_dataclass_is_built_with_the_tables_default_of_the_kind_its_type_says(
    cls: type, f: Field[Any]
) -> None:
    e = entry(cls, f.name)
    if e.required:  # (no default: the manifest must give it)
        assert f.default is MISSING and f.default_factory is MISSING
        return
    given = {g.name: "x" for g in fields(cls) if TABLE in g.metadata and g.metadata[TABLE].required}
    value = getattr(cls(**given | REQUIRED.get(cls, {})), f.name)
    assert value == _table_default(cls, f)
    hint = get_type_hints(cls)[f.name]
    if e.kind == "enum" and value is None:  # (optional: None means a default said elsewhere)
        literal, none = get_args(hint)
        assert none is type(None) and set(get_args(literal)) == set(e.choices)
    elif e.kind == "enum":
        assert set(get_args(hint)) == set(e.choices) and value in e.choices
    elif e.kind == "object":  # (a Secret's reference: a subclass of SecretKey)
        assert any(issubclass(e.group, t) for t in (hint, *get_args(hint)) if isinstance(t, type))
    elif e.kind == "any" and value is None:  # (float | str | None)
        assert type(None) in get_args(hint)
    elif e.kind == "any":  # the word of its Literal (Literal["lastGood"] | float)
        assert (value,) == get_args(get_args(hint)[0])
    else:
        assert KINDS[e.kind] in (hint, *get_args(hint))
        assert value is None or type(value) is (get_origin(KINDS[e.kind]) or KINDS[e.kind])
    if value is not None and e.kind not in ("enum", "object", "string"):
        n = len(value) if e.kind == "names" else value  # (a list's bounds are its length's)
        assert (e.lo is None or n >= e.lo) and (e.hi is None or n <= e.hi)


@pytest.mark.parametrize(("row", "algorithm"), ROWS, ids=ROW_IDS)
def test_the_parser_gives_a_field_left_out_the_tables_default(row: Row, algorithm: str) -> None:
    doc = manifest()
    doc["spec"]["model"]["algorithm"] = algorithm
    node = doc["spec"]
    for key in row.path[1:-1]:  # its groups given empty (an optional one is read only then)
        node = node.setdefault(key, {})
    node.update({k: v for k, v in NEEDED.get(row.path[:-1], {}).items() if k != row.path[-1]})
    if row.field.default is None and row.path[:-1] in NEEDED:  # a field it cannot go without
        with pytest.raises(SpecError, match=rf"{'.'.join(row.path)}: required"):
            parse(doc)
        return
    parsed: Any = parse(doc).spec
    for key in row.path[1:]:
        parsed = getattr(parsed, key)
    assert parsed == _table_default(row.owner, row.field)


@pytest.mark.parametrize(
    ("model", "value", "error"),
    [
        ({}, 0, None),
        ({}, True, None),
        ({}, 2, "spec.learning.labelDefault.value: is not a label of this model"),
        ({"task": "regression"}, -1.5, None),
        ({"task": "regression"}, "none", "spec.learning.labelDefault.value"),
        ({"task": "multiclass", "classes": ["ham", "spam"]}, "ham", None),
        ({"task": "multiclass", "classes": ["ham", "spam"]}, "eggs", "not a class"),
    ],
    ids=[
        "binary 0",
        "binary false",
        "binary 2",
        "regression",
        "regression text",
        "multiclass name",
        "multiclass unknown",
    ],  # fmt: skip
)
def test_a_label_default_is_a_label_the_task_takes(
    model: dict, value: Any, error: str | None
) -> None:
    doc = manifest(learning={"labelDefault": {"value": value, "after": "5m"}})
    doc["spec"]["model"].update(model)
    if error is None:
        d = parse(doc).spec.learning.labelDefault
        assert d is not None and (d.value, d.after) == (value, 300.0)
    else:
        with pytest.raises(SpecError, match=error):
            parse(doc)


def test_a_label_default_waits_at_most_the_label_window_and_changes_the_revision() -> None:
    with pytest.raises(SpecError, match=r"labelDefault\.after: must be at most labelWindow"):
        parse(
            manifest(learning={"labelWindow": "10m", "labelDefault": {"value": 0, "after": "11m"}})
        )
    plain = parse(manifest())
    assert parse(manifest(learning={"lateLabel": "ignore"})).revision == plain.revision
    defaulted = parse(manifest(learning={"labelDefault": {"value": 0, "after": "10m"}}))
    assert defaulted.revision != plain.revision, "other labels are other data"
    with pytest.raises(SpecError, match=r"spec\.learning\.lateLabel: must be one of ignore"):
        parse(manifest(learning={"lateLabel": "later"}))
    correcting = {"labelDefault": {"value": 0, "after": "10m"}, "lateLabel": "correct"}
    assert parse(manifest(learning=correcting)).revision != defaulted.revision


FEATURE_X = [{"name": "x"}]


@pytest.mark.parametrize(
    ("model", "learning", "error"),
    [
        ({}, {}, r"lateLabel: correct needs spec\.learning\.labelDefault"),
        ({"task": "regression", "features": FEATURE_X}, {"labelDefault": {"value": 0}},
         r"lateLabel: correct is for a binary task .* not regression: use ignore"),
        ({"algorithm": "forest"}, {"labelDefault": {"value": 0}},
         r"lateLabel: correct learns with sample weights, which sgd, ftrl take and forest"),
        ({"algorithm": "ftrl"}, {"labelDefault": {"value": 1, "after": "1m"}}, None),
    ],
)  # fmt: skip
def test_a_late_label_is_corrected_only_where_a_weighted_default_can_be(
    model: dict, learning: dict, error: str | None
) -> None:
    doc = manifest(learning={"lateLabel": "correct", **learning})
    doc["spec"]["model"].update(model)
    if error is None:
        assert parse(doc).spec.learning.lateLabel == "correct"
    else:
        with pytest.raises(SpecError, match=r"spec\.learning\." + error):
            parse(doc)


def test_history_puts_a_backtest_before_the_first_traffic_and_changes_no_revision() -> None:
    plain = parse(manifest())
    kept = parse(manifest(learning={"history": "24h"}))
    assert kept.revision == plain.revision, "how long samples are kept changes nothing learned"
    assert kept.spec.learning.history == 86400.0 and plain.spec.learning.history == 0.0
    assert [s.backtest for s in plain.spec.rollout.steps] == [None] * 4
    assert [(s.backtest, s.setWeight) for s in kept.spec.rollout.steps[:2]] == [(3600.0, None),
                                                                               (None, 10)]  # fmt: skip
    short = parse(manifest(learning={"history": "10m"},
                           rollout={"steps": [{"pause": "1m"}, {"setWeight": 20},
                                              {"backtest": {}}]}))  # fmt: skip
    assert [s.backtest for s in short.spec.rollout.steps] == [None, None, 600.0]
    named = parse(manifest(learning={"history": "2h"},
                           rollout={"steps": [{"backtest": {"window": "90m"}}, {"setWeight": 5}]}))  # fmt: skip
    assert named.spec.rollout.steps[0].backtest == 5400.0


@pytest.mark.parametrize(
    ("learning", "step", "error"),
    [
        ({}, {"backtest": {}}, r"steps\[0\]\.backtest: needs spec\.learning\.history"),
        ({"history": "1h"}, {"backtest": {"window": "2h"}},
         r"steps\[0\]\.backtest\.window: must be at most spec\.learning\.history \(7200s > 3600s\)"),
        ({"history": "1h"}, {"backtest": {"window": "0s"}}, r"backtest\.window: must be more than 0s"),
        ({"history": "1h"}, {"backtest": {"span": "1m"}}, r"backtest\.span"),
        ({"history": "1h"}, {"backtest": {}, "setWeight": 5}, r"exactly one of .* backtest"),
    ],
)  # fmt: skip
def test_a_backtest_step_that_cannot_run_is_named(learning: dict, step: dict, error: str) -> None:
    with pytest.raises(SpecError, match=r"spec\.rollout\." + error if "steps" in error else error):
        parse(manifest(learning=learning, rollout={"steps": [step]}))


def test_a_warm_start_s_store_and_checksum_make_a_revision_and_its_credentials_do_not() -> None:
    def rev(warm: dict) -> str:
        return parse(manifest(model={"features": [{"name": "x"}], "warmStart": warm})).revision

    uri = {"storageUri": "s3://models/base.tdl"}
    assert rev(uri) != rev({"storageUri": "s3://models/other.tdl"})
    assert rev(uri) != rev({**uri, "sha256": "0" * 64})
    assert rev(uri) == rev({**uri, "secretRef": {"name": "s3-keys"}})
    assert rev(uri) == rev({**uri, "caBundle": {"configMapRef": {"name": "corp-ca"}}})
    # a file's warm start hashes as before storageUri was a field: no model rolls out
    assert WarmStart(file="/b.tdl").revision_material() == {
        "configMapName": None,
        "key": "baseline.json",
        "file": "/b.tdl",
    }
