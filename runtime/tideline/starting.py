"""Where a learner without a checkpoint starts, and what it holds to start again.

No I/O here: the learner process (:mod:`tideline.pods.learner`) reads the store and
acts; this module decides.

- :func:`first_state`: from what the store holds of a revision whose checkpoint is not
  there (:class:`Found`), one of :class:`FromServed`, :class:`Publish` or :class:`Wait`.
- :func:`check_warm_start`: whether a snapshot can be the first state of a model.
- :class:`Held`: the versions a learner could have to put back after a store reset (the
  ones it published lately, the served one, ``lastGood``), and the pointers as it last
  knew them; :meth:`Held.put_back` says which pointers name each version again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from tideline.algorithms import Learner
from tideline.contracts import Pointers, StartWord
from tideline.spec import SpecError

PUBLISHED_KEPT = 4  # copies of the versions last published, for the gate (served soon)


@dataclass(frozen=True)
class Found:
    """What the store holds of a revision whose learner finds no checkpoint.

    ``served``: the served version, when its blob is there and verifies; ``refused``: the
    served version, when its blob is there and does not; ``newest``: the newest version
    number anywhere (stored versions and pointers; -1: none); ``word``: the operator's
    :class:`StartWord`, if it gave one."""

    served: int | None = None
    refused: int | None = None
    newest: int = -1
    word: StartWord | None = None


@dataclass(frozen=True)
class FromServed:
    """Resume from the served version's state; number on after ``newest``."""

    version: int
    newest: int


@dataclass(frozen=True)
class Publish:
    """Publish a first version: v0, or v(after + 1) when the store lost versions up to
    ``after`` (a cold model then goes out ``latest`` only, pinned)."""

    after: int | None = None

    @property
    def version(self) -> int:
        return 0 if self.after is None else self.after + 1


@dataclass(frozen=True)
class Wait:
    """Ask again later: the operator has not said where to start."""


Start = FromServed | Publish | Wait


def first_state(found: Found, awaits: bool) -> Start:
    """Where a learner without a checkpoint starts.

    From its revision's served version when the store holds one that verifies (the
    checkpoint alone was evicted, or a server put the version back after a store reset):
    a cold v0 published over a model that had versions would be served. A served version
    that does not verify is never resumed from: the learner starts after the newest
    version stored, as if the store had lost them, with or without the operator.
    Otherwise, a learner that ``awaits`` the operator's word (the operator's Deployments)
    waits for it; one that does not publishes v0 at once.

    >>> first_state(Found(served=3, newest=5), awaits=True)
    FromServed(version=3, newest=5)
    >>> first_state(Found(refused=3, newest=5), awaits=False)
    Publish(after=5)
    >>> first_state(Found(), awaits=True)
    Wait()
    >>> first_state(Found(word=StartWord(after=None)), awaits=True)
    Publish(after=None)
    """
    if found.served is not None:
        return FromServed(found.served, max(found.newest, found.served))
    if found.refused is not None:
        return Publish(after=max(found.newest, found.refused))
    if not awaits:
        return Publish()
    if found.word is not None:
        return Publish(after=found.word.after)
    return Wait()


def check_warm_start(base: Learner, mine: Learner, source: str) -> None:
    """Raises :class:`SpecError` (``spec.model.warmStart``) unless ``base`` was learned
    with ``mine``'s task, algorithm, features and classes (a class's index is its place)."""
    theirs, ours = base.spec(), mine.spec()
    if (
        theirs["features"] != ours["features"]
        or theirs["algorithm"] != ours["algorithm"]
        or base.task != mine.task
    ):
        raise SpecError(
            "spec.model.warmStart",
            f"{source} was learned with another task, algorithm or feature list",
        )
    if theirs.get("classes") != ours.get("classes"):
        raise SpecError("spec.model.warmStart", f"{source} was learned with other classes "
                        "than spec.model.classes, or in another order")  # fmt: skip


Stored = tuple[bytes, dict[str, Any]]  # a version's blob as stored, and its metadata


@dataclass
class Held:
    """The versions a learner holds to put back after a store reset, and the pointers as
    it last knew them (read, or moved by its own publishing).

    It keeps the blobs of the versions it published lately, the served one and
    ``lastGood`` (when it has it), and copies of the learners it published lately: the
    served pointer moves to one of them as a rule, and the gate then needs no load."""

    pointers: Pointers = field(default_factory=Pointers)
    served: int = -1  # the version the gate compares with
    copies: dict[int, Learner] = field(default_factory=dict)
    blobs: dict[int, Stored] = field(default_factory=dict)

    def published(
        self, version: int, copy: Learner, stored: Stored, *, pin: bool, baseline: bool
    ) -> None:
        """``version`` was published: it is ``latest`` and, unless pinned, served; a
        ``baseline`` (a snapshot given in the spec) is ``lastGood`` if nothing was."""
        self.copies[version] = copy
        if len(self.copies) > PUBLISHED_KEPT:  # (a pinned pointer stays behind)
            del self.copies[min(self.copies)]
        self.blobs[version] = stored
        p = self.pointers
        pinned = p.pinned or pin
        self.pointers = dataclasses.replace(
            p,
            latest=version,
            served=p.served if pinned else version,
            lastGood=version if baseline and p.lastGood is None else p.lastGood,
            pinned=pinned,
        )
        self._prune()

    def read(self, pointers: Pointers) -> None:
        """The pointers as read from the store (none there: a store reset, noticed
        elsewhere; the ones known are kept)."""
        if pointers.latest is not None:
            self.pointers = pointers

    def serve(self, version: int) -> Learner | None:
        """The served pointer moved to ``version``: the copy of it this learner published,
        if it has one (then it is the gate's at once); the copies of older ones go."""
        mine = self.copies.get(version)
        self.copies = {k: m for k, m in self.copies.items() if k > version}
        if mine is not None:
            self.served = version
            self._prune()
        return mine

    def loaded(self, version: int, stored: Stored) -> None:
        """The served ``version`` was loaded from the store, as ``stored``."""
        self.served = version
        self.blobs[version] = stored
        self._prune()

    def put_back(self) -> list[tuple[int, bytes, dict[str, Any], dict[str, Any]]]:
        """The versions to store again, oldest first, each with its blob, its metadata and
        the pointer fields that name it; the first carries the pin (before anything is
        published again) and why it was pinned, for an operator that reads the pin back."""
        p = self.pointers
        out = []
        first = True
        for v in sorted(self.blobs):
            blob, meta = self.blobs[v]
            fields: dict[str, Any] = {n: v for n in Pointers.NAMES if p.get(n) == v}
            if first and p.latest is not None:
                fields[Pointers.PINNED] = p.pinned
                if p.pinned:
                    pin = {"pinFrom": p.pinFrom, "pinTo": p.pinTo, "pinAt": p.pinAt,
                           "pinReason": p.pinReason, "pinLatest": p.pinLatest}  # fmt: skip
                    fields.update({k: x for k, x in pin.items() if x not in (None, "")})
                first = False
            out.append((v, blob, meta, fields))
        return out

    def _prune(self) -> None:
        keep = {*self.copies, self.served, self.pointers.lastGood}
        for v in [v for v in self.blobs if v not in keep]:
            del self.blobs[v]
