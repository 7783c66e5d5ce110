"""A new revision's catch-up: the labelled history learned before its first version.

With ``spec.learning.history`` a learner that starts with no checkpoint (a
canary, a model applied fresh) first learns the history
(:mod:`tideline.pods.history`) the way it learns live - in the order it was
joined, mini-batch by mini-batch, each row predicted before it is learned - at
its full speed, and only then publishes its first version. What it learns:

* the rows whose label came after what its warm start had learned
  (``since``: the version's ``learnedUntil``; 0 for a cold start), and up to
  ``until``, where its live reading of the labels begins (so no label is
  learned twice: :meth:`tideline.pods.learner.LearnerProcess.start`);
* each row's prediction is marked taken, as a label joined live is (chunk by
  chunk as it goes; a catch-up run again marks them again), so a label read
  again later is a duplicate and a prediction learned with the history's
  default is not given another.

On the rows of the last ``window`` seconds that the stable track answered it
compares its predictions with what stable served (:mod:`tideline.backtest`);
its progress and that comparison are the learner's ``backtest`` status field
(:class:`tideline.contracts.Backtest`), which the operator's backtest step reads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from tideline.backtest import BacktestWindow
from tideline.contracts import Backtest, Keys
from tideline.pods import history
from tideline.pods.join import LogJoin
from tideline.training import Run, Training

log = logging.getLogger("tideline.learner")

CHUNK_ROWS = 4096  # rows handed to the learner at a time
REPORT_SECONDS = 1.0  # how often the progress is written


class CatchUp:
    """One catch-up of a learner (see the module docs): :meth:`run` it once."""

    def __init__(
        self,
        client: Any,
        keys: Keys,
        training: Training,
        join: LogJoin,
        *,
        since: float,
        until: float,
        window: float,
        report: Callable[[Backtest], None],
        beat: Callable[[], None] = lambda: None,
        mature_after: float = 0.0,
    ) -> None:
        self.r = client
        self.keys = keys
        self.training = training
        self.join = join
        self.since, self.until, self.window = since, until, window
        # with labelDefault: a label is learned once its prediction is mature (ts + after),
        # not when it came: what a version that learned until ``since`` had not learned yet
        self.mature_after = mature_after
        self.report = report
        self.beat = beat
        self.compared = BacktestWindow(training.task, start=until - window)
        # predictions made before this are out of the log: their marks would expire at once
        self._log_starts = time.time() - join.retention
        # the chunk's marks by their slice of time (LogJoin.commit_slices), committed with it
        self.marks: dict[int, list[str]] = {}
        self._io: Executor | None = None  # a thread of its own, while it runs
        self._commit: Future[None] | None = None  # the last chunk's marks, on their way
        self.marked = 0
        self.skipped = 0  # rows not learned: a label or a row the model cannot take
        self.decoder = history.RecordDecoder(training.schema, training.task)
        # the chunk's rows: blocks encoded, then the typed rows not yet encoded (in bulk)
        self._blocks: list[np.ndarray] = []
        self._typed: list[Any] = []
        self._labels: list[Any] = []
        self._received: list[float] = []
        self._served: list[Any] = []
        self._stable: list[bool] = []

    def run(self) -> Backtest:
        total, first, last = history.span(self.r, self.keys)
        status = Backtest(total=total, window=self.window)
        if not total or last is None:
            status.done = True
            self.report(status)
            return status
        # the window: the last of what it learns (the newest label it takes, near enough)
        self.compared.start = min(self.until, history_seconds(last)) - self.window
        with ThreadPoolExecutor(1, thread_name_prefix="catch-up") as io:
            self._io = io
            try:
                self._read(status, last)
            finally:
                self._io = None
        status.done = True
        self._said(status)
        self.report(status)
        log.info("caught up on %d history rows (%d entries, %.0f rows/s): %d compared with "
                 "stable, %+.4f [%+.4f, %+.4f]", status.rows, status.read, status.rate,
                 status.samples, status.difference, status.lower, status.upper)  # fmt: skip
        return status

    def _read(self, status: Backtest, last: str) -> None:
        """The history read, learned and compared chunk by chunk; the next page read and the
        last chunk's marks committed on the ``_io`` thread meanwhile (issue 35: Redis's work
        and the socket's, two fifths of the catch-up's time, overlap the learning)."""
        started = reported = time.monotonic()
        read = history.read_with(self.r, self.keys, self.decoder.decode, until=last,
                                 ahead=self._io)  # fmt: skip
        for _, got in read:
            status.read += 1
            if got is not None:
                self._take(*got)
            if len(self._labels) >= CHUNK_ROWS:
                status.rows += self._learn()
            now = time.monotonic()
            if now - reported >= REPORT_SECONDS:
                reported = now
                status.rate = status.rows / max(now - started, 1e-9)
                self._said(status)
                self.report(status)
                self.beat()
        status.rows += self._learn()
        self._committed()
        status.rate = status.rows / max(time.monotonic() - started, 1e-9)

    def _said(self, status: Backtest) -> None:
        status.samples = self.compared.samples
        status.difference, status.lower, status.upper = self.compared.result()

    def _take(self, rec: history.Record, typed: bool = False) -> None:
        """A record's rows to learn: those whose label came by ``until`` and was learned
        after ``since`` - when it came, or with ``mature_after`` once its prediction was
        mature (all of them, but at the history's two ends). Their marks only while the prediction
        is in the log: an older one's would expire as it is written. ``typed``: its rows
        are the schema's typed rows (:class:`tideline.pods.history.RecordDecoder`)."""
        n = len(rec.rows)
        if len(rec.received) != n or len(rec.labels) != n or len(rec.marks) != n:
            self.skipped += n
            return
        received = rec.received
        learned = (
            [max(t, rec.ts + self.mature_after) for t in received]
            if self.mature_after
            else received
        )
        if min(learned, default=0.0) > self.since and max(received, default=0.0) <= self.until:
            picked = None
        elif max(learned, default=0.0) <= self.since or min(received, default=0.0) > self.until:
            return
        else:
            picked = [i for i, (t, at) in enumerate(zip(received, learned, strict=True))
                      if at > self.since and t <= self.until]  # fmt: skip
        if len(rec.tracks) != n or len(rec.scores) != n:
            stable, scores = [False] * n, [None] * n
        elif rec.fallback:
            stable, scores = [False] * n, rec.scores
        elif rec.tracks.count("stable") == n:
            stable, scores = [True] * n, rec.scores
        else:
            stable, scores = [t == "stable" for t in rec.tracks], rec.scores
        young = rec.ts > self._log_starts
        rows, labels, received, marks = rec.rows, rec.labels, rec.received, rec.marks
        if picked is not None:
            rows, labels, received = [rows[i] for i in picked], [labels[i] for i in picked], [
                received[i] for i in picked]  # fmt: skip
            scores, stable = [scores[i] for i in picked], [stable[i] for i in picked]
            marks = [marks[i] for i in picked]
        if typed:
            self._typed += rows
        else:  # (rows as logged: encoded now, in order, with what they count or default)
            self._encode_typed()
            self._blocks.append(self.training.schema.encode_lenient(rows))
        self._labels += labels
        self._received += received
        self._served += scores
        self._stable += stable
        if young:
            self.marks.setdefault(self.join.slice_of(rec.ts), []).extend(marks)

    def _encode_typed(self) -> None:
        if self._typed:
            self._blocks.append(self.training.schema.encode_typed(self._typed))
            self._typed = []

    def _targets(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The labels taken as targets, and which rows have one (None: all of them)."""
        task = self.training.task
        try:
            return task.targets(self._labels, len(self._labels)), None
        except (ValueError, TypeError):  # (one that is not a label: found one by one)
            pass
        ok = np.ones(len(self._labels), dtype=bool)
        y = np.zeros(len(self._labels))
        for i, label in enumerate(self._labels):
            try:
                y[i] = task.target(label)
            except (ValueError, TypeError):
                ok[i] = False
        return y, ok

    def _learn(self) -> int:
        """The rows taken so far, learned; their predictions compared. How many there were."""
        n = len(self._labels)
        if not n:
            return 0
        y, ok = self._targets()
        self._encode_typed()
        X = self._blocks[0] if len(self._blocks) == 1 else np.vstack(self._blocks)
        received = np.array(self._received)
        stable = np.array(self._stable, dtype=bool)
        served = self._served
        if ok is not None:
            self.skipped += int((~ok).sum())
            keep = np.nonzero(ok)[0].tolist()
            served = [served[i] for i in keep]
            X, y, received, stable = X[ok], y[ok], received[ok], stable[ok]
        self._blocks, self._labels, self._received, self._served, self._stable = [], [], [], [], []
        if not len(y):
            return 0
        # (the run's time: the newest label's, as learned_until counts it)
        self.training.add(X, y, [Run("history", f"{int(received.max() * 1000)}-0".encode(),
                                     len(y))])  # fmt: skip
        predictions = np.concatenate(
            [b.predictions for b in self.training.blocks(force=True) if b.predictions is not None]
        )
        self.compared.add(received, predictions, self._served_scores(stable, served), y, stable)
        if self.marks:  # (as it goes: millions of marks must not wait in memory)
            self._committed()
            marks, self.marks = self.marks, {}
            if self._io is not None:
                self._commit = self._io.submit(self._mark, marks)
            else:
                self._mark(marks)
        return len(y)

    def _mark(self, marks: dict[int, list[str]]) -> None:
        pipe = self.r.pipeline(transaction=False)
        self.join.commit_slices(pipe, marks)
        pipe.execute()
        self.marked += sum(map(len, marks.values()))

    def _committed(self) -> None:
        """The marks given to the ``_io`` thread are in Redis (its error raised here)."""
        if self._commit is not None:
            self._commit.result()
            self._commit = None

    def _served_scores(self, stable: np.ndarray, served: list[Any]) -> np.ndarray:
        """What was served for each row as the task's scores (a row stable did not serve, or
        whose score is not one: 0, and out of ``stable``)."""
        k = self.training.task.n_classes
        if stable.all() and not k:
            try:
                return np.asarray(served, dtype=np.float64)
            except (ValueError, TypeError):
                pass
        out = np.zeros((len(stable), k)) if k else np.zeros(len(stable))
        for i in np.nonzero(stable)[0].tolist():
            try:
                out[i] = served[i]
            except (ValueError, TypeError):
                stable[i] = False
        return out


def history_seconds(entry_id: str) -> float:
    """When a history entry was written (its stream id's time)."""
    return int(entry_id.split("-", 1)[0]) / 1000.0
