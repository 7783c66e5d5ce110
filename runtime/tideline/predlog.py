"""The prediction log: what the servers answered, kept for ``labelWindow``, found by id.

A label (``{"id": ..., "label": ...}`` on the feedback stream) is joined
with the prediction it is about. Nothing about a prediction is kept in the
learner's or the monitor's memory for that: the log lives in Redis, and a
prediction id says where its row is.

* Each server process writes its own stream, ``log:{instance}``. An entry
  holds a batch of requests (up to ``BATCH_ROWS`` rows or ``BATCH_BYTES``,
  within ``BATCH_MS``; a larger request has one of its own), under an entry id the server
  chooses: ``{ms}-{seq}``, the time of its first request in milliseconds
  and a sequence number (strictly increasing in each process, as a stream
  requires). One XADD carries dozens of single-row requests.
* The ids a server gives a request's rows name that entry and the request's
  place in it: ``{instance}-{ms}-{seq}-{k}-{secret}-{row}``. A label for one
  is one ``XRANGE log:{instance} {ms}-{seq} {ms}-{seq}``: no index, no scan.
  The secret (64 random bits per request, also in the entry) makes ids
  impossible to guess; the time makes a late label known without any
  lookup.
* Ids a client chose (``"ids": [...]`` in a request) are indexed: a hash per
  ``BUCKET_SECONDS`` of time, ``log-ids:{bucket}``, from each id to
  ``"{instance} {entry} {k} {row}"``; a label for one reads the buckets the
  window spans, the newest first. An id names one prediction in its window:
  the server binds a request's ids before it answers (:data:`BIND`, all of
  them or none, each held by a claim that lasts the window), and a request
  naming an id held already is refused. (Bound by the writer
  later, a second request's id replaced the first's, and the first caller's
  label joined the second caller's row.) So a label for a client's id that
  is in no bucket names no prediction: it is unmatched at once.
* The streams are trimmed by time (``MINID``), and expire as a whole when
  their server is gone: the log holds ``retention(labelWindow)`` of traffic
  (``labelWindow`` and a grace for a reader that is behind), whatever the
  rate. The sorted set ``logs`` names the streams, by last write, for
  readers that follow all of them (the monitor).

An entry's fields: ``m``, the requests' metadata (a JSON array of
:class:`Meta`), and per request k, ``s{k}``, its scores, and ``b{k}``, its
body as it came (rows are its ``instances``: objects, or arrays of values in
the order of ``Meta.names``). The scores are a JSON array with a number a
row (the bytes the response carried) or, a multiclass model's, an array a row
of its classes' probabilities, in the order of ``spec.model.classes`` and in
float32's shortest form: ``[[0.1,0.6666667,0.23333333], ...]``.
A reader parses only the request a label names.

The log holds what was predicted, not what was sent (:func:`bounded`): a
body is kept as it came while it is within ``row_bytes(features)`` a row;
past that (whitespace, keys no model reads, values no row needs) its rows
are written again compactly, and a row still over the limit is logged as
``null`` and named in ``Meta.cut``: its label is *unmatched*, never joined
with a row it did not come with. (48 one-row requests padded to 8 MiB each
held 385 MB for the window when bodies were kept whatever their size.)

Examples
--------
>>> loc = parse_id("0a1b2c3d4e5f-1764500000000-3-2-00112233445566ff-17")
>>> loc.instance, loc.entry, loc.request, loc.row, loc.ts
('0a1b2c3d4e5f', '1764500000000-3', 2, 17, 1764500000.0)
>>> parse_id("order-42") is None  # a client's own id: looked up in the index
True
>>> fields = encode([Meta(models={"stable": ("r1", 4)}, names=["amount", "country"])],
...                 [b"[0.25,0.75]"], [b'{"instances":[[1.0,"de"],[2.0,"fr"]]}'])
>>> e = decode(fields).request(0)
>>> e.row(1), e.score(1), e.track(1), e.model("stable")
({'amount': 2.0, 'country': 'fr'}, 0.75, 'stable', ('r1', 4))
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson

BUCKET_SECONDS = 300  # the client-id index: one hash per five minutes of predictions
BATCH_ROWS = 64  # rows an entry takes from several requests (a larger request: its own)
BATCH_BYTES = 64 << 10
BATCH_MS = 1000  # an entry's requests are this close in time to the first (its id's time)
INSTANCE_HEX = 12  # hex digits of a server process's name (48 random bits)
SECRET_HEX = 16  # hex digits of a request's secret (64 random bits)
FUTURE_SECONDS = 60.0  # clocks of servers and readers may differ this much
# A logged row's bytes at most, per feature of the model and a floor: a row of numbers takes
# ~20-40 bytes a feature, a categorical value a few dozen; 256 leaves room for long names
# and values and still bounds what a request may make the log hold (see bounded).
ROW_BYTES_FLOOR, ROW_BYTES_PER_FEATURE = 2048, 256

# a generated id is a head naming a request, and ``-{row}``
_HEAD = re.compile(r"([0-9a-f]{12})-([0-9]{1,15})-([0-9]{1,9})-([0-9]{1,6})-([0-9a-f]{16})")
is_row = re.compile(r"[0-9]{1,9}").fullmatch  # whether the last part of an id is a row number


def retention(label_window: float) -> float:
    """Seconds the log keeps: the window, and a grace for a reader that is behind.

    A label that arrived in time is judged on when it arrived, but its
    prediction must still be in the log when the learner reads it; a
    learner up to the grace behind loses nothing.

    >>> retention(1800.0), retention(30.0)
    (1980.0, 90.0)
    """
    return label_window + max(60.0, 0.1 * label_window)


def row_bytes(features: int) -> int:
    """The bytes a logged row may take, for a model of ``features`` features.

    >>> row_bytes(10), row_bytes(2000)
    (4608, 514048)
    """
    return ROW_BYTES_FLOOR + ROW_BYTES_PER_FEATURE * features


def bounded(body: bytes | Sequence[Any], n: int, limit: int) -> tuple[bytes, list[int] | None]:
    """A request's body as the log keeps it, and the rows cut from it (None: none).

    ``body`` is the request's body as it came (its rows are its ``instances``)
    or its rows; ``n`` the rows it was answered for; ``limit`` a row's bytes at
    most (:func:`row_bytes`). A body within ``n * limit`` bytes is kept as it
    is (the usual case: one comparison). A larger one is written again: its
    rows compactly, each alone, and a row still over ``limit`` as ``null``,
    its place listed; what is kept is then at most ``n * limit`` bytes and a
    little, whatever was sent.

    >>> bounded(b'{"instances":[{"a":1}]}', 1, 64)
    (b'{"instances":[{"a":1}]}', None)
    >>> padded = b'{"instances":[{"a":1},' + b" " * 200 + b'{"a":"' + b"x" * 100 + b'"}]}'
    >>> bounded(padded, 2, 64)
    (b'{"instances":[{"a":1},null]}', [1])
    """
    if isinstance(body, bytes):
        if len(body) <= n * limit:
            return body, None
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:  # (the server read it: not to be seen)
            doc = None
        rows = doc.get("instances") if isinstance(doc, dict) else None
        if not isinstance(rows, list):
            rows = []
    else:
        rows = body if isinstance(body, list) else list(body)
        whole = orjson.dumps({"instances": rows})
        if len(whole) <= n * limit:
            return whole, None
    parts: list[bytes] = []
    cut: list[int] = []
    for i in range(n):
        part = orjson.dumps(rows[i]) if i < len(rows) else b"null"
        if len(part) > limit or part == b"null":
            cut.append(i)
            part = b"null"
        parts.append(part)
    return b'{"instances":[' + b",".join(parts) + b"]}", cut or None


def entry_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a sortable key (ids compare as numbers, not as text).

    >>> entry_order("1764500000000-39") < entry_order("1764500000000-134")
    True
    """
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def entry_seconds(entry_id: str | bytes) -> float:
    """When a stream entry was added (its id's milliseconds), in seconds; a Kafka message's
    entry id (``{ms}-{partition}.{offset}``) too.

    >>> entry_seconds("1764500000123-7"), entry_seconds(b"1764500000000-2.15")
    (1764500000.123, 1764500000.0)
    """
    if isinstance(entry_id, bytes):
        return int(entry_id.split(b"-", 1)[0]) / 1000.0
    return int(entry_id.split("-", 1)[0]) / 1000.0


def bucket(ts: float) -> int:
    """The index bucket of a time (seconds)."""
    return int(ts // BUCKET_SECONDS)


def buckets(now: float, label_window: float) -> list[int]:
    """The index buckets a label arriving at ``now`` may find its prediction in, newest first."""
    newest = bucket(now + FUTURE_SECONDS)
    oldest = bucket(now - retention(label_window))
    return list(range(newest, oldest - 1, -1))


@dataclass(frozen=True)
class Location:
    """Where a prediction's row is: a server's stream, an entry, a request in it, a row."""

    instance: str
    entry: str  # the stream entry id, "{ms}-{seq}"
    request: int
    row: int
    secret: str | None = None  # given by a generated id; a client's id has none
    # the time of the entry's first request (seconds), from the entry id
    ts: float = field(init=False, compare=False, repr=False)
    # a compact name of the prediction (the de-duplication marks use it)
    key: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # computed once here: functools.cached_property takes a lock at every read (3.11)
        object.__setattr__(self, "ts", entry_seconds(self.entry))
        object.__setattr__(self, "key", f"{self.instance} {self.entry} {self.request} {self.row}")

    @classmethod
    def from_key(cls, text: str) -> Location | None:
        """The location an index value names (``"{instance} {entry} {k} {row}"``)."""
        parts = text.split(" ")
        if (len(parts) != 4 or not parts[1].split("-", 1)[0].isdecimal() or "-" not in parts[1]
                or not parts[2].isdecimal()
                or not parts[3].isdecimal()):  # fmt: skip
            return None
        return cls(parts[0], parts[1], int(parts[2]), int(parts[3]))


# Binds a request's own ids to its rows, unless another request holds one of them. KEYS: a
# claim per id (Keys.log_claim: one string each, so the check costs the same whatever the
# window; a look through the index's buckets cost 23 ms of Redis a request with a window of
# 30 days), then the index bucket of the request's time. ARGV: how long a claim holds (ms),
# when the bucket expires (unix seconds), the prefix of a row's location ("{instance}
# {entry} {k} "), then the ids. Returns the ids held already (none: all are now the
# request's: claimed, and in the index). HSET takes the ids a thousand at a time: Lua's
# unpack() stops near 8,000 values, and a request may carry 10,000 rows.
BIND = """
local n = #KEYS - 1
local taken = {}
for i = 1, n do
  if redis.call('EXISTS', KEYS[i]) == 1 then taken[#taken + 1] = ARGV[3 + i] end
end
if #taken > 0 then return taken end
local own = KEYS[n + 1]
for i = 1, n do redis.call('SET', KEYS[i], ARGV[3] .. (i - 1), 'PX', ARGV[1]) end
for at = 1, n, 1000 do
  local fields = {}
  for i = at, math.min(at + 999, n) do
    fields[#fields + 1] = ARGV[3 + i]
    fields[#fields + 1] = ARGV[3] .. (i - 1)
  end
  redis.call('HSET', own, unpack(fields))
end
redis.call('EXPIREAT', own, ARGV[2])
return taken
"""


def bind_args(
    keys: Any, instance: str, entry: str, k: int, ids: Sequence[str], label_window: float
) -> tuple[list[str], list[Any]]:
    """:data:`BIND`'s keys and arguments for request k of an entry."""
    own = bucket(entry_seconds(entry))
    window = retention(label_window)
    expire_at = int((own + 1) * BUCKET_SECONDS + window) + 1
    names = [keys.log_claim(i) for i in ids]
    names.append(keys.log_ids(own))
    return names, [int(window * 1000), expire_at, f"{instance} {entry} {k} ", *ids]


def parse_head(head: str) -> tuple[str, str, int, str] | None:
    """The request a generated id's head (all but ``-{row}``) names: its server's instance,
    its entry, its place in the entry, its secret; None for any other text."""
    m = _HEAD.fullmatch(head)
    if m is None:
        return None
    instance, ms, seq, k, secret = m.groups()
    return instance, f"{ms}-{seq}", int(k), secret


def parse_id(pred_id: str) -> Location | None:
    """The location a generated prediction id names; None for any other id."""
    head, _, row = pred_id.rpartition("-")
    where = parse_head(head) if is_row(row) else None
    return Location(*where[:3], int(row), where[3]) if where is not None else None


def id_prefix(instance: str, entry: str, k: int, secret: str) -> str:
    """What the generated ids of request k of an entry start with; row i's adds ``str(i)``."""
    return f"{instance}-{entry}-{k}-{secret}-"


class Meta(msgspec.Struct, omit_defaults=True):
    """A logged request's metadata: who answered which rows, and how to read them."""

    secret: str = ""
    track: str = "stable"  # every row's track, unless ``tracks`` names them one by one
    tracks: list[str] | None = None
    models: dict[str, tuple[str, int]] = {}  # track -> (revision, version)
    fallback: str | None = None  # why a fallback answered, if one did
    ids: list[str] | None = None  # the client's own ids, if it gave them
    names: list[str] | None = None  # feature names of rows written as arrays
    # (revision, version, scores): a row's score, or a multiclass model's k probabilities
    shadow: tuple[str, int, list[Any]] | None = None
    cut: list[int] | None = None  # rows over the log's size limit, logged as null (bounded)


_metas_decoder = msgspec.json.Decoder(list[Meta])
_metas_encoder = msgspec.json.Encoder()


class Batch:
    """One stream entry: the requests of a batch, each decoded only when it is read."""

    __slots__ = ("metas", "_fields", "_decoded")

    def __init__(self, metas: list[Meta], fields: dict[bytes, bytes]) -> None:
        self.metas = metas
        self._fields = fields
        self._decoded: dict[bytes, Any] = {}

    def __len__(self) -> int:
        return len(self.metas)

    def _field(self, name: bytes) -> Any:
        """A request's scores (``s{k}``) or body (``b{k}``), parsed once."""
        value = self._decoded.get(name)
        if value is None:
            raw = self._fields.get(name)
            if raw is None:
                raise ValueError(f"the entry has no field {name.decode()}")
            value = self._decoded[name] = orjson.loads(raw)
        return value

    def request(self, k: int) -> Entry:
        """Request k of the batch (``IndexError`` when there is none)."""
        if not 0 <= k < len(self.metas):
            raise IndexError(f"no request {k} in the entry")
        return Entry(self, k)


class Entry:
    """One logged request of a batch: its metadata, scores and rows."""

    __slots__ = ("batch", "k", "meta")

    def __init__(self, batch: Batch, k: int) -> None:
        self.batch, self.k, self.meta = batch, k, batch.metas[k]

    @property
    def scores(self) -> list[Any]:
        scores = self.batch._field(b"s%d" % self.k)
        if not isinstance(scores, list):
            raise ValueError("a request's scores must be a list")
        return scores

    @property
    def body(self) -> bytes:
        """The request's body as it came (JSON bytes), for a reader with a typed decoder."""
        raw = self.batch._fields.get(b"b%d" % self.k)
        if raw is None:
            raise ValueError(f"the entry has no field b{self.k}")
        return raw

    @property
    def rows(self) -> list[Any]:
        """The rows as logged: feature objects, or arrays in the order of ``meta.names``."""
        body = self.batch._field(b"b%d" % self.k)
        rows = body.get("instances") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise ValueError("a logged request's instances must be a list")
        return rows

    def __len__(self) -> int:
        return len(self.scores)

    def ids(self, instance: str, entry_id: str) -> list[str]:
        """The prediction ids of the rows: the client's, or those the server generated."""
        if self.meta.ids is not None:
            return self.meta.ids
        prefix = id_prefix(instance, entry_id, self.k, self.meta.secret)
        return [f"{prefix}{i}" for i in range(len(self))]

    def row(self, i: int) -> dict[str, Any]:
        """Row i's features as an object (arrays are named by ``meta.names``)."""
        r = self.rows[i]
        if isinstance(r, dict):
            return r
        if isinstance(r, list) and self.meta.names is not None:
            return dict(zip(self.meta.names, r, strict=False))
        if r is None and self.meta.cut is not None and i in self.meta.cut:
            raise ValueError(f"row {i} was not logged: over the log's size limit for a row")
        raise ValueError(f"row {i} is neither an object nor a named array")

    def pick(self, rows: list[int]) -> list[dict[str, Any]]:
        """Those rows' features as objects (:meth:`row` of each, the whole list at once)."""
        logged = self.rows
        out = [logged[i] for i in rows]
        if all(type(r) is dict for r in out):
            return out
        return [self.row(i) for i in rows]

    def score(self, i: int) -> Any:
        return self.scores[i]

    def track(self, i: int) -> str:
        t = self.meta.tracks
        return t[i] if t is not None and i < len(t) else self.meta.track

    def model(self, track: str) -> tuple[str | None, int | None]:
        rv = self.meta.models.get(track)
        return (rv[0], rv[1]) if rv is not None else (None, None)


def decode(fields: dict[bytes, bytes]) -> Batch:
    """An entry from its stream fields; ``ValueError`` when it is not one."""
    try:
        return Batch(_metas_decoder.decode(fields[b"m"]), fields)
    except (KeyError, msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ValueError(f"not a prediction log entry: {e}") from None


def encode(metas: list[Meta], scores: list[bytes], bodies: list[bytes]) -> dict[bytes, bytes]:
    """The stream fields of an entry: the requests' metadata, and per request k its scores
    (``s{k}``) and body (``b{k}``), the JSON bytes as they are (not serialised again; a
    reader parses only the request it needs)."""
    fields = {b"m": _metas_encoder.encode(metas)}
    for k, (score, body) in enumerate(zip(scores, bodies, strict=True)):
        fields[b"s%d" % k] = score
        fields[b"b%d" % k] = body
    return fields


def read(client: Any, keys: Any, instance: str | None = None) -> list[tuple[str, str, Entry]]:
    """Every request in one server process's log, or in all of them: (instance, entry id, request).

    For tools and tests; readers of traffic follow the streams (the monitor)
    or read single entries by id (:class:`tideline.pods.join.LogJoin`).
    """
    names = [instance] if instance else [m.decode() for m in client.zrange(keys.logs, 0, -1)]
    out = []
    for name in names:
        for entry_id, fields in client.xrange(keys.log(name)):
            batch = decode(fields)
            out += [(name, entry_id.decode(), batch.request(k)) for k in range(len(batch))]
    return out
