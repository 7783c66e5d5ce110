"""The rollout and guardrail state machine: one pure function, argo-rollouts' way.

``decide(spec, status, observed, health, now) -> Decision(status, actions)``
reads nothing and writes nothing: the per-model loop in the handlers
observes (the resource, its annotations, Redis pointers and the monitor's
health summary), calls ``decide``, applies the actions idempotently and
writes the status once. Everything here is unit tested without an API.

What it decides:

* **Canary.** A new revision (the spec's hash changed) starts a canary; the
  ``rollout.steps`` advance (``setWeight``, ``pause``, ``analysis``) while
  the analysis holds: canary accuracy on delayed labels against the stable
  track's, error rate and p95 latency (``rollout.analysis``). Analysis with
  too few labels waits: no data is not a failure. ``failureLimit`` failures
  abort: weight 0, the canary removed, phase Degraded naming the metric,
  stable untouched. After the last step the canary is promoted.
* **Guardrails.** Within the stable revision: accuracy more than
  ``guardrails.maxAccuracyDrop`` below the lastGood version's, an error rate
  over ``maxErrorRate``, or concept drift (with ``onConceptDrift: rollback``)
  pin ``served`` to ``lastGood`` and reset the learner to it.
* **Manual control** by annotation: promote, abort, pause/resume learning,
  roll back to a version.
* **Phase**, derived in priority order, never set ad hoc: aborted ->
  Degraded; paused -> Paused; canary or replicas not ready -> Progressing;
  else Healthy.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any

from tideline.spec import Spec

ANNOTATION_PREFIX = "tideline.dev/"
PROMOTE = ANNOTATION_PREFIX + "promote"
ABORT = ANNOTATION_PREFIX + "abort"
PAUSE_LEARNING = ANNOTATION_PREFIX + "pause-learning"
ROLLBACK_TO = ANNOTATION_PREFIX + "rollback-to"


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
    kind: str  # start-canary | set-weight | promote | remove-revision | rollback | unpin | pause-learning | event
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Decision:
    status: dict[str, Any]
    actions: list[Action]


@dataclass(frozen=True)
class AnalysisResult:
    outcome: str  # pass | fail | inconclusive
    metric: str | None = None
    message: str = ""


# --------------------------------------------------------------------------- analysis
def analyze(spec: Spec, health: dict[str, Any] | None, now: float) -> AnalysisResult:
    """Canary against stable on the monitor's latest summary."""
    a = spec.rollout.analysis
    if not health or now - float(health.get("ts", 0)) > 3 * a.interval:
        return AnalysisResult("inconclusive", None, "no fresh health summary from the monitor")
    tracks = health.get("tracks") or {}
    canary, stable = tracks.get("canary") or {}, tracks.get("stable") or {}
    labelled = int(canary.get("labelled", 0))
    if labelled < a.minSamples:
        return AnalysisResult(
            "inconclusive", None, f"canary has {labelled} of {a.minSamples} labelled samples"
        )
    if spec.model.task == "binary":
        c_acc, s_acc = canary.get("accuracy"), stable.get("accuracy")
        if c_acc is not None and s_acc is not None and s_acc - c_acc > a.maxAccuracyDrop:
            return AnalysisResult(
                "fail",
                "accuracy",
                f"canary accuracy {c_acc:.3f} is {s_acc - c_acc:.3f} below stable's {s_acc:.3f}",
            )
    else:
        c_rmse, s_rmse = canary.get("rmse"), stable.get("rmse")
        if c_rmse is not None and s_rmse is not None and c_rmse > s_rmse * (1 + a.maxAccuracyDrop):
            return AnalysisResult(
                "fail", "rmse", f"canary RMSE {c_rmse:.4g} is above stable's {s_rmse:.4g}"
            )
    err = canary.get("errorRate")
    if err is not None and err > a.maxErrorRate:
        return AnalysisResult(
            "fail", "errorRate", f"canary error rate {err:.3f} is over {a.maxErrorRate}"
        )
    p95 = canary.get("p95Latency")
    if p95 is not None and p95 > a.maxP95Latency:
        return AnalysisResult(
            "fail",
            "p95Latency",
            f"canary p95 latency {p95 * 1000:.1f} ms is over {a.maxP95Latency * 1000:.1f} ms",
        )
    return AnalysisResult("pass", None, f"canary holds on {labelled} labelled samples")


def guardrail_breach(
    spec: Spec, status: dict[str, Any], health: dict[str, Any] | None, now: float
) -> str | None:
    """Why the stable revision's served version must go back to lastGood, if it must."""
    g = spec.guardrails
    if not health or now - float(health.get("ts", 0)) > 3 * spec.rollout.analysis.interval:
        return None
    stable = (health.get("tracks") or {}).get("stable") or {}
    served, last_good = status.get("servedVersion"), status.get("lastGoodVersion")
    rev = status.get("stableRevision")
    if served is not None and last_good is not None and served != last_good:
        versions = health.get("versions") or {}
        good = versions.get(f"{rev}:{last_good}") or {}
        # the served version's own record when the monitor has one; the stable track's
        # window (which may mix versions) otherwise
        if f"{rev}:{served}" in versions:
            mine = versions[f"{rev}:{served}"]
            acc, n = mine.get("accuracy"), int(mine.get("labelled", 0))
        else:
            acc, n = stable.get("accuracy"), int(stable.get("window", stable.get("labelled", 0)))
        good_acc = good.get("accuracy")
        if (
            acc is not None
            and good_acc is not None
            and n >= spec.rollout.analysis.minSamples
            and good_acc - acc > g.maxAccuracyDrop
        ):
            return f"accuracy {acc:.3f} is {good_acc - acc:.3f} below lastGood v{last_good}'s {good_acc:.3f}"
    err = stable.get("errorRate")
    if err is not None and err > g.maxErrorRate and served != last_good:
        return f"error rate {err:.3f} is over {g.maxErrorRate}"
    concept = (health.get("drift") or {}).get("concept") or {}
    if concept.get("detected") and g.onConceptDrift == "rollback" and served != last_good:
        return f"concept drift detected ({concept.get('method')})"
    return None


# --------------------------------------------------------------------------- decide
def _condition(
    previous: list[dict[str, Any]], kind: str, ok: bool, reason: str, message: str, now: float
) -> dict[str, Any]:
    """A Kubernetes condition; its lastTransitionTime moves only when its status does."""
    status = "True" if ok else "False"
    before = next((c for c in previous if c.get("type") == kind), None)
    since = (
        before["lastTransitionTime"]
        if before and before.get("status") == status and before.get("lastTransitionTime")
        else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    )
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }


def decide(
    spec: Spec,
    status: dict[str, Any] | None,
    observed: Observed,
    health: dict[str, Any] | None,
    now: float,
) -> Decision:
    st: dict[str, Any] = copy.deepcopy(status or {})
    actions: list[Action] = []
    ann = observed.annotations
    st["observedGeneration"] = observed.generation
    if observed.served is not None:
        st["servedVersion"] = observed.served
    if observed.last_good is not None:
        st["lastGoodVersion"] = observed.last_good
    if observed.latest is not None:
        st["latestVersion"] = observed.latest
    st["replicas"] = observed.ready_replicas

    # -- first deploy: the spec's revision is stable
    if not st.get("stableRevision"):
        st["stableRevision"] = observed.revision
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

    canary = st.get("canaryRevision")
    # -- a new revision: a canary (a newer one replaces a canary in flight)
    if observed.revision not in (st["stableRevision"], canary) and not _aborted_for(
        st, observed.revision
    ):
        if canary:
            actions.append(Action("remove-revision", {"revision": canary}))
        canary = st["canaryRevision"] = observed.revision
        st.update({"currentStep": 0, "canaryWeight": 0, "pauseStartedAt": None, "analysisFailures": 0,
                   "lastAnalysisAt": None, "aborted": None})  # fmt: skip
        actions.append(
            Action("start-canary", {"revision": canary, "warmStartFrom": st["stableRevision"]})
        )
        actions.append(
            Action(
                "event",
                {"type": "Normal", "reason": "CanaryStarted", "message": f"revision {canary}"},
            )
        )
    elif observed.revision == st["stableRevision"] and canary:
        # the spec went back to the stable revision: the canary goes
        actions.append(Action("remove-revision", {"revision": canary}))
        actions.append(Action("set-weight", {"canary": None, "weight": 0, "shadow": False}))
        st.update({"canaryRevision": None, "canaryWeight": 0, "currentStep": None, "aborted": None})
        canary = None

    if canary and not st.get("aborted"):
        _advance(spec, st, ann, health, now, actions)

    _guardrails(spec, st, ann, health, now, actions)
    _phase(spec, st, observed, health, now)
    return Decision(st, actions)


def invalid(
    status: dict[str, Any] | None, path: str, reason: str, generation: int, now: float
) -> dict[str, Any]:
    """The status of a spec that can never work: Degraded, naming the field; nothing else moves."""
    st: dict[str, Any] = copy.deepcopy(status or {})
    before = st.get("conditions") or []
    st["observedGeneration"] = generation
    st["phase"] = "Degraded"
    message = f"{path}: {reason}"
    kept = [c for c in before if c.get("type") not in ("Ready", "Degraded")]
    st["conditions"] = [
        _condition(before, "Ready", False, "InvalidSpec", message, now),
        *kept,
        _condition(before, "Degraded", True, "InvalidSpec", message, now),
    ]
    return st


def _aborted_for(st: dict[str, Any], revision: str) -> bool:
    ab = st.get("aborted") or {}
    return bool(ab.get("revision") == revision)


def _abort(st: dict[str, Any], reason: str, now: float, actions: list[Action]) -> None:
    canary = st["canaryRevision"]
    st["aborted"] = {"revision": canary, "reason": reason, "at": now}
    st["canaryWeight"] = 0
    actions.append(Action("set-weight", {"canary": None, "weight": 0, "shadow": False}))
    actions.append(Action("remove-revision", {"revision": canary}))
    actions.append(
        Action("event", {"type": "Warning", "reason": "RolloutAborted", "message": reason})
    )


def _promote(st: dict[str, Any], now: float, actions: list[Action], why: str) -> None:
    old, new = st["stableRevision"], st["canaryRevision"]
    st.update({"stableRevision": new, "canaryRevision": None, "canaryWeight": 0, "currentStep": None,
               "pauseStartedAt": None, "analysisFailures": 0, "promotedAt": now})  # fmt: skip
    actions.append(Action("promote", {"revision": new, "previous": old}))
    actions.append(Action("set-weight", {"canary": None, "weight": 0, "shadow": False}))
    actions.append(Action("remove-revision", {"revision": old}))
    actions.append(
        Action(
            "event", {"type": "Normal", "reason": "Promoted", "message": f"revision {new} ({why})"}
        )
    )


def _advance(
    spec: Spec, st: dict[str, Any], ann: dict[str, str], health: dict[str, Any] | None, now: float,
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
    last = st.get("lastAnalysisAt")
    if last is None or now - last >= r.analysis.interval:
        st["lastAnalysisAt"] = now
        res = analyze(spec, health, now)
        st["analysis"] = {
            "outcome": res.outcome,
            "metric": res.metric,
            "message": res.message,
            "at": now,
        }
        if res.outcome == "fail":
            st["analysisFailures"] = st.get("analysisFailures", 0) + 1
            if st["analysisFailures"] >= r.analysis.failureLimit:
                _abort(st, f"analysis failed on {res.metric}: {res.message}", now, actions)
                return
    while True:
        i = st.get("currentStep") or 0
        if i >= len(r.steps):
            _promote(st, now, actions, "all steps done")
            return
        step = r.steps[i]
        if step.setWeight is not None:
            if st.get("canaryWeight") != step.setWeight:
                st["canaryWeight"] = step.setWeight
            st["currentStep"] = i + 1
            continue
        if step.pause is not None:
            started = st.get("pauseStartedAt")
            if started is None:
                st["pauseStartedAt"] = started = now
            if math.isinf(step.pause) or now - started < step.pause:
                break
            st["pauseStartedAt"] = None
            st["currentStep"] = i + 1
            continue
        # an analysis step: pass to go on, inconclusive to wait
        outcome = (st.get("analysis") or {}).get("outcome")
        if outcome == "pass":
            st["currentStep"] = i + 1
            continue
        break
    actions.append(
        Action(
            "set-weight",
            {"canary": st["canaryRevision"], "weight": st["canaryWeight"], "shadow": r.shadow},
        )
    )


def _guardrails(
    spec: Spec, st: dict[str, Any], ann: dict[str, str], health: dict[str, Any] | None, now: float,
    actions: list[Action],
) -> None:  # fmt: skip
    rev = st["stableRevision"]
    paused = ann.get(PAUSE_LEARNING) == "true"
    if paused != bool(st.get("learningPaused")):
        st["learningPaused"] = paused
        actions.append(Action("pause-learning", {"revision": rev, "paused": paused}))
    target = ann.get(ROLLBACK_TO)
    if target is not None and target.isdigit() and st.get("manualRollbackTo") != int(target):
        st["manualRollbackTo"] = int(target)
        _rollback(st, rev, int(target), "rolled back by annotation", now, actions)
        return
    reason = guardrail_breach(spec, st, health, now)
    if reason is None and st.get("pinned") and _recovered(spec, st, health, now):
        latest = st["latestVersion"]
        actions.append(Action("unpin", {"revision": rev, "version": latest}))
        actions.append(
            Action(
                "event",
                {"type": "Normal", "reason": "Unpinned",
                 "message": f"serving v{latest}, learned after the rollback to v{st['servedVersion']}"},
            )
        )  # fmt: skip
        st["servedVersion"] = latest
        st["pinned"] = False
        return
    if reason is None:
        concept = ((health or {}).get("drift") or {}).get("concept") or {}
        if (
            concept.get("detected")
            and spec.guardrails.onConceptDrift == "pause"
            and not st.get("learningPaused")
        ):
            st["learningPaused"] = True
            actions.append(Action("pause-learning", {"revision": rev, "paused": True}))
            actions.append(
                Action(
                    "event",
                    {"type": "Warning", "reason": "ConceptDrift", "message": "learning paused"},
                )
            )
        return
    _rollback(st, rev, st["lastGoodVersion"], reason, now, actions)


def _recovered(spec: Spec, st: dict[str, Any], health: dict[str, Any] | None, now: float) -> bool:
    """After a rollback, serve the learner again once it published past the bad version.

    The learner was reset to the version rolled back to; a version newer than
    the newest one at the rollback was learned since, and passed the holdout
    gate against the served one. It is served once one analysis interval
    went by and no concept drift is flagged any more.
    """
    rb = st.get("lastRollback") or {}
    latest, newest_then = st.get("latestVersion"), rb.get("latest")
    if latest is None or newest_then is None or latest <= newest_then:
        return False
    if now - float(rb.get("at", now)) < spec.rollout.analysis.interval:
        return False
    concept = ((health or {}).get("drift") or {}).get("concept") or {}
    return not concept.get("detected")


def _rollback(
    st: dict[str, Any], rev: str, to: int, reason: str, now: float, actions: list[Action]
) -> None:
    frm = st.get("servedVersion")
    st["lastRollback"] = {"at": now, "revision": rev, "from": frm, "to": to, "reason": reason,
                          "latest": st.get("latestVersion", frm)}  # fmt: skip
    st["servedVersion"] = to
    st["pinned"] = True
    actions.append(Action("rollback", {"revision": rev, "from": frm, "to": to, "reason": reason}))
    actions.append(
        Action(
            "event",
            {"type": "Warning", "reason": "RolledBack", "message": f"v{frm} -> v{to}: {reason}"},
        )
    )


def _phase(
    spec: Spec, st: dict[str, Any], observed: Observed, health: dict[str, Any] | None, now: float
) -> None:
    aborted = st.get("aborted")
    canary = st.get("canaryRevision")
    step = st.get("currentStep")
    paused = (
        canary is not None
        and step is not None
        and step < len(spec.rollout.steps)
        and spec.rollout.steps[step].pause is not None
        and math.isinf(spec.rollout.steps[step].pause or 0)
    )
    if aborted:
        phase = "Degraded"
    elif paused:
        phase = "Paused"
    elif canary or not observed.replicas_ready:
        phase = "Progressing"
    else:
        phase = "Healthy"
    st["phase"] = phase
    drift = (health or {}).get("drift") or {}
    drifting = bool(
        (drift.get("concept") or {}).get("detected")
        or (drift.get("features") or {}).get("detected")
        or (drift.get("predictions") or {}).get("detected")
    )
    before = st.get("conditions") or []
    st["conditions"] = [
        _condition(before, "Ready", observed.replicas_ready and not aborted, "ReplicasReady" if observed.replicas_ready else "ReplicasNotReady", "", now),
        _condition(before, "Progressing", canary is not None, "CanaryInProgress" if canary else "Stable",
                   f"step {step} weight {st.get('canaryWeight', 0)}" if canary else "", now),
        _condition(before, "Degraded", bool(aborted), "RolloutAborted" if aborted else "AsExpected",
                   aborted["reason"] if aborted else "", now),
        _condition(before, "Drifting", drifting, "DriftDetected" if drifting else "NoDrift", _drift_summary(drift), now),
    ]  # fmt: skip
    st["drift"] = _drift_summary(drift) or "none"
    accuracy = (((health or {}).get("tracks") or {}).get("stable") or {}).get("accuracy")
    if accuracy is not None:
        st["onlineAccuracy"] = round(float(accuracy), 4)


def _drift_summary(drift: dict[str, Any]) -> str:
    """What drifts, in a few words: ``concept``, ``features: amount,hour``, ``predictions``."""
    parts = []
    if (drift.get("concept") or {}).get("detected"):
        parts.append("concept")
    features = (drift.get("features") or {}).get("detected")
    if features:
        parts.append("features: " + ",".join(features))
    if (drift.get("predictions") or {}).get("detected"):
        parts.append("predictions")
    return "; ".join(parts)
