"""What ``kubectl tideline promote|abort|rollback|pause|resume`` asks of the operator: the
annotations to set or remove, as the operator reads them (:mod:`tideline_operator.rollout`,
``_advance`` and ``_guardrails``; docs/operator.md, "Annotations"), or why the request would
do nothing.

Pure: the object as the API returns it in, a :class:`Request` (a merge patch of
annotations, and what to say) or :class:`Refused` out.

* ``promote``: ``promote=<the canary's revision>``, and ``abort`` removed (the operator
  reads abort first). The operator reads a change of the annotation once, and a revision
  for that canary alone: one left on the object asks nothing of the next canary.
* ``abort``: ``abort=<the canary's revision>``, and ``promote`` removed.
* ``rollback [--to N]``: ``rollback-to=N``, N the status's lastGood by default. The operator
  acts once per number (``status.manualRollbackTo``), so the number it acted on last is
  refused.
* ``pause``: ``pause-learning=true`` (only ``"true"`` pauses).
* ``resume``: ``pause-learning=false``, as Argo CD's ``resume-learning`` action writes
  it (the operator reads anything but ``"true"`` as learning, and a change as a person's
  word, which alone resumes a pause for concept drift): ``resumed`` where it says
  ``false`` already.

Promote and abort want a canary in flight (with none, there is nothing to ask).

Examples
--------
>>> obj = {"metadata": {"name": "fraud", "namespace": "default"},
...        "status": {"stableRevision": "a1", "canaryRevision": "b2", "lastGoodVersion": 7}}
>>> request("promote", obj).patch
{'metadata': {'annotations': {'tideline.dev/promote': 'b2', 'tideline.dev/abort': None}}}
>>> request("rollback", obj).annotations
{'tideline.dev/rollback-to': '7'}
>>> request("resume", obj).annotations
{'tideline.dev/pause-learning': 'false'}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tideline_operator.rollout import ABORT, PAUSE_LEARNING, PROMOTE, ROLLBACK_TO, RolloutStatus

VERBS = ("promote", "abort", "rollback", "pause", "resume")


class Refused(Exception):
    """The request would do nothing, or harm: the message says why."""


@dataclass(frozen=True)
class Request:
    annotations: dict[str, str | None]  # None: remove it
    said: str  # what was asked, for the terminal

    @property
    def patch(self) -> dict[str, Any]:
        """A JSON merge patch (a null removes the annotation; one already gone is no error)."""
        return {"metadata": {"annotations": dict(self.annotations)}}


def _in_flight(st: RolloutStatus) -> bool:
    return st.canaryRevision is not None and st.aborted is None


def request(verb: str, obj: Mapping[str, Any], to: int | None = None) -> Request:
    """The annotations ``verb`` sets on ``obj``, or :class:`Refused`."""
    st = RolloutStatus.from_status(obj.get("status"))
    meta = obj.get("metadata") or {}
    name = meta.get("name", "?")
    match verb:
        case "promote" | "abort":
            if not _in_flight(st):
                raise Refused(f"{name} has no canary in flight to {verb}")
            mine, other = (PROMOTE, ABORT) if verb == "promote" else (ABORT, PROMOTE)
            what = "promoted" if verb == "promote" else "aborted"
            # (a change is a request: the canary's revision, or "true" where the operator
            # read that revision last - the same canary back after another)
            seen = (st.requestsSeen or {}).get(mine)
            value = st.canaryRevision if seen != st.canaryRevision else "true"
            return Request(
                {mine: value, other: None},
                f"canary {st.canaryRevision} of {name} is {what} at the operator's next turn "
                f"({mine}={value})",
            )
        case "rollback":
            target = to if to is not None else st.lastGoodVersion
            if target is None:
                raise Refused(f"{name} has no lastGood version (none was proven on labels "
                              "yet): name one with --to")  # fmt: skip
            if target < 0:
                raise Refused(f"--to: a version is a number >= 0 (got {target})")
            if st.latestVersion is not None and target > st.latestVersion:
                raise Refused(f"v{target} is newer than {name}'s latest version "
                              f"v{st.latestVersion}")  # fmt: skip
            if st.manualRollbackTo == target:
                raise Refused(f"{name} was rolled back to v{target} by annotation already; the "
                              "operator acts once per number (status.manualRollbackTo)")  # fmt: skip
            return Request(
                {ROLLBACK_TO: str(target)},
                f"{name} serves v{target} of revision {st.stableRevision or '?'} from the "
                f"operator's next turn ({ROLLBACK_TO}={target})",
            )
        case "pause":
            return Request({PAUSE_LEARNING: "true"},
                           f"learning of {name} pauses at the operator's next turn "
                           f"({PAUSE_LEARNING}=true); the servers go on serving")  # fmt: skip
        case "resume":
            # (a change is a person's word: where it says false already, "resumed")
            now = (meta.get("annotations") or {}).get(PAUSE_LEARNING)
            value = "resumed" if now == "false" else "false"
            return Request({PAUSE_LEARNING: value},
                           f"learning of {name} resumes at the operator's next turn "
                           f"({PAUSE_LEARNING}={value})")  # fmt: skip
    raise ValueError(f"unknown request {verb!r}")
