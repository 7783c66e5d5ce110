"""Signed blobs: model versions and learner checkpoints that no one without the key can forge.

A team's own learner (a River pipeline, Vowpal Wabbit, its own class) may keep its state
as pickled or otherwise opaque bytes, and loading those is running code. Anyone who can
write to the model's Redis could then run code in every server pod. So every blob the
model's processes write to Redis and read back - each published version, the learner's
checkpoint and replay buffer, a revision's drift reference - is sealed with an
HMAC-SHA256 under a per-model key, and verified *before* anything decodes it: no
:func:`tideline.codec.decode`, no ``make_learner``, no unpickling of bytes that did not
verify.

The envelope
------------
``MAGIC`` (``b"TDS1"``), the 32-byte tag, then the blob as it was (the built-ins' blob
stays the :mod:`tideline.codec` ``TDL1`` array format, unchanged inside)::

    tag = HMAC-SHA256(key, MAGIC || len(label) as u32 big-endian || label || blob)
    label = "<kind>\\n<namespace>/<model>"

The label binds a tag to what the blob claims to be: the *kind* (``version``,
``checkpoint``, ``replay``, ``reference``: a checkpoint copied over a version is refused)
and the *model* (a version of model A copied under model B's keys is refused, even by a
key shared between them by hand). The Redis key name itself is not in the MAC: a blob put
back after a store reset (:func:`tideline.store.restore_args`) or moved by
:func:`tideline.store.migrate_keys` keeps its bytes and its signature; and the
pointers, which are not signed, can name any stored version anyway, so binding a blob to
its version number would protect nothing more. The tag is compared in constant time
(:func:`hmac.compare_digest`).

The key
-------
The operator keeps one Secret per OnlineModel (``<model>-tideline-signing``, field
``key``: 32 bytes from :func:`secrets.token_bytes`, as base64url text; owned by the
OnlineModel, created when missing, never rotated) and gives it to every pod of the model -
learner, servers, monitor, stable and canary revisions alike - as ``TIDELINE_SIGNING_KEY``
(:data:`KEY_ENV`). The variable's text is the key, taken as bytes (at least
:data:`MIN_KEY_BYTES`). ``tideline run`` makes a key for each run (the operator's own code
creates the Secret there too) and hands it to every process it starts. Deleting the Secret
rotates the key: every version signed with the old one is refused from then on.

Adoption
--------
A model that ran before it had a key (an operator upgraded to this version, or a store
whose blobs were written by processes without one) holds unsigned ``TDL1`` blobs, and a
process with the new key would refuse every one of them. So when the operator *makes* a
model's key - never when it finds one its pods already read - it seals with it, before
any pod has it, the unsigned blobs of the store that :func:`adoptable` says are a
built-in's (arrays, which never run code; an external model's state of unknown origin is
never sealed, and that model starts cold): :func:`tideline.store.adopt_unsigned`,
run by :meth:`tideline_operator.reconcile.Reconciler.adopt`. A blob already sealed, under
this key or an old one, is left as it is (refused, when the key is not this one).

The policy
----------
* **With a key**, every blob read must verify: an unsigned one is refused like a forged one.
  Blobs are written sealed.
* **Without a key**, blobs are written unsigned (plain ``TDL1``), and only unsigned blobs
  are read - and of those, versions and checkpoints only of the built-in learners (``sgd``,
  ``ftrl``, ``forest``), whose state is arrays and never runs code. A signed blob cannot be
  checked without the key, so it is refused. A process whose own model is not a built-in
  refuses to start without a key (:func:`check_environment`).
* **Warm-start snapshots** read from a file or a ConfigMap (``spec.model.warmStart``) are
  written by the team and trusted like the manifest that names them: they are read
  unsigned, and count as trusted (:func:`tideline.store.learner_from_blob`'s
  ``trusted``). A warm start from another *revision* reads that revision's version from
  Redis, and verifies it.

A blob that fails is never loaded. :class:`Sealing` logs it once (the Redis key it was read
from - never the signing key) and counts it (``tideline_forged_blobs_total{component}``);
the caller then keeps what it has: a server the version it serves, the monitor skips the
version, the learner does not resume from a refused checkpoint (see
:mod:`tideline.pods.learner`).

For the algorithms layer
------------------------
A learner whose state is code must never be handed bytes that are neither verified nor
trusted. The store already refuses such blobs for any algorithm that is not a built-in
before ``make_learner`` runs (:func:`require_trusted`); as a second line, the code that
loads a team's state (the ``load`` of :mod:`tideline.model`'s contract, an unpickling) can
ask :func:`loading_untrusted` and refuse when it says True: it does, only while state
decoded from unverified, untrusted bytes is being loaded (:func:`loading`).

Examples
--------
>>> signer = Signer(b"k" * 32, "prod/fraud")
>>> sealed = signer.seal(b"TDL1...", "version")
>>> sealed[:4], len(sealed) - len(b"TDL1...")
(b'TDS1', 36)
>>> signer.open(sealed, "version")
b'TDL1...'
>>> Signer(b"k" * 32, "prod/other").open(sealed, "version")
Traceback (most recent call last):
...
tideline.signing.ForgedBlob: the signature does not match: not written with this model's key, or changed since
>>> Sealing(None).open(b"TDL1...", "version", "some:key")
Opened(blob=b'TDL1...', trusted=False)
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import struct
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import orjson

from tideline import codec
from tideline.spec import BUILTIN_ALGORITHMS

log = logging.getLogger("tideline.signing")

MAGIC = b"TDS1"
TAG_BYTES = 32  # HMAC-SHA256
HEADER_BYTES = len(MAGIC) + TAG_BYTES
KEY_ENV = "TIDELINE_SIGNING_KEY"
MIN_KEY_BYTES = 16  # the operator's keys are 43 characters (32 random bytes, base64url)

# What a blob is (part of the MAC: one kind is never accepted as another)
VERSION = "version"
CHECKPOINT = "checkpoint"
REPLAY = "replay"
REFERENCE = "reference"

_REMEMBERED = 1024  # refused blobs remembered per process, to log and count each once


class ForgedBlob(ValueError):
    """A blob that is not what this model's learner wrote (or cannot be shown to be):
    refused before anything decodes it."""


class Signer:
    """HMAC-SHA256 seals of one model's blobs (see the module docs for the envelope).

    ``scope`` is the model, ``<namespace>/<name>``; the key is never shown (not in
    ``repr``, not in an error).
    """

    def __init__(self, key: bytes, scope: str) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a signing key has at least {MIN_KEY_BYTES} bytes (got {len(key)})")
        self._key = bytes(key)
        self.scope = scope

    def __repr__(self) -> str:
        return f"Signer(scope={self.scope!r})"

    def _tag(self, kind: str, blob: bytes) -> bytes:
        label = f"{kind}\n{self.scope}".encode()
        mac = hmac.new(self._key, MAGIC, hashlib.sha256)
        mac.update(struct.pack(">I", len(label)))
        mac.update(label)
        mac.update(blob)
        return mac.digest()

    def seal(self, blob: bytes, kind: str = VERSION) -> bytes:
        """``blob`` in its signed envelope."""
        return b"".join((MAGIC, self._tag(kind, blob), blob))

    def open(self, sealed: bytes, kind: str = VERSION) -> bytes:
        """The blob inside a sealed envelope, once its tag verified; else :class:`ForgedBlob`."""
        if not sealed.startswith(MAGIC):
            raise ForgedBlob("unsigned: every blob is signed where a signing key is set")
        if len(sealed) < HEADER_BYTES:
            raise ForgedBlob(f"truncated: {len(sealed)} bytes, shorter than a signature")
        blob = sealed[HEADER_BYTES:]
        if not hmac.compare_digest(sealed[len(MAGIC) : HEADER_BYTES], self._tag(kind, blob)):
            raise ForgedBlob(
                "the signature does not match: not written with this model's key, or changed since"
            )
        return blob


@dataclass(frozen=True)
class Opened:
    """A blob read back: its bytes, and whether they may be loaded as code-bearing state.

    ``trusted``: the signature verified with the model's key (or, for a warm-start file,
    the team wrote it: see the module docs). False: an unsigned blob a process without a
    key read - loadable as built-in array state only.
    """

    blob: bytes
    trusted: bool


class Sealing:
    """What one process does with the blobs it writes and reads, key or no key (the module
    docs' policy). ``refused`` is called once per distinct blob refused (a counter's ``inc``);
    each is logged once, with the Redis key it came from."""

    def __init__(
        self, signer: Signer | None, *, component: str = "",
        refused: Callable[[], object] | None = None,
    ) -> None:  # fmt: skip
        self.signer = signer
        self.component = component
        self.refused = refused
        self._seen: set[tuple[str, int, bytes]] = set()

    @classmethod
    def from_env(
        cls, namespace: str, model: str, environ: Mapping[str, str] | None = None, *,
        component: str = "", refused: Callable[[], object] | None = None,
    ) -> Sealing:  # fmt: skip
        """The sealing of one model's blobs with the key in ``TIDELINE_SIGNING_KEY`` (none:
        unsigned, see the policy); ``ValueError`` for a key too short to be one."""
        key = key_from_env(environ)
        signer = Signer(key, f"{namespace}/{model}") if key is not None else None
        return cls(signer, component=component, refused=refused)

    @property
    def keyed(self) -> bool:
        return self.signer is not None

    def seal(self, blob: bytes, kind: str) -> bytes:
        """What is written: sealed with a key, the blob itself without one."""
        return self.signer.seal(blob, kind) if self.signer is not None else blob

    def open(self, raw: bytes, kind: str, where: str) -> Opened:
        """A blob read from ``where`` (its Redis key), verified as the policy says; a refusal
        is logged once, counted once, and raised (:class:`ForgedBlob`)."""
        try:
            if self.signer is not None:
                return Opened(self.signer.open(raw, kind), trusted=True)
            if raw.startswith(MAGIC):
                raise ForgedBlob(f"signed, and this process has no key to verify it ({KEY_ENV})")
            return Opened(raw, trusted=False)
        except ForgedBlob as e:
            self.refuse(where, raw, e)
            raise

    def refuse(self, where: str, raw: bytes, why: ForgedBlob) -> None:
        """Log and count a blob refused (the first time this process refuses it)."""
        seen = (where, len(raw), raw[:HEADER_BYTES])
        if seen in self._seen:
            return
        if len(self._seen) >= _REMEMBERED:
            self._seen.clear()
        self._seen.add(seen)
        log.warning("%srefused %s (%d bytes), not loaded: %s",
                    f"{self.component}: " if self.component else "", where, len(raw), why)  # fmt: skip
        if self.refused is not None:
            self.refused()


def key_from_env(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The signing key in ``TIDELINE_SIGNING_KEY`` as bytes (None: not set); ``ValueError``
    when it is set but shorter than :data:`MIN_KEY_BYTES` (empty included: a Secret that
    lost its value must not sign with nothing)."""
    env = os.environ if environ is None else environ
    text = env.get(KEY_ENV)
    if text is None:
        return None
    key = os.fsencode(text)  # (the variable's bytes, as the process received them)
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"{KEY_ENV} is set but has {len(key)} bytes; a key has at least "
                         f"{MIN_KEY_BYTES}")  # fmt: skip
    return key


def check_environment(algorithm: str, environ: Mapping[str, str] | None = None) -> None:
    """``ValueError`` unless a process of a model with ``algorithm`` can run here: a key that
    is a key when one is set, and one at all for a learner that is not a built-in (its
    state is code: nothing it writes could be loaded back unsigned)."""
    key = key_from_env(environ)
    if key is None and algorithm not in BUILTIN_ALGORITHMS:
        raise ValueError(f"algorithm {algorithm} loads state that is code, so its versions are "
                         f"signed: set {KEY_ENV} (the operator's pods have it; `tideline run` "
                         "makes one)")  # fmt: skip


def require_trusted(algorithm: object, trusted: bool) -> None:
    """:class:`ForgedBlob` when state of ``algorithm`` from bytes that are not ``trusted``
    would be loaded and it is not a built-in (whose state is arrays, never code)."""
    if not trusted and algorithm not in BUILTIN_ALGORITHMS:
        raise ForgedBlob(f"unsigned state of algorithm {algorithm!r}: only the built-ins' "
                         f"is loaded without a signature ({KEY_ENV} is not set)")  # fmt: skip


def unsigned_header(blob: bytes) -> dict[str, Any] | None:
    """The JSON header of an unsigned :mod:`tideline.codec` blob (``TDL1``), read alone: no
    array decoded, nothing unpickled. None when ``blob`` is not one (sealed, truncated, a
    header that is not a JSON object).

    >>> unsigned_header(codec.encode({}, {"model": {"algorithm": "sgd"}}))["meta"]
    {'model': {'algorithm': 'sgd'}}
    >>> unsigned_header(Signer(b"k" * 32, "prod/fraud").seal(codec.encode({}))) is None
    True
    """
    if len(blob) < 8 or not blob.startswith(codec.MAGIC):
        return None
    (size,) = struct.unpack_from("<I", blob, len(codec.MAGIC))
    if 8 + size > len(blob):
        return None
    try:
        header = orjson.loads(blob[8 : 8 + size])
    except orjson.JSONDecodeError:
        return None
    return header if isinstance(header, dict) else None


def adoptable(blob: bytes, kind: str, algorithm: str | None) -> bool:
    """Whether an unsigned blob that a model's store held when the operator made its key
    may be sealed with that key (see the module docs' adoption): the state of a built-in
    learner only, which is arrays and never runs code.

    A *version* says what it is: :func:`tideline.algorithms.make_learner` builds its learner
    from its header's ``model``, so that header's ``algorithm`` decides (one left out is not
    taken for the default). A *checkpoint*, *replay* buffer or drift *reference* does not -
    its header holds counters, a stream position, column names - and is loaded into the
    learner (or monitor) that its revision's manifest makes, so ``algorithm``, the
    revision's (None: not known), decides. A sealed blob never is.

    >>> sgd, river = (codec.encode({}, {"model": {"algorithm": a}}) for a in ("sgd", "river"))
    >>> adoptable(sgd, VERSION, None), adoptable(river, VERSION, "sgd")
    (True, False)
    >>> checkpoint = codec.encode({}, {"counters": {}})
    >>> adoptable(checkpoint, CHECKPOINT, "forest"), adoptable(checkpoint, CHECKPOINT, "custom")
    (True, False)
    >>> adoptable(checkpoint, REPLAY, None), adoptable(b"TDS1" + checkpoint, CHECKPOINT, "sgd")
    (False, False)
    """
    header = unsigned_header(blob)
    if header is None:
        return False
    if kind != VERSION:
        return algorithm in BUILTIN_ALGORITHMS
    meta = header.get("meta")
    model = meta.get("model") if isinstance(meta, dict) else None
    return isinstance(model, dict) and model.get("algorithm") in BUILTIN_ALGORITHMS


@dataclass
class Adopted:
    """What one look at a model's store sealed (:func:`tideline.store.adopt_unsigned`):
    blobs by kind, those left unsigned (not a built-in's), and those written between the read
    and the replacement (left as they are: a process without the key wrote them).

    >>> a = Adopted(revisions=["a1"])
    >>> a.sealed.update({VERSION: 3, CHECKPOINT: 1, REPLAY: 1}); a.unsigned[VERSION] += 1
    >>> print(a)
    revision a1: sealed 3 versions, checkpoint yes, replay yes, reference no; left unsigned (not a built-in's): 1 version
    """

    revisions: list[str] = field(default_factory=list)
    sealed: Counter[str] = field(default_factory=Counter)
    unsigned: Counter[str] = field(default_factory=Counter)
    changed: int = 0

    @property
    def any(self) -> bool:
        """Whether it found anything unsigned at all."""
        return bool(self.sealed or self.unsigned or self.changed)

    def __str__(self) -> str:
        def said(n: int) -> str:
            return "yes" if n == 1 else str(n) if n else "no"

        sealed = [f"{self.sealed[VERSION]} versions"]
        sealed += [f"{kind} {said(self.sealed[kind])}" for kind in (CHECKPOINT, REPLAY, REFERENCE)]
        text = f"revision{'s' * (len(self.revisions) != 1)} {', '.join(self.revisions) or '-'}: "
        text += f"sealed {', '.join(sealed)}"
        if self.unsigned:
            left = [f"{n} {kind}{'s' * (n > 1)}" for kind, n in self.unsigned.items()]
            text += f"; left unsigned (not a built-in's): {', '.join(left)}"
        if self.changed:
            text += f"; {self.changed} written meanwhile, left as they are"
        return text


_UNTRUSTED: ContextVar[bool] = ContextVar("tideline_loading_untrusted", default=False)


def loading_untrusted() -> bool:
    """True while learner state decoded from bytes that were neither verified nor trusted is
    being loaded (a process without a key reading an unsigned blob). A learner whose state
    is code refuses to load then. False everywhere else, a copy of a learner in memory
    included.

    >>> with loading(trusted=False):
    ...     loading_untrusted()
    True
    >>> loading_untrusted()
    False
    """
    return _UNTRUSTED.get()


@contextlib.contextmanager
def loading(trusted: bool) -> Iterator[None]:
    """The scope in which state decoded from a blob is built and loaded (``make_learner``,
    ``set_state``); :func:`loading_untrusted` answers inside it."""
    token = _UNTRUSTED.set(not trusted)
    try:
        yield
    finally:
        _UNTRUSTED.reset(token)
