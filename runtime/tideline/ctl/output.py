"""What ``kubectl tideline list|get|history|deadletters -o json|yaml`` print: the same
reads as :mod:`tideline.ctl.view`'s text, as data with stable keys, for scripts.

Pure, like the view. Keys are the status's own field names (the CRD's) where there is
one; a time is RFC 3339 in UTC; a field with no value is ``null``, never left out, so a
script reads every key of every row. Each document has ``kind`` (``OnlineModelList``,
``OnlineModelStatus``, ``OnlineModelHistory``, ``DeadLetterList``).

Examples
--------
>>> obj = {"metadata": {"name": "fraud", "namespace": "default",
...                     "creationTimestamp": "2026-01-01T00:00:00Z"},
...        "status": {"phase": "Healthy", "stableRevision": "3f2a", "servedVersion": 12}}
>>> print(dump(list_data([obj]), "yaml"), end="")
kind: OnlineModelList
items:
- namespace: default
  name: fraud
  phase: Healthy
  stableRevision: 3f2a
  canaryRevision: null
  canaryWeight: null
  shadow: false
  aborted: false
  servedVersion: 12
  pinned: false
  latestVersion: null
  lastGoodVersion: null
  createdAt: '2026-01-01T00:00:00Z'
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml

from tideline.contracts import DeadLetter
from tideline.ctl.view import (
    ANNOTATION_EFFECTS,
    event_time,
    metadata,
    moments,
    shadow,
    sorted_events,
    timestamp,
    utc,
)
from tideline_operator.rollout import RolloutStatus

FORMATS = ("json", "yaml")


def _when(seconds: float | None) -> str | None:
    return None if seconds is None else utc(seconds)


def _created(obj: Mapping[str, Any]) -> str | None:
    return _when(timestamp(metadata(obj).get("creationTimestamp")))


def list_row(obj: Mapping[str, Any]) -> dict[str, Any]:
    st, meta = RolloutStatus.from_status(obj.get("status")), metadata(obj)
    return {
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "phase": st.phase,
        "stableRevision": st.stableRevision,
        "canaryRevision": st.canaryRevision,
        "canaryWeight": st.canaryWeight if st.canaryRevision else None,
        "shadow": bool(st.canaryRevision and shadow(obj)),
        "aborted": bool(st.aborted is not None and st.aborted.revision == st.canaryRevision),
        "servedVersion": st.servedVersion,
        "pinned": bool(st.pinned),
        "latestVersion": st.latestVersion,
        "lastGoodVersion": st.lastGoodVersion,
        "createdAt": _created(obj),
    }


def list_data(objs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Every model, by namespace and name (``kubectl tideline list``)."""
    rows = sorted(
        (list_row(o) for o in objs), key=lambda r: (r["namespace"] or "", r["name"] or "")
    )
    return {"kind": "OnlineModelList", "items": rows}


def event_data(ev: Mapping[str, Any]) -> dict[str, Any]:
    count = ev.get("count") or (ev.get("series") or {}).get("count") or 1
    return {
        "at": _when(event_time(ev)),
        "type": ev.get("type"),
        "reason": ev.get("reason"),
        "message": ev.get("message") or ev.get("note"),
        "count": count,
    }


def get_data(obj: Mapping[str, Any], events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The model's status as the API holds it (the CRD's fields), the operator's
    annotations set on it, and its Events oldest first (``kubectl tideline get``)."""
    meta = metadata(obj)
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k in ANNOTATION_EFFECTS}  # fmt: skip
    return {
        "kind": "OnlineModelStatus",
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "generation": meta.get("generation"),
        "createdAt": _created(obj),
        "shadow": shadow(obj),
        "status": dict(obj.get("status") or {}),
        "annotations": annotations,
        "events": [event_data(e) for e in sorted_events(events)],
    }


def history_data(obj: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The model's moments oldest first and its versions now (``kubectl tideline history``)."""
    st = RolloutStatus.from_status(obj.get("status"))
    in_flight = st.canaryRevision is not None and st.aborted is None
    return {
        "kind": "OnlineModelHistory",
        "namespace": metadata(obj).get("namespace"),
        "name": metadata(obj).get("name"),
        "moments": [
            {"at": utc(m.at), "reason": m.reason, "message": m.message, "source": m.source}
            for m in moments(obj, events)
        ],
        "now": {
            "phase": st.phase,
            "stableRevision": st.stableRevision,
            "servedVersion": st.servedVersion,
            "pinned": bool(st.pinned),
            "latestVersion": st.latestVersion,
            "lastGoodVersion": st.lastGoodVersion,
            "canaryRevision": st.canaryRevision if in_flight else None,
            "canaryWeight": (st.canaryWeight or 0) if in_flight else None,
        },
    }


def deadletters_data(letters: Sequence[DeadLetter]) -> dict[str, Any]:
    """The dead letters oldest first, whole (``kubectl tideline deadletters``)."""
    return {
        "kind": "DeadLetterList",
        "items": [
            {"at": _when(d.at or None), "reason": d.reason, "kind": d.kind, "stream": d.stream,
             "entry": d.entry, "fields": dict(d.fields)}
            for d in letters
        ],
    }  # fmt: skip


def dump(data: Mapping[str, Any], fmt: str) -> str:
    """``data`` as JSON (indented, keys in the order above) or YAML, ending in a newline."""
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if fmt == "yaml":
        return str(yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True))
    raise ValueError(f"--output: json or yaml (got {fmt!r})")
