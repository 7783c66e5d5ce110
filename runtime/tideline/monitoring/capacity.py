"""What the prediction log needs in Redis, at the rate it is written, for its window.

The health summary's :class:`tideline.health.LogCapacity`, which the operator's
``LogCapacity`` condition reads: the bytes the log would hold with its window full
at the rate predictions are logged (smoothed over about a minute), beside what
Redis holds and may hold. Measured once an analysis interval at most, and never
more than ``MEASURE_SHARE`` of the time; the measurement kept is the last one made,
and a log that holds nothing for a while keeps the bytes-per-prediction figure
measured last.

Pure: the monitor (:class:`tideline.pods.monitor.Monitor`) measures the log's
streams and index (``MEMORY USAGE``, ``XLEN``) and Redis's memory (``INFO``) when
:meth:`LogSize.due` says so, and hands them in with the time the measurement
took; nothing here reads a clock or the network.

Examples
--------
>>> size = LogSize(interval=10.0, window=600.0)
>>> size.entries, size.rows = 10, 640  # read from the log: 64 predictions an entry
>>> size.due(now=100.0, rate=50.0)
True
>>> cap = size.measured(100.0, took=0.01, sizes=[320_000, 2_000, None], lengths=[50],
...                     info={"used_memory": 10e6, "maxmemory": 100e6})
>>> cap.bytes_per_prediction, cap.need, cap.fits
(100.6, 3018000, True)
>>> size.due(now=105.0, rate=50.0)  # measured less than an interval ago
False
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from tideline import health as h

MEASURE_SHARE = 0.01  # of the time at most spent measuring the log's size (MEMORY USAGE)
SMOOTHING = 60.0  # seconds the logging rate is smoothed over
HEADROOM = 0.9  # the share of Redis's limit the log may fill with what else it holds


class LogSize:
    """The log's logging rate, smoothed, and its last measurement."""

    def __init__(self, interval: float, window: float, history: float = 0.0) -> None:
        self.interval = interval  # the analysis interval: measured at most once in one
        self.window = window  # seconds of log kept (predlog.retention)
        self.history = history  # seconds of labelled history kept (spec.learning.history)
        self.entries = self.rows = 0  # read from the log: rows a stream entry holds
        self.history_entries = self.history_rows = 0  # written to the history: the same
        self.rate: float | None = None  # predictions/s, smoothed (about a minute)
        self.label_rate: float | None = None  # joins/s (labels and defaults), smoothed
        self.bytes_per_sample: float | None = None
        self.capacity: h.LogCapacity | None = None  # the last measurement
        self.next_at = -math.inf  # when the log is measured next
        self.bytes_per_prediction: float | None = None

    def due(self, now: float, rate: float, label_rate: float = 0.0) -> bool:
        """The logging rate at ``now`` (predictions/s since the last health write) and the
        label rate into the smoothed ones; whether the log is to be measured now."""
        a = min(1.0, self.interval / SMOOTHING)
        self.rate = rate if self.rate is None else (1 - a) * self.rate + a * rate
        last = self.label_rate
        self.label_rate = label_rate if last is None else (1 - a) * last + a * label_rate
        return now >= self.next_at

    def measured(
        self,
        now: float,
        took: float,
        sizes: Sequence[int | None],
        lengths: Sequence[int],
        info: Mapping[str, Any],
        history: tuple[int | None, int] | None = None,
    ) -> h.LogCapacity:
        """A measurement made at ``now`` in ``took`` seconds: the bytes each of the log's keys
        holds (None: gone), the entries each stream holds, and Redis's memory figures
        (``used_memory``, ``maxmemory``, ``total_system_memory``); and with a history, its
        bytes and entries. The next is due an interval later, or later still when this one
        took long."""
        self.next_at = now + max(self.interval, took / MEASURE_SHARE)
        held = float(sum(x or 0 for x in sizes))
        per_entry = self.rows / self.entries if self.entries else 0.0
        held_predictions = sum(lengths) * per_entry
        rate = self.rate or 0.0
        cap = h.LogCapacity(rate=round(rate, 1), window=self.window, held=held,
                            used=float(info.get("used_memory", 0)))  # fmt: skip
        maxmemory = float(info.get("maxmemory", 0))
        system = float(info.get("total_system_memory", 0))
        cap.limit, cap.limit_source = (maxmemory, "maxmemory") if maxmemory else (
            system or None, "system")  # fmt: skip
        if held_predictions >= 1:
            self.bytes_per_prediction = round(held / held_predictions, 1)
        if self.bytes_per_prediction is not None:
            cap.bytes_per_prediction = self.bytes_per_prediction
            cap.need = round(rate * self.window * cap.bytes_per_prediction)
        extra = self._history(cap, history) if history is not None else 0.0
        if cap.need is not None and cap.limit:
            cap.fits = cap.used - held - cap.history_held + cap.need + extra <= HEADROOM * cap.limit
        self.capacity = cap
        return cap

    def _history(self, cap: h.LogCapacity, history: tuple[int | None, int]) -> float:
        """The history's part of ``cap`` (bytes and entries as measured); the bytes it needs."""
        size, length = history
        cap.history_window = self.history
        cap.label_rate = round(self.label_rate or 0.0, 1)
        cap.history_held = float(size or 0)
        per_entry = self.history_rows / self.history_entries if self.history_entries else 0.0
        if length * per_entry >= 1:
            self.bytes_per_sample = round(cap.history_held / (length * per_entry), 1)
        if self.bytes_per_sample is None:
            return 0.0
        cap.bytes_per_sample = self.bytes_per_sample
        cap.history_need = round(cap.label_rate * self.history * self.bytes_per_sample)
        return cap.history_need
