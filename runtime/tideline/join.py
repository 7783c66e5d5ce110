"""Delayed-feedback join: labels meet the predictions they are about.

Servers log every prediction (id, features, time) to a capped stream; label
producers later send ``{"id": ..., "label": ...}``. A label may arrive before
its prediction has been read (out of order), or long after (fraud labels come
in hours). The :class:`Joiner` holds logged predictions for ``label_window``
seconds and labels whose prediction it has not seen yet for as long; a label
whose prediction is older than the window is *late*, one whose prediction
never shows up within the window is *unmatched*. Both are reported, never
silently dropped. Memory is bounded by the window and by ``max_predictions``;
labels waiting for their prediction by ``max_waiting`` (count) and
``max_waiting_bytes``: past either, a new label is *unmatched* at once (a
flood of labels for ids that never existed must not grow the process).

A prediction takes one label: the first wins, a later one for the same id
within the window is a *duplicate* (10,000 copies of one wrong label must
not be learned 10,000 times). The prediction's features are dropped once
joined; its id and time stay until the window ends.

Examples
--------
>>> j = Joiner(label_window=60.0)
>>> j.add_feedback("f1", "p1", 1.0, now=10.0)          # label first: held
[]
>>> j.add_prediction("p1", {"amount": 3.0}, ts=9.0)
[Joined(feedback_id='f1', features={'amount': 3.0}, label=1.0, prediction_ts=9.0)]
>>> j.add_feedback("f2", "p1", 0.0, now=100.0)         # 91 s after the prediction
[]
>>> [(r.feedback_id, r.reason) for r in j.take_rejected()]
[('f2', 'late')]
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

MAX_ID_LENGTH = 256


def prediction_id(value: Any) -> str:
    """A prediction id as the join keys it: a string or an integer, at most 256 characters.

    >>> prediction_id(42), prediction_id("9f2c-0")
    ('42', '9f2c-0')
    >>> prediction_id(None)
    Traceback (most recent call last):
    ...
    ValueError: an id must be a string or an integer (got null)
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        name = "null" if value is None else type(value).__name__
        raise ValueError(f"an id must be a string or an integer (got {name})")
    text = str(value)
    if len(text) > MAX_ID_LENGTH:
        raise ValueError(f"an id must be at most {MAX_ID_LENGTH} characters (got {len(text)})")
    return text


@dataclass(frozen=True)
class Joined:
    feedback_id: str
    features: dict[str, Any]
    label: Any
    prediction_ts: float


@dataclass(frozen=True)
class Rejected:
    feedback_id: str
    prediction_id: str
    label: Any
    reason: str  # "late" | "unmatched" | "duplicate"


class Joiner:
    def __init__(
        self,
        label_window: float,
        max_predictions: int = 1_000_000,
        max_waiting: int = 100_000,
        max_waiting_bytes: int = 32 << 20,
    ) -> None:
        self.label_window = label_window
        self.max_predictions = max_predictions
        self.max_waiting = max_waiting
        self.max_waiting_bytes = max_waiting_bytes
        self._waiting_count = 0
        self._waiting_bytes = 0
        self.overflow = 0  # labels refused because the waiting room was full
        # prediction id -> (ts, features); insertion order is time order (stream order).
        # Joined predictions keep (ts, None): a later label for one is a duplicate.
        self._predictions: OrderedDict[str, tuple[float, dict[str, Any] | None]] = OrderedDict()
        # prediction id -> [(feedback id, label, received)] waiting for their prediction.
        self._waiting: dict[str, list[tuple[str, Any, float]]] = {}
        # Ids (only) of predictions that aged out, kept one more window, so that a
        # label for one is reported as late rather than unmatched.
        self._expired: OrderedDict[str, float] = OrderedDict()
        self._rejected: list[Rejected] = []
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._predictions)

    @property
    def waiting(self) -> int:
        return self._waiting_count

    @staticmethod
    def _size(pred_id: str, feedback_id: str) -> int:
        return len(pred_id) + len(feedback_id) + 120  # the strings, a tuple, a list slot

    def _wait(self, feedback_id: str, pred_id: str, label: Any, now: float) -> None:
        size = self._size(pred_id, feedback_id)
        if (self._waiting_count >= self.max_waiting
                or self._waiting_bytes + size > self.max_waiting_bytes):  # fmt: skip
            self.overflow += 1
            self._rejected.append(Rejected(feedback_id, pred_id, label, "unmatched"))
            return
        self._waiting.setdefault(pred_id, []).append((feedback_id, label, now))
        self._waiting_count += 1
        self._waiting_bytes += size

    def _unwait(self, pred_id: str, items: list[tuple[str, Any, float]]) -> None:
        self._waiting_count -= len(items)
        self._waiting_bytes -= sum(self._size(pred_id, fid) for fid, _, _ in items)

    def add_prediction(self, pred_id: str, features: dict[str, Any], ts: float) -> list[Joined]:
        self._predictions[pred_id] = (ts, features)
        self._predictions.move_to_end(pred_id)
        if len(self._predictions) > self.max_predictions:
            self._predictions.popitem(last=False)
            self.evicted += 1
        out: list[Joined] = []
        waited = self._waiting.pop(pred_id, [])
        self._unwait(pred_id, waited)
        for fid, label, received in waited:
            if received - ts > self.label_window:
                self._rejected.append(Rejected(fid, pred_id, label, "late"))
            elif out:
                self._rejected.append(Rejected(fid, pred_id, label, "duplicate"))
            else:
                out.append(Joined(fid, features, label, ts))
                self._predictions[pred_id] = (ts, None)
        return out

    def add_feedback(self, feedback_id: str, pred_id: str, label: Any, now: float) -> list[Joined]:
        hit = self._predictions.get(pred_id)
        if hit is None and pred_id in self._expired:
            self._rejected.append(Rejected(feedback_id, pred_id, label, "late"))
            return []
        if hit is None:
            self._wait(feedback_id, pred_id, label, now)
            return []
        ts, features = hit
        if now - ts > self.label_window:
            self._rejected.append(Rejected(feedback_id, pred_id, label, "late"))
            return []
        if features is None:
            self._rejected.append(Rejected(feedback_id, pred_id, label, "duplicate"))
            return []
        self._predictions[pred_id] = (ts, None)
        return [Joined(feedback_id, features, label, ts)]

    def expire(self, now: float) -> None:
        """Forget predictions older than the window; give up on labels that waited as long."""
        horizon = now - self.label_window
        while self._predictions:
            pid, (ts, _) = next(iter(self._predictions.items()))
            if ts >= horizon:
                break
            del self._predictions[pid]
            self._expired[pid] = now
            if len(self._expired) > self.max_predictions:
                self._expired.popitem(last=False)
        while self._expired:
            pid, expired_at = next(iter(self._expired.items()))
            if expired_at >= horizon:
                break
            del self._expired[pid]
        for pid in [p for p, items in self._waiting.items() if items[0][2] < horizon]:
            keep = []
            items = self._waiting.pop(pid)
            self._unwait(pid, items)
            for fid, label, received in items:
                if received < horizon:
                    self._rejected.append(Rejected(fid, pid, label, "unmatched"))
                else:
                    keep.append((fid, label, received))
            if keep:
                self._waiting[pid] = keep
                self._waiting_count += len(keep)
                self._waiting_bytes += sum(self._size(pid, fid) for fid, _, _ in keep)

    def take_rejected(self) -> list[Rejected]:
        out, self._rejected = self._rejected, []
        return out
