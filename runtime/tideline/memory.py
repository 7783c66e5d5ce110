"""A learner's memory against its container's limit: measured by the learner, judged by the
operator.

A team's own learner (``algorithm: custom | river``) can grow without bound - an adaptive
random forest that keeps splitting, a lookup table with a row per entity - until the kernel
kills its container for want of memory (``OOMKilled``) and the Deployment restarts it, again
and again. The learner measures itself at every checkpoint (:class:`Probe`): its resident
set (``/proc/self/statm``), its container's limit (the cgroup's ``memory.max``, v2, or
``memory.limit_in_bytes``, v1) and the size of the state it learned (the checkpoint blob it
just wrote), and writes them into its status hash (``Keys.learner(revision)``,
:meth:`MemoryUse.to_hash`). The operator reads them back (:meth:`MemoryUse.of_hash`) and says
in the ``LearnerMemory`` condition when a learner nears its limit (:meth:`MemoryUse.near`).

The resident set is what the kernel charges to the container for a learner's arrays and
objects; the cgroup's own ``memory.current`` also counts page cache the kernel reclaims
before it kills anything, so it would cry wolf. Everything here reads a few small files:
cheap enough for every checkpoint.

Examples
--------
>>> use = MemoryUse("5f3a", rss=int(1.72 * 2**30), limit=2 * 2**30, state=900 * 2**20)
>>> use.near(), use.summary()
(True, 'learner of revision 5f3a uses 1.7 GiB of its 2 GiB limit (86 %); its state is 900 MiB')
>>> MemoryUse.of_hash("5f3a", [v.encode() for v in use.to_hash().values()]) == use
True
>>> MemoryUse.of_hash("5f3a", [None, None, None]) is None
True
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

STATM = "/proc/self/statm"
PROC_CGROUP = "/proc/self/cgroup"
CGROUP_ROOT = "/sys/fs/cgroup"
# cgroup v1 says "no limit" with the largest page-aligned number (9223372036854771712); any
# limit past an exbibyte is no limit either
NO_LIMIT = 1 << 60
NEAR_LIMIT = 0.85  # a learner at this share of its limit is said to be near it ...
CLEAR_BELOW = 0.80  # ... until it is below this one again (no condition flapping at 85 %)
FIELDS = ("rssBytes", "memoryLimitBytes", "stateBytes")  # in Keys.learner(revision)


@dataclass(frozen=True)
class MemoryUse:
    """One learner's memory as it last reported it: resident bytes, its container's limit
    (None: none, or not known) and the size of its learned state (None: not checkpointed
    yet). Fields :data:`FIELDS` of its status hash; a value not known is written empty, so
    a restarted learner that knows less leaves nothing of its predecessor's behind."""

    revision: str
    rss: int
    limit: int | None = None
    state: int | None = None

    def to_hash(self) -> dict[str, str]:
        values = (self.rss, self.limit, self.state)
        return {k: "" if v is None else str(v) for k, v in zip(FIELDS, values, strict=True)}

    @classmethod
    def of_hash(cls, revision: str, values: Sequence[bytes | str | None]) -> MemoryUse | None:
        """From the values of :data:`FIELDS` (``HMGET``), in that order; None when the
        learner reported no resident size (not checkpointed yet, or a learner before this)."""
        rss, limit, state = (_count(v) for v in values)
        return None if rss is None else cls(revision, rss, limit, state)

    @property
    def share(self) -> float | None:
        """The resident size as a share of the limit; None without a limit."""
        return self.rss / self.limit if self.limit else None

    def near(self, was: bool = False) -> bool:
        """Near its limit: at :data:`NEAR_LIMIT` of it, or still above :data:`CLEAR_BELOW`
        when it was near already (``was``)."""
        share = self.share
        return share is not None and share >= (CLEAR_BELOW if was else NEAR_LIMIT)

    def summary(self) -> str:
        used = f"learner of revision {self.revision} uses {size(self.rss)}"
        if self.limit is None:
            used += " with no memory limit"
        else:
            used += f" of its {size(self.limit)} limit ({(self.share or 0) * 100:.0f} %)"
        return used if self.state is None else f"{used}; its state is {size(self.state)}"


def _count(raw: bytes | str | None) -> int | None:
    text = raw.decode() if isinstance(raw, bytes) else raw
    return int(text) if text and text.isascii() and text.isdigit() else None


def size(n: int) -> str:
    """Bytes as people read them: ``1.7 GiB``, ``2 GiB``, ``900 MiB``, ``12 KiB``.

    >>> size(int(1.7 * 2**30)), size(2 * 2**30), size(900 * 2**20), size(12_345), size(5)
    ('1.7 GiB', '2 GiB', '900 MiB', '12 KiB', '5 B')
    """
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            text = f"{n / (1 << shift):.1f}" if unit == "GiB" else f"{n / (1 << shift):.0f}"
            return f"{text.removesuffix('.0')} {unit}"
    return f"{n} B"


def resident_bytes(statm: str | Path = STATM) -> int | None:
    """This process's resident set in bytes (the second field of ``statm``, in pages); None
    where there is no such file (not Linux).

    >>> (resident_bytes() or 1) > 0
    True
    """
    try:
        fields = Path(statm).read_text().split()
        return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return None


def memory_limit(
    root: str | Path = CGROUP_ROOT, proc_cgroup: str | Path = PROC_CGROUP
) -> int | None:
    """The memory limit of this process's cgroup in bytes; None when there is none (``max``,
    or a number past :data:`NO_LIMIT`) or none can be read.

    cgroup v2 (``memory.max``) when ``root`` holds the unified hierarchy, else v1
    (``memory/memory.limit_in_bytes``). The process's own cgroup (``/proc/self/cgroup``) and
    its ancestors are read where the hierarchy shows them - the lowest limit holds - and
    ``root``'s own file where it does not: a container in its own cgroup namespace (the rule
    on cgroup v2), or with its cgroup mounted at ``root`` (v1), finds its limit there.
    """
    root = Path(root)
    if (root / "cgroup.controllers").exists():  # v2: one hierarchy
        base, name, controller = root, "memory.max", ""
    else:
        base, name, controller = root / "memory", "memory.limit_in_bytes", "memory"
    limits = [n for n in map(_limit, _candidates(base, name, controller, proc_cgroup)) if n]
    return min(limits) if limits else None


def _candidates(base: Path, name: str, controller: str, proc_cgroup: str | Path) -> list[Path]:
    """The limit files of the process's cgroup and its ancestors, as ``base`` shows them."""
    own = "/"
    try:
        for line in Path(proc_cgroup).read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):  # (v2: the line "0::<path>")
                own = path or "/"
                break
    except (OSError, ValueError):
        pass
    parts = [p for p in own.split("/") if p]
    dirs = [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]
    return [d / name for d in dirs]


def _limit(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    n = _count(text)
    return n if n is not None and 0 < n < NO_LIMIT else None


@dataclass(frozen=True)
class Probe:
    """Where a process reads its memory (the files of the machine it runs on, unless a test
    names others); called, its :class:`MemoryUse` now (None where it has no ``statm``).

    >>> Probe(statm="/nonexistent")("5f3a") is None
    True
    """

    statm: str | Path = STATM
    root: str | Path = CGROUP_ROOT  # the cgroup filesystem
    proc_cgroup: str | Path = PROC_CGROUP

    def __call__(self, revision: str, state: int | None = None) -> MemoryUse | None:
        rss = resident_bytes(self.statm)
        if rss is None:
            return None
        return MemoryUse(revision, rss, memory_limit(self.root, self.proc_cgroup), state)
