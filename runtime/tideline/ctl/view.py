"""An OnlineModel (and its Events) as text: what ``kubectl tideline list``, ``get``,
``history`` and ``deadletters`` print.

Pure: each function takes the object as the API returns it (a dict), its Events as dicts
(``involvedObject`` the model) and the time, and returns text; nothing here calls the API
or reads the clock. The status is read through the operator's own type
(:class:`tideline_operator.rollout.RolloutStatus`), so a field renamed there is renamed
here.

Examples
--------
>>> obj = {"metadata": {"name": "fraud", "namespace": "default",
...                     "creationTimestamp": "2026-01-01T00:00:00Z"},
...        "status": {"phase": "Healthy", "stableRevision": "3f2a1b9c0d",
...                   "servedVersion": 12, "latestVersion": 12, "lastGoodVersion": 11}}
>>> print(render_list([obj], now=timestamp("2026-01-01T00:05:00Z")))
NAMESPACE  NAME   PHASE    STABLE      CANARY  WEIGHT  SERVED  LATEST  LASTGOOD  AGE
default    fraud  Healthy  3f2a1b9c0d  -       -       v12     v12     v11       5m
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tideline.contracts import DeadLetter
from tideline.spec import SpecError, Step, parse
from tideline_operator.rollout import (
    ABORT,
    ANNOTATION_PREFIX,
    PAUSE_LEARNING,
    PROMOTE,
    ROLLBACK_TO,
    RolloutStatus,
)

EVENTS_IN_GET = 10  # the newest ones; ``history`` shows them all
QUALITY_ROLES = ("served", "lastGood", "recent", "baseline", "canary", "latest")
# The operator's annotations and what each, left on the object, does (docs/operator.md, "Annotations")
ANNOTATION_EFFECTS = {
    PROMOTE: "promotes the canary it names ('true': the one in flight) when set or changed",
    ABORT: "aborts the canary it names ('true': the one in flight) when set or changed",
    PAUSE_LEARNING: "pauses the stable learner when 'true' ('false': learning)",
    ROLLBACK_TO: "serves that version (once per number)",
}


# --------------------------------------------------------------------------- small pieces
def timestamp(value: str | None) -> float | None:
    """Unix seconds of an RFC 3339 time as the API writes it (None for none).

    >>> timestamp("1970-01-01T00:01:00Z"), timestamp("1970-01-01T00:01:00.500000Z")
    (60.0, 60.5)
    """
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def age(seconds: float | None) -> str:
    """A duration as kubectl shows an age.

    >>> [age(s) for s in (5, 125, 601, 3 * 3600 + 60, 30 * 3600, 9 * 86400, None)]
    ['5s', '2m5s', '10m', '3h1m', '30h', '9d', '-']
    """
    if seconds is None or math.isnan(seconds):
        return "-"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    m, h = s // 60, s // 3600
    if s < 600:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if s < 3600:
        return f"{m}m"
    if h < 10:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    return f"{s // 86400}d"


def _v(version: int | None) -> str:
    return "-" if version is None else f"v{version}"


def _or_dash(value: object) -> str:
    return "-" if value is None or value == "" else str(value)


def _interval(c: Mapping[str, Any]) -> str:
    """``difference [lower, upper]`` of a comparison the status holds."""
    try:
        return f"{float(c['difference']):+.3f} [{float(c['lower']):+.3f}, {float(c['upper']):+.3f}]"
    except (KeyError, TypeError, ValueError):
        return "not compared yet"


def _bytes(n: float | None) -> str:
    """
    >>> _bytes(512), _bytes(3 * 1024**2), _bytes(None)
    ('512 B', '3.0 MiB', '-')
    """
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def table(header: Sequence[str], rows: Iterable[Sequence[str]], indent: str = "") -> str:
    """Columns as kubectl prints them: left-aligned, two spaces apart; the last one free."""
    body = [list(header), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in body) for i in range(len(header) - 1)]
    lines = []
    for r in body:
        cells = [c.ljust(w) for c, w in zip(r, widths, strict=False)] + [r[-1]]
        lines.append(indent + "  ".join(cells).rstrip())
    return "\n".join(lines)


def _status(obj: Mapping[str, Any]) -> RolloutStatus:
    return RolloutStatus.from_status(obj.get("status"))


def metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """A Kubernetes object's metadata ({} when it has none)."""
    return obj.get("metadata") or {}


def event_time(ev: Mapping[str, Any]) -> float | None:
    """When an Event last happened (its series' last, the last of a count, or its first)."""
    series = ev.get("series") or {}
    for value in (series.get("lastObservedTime"), ev.get("lastTimestamp"), ev.get("eventTime"),
                  ev.get("firstTimestamp"), metadata(ev).get("creationTimestamp")):  # fmt: skip
        t = timestamp(value)
        if t is not None:
            return t
    return None


def sorted_events(events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Oldest first (an Event without a time first of all)."""
    return sorted(events, key=lambda e: event_time(e) or 0.0)


def _steps(obj: Mapping[str, Any]) -> tuple[Step, ...] | None:
    """The rollout's steps as the operator reads them (its defaults where the spec has none);
    None for a spec it refuses (the status's InvalidSpec says why)."""
    try:
        return parse(obj).spec.rollout.steps
    except (SpecError, TypeError, ValueError, AttributeError):
        return None


def shadow(obj: Mapping[str, Any]) -> bool:
    """Whether the spec mirrors traffic to the canary instead of splitting it
    (``spec.rollout.shadow``: the servers answer every request with the stable revision,
    and log the canary's answer beside it)."""
    try:
        return bool(parse(obj).spec.rollout.shadow)
    except (SpecError, TypeError, ValueError, AttributeError):
        return False


def describe_step(step: Step) -> str:
    """
    >>> describe_step(Step(setWeight=20)), describe_step(Step(pause=90.0))
    ('setWeight 20%', 'pause 90s')
    >>> describe_step(Step(pause=math.inf)), describe_step(Step(backtest=600.0))
    ('pause until promoted', 'backtest on 10m of history')
    """
    if step.setWeight is not None:
        return f"setWeight {step.setWeight}%"
    if step.pause is not None:
        return "pause until promoted" if math.isinf(step.pause) else f"pause {age(step.pause)}"
    if step.backtest is not None:
        return f"backtest on {age(step.backtest)} of history" if step.backtest else "backtest"
    return "analysis"


# --------------------------------------------------------------------------- list
LIST_HEADER = ("NAMESPACE", "NAME", "PHASE", "STABLE", "CANARY", "WEIGHT", "SERVED", "LATEST",
               "LASTGOOD", "AGE")  # fmt: skip


def list_row(obj: Mapping[str, Any], now: float) -> tuple[str, ...]:
    st, meta = _status(obj), metadata(obj)
    canary = st.canaryRevision
    if canary and st.aborted is not None and st.aborted.revision == canary:
        canary += " (aborted)"
    weight = "-"
    if st.canaryRevision and shadow(obj):
        weight = "shadow"
    elif st.canaryRevision and st.canaryWeight is not None:
        weight = f"{st.canaryWeight}%"
    created = timestamp(meta.get("creationTimestamp"))
    return (
        _or_dash(meta.get("namespace")),
        _or_dash(meta.get("name")),
        _or_dash(st.phase),
        _or_dash(st.stableRevision),
        _or_dash(canary),
        weight,
        _v(st.servedVersion) + (" (pinned)" if st.pinned else ""),
        _v(st.latestVersion),
        _v(st.lastGoodVersion),
        age(now - created if created is not None else None),
    )


def render_list(objs: Iterable[Mapping[str, Any]], now: float) -> str:
    """One line per model, by namespace and name."""
    rows = sorted((list_row(o, now) for o in objs), key=lambda r: (r[0], r[1]))
    if not rows:
        return "No OnlineModels found."
    return table(LIST_HEADER, rows)


# --------------------------------------------------------------------------- get
@dataclass
class _Lines:
    """Label: value lines, aligned, in sections."""

    out: list[str]

    def field(self, label: str, value: object, indent: int = 0) -> None:
        pad = 23 - indent  # (values in one column, a space after the longest label)
        self.out.append(" " * indent + f"{label + ':':<{pad}} {value}")

    def head(self, title: str) -> None:
        self.out.append(f"{title}:")


def _revisions(lines: _Lines, st: RolloutStatus, obj: Mapping[str, Any], now: float) -> None:
    lines.head("Revisions")
    in_flight = st.canaryRevision is not None and st.aborted is None
    mirrored = in_flight and shadow(obj)
    weight = (st.canaryWeight or 0) if in_flight and not mirrored else 0
    stable = _or_dash(st.stableRevision)
    if st.stableRevision:
        stable += "  (answers every request)" if mirrored else f"  (weight {100 - weight}%)"
        if st.stableWarmStart:
            stable += f", warm-started from {st.stableWarmStart}"
    lines.field("Stable", stable, 2)
    if st.canaryRevision:
        canary = f"{st.canaryRevision}  (weight {weight}%)"
        if mirrored:
            canary = (f"{st.canaryRevision}  (shadow: every request mirrored to it, its "
                      "answers logged, never served)")  # fmt: skip
        if st.canaryWarmStart:
            canary += f", warm-started from {st.canaryWarmStart}"
        lines.field("Canary", canary, 2)
    if mirrored:
        lines.field("Shadow vs served", _shadow_comparison(st), 2)
    if st.aborted is not None:
        a = st.aborted
        cause = f" ({a.cause})" if a.cause else ""
        lines.field("Aborted", f"{a.revision}, {age(now - a.at)} ago{cause}: {a.reason}", 2)
    if in_flight:
        steps = _steps(obj)
        i = st.currentStep or 0
        if steps is None:
            lines.field("Step", f"{i} done (the spec's steps cannot be read)", 2)
        elif i >= len(steps):
            lines.field("Step", f"{len(steps)} of {len(steps)}: all done, promoting", 2)
        else:
            what = describe_step(steps[i])
            if mirrored and steps[i].setWeight is not None:
                what += " (not served: shadow)"
            if steps[i].pause is not None and st.pauseStartedAt is not None:
                what += f" (paused {age(now - st.pauseStartedAt)} ago)"
            lines.field("Step", f"{i + 1} of {len(steps)}: {what}", 2)
    if st.analysis is not None and st.canaryRevision:
        a2 = st.analysis
        metric = f" on {a2.metric}" if a2.metric else ""
        failures = f"; {st.analysisFailures} failed" if st.analysisFailures else ""
        lines.field(
            "Analysis", f"{a2.outcome}{metric}, {age(now - a2.at)} ago: {a2.message}{failures}", 2
        )
    if st.promotedAt is not None:
        lines.field("Promoted", f"{age(now - st.promotedAt)} ago", 2)


def _shadow_comparison(st: RolloutStatus) -> str:
    """The shadow's answers against the served version's, on the same labelled samples
    (the monitor's ``quality.canary``, the evidence the analysis reads)."""
    row = (st.quality or {}).get("canary")
    if not isinstance(row, Mapping):
        return "not compared yet (no labels of its answers)"
    said = _score(row)
    vs = row.get("vsServed")
    if isinstance(vs, Mapping):
        said += f", {_interval(vs)} on {vs.get('samples', 0):,} paired samples"
    return said


def _score(row: Mapping[str, Any]) -> str:
    if row.get("accuracy") is not None:
        return f"accuracy {float(row['accuracy']):.4f}"
    if row.get("rmse") is not None:
        return f"rmse {float(row['rmse']):.4f}"
    return "-"


def _versions(lines: _Lines, st: RolloutStatus, now: float) -> None:
    lines.head("Versions")
    lines.field("Latest", _v(st.latestVersion), 2)
    served = _v(st.servedVersion)
    rb = st.lastRollback
    if st.pinned:
        served += " (pinned"
        if rb is not None and rb.to == st.servedVersion:
            src = f" from {_v(rb.from_)}" if rb.from_ is not None else ""
            served += f": rolled back{src} {age(now - rb.at)} ago: {rb.reason}"
        served += ")"
    lines.field("Served", served, 2)
    lines.field("LastGood", _v(st.lastGoodVersion), 2)
    if rb is not None and not st.pinned:
        src = f" from {_v(rb.from_)}" if rb.from_ is not None else ""
        lines.field("Last rollback", f"to {_v(rb.to)}{src}, {age(now - rb.at)} ago: {rb.reason}", 2)
    if st.manualRollbackTo is not None:
        lines.field("Rolled back by hand", f"{_v(st.manualRollbackTo)} (annotation)", 2)
    why = {
        "conceptDrift": " (for concept drift: resume sets the annotation to false)",
        "annotation": " (by the pause-learning annotation)",
    }.get(st.learningPausedBy or "", "")
    lines.field("Learning", f"paused{why}" if st.learningPaused else "on", 2)
    if st.learnerLag is not None:
        lines.field("Learner lag", f"{st.learnerLag:,} samples and labels not learned yet", 2)


def _comparisons(lines: _Lines, st: RolloutStatus) -> None:
    shown = [st.backtest, st.liftOverBaseline, st.quality, st.onlineAccuracy, st.drift]
    if all(x is None for x in shown):
        return
    lines.head("Quality (difference [lower, upper] of paired samples)")
    if st.onlineAccuracy is not None:
        lines.field("Online accuracy", f"{st.onlineAccuracy:.4f}", 2)
    if st.drift is not None:
        lines.field("Drift", st.drift, 2)
    if st.liftOverBaseline:
        lift = st.liftOverBaseline
        base = lift.get("baselineVersion")
        lines.field(
            "Lift over baseline",
            f"{_interval(lift)} on {lift.get('samples', 0):,} samples"
            + (
                f" (served against the warm-start snapshot v{base}, frozen)"
                if base is not None
                else ""
            ),  # fmt: skip
            2,
        )
    if st.backtest:
        b = st.backtest
        window = b.get("windowSeconds")
        if b.get("done"):
            said = f"{_interval(b)} on {b.get('samples', 0):,} samples"
        else:
            said = f"catching up: {b.get('entries', 0):,} of {b.get('of', 0):,} entries"
        said += f" ({b.get('rows', 0):,} rows at {b.get('rowsPerSecond', 0):,} rows/s"
        said += f", window {age(window)})" if window is not None else ")"
        lines.field("Backtest", said, 2)
    q = st.quality
    if q:
        lines.field(
            "Common window",
            f"{q.get('samples', 0):,} samples" + (f" ({q['source']})" if q.get("source") else ""),
            2,
        )
        rows = []
        for role in QUALITY_ROLES:
            row = q.get(role)
            if not isinstance(row, Mapping):
                continue
            score = _score(row)
            vs = row.get("vsServed")
            against = (f"{_interval(vs)} on {vs.get('samples', 0):,}"
                       if isinstance(vs, Mapping) else "")  # fmt: skip
            rows.append((role, _v(row.get("version")), score, against))
        if rows:
            lines.out.append(table(("ROLE", "VERSION", "SCORE", "VS SERVED"), rows, indent="    "))


def _log(lines: _Lines, st: RolloutStatus) -> None:
    log = st.log
    capacity = next((c for c in st.conditions if c.type == "LogCapacity"), None)
    if not log and capacity is None:
        return
    lines.head("Log capacity")
    if capacity is not None:
        lines.field(capacity.reason or capacity.status, capacity.message, 2)
    if log:
        rate, window = log.get("predictionsPerSecond"), log.get("windowSeconds")
        if rate is not None and window is not None:
            lines.field("Predictions", f"{float(rate):,.0f}/s over {age(float(window))}", 2)
        lines.field(
            "Needs", f"{_bytes(log.get('needBytes'))}, holds {_bytes(log.get('heldBytes'))}", 2
        )
        used, limit = log.get("redisUsedBytes"), log.get("redisLimitBytes")
        if used is not None or limit is not None:
            lines.field("Redis", f"{_bytes(used)} used of {_bytes(limit)}", 2)


def _conditions(lines: _Lines, st: RolloutStatus, now: float) -> None:
    if not st.conditions:
        return
    lines.head("Conditions")
    rows = []
    for c in st.conditions:
        since = timestamp(c.lastTransitionTime)
        rows.append((c.type, c.status, c.reason or "-",
                     age(now - since if since is not None else None), c.message))  # fmt: skip
    lines.out.append(table(("TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"), rows, indent="  "))


def _events(lines: _Lines, events: Sequence[Mapping[str, Any]], now: float, last: int) -> None:
    lines.head("Events")
    if not events:
        lines.out.append("  <none>")
        return
    shown = sorted_events(events)
    if last and len(shown) > last:
        lines.out.append(f"  ({len(shown) - last} older: kubectl tideline history)")
        shown = shown[-last:]
    lines.out.append(table(("AGE", "TYPE", "REASON", "MESSAGE"), (_event_row(e, now) for e in shown),
                           indent="  "))  # fmt: skip


def _event_row(ev: Mapping[str, Any], now: float) -> tuple[str, str, str, str]:
    t = event_time(ev)
    count = ev.get("count") or (ev.get("series") or {}).get("count") or 1
    message = str(ev.get("message") or ev.get("note") or "")
    if count > 1:
        message += f" (x{count})"
    return (age(now - t if t is not None else None), _or_dash(ev.get("type")),
            _or_dash(ev.get("reason")), message)  # fmt: skip


def render_get(
    obj: Mapping[str, Any], events: Sequence[Mapping[str, Any]], now: float,
    last_events: int = EVENTS_IN_GET,
) -> str:  # fmt: skip
    """The model's status as a tree: phase and conditions, revisions and the canary's step,
    versions (pinned and why), the comparisons with their intervals, learner lag, log
    capacity, the operator's annotations set, and the newest Events."""
    st, meta = _status(obj), metadata(obj)
    lines = _Lines([])
    lines.field("Name", _or_dash(meta.get("name")))
    lines.field("Namespace", _or_dash(meta.get("namespace")))
    created = timestamp(meta.get("creationTimestamp"))
    lines.field("Age", age(now - created if created is not None else None))
    phase = st.phase or "(no status yet: is the operator running?)"
    if st.observedGeneration is not None and st.observedGeneration != meta.get("generation"):
        phase += (
            f" (of generation {st.observedGeneration}; the spec is at {meta.get('generation')})"
        )
    lines.field("Phase", phase)
    why = next((c for c in st.conditions if c.type == "Degraded" and c.status == "True"), None)
    if why is None:
        why = next((c for c in st.conditions if c.type == "Ready" and c.status != "True"), None)
    if why is not None and why.message:
        lines.field("Message", f"{why.reason}: {why.message}" if why.reason else why.message, 2)
    _revisions(lines, st, obj, now)
    _versions(lines, st, now)
    _comparisons(lines, st)
    _log(lines, st)
    if st.loadFaults:
        lines.head("Load faults")
        for f in st.loadFaults:
            lines.out.append(f"  {f.component} of revision {f.revision}: {f.reason}: {f.message}")
    if st.storeReset is not None:
        r = st.storeReset
        state = (f"recovered {age(now - r.recoveredAt)} ago" if r.recoveredAt is not None
                 else "not recovered")  # fmt: skip
        lines.field("Store reset", f"{age(now - r.at)} ago, {state}: {r.message}")
    _conditions(lines, st, now)
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k.startswith(ANNOTATION_PREFIX) and k in ANNOTATION_EFFECTS}  # fmt: skip
    if annotations:
        lines.head("Annotations")
        for k, v in sorted(annotations.items()):
            lines.out.append(f"  {k}={v}: {ANNOTATION_EFFECTS[k]}")
    _events(lines, events, now, last_events)
    return "\n".join(lines.out)


# --------------------------------------------------------------------------- history
@dataclass(frozen=True)
class Moment:
    """One thing that happened: from an Event, or from a time the status keeps (named as
    the Event the operator wrote then, so the two make one line while the Event is kept)."""

    at: float
    reason: str
    message: str
    source: str  # "event" | "status"


def moments(obj: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> list[Moment]:
    """What happened to the model, oldest first: its Events, and the moments its status
    keeps (created, last promotion, rollback, abort, concept drift, store reset) that no
    Event kept says (Events expire: an hour by default)."""
    out = []
    for ev in events:
        t = event_time(ev)
        if t is None:
            continue
        reason, message = _event_row(ev, t)[2:]
        out.append(Moment(t, reason, message, "event"))
    st, meta = _status(obj), metadata(obj)
    kept: list[Moment] = []
    created = timestamp(meta.get("creationTimestamp"))
    if created is not None:
        kept.append(Moment(created, "Created", "the OnlineModel was created", "status"))
    if st.promotedAt is not None:
        kept.append(Moment(st.promotedAt, "Promoted", f"revision {st.stableRevision}", "status"))
    if st.aborted is not None:
        a = st.aborted
        kept.append(Moment(a.at, a.cause or "RolloutAborted", f"{a.revision}: {a.reason}",
                           "status"))  # fmt: skip
    if st.lastRollback is not None:
        rb = st.lastRollback
        src = f" from {_v(rb.from_)}" if rb.from_ is not None else ""
        kept.append(Moment(rb.at, "RolledBack", f"revision {rb.revision}: to {_v(rb.to)}{src}: "
                           f"{rb.reason}", "status"))  # fmt: skip
    if st.lastConceptAt is not None:
        kept.append(Moment(st.lastConceptAt, "ConceptDrift", "the error rate rose", "status"))
    if st.storeReset is not None:
        r = st.storeReset
        kept.append(Moment(r.at, "StoreReset", r.message or r.cause, "status"))
        if r.recoveredAt is not None:
            kept.append(Moment(r.recoveredAt, "StoreRecovered", "versions served again",
                               "status"))  # fmt: skip
    for m in kept:  # (the Event of the same moment says more)
        if not any(e.reason == m.reason and abs(e.at - m.at) < 5.0 for e in out):
            out.append(m)
    # (Events have whole seconds: a status moment of the same second, like Created, first)
    return sorted(out, key=lambda m: (math.floor(m.at), m.source == "event", m.at))


def render_history(obj: Mapping[str, Any], events: Iterable[Mapping[str, Any]],
                   now: float) -> str:  # fmt: skip
    """The model's moments oldest first (:func:`moments`), and the versions now."""
    rows = [(age(now - m.at) + " ago", m.reason, m.message + (" (status)" if m.source == "status"
                                                             else ""))
            for m in moments(obj, events)]  # fmt: skip
    st = _status(obj)
    now_line = (f"Now: {_or_dash(st.phase)}; stable {_or_dash(st.stableRevision)} serves "
                f"{_v(st.servedVersion)}{' (pinned)' if st.pinned else ''}, latest "
                f"{_v(st.latestVersion)}, lastGood {_v(st.lastGoodVersion)}")  # fmt: skip
    if st.canaryRevision and st.aborted is None:
        now_line += f"; canary {st.canaryRevision} at {st.canaryWeight or 0}%"
    body = table(("WHEN", "WHAT", "DETAIL"), rows) if rows else "No history kept."
    return f"{body}\n{now_line}"


# --------------------------------------------------------------------------- dead letters
ABBREVIATE = 60  # characters of a dead letter's reason and of its fields shown in a row


def abbreviate(text: str, width: int = ABBREVIATE) -> str:
    """
    >>> abbreviate("short"), abbreviate("x" * 70, 10)
    ('short', 'xxxxxxxxx…')
    """
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def utc(seconds: float) -> str:
    """A time to the millisecond, in UTC (one rounded up carries into the second).

    >>> utc(0.0), utc(1.5), utc(20.9997)
    ('1970-01-01T00:00:00Z', '1970-01-01T00:00:01.500Z', '1970-01-01T00:00:21Z')
    """
    whole, ms = divmod(int(round(seconds * 1000)), 1000)
    t = datetime.fromtimestamp(whole, tz=UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{ms:03d}Z" if ms else "Z")


def _source(stream: str, prefix: str) -> str:
    """A stream of the model's by its last part (``feedback``), anything else as it is."""
    return stream[len(prefix) + 1 :] if prefix and stream.startswith(prefix + ":") else stream


def render_deadletters(letters: Sequence[DeadLetter], prefix: str, now: float) -> str:
    """One line per dead letter, oldest first: when, why, from which stream and entry, and
    its fields (``name=value``), the reason and the fields abbreviated."""
    if not letters:
        return "No dead letters."
    rows = [
        (utc(d.at) if d.at else "-", age(now - d.at) if d.at else "-", abbreviate(d.reason),
         _source(d.stream, prefix), d.entry,
         abbreviate(" ".join(f"{k}={v}" for k, v in d.fields.items())))
        for d in letters
    ]  # fmt: skip
    return table(("TIME", "AGE", "REASON", "FROM", "ENTRY", "FIELDS"), rows)
