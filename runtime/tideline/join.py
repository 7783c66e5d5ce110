"""Delayed-feedback join: labels meet the predictions they are about.

Servers log every prediction (id, features, time) to a capped stream; label
producers later send ``{"id": ..., "label": ...}``. A label may arrive before
its prediction has been read (out of order), or long after (fraud labels come
in hours). The :class:`Joiner` holds logged predictions for ``label_window``
seconds and labels whose prediction it has not seen yet for as long; a label
whose prediction is older than the window is *late*, one whose prediction
never shows up within the window is *unmatched*. Both are reported, never
silently dropped. Memory is bounded by the window and by ``max_predictions``.

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
    reason: str  # "late" | "unmatched"


class Joiner:
    def __init__(self, label_window: float, max_predictions: int = 1_000_000) -> None:
        self.label_window = label_window
        self.max_predictions = max_predictions
        # prediction id -> (ts, features); insertion order is time order (stream order).
        self._predictions: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
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
        return sum(len(v) for v in self._waiting.values())

    def add_prediction(self, pred_id: str, features: dict[str, Any], ts: float) -> list[Joined]:
        self._predictions[pred_id] = (ts, features)
        self._predictions.move_to_end(pred_id)
        if len(self._predictions) > self.max_predictions:
            self._predictions.popitem(last=False)
            self.evicted += 1
        out = []
        for fid, label, received in self._waiting.pop(pred_id, ()):
            if received - ts > self.label_window:
                self._rejected.append(Rejected(fid, pred_id, label, "late"))
            else:
                out.append(Joined(fid, features, label, ts))
        return out

    def add_feedback(self, feedback_id: str, pred_id: str, label: Any, now: float) -> list[Joined]:
        hit = self._predictions.get(pred_id)
        if hit is None and pred_id in self._expired:
            self._rejected.append(Rejected(feedback_id, pred_id, label, "late"))
            return []
        if hit is None:
            self._waiting.setdefault(pred_id, []).append((feedback_id, label, now))
            return []
        ts, features = hit
        if now - ts > self.label_window:
            self._rejected.append(Rejected(feedback_id, pred_id, label, "late"))
            return []
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
            for fid, label, received in self._waiting.pop(pid):
                if received < horizon:
                    self._rejected.append(Rejected(fid, pid, label, "unmatched"))
                else:
                    keep.append((fid, label, received))
            if keep:
                self._waiting[pid] = keep

    def take_rejected(self) -> list[Rejected]:
        out, self._rejected = self._rejected, []
        return out
