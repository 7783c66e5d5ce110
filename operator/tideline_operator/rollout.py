"""The rollout and guardrail state machine: one pure function, argo-rollouts' way.

``decide(spec, status, observed, health, now) -> Decision(status, actions)``
reads nothing and writes nothing: the per-model loop in the handlers
observes (the resource, its annotations, Redis pointers and the monitor's
health summary), calls ``decide``, applies the actions idempotently and
writes the status once. Everything here is unit tested without an API.

What it decides:

Every judgement of quality rests on the monitor's evidence
(:class:`tideline.health.Quality`): candidates scored on the *same* recent
labelled samples, each compared with the served version by a confidence
sequence that stays valid however often it is read.

* **Canary.** A new revision (the spec's hash changed) starts a canary; the
  ``rollout.steps`` advance (``setWeight``, ``pause``, ``analysis``) while
  the analysis holds: the canary's served version is not significantly
  worse than stable's by more than ``analysis.maxAccuracyDrop`` on the same
  samples, its servers' error rate and p95 latency are within bounds.
  Fewer than ``minSamples`` common samples wait: no data is not a failure.
  ``failureLimit`` failures abort: weight 0, the canary removed, phase
  Degraded naming the metric, stable untouched. After the last step the
  canary is promoted.
* **Proof.** A version becomes ``lastGood`` once it was served on
  ``analysis.minSamples`` labels of its own answers and is not significantly
  worse than the previous ``lastGood`` on the common window (the first one:
  significantly better than the best constant answer), whether it is still
  the served one or was replaced before its labels came (the monitor's
  ``recent`` candidate). lastGood moves forward only. v0 of a cold model never is.
* **Guardrails.** ``lastGood`` significantly better than the served version
  by more than ``guardrails.maxAccuracyDrop`` on the same samples (bad
  updates, poisoned labels), or a server error rate over ``maxErrorRate``,
  pins ``served`` to ``lastGood`` and resets the learner to it. Without a
  proven version nothing can be rolled back to: the condition says so.
  Concept drift (the error went up: the world changed) is no reason to go
  back in time, old versions are as wrong as the new: ``onConceptDrift:
  adapt`` (default) has the learner adapt faster for a while, ``rollback``
  rolls back only if a proven version is significantly better on the same
  samples (else adapts), ``pause`` stops learning, ``alert`` only says so.
  After a rollback the learner's newer version is served again once, for
  ``RECOVER_HOLD`` intervals in a row, the labels that came since agree with
  the pinned version as they did before it and, on those labels, the newer
  version is surely not worse than the pinned one by ``maxAccuracyDrop``
  (:func:`_recovered` says why each).
* **Manual control** by annotation: promote, abort, pause/resume learning,
  roll back to a version.
* **A store that lost keys** (restarted empty, flushed, evicted; issue 30): the
  epoch token the status keeps is gone, latest went back or lastGood vanished.
  One StoreReset event, a StoreReset condition saying what was lost, Degraded
  until a version is served again (and a lastGood exists again, if one was
  lost); lastGood comes back from the status when its version is still
  stored. Learners that find nothing stored wait for a StartWord: ``after:N``
  (the status's latest) for stable, ``fresh`` on a first deploy or a canary.
  Redis's eviction policy and persistence are a StoreDurable condition (a
  warning, not Degraded).
* **An operator that stopped mid-turn** (its actions applied, its status not
  written) is picked up from the store: a pin found there that the status
  lacks is adopted with its details (the rollback writes them beside it) and
  unpinned as the first loop would; a routing hash that already names the
  canary stable is a promotion done. No action and no event twice.
* **A model that cannot be loaded** (a team's own class that does not import,
  lacks a method or refuses its params): the pods report it in the store
  (:class:`tideline.contracts.ModelFault`), and the observation carries it in.
  ``status.loadFaults`` keeps them, the ``ModelLoaded`` condition says them (False,
  the reason, "<component> of revision <rev>: <the error's last line>"; True,
  ``Loaded``, once none is left), each new one is a Warning event. A canary that has
  one is aborted with it; a stable revision that has one is Degraded - and one whose
  learner never loaded it (no version ever published) has nothing to protect: a new
  revision replaces it at once, without the canary's steps (the fix of a typo in a
  class's name).
* **A learner near its memory limit** (a team's own learner that grows without bound):
  each learner writes its resident size, its container's limit and its state's size into
  its status hash at every checkpoint (:mod:`tideline.memory`). The ``LearnerMemory``
  condition, shown once one reported, is False (``NearLimit``) while the stable revision's
  or the canary's uses 85 % of its limit (until below 80 % again), naming the sizes and
  what to change; one Warning event when that starts, one Normal event when it ends. A
  warning, not Degraded.
* **Phase**, derived in priority order, never set ad hoc: a stable model that
  cannot be loaded, aborted, worse than a proven version or a store reset ->
  Degraded; paused -> Paused; canary or replicas not ready -> Progressing; else
  Healthy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from tideline.contracts import COMPONENTS, MAX_FAULT_MESSAGE, Backtest, ModelFault, StartWord
from tideline.health import Candidate, Comparison, Health, Quality
from tideline.memory import MemoryUse
from tideline.spec import Spec

if TYPE_CHECKING:
    from tideline.tasks import Task

ANNOTATION_PREFIX = "tideline.dev/"
PROMOTE = ANNOTATION_PREFIX + "promote"
ABORT = ANNOTATION_PREFIX + "abort"
PAUSE_LEARNING = ANNOTATION_PREFIX + "pause-learning"
ROLLBACK_TO = ANNOTATION_PREFIX + "rollback-to"
# seconds after a store reset that what processes put back (the restores count) is that reset's
# repair, not another loss: the learner and the servers find the loss at their own pace
RESET_GRACE = 30.0
MIN_PAIRED = 100  # paired samples before a comparison may roll back (the variance needs some)
# answers of a canary's servers before their error rate may fail an analysis (two errors in
# the first ten are no rate)
MIN_REQUESTS = 100
# analysis intervals the evidence for unpinning must hold, turn after turn, before the
# learner is served again (see _recovered)
RECOVER_HOLD = 2


# --------------------------------------------------------------------------- inputs / outputs
@dataclass(frozen=True)
class StoreSeen:
    """What a turn read of the store besides the stable revision's pointers."""

    epoch: str | None = None  # the token at ``Keys.epoch``; None: there is none
    restores: int = 0  # ``Keys.restores``: how often a process put back what the store lost
    kept: bool = False  # the version ``restorable(status)`` names is still stored
    # the active revisions looked at (stable, and the canary the status names) -> the
    # StartWord their control hash holds, and those of them with no pointers at all
    words: Mapping[str, StartWord | None] = field(default_factory=dict)
    empty: frozenset[str] = frozenset()


@dataclass(frozen=True)
class StoreConfig:
    """Redis's configuration as ``CONFIG GET`` read it; not ``readable`` where CONFIG is refused
    (a managed Redis often renames or forbids it)."""

    readable: bool = True
    policy: str = "noeviction"  # maxmemory-policy
    appendonly: bool = False
    save: str = ""  # the RDB save points; "" for none


@dataclass(frozen=True)
class Observed:
    """What the loop saw this turn, besides the spec and the health summary."""

    revision: str  # the spec's revision now
    annotations: dict[str, str] = field(default_factory=dict)
    served: int | None = None  # stable revision's pointers
    last_good: int | None = None
    latest: int | None = None
    pinned: bool | None = None  # the stable pointers' pin (None: not read)
    pin: Rollback | None = None  # the rollback that pinned, as it wrote itself beside the pin
    routed_stable: str | None = None  # the revision the routing hash names stable
    replicas_ready: bool = True
    ready_replicas: int = 0  # stable servers ready (the scale subresource's status)
    generation: int = 1
    store: StoreSeen | None = None  # None: the store could not be read this turn
    store_config: StoreConfig | None = None  # None: not known (not read yet, or unreachable)
    # Redis refusing writes for want of memory (OOM replies lately), said as the condition
    # says it; None: not refusing (or not known)
    store_full: str | None = None
    # what the pods of the stable revision and of the canary the status names reported they
    # cannot load (``Keys.faults``); None: not read this turn
    faults: tuple[ModelFault, ...] | None = None
    # the memory the learners of those revisions last reported (their status hash); None: not
    # read this turn
    memory: tuple[MemoryUse, ...] | None = None
    # the canary learner's catch-up on history and its backtest (None: none reported yet)
    backtest: Backtest | None = None


# --------------------------------------------------------------------------- actions
# What a turn asks the reconciler to do: one class per thing it does, matched on in
# ``Reconciler._act``. Canary weights and removed revisions are no actions: the children and
# the routing hash follow the status (level-based), and nothing is emitted that nothing
# handles. ``kind`` names each in the ``tideline_operator_actions_total`` metric.
@dataclass(frozen=True)
class Event:
    """A Kubernetes Event on the model."""

    kind: ClassVar[str] = "event"
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class RollbackTo:
    """Pin the revision's served version to ``to``, the pin's details beside it, and reset
    its learner to it."""

    kind: ClassVar[str] = "rollback"
    revision: str
    to: int
    pin: Rollback


@dataclass(frozen=True)
class _Version:
    revision: str
    version: int


@dataclass(frozen=True)
class Unpin(_Version):
    """Serve the learner's ``version`` again, unpinned."""

    kind: ClassVar[str] = "unpin"


@dataclass(frozen=True)
class Prove(_Version):
    """``version`` is the revision's lastGood now."""

    kind: ClassVar[str] = "prove"


@dataclass(frozen=True)
class RestoreLastGood(_Version):
    """lastGood back from the status after a store reset (its version is still stored)."""

    kind: ClassVar[str] = "restore-last-good"


@dataclass(frozen=True)
class Adapt:
    """The learner adapts faster for a while, from the concept drift seen at ``at``."""

    kind: ClassVar[str] = "adapt"
    revision: str
    at: float


@dataclass(frozen=True)
class PauseLearning:
    """The learner stops (or resumes) learning."""

    kind: ClassVar[str] = "pause-learning"
    revision: str
    paused: bool


@dataclass(frozen=True)
class Promote:
    """The canary ``revision`` became stable over ``previous`` (counted and logged; the
    children follow the status)."""

    kind: ClassVar[str] = "promote"
    revision: str | None
    previous: str | None


@dataclass(frozen=True)
class StartCanary:
    """``revision`` starts as the canary (the children follow the status); one retired
    before starts afresh, not from what it had learned when it left. Whether its learner
    starts warm from the stable's is the reconciler's to say (``canaryWarmStart``): it
    needs both revisions' models, which the decision does not read."""

    kind: ClassVar[str] = "start-canary"
    revision: str


@dataclass(frozen=True)
class Epoch:
    """Write the store's epoch token, unless one is there."""

    kind: ClassVar[str] = "epoch"
    token: str


@dataclass(frozen=True)
class GiveStartWord:
    """What the revision's learners that find nothing stored start from; None clears it."""

    kind: ClassVar[str] = "start-word"
    revision: str
    word: StartWord | None


Action = (
    Event | RollbackTo | Unpin | Prove | RestoreLastGood | Adapt | PauseLearning | Promote
    | StartCanary | Epoch | GiveStartWord
)  # fmt: skip


class Condition(msgspec.Struct):
    """A Kubernetes condition (``status.conditions[]``)."""

    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str = ""
    message: str = ""
    lastTransitionTime: str | None = None  # noqa: N815 - the API's names, as written


class Aborted(msgspec.Struct):
    """A canary that was aborted: which, why, when (Unix seconds)."""

    revision: str = ""
    reason: str = ""
    at: float = 0.0
    cause: str = ""  # the Degraded condition's reason, when not RolloutAborted (BacktestFailed)


class Rollback(msgspec.Struct, omit_defaults=True):
    """The last rollback: from and to which version, why, and the newest version then; and
    since when the evidence for serving the learner again has held (see :func:`_recovered`;
    not in the store's pin: a restarted loop waits the hold again)."""

    at: float = 0.0
    revision: str = ""
    from_: int | None = msgspec.field(default=None, name="from")
    to: int | None = None
    reason: str = ""
    latest: int | None = None
    recovering: float | None = None


class StoreReset(msgspec.Struct):
    """The last time the store lost keys: what was noticed, what the status held then (the
    versions lost), and when a version was served again (and a lastGood, if one was lost)."""

    at: float = 0.0
    cause: str = ""
    message: str = ""
    latest: int | None = None
    served: int | None = None
    lastGood: int | None = None  # noqa: N815 - the status's names
    recoveredAt: float | None = None  # noqa: N815

    @property
    def active(self) -> bool:
        return self.recoveredAt is None


class AnalysisRecord(msgspec.Struct):
    """The last canary analysis."""

    outcome: str = "inconclusive"  # pass | fail | inconclusive
    metric: str | None = None
    message: str = ""
    at: float = 0.0


class RolloutStatus(msgspec.Struct, kw_only=True):
    """The operator's part of an OnlineModel's status, typed (argo-rollouts keeps its status
    the same way). Read from and written to the resource only at the reconcile edges
    (:meth:`from_status`, :meth:`to_status`); an absent field is None. The CRD's status
    schema (``tideline_operator.crd.status_schema``) names the same fields."""

    phase: str | None = None
    observedGeneration: int | None = None  # noqa: N815 - the resource's field names
    conditions: list[Condition] = msgspec.field(default_factory=list)
    stableRevision: str | None = None  # noqa: N815
    canaryRevision: str | None = None  # noqa: N815
    canaryWeight: int | None = None  # noqa: N815
    currentStep: int | None = None  # noqa: N815
    pauseStartedAt: float | None = None  # noqa: N815
    analysisFailures: int | None = None  # noqa: N815
    lastAnalysisAt: float | None = None  # noqa: N815
    analysis: AnalysisRecord | None = None
    aborted: Aborted | None = None
    promotedAt: float | None = None  # noqa: N815
    servedVersion: int | None = None  # noqa: N815
    latestVersion: int | None = None  # noqa: N815
    lastGoodVersion: int | None = None  # noqa: N815
    pinned: bool | None = None
    lastRollback: Rollback | None = None  # noqa: N815
    manualRollbackTo: int | None = None  # noqa: N815
    learningPaused: bool | None = None  # noqa: N815
    # why: "annotation" or "conceptDrift" (onConceptDrift: pause); and the pause-learning
    # annotation as last read ("" when absent): a change of it is a person's word, which
    # overrides a policy's pause
    learningPausedBy: str | None = None  # noqa: N815
    pauseAnnotation: str | None = None  # noqa: N815
    # the promote and abort annotations as last read: a request is a change of one (see
    # _asked), so one left on the object never promotes or aborts the next canary
    requestsSeen: dict[str, str] | None = None  # noqa: N815
    lastConceptAt: float | None = None  # noqa: N815
    replicas: int | None = None
    selector: str | None = None
    learnerLag: int | None = None  # noqa: N815
    onlineAccuracy: float | None = None  # noqa: N815
    onlineError: dict[str, float] | None = None  # noqa: N815  # (regression: rmse, mae, ...)
    drift: str | None = None
    quality: dict[str, Any] | None = None
    log: dict[str, Any] | None = None
    maturity: dict[str, Any] | None = None
    backtest: dict[str, Any] | None = None  # the canary's catch-up on history and backtest
    liftOverBaseline: dict[str, Any] | None = None  # noqa: N815
    stableWarmStart: str | None = None  # noqa: N815
    canaryWarmStart: str | None = None  # noqa: N815
    storeEpoch: str | None = None  # noqa: N815
    storeRestores: int | None = None  # noqa: N815
    storeReset: StoreReset | None = None  # noqa: N815
    loadFaults: list[ModelFault] | None = None  # noqa: N815

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> RolloutStatus:
        """From the resource's status (fields of others, e.g. kopf's, are left out; a field
        of ours that cannot be read, edited by hand, is left out too: the turn rewrites it)."""
        raw = dict(status or {})
        while True:
            try:
                return msgspec.convert(raw, cls, strict=False)
            except msgspec.ValidationError as e:
                bad = str(e).rpartition("- at `$.")[2].split(".")[0].split("[")[0].rstrip("`")
                if bad not in raw:
                    raise
                del raw[bad]

    def to_status(self) -> dict[str, Any]:
        """As the resource's status holds it: JSON types, an absent field left out."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return {k: v for k, v in out.items() if v is not None}

    @property
    def stable(self) -> str:
        """The stable revision (every turn's decision sets it)."""
        if self.stableRevision is None:
            raise ValueError("the status names no stable revision yet")
        return self.stableRevision

    def copy(self) -> RolloutStatus:
        return msgspec.convert(msgspec.to_builtins(self), RolloutStatus)


@dataclass
class Decision:
    status: RolloutStatus
    actions: list[Action]


@dataclass(frozen=True)
class AnalysisResult:
    outcome: str  # pass | fail | inconclusive
    metric: str | None = None
    message: str = ""


# --------------------------------------------------------------------------- analysis
def evidence(spec: Spec, health: Health | None, now: float) -> Quality | None:
    """The monitor's common-window evidence, if its summary is fresh enough to act on."""
    if health is None or not health.fresh(now, spec.rollout.analysis.interval):
        return None
    return health.quality


def _task(spec: Spec) -> Task:
    """The model's task: what a comparison counts (``spec.model.metric``, or the task's usual
    one) and whether its differences are relative."""
    # (imported here: the task brings numpy, which the kubectl plugin, importing this module for
    # RolloutStatus, would load on every call: 0.5 s instead of 0.13 s to import tideline.ctl.view)
    from tideline.tasks import Task

    return Task.of(spec.model)


def _units(spec: Spec) -> str:
    """What a comparison's difference is in: accuracy points, or the relative reduction of the
    loss it counts (log loss, squared error)."""
    return _UNITS[str(_task(spec).metric)]


# what a comparison's difference is in, and the name an analysis's failure gives, by metric
_UNITS = {"accuracy": "accuracy", "logloss": "relative log loss", "squaredError": "relative MSE"}
_FAILED_BY = {"accuracy": "accuracy", "logloss": "logloss", "squaredError": "rmse"}


def _said(c: Comparison) -> str:
    return f"{c.difference:+.3f} [{c.lower:+.3f}, {c.upper:+.3f}] on {c.samples} paired samples"


def analyze(spec: Spec, health: Health | None, now: float) -> AnalysisResult:
    """Canary against stable: quality on the same labelled samples, and its servers' health."""
    a = spec.rollout.analysis
    if health is None or not health.fresh(now, a.interval):
        return AnalysisResult("inconclusive", None, "no fresh health summary from the monitor")
    # The servers' health first: a canary whose servers fail answers nothing to label, so
    # waiting for minSamples labels would wait for ever (the canary's errors are its own
    # answers, not labels: they need no common window)
    canary = health.track("canary")
    if (
        canary.error_rate is not None
        and canary.requests >= MIN_REQUESTS
        and canary.error_rate > a.maxErrorRate
    ):
        return AnalysisResult(
            "fail",
            "errorRate",
            f"canary error rate {canary.error_rate:.3f} is over {a.maxErrorRate} "
            f"({canary.errors} of {canary.requests} answers)",
        )
    c = health.quality.get("canary") if health.quality else None
    vs = c.vs_served if c is not None else None
    if vs is None or vs.samples < a.minSamples:
        n = vs.samples if vs is not None else 0
        return AnalysisResult(
            "inconclusive", None, f"canary scored on {n} of {a.minSamples} common labelled samples"
        )
    metric = _FAILED_BY[str(_task(spec).metric)]
    if vs.worse(a.maxAccuracyDrop):
        return AnalysisResult(
            "fail",
            metric,
            f"canary v{c.version if c else '?'} is worse than stable's served version by more "
            f"than {a.maxAccuracyDrop} ({_units(spec)}): {_said(vs)}",
        )
    p95 = canary.p95_latency
    if p95 is not None and p95 > a.maxP95Latency:
        return AnalysisResult(
            "fail",
            "p95Latency",
            f"canary p95 latency {p95 * 1000:.1f} ms is over {a.maxP95Latency * 1000:.1f} ms",
        )
    return AnalysisResult("pass", None, f"canary holds: {_said(vs)}")


def guardrail_breach(
    spec: Spec, status: RolloutStatus, health: Health | None, now: float
) -> str | None:
    """Why the stable revision's served version must go back to lastGood, if it must.

    Only a proven ``lastGood`` that is significantly better than the served
    version on the same samples, by more than ``maxAccuracyDrop`` (by any
    amount while concept drift is flagged and ``onConceptDrift`` is
    ``rollback``), or a server error rate over ``maxErrorRate``.
    """
    g = spec.guardrails
    served, last_good = status.servedVersion, status.lastGoodVersion
    if last_good is None or served is None or served == last_good:
        return None
    q = evidence(spec, health, now)
    if q is None or health is None:
        return None
    good = q.get("lastGood")
    margin = g.maxAccuracyDrop
    if health.drift.concept.detected and g.onConceptDrift == "rollback":
        margin = 0.0
    vs = _beats_served(good, margin, MIN_PAIRED) if good and good.version == last_good else None
    if vs is not None:
        return (
            f"lastGood v{last_good} beats served v{served} by more than {margin} "
            f"({_units(spec)}) on the same samples: {_said(vs)}"
        )
    s = health.track("stable")
    # (the monitor counts answers over a recent window; a rate of a few answers is no rate)
    if s.error_rate is not None and s.requests >= MIN_REQUESTS and s.error_rate > g.maxErrorRate:
        return (f"error rate {s.error_rate:.3f} is over {g.maxErrorRate} "
                f"({s.errors} of {s.requests} answers)")  # fmt: skip
    return None


def _beats_served(c: Candidate, margin: float, n: int) -> Comparison | None:
    """How ``c`` (lastGood, baseline) is better than the served version by more than
    ``margin``, on at least ``n`` paired samples it has not learned, if it is: with the
    served version scored on all of them (``vs_served_whole``: its own training data
    flatters it, never the other way, and the whole window counts at once, so a poisoned
    version is judged as soon as it is served), or on those neither learned (``vs_served``:
    the one a version that memorises cannot pass on its memory)."""
    for vs in (c.vs_served_whole, c.vs_served):
        if vs is not None and vs.samples >= n and vs.better(margin):
            return vs
    return None


def proven(spec: Spec, status: RolloutStatus, health: Health | None, now: float) -> int | None:
    """The newest version that has just proven itself good enough to be ``lastGood``.

    Two candidates: the served version, and the monitor's ``recent`` one - the
    newest version of the stable revision served on ``minSamples`` labels of
    its own answers, served now or not. A learner that publishes every few
    seconds (or labels that come minutes late) replaces a version before its
    labels come: proving only the served one proved nothing new, and after a
    concept drift lastGood stayed a version of the old world (a rollback then
    landed on one scoring 0.46 in the new one). A candidate is proven when it
    was served on ``minSamples`` labels and is not significantly worse than
    ``lastGood`` on at least ``minSamples`` common samples (the first proof:
    significantly better than the best constant answer). lastGood moves
    forward only: never to a version older than it, nor to one the last
    rollback undid (newer than the version rolled back to, up to the newest
    then). Nothing is proven while a rollback pins ``served``. v0 of a cold
    model never is.
    """
    q = evidence(spec, health, now)
    last_good = status.lastGoodVersion
    if q is None or status.pinned:
        return None
    n = spec.rollout.analysis.minSamples
    rb = status.lastRollback
    best: int | None = None
    for role in ("served", "recent"):
        c = q.get(role)
        if c is None or c.version is None or c.revision != status.stableRevision:
            continue
        v = int(c.version)
        if role == "served" and v != status.servedVersion:
            continue  # (the monitor's summary is older than the pointers)
        if (last_good is not None and v <= last_good) or (best is not None and v <= best):
            continue  # forward only
        if v == 0 and q.get("baseline") is None:
            continue  # a cold model's v0 learned nothing: never a rollback target
        if (
            rb is not None
            and rb.to is not None
            and rb.latest is not None
            and rb.to < v <= rb.latest
        ):
            continue  # learned in the run the rollback undid
        if c.served_labelled < n:
            continue
        if _proof(q, role, c, last_good, n):
            best = v
    return best


def _proof(q: Quality, role: str, c: Candidate, last_good: int | None, n: int) -> bool:
    """The candidate against lastGood (or, for the first proof, the best constant) on at
    least ``n`` common samples: the served one as the others compare with it, ``recent``
    as it compares with them (:attr:`tideline.health.Candidate.versus`)."""
    if last_good is None:
        if role == "served":
            k = q.get("constant")
            vs = k.vs_served if k is not None else None
            return vs is not None and vs.samples >= n and vs.worse(0.0)
        vs = c.versus.get("constant")
        return vs is not None and vs.samples >= n and vs.better(0.0)
    g = q.get("lastGood")
    if g is None or g.version != last_good:
        return False
    if role == "served":
        vs = g.vs_served
        return vs is not None and vs.samples >= n and not vs.better(0.0)
    vs = c.versus.get("lastGood")
    return vs is not None and vs.samples >= n and not vs.worse(0.0)


def quality_condition(
    spec: Spec, status: RolloutStatus, health: Health | None, now: float
) -> tuple[bool, str, str]:
    """The ModelQuality condition: (ok, reason, message)."""
    q = evidence(spec, health, now)
    served, last_good = status.servedVersion, status.lastGoodVersion
    if q is None or health is None:
        return True, "NoEvidence", "no fresh evidence from the monitor"
    good, base = q.get("lastGood"), q.get("baseline")
    vs = _beats_served(good, 0.0, 0) if good is not None and served != last_good else None
    if vs is not None:
        return (False, "WorseThanLastGood",
                f"lastGood v{last_good} vs served v{served}: {_said(vs)}")  # fmt: skip
    vs = _beats_served(base, 0.0, 0) if base is not None else None
    if base is not None and vs is not None:
        return (False, "WorseThanBaseline",
                f"baseline v{base.version} vs served v{served}: {_said(vs)}")  # fmt: skip
    if health.drift.concept.detected and spec.guardrails.onConceptDrift in ("adapt", "rollback"):
        return True, "Adapting", "concept drift: the learner adapts faster for a while"
    if last_good is None:
        return True, "NoProvenVersion", "no version proven on labels yet: nothing to roll back to"
    return True, "OK", f"served v{served}, lastGood v{last_good}"


def log_capacity_condition(health: Health | None) -> tuple[bool, str, str]:
    """The LogCapacity condition: can the Redis in use hold labelWindow of prediction log?

    False only on a measurement that says it cannot (reason ``Insufficient``):
    labels older than what fits would find nothing to join with.
    """
    cap = health.log if health is not None else None
    if cap is None or cap.fits is None:
        return True, "NotMeasured", cap.summary() if cap is not None else "no estimate yet"
    if cap.fits:
        return True, "Fits", cap.summary()
    return False, "Insufficient", cap.summary() + ": raise maxmemory or shorten labelWindow"


def durable_condition(config: StoreConfig) -> tuple[bool | None, str, str]:
    """The StoreDurable condition: can the store lose what it holds? A warning, not Degraded:
    the model runs, but a full Redis may evict versions, pointers and consumer groups, and
    a restart of one without persistence loses every version (issue 30)."""
    if not config.readable:
        return None, "ConfigNotReadable", (
            "CONFIG GET is refused (a managed Redis?): eviction policy and persistence unknown; "
            "tideline needs maxmemory-policy noeviction and AOF or RDB persistence"
        )  # fmt: skip
    persistent = config.appendonly or bool(config.save.strip())
    kept = "appendonly yes" if config.appendonly else f"save '{config.save}'" if persistent else ""
    if config.policy != "noeviction":
        also = "" if persistent else "; and nothing is persisted (appendonly no, no save points)"
        return False, "EvictionPolicy", (
            f"maxmemory-policy is {config.policy}: a full Redis evicts keys - versions, "
            f"pointers, consumer groups - silently; set noeviction{also}"
        )  # fmt: skip
    if not persistent:
        return False, "NotPersistent", (
            "appendonly no and no save points: a restart of Redis loses every version, pointer "
            "and consumer group; turn on appendonly (or save)"
        )  # fmt: skip
    return True, "Durable", f"maxmemory-policy noeviction, {kept}"


def _resetting(reset: StoreReset, st: RolloutStatus) -> str:
    waits = "a version is served again"
    if reset.lastGood is not None:
        waits += " and a lastGood exists again"
    out = f"{reset.message}; Degraded until {waits}"
    latest = st.latestVersion
    if st.servedVersion is None and latest is not None and latest != reset.latest:
        # the learner numbered on from a cold model (nothing held one): never served alone
        out += (f"; v{latest} is a cold model, not served: serve it by hand "
                f"(annotate {ROLLBACK_TO}={latest}) or put Redis's data back")  # fmt: skip
    return out


def log_status(health: Health | None) -> dict[str, Any] | None:
    """``status.log``: the prediction log's needs, as the monitor measured them."""
    cap = health.log if health is not None else None
    if cap is None:
        return None
    out: dict[str, Any] = {"predictionsPerSecond": cap.rate, "windowSeconds": cap.window,
                           "heldBytes": int(cap.held), "redisUsedBytes": int(cap.used)}  # fmt: skip
    if cap.bytes_per_prediction is not None:
        out["bytesPerPrediction"] = cap.bytes_per_prediction
    if cap.need is not None:
        out["needBytes"] = int(cap.need)
    if cap.limit:
        out["redisLimitBytes"], out["redisLimitSource"] = int(cap.limit), cap.limit_source
    if cap.history_window:
        out.update(historySeconds=cap.history_window, historyHeldBytes=int(cap.history_held),
                   labelsPerSecond=cap.label_rate)  # fmt: skip
        if cap.bytes_per_sample is not None:
            out["bytesPerSample"] = cap.bytes_per_sample
        if cap.history_need is not None:
            out["historyNeedBytes"] = int(cap.history_need)
    return out


def backtest_status(b: Backtest) -> dict[str, Any]:
    """``status.backtest``: the canary learner's catch-up on history and its comparison
    with stable on the window (the backtest step's evidence)."""
    out: dict[str, Any] = {"done": b.done, "entries": b.read, "of": b.total, "rows": b.rows,
                           "rowsPerSecond": round(b.rate), "windowSeconds": b.window,
                           "samples": b.samples}  # fmt: skip
    if b.samples:
        out.update(difference=round(b.difference, 4), lower=round(b.lower, 4),
                   upper=round(b.upper, 4))  # fmt: skip
    return out


def catching_up_condition(b: Backtest) -> tuple[bool, str, str]:
    """``CatchingUp``: True while the canary's learner learns the history (how far, how fast),
    False once it has (reason ``CaughtUp``)."""
    if b.done:
        return False, "CaughtUp", f"learned {b.rows:,} rows of history at {b.rate:,.0f} rows/s"
    share = b.read / b.total if b.total else 0.0
    return True, "CatchingUp", (f"{share:.0%} of the history ({b.read:,} of {b.total:,} "
                                f"entries, {b.rows:,} rows) at {b.rate:,.0f} rows/s")  # fmt: skip


def lift_over_baseline(q: Quality | None) -> dict[str, Any] | None:
    """``status.liftOverBaseline``: the served version against the snapshot the model was
    warm-started from, frozen, on the same labels (what online learning buys; None when
    the model was not warm-started, or nothing is compared yet)."""
    base = q.get("baseline") if q is not None else None
    # (on the labels neither learned: the served version's own would flatter it)
    vs = base.vs_served if base is not None else None
    if base is None or vs is None or not vs.samples:
        return None
    # (the baseline's comparison is baseline minus served: the lift is its opposite)
    return {"difference": round(-vs.difference, 4), "lower": round(-vs.upper, 4),
            "upper": round(-vs.lower, 4), "samples": vs.samples, "baselineVersion": base.version}  # fmt: skip


def online_error(track: Any) -> dict[str, float] | None:
    """``status.onlineError`` (regression): the stable track's RMSE and MAE on joined labels,
    and its squared error relative to the best constant's (None: no figure yet)."""
    said = {"rmse": track.rmse, "mae": track.mae, "relativeToConstant": track.relative_mse}
    out = {k: round(float(v), 4) for k, v in said.items() if v is not None}
    return out or None


def maturity_status(health: Health | None) -> dict[str, Any] | None:
    """``status.maturity`` (with ``labelDefault``): how far behind now the predictions whose
    outcomes are known are - ``after``, and the labels' reading lag - as the monitor scores."""
    m = health.maturity if health is not None else None
    if m is None:
        return None
    out: dict[str, Any] = {"afterSeconds": m.after, "heldRows": m.held, "earlyRows": m.early}
    if m.lag_seconds is not None:
        out["lagSeconds"] = round(m.lag_seconds, 1)
    return out


def quality_status(q: Quality | None) -> dict[str, Any] | None:
    """``status.quality``: each candidate on the common window, and against served."""
    if q is None:
        return None
    out: dict[str, Any] = {"samples": q.window, "source": q.source}
    for role in ("served", "lastGood", "recent", "baseline", "canary", "latest"):
        c = q.get(role)
        if c is None:
            continue
        row: dict[str, Any] = {"version": c.version}
        for k in ("accuracy", "logloss", "rmse"):  # (log loss: what metric logloss compares)
            v = getattr(c, k)
            if v is not None:
                row[k] = round(v, 4)
        if c.vs_served is not None:
            row["vsServed"] = {
                "difference": round(c.vs_served.difference, 4),
                "lower": round(c.vs_served.lower, 4),
                "upper": round(c.vs_served.upper, 4),
                "samples": c.vs_served.samples,
            }
        out[role] = row
    return out


# --------------------------------------------------------------------------- decide
def _condition(
    previous: list[Condition], kind: str, ok: bool | None, reason: str, message: str, now: float
) -> Condition:
    """A Kubernetes condition (``ok`` None: Unknown); its lastTransitionTime moves only when
    its status does."""
    status = "Unknown" if ok is None else "True" if ok else "False"
    before = next((c for c in previous if c.type == kind), None)
    since = (
        before.lastTransitionTime
        if before and before.status == status and before.lastTransitionTime
        else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    )
    return Condition(kind, status, reason, message, since)


def decide(
    spec: Spec,
    status: RolloutStatus | None,
    observed: Observed,
    health: Health | None,
    now: float,
) -> Decision:
    st = status.copy() if status is not None else RolloutStatus()
    actions: list[Action] = []
    ann = observed.annotations
    st.observedGeneration = observed.generation
    # before the pointers overwrite the status: what it held is what a store reset lost
    _store_reset(st, observed, now, actions)
    if observed.served is not None or observed.store is not None:
        # the pointers were read: lastGood (and after a store reset, served) may be absent;
        # latest stays as the status had it, the version a learner numbers on from
        st.servedVersion = observed.served
        st.lastGoodVersion = observed.last_good
    if observed.latest is not None:
        st.latestVersion = observed.latest
    _restore_last_good(st, observed, actions)
    _adopt_pin(st, observed, now)
    st.replicas = observed.ready_replicas

    # -- first deploy: the spec's revision is stable
    if not st.stableRevision:
        st.stableRevision = observed.revision
        actions.append(Event("Normal", "Deployed", f"revision {observed.revision}"))

    canary = st.canaryRevision
    if canary and not st.aborted and observed.routed_stable == canary:
        # a turn promoted it and wrote the routing hash, then the operator stopped before
        # writing its status: the promotion is done (no second promote, no second event)
        _promote(st, now, actions, "", announce=False)
        canary = None
    # -- a new revision: a canary (a newer one replaces a canary in flight)
    if observed.revision not in (st.stableRevision, canary) and not _aborted_for(
        st, observed.revision
    ):
        # (a canary in flight goes with the status: the children follow it)
        canary = st.canaryRevision = observed.revision
        st.currentStep, st.canaryWeight, st.pauseStartedAt = 0, 0, None
        st.analysisFailures, st.lastAnalysisAt, st.aborted = 0, None, None
        actions.append(StartCanary(canary))
        actions.append(Event("Normal", "CanaryStarted", f"revision {canary}"))
    elif observed.revision == st.stableRevision and canary:
        # the spec went back to the stable revision: the canary goes (its children and its
        # weight with the status)
        st.canaryRevision, st.canaryWeight, st.currentStep, st.aborted = None, 0, None, None
        canary = None

    asked = _asked(st, ann, canary)
    _load_faults(st, observed, actions)
    if canary and not st.aborted:
        broken = _faults_of(st, canary)
        stuck = [f for f in _faults_of(st, st.stableRevision) if f.component == "learner"]
        if broken:  # its pods crash-loop: no step can be judged, and it must not be promoted
            _abort(st, f"the model cannot be loaded ({broken[0].reason}): {faults_said(broken)}",
                   now, actions)  # fmt: skip
        elif stuck and st.servedVersion is None and st.latestVersion is None:
            # a stable revision whose learner never loaded its model never published, never
            # served: the canary's steps would protect nothing
            _promote(st, now, actions, f"revision {st.stableRevision} never loaded its model "
                     f"({stuck[0].reason}): nothing to protect")  # fmt: skip
        else:
            _advance(spec, st, asked, health, now, actions, observed.backtest)

    _guardrails(spec, st, ann, health, now, actions)
    _store_recovered(st, now, actions)
    _start_words(st, observed, actions)
    _store_full(st, observed, actions)
    _learner_memory(st, observed, actions)
    _phase(spec, st, observed, health, now)
    return Decision(st, actions)


def _load_faults(st: RolloutStatus, observed: Observed, actions: list[Action]) -> None:
    """``status.loadFaults``: what the pods of the stable revision and of the canary reported
    they cannot load (as last read, while the store cannot be). One Warning event per new
    fault (its reason: ImportFailed, MissingMethod, BadParams, WarmStartFailed), one Normal
    event when none is left."""
    if observed.faults is None:
        return
    revisions = [st.stableRevision, st.canaryRevision]
    faults = sorted(
        (_fit(f) for f in observed.faults if f.revision in revisions and f.component in COMPONENTS),
        key=lambda f: (revisions.index(f.revision), COMPONENTS.index(f.component)),
    )
    before = st.loadFaults or []
    for f in faults:
        if not any(f.same(b) for b in before):
            actions.append(Event("Warning", f.reason, f.summary()))
    if before and not faults:
        actions.append(Event("Normal", "ModelLoaded", loaded_condition([])[2]))
    st.loadFaults = faults or None


def _fit(f: ModelFault) -> ModelFault:
    """A fault as the status may hold it (the CRD bounds its strings): what a pod wrote is
    read, not trusted to be short."""
    if len(f.message) <= MAX_FAULT_MESSAGE and len(f.reason) <= 64:
        return f
    return ModelFault(f.reason[:64], f.message[:MAX_FAULT_MESSAGE], f.component, f.revision, f.at)


def _faults_of(st: RolloutStatus, revision: str | None) -> list[ModelFault]:
    return [f for f in st.loadFaults or [] if f.revision == revision]


def faults_said(faults: list[ModelFault]) -> str:
    """The faults in one line, components that say the same grouped: ``learner and server
    of revision 5f3a: ModuleNotFoundError: No module named 'teams'``."""
    groups: dict[tuple[str, str], list[str]] = {}
    for f in faults:
        groups.setdefault((f.revision, f.message), []).append(f.component)
    out = []
    for (revision, message), components in groups.items():
        who = components[0] if len(components) == 1 else (
            f"{', '.join(components[:-1])} and {components[-1]}"
        )  # fmt: skip
        out.append(f"{who} of revision {revision}: {message}")
    return "; ".join(out)


def loaded_condition(faults: list[ModelFault]) -> tuple[bool, str, str]:
    """The ModelLoaded condition: (ok, reason, message); its reason, the first fault's."""
    if not faults:
        return True, "Loaded", "no component of the model reports a model it cannot load"
    return False, faults[0].reason, faults_said(faults)


def _store_full(st: RolloutStatus, observed: Observed, actions: list[Action]) -> None:
    """One event when Redis starts refusing writes for want of memory (the learner waits, the
    monitor cannot write its health, labels are refused), one when it accepts them again."""
    was = any(c.type == "StoreFull" and c.status == "True" for c in st.conditions or [])
    full = observed.store_full
    if full and not was:
        actions.append(Event("Warning", "StoreFull", full))
    elif was and not full and observed.store is not None:  # (read this turn, and not refusing)
        actions.append(Event("Normal", "StoreAccepting", "Redis accepts writes again"))


def memory_condition(uses: list[MemoryUse], was_near: bool) -> tuple[bool, str, str]:
    """The LearnerMemory condition: (ok, reason, message). False, ``NearLimit``, while a learner
    of the stable revision or of the canary uses 85 % of its container's memory limit or more
    (and until it is below 80 % again: ``was_near``, the condition False before; see
    :meth:`tideline.memory.MemoryUse.near`). A warning, not Degraded: the model runs, but a
    team's own learner that grows without bound (a forest that keeps splitting, a table with
    a row per entity) is killed for want of memory and restarted, again and again."""
    near = [u for u in uses if u.near(was_near)]
    if near:
        return False, "NearLimit", (
            "; ".join(u.summary() for u in near)
            + ": raise spec.pods.learner.resources.limits.memory or bound the model"
        )  # fmt: skip
    return True, "Ok", "; ".join(u.summary() for u in uses)


def _memory_seen(st: RolloutStatus, observed: Observed) -> list[MemoryUse]:
    """What the learners of the stable revision and of the canary in flight reported."""
    revisions = (st.stableRevision, None if st.aborted else st.canaryRevision)
    return [u for u in observed.memory or () if u.revision in revisions]


def _was_near(conditions: list[Condition]) -> bool:
    return any(c.type == "LearnerMemory" and c.status == "False" for c in conditions)


def _learner_memory(st: RolloutStatus, observed: Observed, actions: list[Action]) -> None:
    """One Warning event when a learner comes near its memory limit, one Normal event when
    none is near any more (hysteresis in :func:`memory_condition`: no event per turn at 85 %)."""
    uses = _memory_seen(st, observed)
    if not uses:  # (not read, or nothing reported: as last seen)
        return
    was = _was_near(st.conditions or [])
    ok, _, message = memory_condition(uses, was)
    if not ok and not was:
        actions.append(Event("Warning", "LearnerMemoryNearLimit", message))
    elif ok and was:
        actions.append(Event("Normal", "LearnerMemoryOk", message))


def restorable(status: RolloutStatus) -> int | None:
    """The lastGood version a turn looks for in the store: the one a store reset lost while
    it is not back, else the status's (:attr:`StoreSeen.kept` says whether it is stored)."""
    reset = status.storeReset
    if reset is not None and reset.active and reset.lastGood is not None:
        return reset.lastGood
    return status.lastGoodVersion


def _store_reset(st: RolloutStatus, observed: Observed, now: float, actions: list[Action]) -> None:
    """Notice a store that lost keys (restarted empty, flushed, evicted): a Warning event
    once per reset, and ``status.storeReset`` saying what was lost (issue 30).

    The epoch token the status keeps is gone or another: the store lost keys. Without
    the token a reset shows too, while none is being recovered from: latest went back
    from the status's, or lastGood vanished (publishing never moves it back; a pointers
    hash evicted alone, as allkeys-lru does, leaves the token in place), or the restores
    count moved: a server or a learner put back what the store lost before this turn
    looked (an evicted pointers hash is back within a second, as it was).
    """
    seen = observed.store
    if seen is None:  # not read this turn: nothing is known to be lost
        return
    cause = None
    if seen.epoch is None or seen.epoch != st.storeEpoch:
        if st.storeEpoch is not None:
            cause = "the epoch token is gone" if seen.epoch is None else "the epoch token changed"
        if seen.epoch is None:
            # SET NX: a token another writer put first would read as a reset next turn, but
            # only one operator writes it (kopf's peering keeps one active)
            st.storeEpoch = f"{int(now * 1e6):x}"
            actions.append(Epoch(st.storeEpoch))
        else:
            st.storeEpoch = seen.epoch
    before = st.storeReset
    ongoing = before is not None and before.active
    latest, served, good = st.latestVersion, st.servedVersion, st.lastGoodVersion
    restored = (
        st.storeRestores is not None
        and seen.restores > st.storeRestores
        and (before is None or now - before.at >= RESET_GRACE)
    )
    st.storeRestores = seen.restores  # (a count that went down went with the store: the epoch)
    if cause is None and not ongoing:
        if latest is not None and (observed.latest is None or observed.latest < latest):
            cause = f"latest went back from v{latest} to {_v(observed.latest)}"
        elif good is not None and observed.last_good is None:
            cause = f"lastGood v{good} vanished"
        elif restored:
            cause = "a server or the learner put back what the store had lost"
    if cause is None:
        return
    if good is None and before is not None and ongoing:
        good = before.lastGood  # lost by the reset before this one, and not back yet
    lost = [f"{name} {_v(was)} -> {_v(now_)}"
            for name, was, now_ in (("latest", latest, observed.latest),
                                    ("served", served, observed.served))
            if was is not None and (now_ is None or now_ < was)]  # fmt: skip
    if good is not None and observed.last_good != good:
        lost.append(
            f"lastGood v{good} restored from the status (its version is still stored)"
            if seen.kept
            else f"lastGood v{good} gone with its version: a version must be proven again"
        )
    message = f"the store lost keys ({cause}): " + (
        ", ".join(lost) or "every pointer was back before the operator looked"
    )
    st.storeReset = StoreReset(now, cause, message, latest, served, good)
    actions.append(Event("Warning", "StoreReset", message))


def _v(version: int | None) -> str:
    return "none" if version is None else f"v{version}"


def _restore_last_good(st: RolloutStatus, observed: Observed, actions: list[Action]) -> None:
    """After a store reset, lastGood from the status when its version is still stored: the
    proof stands (no second "first version proven")."""
    reset, seen = st.storeReset, observed.store
    if reset is None or not reset.active or seen is None or reset.lastGood is None:
        return
    if st.lastGoodVersion is None and seen.kept:
        st.lastGoodVersion = reset.lastGood
        rev = st.stableRevision or observed.revision
        actions.append(RestoreLastGood(rev, reset.lastGood))


def _store_recovered(st: RolloutStatus, now: float, actions: list[Action]) -> None:
    """A store reset is over once a version is served again, and a lastGood exists again if
    one was lost."""
    reset = st.storeReset
    if reset is None or not reset.active or st.servedVersion is None:
        return
    if reset.lastGood is not None and st.lastGoodVersion is None:
        return
    reset.recoveredAt = now
    good = f", lastGood v{st.lastGoodVersion}" if st.lastGoodVersion is not None else ""
    actions.append(Event("Normal", "StoreRecovered", f"serving v{st.servedVersion}{good} again"))


def _adopt_pin(st: RolloutStatus, observed: Observed, now: float) -> None:
    """The store's pin is the truth: a turn that rolled back (or unpinned) and stopped before
    its status was written left it there. A restarted loop adopts it - no second RolledBack
    event - and unpins as the first one would (issue 30)."""
    if observed.pinned is None or observed.pinned == bool(st.pinned):
        return
    st.pinned = observed.pinned
    if not observed.pinned:
        return
    rev = st.stableRevision or observed.revision
    # without its details: a pin a learner set on a cold model after a store reset, or one
    # put back by a process that held it
    pin = observed.pin or Rollback(now, rev, None, observed.served,
                                   "pinned in the store, without a rollback's details",
                                   observed.latest)  # fmt: skip
    st.lastRollback = pin
    target = _version_number(observed.annotations.get(ROLLBACK_TO))
    if target is not None and target == pin.to:
        st.manualRollbackTo = target  # the annotation's rollback is the one adopted


def _start_words(st: RolloutStatus, observed: Observed, actions: list[Action]) -> None:
    """The StartWord to each active revision with no pointers (learners that find nothing
    stored wait for it): stable numbers on after the status's latest, a canary starts fresh.
    Written while the revision has no pointers, cleared once it has: a word left behind
    would start a later learner wrong after an eviction."""
    seen = observed.store
    if seen is None:
        return
    words = {st.stable: StartWord(after=st.latestVersion)}
    if st.canaryRevision and not st.aborted:
        words[st.canaryRevision] = StartWord()
    for rev, word in words.items():
        had = seen.words.get(rev)
        if rev in seen.empty or rev not in seen.words:  # not looked at: a canary just started
            if had != word:
                actions.append(GiveStartWord(rev, word))
        elif had is not None:
            actions.append(GiveStartWord(rev, None))


def invalid(
    status: RolloutStatus | None, path: str, reason: str, generation: int, now: float,
    why: str = "InvalidSpec",
) -> RolloutStatus:  # fmt: skip
    """A status for a turn that cannot proceed: Degraded, naming the field (``InvalidSpec``)
    or the object in the way (``ResourceExists``); nothing else moves."""
    st = status.copy() if status is not None else RolloutStatus()
    before = st.conditions
    st.observedGeneration = generation
    st.phase = "Degraded"
    message = f"{path}: {reason}"
    kept = [c for c in before if c.type not in ("Ready", "Degraded")]
    st.conditions = [
        _condition(before, "Ready", False, why, message, now),
        *kept,
        _condition(before, "Degraded", True, why, message, now),
    ]
    return st


def active_revisions(status: RolloutStatus) -> set[str]:
    """The revisions whose children the model keeps: stable, and the canary unless it was
    aborted. The reconciler removes the others' (a promoted, replaced, reverted or aborted
    canary's, the old stable's) once the stable servers are ready: no action says so."""
    canary = status.canaryRevision if not status.aborted else None
    return {rev for rev in (status.stableRevision, canary) if rev}


def _aborted_for(st: RolloutStatus, revision: str) -> bool:
    return st.aborted is not None and st.aborted.revision == revision


def _abort(
    st: RolloutStatus, reason: str, now: float, actions: list[Action], cause: str = ""
) -> None:
    canary = st.canaryRevision
    assert canary is not None
    st.aborted = Aborted(canary, reason, now, cause)
    st.canaryWeight = 0
    actions.append(Event("Warning", cause or "RolloutAborted", reason))


def judge_backtest(spec: Spec, b: Backtest | None) -> AnalysisResult | None:
    """A backtest step's verdict on the canary learner's report (None: it is still catching
    up): ``fail`` when the candidate is worse than stable by more than ``maxAccuracyDrop``
    on the window's paired samples - the live analysis's test - and ``inconclusive`` when
    it is not shown worse (the backtest stops a bad revision, it does not slow a good one):
    ``pass`` when it also has ``minSamples``."""
    if b is None or not b.done:
        return None
    a = spec.rollout.analysis
    vs = Comparison(samples=b.samples, difference=b.difference, lower=b.lower, upper=b.upper)
    said = f"{_said(vs)} of the last {b.window:g}s of history ({_units(spec)})"
    if b.samples and vs.worse(a.maxAccuracyDrop):
        return AnalysisResult("fail", "backtest", f"the candidate is worse than stable by more "
                              f"than {a.maxAccuracyDrop} on history: {said}")  # fmt: skip
    if b.samples >= max(a.minSamples, 1):
        return AnalysisResult("pass", "backtest", f"the candidate holds on history: {said}")
    if not b.samples:
        return AnalysisResult("inconclusive", "backtest", "no history to compare on")
    return AnalysisResult("inconclusive", "backtest", f"too little history to judge: {said}")


def _promote(
    st: RolloutStatus, now: float, actions: list[Action], why: str, announce: bool = True
) -> None:
    """The canary becomes stable; ``announce``: the promote action and the Promoted event
    (not for a promotion a crashed turn applied already)."""
    old, new = st.stableRevision, st.canaryRevision
    st.stableRevision, st.canaryRevision, st.canaryWeight, st.currentStep = new, None, 0, None
    st.pauseStartedAt, st.analysisFailures, st.promotedAt = None, 0, now
    # the old revision's: the next turn reads the new one's pointers
    st.servedVersion = st.lastGoodVersion = st.latestVersion = None
    # (lastConceptAt stays: the episode reacted to is the stream's, not the old revision's;
    # forgotten, it was announced again at each promotion)
    st.pinned = st.liftOverBaseline = None
    # the promoted learner keeps its arguments: no restart at promotion
    st.stableWarmStart, st.canaryWarmStart = st.canaryWarmStart, None
    if st.learningPaused and new is not None:  # (a pause is a revision's: the new stable's too)
        actions.append(PauseLearning(new, True))
    if announce:  # (the old revision's children go with the status)
        actions.append(Promote(new, old))
        actions.append(Event("Normal", "Promoted", f"revision {new} ({why})"))


def _asked(st: RolloutStatus, ann: dict[str, str], canary: str | None) -> set[str]:
    """What the promote and abort annotations ask this turn: each one set, or changed, to
    ``true`` or to the canary's revision (``kubectl tideline`` writes the revision: a request
    for that canary alone). Read once: an annotation left on the object asks nothing of the
    next canary - set it again (another value, or removed and set) to ask again.

    Both are recorded every turn, an absent one as "" (the status is merge-patched: a key
    dropped would stay). With no record - a model's first turn, or a status an operator
    before this one wrote - what is there is recorded and asks nothing (a ``true`` left
    from then would promote a canary at its first turn)."""
    first = st.requestsSeen is None
    seen = dict(st.requestsSeen or {})
    asked = set()
    for key, name in ((ABORT, "abort"), (PROMOTE, "promote")):
        value = ann.get(key, "")
        if not first and value != seen.get(key, "") and value in ("true", canary):
            asked.add(name)
        seen[key] = value
    st.requestsSeen = seen
    return asked


def _advance(
    spec: Spec, st: RolloutStatus, asked: set[str], health: Health | None, now: float,
    actions: list[Action], backtest: Backtest | None = None,
) -> None:  # fmt: skip
    r = spec.rollout
    if "abort" in asked:
        _abort(st, "aborted by annotation", now, actions)
        return
    if "promote" in asked:
        _promote(st, now, actions, "promoted by annotation")
        return
    # background analysis, every interval, for the whole canary
    last = st.lastAnalysisAt
    if last is None or now - last >= r.analysis.interval:
        st.lastAnalysisAt = now
        res = analyze(spec, health, now)
        st.analysis = AnalysisRecord(res.outcome, res.metric, res.message, now)
        if res.outcome == "fail":
            st.analysisFailures = (st.analysisFailures or 0) + 1
            if st.analysisFailures >= r.analysis.failureLimit:
                _abort(st, f"analysis failed on {res.metric}: {res.message}", now, actions)
                return
    while True:
        i = st.currentStep or 0
        if i >= len(r.steps):
            _promote(st, now, actions, "all steps done")
            return
        step = r.steps[i]
        if step.setWeight is not None:
            if st.canaryWeight != step.setWeight:
                st.canaryWeight = step.setWeight
            st.currentStep = i + 1
            continue
        if step.pause is not None:
            started = st.pauseStartedAt
            if started is None:
                st.pauseStartedAt = started = now
            if math.isinf(step.pause) or now - started < step.pause:
                break
            st.pauseStartedAt = None
            st.currentStep = i + 1
            continue
        if step.backtest is not None:  # the candidate on history, before it serves anyone
            verdict = judge_backtest(spec, backtest)
            if verdict is None:
                break
            if verdict.outcome == "fail":
                _abort(st, verdict.message, now, actions, cause="BacktestFailed")
                return
            reason = "BacktestPassed" if verdict.outcome == "pass" else "BacktestInconclusive"
            actions.append(Event("Normal", reason, verdict.message))
            st.currentStep = i + 1
            continue
        # an analysis step: pass to go on, inconclusive to wait
        if st.analysis is not None and st.analysis.outcome == "pass":
            st.currentStep = i + 1
            continue
        break


def _guardrails(
    spec: Spec, st: RolloutStatus, ann: dict[str, str], health: Health | None, now: float,
    actions: list[Action],
) -> None:  # fmt: skip
    rev = st.stableRevision
    assert rev is not None  # decide set it
    seen = ann.get(PAUSE_LEARNING, "")
    if seen != (st.pauseAnnotation or ""):  # (set, changed or removed: a person's word)
        st.pauseAnnotation = seen or None
        st.learningPausedBy = "annotation" if seen == "true" else None
    paused = st.learningPausedBy is not None
    if paused != bool(st.learningPaused):
        st.learningPaused = paused
        actions.append(PauseLearning(rev, paused))
    target = _version_number(ann.get(ROLLBACK_TO))
    if target is not None and st.manualRollbackTo != target:
        st.manualRollbackTo = target
        _rollback(st, rev, target, "rolled back by annotation", now, actions)
        return
    _concept(spec, st, health, now, actions)
    reason = guardrail_breach(spec, st, health, now)
    if reason is not None and st.lastGoodVersion is not None:
        _rollback(st, rev, st.lastGoodVersion, reason, now, actions)
        return
    if st.pinned and _recovered(spec, st, health, now):
        latest = st.latestVersion
        assert latest is not None  # _recovered holds only for a version newer than the pin's
        actions.append(Unpin(rev, latest))
        message = (
            f"serving v{latest}, learned after the rollback to v{st.servedVersion}: surely "
            "within maxAccuracyDrop of it on the labels since, which agree with it as before"
        )
        actions.append(Event("Normal", "Unpinned", message))
        st.servedVersion = latest
        st.pinned = False
        return
    good = proven(spec, st, health, now)
    if good is not None:
        first = st.lastGoodVersion is None
        st.lastGoodVersion = good
        actions.append(Prove(rev, good))
        reset = st.storeReset
        if first and reset is not None and reset.active and reset.lastGood is not None:
            # the store lost the proven one: not the first, and the reset may now be over
            message = f"v{good} is proven on labels: a rollback target again after the store reset"
        else:
            message = f"v{good} is the first version proven on labels: a rollback target"
        if first:
            actions.append(Event("Normal", "Proven", message))


def _version_number(value: str | None) -> int | None:
    """A version from an annotation: ASCII digits only (``'²'.isdigit()`` is true)."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    return int(value)


def _concept(
    spec: Spec, st: RolloutStatus, health: Health | None, now: float, actions: list[Action]
) -> None:
    """React once to each concept-drift episode, as ``onConceptDrift`` says."""
    if health is None or not health.fresh(now, spec.rollout.analysis.interval):
        return
    c = health.drift.concept
    if not c.detected or c.last is None or st.lastConceptAt == c.last.ts:
        return
    st.lastConceptAt = c.last.ts
    rev = st.stable  # (decide set it)
    policy = spec.guardrails.onConceptDrift
    where = (
        f"error rate rose ({c.method}) at v{c.last.version}"
        if c.last.version is not None
        else f"error rate rose ({c.method})"
    )
    if policy in ("adapt", "rollback"):
        actions.append(Adapt(rev, c.last.ts))
        message = f"{where}: the learner adapts faster for a while"
        if policy == "rollback":
            message += " (and rolls back if a proven version is better on the same samples)"
    elif policy == "pause":
        message = (f"{where}: learning paused (until the pause-learning annotation says "
                   f"otherwise: false, or set and removed)")  # fmt: skip
        st.learningPausedBy = st.learningPausedBy or "conceptDrift"
        if not st.learningPaused:
            st.learningPaused = True
            actions.append(PauseLearning(rev, True))
    else:
        message = f"{where}: alert only"
    actions.append(Event("Warning", "ConceptDrift", message))


def _recovered(spec: Spec, st: RolloutStatus, health: Health | None, now: float) -> bool:
    """After a rollback, serve the learner again once the evidence says it is safe.

    The learner was reset to the version rolled back to; a version newer than
    the newest one at the rollback was learned since. Before, it was served
    again once it was not *significantly* worse than the pinned version on
    ``minSamples`` common samples: while a poisoning went on, the newest
    version had learned only a little of it, no evidence said it was worse,
    it was served, learned more and was rolled back again. What the evidence
    can tell, and what it cannot:

    * Labels that lie are no evidence about anything scored on them. A
      version that learned the lie agrees with them; the pinned version, which
      learns nothing, disagrees with them more than it did. So the pinned
      version's error on the labels that came since the pin (the monitor's
      ``pin`` evidence) must be back within ``guardrails.maxAccuracyDrop`` of
      its error on the window when the pin came (regression: relative): until
      then the labels, or the world, are not what they were, and nothing
      judged on them may unpin. (Labels that lie from before the rollback to
      the end cannot be told from a changed world: the pin holds, and an
      annotation serves a version by hand.)
    * Honest labels while the learner's *training* data is poisoned (the
      demo's ``:learn`` poisoning) do judge it: the newest version must be
      shown *not worse* than the pinned one by more than the guardrail's
      margin - the lower bound of its difference above ``-maxAccuracyDrop``,
      and not significantly worse at all - on at least ``minSamples`` labels
      that came after the pin (``latest``'s ``since_pin``), not merely lack
      evidence that it is worse. The rollback fires on the mirror of that
      bound, so the two cannot answer the same evidence both ways.
    * A version learned while the poisoning still goes on looks fine at
      first and worse with every version after. So all of this must hold at
      every turn for ``RECOVER_HOLD`` analysis intervals (a turn where it does
      not starts the hold again, ``lastRollback.recovering`` keeps its start):
      a poisoning that goes on shows in a newer version within it.
    * Each version is judged only on labels it has not learned - those that
      came after the newest it learned (the monitor scores out of sample) - so
      a version just published has few. A turn whose ``latest`` has fewer than
      ``minSamples`` of them, or whose summary does not show the newest version
      yet, gives no verdict: it neither breaks the hold nor ends it (a learner
      publishing every few seconds would otherwise start the hold again with
      every version, and never be served again).

    A summary that gives neither ``since_pin`` nor ``pin`` (a monitor older than
    them, during an upgrade) is judged by the rule it was written for: one
    interval after the rollback, ``latest`` not significantly worse than the
    pinned version on ``minSamples`` common samples.
    """
    rb = st.lastRollback
    latest = st.latestVersion
    if rb is None or latest is None or rb.latest is None or latest <= rb.latest:
        return False
    q = evidence(spec, health, now)
    c = q.get("latest") if q is not None else None
    if q is not None and q.pin is None and c is not None and c.since_pin is None:
        vs = c.vs_served
        return (
            c.version == latest
            and now - rb.at >= spec.rollout.analysis.interval
            and vs is not None
            and vs.samples >= spec.rollout.analysis.minSamples
            and not vs.worse(0.0)
        )
    verdict = _recovery_holds(spec, st, health, now, latest)
    if verdict is False:
        rb.recovering = None
        return False
    if verdict is None:  # (too few labels to judge the newest version yet)
        return False
    if rb.recovering is None:
        rb.recovering = now
    return now - rb.recovering >= RECOVER_HOLD * spec.rollout.analysis.interval


def _recovery_holds(
    spec: Spec, st: RolloutStatus, health: Health | None, now: float, latest: int
) -> bool | None:
    """This turn's evidence for :func:`_recovered` (all but the hold): True, False, or None
    when there is none for the newest version yet (the summary does not show it, or it has
    fewer than ``minSamples`` labels it has not learned)."""
    q = evidence(spec, health, now)
    c = q.get("latest") if q is not None else None
    if q is None or c is None:
        return False
    if c.version != latest:
        return None
    n = spec.rollout.analysis.minSamples
    margin = spec.guardrails.maxAccuracyDrop
    pin = q.pin
    if pin is None or pin.version != st.servedVersion:
        return False
    if pin.samples < n or pin.error_before is None or pin.error_since is None:
        return None if pin.samples < n else False
    allowed = (  # (a classifier's error by accuracy is 1 - accuracy: points, as its margin)
        pin.error_before * (1 + margin) if _task(spec).relative else pin.error_before + margin
    )
    if pin.error_since > allowed:
        return False  # the labels disagree with the pinned version more than before
    vs = c.since_pin
    if vs is None:
        return False
    if vs.worse(0.0) or vs.lower <= -margin and vs.samples >= n:
        return False  # surely worse, or not shown within the margin on enough labels
    return None if vs.samples < n else True


def _rollback(
    st: RolloutStatus, rev: str, to: int, reason: str, now: float, actions: list[Action]
) -> None:
    frm = st.servedVersion
    latest = st.latestVersion if st.latestVersion is not None else frm
    st.lastRollback = pin = Rollback(now, rev, frm, to, reason, latest)
    st.servedVersion = to
    st.pinned = True
    actions.append(RollbackTo(rev, to, pin))
    actions.append(Event("Warning", "RolledBack", f"v{frm} -> v{to}: {reason}"))


def _phase(
    spec: Spec, st: RolloutStatus, observed: Observed, health: Health | None, now: float
) -> None:
    aborted = st.aborted
    canary = st.canaryRevision
    step = st.currentStep
    paused = (
        canary is not None
        and step is not None
        and step < len(spec.rollout.steps)
        and spec.rollout.steps[step].pause is not None
        and math.isinf(spec.rollout.steps[step].pause or 0)
    )
    quality_ok, quality_reason, quality_message = quality_condition(spec, st, health, now)
    worse = not quality_ok
    reset = st.storeReset
    resetting = reset is not None and reset.active
    full = observed.store_full
    if observed.store is None:  # the store not read this turn: as last seen
        prev = next((c for c in st.conditions or [] if c.type == "StoreFull"), None)
        full = prev.message if prev is not None and prev.status == "True" else None
    # (a promotion this turn leaves the old stable's faults behind: the next turn reads anew)
    st.loadFaults = [f for f in st.loadFaults or []
                     if f.revision in (st.stableRevision, canary)] or None  # fmt: skip
    unloadable = _faults_of(st, st.stableRevision)
    if unloadable or aborted or worse or resetting or full:
        phase = "Degraded"
    elif paused:
        phase = "Paused"
    elif canary or not observed.replicas_ready:
        phase = "Progressing"
    else:
        phase = "Healthy"
    st.phase = phase
    fresh = (
        health if health is not None and health.fresh(now, spec.rollout.analysis.interval) else None
    )
    drift = fresh.drift.summary() if fresh is not None else ""
    drifting = bool(drift)
    if unloadable:
        degraded_reason = unloadable[0].reason
        degraded_message = f"the model cannot be loaded: {faults_said(unloadable)}"
    elif aborted:
        degraded_reason, degraded_message = aborted.cause or "RolloutAborted", aborted.reason
    elif full:
        degraded_reason, degraded_message = "StoreFull", full
    elif resetting and reset is not None:
        degraded_reason, degraded_message = "StoreReset", _resetting(reset, st)
    elif worse:
        degraded_reason, degraded_message = quality_reason, quality_message
    else:
        degraded_reason, degraded_message = "AsExpected", ""
    before = st.conditions or []
    kept = {c.type: c for c in before}
    # stale health (a monitor that cannot write, e.g. Redis full) keeps the last measurement
    log_capacity = kept.get("LogCapacity") if fresh is None else None
    if log_capacity is None:
        log_capacity = _condition(before, "LogCapacity", *log_capacity_condition(fresh), now)
    st.conditions = [
        _condition(before, "Ready", observed.replicas_ready and not aborted, "ReplicasReady" if observed.replicas_ready else "ReplicasNotReady", "", now),
        _condition(before, "Progressing", canary is not None, "CanaryInProgress" if canary else "Stable",
                   f"step {step} weight {st.canaryWeight or 0}" if canary else "", now),
        _condition(before, "Degraded", bool(unloadable or aborted or worse or resetting or full), degraded_reason, degraded_message, now),
        _condition(before, "Drifting", drifting, "DriftDetected" if drifting else "NoDrift", drift, now),
        _condition(before, "ModelQuality", quality_ok, quality_reason, quality_message, now),
        log_capacity,
    ]  # fmt: skip
    if observed.store_config is not None:
        st.conditions.append(
            _condition(before, "StoreDurable", *durable_condition(observed.store_config), now)
        )
    elif "StoreDurable" in kept:  # not read this turn: as last read
        st.conditions.append(kept["StoreDurable"])
    if full or "StoreFull" in kept:  # (shown once Redis was ever full: then as it is now)
        st.conditions.append(
            _condition(before, "StoreFull", True, "OutOfMemory", full, now)
            if full
            else _condition(before, "StoreFull", False, "Accepting", "Redis accepts writes", now)
        )
    uses = _memory_seen(st, observed)
    if uses:  # (shown once a learner reported its memory; then as last reported)
        ok, reason, message = memory_condition(uses, _was_near(before))
        st.conditions.append(_condition(before, "LearnerMemory", ok, reason, message, now))
    elif "LearnerMemory" in kept:
        st.conditions.append(kept["LearnerMemory"])
    if st.loadFaults or "ModelLoaded" in kept:  # (shown once a fault was ever seen)
        st.conditions.append(
            _condition(before, "ModelLoaded", *loaded_condition(st.loadFaults or []), now)
        )
    if reset is not None:
        st.conditions.append(
            _condition(before, "StoreReset", True, "StoreReset", _resetting(reset, st), now)
            if resetting
            else _condition(before, "StoreReset", False, "Recovered",
                            f"recovered from: {reset.message}", now)
        )  # fmt: skip
    b = observed.backtest
    if b is not None and canary is not None and not aborted:
        st.backtest = backtest_status(b)
        st.conditions.append(_condition(before, "CatchingUp", *catching_up_condition(b), now))
    elif "CatchingUp" in kept and kept["CatchingUp"].status == "True":  # (the canary went)
        st.conditions.append(_condition(before, "CatchingUp", False, "NoCatchUp", "", now))
    if canary is None:
        st.backtest = None
    if spec.deprecated:  # read as ever, until the manifest is rewritten
        names = "; ".join(f"{old} is deprecated: write {new}" for old, new in spec.deprecated)
        st.conditions.append(_condition(before, "Deprecated", True, "DeprecatedField", names, now))
    st.drift = drift or "none"
    if fresh is not None:
        accuracy = fresh.track("stable").accuracy
        if accuracy is not None:
            st.onlineAccuracy = round(float(accuracy), 4)
        st.onlineError = online_error(fresh.track("stable")) or st.onlineError
        quality = quality_status(fresh.quality)
        if quality is not None:
            st.quality = quality
        log_needs = log_status(fresh)
        if log_needs is not None:
            st.log = log_needs
        st.liftOverBaseline = lift_over_baseline(fresh.quality) or st.liftOverBaseline
        st.maturity = maturity_status(fresh) if spec.learning.labelDefault else None
