"""A team's own model on the request path: run in a thread of its own, waited for at most
``spec.serving.timeout``, its failures named, counted and logged once a minute; and a new
version probed before it serves.

The built-in learners (``sgd``, ``ftrl``, ``forest``) answer in microseconds and are
ours: the data plane calls them on the event loop, as it always did (a thread hop would
cost more than the model). A team's model (``algorithm: custom`` or ``river``, loaded
behind :class:`tideline.algorithms.external.External`) is code nobody here has read: it
may raise, return scores that cannot be served (:class:`~tideline.algorithms.external.BadScores`),
or never return. So each loaded version of one gets a :class:`Worker`: one daemon thread
that runs its ``predict`` calls one at a time (the contract never promised a model that
it would be called from two threads at once), which a request waits for at most the
timeout. Past it the request is answered by the fallback (reason ``timeout``); the call
goes on in the thread, and while a call has run past the timeout, later requests for
that model do not queue behind it: they go to the fallback at once (reason ``busy``).
A call still queued when its request gave up is dropped, never run. A thread stuck for
good in a model's code cannot be stopped (Python has no way to kill a thread): it is a
daemon, so it never holds the process up at exit, and the version it belongs to keeps
answering ``busy`` until it is replaced.

Failures are :class:`Failure` values (a reason and the error's last line, never a
traceback), not exceptions, on the way back to the data plane: it answers them, counts
them (``tideline_server_model_errors_total{track, reason}``) and logs them through a
:class:`FailureLog` (once per distinct message a minute: a model that raises on every
request is one line a minute, not a line a request).

:func:`probe` is the check a version of a team's model passes before it serves: it
predicts a few rows (the feature defaults, and rows of the revision's drift reference
when there is one) and names what went wrong - it raised, its scores are not servable
(:func:`servable`: not the task's shape, ``(n,)`` or a multiclass model's ``(n, k)``, not
finite, a probability outside [0, 1]), or it did not answer in time. (On the request
path the adapter, :class:`~tideline.algorithms.external.External`, checks every answer.)

Examples
--------
>>> from tideline.algorithms import make_learner
>>> sgd = make_learner({"task": "binary", "algorithm": "sgd",
...                     "features": [{"name": "amount", "default": 3.0}]})
>>> probe(sgd) is None  # a built-in: nothing to probe
True
>>> probe_rows(sgd.schema).tolist()
[[3.0]]
>>> servable(Task("multiclass", ("a", "b", "c")), [[0.2, 0.8]], 1)
Traceback (most recent call last):
...
tideline.algorithms.external.BadScores: scores of shape (1, 2) for 1 rows (a multiclass model of 3 classes gives (1, 3))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from tideline.algorithms import Learner
from tideline.algorithms.external import BadScores, External, last_line
from tideline.features import FeatureSchema
from tideline.tasks import Task

if TYPE_CHECKING:  # (versions imports this module to probe what it loads)
    from tideline.pods.server.versions import Loaded

# Why a model did not answer a request (the fallback's reason, and the metric's).
MODEL_ERROR = "model-error"  # it raised, or its scores cannot be served (BadScores)
TIMEOUT = "timeout"  # it ran past spec.serving.timeout
BUSY = "busy"  # it was still in a call that ran past the timeout: not asked at all
REASONS = (MODEL_ERROR, TIMEOUT, BUSY)

PROBE_SECONDS = 5.0  # a probe's time (a first call may import and compile: not the timeout)
PROBE_ROWS = 8  # rows of the drift reference a probe predicts, at most
_MESSAGE_CHARS = 300  # of a model's error, in an answer and in the log


@dataclass(frozen=True, slots=True)
class Failure:
    """A model that did not answer: ``reason`` (one of :data:`REASONS`) and ``message``."""

    reason: str
    message: str


def error_line(e: BaseException) -> str:
    """A model's exception as one line of bounded length (its traceback's last line).

    >>> error_line(RuntimeError("cannot score 99"))
    'RuntimeError: cannot score 99'
    >>> len(error_line(ValueError("x" * 1000)))
    300
    """
    line = " ".join(last_line(e).split())
    return line if len(line) <= _MESSAGE_CHARS else line[: _MESSAGE_CHARS - 3] + "..."


def is_team_model(learner: Learner) -> bool:
    """Whether ``learner`` runs a team's code (``custom``, ``river``): it is then called in a
    :class:`Worker`, and probed before it serves."""
    return isinstance(learner, External)


class _Job:
    """One predict call queued for a worker, and the future its request awaits."""

    __slots__ = ("X", "future", "loop", "dropped")

    def __init__(self, X: np.ndarray, loop: asyncio.AbstractEventLoop) -> None:
        self.X = X
        self.loop = loop
        self.future: asyncio.Future[np.ndarray | Failure] = loop.create_future()
        self.dropped = False  # its request gave up: the worker skips it


def _settle(future: asyncio.Future[Any], out: Any) -> None:
    if not future.done():
        future.set_result(out)


class Worker:
    """The thread one loaded version of a team's model answers in (see module docs)."""

    def __init__(self, name: str, predict: Callable[[np.ndarray], np.ndarray], timeout: float):
        self.name = name
        self.predict = predict
        self.timeout = timeout
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._since: float | None = None  # when the running call began (perf_counter)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.dropped:
                continue
            self._since = time.perf_counter()
            out: np.ndarray | Failure
            try:
                out = self.predict(job.X)
            except BaseException as e:  # whatever a team's code raises is that call's failure
                out = Failure(MODEL_ERROR, error_line(e))
            finally:
                self._since = None
            with contextlib.suppress(RuntimeError):  # a closed loop: stopped, no one waits
                job.loop.call_soon_threadsafe(_settle, job.future, out)

    @property
    def stuck_for(self) -> float:
        """Seconds the running call has run past the timeout (0: none has)."""
        since = self._since
        return 0.0 if since is None else max(time.perf_counter() - since - self.timeout, 0.0)

    def submit(self, X: np.ndarray) -> _Job | Failure:
        """Queue a call (await it with :func:`settled`), or :data:`BUSY` when a call has run
        past the timeout (asking again would only queue behind it)."""
        if self.stuck_for > 0.0:  # (the message does not say how long: logged once a minute)
            return Failure(BUSY, f"still in a call that ran past serving.timeout "
                                 f"({_ms(self.timeout)})")  # fmt: skip
        job = _Job(X, asyncio.get_running_loop())
        self._queue.put(job)
        return job

    def close(self) -> None:
        """End the thread once the calls queued so far are done (or dropped)."""
        self._queue.put(None)


Call = _Job | np.ndarray | Failure  # a model asked: queued in its worker, or answered already


async def settled(call: Call, deadline: float, timeout: float) -> np.ndarray | Failure:
    """A call's scores, or its :class:`Failure`; waited for at most until ``deadline``
    (``time.perf_counter()``), then :data:`TIMEOUT` (a call not yet begun is dropped)."""
    if not isinstance(call, _Job):
        return call
    future = call.future
    if future.done():
        return future.result()
    expire = call.loop.call_later(
        max(deadline - time.perf_counter(), 0.0), _settle, future,
        Failure(TIMEOUT, f"no answer within serving.timeout ({_ms(timeout)})"),
    )  # fmt: skip
    try:
        return await future
    finally:
        expire.cancel()
        call.dropped = True


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.4g} ms"


class Workers:
    """The workers of the loaded versions of a team's model, by version (see module docs)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._by_id: dict[int, tuple[Loaded, Worker]] = {}

    def of(self, loaded: Loaded) -> Worker | None:
        """The worker of ``loaded`` (made when first asked); None for a built-in learner."""
        held = self._by_id.get(id(loaded))
        if held is not None:
            if held[0] is loaded:
                return held[1]
            self._by_id.pop(id(loaded))[1].close()  # a version gone, whose id was taken again
        if not is_team_model(loaded.learner):
            return None
        worker = Worker(f"tideline-model-{loaded.revision}-v{loaded.version}", loaded.predict,
                        self.timeout)  # fmt: skip
        self._by_id[id(loaded)] = (loaded, worker)
        return worker

    def keep(self, held: Iterable[Loaded | None]) -> bool:
        """Workers for the versions ``held`` (a team's model's), the others' threads ended.
        Returns whether any is held: then requests are answered through them."""
        loaded = [h for h in held if h is not None]
        keep = {id(h) for h in loaded}
        for key in [k for k in self._by_id if k not in keep]:
            self._by_id.pop(key)[1].close()
        return any(self.of(h) is not None for h in loaded)

    def close(self) -> None:
        for _, worker in self._by_id.values():
            worker.close()
        self._by_id.clear()


class FailureLog:
    """Logs a model's failures once per distinct message per ``every`` seconds, with how
    many like it were not logged in between."""

    MAX_KEPT = 1024  # distinct messages remembered (a model that names each row in its error)

    def __init__(
        self, logger: logging.Logger, every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.logger = logger
        self.every = every
        self.clock = clock
        self._seen: dict[str, tuple[float, int]] = {}  # message -> (last logged, not logged since)

    def note(self, message: str) -> bool:
        """Log ``message`` unless it was logged in the last ``every`` seconds; True if logged.

        >>> log = FailureLog(logging.getLogger("doctest"), clock=lambda: 0.0)
        >>> log.note("v1 raised"), log.note("v1 raised"), log.note("v2 raised")
        (True, False, True)
        """
        now = self.clock()
        last = self._seen.get(message)
        if last is not None and now - last[0] < self.every:
            self._seen[message] = (last[0], last[1] + 1)
            return False
        if len(self._seen) >= self.MAX_KEPT:
            self._seen = {m: s for m, s in self._seen.items() if now - s[0] < self.every}
        more = f" (and {last[1]} more like it since)" if last is not None and last[1] else ""
        self.logger.warning("%s%s", message, more)
        self._seen[message] = (now, 0)
        return True


# -- before a version serves -----------------------------------------------------------
def servable(task: Task, scores: Any, n: int) -> np.ndarray:
    """``scores`` a model gave for ``n`` rows, as an array; :class:`BadScores` saying why they
    cannot be served (:meth:`Task.checked`)."""
    try:
        return task.checked(scores, n)
    except ValueError as e:
        raise BadScores(str(e)) from None


def probe_rows(schema: FeatureSchema, reference: Any = None, n: int = PROBE_ROWS) -> np.ndarray:
    """Rows to probe a model with: the features' defaults, then up to ``n`` of the last rows
    of a drift ``reference`` (:class:`tideline.store.Reference`: its numeric columns;
    the rest take their defaults). Encoded by a copy of ``schema``: the served schema's
    counts of missing values see no probe."""
    fresh = FeatureSchema(schema.features)
    rows: list[dict[str, Any]] = [{}]
    if reference is not None and len(reference.features):
        names = [name for name in reference.names if name in fresh.index]
        cols = [reference.names.index(name) for name in names]
        for values in np.asarray(reference.features)[-n:, cols].tolist():
            rows.append({k: v for k, v in zip(names, values, strict=True) if np.isfinite(v)})
    return fresh.encode(rows)


def probe(learner: Learner, X: np.ndarray | None = None, *,
          timeout: float = PROBE_SECONDS) -> str | None:  # fmt: skip
    """Why a newly loaded version must not serve, or None when it may.

    A team's model (:func:`is_team_model`) predicts ``X`` (default :func:`probe_rows`
    of its schema) in a thread of its own: the answer is what it raised (``BadScores``
    for scores of the wrong shape, not finite, or a probability outside [0, 1]), or that
    it did not answer within ``timeout`` seconds. A built-in learner is not probed.

    Blocks for up to ``timeout``: call it off the event loop (where the version is
    loaded, in the same ``asyncio.to_thread`` call).
    """
    if not is_team_model(learner):
        return None
    rows = probe_rows(learner.schema) if X is None else X
    task = Task(learner.task, learner.classes)
    out: list[str | None] = []

    def run() -> None:
        try:
            servable(task, learner.predict_many(rows), len(rows))
            out.append(None)
        except BaseException as e:  # whatever a team's code raises refuses the version
            out.append(error_line(e))

    thread = threading.Thread(target=run, name="tideline-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive() or not out:
        return f"predict did not answer {len(rows)} probe rows within {timeout:g} s"
    return out[0]
