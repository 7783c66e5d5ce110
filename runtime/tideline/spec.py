"""Parse and validate an ``OnlineModel`` manifest into typed, frozen objects.

The manifest a user ``kubectl apply``s is the same file every runtime process
reads (``--config FILE``). Every default of the resource lives here, in one
field table with its bounds and description (the dataclasses' fields, see
:class:`Entry`), so the learner, the servers, the monitor, the operator and
the CRD agree on one reading. A bad field raises :class:`SpecError` whose
message starts with the field's path, e.g.
``spec.learning.batchSize: must be >= 1 (got 0)``.

Examples
--------
>>> m = parse({"apiVersion": "tideline.dev/v1alpha1", "kind": "OnlineModel",
...            "metadata": {"name": "fraud"},
...            "spec": {"model": {"task": "binary", "algorithm": "sgd",
...                               "features": [{"name": "amount", "type": "numeric"}]}}})
>>> m.spec.learning.batchSize, m.spec.learning.labelWindow
(64, 1800.0)
>>> parse({"apiVersion": "tideline.dev/v1alpha1", "kind": "OnlineModel",
...        "metadata": {"name": "fraud"},
...        "spec": {"model": {"task": "binary", "algorithm": "sgd",
...                           "features": [{"name": "amount", "type": "numeric"}]},
...                 "learning": {"batchSize": 0}}})
Traceback (most recent call last):
...
tideline.spec.SpecError: spec.learning.batchSize: must be >= 1 (got 0)
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar, get_args
from urllib.parse import urlsplit

import yaml

API_VERSION = "tideline.dev/v1alpha1"
KIND = "OnlineModel"
PLURAL = "onlinemodels"  # the resource in the API's paths (the CRD's names, the operator, kubectl tideline)
GROUP, VERSION = API_VERSION.split("/")

TASKS = ("binary", "regression", "multiclass")
# What the servers, the monitor and the rollout run; the library learns every task of TASKS.
MAX_CLASSES = 1000  # spec.model.classes of a multiclass model
BUILTIN_ALGORITHMS = ("sgd", "ftrl", "forest")
# a team's own learner (spec.model.custom), a River estimator (spec.model.river) or Vowpal
# Wabbit (spec.model.vw), loaded in the model's pods from their image; the operator never
# imports them
EXTERNAL_ALGORITHMS = ("custom", "river", "vw")
ALGORITHMS = (*BUILTIN_ALGORITHMS, *EXTERNAL_ALGORITHMS)
FEATURE_TYPES = ("numeric", "categorical")
DRIFT_METHODS = ("psi", "ks")
CONCEPT_METHODS = ("adwin", "page-hinkley")
CONCEPT_POLICIES = ("adapt", "rollback", "pause", "alert")
_CONFIG_MAP_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")
# A model's size is bounded by its spec: the sgd learner's Newton step keeps a dense
# matrix over the numeric features, and every categorical bucket holds weights
# (100,000 features would ask for 74.5 GiB).
MAX_FEATURES = 2000
MAX_BUCKETS = 1 << 22
# A multiclass linear model keeps its weights per class, so its size is bounded as a binary
# model's largest is: classes x buckets <= MAX_BUCKETS, and for sgd's newton (a dense matrix
# per class) classes x (numeric features + 1)^2 <= (MAX_FEATURES + 1)^2.
MAX_NEWTON_SIZE = (MAX_FEATURES + 1) ** 2

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# a duration as text; the CRD's pattern is this one, so both accept and refuse the same
DURATION_PATTERN = r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*$"
_DURATION = re.compile(DURATION_PATTERN)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


T = TypeVar("T")


class Form(NamedTuple):
    """What a string of the table must look like: the pattern (the CRD's too) and what the
    parser's message calls it."""

    pattern: str
    name: str


class SpecError(ValueError):
    """A manifest field that can never work; the message starts with its path."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.reason = message


def parse_duration(value: Any, path: str = "duration") -> float:
    """Seconds from ``"500ms"``, ``"30m"``, ``"1.5h"`` or a plain number of seconds.

    >>> parse_duration("500ms"), parse_duration("30m"), parse_duration(2)
    (0.5, 1800.0, 2.0)
    """
    if isinstance(value, bool):
        raise SpecError(path, f"must be a duration like 500ms, 10s, 30m (got {value!r})")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    raise SpecError(path, f"must be a duration like 500ms, 10s, 30m (got {value!r})")


# The field table (issue 33). Every field of the resource is declared once, on its dataclass
# below: the default is the dataclass's, and the field's metadata (an Entry under TABLE) holds
# its kind, bounds, choices and description. The parser reads a group of the table by it
# (_read), the operator writes the CRD from it (tideline_operator.crd), and tests check that
# the three agree. A field whose manifest shape is not the dataclass's has no entry: its parser
# and its CRD schema are written by hand, and read the table's fields inside it one by one
# (_read_as, at their own keys: spec.source.kafka.topics.samples is KafkaSource.samples). Those
# left: lists of objects (spec.model.features, spec.rollout.steps, the NetworkPolicy peers,
# spec.notify), spec.pods (Kubernetes' own shapes, passed through), a wrapper around a group
# (feedbackAuth.secretRef, sasl.secretRef, notify's url.secretRef),
# spec.learning.checkpointEvery (deprecated).
TABLE = "tideline"
Kind = Literal[
    "integer", "number", "duration", "enum", "boolean", "string", "names", "map", "object", "any"
]


@dataclass(frozen=True)
class Entry:
    """A field of the table: what the parser and the CRD know of it besides its default.

    Bounds are inclusive (None: unbounded that side); a string's bound its length, a list's
    its items. ``choices``: an enum's values, or those a list of names takes its names from.
    ``text``: a duration's default as the
    CRD writes it (``500ms``; the dataclass holds its seconds). ``group``: an object's
    dataclass. ``crd_default``: False when the CRD must leave the field unset (the
    description says the default instead). ``form``: a string's pattern. ``required``: the manifest must give it (it has no
    default; the CRD lists it as required).
    """

    kind: Kind
    description: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    text: str | None = None
    group: type | None = None
    crd_default: bool = True
    form: Form | None = None
    required: bool = False


def entry(cls: type, name: str) -> Entry:
    """The table's entry of the field ``name`` of ``cls``."""
    return next(f.metadata[TABLE] for f in dataclasses.fields(cls) if f.name == name)


class Row(NamedTuple):
    path: tuple[str, ...]  # the field's, in the manifest
    owner: type  # the dataclass it is a field of
    field: dataclasses.Field[Any]
    entry: Entry


def table(cls: type, path: tuple[str, ...] = ()) -> list[Row]:
    """The rows of the field table under ``cls``: its fields and, in turn, its groups'.

    >>> [".".join(r.path) for r in table(Gate, ("spec", "learning", "gate"))]
    ['spec.learning.gate.holdout', 'spec.learning.gate.maxLossIncrease']
    """
    rows = []
    for f in dataclasses.fields(cls):
        if (e := f.metadata.get(TABLE)) is not None:
            rows.append(Row((*path, f.name), cls, f, e))
            if e.group is not None:
                rows += table(e.group, (*path, f.name))
    return rows


def entries() -> list[tuple[type, dataclasses.Field[Any]]]:
    """Every field of the table, in every dataclass of this module: the groups' under
    :class:`Spec`, the hyperparameters', and those of groups with a shape of their own."""
    return [
        (cls, f)
        for cls in list(globals().values())
        if isinstance(cls, type) and dataclasses.is_dataclass(cls)
        for f in dataclasses.fields(cls)
        if TABLE in f.metadata
    ]


def _number(
    default: float | None,
    description: str,
    lo: float | None = None,
    hi: float | None = None,
    *,
    integer: bool | None = None,
    crd_default: bool = True,
) -> Any:
    """A number; an integer when its default is one (or ``integer`` says so)."""
    if integer is None:
        integer = isinstance(default, int)
    e = Entry("integer" if integer else "number", description, lo, hi, crd_default=crd_default)
    return field(default=default, metadata={TABLE: e})


def _duration(default: str, description: str, lo: float, hi: float) -> Any:
    """A duration: written like ``500ms`` (or seconds), held in seconds."""
    e = Entry("duration", description, lo, hi, text=default)
    return field(default=parse_duration(default), metadata={TABLE: e})


def _choice(default: str, choices: tuple[str, ...], description: str) -> Any:
    return field(default=default, metadata={TABLE: Entry("enum", description, choices=choices)})


def _flag(default: bool, description: str) -> Any:
    return field(default=default, metadata={TABLE: Entry("boolean", description)})


def _text(
    default: str | None, description: str, form: Form | None = None, *, crd_default: bool = True
) -> Any:
    e = Entry("string", description, form=form, crd_default=crd_default)
    return field(default=default, metadata={TABLE: e})


def _required(
    description: str, lo: int | None = None, hi: int | None = None, form: Form | None = None
) -> dict[str, Entry]:
    """The metadata of a string the manifest must give, of ``lo`` to ``hi`` characters:
    ``field(metadata=_required(...))`` (a field with no default, as mypy's dataclass plugin
    sees only there)."""
    return {TABLE: Entry("string", description, lo, hi, form=form, required=True)}


def _names(description: str, lo: int, hi: int) -> Any:
    """A list of ``lo`` to ``hi`` distinct non-empty strings, None unless given."""
    return field(default=None, metadata={TABLE: Entry("names", description, lo, hi)})


def _map(description: str) -> Any:
    """An object of free keys (``{}`` unless given); the parser checks its keys by hand."""
    return field(default_factory=dict, metadata={TABLE: Entry("map", description)})


def _any(default: str | None, description: str) -> Any:
    """A word, a number or an object (no single type: the CRD keeps it as given); the parser
    reads it by hand, with this default."""
    return field(default=default, metadata={TABLE: Entry("any", description)})


def _group(cls: type, description: str, *, optional: bool = False) -> Any:
    """An object of the table; ``optional``: None unless given, else always there (the CRD
    defaults it to ``{}`` so that the API server fills its fields too)."""
    e = Entry("object", description, group=cls)
    if optional:
        return field(default=None, metadata={TABLE: e})
    return field(default_factory=cls, metadata={TABLE: e})


# Per-algorithm hyperparameters, typed: the learners read the same table. The CRD describes
# one by the algorithms that have it (sgd and ftrl share l2, with other defaults).
def _param(default: float, lo: float | None = None, hi: float | None = None) -> Any:
    return _number(default, "", lo, hi)


Optimizer = Literal["sgd", "adagrad", "newton"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)


@dataclass(frozen=True)
class SGDParams:
    """``spec.model.params`` of ``algorithm: sgd`` (:class:`tideline.algorithms.LinearLearner`)."""

    learningRate: float = _param(0.1, 0.0)
    l2: float = _param(1.0e-4, 0.0)
    # "newton": a diagonal-plus-dense second-order step (see tideline.algorithms.linear);
    # "adagrad": per-coordinate rates; "sgd": a fixed rate.
    optimizer: Optimizer = _choice("newton", OPTIMIZERS, "sgd's update rule")
    forgetting: float = _param(0.999, 0.5, 1.0)
    priorPrecision: float = _param(3.0, 1.0e-6)


@dataclass(frozen=True)
class FTRLParams:
    """``spec.model.params`` of ``algorithm: ftrl`` (FTRL-Proximal, per coordinate)."""

    alpha: float = _param(0.1, 1.0e-9)
    beta: float = _param(1.0, 0.0)
    l1: float = _param(0.1, 0.0)
    l2: float = _param(1.0, 0.0)


@dataclass(frozen=True)
class ForestParams:
    """``spec.model.params`` of ``algorithm: forest`` (:class:`tideline.algorithms.ForestLearner`)."""

    nTrees: int = _param(10, 1, 200)
    maxDepth: int = _param(12, 1, 30)
    gracePeriod: int = _param(50, 1)
    nCandidates: int = _param(8, 1, 256)
    minGain: float = _param(0.05, 0.0)
    poissonRate: float = _param(6.0, 0.0)
    seed: int = _param(42, 0)


# package.module:Name (a dotted name after the colon reaches a nested attribute)
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
OBJECT_REF = Form(rf"^{_IDENT}(\.{_IDENT})*:{_IDENT}(\.{_IDENT})*$", "package.module:Name")


@dataclass(frozen=True)
class ExternalParams:
    """``spec.model.custom`` (``algorithm: custom``: ``class``, a class of the learner
    contract, :mod:`tideline.model`) or ``spec.model.river`` (``algorithm: river``:
    ``pipeline``, a function that returns a River estimator): where it is, as
    ``package.module:Name``, and the keyword arguments it is called with. Each is a subclass
    (:class:`CustomParams`, :class:`RiverParams`), whose ``ref`` says what it loads."""

    ref: str  # (at class or pipeline: EXTERNAL_REF)
    # (JSON values, named by Python identifiers: the parser checks them)
    params: dict[str, Any] = _map("Keyword arguments it is called with")

    def to_dict(self, algorithm: str) -> dict[str, Any]:
        """The manifest's own shape (``{class: ..., params: ...}`` or ``{pipeline: ...}``)."""
        return {EXTERNAL_REF[algorithm]: self.ref, "params": dict(self.params)}


@dataclass(frozen=True)
class CustomParams(ExternalParams):
    ref: str = field(metadata=_required(
        "A class of the learner contract (tideline.model), as package.module:Name", form=OBJECT_REF
    ))  # fmt: skip


@dataclass(frozen=True)
class RiverParams(ExternalParams):
    ref: str = field(metadata=_required(
        "A function returning a River estimator, or an estimator, as package.module:Name",
        form=OBJECT_REF,
    ))  # fmt: skip


# the field of spec.model.<algorithm> naming what to load, and what it is read as
EXTERNAL_REF = {"custom": "class", "river": "pipeline"}
EXTERNAL_PARAMS: dict[str, type[ExternalParams]] = {"custom": CustomParams, "river": RiverParams}


@dataclass(frozen=True)
class VWParams:
    """``spec.model.vw`` (``algorithm: vw``): Vowpal Wabbit's own command-line arguments, as
    one string (``--loss_function logistic -b 20 -q nc``). tideline adds what it owns:
    ``--quiet``, ``--save_resume`` (with ``--preserve_performance_counters``), the link of the
    loss (:data:`VW_LOSSES`), and the task's loss when none is given; it refuses the
    arguments of :data:`VW_REFUSED`.

    >>> VWParams("-b 20 --loss_function=squared").option("bit_precision")
    '20'
    >>> VWParams().loss("binary"), VWParams("--l2 1e-6").loss("regression")
    ('logistic', 'squared')
    """

    # (read by hand: "" is VW's defaults too, and spacing is collapsed; no default in the CRD,
    # which would write args: "" into every vw: {})
    args: str = _text(
        "",
        "VW's arguments (like -b 20 -q nc --l2 1e-6); tideline adds --quiet, --save_resume, the "
        "link and the task's default loss",
        crd_default=False,
    )

    @property
    def ref(self) -> str:
        """How messages name the model (``vw --loss_function logistic``)."""
        return f"vw {self.args}".rstrip()

    def option(self, name: str) -> str | None:
        """The value of VW's option ``name`` (its long name) as the last one given sets it;
        None when absent (or a flag)."""
        values = [a.value for a in vw_arguments(self.args) if a.name == name]
        return values[-1] if values else None

    def loss(self, task: str) -> str:
        """The loss VW learns with: ``--loss_function`` as given, else the task's default
        (the first of :data:`VW_LOSSES`)."""
        return self.option("loss_function") or next(iter(VW_LOSSES[task]))

    def to_dict(self, algorithm: str = "vw") -> dict[str, Any]:
        """The manifest's own shape (``{args: ...}``)."""
        return {"args": self.args}


class VWArgument(NamedTuple):
    name: str  # the option's long name (bit_precision for -b)
    value: str | None  # attached (--name=v, -b18) or the word after it; None before an option
    word: str  # as written


# VW's one-letter options (VW 9.11), by their long names
VW_SHORT = {"a": "audit", "b": "bit_precision", "c": "cache", "C": "constant", "d": "data",
            "f": "final_regressor", "h": "help", "i": "initial_regressor", "k": "kill_cache",
            "l": "learning_rate", "p": "predictions", "P": "progress", "q": "quadratic",
            "r": "raw_predictions", "t": "testonly"}  # fmt: skip
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def vw_arguments(args: str) -> list[VWArgument]:
    """VW's arguments in order, each option with the value attached to it or the word after
    it. VW's parser alone knows which options are flags (``--adaptive``); this reading is
    enough to see which options are given, and the values of those that take one.

    >>> [(a.name, a.value) for a in vw_arguments("--loss_function=logistic -b18 --initial_weight -0.5")]
    [('loss_function', 'logistic'), ('bit_precision', '18'), ('initial_weight', '-0.5')]
    >>> vw_arguments("train.vw --adaptive")
    Traceback (most recent call last):
    ...
    ValueError: must start with an option: VW reads a leading word as a data file (got 'train.vw')
    """
    out: list[VWArgument] = []
    for word in args.split():
        if word.startswith("-") and len(word) > 1 and not _NUMBER.match(word):
            if word.startswith("--"):
                name, eq, value = word[2:].partition("=")
                out.append(VWArgument(name, value if eq else None, word))
            else:
                out.append(VWArgument(VW_SHORT.get(word[1], word[1]), word[2:] or None, word))
        elif not out:
            raise ValueError("must start with an option: VW reads a leading word as a data "
                             f"file (got {word!r})")  # fmt: skip
        elif out[-1].value is None:
            out[-1] = out[-1]._replace(value=word)
        # (else a vector option's next value, -q ab cd, or a word VW reads as a data file, as
        # it does one after a flag that this reading took for a value: VW says so, at load)
    return out


# The losses of algorithm: vw by task, each with the link tideline sets for it: a binary
# model serves the probability of class 1 (VW's logistic loss on labels -1/+1, through its
# logistic link), a regression the value, a multiclass model each class's probability
# (one-against-all, --oaa k --probabilities: VW turns each class's score into its
# probability itself, and warns for any loss but logistic). The first is the task's default.
VW_LOSSES: dict[str, dict[str, str]] = {
    "binary": {"logistic": "logistic"},
    "multiclass": {"logistic": "identity"},
    "regression": {"squared": "identity", "classic": "identity", "quantile": "identity",
                   "expectile": "identity", "poisson": "poisson"},
}  # fmt: skip
# -b: 2^24 weights, times VW's stride of up to 4 floats, is 256 MiB; more is more than a
# learner pod is given (and -b 40 fails in VW's allocator, which writes to stderr).
MAX_VW_BITS = 24
# VW's arguments spec.model.vw.args refuses: tideline owns them, or they would break its loop.
VW_REFUSED: dict[str, str] = {
    **dict.fromkeys(
        ("data", "cache", "cache_file", "kill_cache", "passes", "json", "dsjson", "csv",
         "flatbuffer"),
        "tideline feeds VW the stream's rows, in VW's text format, in one pass"),
    **dict.fromkeys(
        ("final_regressor", "initial_regressor", "save_resume", "predict_only_model",
         "preserve_performance_counters", "save_per_pass"),
        "tideline keeps the model's state (VW's own model bytes, with --save_resume)"),
    **dict.fromkeys(
        ("dictionary", "dictionary_path", "feature_mask", "input_feature_regularizer"),
        "it reads files: a model is its arguments and its own bytes"),
    **dict.fromkeys(
        ("quiet", "progress", "audit", "audit_regressor", "predictions", "raw_predictions",
         "readable_model", "invert_hash", "output_feature_regularizer_binary",
         "output_feature_regularizer_text", "dump_json_weights_experimental", "extra_metrics",
         "log_level", "log_output", "driver_output", "driver_output_off", "limit_output",
         "help", "version"),
        "it writes files or output: VW runs --quiet in tideline's pods"),
    **dict.fromkeys(
        ("daemon", "foreground", "port", "port_file", "pid_file", "num_children", "span_server",
         "span_server_port", "unique_id", "total", "node", "sendto"),
        "a VW server or cluster: tideline serves and scales the model"),
    **dict.fromkeys(("testonly", "dry_run"), "VW would not learn"),
    **dict.fromkeys(
        ("link", "binary"),
        "tideline sets the link from the loss (a binary model serves probabilities)"),
    "indexing": "tideline writes a multiclass label as its class's index plus one "
                "(--indexing 1)",
}  # fmt: skip

Params = SGDParams | FTRLParams | ForestParams | ExternalParams | VWParams
PARAM_TYPES: dict[str, type[SGDParams] | type[FTRLParams] | type[ForestParams]] = {
    "sgd": SGDParams, "ftrl": FTRLParams, "forest": ForestParams,
}  # fmt: skip


@dataclass(frozen=True)
class Feature:
    name: str = field(metadata=_required("Feature name (the key in request rows)", 1, 253))
    type: Literal["numeric", "categorical"] = _choice(
        "numeric", FEATURE_TYPES, "numeric (standardised online) or categorical (hashed)"
    )
    # (the parser's, not given: a numeric feature's 0.0, a categorical one's None)
    default: float | str | None = _any(
        None,
        "Value used when the feature is missing: a number for a numeric feature, a string "
        "(or integer) for a categorical one",
    )
    # (no default in the CRD: a numeric feature has no buckets)
    buckets: int = _number(
        1024, "Hash buckets of a categorical feature", 2, 1 << 20, crd_default=False
    )

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "type": self.type, "default": self.default}
        if self.type == "categorical":
            d["buckets"] = self.buckets
        return d


# spec.model.warmStart.storageUri: an object in S3 (or a store speaking its API), in Google
# Cloud Storage through its S3-interoperable XML API (HMAC keys), or at an HTTP(S) URL, as
# KServe's and Seldon's storageUri
STORAGE_SCHEMES = ("s3", "gs", "https", "http")
STORAGE_URI = Form(r"^(s3|gs)://[a-z0-9][-a-z0-9._]{1,61}[a-z0-9]/[^\s]+$|^https?://[^\s/]+/[^\s]*$",
                   "s3://bucket/key, gs://bucket/key or an http(s):// URL")  # fmt: skip
SHA256 = Form(r"^[0-9a-f]{64}$", "64 lowercase hex digits")
HTTP_URL = Form(r"^https?://[^\s/]+/?$", "http(s)://host[:port]")


@dataclass(frozen=True)
class WarmStart:
    """``spec.model.warmStart``: the snapshot a revision's first version starts from, from
    exactly one of a ConfigMap's key, a file, or object storage (``storageUri``)."""

    configMapName: str | None = _text(None, "ConfigMap name")  # (configMapRef.name)
    key: str = _text("baseline.json", "Key in the ConfigMap")
    file: str | None = _text(None, "A path instead (local runs)")
    storageUri: str | None = _text(
        None, "Or an object: s3://bucket/key, gs://bucket/key or an http(s):// URL", STORAGE_URI
    )
    sha256: str | None = _text(
        None, "The snapshot's SHA-256 (hex), checked before it is read", SHA256
    )
    endpoint: str | None = _text(
        None,
        "s3:// and gs://: the store's URL (default AWS's, or https://storage.googleapis.com "
        "for gs://)",
        HTTP_URL,
    )
    region: str | None = _text(None, "s3:// and gs://: the bucket's region")
    # (secretRef.name) its AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, KServe's keys
    secretName: str | None = _text(
        None, "s3:// and gs://: Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )
    # (caBundle.configMapRef.name, caBundle.key) a private CA's certificates, for the store's
    # or the URL's server only (the learner's Redis and Kafka keep their own)
    caConfigMapName: str | None = _text(None, "ConfigMap holding the CA bundle (PEM)")
    caKey: str = _text("ca.crt", "Key of the CA bundle in the ConfigMap")

    @property
    def source(self) -> str:
        """Which one it is: ``configMapRef``, ``file`` or ``storageUri``."""
        if self.storageUri is not None:
            return "storageUri"
        return "file" if self.file is not None else "configMapRef"

    def revision_material(self) -> dict[str, Any]:
        """What of it makes a revision: a field added later only when given (an upgrade
        rolls no model out), and never the Secret (credentials change nothing learned)."""
        d = asdict(self)
        for name in ("secretName", "caConfigMapName", "caKey"):
            del d[name]
        for name in ("storageUri", "sha256", "endpoint", "region"):
            if d[name] is None:
                del d[name]
        return d


@dataclass(frozen=True, kw_only=True)  # (keywords: task and algorithm have defaults)
class ModelSpec:
    task: Literal["binary", "regression", "multiclass"] = _choice(
        "binary", TASKS, "What is predicted"
    )
    algorithm: Literal["sgd", "ftrl", "forest", "custom", "river", "vw"] = _choice(
        "sgd", ALGORITHMS, "The online learner"
    )
    features: tuple[Feature, ...]
    params: Params  # ExternalParams for custom and river, VWParams for vw
    warmStart: WarmStart | None = None
    # multiclass: the class names, label i being classes[i] (None for the other tasks)
    classes: tuple[str, ...] | None = _names(
        "task: multiclass: the class names; label i names the i-th", 2, MAX_CLASSES
    )
    # what comparing two versions counts (None: accuracy, or the squared error for
    # regression); changes no revision: it judges, it learns nothing
    metric: Literal["accuracy", "logloss", "squaredError"] | None = field(
        default=None,
        metadata={TABLE: Entry(
            "enum",
            "What a comparison of two versions counts - canary analysis, rollback, backtest, "
            "lift: accuracy (a classifier's default; differences in accuracy points), logloss "
            "(binary, multiclass: sees calibration, as a click-through model needs; "
            "differences and thresholds relative to the reference's log loss) or "
            "squaredError (regression's, relative)",
            choices=("accuracy", "logloss", "squaredError"),
            crd_default=False,
        )},
    )  # fmt: skip

    @property
    def external(self) -> bool:
        """Whether the learner is code from the model's image (custom, river, vw), not a
        built-in."""
        return isinstance(self.params, ExternalParams | VWParams)

    def to_dict(self) -> dict[str, Any]:
        """The mapping :func:`tideline.algorithms.make_learner` takes, defaults resolved."""
        d: dict[str, Any] = {
            "task": self.task,
            "algorithm": self.algorithm,
            "features": [f.to_dict() for f in self.features],
        }
        if self.classes is not None:  # (only then: a binary model's revision stays as it was)
            d["classes"] = list(self.classes)
        if isinstance(self.params, ExternalParams | VWParams):
            d[self.algorithm] = self.params.to_dict(self.algorithm)
        else:
            d["params"] = dataclasses.asdict(self.params)
        return d


@dataclass(frozen=True)
class ReplaySpec:
    size: int = _number(10_000, "Samples kept", 0, 10_000_000)
    fraction: float = _number(0.2, "Share of each update that is replayed", 0.0, 0.9)


@dataclass(frozen=True)
class Gate:
    holdout: int = _number(2000, "Latest samples the gate compares on", 0, 1_000_000)
    maxLossIncrease: float = _number(
        0.02, "Relative loss increase allowed over the served version", 0.0
    )


@dataclass(frozen=True)
class LabelDefault:
    """The label a logged prediction is learned with when none came ``after`` its time (no
    click: 0; no chargeback: legitimate)."""

    value: float | str | None = _any(None, "The label (required): a number, or a class name of "
                      "spec.model.classes")  # fmt: skip
    after: float = _duration("30m", "How long a prediction waits for its label before the "
                             "default (at most labelWindow)", 0.001, 30 * 86400)  # fmt: skip


LateLabel = Literal["ignore", "correct"]
# the learners that take sample weights, as lateLabel: correct learns with them
WEIGHTED_ALGORITHMS = ("sgd", "ftrl")


@dataclass(frozen=True)
class LearningSpec:
    batchSize: int = _number(64, "Largest mini-batch", 1, 100_000)
    maxBatchDelay: float = _duration("500ms", "Learn a partial batch after this long", 0.001, 3600)
    replay: ReplaySpec = _group(ReplaySpec, "Replay buffer against forgetting")
    # (was checkpointEvery, still read; a default in the CRD would stand beside an old
    # manifest's checkpointEvery)
    publishEvery: int = _number(
        5000, "Updates between published versions", 1, None, crd_default=False
    )
    keepVersions: int = _number(20, "Versions kept per revision", 2, 10_000)
    labelWindow: float = _duration(
        "30m", "How long a logged prediction waits for its label", 0.001, 30 * 86400
    )
    gate: Gate = _group(Gate, "A version is published only if it passes")
    labelDefault: LabelDefault | None = _group(
        LabelDefault, "Learn predictions no label came for with this one", optional=True
    )
    history: float = _duration(
        "0s", "How long joined samples are kept, for a new revision's catch-up and backtest "
        "(0: none)", 0.0, 30 * 86400,
    )  # fmt: skip
    lateLabel: LateLabel = _choice(
        "ignore",
        get_args(LateLabel),
        "A label that comes after its prediction's default was learned: dead-lettered "
        "(after-default), or learned as a correction (binary; fake-negative weighting)",
    )


@dataclass(frozen=True)
class Autoscaling:
    minReplicas: int = _number(1, "Minimum", 1, 1000)
    maxReplicas: int = _number(10, "Maximum", 1, 1000)
    targetCPUUtilizationPercentage: int = _number(70, "CPU target", 1, 100)


@dataclass(frozen=True)
class SecretKey:
    """A key of a Secret, as ``secretRef: {name, key}`` names it; each place that takes one
    has its own default key, in a subclass (:func:`_secret_ref`)."""

    name: str = field(metadata=_required("Secret name"))
    key: str


def _secret_ref(name: str, key: str) -> type[SecretKey]:
    """The group of the field table ``name``: a :class:`SecretKey` whose key defaults to ``key``."""
    cls = dataclasses.make_dataclass(
        name, [("key", str, _text(key, "Key"))], bases=(SecretKey,), frozen=True
    )
    cls.__module__ = __name__
    return cls


TokenRef = _secret_ref("TokenRef", "token")  # spec.serving.feedbackAuth.secretRef
PasswordRef = _secret_ref("PasswordRef", "password")  # spec.source.kafka.sasl.secretRef
# spec.source.kafka.tls.<what>SecretRef: the keys Strimzi's Secrets hold
CaRef = _secret_ref("CaRef", "ca.crt")
CertRef = _secret_ref("CertRef", "user.crt")
KeyRef = _secret_ref("KeyRef", "user.key")


@dataclass(frozen=True)
class ServingSpec:
    replicas: int = _number(2, "Server replicas", 0, 1000)
    timeout: float = _duration("10ms", "Past it, the fallback answers", 0.0001, 60)
    # lastGood, or a fixed answer: a number (a multiclass model's: its class's index,
    # written {class: NAME})
    fallback: Literal["lastGood"] | float = _any(
        "lastGood", "lastGood, or {value: N} (multiclass: {class: NAME})"
    )
    routingKey: str | None = _text(None, "Feature that keys the canary split")
    autoscaling: Autoscaling | None = _group(
        Autoscaling, "A HorizontalPodAutoscaler for the servers", optional=True
    )
    # a token the write routes (feedback, :learn) require: Authorization: Bearer <token>
    feedbackAuth: SecretKey | None = None  # (a TokenRef)
    labelsPort: int | None = _number(
        None,
        "A port of their own for feedback and :learn (a NetworkPolicy can then admit labels "
        "from few)",
        1024,
        65535,
        integer=True,
    )
    networkPolicy: NetworkPolicySpec | None = None


@dataclass(frozen=True)
class NetworkPolicySpec:
    """Who may reach the model's servers: NetworkPolicyPeers (None: anyone) per port."""

    predictFrom: tuple[dict[str, Any], ...] | None = None
    labelsFrom: tuple[dict[str, Any], ...] | None = None


@dataclass(frozen=True)
class DistributionDrift:
    method: Literal["psi", "ks"] = _choice("psi", DRIFT_METHODS, "Statistic")
    threshold: float = _number(0.2, "Alarm above", 0.0)
    window: int = _number(5000, "Reference and current window size", 10, 10_000_000)


@dataclass(frozen=True)
class ConceptDriftSpec:
    method: Literal["adwin", "page-hinkley"] = _choice("adwin", CONCEPT_METHODS, "Detector")
    delta: float = _number(0.002, "Detector confidence", 1e-12, 1.0)


@dataclass(frozen=True)
class DriftSpec:
    features: DistributionDrift = _group(
        DistributionDrift, "Feature drift against a reference window"
    )
    predictions: DistributionDrift = _group(DistributionDrift, "Prediction drift")
    concept: ConceptDriftSpec = _group(ConceptDriftSpec, "Concept drift on the joined error stream")
    sampleRate: float = _number(
        1.0,
        "The share of logged requests the feature and prediction drift detectors read "
        "(quality and concept drift read every labelled one)",
        0.0001,
        1.0,
    )


@dataclass(frozen=True)
class Guardrails:
    maxAccuracyDrop: float = _number(0.05, "Below lastGood's accuracy by more: roll back", 0.0, 1.0)
    onConceptDrift: Literal["adapt", "rollback", "pause", "alert"] = _choice(
        "adapt",
        CONCEPT_POLICIES,
        "What concept drift (the error went up) does: adapt (learn faster for a while), "
        "rollback (only to a proven version that is better on the same samples, else adapt), "
        "pause learning, or alert",
    )
    maxErrorRate: float = _number(0.01, "Server error rate above which to roll back", 0.0, 1.0)


@dataclass(frozen=True)
class Analysis:
    interval: float = _duration("10s", "Analysis period", 0.1, 3600)
    minSamples: int = _number(500, "Canary labels before a verdict", 0, None)
    maxAccuracyDrop: float = _number(0.01, "Canary below stable by more: a failure", 0.0, 1.0)
    maxErrorRate: float = _number(0.01, "Canary error rate above: a failure", 0.0, 1.0)
    maxP95Latency: float = _duration("10ms", "Canary p95 latency above: a failure", 0.0, 60)
    failureLimit: int = _number(2, "Failures that abort", 1, 1000)


MAX_STEPS = 100  # spec.rollout.steps


@dataclass(frozen=True)
class Step:
    """One rollout step: exactly one of the three is set.

    ``pause`` of ``math.inf`` waits for a manual promote. (``analysis``, given as an object,
    has no entry: the parser and the CRD write it by hand.)
    """

    setWeight: int | None = _number(None, "Canary share of traffic, %", 0, 100, integer=True)
    # seconds (the manifest's duration, or {duration: D}), or {}: math.inf
    pause: float | None = _any(None, "A duration, or {} to wait for a manual promote")
    analysis: bool = False
    # {window: D}: the candidate against stable on the last D of labelled history (seconds)
    backtest: float | None = None


@dataclass(frozen=True)
class RolloutSpec:
    steps: tuple[Step, ...] = (
        Step(setWeight=10),
        Step(pause=60.0),
        Step(setWeight=50),
        Step(pause=60.0),
    )
    analysis: Analysis = _group(Analysis, "What a canary must hold to advance")
    shadow: bool = _flag(False, "Mirror instead of split")
    # or the HTTPRoute name
    trafficRouting: Literal["builtin"] | str = _any(
        "builtin", "builtin, or {gatewayAPI: {httpRoute: NAME}}"
    )


@dataclass(frozen=True)
class RedisSpec:
    url: str | None = _text(None, "redis://host:port/db")
    secretName: str | None = _text(None, "Secret name")  # (secretRef.name)
    secretKey: str = _text("url", "Key")  # (secretRef.key)


KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# the SASL password reaches the pods in this variable (the operator sets it from the Secret)
KAFKA_PASSWORD_ENV = "TIDELINE_KAFKA_PASSWORD"
# and the TLS certificates (PEM) in these: the brokers' CA, the client's certificate and key
KAFKA_TLS_ENV = {
    "ca": "TIDELINE_KAFKA_CA",
    "cert": "TIDELINE_KAFKA_CERT",
    "key": "TIDELINE_KAFKA_KEY",
}
START_FROM = ("latest", "earliest")
# a Kafka topic name, as the broker checks it
TOPIC = Form(r"^[a-zA-Z0-9._-]{1,249}$", "a Kafka topic name")
BOOTSTRAP = Form(r"^[^,:\s]+:[0-9]{1,5}(,[^,:\s]+:[0-9]{1,5})*$", "host:port[,host:port...]")


@dataclass(frozen=True, kw_only=True)  # (keywords: mechanism has a default)
class KafkaSasl:
    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = _choice(
        "PLAIN", SASL_MECHANISMS, "SASL mechanism"
    )
    username: str = field(metadata=_required("User name"))
    password: SecretKey  # (a PasswordRef, at secretRef)


@dataclass(frozen=True)
class KafkaTls:
    """``spec.source.kafka.tls``: certificates (PEM) in Secrets, for SSL and SASL_SSL. ``ca``:
    the CA the brokers' certificates are checked against (a cluster's own, such as Strimzi's
    ``<cluster>-cluster-ca-cert``), instead of the image's public ones; ``cert`` and ``key``:
    the client's own, for brokers that authenticate clients by certificate (mutual TLS)."""

    # (at <what>SecretRef)
    ca: SecretKey | None = _group(
        CaRef,
        "The CA the brokers' certificates are checked against (default: the image's public CAs)",
        optional=True,
    )
    cert: SecretKey | None = _group(
        CertRef, "The client's certificate (mutual TLS; with keySecretRef)", optional=True
    )
    key: SecretKey | None = _group(KeyRef, "The client certificate's private key", optional=True)

    def refs(self) -> dict[str, SecretKey]:
        """The Secrets given, by what they hold (``ca``, ``cert``, ``key``)."""
        return {k: v for k, v in (("ca", self.ca), ("cert", self.cert), ("key", self.key)) if v}


@dataclass(frozen=True)
class KafkaSource:
    """``spec.source.kafka``: the labelled samples and the feedback come from Kafka topics.

    Predictions are still logged to Redis (the servers' log); only these two
    streams move. ``startFrom``: where a model's first learner starts on a
    topic (later ones resume where the checkpoint says)."""

    bootstrapServers: str = field(metadata=_required(BOOTSTRAP.name, form=BOOTSTRAP))
    # (at topics.samples and topics.feedback)
    samples: str | None = _text(None, '{"features": {...}, "label": y}', TOPIC)
    feedback: str | None = _text(None, '{"id": ..., "label": y}', TOPIC)
    groupId: str | None = _text(None, "Consumer group prefix (default tideline.<namespace>.<name>)")
    securityProtocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = _choice(
        "PLAINTEXT", KAFKA_PROTOCOLS, "How clients talk to the brokers"
    )
    sasl: KafkaSasl | None = None
    tls: KafkaTls | None = None
    startFrom: Literal["latest", "earliest"] = _choice(
        "latest", START_FROM, "Where a model's first learner starts on a topic"
    )


@dataclass(frozen=True)
class SourceSpec:
    """``spec.source``: where labelled samples and feedback come from (Redis streams
    when ``kafka`` is not given)."""

    kafka: KafkaSource | None = None


# spec.notify: the operator's Events a webhook can be sent on (tideline_operator.rollout
# posts them), and those it is sent on unless ``events`` says otherwise: its decisions that
# change what is served (a rollback, an unpin, a promotion, an abort, a failed backtest)
# and concept drift.
NOTIFY_EVENTS = (
    "RolledBack", "Unpinned", "Promoted", "RolloutAborted", "BacktestFailed", "ConceptDrift",
    "Deployed", "CanaryStarted", "BacktestPassed", "BacktestInconclusive", "Proven",
    "StoreReset", "StoreRecovered", "StoreFull", "StoreAccepting", "LearnerMemoryNearLimit",
    "LearnerMemoryOk", "ImportFailed", "MissingMethod", "BadParams", "ModelLoaded",
    "ActionFailed", "WarmStartFailed",
)  # fmt: skip
NOTIFY_DEFAULT = NOTIFY_EVENTS[:6]
NOTIFY_FORMATS = ("json", "slack")
MAX_NOTIFY = 10  # spec.notify: receivers per model
UrlRef = _secret_ref("UrlRef", "url")  # spec.notify[].url.secretRef


@dataclass(frozen=True)
class Notify:
    """One receiver of ``spec.notify``: a webhook the operator posts its Events to.

    The URL is read from a Secret only (a Slack webhook's path is its token), and never
    logged: the operator names the Secret and key instead. ``events``: the Events' reasons
    (not ``on``, which YAML 1.1 - kubectl's, PyYAML's - reads as ``true``).
    """

    url: SecretKey  # (a UrlRef, at url.secretRef)
    format: Literal["json", "slack"] = _choice(
        "json",
        NOTIFY_FORMATS,
        "json: the Event and the model's revisions and versions as one object; slack: "
        "Slack's incoming-webhook message (text and blocks)",
    )
    events: tuple[str, ...] = field(
        default=NOTIFY_DEFAULT,
        metadata={
            TABLE: Entry(
                "names",
                f"The Events (reasons) it is sent on (default: {', '.join(NOTIFY_DEFAULT)})",
                1,
                len(NOTIFY_EVENTS),
                choices=NOTIFY_EVENTS,
                crd_default=False,
            )
        },
    )


COMPONENTS = ("learner", "server", "monitor")
# a Kubernetes quantity (500m, 2, 1Gi); the CRD's pattern is this one
QUANTITY_PATTERN = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$"
_QUANTITY = re.compile(QUANTITY_PATTERN)
TOLERATION_OPERATORS = ("Exists", "Equal")
MAX_TOLERATIONS = 100  # spec.pods(.<component>).tolerations
MAX_PULL_SECRETS = 20  # spec.pods(.<component>).imagePullSecrets
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True)
class PodSpec:
    """Where a component's pods run and what they ask for (Kubernetes' own shapes, as JSON).

    ``None`` means unset: the component's own, or ``spec.pods``', or the operator's
    defaults apply."""

    resources: dict[str, Any] | None = None
    nodeSelector: dict[str, str] | None = None
    tolerations: tuple[dict[str, Any], ...] | None = None
    affinity: dict[str, Any] | None = None
    imagePullSecrets: tuple[str, ...] | None = None

    def over(self, base: PodSpec) -> PodSpec:
        """These settings, each falling back to ``base``'s where unset."""
        return PodSpec(**{k: v if v is not None else getattr(base, k)
                          for k, v in self.__dict__.items()})  # fmt: skip


@dataclass(frozen=True)
class PodsSpec:
    """``spec.pods``: settings for every component's pods, and per component."""

    all: PodSpec = field(default_factory=PodSpec)
    learner: PodSpec = field(default_factory=PodSpec)
    server: PodSpec = field(default_factory=PodSpec)
    monitor: PodSpec = field(default_factory=PodSpec)

    def of(self, component: str) -> PodSpec:
        own: PodSpec = getattr(self, component)
        return own.over(self.all)


@dataclass(frozen=True)
class Spec:
    model: ModelSpec
    image: str | None = _text(None, "Runtime image (default: the operator's)")
    learning: LearningSpec = _group(LearningSpec, "How the learner updates and publishes")
    serving: ServingSpec = _group(ServingSpec, "Prediction servers")
    drift: DriftSpec = _group(DriftSpec, "Drift detection")
    guardrails: Guardrails = _group(Guardrails, "Automatic model-version rollback")
    rollout: RolloutSpec = _group(RolloutSpec, "Canary of a new revision")
    redis: RedisSpec = field(default_factory=RedisSpec)
    pods: PodsSpec = field(default_factory=PodsSpec)
    source: SourceSpec = field(default_factory=SourceSpec)
    notify: tuple[Notify, ...] = ()  # webhooks on the operator's Events (no revision changes)
    # fields read under a name that is going away: (path, what to write instead)
    deprecated: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class OnlineModel:
    name: str
    namespace: str
    spec: Spec

    @functools.cached_property
    def revision(self) -> str:
        return revision(self.spec)


# --------------------------------------------------------------------------- reading


class _Obj:
    """A mapping being read at a path; every key must be consumed or it is unknown."""

    def __init__(self, value: Any, path: str) -> None:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise SpecError(path, f"must be an object (got {type(value).__name__})")
        self.value = value
        self.path = path
        self.seen: set[str] = set()

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}"

    def raw(self, key: str) -> Any:
        self.seen.add(key)
        return self.value.get(key)

    def obj(self, key: str) -> _Obj:
        return _Obj(self.raw(key), self.sub(key))

    def objects(self, key: str, what: str, most: int) -> list[_Obj] | None:
        """A list of at most ``most`` objects, each read at its own path (``key[i]``); None
        when absent."""
        raw = self.raw(key)
        if raw is None:
            return None
        if not isinstance(raw, list):
            raise SpecError(self.sub(key), f"must be a list of {what}")
        if len(raw) > most:
            raise SpecError(self.sub(key), f"at most {most} (got {len(raw)})")
        return [_Obj(item, f"{self.sub(key)}[{i}]") for i, item in enumerate(raw)]

    def done(self) -> None:
        unknown = sorted(set(self.value) - self.seen, key=str)  # keys of mixed types too
        if unknown:
            key = unknown[0]
            hint = difflib.get_close_matches(str(key), sorted(self.seen), n=1)
            extra = f" (did you mean {hint[0]}?)" if hint else ""
            raise SpecError(self.sub(str(key)), f"unknown field{extra}")

    def string(self, key: str, default: str | None = None, *, required: bool = False) -> Any:
        v = self.raw(key)
        if v is None:
            if required:
                raise SpecError(self.sub(key), "required")
            return default
        if not isinstance(v, str) or not v:
            raise SpecError(self.sub(key), f"must be a non-empty string (got {v!r})")
        return v

    def enum(self, key: str, choices: tuple[str, ...], default: str | None = None) -> Any:
        v = self.string(key, default, required=default is None)
        if v not in choices:
            raise SpecError(self.sub(key), f"must be one of {', '.join(choices)} (got {v!r})")
        return v

    def number(
        self,
        key: str,
        default: float | None,
        lo: float | None = None,
        hi: float | None = None,
        *,
        integer: bool = False,
    ) -> Any:
        v = self.raw(key)
        if v is None:
            return default
        return _check_number(self.sub(key), v, lo, hi, integer=integer)

    def boolean(self, key: str, default: bool) -> bool:
        v = self.raw(key)
        if v is None:
            return default
        if not isinstance(v, bool):
            raise SpecError(self.sub(key), f"must be true or false (got {v!r})")
        return v

    def duration(
        self, key: str, default: float, lo: float | None = 0.0, hi: float | None = None
    ) -> float:
        v = self.raw(key)
        if v is None:
            return default
        seconds = parse_duration(v, self.sub(key))
        return float(_check_number(self.sub(key), seconds, lo, hi))


def _read(o: _Obj, cls: type[T], **given: Any) -> T:
    """A group of the field table at ``o``: each field read by its entry (default, bounds,
    choices), groups in turn; ``given``: the fields the caller reads itself. A key no field
    reads is refused."""
    values = dict(given)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in given:
            values[f.name] = _read_as(o, cls, f.name)
    o.done()
    return cls(**values)


def _read_as(o: _Obj, cls: type, name: str, key: str | None = None) -> Any:
    """The field ``name`` of ``cls`` read by its entry, at ``key`` (its name) of ``o``: for a
    field whose group has a shape of its own (``spec.redis.secretRef.key`` is
    ``RedisSpec.secretKey``)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    if TABLE not in f.metadata:
        raise TypeError(f"{cls.__name__}.{name} is not in the field table: pass it")
    default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
    return _read_field(o, key or name, default, f.metadata[TABLE])


def _read_field(o: _Obj, name: str, default: Any, e: Entry) -> Any:
    match e.kind:
        case "integer" | "number":
            return o.number(name, default, e.lo, e.hi, integer=e.kind == "integer")
        case "duration":
            return o.duration(name, default, e.lo, e.hi)
        case "enum":
            return o.enum(name, e.choices, default)
        case "boolean":
            return o.boolean(name, default)
        case "map":
            raw = o.raw(name)
            return default if raw is None else dict(_Obj(raw, o.sub(name)).value)
        case "names":
            names = _names_at(o, name, e)
            return default if names is None else names
        case "string":
            v = o.string(name, None if e.required else default, required=e.required)
            if v is not None and e.hi is not None and len(v) > e.hi:
                raise SpecError(o.sub(name), f"must be at most {e.hi:g} characters (got {len(v)})")
            if v is not None and e.form is not None and not re.match(e.form.pattern, v):
                raise SpecError(o.sub(name), f"must be {e.form.name} (got {v!r})")
            return v
        case "object":
            assert e.group is not None
            if default is None and o.raw(name) is None:  # an optional group, not given
                return None
            return _read(o.obj(name), e.group)
        case "any":
            raise TypeError(f"{o.sub(name)} has a shape of its own: read it by hand")


def _names_at(o: _Obj, name: str, e: Entry) -> tuple[str, ...] | None:
    """A list of distinct non-empty strings, as many as the entry's bounds say."""
    raw, path = o.raw(name), o.sub(name)
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise SpecError(path, f"must be a list of names (got {type(raw).__name__})")
    if not (e.lo or 0) <= len(raw) <= (e.hi or math.inf):
        raise SpecError(path, f"must hold {e.lo or 0:g} to {e.hi:g} names (got {len(raw)})")
    seen: set[str] = set()
    for i, item in enumerate(raw):
        if not isinstance(item, str) or not item:
            raise SpecError(f"{path}[{i}]", f"must be a non-empty string (got {item!r})")
        if e.choices and item not in e.choices:
            raise SpecError(f"{path}[{i}]", f"must be one of {', '.join(e.choices)} (got {item!r})")
        if item in seen:
            raise SpecError(f"{path}[{i}]", f"duplicate name {item!r}")
        seen.add(item)
    return tuple(raw)


def _check_number(
    path: str, v: Any, lo: float | None, hi: float | None, *, integer: bool = False
) -> float | int:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise SpecError(path, f"must be a number (got {v!r})")
    if not math.isfinite(v):
        raise SpecError(path, f"must be finite (got {v!r})")
    if integer and v != int(v):
        raise SpecError(path, f"must be an integer (got {v!r})")
    if lo is not None and v < lo:
        raise SpecError(path, f"must be >= {lo:g} (got {v:g})")
    if hi is not None and v > hi:
        raise SpecError(path, f"must be <= {hi:g} (got {v:g})")
    return int(v) if integer else float(v)


def _pods(o: _Obj) -> PodsSpec:
    """``spec.pods``: the shared settings, and ``learner``/``server``/``monitor`` over them
    (resources per component only: each needs its own)."""
    parts = {c: _pod(o.obj(c), resources=True) for c in COMPONENTS}
    shared = _pod(o, resources=False, extra=COMPONENTS)
    return PodsSpec(all=shared, **parts)


def _pod(o: _Obj, *, resources: bool, extra: tuple[str, ...] = ()) -> PodSpec:
    for key in extra:
        o.raw(key)  # read by the caller
    res = None
    if resources and o.raw("resources") is not None:
        r = o.obj("resources")
        res = {}
        for kind in ("requests", "limits"):
            q = r.obj(kind)
            amounts = {}
            for name, amount in q.value.items():
                q.raw(name)
                if (
                    isinstance(amount, bool)
                    or not isinstance(amount, str | int | float)
                    or not (_QUANTITY.match(str(amount)))
                ):
                    raise SpecError(q.sub(str(name)), f"must be a quantity like 500m, 2 or 1Gi "
                                    f"(got {amount!r})")  # fmt: skip
                amounts[str(name)] = amount
            q.done()
            if amounts:
                res[kind] = amounts
        r.done()
    selector = None
    if o.raw("nodeSelector") is not None:
        ns = o.obj("nodeSelector")
        selector = {}
        for k in list(ns.value):
            selector[str(k)] = ns.string(str(k), required=True)
        ns.done()
    tolerations = None
    if (items := o.objects("tolerations", "tolerations", MAX_TOLERATIONS)) is not None:
        for to in items:
            for key in ("key", "value"):
                to.string(key)
            to.enum("operator", TOLERATION_OPERATORS, "Equal")
            effect = to.raw("effect")
            if effect is not None and effect not in TAINT_EFFECTS:
                raise SpecError(to.sub("effect"), f"must be one of {', '.join(TAINT_EFFECTS)} "
                                f"(got {effect!r})")  # fmt: skip
            to.number("tolerationSeconds", None, integer=True)
            to.done()
        tolerations = tuple(dict(to.value) for to in items)
    affinity = None
    if o.raw("affinity") is not None:
        af = o.obj("affinity")
        for key in ("nodeAffinity", "podAffinity", "podAntiAffinity"):
            af.obj(key)  # objects; their insides are Kubernetes' to check
        af.done()
        affinity = dict(af.value)
    secrets = None
    if (refs := o.objects("imagePullSecrets", "{name}", MAX_PULL_SECRETS)) is not None:
        secrets = tuple(ro.string("name", required=True) for ro in refs)
        for ro in refs:
            ro.done()
    o.done()
    return PodSpec(res, selector, tolerations, affinity, secrets)


def parse_model(value: Mapping[str, Any], path: str = "spec.model") -> ModelSpec:
    """``spec.model`` alone, read as the manifest parser reads it (defaults filled in);
    :class:`SpecError` names the field that is wrong."""
    return _model(_Obj(value, path))


def _features(raw: Any, path: str) -> tuple[Feature, ...]:
    if raw is None:
        raise SpecError(path, "required: at least one feature")
    if not isinstance(raw, list) or not raw:
        raise SpecError(path, "must be a non-empty list of features")
    if len(raw) > MAX_FEATURES:
        raise SpecError(path, f"at most {MAX_FEATURES} features (got {len(raw)})")
    out: list[Feature] = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        o = _Obj(item, f"{path}[{i}]")
        name = _read_as(o, Feature, "name")
        if name in names:
            raise SpecError(o.sub("name"), f"duplicate feature name {name!r}")
        names.add(name)
        ftype = _read_as(o, Feature, "type")
        default: float | str | None
        if ftype == "numeric":
            d = o.raw("default")
            if isinstance(d, str):  # "12.5": the form a schema of int-or-string once needed
                try:
                    d = float(d)
                except ValueError:
                    raise SpecError(o.sub("default"), f"must be a number (got {d!r})") from None
            default = _check_number(o.sub("default"), d, None, None) if d is not None else 0.0
            buckets: dict[str, int] = {}  # (none: a numeric feature's is the dataclass's)
        else:
            d = o.raw("default")
            if d is not None and not isinstance(d, str | int):
                raise SpecError(o.sub("default"), f"must be a string or integer (got {d!r})")
            default = None if d is None else str(d)
            buckets = {"buckets": _read_as(o, Feature, "buckets")}
        o.done()
        out.append(Feature(name=name, type=ftype, default=default, **buckets))
    total = sum(f.buckets for f in out if f.type == "categorical")
    if total > MAX_BUCKETS:
        raise SpecError(
            path, f"the categorical features' buckets add up to {total}, over {MAX_BUCKETS}"
        )
    return tuple(out)


def _params(algorithm: str, o: _Obj) -> Params:
    return _read(o, PARAM_TYPES[algorithm])


def _external(algorithm: str, o: _Obj) -> ExternalParams:
    """``spec.model.custom`` or ``spec.model.river``: what to load and its arguments."""
    cls = EXTERNAL_PARAMS[algorithm]
    ref = _read_as(o, cls, "ref", EXTERNAL_REF[algorithm])
    params = _read_as(o, cls, "params")
    for name in params:
        if not isinstance(name, str) or not name.isidentifier():
            raise SpecError(f"{o.sub('params')}.{name}", "must be a Python identifier "
                            "(the parameters are keyword arguments)")  # fmt: skip
    try:  # JSON values only: what the manifest, the ConfigMap and the version header carry
        json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise SpecError(o.sub("params"), f"must hold JSON values ({e})") from None
    o.done()
    return cls(ref, params)


def _vw(task: str, o: _Obj) -> VWParams:
    """``spec.model.vw``: VW's arguments, whitespace collapsed (so that spacing changes no
    revision), refused when tideline owns them or they would break its loop."""
    raw, path = o.raw("args"), o.sub("args")
    o.done()
    if raw is not None and not isinstance(raw, str):
        raise SpecError(path, f"must be a string of VW's arguments (got {type(raw).__name__})")
    params = VWParams(" ".join(raw.split())) if raw else VWParams()
    try:
        arguments = vw_arguments(params.args)
    except ValueError as e:
        raise SpecError(path, str(e)) from None
    for a in arguments:
        if a.name in VW_REFUSED:
            long = a.word.startswith("--")
            shown = a.word.partition("=")[0] if long else f"{a.word[:2]} (--{a.name})"
            raise SpecError(path, f"{shown} is refused: {VW_REFUSED[a.name]}")
    losses = VW_LOSSES[task]
    if params.loss(task) not in losses:
        which = ", ".join(losses) if len(losses) == 1 else f"one of {', '.join(losses)}"
        raise SpecError(path, f"--loss_function {params.loss(task)} does not fit task {task}: "
                        f"it learns with {which}")  # fmt: skip
    bits = params.option("bit_precision")
    if bits is not None and not (bits.isdigit() and 1 <= int(bits) <= MAX_VW_BITS):
        raise SpecError(path, f"-b (--bit_precision) must be 1 to {MAX_VW_BITS} (got {bits})")
    return params


def _model(o: _Obj) -> ModelSpec:
    task = _read_as(o, ModelSpec, "task")
    algorithm = _read_as(o, ModelSpec, "algorithm")
    features = _features(o.raw("features"), o.sub("features"))
    params: Params
    for other in EXTERNAL_ALGORITHMS:
        if other != algorithm and o.raw(other) is not None:
            raise SpecError(o.sub(other), f"only with algorithm: {other} (got {algorithm})")
    if algorithm in EXTERNAL_ALGORITHMS:
        where = "args" if algorithm == "vw" else "params"
        if o.raw("params") is not None:
            raise SpecError(o.sub("params"), f"algorithm {algorithm} takes its parameters in "
                            f"spec.model.{algorithm}.{where}")  # fmt: skip
        if algorithm == "vw":  # (optional: VW's defaults, with the task's loss)
            params = _vw(task, o.obj("vw"))
        elif o.raw(algorithm) is None:
            raise SpecError(o.sub(algorithm), f"required with algorithm: {algorithm}")
        else:
            params = _external(algorithm, o.obj(algorithm))
    else:
        params = _params(algorithm, o.obj("params"))
    classes = _classes(o, task, algorithm, features, params)
    metric = _metric(o, task)
    warm = None
    if o.raw("warmStart") is not None:
        w = o.obj("warmStart")
        ref = w.obj("configMapRef")
        cm = _read_as(ref, WarmStart, "configMapName", "name")
        ref.done()
        secret = None
        if w.raw("secretRef") is not None:
            sref = w.obj("secretRef")
            secret = _read_as(sref, WarmStart, "secretName", "name")
            if secret is None:
                raise SpecError(sref.sub("name"), "required: the Secret's name")
            sref.done()
        ca: dict[str, Any] = {}
        if w.raw("caBundle") is not None:
            cb = w.obj("caBundle")
            cref = cb.obj("configMapRef")
            ca["caConfigMapName"] = _read_as(cref, WarmStart, "caConfigMapName", "name")
            cref.done()
            if ca["caConfigMapName"] is None:
                raise SpecError(cb.sub("configMapRef.name"), "required: the ConfigMap's name")
            ca["caKey"] = _read_as(cb, WarmStart, "caKey", "key")
            if not _CONFIG_MAP_KEY.fullmatch(ca["caKey"]) or ca["caKey"] in (".", ".."):
                raise SpecError(cb.sub("key"), "must be a ConfigMap key ([-._a-zA-Z0-9]+), "
                                f"not a path (got {ca['caKey']!r})")  # fmt: skip
            cb.done()
        warm = WarmStart(
            configMapName=cm,
            key=_read_as(w, WarmStart, "key"),
            file=_read_as(w, WarmStart, "file"),
            storageUri=_read_as(w, WarmStart, "storageUri"),
            sha256=_read_as(w, WarmStart, "sha256"),
            endpoint=_read_as(w, WarmStart, "endpoint"),
            region=_read_as(w, WarmStart, "region"),
            secretName=secret,
            **ca,
        )
        if not _CONFIG_MAP_KEY.fullmatch(warm.key) or warm.key in (".", ".."):
            # a ConfigMap key names a file in the mount, nothing outside it
            raise SpecError(
                w.sub("key"),
                f"must be a ConfigMap key ([-._a-zA-Z0-9]+), not a path (got {warm.key!r})",
            )
        w.done()
        _check_warm_start(warm, w)
    o.done()
    return ModelSpec(
        task=task,
        algorithm=algorithm,
        features=features,
        params=params,
        warmStart=warm,
        classes=classes,
        metric=metric,
    )


def _metric(o: _Obj, task: str) -> Any:
    """``spec.model.metric``, if given: one the task's comparisons can count."""
    if o.raw("metric") is None:
        return None
    from tideline.tasks import METRICS  # (the tasks read the spec's types)

    metric = str(_read_as(o, ModelSpec, "metric"))
    allowed = METRICS[task == "regression"]
    if metric not in allowed:
        raise SpecError(o.sub("metric"), f"a {task} model compares by {' or '.join(allowed)} "
                        f"(got {metric})")  # fmt: skip
    return metric


def _check_warm_start(warm: WarmStart, w: _Obj) -> None:
    """Exactly one source, and the storage fields only with the store they are for."""
    given = [name for name, v in (("configMapRef.name", warm.configMapName),
             ("file", warm.file), ("storageUri", warm.storageUri)) if v is not None]  # fmt: skip
    if len(given) != 1:
        got = f" (got {' and '.join(given)})" if given else ""
        raise SpecError(w.path, f"needs exactly one of configMapRef.name, file or storageUri{got}")
    scheme = (warm.storageUri or "").partition("://")[0]
    for name, v in (("endpoint", warm.endpoint), ("region", warm.region),
                    ("secretRef", warm.secretName)):  # fmt: skip
        if v is not None and scheme not in ("s3", "gs"):
            raise SpecError(w.sub(name), "only with a storageUri of s3:// or gs://")
    if warm.caConfigMapName is not None and warm.storageUri is None:
        raise SpecError(w.sub("caBundle"), "only with a storageUri")


def _classes(
    o: _Obj, task: str, algorithm: str, features: tuple[Feature, ...], params: Params
) -> tuple[str, ...] | None:
    """``spec.model.classes``: a multiclass model's class names, label ``i`` naming
    ``classes[i]``; refused for the other tasks, and where the model would outgrow the
    bounds a binary model keeps (see ``MAX_NEWTON_SIZE``)."""
    path = o.sub("classes")
    if task != "multiclass":
        if o.raw("classes") is not None:
            raise SpecError(path, f"only with task: multiclass (got {task})")
        return None
    classes = _read_as(o, ModelSpec, "classes")
    if classes is None:
        raise SpecError(path, "required with task: multiclass (the class names, label 0 first)")
    k = len(classes)
    if isinstance(params, VWParams):
        _vw_classes(params, k, f"{o.sub('vw')}.args")
    buckets = sum(f.buckets for f in features if f.type == "categorical")
    # (a linear model's weights, class by bucket; a team's model keeps its own: VW its -b)
    if algorithm in ("sgd", "ftrl") and k * buckets > MAX_BUCKETS:
        raise SpecError(path, f"{k} classes x {buckets} categorical buckets is {k * buckets} "
                        f"weights per array, over {MAX_BUCKETS}: fewer buckets or classes")  # fmt: skip
    numeric = sum(f.type == "numeric" for f in features) + 1  # (and the bias)
    if getattr(params, "optimizer", None) == "newton" and k * numeric**2 > MAX_NEWTON_SIZE:
        raise SpecError(path, f"sgd's newton keeps a {numeric}x{numeric} matrix per class: {k} "
                        f"classes make {k * numeric**2} numbers, over {MAX_NEWTON_SIZE}; "
                        "fewer numeric features or classes, or optimizer: adagrad")  # fmt: skip
    return classes


def _vw_classes(params: VWParams, k: int, path: str) -> None:
    """A multiclass VW model's arguments: one-against-all over the ``k`` classes (``--oaa k``,
    which tideline adds when it is left out, with ``--probabilities``; see
    :mod:`tideline.algorithms.vw`)."""
    oaa = params.option("oaa")
    if oaa is not None and oaa != str(k):
        raise SpecError(path, f"--oaa {oaa} does not fit the {k} classes of spec.model.classes: "
                        f"--oaa {k}, or leave it out (tideline adds it)")  # fmt: skip


def _learning(o: _Obj, model: ModelSpec, deprecated: list[tuple[str, str]]) -> LearningSpec:
    """``spec.learning``. ``checkpointEvery``, publishEvery's old name, is read and reported
    deprecated: checkpoints are written every second whatever it says; it sets how often a
    version is published."""
    given: dict[str, Any] = {}
    if o.raw("labelDefault") is not None:
        given["labelDefault"] = _label_default(o.obj("labelDefault"), model)
    old = o.number("checkpointEvery", None, entry(LearningSpec, "publishEvery").lo, None,
                   integer=True)  # fmt: skip
    if old is not None:
        if o.raw("publishEvery") not in (None, old):
            raise SpecError(
                o.sub("checkpointEvery"), "is publishEvery's old name: give only publishEvery"
            )
        deprecated.append((o.sub("checkpointEvery"), o.sub("publishEvery")))
        given["publishEvery"] = old
    learning = _read(o, LearningSpec, **given)
    d = learning.labelDefault
    if d is not None and d.after > learning.labelWindow:
        raise SpecError(o.sub("labelDefault.after"), f"must be at most labelWindow "
                        f"({d.after:g}s > {learning.labelWindow:g}s): a prediction leaves "
                        "the log after labelWindow")  # fmt: skip
    if learning.lateLabel == "correct":
        _late_correct(o.sub("lateLabel"), learning, model)
    return learning


def _late_correct(path: str, learning: LearningSpec, model: ModelSpec) -> None:
    """``lateLabel: correct`` learns a late positive beside its default, every row weighted
    (:class:`tideline.training.LateCorrection`): a binary task, a default to correct, and a
    learner that takes sample weights."""
    if learning.labelDefault is None:
        raise SpecError(path, "correct needs spec.learning.labelDefault: with no default "
                        "learned, no label comes after one")  # fmt: skip
    if model.task != "binary":
        raise SpecError(path, f"correct is for a binary task (its weighting is the fake "
                        f"negatives'), not {model.task}: use ignore")  # fmt: skip
    if model.algorithm not in WEIGHTED_ALGORITHMS:
        raise SpecError(path, f"correct learns with sample weights, which "
                        f"{', '.join(WEIGHTED_ALGORITHMS)} take and {model.algorithm} does "
                        "not: use ignore, or one of those")  # fmt: skip


def _label_default(o: _Obj, model: ModelSpec) -> LabelDefault:
    """``spec.learning.labelDefault``: its value one the task takes as a label."""
    from tideline.tasks import Task  # (the tasks read the spec's types)

    value = o.raw("value")
    if value is None:
        raise SpecError(o.sub("value"), "required")
    try:
        Task.of(model).target(value)
    except ValueError as e:
        raise SpecError(o.sub("value"), f"is not a label of this model: {e}") from None
    return _read(o, LabelDefault, value=value)


def _serving(o: _Obj, model: ModelSpec) -> ServingSpec:
    fb_raw = o.raw("fallback")
    fallback = ServingSpec.fallback  # (the table's default)
    if isinstance(fb_raw, Mapping):
        fallback = _fallback(o.obj("fallback"), model)
    elif fb_raw is not None and fb_raw != "lastGood":
        want = "{class: NAME}" if model.classes is not None else "{value: N}"
        raise SpecError(o.sub("fallback"), f"must be lastGood or {want} (got {fb_raw!r})")
    auth = None
    if o.raw("feedbackAuth") is not None:
        fa = o.obj("feedbackAuth")
        auth = _read(fa.obj("secretRef"), TokenRef)
        fa.done()
    policy = None
    if o.raw("networkPolicy") is not None:
        np_ = o.obj("networkPolicy")
        policy = NetworkPolicySpec(_peers(np_, "predictFrom"), _peers(np_, "labelsFrom"))
        np_.done()
    out = _read(o, ServingSpec, fallback=fallback, feedbackAuth=auth, networkPolicy=policy)
    auto = out.autoscaling
    if auto is not None and auto.maxReplicas < auto.minReplicas:
        raise SpecError(f"{o.sub('autoscaling')}.maxReplicas", "must be >= minReplicas")
    if out.labelsPort in (8080, 8081, 9100):
        raise SpecError(
            o.sub("labelsPort"),
            f"must differ from the servers' ports 8080, 8081 (gRPC) and 9100 (got {out.labelsPort})",
        )
    if policy is not None and policy.labelsFrom is not None and out.labelsPort is None:
        raise SpecError(
            f"{o.sub('networkPolicy')}.labelsFrom",
            "needs spec.serving.labelsPort (labels share the predict port otherwise)",
        )
    return out


def _fallback(f: _Obj, model: ModelSpec) -> float:
    """``serving.fallback`` as an object: ``{value: N}``, or a multiclass model's
    ``{class: NAME}``, kept as the class's index (label ``i`` names ``classes[i]``)."""
    classes = model.classes
    if classes is None:
        if f.raw("class") is not None:
            raise SpecError(f.sub("class"), f"only with task: multiclass (got {model.task}); "
                            "{value: N} answers a number")  # fmt: skip
        value = f.number("value", 0.5)
        if f.raw("value") is None:
            raise SpecError(f.sub("value"), "required when fallback is an object")
    else:
        if f.raw("value") is not None:
            raise SpecError(f.sub("value"), "a multiclass model's fallback is {class: NAME}")
        name = f.string("class", required=True)
        if name not in classes:
            raise SpecError(f.sub("class"), f"{name!r} is not one of spec.model.classes")
        value = float(classes.index(name))
    f.done()
    return value


def _steps(raw: Any, path: str) -> tuple[Step, ...]:
    if raw is None:
        return RolloutSpec().steps
    if not isinstance(raw, list):
        raise SpecError(path, "must be a list of steps")
    if len(raw) > MAX_STEPS:
        raise SpecError(path, f"at most {MAX_STEPS} steps (got {len(raw)})")
    steps: list[Step] = []
    for i, item in enumerate(raw):
        o = _Obj(item, f"{path}[{i}]")
        if len(o.value) != 1:
            raise SpecError(o.path, "must have exactly one of setWeight, pause, analysis, "
                            "backtest")  # fmt: skip
        if "setWeight" in o.value:
            steps.append(Step(setWeight=_read_as(o, Step, "setWeight")))
        elif "pause" in o.value:
            p = o.raw("pause")
            if p == {} or (isinstance(p, Mapping) and p.get("duration") is None):
                # `pause: {}` waits for a manual promote, as in Argo Rollouts.
                if p != {}:
                    raise SpecError(o.sub("pause"), "must be a duration or {} (manual promote)")
                steps.append(Step(pause=math.inf))
            else:
                d = p.get("duration") if isinstance(p, Mapping) else p
                steps.append(Step(pause=parse_duration(d, o.sub("pause"))))
        elif "analysis" in o.value:
            o.raw("analysis")
            steps.append(Step(analysis=True))
        elif "backtest" in o.value:
            b = o.obj("backtest")
            window = 0.0  # (none named: the history's, up to BACKTEST_WINDOW)
            if b.raw("window") is not None:
                window = parse_duration(b.raw("window"), b.sub("window"))
                if window <= 0:
                    raise SpecError(b.sub("window"), "must be more than 0s")
            steps.append(Step(backtest=window))
            b.done()
        o.done()
    return tuple(steps)


BACKTEST_WINDOW = "1h"  # a backtest step's window when it names none


def _with_backtest(rollout: RolloutSpec, learning: LearningSpec, path: str) -> RolloutSpec:
    """The steps with a backtest before the first setWeight when history is kept and none is
    named (its window the history's, up to an hour); a backtest with no history to read is
    a SpecError."""
    steps = rollout.steps
    named = [i for i, step in enumerate(steps) if step.backtest is not None]
    if not learning.history:
        if named:
            raise SpecError(f"{path}[{named[0]}].backtest", "needs spec.learning.history: "
                            "the labelled samples it replays")  # fmt: skip
        return rollout
    usual = min(learning.history, parse_duration(BACKTEST_WINDOW, path))
    if not named:
        first = next((i for i, step in enumerate(steps) if step.setWeight), len(steps))
        return replace(rollout, steps=(*steps[:first], Step(backtest=usual), *steps[first:]))
    out = list(steps)
    for i in named:
        window = steps[i].backtest
        if not window:
            out[i] = Step(backtest=usual)
        elif window > learning.history:
            raise SpecError(f"{path}[{i}].backtest.window", f"must be at most "
                            f"spec.learning.history ({window:g}s > {learning.history:g}s)")  # fmt: skip
    return replace(rollout, steps=tuple(out))


def _rollout(o: _Obj) -> RolloutSpec:
    tr = o.raw("trafficRouting")
    routing = RolloutSpec.trafficRouting  # (the table's default)
    if isinstance(tr, Mapping):
        t = o.obj("trafficRouting")
        g = t.obj("gatewayAPI")
        routing = g.string("httpRoute", required=True)
        g.done()
        t.done()
    elif tr is not None and tr != "builtin":
        raise SpecError(
            o.sub("trafficRouting"),
            f"must be builtin or {{gatewayAPI: {{httpRoute: NAME}}}} (got {tr!r})",
        )
    steps = _steps(o.raw("steps"), o.sub("steps"))
    return _read(o, RolloutSpec, steps=steps, trafficRouting=routing)


def check_redis_url(url: str, path: str) -> str:
    """A Redis URL redis-py can use, or a SpecError naming what is wrong with it.

    >>> check_redis_url("redis://cache:6379/2", "spec.redis.url")
    'redis://cache:6379/2'
    >>> check_redis_url("http://x", "--redis")
    Traceback (most recent call last):
    ...
    tideline.spec.SpecError: --redis: must be a redis://, rediss:// or unix:// URL (got 'http://x')
    """
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.netloc or parts.path):
        raise SpecError(path, f"must be a redis://, rediss:// or unix:// URL (got {url!r})")
    db = parts.path.strip("/") if parts.scheme != "unix" else ""
    if db and not db.isdigit():
        raise SpecError(path, f"the database after the host must be a number (got {db!r})")
    try:
        parts.port  # noqa: B018 - raises on a port that is no number
    except ValueError:
        raise SpecError(path, f"the port must be a number (got {url!r})") from None
    return url


_PEER_KEYS = ("podSelector", "namespaceSelector", "ipBlock")


def _peers(o: _Obj, key: str) -> tuple[dict[str, Any], ...] | None:
    """A list of NetworkPolicyPeers, as Kubernetes takes them; None when not given."""
    raw = o.raw(key)
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise SpecError(
            o.sub(key),
            "must be a list of NetworkPolicy peers (podSelector, namespaceSelector, ipBlock)",
        )
    for i, peer in enumerate(raw):
        if not isinstance(peer, Mapping) or not peer:
            raise SpecError(f"{o.sub(key)}[{i}]", "must be a NetworkPolicy peer object")
        for k, v in peer.items():
            if k not in _PEER_KEYS:
                raise SpecError(
                    f"{o.sub(key)}[{i}].{k}", f"unknown field (a peer has {', '.join(_PEER_KEYS)})"
                )
            if not isinstance(v, Mapping):
                raise SpecError(f"{o.sub(key)}[{i}].{k}", "must be an object")
    return tuple(dict(p) for p in raw)


def _redis(o: _Obj) -> RedisSpec:
    s = o.obj("secretRef")
    url = _read_as(o, RedisSpec, "url")
    out = RedisSpec(
        url=check_redis_url(url, o.sub("url")) if url else None,
        secretName=_read_as(s, RedisSpec, "secretName", "name"),
        secretKey=_read_as(s, RedisSpec, "secretKey", "key"),
    )
    s.done()
    o.done()
    return out


def _source(o: _Obj) -> SourceSpec:
    if o.raw("redis") is not None:  # the default, said out loud
        r = o.obj("redis")
        r.done()
        if o.raw("kafka") is not None:
            raise SpecError(o.sub("kafka"), "one source: redis or kafka, not both")
    if o.raw("kafka") is None:
        o.done()
        return SourceSpec()
    k = o.obj("kafka")
    servers = _read_as(k, KafkaSource, "bootstrapServers")
    t = k.obj("topics")
    topics = {name: _read_as(t, KafkaSource, name) for name in ("samples", "feedback")}
    t.done()
    if not any(topics.values()):
        raise SpecError(k.sub("topics"), "needs samples, feedback or both")
    if topics["samples"] is not None and topics["samples"] == topics["feedback"]:
        raise SpecError(t.sub("feedback"), "must be another topic than samples")
    protocol = _read_as(k, KafkaSource, "securityProtocol")
    sasl = None
    if k.raw("sasl") is not None:
        a = k.obj("sasl")
        sasl = _read(a, KafkaSasl, password=_read(a.obj("secretRef"), PasswordRef))
    if protocol.startswith("SASL") != (sasl is not None):
        raise SpecError(
            k.sub("sasl"),
            f"{'required' if sasl is None else 'only used'} with securityProtocol "
            f"SASL_PLAINTEXT or SASL_SSL (got {protocol})",
        )
    tls = None
    if k.raw("tls") is not None:
        if not protocol.endswith("SSL"):
            raise SpecError(k.sub("tls"), f"only used with securityProtocol SSL or SASL_SSL "
                                          f"(got {protocol})")  # fmt: skip
        a = k.obj("tls")
        tls = KafkaTls(**{f.name: _read_as(a, KafkaTls, f.name, f"{f.name}SecretRef")
                          for f in dataclasses.fields(KafkaTls)})  # fmt: skip
        if (tls.cert is None) != (tls.key is None):
            missing, given = ("key", "cert") if tls.cert is not None else ("cert", "key")
            raise SpecError(a.sub(f"{missing}SecretRef"), f"required with {given}SecretRef: a "
                            "client certificate and its key come together")  # fmt: skip
        a.done()
    out = _read(k, KafkaSource, bootstrapServers=servers, securityProtocol=protocol,
                sasl=sasl, tls=tls, **topics)  # fmt: skip
    o.done()
    return SourceSpec(kafka=out)


def _notify(o: _Obj) -> tuple[Notify, ...]:
    """``spec.notify``: each receiver's ``url: {secretRef: {name, key}}``, ``format``, ``events``."""
    out = []
    for n in o.objects("notify", "receivers ({url: {secretRef: {name, key}}, format, events})",
                       MAX_NOTIFY) or []:  # fmt: skip
        if "on" in n.value or True in n.value:  # (`on:` is true to YAML 1.1: kubectl's too)
            raise SpecError(n.sub("on"), "unknown field (the Events go in events: [...])")
        raw = n.raw("url")
        if not isinstance(raw, Mapping):  # (a URL given inline is not echoed: its token)
            raise SpecError(n.sub("url"), "must be {secretRef: {name, key}}: the URL is read "
                            "from a Secret only, never inline (it carries its token)")  # fmt: skip
        u = n.obj("url")
        if u.raw("secretRef") is None:
            raise SpecError(u.sub("secretRef"), "required (a URL is read from a Secret only)")
        url = _read(u.obj("secretRef"), UrlRef)
        u.done()
        out.append(_read(n, Notify, url=url))
    return tuple(out)


def load_manifest(path: str | Path) -> dict[str, Any]:
    """The one OnlineModel document of a YAML file (others, e.g. a Namespace, are skipped)."""
    path = Path(path)
    try:
        with path.open("rb") as f:  # (bytes: YAML's reader finds the encoding, and says where)
            docs = [d for d in yaml.safe_load_all(f) if d]
    except OSError as e:
        raise SpecError(str(path), f"cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise SpecError(str(path), f"not valid YAML: {_yaml_problem(e)}") from None
    models = [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    if len(models) != 1:
        raise SpecError(str(path), f"must hold exactly one {KIND} (found {len(models)})")
    return models[0]


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error on one line, where it is as line and column (issue 37: PyYAML's own
    message is several lines and, for text it was handed, names ``<unicode string>``).

    >>> try:
    ...     yaml.safe_load("name: [a, b\\nspec: {}")
    ... except yaml.YAMLError as e:
    ...     print(_yaml_problem(e))
    line 2, column 5: expected ',' or ']', but got ':' (while parsing a flow sequence at line 1, column 7)
    """
    if not isinstance(e, yaml.MarkedYAMLError) or e.problem_mark is None:
        return " ".join(str(e).split())  # (a ReaderError: the byte and its position)
    mark = e.problem_mark
    text = f"line {mark.line + 1}, column {mark.column + 1}: {e.problem}"
    if e.context:
        at = e.context_mark
        where = f" at line {at.line + 1}, column {at.column + 1}" if at is not None else ""
        text += f" ({e.context}{where})"
    return text


def parse(manifest: Mapping[str, Any] | str | Path) -> OnlineModel:
    """Read an OnlineModel manifest (a mapping, or a path to a YAML file).

    Raises
    ------
    SpecError
        naming the path of the first field that is wrong.
    """
    if isinstance(manifest, str | Path):
        manifest = load_manifest(manifest)
    root = _Obj(manifest, "")
    api = root.raw("apiVersion")
    if api != API_VERSION:
        raise SpecError("apiVersion", f"must be {API_VERSION} (got {api!r})")
    if root.raw("kind") != KIND:
        raise SpecError("kind", f"must be {KIND} (got {root.value.get('kind')!r})")
    meta = _Obj(root.raw("metadata"), "metadata")
    name = meta.string("name", required=True)
    if not _DNS1123.match(name) or len(name) > 52:
        raise SpecError(
            "metadata.name", f"must be a DNS-1123 label of at most 52 characters (got {name!r})"
        )
    namespace = meta.string("namespace", "default")
    root.raw("status")  # a manifest read back from the cluster carries status; ignore it
    s = _Obj(root.raw("spec"), "spec")
    if s.raw("model") is None:
        raise SpecError("spec.model", "required")
    deprecated: list[tuple[str, str]] = []
    model = _model(s.obj("model"))
    spec = _read(
        s,
        Spec,
        model=model,
        learning=_learning(s.obj("learning"), model, deprecated),
        serving=_serving(s.obj("serving"), model),
        rollout=_rollout(s.obj("rollout")),
        redis=_redis(s.obj("redis")),
        pods=_pods(s.obj("pods")),
        source=_source(s.obj("source")),
        notify=_notify(s),
        deprecated=tuple(deprecated),
    )
    spec = replace(spec, rollout=_with_backtest(spec.rollout, spec.learning,
                                                "spec.rollout.steps"))  # fmt: skip
    fb = spec.serving.fallback
    if spec.model.task == "binary" and not isinstance(fb, str) and not 0.0 <= fb <= 1.0:
        raise SpecError(
            "spec.serving.fallback.value",
            f"must be a probability in [0, 1] for a binary model (got {fb:g})",
        )
    return OnlineModel(name=name, namespace=namespace, spec=spec)


def revision(spec: Spec) -> str:
    """Hash of the parts of the spec that change what is learned or run.

    Serving replicas, thresholds and rollout steps change no revision.

    >>> from dataclasses import replace
    >>> m = parse({"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "a"},
    ...            "spec": {"model": {"features": [{"name": "x"}]}}})
    >>> r = revision(m.spec)
    >>> len(r), revision(replace(m.spec, serving=replace(m.spec.serving, replicas=7))) == r
    (10, True)
    """
    learning = asdict(spec.learning)
    # hashed under its first name: renaming a field must not make every model a new revision
    learning["checkpointEvery"] = learning.pop("publishEvery")
    del learning["history"]  # (how long samples are kept changes nothing learned)
    # and a field added later only when it is given (an upgrade rolls no model out)
    for name in ("labelDefault", "lateLabel"):
        if learning[name] == getattr(LearningSpec, name):
            del learning[name]
    material = {
        "image": spec.image,
        "model": spec.model.to_dict()
        | {"warmStart": spec.model.warmStart.revision_material() if spec.model.warmStart else None},
        "learning": learning,
    }
    kafka = spec.source.kafka
    if kafka is not None:  # other topics are other data (brokers and credentials are not)
        material["source"] = {"samples": kafka.samples, "feedback": kafka.feedback}
    blob = json.dumps(material, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:10]
