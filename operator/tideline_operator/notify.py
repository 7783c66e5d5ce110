"""Webhooks on the operator's Events (``spec.notify``): what they say, and their sending.

A notification is an Event of the model's (RolledBack, Unpinned, Promoted, RolloutAborted,
BacktestFailed, ConceptDrift, ... as :mod:`tideline_operator.rollout` decides them) told to
a receiver the model names, as one JSON object (:class:`Notice`, the ``json`` format) or as
a Slack incoming-webhook message (``slack``). The pure part - the notice, its two
encodings, the retry schedule (:class:`Retry`), the bounded queue (:class:`Backlog`) - has
table tests; :class:`Notifier` is the shell that sends.

Sending never holds a reconcile up: a turn only queues (:meth:`Notifier.submit` takes a
lock for a few microseconds and returns), and one thread of the notifier's own, with an
event loop, posts. Each receiver has a lane of its own, sent in order (RolledBack before
Unpinned): a receiver that hangs or fails holds up only its own lane, for at most its
retries (:class:`Retry`: a timeout per attempt, exponential backoff, a cap on attempts and
on time). A lane holds at most ``backlog`` notifications: a full one drops its oldest,
counted. The URL (its path or query is a token, for Slack the whole secret) is read from a
Secret by the reconciler and never logged, nor put in an Event: they name the Secret and
its key (:attr:`Delivery.where`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

import httpx
import msgspec
from prometheus_client import Counter, Gauge

import tideline
from tideline_operator.rollout import Event, RolloutStatus

log = logging.getLogger("tideline.operator")
# httpx logs every request at INFO with its URL, which here is a secret
logging.getLogger("httpx").setLevel(logging.WARNING)

NOTIFICATIONS = Counter(
    "tideline_operator_notifications_total",
    "Webhook notifications (spec.notify) by outcome: delivered, rejected (a 4xx answer), "
    "failed (out of attempts or time), dropped (pushed out of a full queue, or queued when "
    "the operator stopped), unresolved (no URL: the Secret or its key missing)",
    ["outcome"],
)
RETRIES = Counter("tideline_operator_notification_retries_total", "Webhook attempts retried")
QUEUED = Gauge("tideline_operator_notifications_queued", "Webhook notifications waiting")

# the Events that are about the canary revision (the others are about the stable one)
CANARY_REASONS = frozenset(
    {"CanaryStarted", "RolloutAborted", "BacktestFailed", "BacktestPassed", "BacktestInconclusive"}
)


@dataclass(frozen=True)
class Decided:
    """A turn's decision, as a notice tells it: the status before and after, and when."""

    before: RolloutStatus
    after: RolloutStatus
    now: float


class RollbackNote(msgspec.Struct, rename={"from_": "from"}):
    from_: int | None
    to: int | None
    reason: str


class Notice(msgspec.Struct, kw_only=True):
    """One notification, as the ``json`` format posts it (a receiver's contract).

    ``revision``: the revision the Event is about (the canary's for CanaryStarted,
    RolloutAborted and the backtest's Events; else the stable one's, the promoted one's
    for Promoted, whose ``previousRevision`` is the one it replaced). Versions as the
    status holds them after the decision. ``id``: the same for the same Event, so that a
    receiver can drop a retry's repeat.
    """

    id: str
    model: str
    namespace: str
    reason: str
    type: str  # Normal | Warning
    message: str
    time: str  # RFC 3339, UTC
    timestamp: float  # the same, in seconds since the epoch
    phase: str | None
    revision: str | None
    stableRevision: str | None  # noqa: N815 - the status's names
    canaryRevision: str | None  # noqa: N815
    previousRevision: str | None = None  # noqa: N815
    servedVersion: int | None = None  # noqa: N815
    lastGoodVersion: int | None = None  # noqa: N815
    latestVersion: int | None = None  # noqa: N815
    rollback: RollbackNote | None = None


def notice(namespace: str, model: str, ev: Event, d: Decided) -> Notice:
    """The notice of Event ``ev`` of a model, posted by the turn that decided ``d``.

    >>> from tideline_operator.rollout import RolloutStatus
    >>> st = RolloutStatus(phase="Healthy", stableRevision="b2", servedVersion=3)
    >>> n = notice("prod", "fraud", Event("Normal", "Promoted", "revision b2 (steps done)"),
    ...            Decided(RolloutStatus(stableRevision="a1"), st, 1796400000.0))
    >>> n.revision, n.previousRevision, n.time
    ('b2', 'a1', '2026-12-04T16:00:00Z')
    """
    st = d.after
    canary = st.aborted.revision if st.aborted is not None else st.canaryRevision
    revision = canary if ev.reason in CANARY_REASONS else st.stableRevision
    previous = None
    if ev.reason == "Promoted" and d.before.stableRevision != st.stableRevision:
        previous = d.before.stableRevision
    rb = st.lastRollback
    rollback = (
        RollbackNote(rb.from_, rb.to, rb.reason) if ev.reason == "RolledBack" and rb else None
    )
    when = datetime.fromtimestamp(d.now, UTC)
    text = when.isoformat(timespec="milliseconds" if d.now % 1 else "seconds")
    key = f"{namespace}/{model}\0{ev.reason}\0{d.now!r}\0{ev.message}".encode()
    return Notice(
        id=hashlib.sha256(key).hexdigest()[:20],
        model=model,
        namespace=namespace,
        reason=ev.reason,
        type=ev.type,
        message=ev.message,
        time=text.replace("+00:00", "Z"),
        timestamp=d.now,
        phase=st.phase,
        revision=revision,
        stableRevision=st.stableRevision,
        canaryRevision=canary,
        previousRevision=previous,
        servedVersion=st.servedVersion,
        lastGoodVersion=st.lastGoodVersion,
        latestVersion=st.latestVersion,
        rollback=rollback,
    )


Format = Literal["json", "slack"]
# Slack's limits: a section's text 3,000 characters (the message is cut well before)
SLACK_SECTION = 2900
SLACK_ICONS = {
    "RolledBack": ":rewind:",
    "Unpinned": ":arrow_forward:",
    "Promoted": ":rocket:",
    "RolloutAborted": ":no_entry:",
    "BacktestFailed": ":no_entry:",
    "ConceptDrift": ":ocean:",
}


def encode(n: Notice, fmt: Format) -> bytes:
    """The body posted for ``n``: the notice itself (``json``), or Slack's incoming-webhook
    message (``slack``: ``text``, what a notification shows, and ``blocks``)."""
    if fmt == "json":
        return msgspec.json.encode(n)
    return msgspec.json.encode(slack_message(n))


def _slack_escape(text: str) -> str:
    """Slack reads ``&``, ``<`` and ``>`` as markup (``<!channel>`` pings a channel)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(n: Notice) -> dict[str, Any]:
    """Slack's incoming-webhook shape: ``{"text": ..., "blocks": [...]}``.

    >>> from tideline_operator.rollout import RolloutStatus
    >>> n = notice("prod", "fraud", Event("Warning", "RolledBack", "v7 -> v6: <worse>"),
    ...            Decided(RolloutStatus(), RolloutStatus(stableRevision="b2"), 0.0))
    >>> slack_message(n)["text"]
    ':rewind: RolledBack prod/fraud: v7 -&gt; v6: &lt;worse&gt;'
    """
    icon = SLACK_ICONS.get(n.reason, ":warning:" if n.type == "Warning" else ":information_source:")
    where = f"{n.namespace}/{n.model}"
    message = _slack_escape(n.message)
    if len(message) > SLACK_SECTION:
        message = message[: SLACK_SECTION - 1] + "…"
    facts = [f"phase *{n.phase}*"] if n.phase else []
    facts += [f"{what} `{rev}`" for what, rev in (("revision", n.revision),
              ("stable", n.stableRevision), ("canary", n.canaryRevision),
              ("previous", n.previousRevision)) if rev]  # fmt: skip
    facts += [f"{what} v{v}" for what, v in (("served", n.servedVersion),
              ("lastGood", n.lastGoodVersion), ("latest", n.latestVersion)) if v is not None]  # fmt: skip
    facts.append(n.time)
    return {
        "text": f"{icon} {n.reason} {where}: {message}",
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"{icon} *{n.reason}* `{where}`\n{message}"},
            },
            {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(facts)}]},
        ],
    }


# -- delivery: the schedule and the queue (pure) -----------------------------------------


@dataclass(frozen=True)
class Retry:
    """How hard a notification is tried: ``attempts`` at most, each given ``timeout``
    seconds; after a failed one, a wait of ``first`` seconds, times ``factor`` after each
    (at most ``cap``; longer when the receiver asks so with Retry-After, up to ``cap``); no
    attempt starts ``budget`` seconds or more after the first. On the defaults a receiver
    that never answers costs its lane 5 attempts of 5 s and waits of 1, 2, 4, 8 s: 40 s.

    >>> Retry().schedule()
    [1.0, 2.0, 4.0, 8.0]
    >>> Retry(attempts=10, budget=30.0).schedule(took=5.0)  # each attempt hangs 5 s
    [1.0, 2.0, 4.0]
    """

    attempts: int = 5
    timeout: float = 5.0
    first: float = 1.0
    factor: float = 2.0
    cap: float = 30.0
    budget: float = 60.0

    def delay(self, attempt: int, elapsed: float, retry_after: float | None = None) -> float | None:
        """Seconds to wait after failed attempt number ``attempt`` (1 the first), ``elapsed``
        seconds after the first began; None: no more attempts."""
        if attempt >= self.attempts:
            return None
        wait = min(self.cap, self.first * self.factor ** (attempt - 1))
        if retry_after is not None:
            wait = max(wait, min(self.cap, retry_after))
        if elapsed + wait >= self.budget:
            return None
        return wait

    def schedule(self, took: float = 0.0) -> list[float]:
        """The waits between attempts when each fails after ``took`` seconds."""
        waits: list[float] = []
        elapsed = took
        while (wait := self.delay(len(waits) + 1, elapsed)) is not None:
            waits.append(wait)
            elapsed += wait + took
        return waits


Verdict = Literal["delivered", "retry", "rejected"]


def verdict(status: int) -> Verdict:
    """What an answer's status means: 2xx delivered; 408, 425, 429 and 5xx worth another
    attempt; any other (a 4xx: a revoked token, a bad payload; a redirect, not followed)
    refused for good.

    >>> [verdict(s) for s in (200, 204, 301, 400, 404, 408, 429, 500, 503)]
    ['delivered', 'delivered', 'rejected', 'rejected', 'rejected', 'retry', 'retry', 'retry', 'retry']
    """
    if 200 <= status < 300:
        return "delivered"
    if status in (408, 425, 429) or status >= 500:
        return "retry"
    return "rejected"


def retry_after(value: str | None) -> float | None:
    """A Retry-After header's seconds (its HTTP-date form is not read: None)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


T = TypeVar("T")


class Backlog(Generic[T]):
    """What waits to be sent, per lane (a receiver), in order: at most ``size`` a lane, a
    full lane drops its oldest.

    >>> b = Backlog[str](2)
    >>> [b.put("hook", x) for x in "abc"], b.take("hook"), len(b)
    ([None, None, 'a'], 'b', 1)
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"a lane holds at least one (got {size})")
        self.size = size
        self._lanes: dict[str, deque[T]] = {}

    def put(self, lane: str, item: T) -> T | None:
        """Queue ``item`` last in ``lane``; the one pushed out of a full lane, if any."""
        q = self._lanes.setdefault(lane, deque())
        out = q.popleft() if len(q) >= self.size else None
        q.append(item)
        return out

    def take(self, lane: str) -> T | None:
        """The lane's first item (None: it is empty, and forgotten)."""
        q = self._lanes.get(lane)
        if not q:
            self._lanes.pop(lane, None)
            return None
        return q.popleft()

    def clear(self) -> list[T]:
        """Everything queued, removed."""
        out = [item for q in self._lanes.values() for item in q]
        self._lanes.clear()
        return out

    def __len__(self) -> int:
        return sum(len(q) for q in self._lanes.values())


# -- the sender (the shell) ----------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """A body to post to one receiver. ``where``: how logs and Events name the receiver
    (its Secret and key; the URL never); ``lane``: one per receiver."""

    lane: str
    where: str
    url: str = field(repr=False)
    body: bytes
    model: tuple[str, str]  # (namespace, name): whose Events say when it is not delivered
    reason: str  # the Event's


def _why(e: BaseException) -> str:
    """An error, said without its URL (httpx's messages may carry it): its kind, and the
    system's word for a failed connection."""
    cause = e.__cause__ or e.__context__
    detail = cause.strerror if isinstance(cause, OSError) and cause.strerror else None
    return f"{type(e).__name__}: {detail}" if detail else type(e).__name__


class Notifier:
    """Posts :class:`Delivery` bodies from a thread of its own (:meth:`start`, or the first),
    a lane per receiver, with retries (:class:`Retry`); :meth:`submit` never waits.

    ``transport``: httpx's (a test's :class:`httpx.MockTransport`); ``clock``: for the time
    budget. What was not delivered is logged and kept for the model's next turn to post as
    an Event (:meth:`failures`).
    """

    def __init__(
        self,
        retry: Retry | None = None,
        backlog: int = 100,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retry = retry or Retry()
        self._clock = clock
        self._transport = transport
        self._queue: Backlog[Delivery] = Backlog(backlog)
        self._lock = threading.Lock()  # the queue, the counts, the failures: any thread
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.AsyncClient | None = None  # (the loop's thread only)
        self._lanes: dict[str, asyncio.Task[None]] = {}  # (the loop's thread only)
        self._sending = 0
        self._stopped = False
        self._failed: dict[tuple[str, str], list[str]] = {}

    # -- any thread -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the sender now rather than with the first notification: making its HTTP
        client (TLS contexts: tens of milliseconds of CPU) then competes with no turn."""
        with self._lock:
            loop = None if self._stopped else self._started()
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self._open(), loop).result(timeout=30)

    def submit(self, d: Delivery) -> None:
        """Queue ``d`` and return (a full lane drops its oldest, counted)."""
        with self._lock:
            stopped = self._stopped
            pushed = None if stopped else self._queue.put(d.lane, d)
            loop = None if stopped else self._started()
            QUEUED.set(len(self._queue))
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._wake, d.lane)
            except RuntimeError:  # (closed by a stop between the lock and here)
                stopped = True
        if stopped or pushed is not None:
            NOTIFICATIONS.labels("dropped").inc()
            self._failure(pushed or d, "dropped: the operator is stopping" if stopped else
                          "dropped: too many notifications waiting for this receiver")  # fmt: skip

    def failures(self, namespace: str, name: str) -> list[str]:
        """What was not delivered for a model since last asked (at most the last 10)."""
        with self._lock:
            return self._failed.pop((namespace, name), [])

    def pending(self) -> int:
        """Notifications queued or being sent."""
        with self._lock:
            return len(self._queue) + self._sending

    def stop(self, timeout: float = 5.0) -> None:
        """Go on sending for up to ``timeout`` seconds while anything is pending, then drop
        the rest (counted) and end the thread. Later submissions are dropped."""
        with self._lock:
            self._stopped = True
            loop, thread = self._loop, self._thread
            self._loop = None  # (stopped once)
        if loop is None or thread is None:
            return
        deadline = time.monotonic() + timeout
        while self.pending() and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=5.0)
        except Exception as e:  # noqa: BLE001 - stopping goes on
            log.warning("notifications: the sender did not close cleanly: %s", _why(e))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5.0)
        if not thread.is_alive():
            loop.close()

    def _started(self) -> asyncio.AbstractEventLoop:
        """The sender's loop, its thread started the first time (under the lock)."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="tideline-notify", daemon=True
            )
            self._thread.start()
        return self._loop

    def _failure(self, d: Delivery, why: str) -> None:
        ns, name = d.model
        log.warning("%s/%s: %s notification to %s not delivered: %s", ns, name, d.reason,
                    d.where, why)  # fmt: skip
        with self._lock:
            said = self._failed.setdefault(d.model, [])
            said.append(f"{d.reason} not delivered to {d.where}: {why}")
            del said[:-10]

    # -- the loop's thread --------------------------------------------------------------------
    def _wake(self, lane: str) -> None:
        if lane not in self._lanes:
            self._lanes[lane] = asyncio.get_running_loop().create_task(self._drain(lane))

    async def _drain(self, lane: str) -> None:
        """Send a lane's notifications in order until it is empty."""
        try:
            while True:
                with self._lock:
                    d = self._queue.take(lane)
                    if d is None:
                        return
                    self._sending += 1
                    QUEUED.set(len(self._queue))
                try:
                    await self._deliver(d)
                except asyncio.CancelledError:  # (stop: its time is up)
                    NOTIFICATIONS.labels("dropped").inc()
                    self._failure(d, "dropped: the operator stopped")
                    raise
                finally:
                    with self._lock:
                        self._sending -= 1
        finally:
            self._lanes.pop(lane, None)

    async def _deliver(self, d: Delivery) -> None:
        start = self._clock()
        attempt = 0
        while True:
            attempt += 1
            outcome, why, after = await self._attempt(d)
            if outcome == "delivered":
                NOTIFICATIONS.labels("delivered").inc()
                return
            if outcome == "rejected":
                NOTIFICATIONS.labels("rejected").inc()
                self._failure(d, f"refused ({why}); not tried again")
                return
            wait = self.retry.delay(attempt, self._clock() - start, after)
            if wait is None:
                NOTIFICATIONS.labels("failed").inc()
                took = self._clock() - start
                self._failure(d, f"{why}, after {attempt} attempts in {took:.1f}s")
                return
            RETRIES.inc()
            await asyncio.sleep(wait)

    async def _open(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport,
                timeout=self.retry.timeout,
                follow_redirects=False,
                headers={"User-Agent": f"tideline-operator/{tideline.__version__}"},
            )
        return self._client

    async def _attempt(self, d: Delivery) -> tuple[Verdict, str, float | None]:
        client = await self._open()
        try:
            async with asyncio.timeout(self.retry.timeout):  # (the whole exchange)
                resp = await client.post(
                    d.url, content=d.body, headers={"Content-Type": "application/json"}
                )
        except TimeoutError:
            return "retry", f"no answer within {self.retry.timeout:g}s", None
        except httpx.TransportError as e:
            return "retry", _why(e), None
        except Exception as e:  # noqa: BLE001 - a lane must not die of one delivery
            return "rejected", _why(e), None
        return (
            verdict(resp.status_code),
            f"HTTP {resp.status_code}",
            retry_after(resp.headers.get("retry-after")),
        )

    async def _close(self) -> None:
        for task in list(self._lanes.values()):
            task.cancel()
        await asyncio.gather(*self._lanes.values(), return_exceptions=True)
        with self._lock:
            left = self._queue.clear()
            QUEUED.set(0)
        for d in left:
            NOTIFICATIONS.labels("dropped").inc()
            self._failure(d, "dropped: the operator stopped")
        if self._client is not None:
            await self._client.aclose()
