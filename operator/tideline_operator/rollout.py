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
* **Proof.** A served version becomes ``lastGood`` once it was served on
  ``analysis.minSamples`` labels and is not significantly worse than the
  previous ``lastGood`` on the common window (the first one: significantly
  better than the best constant answer). v0 of a cold model never is.
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
  After a rollback the learner's newer version is served again once it is
  not significantly worse than the pinned one on the same samples.
* **Manual control** by annotation: promote, abort, pause/resume learning,
  roll back to a version.
* **Phase**, derived in priority order, never set ad hoc: aborted ->
  Degraded; paused -> Paused; canary or replicas not ready -> Progressing;
  else Healthy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tideline.health import Comparison, Health, Quality
from tideline.spec import Spec

ANNOTATION_PREFIX = "tideline.dev/"
PROMOTE = ANNOTATION_PREFIX + "promote"
ABORT = ANNOTATION_PREFIX + "abort"
PAUSE_LEARNING = ANNOTATION_PREFIX + "pause-learning"
ROLLBACK_TO = ANNOTATION_PREFIX + "rollback-to"
MIN_PAIRED = 100  # paired samples before a comparison may roll back (the variance needs some)


# --------------------------------------------------------------------------- inputs / outputs
@dataclass(frozen=True)
class Observed:
    """What the loop saw this turn, besides the spec and the health summary."""

    revision: str  # the spec's revision now
    annotations: dict[str, str] = field(default_factory=dict)
    served: int | None = None  # stable revision's pointers
    last_good: int | None = None
    latest: int | None = None
    replicas_ready: bool = True
    ready_replicas: int = 0  # stable servers ready (the scale subresource's status)
    generation: int = 1


@dataclass(frozen=True)
class Action:
    kind: str  # start-canary | set-weight | promote | remove-revision | rollback | unpin | prove | adapt | pause-learning | event
    args: dict[str, Any] = field(default_factory=dict)


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


class Rollback(msgspec.Struct):
    """The last rollback: from and to which version, why, and the newest version then."""

    at: float = 0.0
    revision: str = ""
    from_: int | None = msgspec.field(default=None, name="from")
    to: int | None = None
    reason: str = ""
    latest: int | None = None


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
    lastConceptAt: float | None = None  # noqa: N815
    replicas: int | None = None
    selector: str | None = None
    learnerLag: int | None = None  # noqa: N815
    onlineAccuracy: float | None = None  # noqa: N815
    drift: str | None = None
    quality: dict[str, Any] | None = None
    log: dict[str, Any] | None = None
    stableWarmStart: str | None = None  # noqa: N815
    canaryWarmStart: str | None = None  # noqa: N815

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


def _units(spec: Spec) -> str:
    return "accuracy" if spec.model.task == "binary" else "relative MSE"


def _said(c: Comparison) -> str:
    return f"{c.difference:+.3f} [{c.lower:+.3f}, {c.upper:+.3f}] on {c.samples} paired samples"


def analyze(spec: Spec, health: Health | None, now: float) -> AnalysisResult:
    """Canary against stable: quality on the same labelled samples, and its servers' health."""
    a = spec.rollout.analysis
    if health is None or not health.fresh(now, a.interval):
        return AnalysisResult("inconclusive", None, "no fresh health summary from the monitor")
    c = health.quality.get("canary") if health.quality else None
    vs = c.vs_served if c is not None else None
    if vs is None or vs.samples < a.minSamples:
        n = vs.samples if vs is not None else 0
        return AnalysisResult(
            "inconclusive", None, f"canary scored on {n} of {a.minSamples} common labelled samples"
        )
    metric = "accuracy" if spec.model.task == "binary" else "rmse"
    if vs.worse(a.maxAccuracyDrop):
        return AnalysisResult(
            "fail",
            metric,
            f"canary v{c.version if c else '?'} is worse than stable's served version by more "
            f"than {a.maxAccuracyDrop} ({_units(spec)}): {_said(vs)}",
        )
    canary = health.track("canary")
    if canary.error_rate is not None and canary.error_rate > a.maxErrorRate:
        return AnalysisResult(
            "fail",
            "errorRate",
            f"canary error rate {canary.error_rate:.3f} is over {a.maxErrorRate}",
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
    vs = good.vs_served if good is not None and good.version == last_good else None
    margin = g.maxAccuracyDrop
    if health.drift.concept.detected and g.onConceptDrift == "rollback":
        margin = 0.0
    if vs is not None and vs.samples >= MIN_PAIRED and vs.better(margin):
        return (
            f"lastGood v{last_good} beats served v{served} by more than {margin} "
            f"({_units(spec)}) on the same samples: {_said(vs)}"
        )
    err = health.track("stable").error_rate
    if err is not None and err > g.maxErrorRate:
        return f"error rate {err:.3f} is over {g.maxErrorRate}"
    return None


def proven(spec: Spec, status: RolloutStatus, health: Health | None, now: float) -> int | None:
    """The served version, if it has just proven itself good enough to be ``lastGood``."""
    q = evidence(spec, health, now)
    served, last_good = status.servedVersion, status.lastGoodVersion
    if q is None or served is None or served == last_good or status.pinned:
        return None
    c = q.get("served")
    if c is None or c.version != served or c.revision != status.stableRevision:
        return None
    if served == 0 and q.get("baseline") is None:
        return None  # a cold model's v0 learned nothing: never a rollback target
    n = spec.rollout.analysis.minSamples
    if c.served_labelled < n:
        return None
    if last_good is None:
        k = q.get("constant")
        vs = k.vs_served if k is not None else None
        ok = vs is not None and vs.samples >= n and vs.worse(0.0)
    else:
        g = q.get("lastGood")
        vs = g.vs_served if g is not None and g.version == last_good else None
        ok = vs is not None and vs.samples >= n and not vs.better(0.0)
    return int(served) if ok else None


def quality_condition(
    spec: Spec, status: RolloutStatus, health: Health | None, now: float
) -> tuple[bool, str, str]:
    """The ModelQuality condition: (ok, reason, message)."""
    q = evidence(spec, health, now)
    served, last_good = status.servedVersion, status.lastGoodVersion
    if q is None or health is None:
        return True, "NoEvidence", "no fresh evidence from the monitor"
    good, base = q.get("lastGood"), q.get("baseline")
    if (
        good is not None
        and good.vs_served is not None
        and served != last_good
        and good.vs_served.better()
    ):
        return (
            False,
            "WorseThanLastGood",
            f"lastGood v{last_good} vs served v{served}: {_said(good.vs_served)}",
        )
    if base is not None and base.vs_served is not None and base.vs_served.better():
        return (
            False,
            "WorseThanBaseline",
            f"baseline v{base.version} vs served v{served}: {_said(base.vs_served)}",
        )
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
    return out


def quality_status(q: Quality | None) -> dict[str, Any] | None:
    """``status.quality``: each candidate on the common window, and against served."""
    if q is None:
        return None
    out: dict[str, Any] = {"samples": q.window, "source": q.source}
    for role in ("served", "lastGood", "baseline", "canary", "latest"):
        c = q.get(role)
        if c is None:
            continue
        row: dict[str, Any] = {"version": c.version}
        for k in ("accuracy", "rmse"):
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
    previous: list[Condition], kind: str, ok: bool, reason: str, message: str, now: float
) -> Condition:
    """A Kubernetes condition; its lastTransitionTime moves only when its status does."""
    status = "True" if ok else "False"
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
    if observed.served is not None:  # the pointers were read: lastGood may be absent
        st.servedVersion = observed.served
        if observed.last_good is not None:
            st.lastGoodVersion = observed.last_good
        else:
            st.lastGoodVersion = None
    if observed.latest is not None:
        st.latestVersion = observed.latest
    st.replicas = observed.ready_replicas

    # -- first deploy: the spec's revision is stable
    if not st.stableRevision:
        st.stableRevision = observed.revision
        actions.append(
            Action(
                "event",
                {
                    "type": "Normal",
                    "reason": "Deployed",
                    "message": f"revision {observed.revision}",
                },
            )
        )

    canary = st.canaryRevision
    # -- a new revision: a canary (a newer one replaces a canary in flight)
    if observed.revision not in (st.stableRevision, canary) and not _aborted_for(
        st, observed.revision
    ):
        if canary:
            actions.append(Action("remove-revision", {"revision": canary}))
        canary = st.canaryRevision = observed.revision
        st.currentStep, st.canaryWeight, st.pauseStartedAt = 0, 0, None
        st.analysisFailures, st.lastAnalysisAt, st.aborted = 0, None, None
        actions.append(
            Action("start-canary", {"revision": canary, "warmStartFrom": st.stableRevision})
        )
        actions.append(
            Action(
                "event",
                {"type": "Normal", "reason": "CanaryStarted", "message": f"revision {canary}"},
            )
        )
    elif observed.revision == st.stableRevision and canary:
        # the spec went back to the stable revision: the canary goes
        actions.append(Action("remove-revision", {"revision": canary}))
        actions.append(Action("set-weight", {"canary": None, "weight": 0, "shadow": False}))
        st.canaryRevision, st.canaryWeight, st.currentStep, st.aborted = None, 0, None, None
        canary = None

    if canary and not st.aborted:
        _advance(spec, st, ann, health, now, actions)

    _guardrails(spec, st, ann, health, now, actions)
    _phase(spec, st, observed, health, now)
    return Decision(st, actions)


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


def _aborted_for(st: RolloutStatus, revision: str) -> bool:
    return st.aborted is not None and st.aborted.revision == revision


def _abort(st: RolloutStatus, reason: str, now: float, actions: list[Action]) -> None:
    canary = st.canaryRevision
    assert canary is not None
    st.aborted = Aborted(canary, reason, now)
    st.canaryWeight = 0
    actions.append(Action("set-weight", {"canary": None, "weight": 0, "shadow": False}))
    actions.append(Action("remove-revision", {"revision": canary}))
    actions.append(
        Action("event", {"type": "Warning", "reason": "RolloutAborted", "message": reason})
    )


def _promote(st: RolloutStatus, now: float, actions: list[Action], why: str) -> None:
    old, new = st.stableRevision, st.canaryRevision
    st.stableRevision, st.canaryRevision, st.canaryWeight, st.currentStep = new, None, 0, None
    st.pauseStartedAt, st.analysisFailures, st.promotedAt = None, 0, now
    # the old revision's: the next turn reads the new one's pointers
    st.servedVersion = st.lastGoodVersion = st.latestVersion = None
    st.pinned = st.lastConceptAt = None
    actions.append(Action("promote", {"revision": new, "previous": old}))
    actions.append(Action("set-weight", {"canary": None, "weight": 0, "shadow": False}))
    actions.append(Action("remove-revision", {"revision": old}))
    actions.append(
        Action(
            "event", {"type": "Normal", "reason": "Promoted", "message": f"revision {new} ({why})"}
        )
    )


def _advance(
    spec: Spec, st: RolloutStatus, ann: dict[str, str], health: Health | None, now: float,
    actions: list[Action],
) -> None:  # fmt: skip
    r = spec.rollout
    if ann.get(ABORT) == "true":
        _abort(st, "aborted by annotation", now, actions)
        return
    if ann.get(PROMOTE) == "true":
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
        # an analysis step: pass to go on, inconclusive to wait
        if st.analysis is not None and st.analysis.outcome == "pass":
            st.currentStep = i + 1
            continue
        break
    actions.append(
        Action(
            "set-weight",
            {"canary": st.canaryRevision, "weight": st.canaryWeight, "shadow": r.shadow},
        )
    )


def _guardrails(
    spec: Spec, st: RolloutStatus, ann: dict[str, str], health: Health | None, now: float,
    actions: list[Action],
) -> None:  # fmt: skip
    rev = st.stableRevision
    assert rev is not None  # decide set it
    paused = ann.get(PAUSE_LEARNING) == "true"
    if paused != bool(st.learningPaused):
        st.learningPaused = paused
        actions.append(Action("pause-learning", {"revision": rev, "paused": paused}))
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
        actions.append(Action("unpin", {"revision": rev, "version": latest}))
        actions.append(
            Action(
                "event",
                {"type": "Normal", "reason": "Unpinned",
                 "message": f"serving v{latest}, learned after the rollback to v{st.servedVersion}, "
                            "not worse on the same samples"},
            )
        )  # fmt: skip
        st.servedVersion = latest
        st.pinned = False
        return
    good = proven(spec, st, health, now)
    if good is not None:
        first = st.lastGoodVersion is None
        st.lastGoodVersion = good
        actions.append(Action("prove", {"revision": rev, "version": good}))
        if first:
            actions.append(
                Action(
                    "event",
                    {"type": "Normal", "reason": "Proven",
                     "message": f"v{good} is the first version proven on labels: a rollback target"},
                )
            )  # fmt: skip


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
    rev = st.stableRevision
    policy = spec.guardrails.onConceptDrift
    where = (
        f"error rate rose ({c.method}) at v{c.last.version}"
        if c.last.version is not None
        else f"error rate rose ({c.method})"
    )
    if policy in ("adapt", "rollback"):
        actions.append(Action("adapt", {"revision": rev, "at": c.last.ts}))
        message = f"{where}: the learner adapts faster for a while"
        if policy == "rollback":
            message += " (and rolls back if a proven version is better on the same samples)"
    elif policy == "pause":
        message = f"{where}: learning paused"
        if not st.learningPaused:
            st.learningPaused = True
            actions.append(Action("pause-learning", {"revision": rev, "paused": True}))
    else:
        message = f"{where}: alert only"
    actions.append(
        Action("event", {"type": "Warning", "reason": "ConceptDrift", "message": message})
    )


def _recovered(spec: Spec, st: RolloutStatus, health: Health | None, now: float) -> bool:
    """After a rollback, serve the learner again once it is not worse on the same samples.

    The learner was reset to the version rolled back to; a version newer than
    the newest one at the rollback was learned since. It is served again
    once one analysis interval went by and it is not significantly worse than
    the pinned version on at least ``minSamples`` common samples.
    """
    rb = st.lastRollback
    latest = st.latestVersion
    if rb is None or latest is None or rb.latest is None or latest <= rb.latest:
        return False
    if now - rb.at < spec.rollout.analysis.interval:
        return False
    q = evidence(spec, health, now)
    c = q.get("latest") if q is not None else None
    if c is None or c.version != latest or c.vs_served is None:
        return False
    return c.vs_served.samples >= spec.rollout.analysis.minSamples and not c.vs_served.worse(0.0)


def _rollback(
    st: RolloutStatus, rev: str, to: int, reason: str, now: float, actions: list[Action]
) -> None:
    frm = st.servedVersion
    latest = st.latestVersion if st.latestVersion is not None else frm
    st.lastRollback = Rollback(now, rev, frm, to, reason, latest)
    st.servedVersion = to
    st.pinned = True
    actions.append(Action("rollback", {"revision": rev, "from": frm, "to": to, "reason": reason}))
    actions.append(
        Action(
            "event",
            {"type": "Warning", "reason": "RolledBack", "message": f"v{frm} -> v{to}: {reason}"},
        )
    )


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
    if aborted or worse:
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
    degraded_reason = "RolloutAborted" if aborted else quality_reason if worse else "AsExpected"
    degraded_message = aborted.reason if aborted else quality_message if worse else ""
    before = st.conditions or []
    log_ok, log_reason, log_message = log_capacity_condition(fresh)
    st.conditions = [
        _condition(before, "Ready", observed.replicas_ready and not aborted, "ReplicasReady" if observed.replicas_ready else "ReplicasNotReady", "", now),
        _condition(before, "Progressing", canary is not None, "CanaryInProgress" if canary else "Stable",
                   f"step {step} weight {st.canaryWeight or 0}" if canary else "", now),
        _condition(before, "Degraded", bool(aborted) or worse, degraded_reason, degraded_message, now),
        _condition(before, "Drifting", drifting, "DriftDetected" if drifting else "NoDrift", drift, now),
        _condition(before, "ModelQuality", quality_ok, quality_reason, quality_message, now),
        _condition(before, "LogCapacity", log_ok, log_reason, log_message, now),
    ]  # fmt: skip
    if spec.deprecated:  # read as ever, until the manifest is rewritten
        names = "; ".join(f"{old} is deprecated: write {new}" for old, new in spec.deprecated)
        st.conditions.append(_condition(before, "Deprecated", True, "DeprecatedField", names, now))
    st.drift = drift or "none"
    if fresh is not None:
        accuracy = fresh.track("stable").accuracy
        if accuracy is not None:
            st.onlineAccuracy = round(float(accuracy), 4)
        quality = quality_status(fresh.quality)
        if quality is not None:
            st.quality = quality
        log_needs = log_status(fresh)
        if log_needs is not None:
            st.log = log_needs
