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

A compared row is predicted as stable predicted it: with what had been learned when the
prediction was made (its ``ts``), not with what it learns in the order labels came - the
labels that came between the prediction and its own label would have told it the answer (its
neighbours', a late click's, ``labelDefault``'s ``after`` later). From where those rows'
predictions may begin (the window's start less the log's retention and ``mature_after``) the
catch-up learns a step of rows at a time and keeps the model's state after each. A step is as
many rows as came between two of the versions stable served, as the records read so far say
(the median: stable's own predictions lacked up to that many, so the candidate's are no
staler than stable's were); before two changes of stable's version are seen (one version
served throughout, or a history whose records do not say), about a hundredth of the
history's rows. Either within 1,024 to 4,096 (``SNAPSHOT_ROWS``; a chunk of rows in even
steps, up to half as long again). A row is predicted by the newest state that had learned
only labels that came by its ``ts``: it may lack a step's rows of those (more when over
``MAX_STATES`` states span the horizon, or more than ``STATES_BUDGET`` bytes of them, a
quarter of the memory limit at most: then every other one goes), never has one it should
not know. (A row older than the states kept is predicted by the oldest.)
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from itertools import pairwise
from typing import Any

import numpy as np

from tideline.algorithms.base import Learner, State
from tideline.backtest import BacktestWindow
from tideline.contracts import Backtest, Keys
from tideline.memory import memory_limit
from tideline.pods import history
from tideline.pods.join import LogJoin
from tideline.store import node_pipeline
from tideline.training import Block, Run, Training

log = logging.getLogger("tideline.learner")

CHUNK_ROWS = 4096  # rows handed to the learner at a time
# rows learned between two states kept for the compared predictions, at least and at most:
# as many as came between stable's versions, or about a hundredth of the history's (a state a
# block of 1,024 rows cost the catch-up of 200,000 a third of its rate; one every 2,048 rows
# made a good revision of 8,000 look worse than a stable that had learned every 64 rows)
SNAPSHOT_ROWS = (1024, 4096)
MAX_STATES = 512  # states kept at most (a long horizon at a high rate: kept further apart)
# the bytes the states kept may take at most (a quarter of the container's memory limit when
# that is less): a team's model of 64 MB is kept 4 times, not 512 (each a copy of its state)
STATES_BUDGET = 256 * 2**20
REPORT_SECONDS = 1.0  # how often the progress is written


def state_bytes(state: State) -> int:
    """What a state kept holds: its arrays (a team's model: its ``save()``)."""
    return sum(int(np.asarray(v).nbytes) for v in state.values())


def states_budget(limit: int | None) -> int:
    """The bytes the states kept may take: :data:`STATES_BUDGET`, or a quarter of the memory
    ``limit`` when that is less.

    >>> states_budget(None) == STATES_BUDGET, states_budget(2**30) // 2**20
    (True, 256)
    >>> states_budget(2**28) // 2**20
    64
    """
    return STATES_BUDGET if limit is None else min(STATES_BUDGET, limit // 4)


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
        # the chunk's marks by their slice of time, a record's packed (LogJoin.commit_packed),
        # committed with it, and how many they are
        self.marks: dict[int, list[bytes]] = {}
        self._marks_rows = 0
        self._io: Executor | None = None  # a thread of its own, while it runs
        self._commit: Future[None] | None = None  # the last chunk's marks, on their way
        self.marked = 0
        self.skipped = 0  # rows not learned: a label or a row the model cannot take
        self.decoder = history.RecordDecoder(training.schema, training.task)
        # the chunk's rows: blocks encoded, then the typed rows or the columns of rows not
        # yet encoded (in bulk; one kind at a time, in order)
        self._blocks: list[np.ndarray] = []
        self._typed: list[Any] = []
        self._columns: list[Any] = []
        self._column_rows = 0
        self._labels: list[Any] = []
        self._received: list[float] = []
        self._served: list[Any] = []
        self._stable: list[bool] = []
        self._ts: list[float] = []  # when each record's prediction was made
        self._counts: list[int] = []  # and its rows taken
        # when each row's label is learned, with mature_after (see _take; else when it came)
        self._learned_at: list[float] = []
        # the learned labels' times, in the order they were learned (learned: the first
        # `_done` of them), and the model's states kept: the newest such time each had learned
        self._times = np.zeros(0)
        self._done = 0
        self._until = since  # the newest of them learned
        self._states: list[Learner] = []
        self._state_times: list[float] = []  # the newest label time each had learned
        self._state_bytes: list[int] = []  # each state's size (a team's model may grow)
        self._budget = states_budget(memory_limit())
        # a compared row's prediction comes at most this long before its label is learned
        self.horizon = join.retention + mature_after
        self._entries = self._entry_rows = self._history_entries = 0  # (to size the steps)
        # the versions stable served, and the rows read before each was first seen
        self._stable_versions: set[tuple[str, int]] = set()
        self._stable_seen: list[int] = []
        self._cadence = (0, 0)  # (how many were seen, the median rows between them)

    def run(self) -> Backtest:
        total, first, last = history.span(self.r, self.keys)
        self._history_entries = total
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
        status.rows += self._learn(final=True)
        self._committed()
        status.rate = status.rows / max(time.monotonic() - started, 1e-9)

    def _said(self, status: Backtest) -> None:
        status.samples = self.compared.samples
        status.difference, status.lower, status.upper = self.compared.result()

    def _take(self, rec: history.Record, how: history.Rows, marks: bytes) -> None:
        """A record's rows to learn: those whose label came by ``until`` and was learned
        after ``since`` - when it came, or with ``mature_after`` once its prediction was
        mature (all of them, but at the history's two ends). Their marks (``marks``, packed)
        only while the prediction is in the log: an older one's would expire as it is
        written. ``how``: its rows came out as the schema's typed rows or columns, or as
        logged (:class:`tideline.pods.history.Decoded`)."""
        n = len(rec.labels) if how == "columns" else len(rec.rows)
        served_by = rec.models.get("stable")
        if served_by is not None and served_by not in self._stable_versions:
            self._stable_versions.add(served_by)
            self._stable_seen.append(self._entry_rows)
        self._entries += 1
        self._entry_rows += n
        if len(rec.received) != n or len(rec.labels) != n or history.array_length(marks) != n:
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
        rows, labels, received = rec.rows, rec.labels, rec.received
        if picked is not None:
            rows = _columns_of(rows, picked) if how == "columns" else [rows[i] for i in picked]
            labels, received = [labels[i] for i in picked], [received[i] for i in picked]
            scores, stable = [scores[i] for i in picked], [stable[i] for i in picked]
            learned = [learned[i] for i in picked]
            if young:
                marks = history.pick_marks(marks, picked)
        if how == "columns":
            if self._typed:
                self._encode_waiting()
            self._columns.append(rows)
            self._column_rows += len(labels)
        elif how == "typed":
            if self._columns:
                self._encode_waiting()
            self._typed += rows
        else:  # (rows as logged: encoded now, in order, with what they count or default)
            self._encode_waiting()
            self._blocks.append(self.training.schema.encode_lenient(rows))
        self._labels += labels
        self._received += received
        self._served += scores
        self._stable += stable
        self._ts.append(rec.ts)
        self._counts.append(len(labels))
        if self.mature_after:
            self._learned_at += learned
        if young:
            self.marks.setdefault(self.join.slice_of(rec.ts), []).append(marks)
            self._marks_rows += len(labels)

    def _encode_waiting(self) -> None:
        """The typed rows and the columns taken, encoded (the one kind waiting)."""
        schema = self.training.schema
        if self._typed:
            self._blocks.append(schema.encode_typed(self._typed))
            self._typed = []
        if self._columns:
            self._blocks.append(schema.encode_columns(self._columns, self._column_rows))
            self._columns, self._column_rows = [], 0

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

    def _learn(self, final: bool = False) -> int:
        """The rows taken so far, compared and learned (the rows of a mini-batch not full yet
        wait for the next chunk, but when ``final``). How many there were."""
        n = self._chunk() if self._labels else 0
        if final:
            self._learned(self.training.blocks(force=True))
        if self.marks:  # (as it goes: millions of marks must not wait in memory)
            self._committed()
            marks, rows, self.marks, self._marks_rows = self.marks, self._marks_rows, {}, 0
            if self._io is not None:
                self._commit = self._io.submit(self._mark, marks, rows)
            else:
                self._mark(marks, rows)
        return n

    def _chunk(self) -> int:
        y, ok = self._targets()
        self._encode_waiting()
        X = self._blocks[0] if len(self._blocks) == 1 else np.vstack(self._blocks)
        received, ts = np.array(self._received), np.repeat(self._ts, self._counts)
        learned_at = np.array(self._learned_at) if self.mature_after else received
        stable = np.array(self._stable, dtype=bool)
        served = self._served
        if ok is not None:
            self.skipped += int((~ok).sum())
            served = [served[i] for i in np.nonzero(ok)[0].tolist()]
            X, y, received, ts = X[ok], y[ok], received[ok], ts[ok]
            learned_at, stable = learned_at[ok], stable[ok]
        self._blocks, self._labels, self._received, self._served, self._stable = [], [], [], [], []
        self._ts, self._counts, self._learned_at = [], [], []
        if not len(y):
            return 0
        # (the run's time: the newest label's, as learned_until counts it)
        run = Run("history", f"{int(received.max() * 1000)}-0".encode(), len(y))
        self._times = np.concatenate([self._times[self._done :], learned_at])
        self._done = 0
        if learned_at.max() < self.compared.start - self.horizon:  # (no row compared needs it)
            self.training.add(X, y, [run])
            self._learned(self.training.blocks(force=False))
            return len(y)
        picked = np.nonzero(stable & (received > self.compared.start))[0]
        answered = stable[picked]  # (less those whose served score is not one)
        scores = self._served_scores(answered, served if len(picked) == len(served) else
                                     [served[i] for i in picked.tolist()])  # fmt: skip
        self._keep_state()
        step = self._step()
        # the chunk in even steps, none much shorter than ``step``: 4,160 rows in two of
        # 2,080, not 2,000, 2,000 and 160 (a learner block each: half as many again cost
        # the catch-up over 1 h about 8 % of its CPU time)
        parts = max(1, round(len(y) / step))
        for a, b in pairwise(round(len(y) * k / parts) for k in range(parts + 1)):
            lo, hi = np.searchsorted(picked, [a, b])
            if lo < hi:
                rows = picked[lo:hi]
                self.compared.add(received[rows], self._predicted(X[rows], ts[rows]),
                                  scores[lo:hi], y[rows], answered[lo:hi])  # fmt: skip
            self.training.add(X[a:b], y[a:b], [Run(run.stream, run.entry, b - a)])
            self._learned(self.training.blocks(force=False))
            self._keep_state()
        return len(y)

    def _step(self) -> int:
        """Rows to learn between two states kept (see the module docs): the median of the rows
        that came between two changes of stable's served version, in the records read so far;
        before two changes, about a hundredth of the history's rows. Within SNAPSHOT_ROWS.

        (The first version seen had served since before the history began: the rows before
        the first change are not a whole interval.)"""
        seen = len(self._stable_seen)
        if seen >= 3:
            if self._cadence[0] != seen:  # (a median each time a version is first seen)
                self._cadence = (seen, int(np.median(np.diff(self._stable_seen[1:]))))
            rows = self._cadence[1]
        else:
            history_rows = self._history_entries * self._entry_rows // max(self._entries, 1)
            rows = history_rows // 100
        return min(max(rows, SNAPSHOT_ROWS[0]), SNAPSHOT_ROWS[1])

    def _learned(self, blocks: Iterator[Block]) -> None:
        """``blocks`` learned: the newest label time learned, of the next rows waiting."""
        for block in blocks:
            k = len(block.predictions) if block.predictions is not None else 0
            if k:
                until = float(self._times[self._done : self._done + k].max())
                self._until = max(self._until, until)
                self._done += k

    def _keep_state(self) -> None:
        """The model as it stands, kept with the newest label time it has learned; the states
        no row to come can need let go (those before the last that is older than the
        horizon)."""
        learner = self.training.learner
        if self._states and self._states[-1].n_seen == learner.n_seen:
            return  # (nothing learned since the last)
        # (a copy of the learner, sized by the state it was given: a team's model saved once)
        snapshot, state = learner.snapshot(), learner.clone()
        state.set_state(snapshot)
        self._states.append(state)
        self._state_times.append(self._until)
        self._state_bytes.append(state_bytes(snapshot))
        gone = bisect.bisect_right(self._state_times, self._until - self.horizon) - 1
        if gone > 0:
            del self._states[:gone], self._state_times[:gone], self._state_bytes[:gone]
        # over the count or the bytes: every other one let go, the oldest kept (a row may then
        # lack more of what it could know, never know more), until within both, two at least
        while len(self._states) > 2 and (
            len(self._states) > MAX_STATES or sum(self._state_bytes) > self._budget
        ):
            self._states, self._state_times, self._state_bytes = (
                self._states[::2],
                self._state_times[::2],
                self._state_bytes[::2],
            )

    def _predicted(self, X: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Rows' predictions, each by the newest state kept that had learned only labels that
        came by its time ``ts`` (one older than every state kept: the oldest)."""
        which = np.maximum(np.searchsorted(self._state_times, ts, side="right") - 1, 0)
        out: np.ndarray | None = None
        for k in np.unique(which).tolist():
            rows = which == k
            p = self._states[k].predict_many(X[rows])
            if out is None:
                out = np.empty((len(ts), *p.shape[1:]))
            out[rows] = p
        assert out is not None
        return out

    def _mark(self, marks: dict[int, list[bytes]], rows: int) -> None:
        pipe = node_pipeline(self.r, self.keys.history)  # (a script: on a cluster, its node)
        self.join.commit_packed(pipe, marks)
        pipe.execute()
        self.marked += rows

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


def _columns_of(columns: list[Any], picked: list[int]) -> list[Any]:
    """Those rows of a record's columns (:class:`tideline.pods.history.RecordDecoder`)."""
    at = np.array(picked, dtype=np.intp)
    return [np.frombuffer(c, dtype="<f8")[at].tobytes() if isinstance(c, bytes)
            else [c[i] for i in picked] for c in columns]  # fmt: skip


def history_seconds(entry_id: str) -> float:
    """When a history entry was written (its stream id's time)."""
    return int(entry_id.split("-", 1)[0]) / 1000.0
