"""One turn of one model: observe, decide, apply, record.

The kopf timer in :mod:`tideline_operator.handlers` calls
:meth:`Reconciler.turn` every few seconds per OnlineModel. A turn

1. parses the spec (a spec that can never work becomes a Degraded
   condition naming the field, and nothing else happens);
2. observes: the stable revision's pointers, the routing hash, the
   monitor's health summary, the store's epoch token and the faults of pods
   that cannot load the model in Redis (and, once
   a resync, Redis's eviction and persistence settings), and the model's
   Deployments (from a kopf index, not an API call);
3. calls the pure :func:`tideline_operator.rollout.decide`;
4. applies its actions: Redis pointers and learner controls for rollbacks,
   Kubernetes Events; then brings the children and the routing hash to what
   the new status implies (level-based, so a restarted operator converges
   from the status alone) - an object is applied only when it differs from
   what this process applied last, and server-side apply of an unchanged
   object changes nothing at the API; the model's signing key Secret is
   created when missing, before anything else, and never written again
   (:meth:`Reconciler.signing_key`) - and a key just made first adopts the
   store's unsigned blobs of built-in learners (:meth:`Reconciler.adopt`):
   no pod gets the key before they are sealed with it;
5. returns the status to write, or ``None`` when nothing changed, so a
   re-applied manifest (GitOps) causes no writes at all.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, assert_never
from urllib.parse import urlsplit

import redis
import yaml
from prometheus_client import Counter, Histogram

from tideline import health as h
from tideline.contracts import (
    Backtest,
    Keys,
    LearnerControl,
    LearnerStatus,
    ModelFault,
    Pointers,
    Routing,
    StartWord,
)
from tideline.memory import FIELDS as MEMORY_FIELDS
from tideline.memory import MemoryUse
from tideline.signing import KEY_ENV, Signer
from tideline.spec import (
    ExternalParams,
    OnlineModel,
    SecretKey,
    SpecError,
    VWParams,
    check_redis_url,
    parse,
)
from tideline.store import (
    ModelStore,
    StoreError,
    adopt_unsigned,
    connect,
    migrate_keys,
    node_info,
)
from tideline_operator import builders
from tideline_operator.builders import OperatorConfig
from tideline_operator.kube import REVISION_KINDS, KubeAPI
from tideline_operator.notify import NOTIFICATIONS, Decided, Delivery, Notifier, encode, notice
from tideline_operator.rollout import (
    Action,
    Adapt,
    Epoch,
    Event,
    GiveStartWord,
    Observed,
    PauseLearning,
    Promote,
    Prove,
    RestoreLastGood,
    Rollback,
    RollbackTo,
    RolloutStatus,
    StartCanary,
    StoreConfig,
    StoreSeen,
    Unpin,
    active_revisions,
    decide,
    invalid,
    restorable,
)

log = logging.getLogger("tideline.operator")

RECONCILES = Counter("tideline_operator_reconciles_total", "Model turns", ["result"])
ACTIONS = Counter("tideline_operator_actions_total", "Decided actions applied", ["kind"])
ROLLBACKS = Counter("tideline_operator_rollbacks_total", "Served versions rolled back")
ABORTS = Counter("tideline_operator_aborts_total", "Canaries aborted")
PROMOTIONS = Counter("tideline_operator_promotions_total", "Canaries promoted")
APPLIES = Counter("tideline_operator_applies_total", "Child objects applied", ["kind"])
DECISION = Histogram(
    "tideline_operator_decision_seconds",
    "Observe + decide + apply, per model turn",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

EventFn = Callable[[str, str, str], None]  # type, reason, message

# How long after a model's key was made (and its store first swept) every turn seals again
# what pods without the key wrote meanwhile: they run until their Deployment replaces them,
# a learner's last checkpoint written at its SIGTERM (terminationGracePeriodSeconds: 30 s).
ADOPT_SECONDS = 120.0


@dataclass
class Adoption:
    """A signing key this process made, and the sealing with it of the unsigned blobs the
    model's store holds from before (:meth:`Reconciler.adopt`)."""

    signer: Signer  # (its repr never shows the key)
    until: float | None = None  # sweeps go on until then; None: none succeeded, the pods wait
    said: bool = False  # that Redis could not be reached for it was logged


@dataclass
class ModelMemory:
    """What one model's turns remember in this process (lost on restart, by design)."""

    applied: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, name) -> hash
    desired_key: tuple[Any, ...] | None = None  # what the children were last built from
    desired_at: float = 0.0
    route_at: tuple[int, float] | None = None  # HTTPRoute weight last written, and when
    models: dict[str, tuple[OnlineModel, dict[str, Any]]] = field(default_factory=dict)
    status: dict[str, Any] | None = None
    parsed: tuple[Any, OnlineModel] | None = None  # ((uid, generation), the parsed spec)
    migrated: bool = False  # the model's keys were looked at for the old layout
    lag_at: float = -1e18  # when status.learnerLag was last written
    adoption: Adoption | None = None  # a signing key made, its store's blobs being adopted
    hooks_read: Any = None  # the spec (uid, generation) whose notify Secrets were looked at


@dataclass(frozen=True)
class Sight:
    """What :meth:`Reconciler.observe` read in Redis, in one round trip."""

    pointers: Pointers = field(default_factory=Pointers)  # the stable revision's
    empty: bool = True  # the stable revision has no pointers hash at all
    health: h.Health | None = None
    routing: dict[bytes, bytes] = field(default_factory=dict)  # the hash as read (Routing)
    retired: dict[str, float] = field(default_factory=dict)
    lag: int | None = None  # records the stable learner is behind (None: not known)
    store: StoreSeen | None = None  # None: Redis could not be read
    # what the stable revision's pods and the named canary's reported they cannot load
    faults: tuple[ModelFault, ...] | None = None  # None: Redis could not be read
    # the memory the same learners last reported (tideline.memory); None: not read
    memory: tuple[MemoryUse, ...] | None = None
    backtest: Backtest | None = None  # the canary learner's catch-up and backtest, if any


FULL_READ = 2.0  # seconds between readings of a Redis server's OOM replies (one for all its models)
FULL_HOLD = 10.0  # seconds after the last refusal that Redis still counts as full


@dataclass
class FullWatch:
    """What a Reconciler last read of one Redis's refusals for want of memory."""

    read_at: float = -1e18
    count: int | None = None  # its OOM replies since it started, when last read
    grew_at: float = -1e18  # when that count last grew
    refused: int = 0  # refusals seen in this episode
    message: str = ""


@dataclass(frozen=True)
class ChildState:
    """A Deployment of the model, as the kopf index saw it."""

    name: str
    component: str
    revision: str | None
    replicas: int
    ready: int


class Unresolved(Exception):
    """A webhook of spec.notify has no URL to post to: the message names its Secret."""


class PolicyViolation(SpecError):
    """The spec asks for what the operator's policy forbids (an image, a Secret)."""


class ResourceExists(Exception):
    """A child's name is taken by an object this OnlineModel does not own: it is left alone."""

    def __init__(self, kind: str, name: str, model: str) -> None:
        super().__init__(f"{kind} {name!r} exists and is not owned by OnlineModel {model!r}: "
                         "it is left alone; delete or rename it")  # fmt: skip
        self.kind, self.name = kind, name


def owned_by(obj: Mapping[str, Any] | None, uid: str | None) -> bool:
    """Whether ``obj`` names the object with ``uid`` among its owners."""
    refs = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    return uid is not None and any(r.get("uid") == uid for r in refs)


def _digest(obj: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def warm_start_compatible(a: OnlineModel, b: OnlineModel) -> bool:
    """A canary can start from stable's weights when task, algorithm and features agree, and a
    team's own model is the same class (its ``load`` takes the state with the new params).
    A River estimator's state is the estimator itself, hyperparameters and all: warm-started
    from stable's, a canary with other params would be stable's model again, so it starts
    cold. So with VW: its model bytes carry the arguments it was built with (a canary with
    others would be stable's model again, or fail to load), so only unchanged args warm-start."""
    ma, mb = a.spec.model, b.spec.model
    if (ma.task, ma.algorithm, ma.features) != (mb.task, mb.algorithm, mb.features):
        return False
    pa, pb = ma.params, mb.params
    if isinstance(pa, VWParams) or isinstance(pb, VWParams):
        return pa == pb
    if isinstance(pa, ExternalParams) and isinstance(pb, ExternalParams):
        return pa == pb if ma.algorithm == "river" else pa.ref == pb.ref
    return True


def route_weights(route: dict[str, Any], stable: str, canary: str, weight: int, port: int) -> list[dict[str, Any]]:  # fmt: skip
    """An HTTPRoute's rules with the stable/canary Services weighted ``100 - weight`` / ``weight``.

    Rules that name neither Service are left as they are.
    """
    rules = copy.deepcopy((route.get("spec") or {}).get("rules") or [])
    for rule in rules:
        refs = rule.get("backendRefs") or []
        names = {r.get("name") for r in refs}
        if stable not in names and canary not in names:
            continue
        refs = [r for r in refs if r.get("name") != canary]
        for r in refs:
            if r.get("name") == stable:
                r["weight"] = 100 - weight
        if weight > 0:
            refs.append({"name": canary, "port": port, "weight": weight})
        rule["backendRefs"] = refs
    return rules


class Reconciler:
    def __init__(
        self,
        kube: KubeAPI,
        settings: OperatorConfig,
        clock: Callable[[], float] = time.time,
        redis_factory: Callable[[str], Any] | None = None,
        resync: float = 60.0,
        notifier: Notifier | None = None,
    ) -> None:
        self.kube = kube
        # spec.notify's webhooks: queued here, sent by the notifier's own thread
        self.notifier = notifier or Notifier()
        self._hooks: dict[tuple[str, str, str], tuple[float, str]] = {}  # -> (read at, url)
        self.resync = resync
        self.settings = settings
        self.clock = clock
        self._redis: dict[str, Any] = {}
        self._redis_factory = redis_factory or (
            lambda url: connect(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        )
        self._apis: dict[tuple[str, str], tuple[float, bool]] = {}  # -> (asked at, served)
        self._secrets: dict[tuple[str, str, str], tuple[float, str]] = {}  # -> (read at, url)
        self._configs: dict[int, tuple[float, StoreConfig]] = {}  # id(client) -> (read at, it)
        # (id(client), the node holding the model's keys) -> what was read of its refusals
        self._full: dict[tuple[int, str], FullWatch] = {}

    # -- helpers ----------------------------------------------------------------------
    def redis_for(self, model: OnlineModel) -> Any:
        r = model.spec.redis
        if r.secretName:
            url = self._secret_url(model.namespace, r.secretName, r.secretKey)
        else:
            url = r.url or self.settings.redis_url or ""
        if not url:
            raise SpecError("spec.redis", "no url or secretRef, and the operator has no default")
        check_redis_url(url, "spec.redis.secretRef" if r.secretName else "spec.redis.url")
        if url not in self._redis:
            self._redis[url] = self._redis_factory(url)
        return self._redis[url]

    def _secret_url(self, namespace: str, name: str, key: str) -> str:
        """A Redis URL from a Secret, read again every `resync` seconds (not every turn)."""
        cached = self._secrets.get((namespace, name, key))
        now = self.clock()
        if cached is not None and now - cached[0] < self.resync:
            return cached[1]
        secret = self.kube.get("v1", "Secret", namespace, name)
        data = (secret or {}).get("data") or {}
        if key not in data:
            raise SpecError("spec.redis.secretRef", f"secret {name!r} has no key {key!r}")
        url = base64.b64decode(data[key]).decode()
        self._secrets[(namespace, name, key)] = (now, url)
        return url

    def _hook_url(self, namespace: str, ref: SecretKey) -> str:
        """A webhook's URL from its Secret, read again every `resync` seconds; raises
        :class:`Unresolved` naming the Secret (never the URL) when there is none."""
        key = (namespace, ref.name, ref.key)
        now = self.clock()
        cached = self._hooks.get(key)
        if cached is not None and now - cached[0] < self.resync:
            return cached[1]
        try:
            secret = self.kube.get("v1", "Secret", namespace, ref.name)
        except Exception as e:  # noqa: BLE001 - (an API error: Forbidden, a timeout)
            status = getattr(e, "status", None)
            raise Unresolved(f"Secret {ref.name!r} could not be read "
                             f"({status or type(e).__name__})") from None  # fmt: skip
        if secret is None:
            raise Unresolved(f"Secret {ref.name!r} not found")
        raw = (secret.get("data") or {}).get(ref.key)
        if raw is None:
            raise Unresolved(f"Secret {ref.name!r} has no key {ref.key!r}")
        try:
            url = base64.b64decode(raw, validate=True).decode().strip()
        except ValueError:
            raise Unresolved(f"Secret {ref.name!r} key {ref.key!r} is not base64 text") from None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Unresolved(f"Secret {ref.name!r} key {ref.key!r} holds no http(s) URL")
        self._hooks[key] = (now, url)
        return url

    def notify(self, model: OnlineModel, ev: Event, decided: Decided, event: EventFn) -> None:
        """Queue the webhooks of ``spec.notify`` that take this Event (:mod:`notify`) and
        return: nothing here waits on a receiver. A receiver without a URL (its Secret or
        key missing) is a ``NotificationFailed`` Event naming the Secret; nothing raises."""
        receivers = [n for n in model.spec.notify if ev.reason in n.events]
        if not receivers:
            return
        ns = model.namespace
        told = notice(ns, model.name, ev, decided)
        for n in receivers:
            where = f"Secret {n.url.name!r} key {n.url.key!r}"
            try:
                url = self._hook_url(ns, n.url)
                self.notifier.submit(Delivery(lane=f"{ns}/{n.url.name}/{n.url.key}",
                                              where=where, url=url, body=encode(told, n.format),
                                              model=(ns, model.name), reason=ev.reason))  # fmt: skip
            except Unresolved as e:
                NOTIFICATIONS.labels("unresolved").inc()
                log.warning("%s/%s: %s notification not sent: %s", ns, model.name, ev.reason, e)
                event("Warning", "NotificationFailed", f"{ev.reason} not sent: {e}")
            except Exception as e:  # noqa: BLE001 - a notification never fails a turn
                log.exception("%s/%s: %s notification to %s not queued", ns, model.name,
                              ev.reason, where)  # fmt: skip
                event("Warning", "NotificationFailed",
                      f"{ev.reason} not sent to {where}: {type(e).__name__}")  # fmt: skip

    def _check_hooks(self, model: OnlineModel, mem: ModelMemory, event: EventFn) -> None:
        """Once per spec: a ``NotificationFailed`` Event for each receiver whose URL cannot be
        read now, so a Secret missing is said when the spec is applied, not at the first
        rollback; and what the notifier could not deliver since the last turn."""
        key = mem.parsed[0] if mem.parsed is not None else None
        if model.spec.notify and mem.hooks_read != key:
            mem.hooks_read = key
            for i, n in enumerate(model.spec.notify):
                try:
                    self._hook_url(model.namespace, n.url)
                except Unresolved as e:
                    event("Warning", "NotificationFailed",
                          f"spec.notify[{i}]: {e}: its notifications cannot be sent")  # fmt: skip
        for why in self.notifier.failures(model.namespace, model.name):
            event("Warning", "NotificationFailed", why)

    def has_api(self, group_version: str, plural: str) -> bool:
        """Whether the cluster serves a kind (the Prometheus Operator's monitors, Gateway
        API routes): once served, kept; not served, asked again every `resync` seconds, so
        one installed after the operator started is used without a restart."""
        key = (group_version, plural)
        now = self.clock()
        cached = self._apis.get(key)
        if cached is None or (not cached[1] and now - cached[0] >= self.resync):
            cached = self._apis[key] = (now, self.kube.has_api(group_version, plural))
        return cached[1]

    def model_of(self, model: OnlineModel, manifest: dict[str, Any], rev: str,
                 mem: ModelMemory) -> tuple[OnlineModel, dict[str, Any]]:  # fmt: skip
        """The manifest a revision runs: the spec now, or the one its ConfigMap keeps."""
        if rev == model.revision:
            return model, manifest
        if rev not in mem.models:
            cm = self.kube.get("v1", "ConfigMap", model.namespace, f"{model.name}-{rev}")
            if cm is None:
                log.warning("%s: revision %s has no ConfigMap; using the spec", model.name, rev)
                return model, manifest
            doc = yaml.safe_load(cm["data"]["model.yaml"])
            mem.models[rev] = (parse(doc), doc)
        return mem.models[rev]

    # -- observe ----------------------------------------------------------------------
    def observe(self, model: OnlineModel, status: RolloutStatus, r: Any) -> Sight:
        """The stable pointers, the health summary, the routing hash, the retired revisions,
        the stable learner's lag, and what a store reset would change: the epoch token, the
        active revisions' StartWords and whether they have pointers, whether the
        lastGood version the status names (:func:`restorable`) is still stored, and the
        faults of the stable revision's pods and of the canary's the status names, aborted
        or not (an aborted canary's say why while the status names it), and the memory their
        learners last reported (:class:`tideline.memory.MemoryUse`)."""
        keys = Keys(model.namespace, model.name)
        stable = status.stableRevision or model.revision
        canary = status.canaryRevision if not status.aborted else None
        good = restorable(status)
        watched = [stable, *[rev for rev in (status.canaryRevision,) if rev and rev != stable]]
        try:
            p = r.pipeline(transaction=False)
            p.hgetall(keys.pointers(stable))
            p.get(keys.health)
            p.hgetall(keys.routing)
            p.zrange(keys.retired, 0, -1, withscores=True)
            p.hget(keys.learner(stable), LearnerStatus.LAG)
            p.get(keys.epoch)
            p.get(keys.restores)
            p.hget(keys.control(stable), StartWord.FIELD)
            for rev in watched:
                p.hgetall(keys.faults(rev))
            for rev in watched:
                p.hmget(keys.learner(rev), *MEMORY_FIELDS)
            if canary:
                p.exists(keys.pointers(canary))
                p.hget(keys.control(canary), StartWord.FIELD)
                p.hget(keys.learner(canary), LearnerStatus.BACKTEST)
            if good is not None:
                p.exists(keys.version(stable, good))
            pointers, health, routing, retired, lag, epoch, restores, word, *more = p.execute()
        except redis.RedisError as e:
            log.warning("%s/%s: Redis unavailable: %s", model.namespace, model.name, e)
            return Sight()
        faults = tuple(f for raw in more[: len(watched)] for f in ModelFault.of_hash(raw))
        more = more[len(watched) :]
        uses = [MemoryUse.of_hash(rev, raw) for rev, raw in zip(watched, more, strict=False)]
        more = more[len(watched) :]
        words = {stable: StartWord.decode(word)}
        empty = {stable} if not pointers else set()
        backtest = None
        if canary:
            has, canary_word, raw_backtest, *more = more
            words[canary] = StartWord.decode(canary_word)
            backtest = Backtest.decode(raw_backtest)
            if backtest is None and has:  # published with no report (an older runtime)
                backtest = Backtest(done=True)
            if not has:
                empty.add(canary)
        return Sight(
            pointers=Pointers.from_hash(pointers),
            empty=not pointers,
            health=h.decode(health),  # None when missing or not a summary: decisions wait
            routing=routing,
            retired={rev.decode(): at for rev, at in retired},
            lag=LearnerStatus.lag_of(lag),
            store=StoreSeen(
                epoch=epoch.decode() if epoch is not None else None,
                restores=int(restores) if restores is not None and restores.isdigit() else 0,
                kept=bool(more and more[0]),
                words=words,
                empty=frozenset(empty),
            ),
            faults=faults,
            memory=tuple(u for u in uses if u is not None),
            backtest=backtest,
        )

    def store_config(self, r: Any, now: float) -> StoreConfig | None:
        """Redis's eviction policy and persistence, read once a resync per Redis (not every
        turn); None while Redis cannot be reached."""
        cached = self._configs.get(id(r))
        if cached is not None and now - cached[0] < self.resync:
            return cached[1]
        try:
            got: dict[str, str] = {}
            for name in ("maxmemory-policy", "appendonly", "save"):  # one a call: Redis < 7
                got.update({str(k): str(v) for k, v in r.config_get(name).items()})
            config = StoreConfig(
                policy=got.get("maxmemory-policy", "noeviction"),
                appendonly=got.get("appendonly") == "yes",
                save=got.get("save", ""),
            )
        except redis.ResponseError:  # CONFIG refused or renamed (a managed Redis): not an error
            config = StoreConfig(readable=False)
        except redis.RedisError as e:
            log.warning("Redis configuration not read: %s", e)
            return None
        self._configs[id(r)] = (now, config)
        return config

    def store_full(self, r: Any, keys: Keys, now: float) -> str | None:
        """Whether the Redis holding the model refuses writes for want of memory: its count of
        OOM replies (``INFO errorstats``, Redis >= 6.2) grew within ``FULL_HOLD`` seconds, or it
        uses all of its maxmemory. Read every ``FULL_READ`` seconds, not every turn. The
        message for the condition, or None."""
        # one reading per Redis server, whatever number of models it holds (on a cluster, per
        # node): every model of one Redis is refused alike
        node = r.get_node_from_key(keys.prefix).name if hasattr(r, "get_node_from_key") else ""
        w = self._full.setdefault((id(r), node), FullWatch())
        if now - w.read_at >= FULL_READ:
            try:
                errors = node_info(r, keys.prefix, "errorstats")
                memory = node_info(r, keys.prefix, "memory")
            except redis.RedisError:
                return w.message if now - w.grew_at <= FULL_HOLD else None
            oom = errors.get("errorstat_OOM")
            count = int(oom.get("count", 0)) if isinstance(oom, dict) else 0
            if w.count is not None and count > w.count:
                w.grew_at, w.refused = now, w.refused + count - w.count
            elif now - w.grew_at > FULL_HOLD:
                w.refused = 0
            w.count, w.read_at = count, now
            used, limit = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
            at_limit = limit > 0 and used >= limit
            policy = memory.get("maxmemory_policy", "")
            w.message = (
                f"Redis refuses writes for want of memory ({w.refused} refused lately; used "
                f"{used >> 20} MiB of maxmemory {limit >> 20} MiB, {policy}): labels wait, the "
                "learner and the monitor wait; raise maxmemory, or shorten labelWindow or "
                "keepVersions"
            )
            if at_limit and now - w.grew_at > FULL_HOLD and policy == "noeviction":
                w.grew_at = now  # (full, whether or not a write was refused yet)
        return w.message if now - w.grew_at <= FULL_HOLD else None

    # -- the turn ---------------------------------------------------------------------
    def turn(
        self,
        body: dict[str, Any],
        mem: ModelMemory,
        children: Iterable[ChildState],
        event: EventFn,
    ) -> dict[str, Any] | None:
        """One model's turn; the status to write, or None when it did not change."""
        start = time.perf_counter()
        now = self.clock()
        meta = body["metadata"]
        generation = int(meta.get("generation") or 1)
        before = current_status(body, mem)  # the resource's: typed here, and back at the end
        was = RolloutStatus.from_status(before)
        manifest: dict[str, Any] = {
            k: body[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in body
        }
        try:
            key = (meta.get("uid"), generation)
            if mem.parsed is None or mem.parsed[0] != key:
                mem.parsed = (key, parse(manifest))  # the spec changes only with generation
            model = mem.parsed[1]
            broken = builders.policy_violation(model, self.settings)
            if broken is not None:
                raise PolicyViolation(*broken)
            r = self.redis_for(model)
            new = self._turn(model, manifest, was, mem, list(children), r, event, now, generation)
            RECONCILES.labels("ok").inc()
        except PolicyViolation as e:
            new = self._refused(was, e.path, e.reason, "PolicyViolation", "policy", str(e),
                                generation, now, event)  # fmt: skip
        except SpecError as e:
            new = self._refused(was, e.path, e.reason, "InvalidSpec", "invalid", str(e),
                                generation, now, event)  # fmt: skip
        except ResourceExists as e:
            # as the Deployment controller does with a ReplicaSet it does not own: no
            # take-over, no delete; the turn retries until the name is free
            new = self._refused(was, f"{e.kind} {e.name}", str(e), "ResourceExists", "conflict",
                                str(e), generation, now, event)  # fmt: skip
        DECISION.observe(time.perf_counter() - start)
        status = new.to_status()
        if _same(before, status):
            return None
        mem.status = status
        return status

    @staticmethod
    def _refused(before: RolloutStatus, path: str, reason: str, why: str, result: str,
                 message: str, generation: int, now: float, event: EventFn) -> RolloutStatus:  # fmt: skip
        """A turn that cannot proceed: Degraded for ``why``, one Event when that is news."""
        new = invalid(before, path, reason, generation, now, why)
        if new != before:
            event("Warning", why, message)
        RECONCILES.labels(result).inc()
        return new

    def _turn(self, model: OnlineModel, manifest: dict[str, Any], before: RolloutStatus,
              mem: ModelMemory, children: list[ChildState], r: Any, event: EventFn, now: float,
              generation: int) -> RolloutStatus:  # fmt: skip
        self._check_hooks(model, mem, event)
        if not mem.migrated:
            try:
                migrate_keys(r, Keys(model.namespace, model.name))
                mem.migrated = True
            except redis.RedisError as e:  # the turn goes on; the next one tries again
                log.warning("%s/%s: keys not migrated: %s", model.namespace, model.name, e)
        sight = self.observe(model, before, r)
        pointers, health, retired, lag = sight.pointers, sight.health, sight.retired, sight.lag
        stable_rev = before.stableRevision or model.revision
        servers = [c for c in children if c.component == "server" and c.revision == stable_rev]
        ready = sum(c.ready for c in servers)
        want = sum(c.replicas for c in servers)
        others_ready = all(c.ready >= c.replicas for c in children if c.component != "server")
        observed = Observed(
            revision=model.revision,
            annotations=dict(manifest["metadata"].get("annotations") or {}),
            served=pointers.served,
            last_good=pointers.lastGood,
            latest=pointers.latest,
            pinned=None if sight.empty else pointers.pinned,
            pin=_pin(pointers, stable_rev),
            routed_stable=Routing.from_hash(sight.routing, default_stable="").stable or None,
            replicas_ready=bool(servers) and ready >= want and others_ready,
            ready_replicas=ready,
            generation=generation,
            store=sight.store,
            # (not asked of a Redis that did not answer this turn: the last reading stands)
            store_config=self.store_config(r, now) if sight.store is not None else None,
            store_full=self.store_full(r, Keys(model.namespace, model.name), now)
            if sight.store is not None
            else None,
            faults=sight.faults,
            memory=sight.memory,
            backtest=sight.backtest,
        )
        decision = decide(model.spec, before, observed, health, now)
        st = decision.status
        # the stable servers' pods, for the scale subresource (an HPA on the OnlineModel)
        st.selector = ",".join(
            f"{k}={v}" for k, v in builders.selector(model, "server", st.stableRevision).items()
        )
        if lag is not None and now - mem.lag_at >= model.spec.rollout.analysis.interval:
            # records the stable learner is behind: refreshed each analysis interval, not
            # each turn (a status write a second per model would be churn for nothing)
            st.learnerLag, mem.lag_at = lag, now
        if st.canaryRevision and not st.aborted:
            # a canary's learner starts from the stable revision's when its model can
            stable, _ = self.model_of(model, manifest, st.stable, mem)
            st.canaryWarmStart = st.stable if warm_start_compatible(stable, model) else None
        decided = Decided(before, st, now)
        for action in decision.actions:
            self._act(model, action, r, event, retired, decided)
        removed = self._children(model, manifest, st, mem, children, now)
        self._routing(model, manifest, st, mem, sight.routing, r, now)
        if removed or retired:
            self._forget_retired(model, st, r, removed, retired, now)
        return st

    # -- actions ----------------------------------------------------------------------
    def _act(self, model: OnlineModel, a: Action, r: Any, event: EventFn,
             retired: Mapping[str, float], decided: Decided) -> None:  # fmt: skip
        """Apply one action (canary weights and removed revisions are no actions: the
        children and the routing hash follow the new status, see :meth:`_children` - a
        removed revision goes after its successor's objects are applied, so ``<name>``
        always has servers). An Event goes to the webhooks that take it too (queued:
        :meth:`notify`)."""
        ACTIONS.labels(a.kind).inc()
        store = ModelStore(r, model.namespace, model.name)
        keys = store.keys
        try:
            match a:
                case Event(type=kind, reason=reason, message=message):
                    event(kind, reason, message)
                    self.notify(model, a, decided, event)
                    if reason == "RolloutAborted":
                        ABORTS.inc()
                case RollbackTo(revision=rev, to=to, pin=rb):
                    ROLLBACKS.inc()
                    # the pin's details first, then the pin: a loop that restarts before the
                    # status is written reads them back and unpins as this one would
                    pin = Pointers.pin_hash(
                        from_=rb.from_, to=to, at=rb.at, reason=rb.reason, latest=rb.latest
                    )
                    r.hset(keys.pointers(rev), mapping=pin)
                    store.set_pointer(rev, "served", to, pin=True)
                    # the learner goes on from the version served again (the pause policy
                    # arrives as its own PauseLearning)
                    r.hset(keys.control(rev), mapping=LearnerControl.reset_hash(to))
                case Unpin(revision=rev, version=version):
                    store.set_pointer(rev, "served", version, pin=False)
                case (
                    Prove(revision=rev, version=version)
                    | RestoreLastGood(revision=rev, version=version)
                ):
                    store.set_pointer(rev, "lastGood", version)
                case Adapt(revision=rev, at=at):
                    # the learner adapts faster for a while (see LearnerProcess._control)
                    r.hset(keys.control(rev), mapping=LearnerControl.adapt_hash(at))
                case PauseLearning(revision=rev, paused=paused):
                    r.hset(keys.control(rev), mapping=LearnerControl.paused_hash(paused))
                case Promote(revision=rev, previous=previous):
                    PROMOTIONS.inc()
                    log.info("%s/%s: revision %s promoted over %s",
                             model.namespace, model.name, rev, previous)  # fmt: skip
                case Epoch(token=token):
                    r.set(keys.epoch, token, nx=True)
                case GiveStartWord(revision=rev, word=word):
                    # HSET, not HSETNX: decide compared the word with the one read this turn,
                    # so a word in place is not written again and a stale one is corrected
                    if word is None:
                        r.hdel(keys.control(rev), StartWord.FIELD)
                    else:
                        r.hset(keys.control(rev), StartWord.FIELD, word.encode())
                case StartCanary(revision=rev):
                    if rev in retired:
                        # a revision back (a reverted spec) starts afresh, warm from the
                        # stable, not from what it had learned when it left
                        store.forget(rev)
                case _:
                    assert_never(a)
        except (StoreError, redis.RedisError) as e:
            log.warning("%s/%s: %s failed: %s", model.namespace, model.name, a.kind, e)
            failed = Event("Warning", "ActionFailed", f"{a.kind}: {e}")
            event(failed.type, failed.reason, failed.message)
            self.notify(model, failed, decided, event)

    def _forget_retired(self, model: OnlineModel, st: RolloutStatus, r: Any, removed: set[str],
                        retired: Mapping[str, float], now: float) -> None:  # fmt: skip
        """Note the revisions removed this turn; forget those removed a grace ago."""
        store = ModelStore(r, model.namespace, model.name)
        # an aborted canary keeps its keys (to look into) until the spec moves on
        active = {st.stableRevision, st.canaryRevision}
        try:
            for rev in removed:
                store.retire(rev, now)
            for rev, at in retired.items():
                if rev not in active and now - at >= self.settings.retired_grace:
                    n = store.forget(rev)
                    log.info("%s/%s: revision %s forgotten (%d keys)",
                             model.namespace, model.name, rev, n)  # fmt: skip
        except redis.RedisError as e:
            log.warning("%s/%s: retired revisions not cleaned up: %s",
                        model.namespace, model.name, e)  # fmt: skip

    def remove_revision(self, model: OnlineModel, revision: str, uid: str | None) -> None:
        """Delete a revision's Deployments, ConfigMap and canary Service (those it owns).

        The stable Service ``<name>`` is re-pointed at the new stable revision
        by the same turn, never removed. An object with the labels that this
        OnlineModel does not own is not touched.
        """
        selector = f"tideline.dev/model={model.name},tideline.dev/revision={revision}"
        for api_version, kind in REVISION_KINDS:
            for obj in self.kube.list(api_version, kind, model.namespace, selector):
                name = obj["metadata"]["name"]
                if not (kind == "Service" and name == model.name) and owned_by(obj, uid):
                    self.kube.delete(api_version, kind, model.namespace, name)

    # -- level-based children and routing ---------------------------------------------
    def desired(self, model: OnlineModel, manifest: dict[str, Any], st: RolloutStatus,
                mem: ModelMemory) -> list[dict[str, Any]]:  # fmt: skip
        """The objects the model's status asks for (read, never written here)."""
        s = self.settings
        stable_rev = st.stable
        stable, stable_manifest = self.model_of(model, manifest, stable_rev, mem)
        replicas = None if model.spec.serving.autoscaling else model.spec.serving.replicas
        server = builders.build_server(stable, s, stable_rev, replicas or 0)
        if replicas is None:
            server["spec"].pop("replicas")
        out = [
            builders.build_config_map(stable, stable_manifest, stable_rev),
            builders.build_learner(stable, s, stable_rev, warm_start_from=st.stableWarmStart),
            server,
            builders.build_service(model, stable_rev),
            builders.build_monitor(stable, s, stable_rev),
            builders.build_pdb(model),
        ]
        hpa = builders.build_hpa(model, stable_rev)
        if hpa is not None:
            out.append(hpa)
        secret = builders.build_redis_secret(model, s)
        if secret is not None:
            out.insert(0, secret)  # before the pods that read it
        policy = builders.build_network_policy(model)
        if policy is not None:
            out.append(policy)
        if self.has_api("monitoring.coreos.com/v1", "servicemonitors"):
            out.append(builders.build_service_monitor(model, s))
        if self.has_api("monitoring.coreos.com/v1", "podmonitors"):
            out.append(builders.build_pod_monitor(model, s))
        canary_rev = st.canaryRevision
        if canary_rev and not st.aborted:
            out += [
                builders.build_config_map(model, manifest, canary_rev),
                builders.build_learner(model, s, canary_rev, warm_start_from=st.canaryWarmStart),
            ]
            if self.canary_pods(model, stable):
                out += [
                    builders.build_server(model, s, canary_rev, max(1, model.spec.serving.replicas // 2)),
                    builders.build_service(model, canary_rev, canary=True),
                ]  # fmt: skip
        return out

    def canary_pods(self, canary: OnlineModel, stable: OnlineModel) -> bool:
        """A canary has its own servers when its image differs or a Gateway splits traffic."""
        s = self.settings
        return (
            builders.image_of(canary, s) != builders.image_of(stable, s)
            or canary.spec.rollout.trafficRouting != "builtin"
        )

    def _children(self, model: OnlineModel, manifest: dict[str, Any], st: RolloutStatus,
                  mem: ModelMemory, children: list[ChildState], now: float) -> set[str]:  # fmt: skip
        """Apply what the status wants; the revisions whose objects were removed."""
        # Children depend on the spec and the revisions only: rebuild them when those
        # change, and every `resync` seconds (re-creating what someone deleted).
        md = manifest["metadata"]
        key = (md.get("uid"), md.get("generation"), st.stableRevision,
               st.canaryRevision, bool(st.aborted))  # fmt: skip
        if key != mem.desired_key or now - mem.desired_at >= self.resync:
            if self._apply_desired(model, manifest, st, mem):  # (False: held back, see adopt)
                mem.desired_key, mem.desired_at = key, now
        elif mem.adoption is not None:  # pods without the key may still write: sweep again
            self.adopt(model, st, mem)
        return self._remove_stale(model, st, mem, children, md.get("uid"))

    def signing_key(self, model: OnlineModel, owner: dict[str, Any], mem: ModelMemory,
                    st: RolloutStatus) -> bool:  # fmt: skip
        """The model's signing key Secret (:func:`builders.build_signing_secret`): created
        when missing, with a new key of 32 random bytes; an existing one is never rewritten
        - every version in the store was signed with its key. Looked at once per process
        (and again after a revision's objects were removed), not every resync: a Secret
        deleted by hand comes back at the operator's next start with a *new* key, and the
        versions signed with the old one are refused from then on. One of that name that
        this OnlineModel does not own is left alone (:class:`ResourceExists`).

        A key made here first adopts the store's unsigned blobs (:meth:`adopt`), and so does
        one found that no pod of the model reads yet (made by a process that stopped before
        its adoption was done). True when the pods may be given the key; False while they
        wait for that adoption."""
        name = builders.signing_secret_name(model)
        seen = ("Secret", name)
        if mem.applied.get(seen) != "exists":
            existing = self.kube.get("v1", "Secret", model.namespace, name)
            made: bytes | None = None
            if existing is None:
                text = secrets.token_urlsafe(32)
                obj = builders.build_signing_secret(model, text)
                obj["metadata"]["ownerReferences"] = [owner]
                existing = self.kube.create(obj)
                if existing is None:  # made meanwhile (by another operator's turn): that one counts
                    existing = self.kube.get("v1", "Secret", model.namespace, name)
                else:
                    made = text.encode()
                    APPLIES.labels("Secret").inc()
                    log.info("%s/%s: signing key Secret %s created", model.namespace, model.name,
                             name)  # fmt: skip
            if existing is None:  # (gone again meanwhile: the next pass makes it)
                return True
            if not owned_by(existing, owner["uid"]):
                raise ResourceExists("Secret", name, model.name)
            if made is None and mem.adoption is None and not self._key_given(model, owner["uid"]):
                made = _secret_key(existing)
            if made is not None:
                try:
                    signer = Signer(made, f"{model.namespace}/{model.name}")
                    mem.adoption = Adoption(signer)
                except ValueError as e:  # (a key too short: the pods refuse it as well)
                    log.warning("%s/%s: %s", model.namespace, model.name, e)
            mem.applied[seen] = "exists"
        return self.adopt(model, st, mem)

    def adopt(self, model: OnlineModel, st: RolloutStatus, mem: ModelMemory) -> bool:
        """Seal with a key just made the store's unsigned blobs of built-in learners, written
        before the model had one (:func:`tideline.store.adopt_unsigned`; why: the
        adoption in :mod:`tideline.signing`); True when the pods may be given the key.

        The first sweep succeeds before any pod gets the key: until then the children are
        held back (False) - the pods that run go on as they are, without it - and each turn
        tries again (Redis unreachable: said once). Then for :data:`ADOPT_SECONDS` every
        turn sweeps again: the pods without the key run until their Deployment replaces
        them, and what they write meanwhile (a learner's last checkpoint, at its SIGTERM) is
        sealed too. A sweep reads four bytes of each blob, and the unsigned ones whole. The
        sweeps end with the window, or with the process: a new one finds the key its pods
        read, and adopts nothing."""
        a = mem.adoption
        if a is None:
            return True
        now = self.clock()
        if a.until is not None and now >= a.until:
            mem.adoption = None
            return True
        where = f"{model.namespace}/{model.name}"
        revisions = {rev for rev in (model.revision, st.stableRevision, st.canaryRevision) if rev}
        try:
            done = adopt_unsigned(self.redis_for(model), Keys(model.namespace, model.name),
                                  a.signer, revisions,
                                  lambda rev: self.revision_algorithm(model, rev, mem))  # fmt: skip
        except redis.RedisError as e:
            if a.until is None and not a.said:
                a.said = True
                log.warning("%s: Redis unavailable (%s): its store's unsigned blobs are not sealed "
                            "with its new signing key yet; its pods get the key once they are "
                            "(tried again each turn)", where, e)  # fmt: skip
            return a.until is not None
        first = a.until is None
        if first:
            a.until = now + ADOPT_SECONDS
        if first and not done.any:
            log.info("%s: no unsigned blobs in its store to adopt under its new signing key", where)
        elif first or done.sealed or done.changed:
            log.info("%s: unsigned blobs adopted under its new signing key%s: %s", where,
                     "" if first else " (written since by pods without it)", done)  # fmt: skip
        return True

    def revision_algorithm(self, model: OnlineModel, rev: str, mem: ModelMemory) -> str | None:
        """The algorithm a revision's pods run, as its manifest says: the spec's for the spec's
        revision, its ConfigMap's otherwise; None when there is none (unlike
        :meth:`model_of`, never the spec's in its place)."""
        if rev == model.revision:
            return model.spec.model.algorithm
        if rev not in mem.models:
            cm = self.kube.get("v1", "ConfigMap", model.namespace, f"{model.name}-{rev}")
            try:
                doc = yaml.safe_load(cm["data"]["model.yaml"]) if cm is not None else None
                if doc is None:
                    return None
                mem.models[rev] = (parse(doc), doc)
            except (KeyError, TypeError, yaml.YAMLError, SpecError):
                return None
        return mem.models[rev][0].spec.model.algorithm

    def _key_given(self, model: OnlineModel, uid: str) -> bool:
        """Whether a Deployment of the model gives its pods the signing key."""
        selector = f"tideline.dev/model={model.name}"
        for d in self.kube.list("apps/v1", "Deployment", model.namespace, selector):
            pod = ((d.get("spec") or {}).get("template") or {}).get("spec") or {}
            env = [e for c in pod.get("containers") or [] for e in c.get("env") or []]
            if owned_by(d, uid) and any(e.get("name") == KEY_ENV for e in env):
                return True
        return False

    def _apply_desired(self, model: OnlineModel, manifest: dict[str, Any], st: RolloutStatus,
                       mem: ModelMemory) -> bool:  # fmt: skip
        """Apply the children the status asks for; False when they were held back (the pods
        wait until the store's blobs are adopted under a key just made: :meth:`adopt`)."""
        owner = _owner(manifest)
        uid = owner["uid"]
        if not self.signing_key(model, owner, mem, st):  # before the pods that read it
            return False
        desired = self.desired(model, manifest, st, mem)
        canary_service = ("Service", f"{model.name}-canary")
        # a promoted canary's Service goes: its revision lives on as stable behind `<name>`
        if canary_service not in {(o["kind"], o["metadata"]["name"]) for o in desired}:
            existing = self.kube.get("v1", "Service", model.namespace, canary_service[1])
            if owned_by(existing, uid) and self.kube.delete(
                "v1", "Service", model.namespace, canary_service[1]
            ):
                mem.applied.pop(canary_service, None)
        for obj in desired:
            obj["metadata"]["ownerReferences"] = [owner]
            key = (obj["kind"], obj["metadata"]["name"])
            digest = _digest(obj)
            if mem.applied.get(key) == digest:
                continue
            existing = self.kube.get(obj["apiVersion"], obj["kind"], model.namespace, key[1])
            if existing is not None and not owned_by(existing, uid):
                raise ResourceExists(obj["kind"], key[1], model.name)
            self.kube.apply(obj)
            APPLIES.labels(obj["kind"]).inc()
            mem.applied[key] = digest
        return True

    def _remove_stale(self, model: OnlineModel, st: RolloutStatus, mem: ModelMemory,
                      children: list[ChildState], uid: str | None) -> set[str]:  # fmt: skip
        stale = {c.revision for c in children if c.revision} - active_revisions(st)
        servers = [c for c in children if c.component == "server"
                   and c.revision == st.stableRevision]  # fmt: skip
        if stale and not (servers and all(c.ready >= c.replicas for c in servers)):
            # a promoted revision's servers first become ready; the old ones answer meanwhile
            return set()
        for rev in stale:
            self.remove_revision(model, rev, uid)
            mem.applied.clear()  # re-apply once: a no-op at the API for what is unchanged
            mem.desired_key = None
            mem.models.pop(rev, None)
        return stale

    def _routing(self, model: OnlineModel, manifest: dict[str, Any], st: RolloutStatus,
                 mem: ModelMemory, current: dict[bytes, bytes], r: Any, now: float) -> None:  # fmt: skip
        canary = st.canaryRevision if not st.aborted else None
        weight = int(st.canaryWeight or 0) if canary else 0
        stable, _ = self.model_of(model, manifest, st.stable, mem)
        url = None
        if canary and self.canary_pods(model, stable):
            url = f"http://{model.name}-canary.{model.namespace}.svc:{builders.HTTP_PORT}"
        want = Routing(
            stable=st.stable,
            canary=canary,
            weight=weight,
            shadow=bool(canary and model.spec.rollout.shadow),
            canary_url=url,
        ).to_hash()
        if current != want:  # (as written, field for field: a hash that differs is rewritten)
            try:
                r.hset(Keys(model.namespace, model.name).routing, mapping=want)
            except redis.RedisError as e:
                log.warning("%s/%s: routing not written: %s", model.namespace, model.name, e)
        route = model.spec.rollout.trafficRouting
        last = mem.route_at
        due = last is None or last[0] != weight or now - last[1] >= self.resync
        if (
            route != "builtin"
            and due
            and self.has_api("gateway.networking.k8s.io/v1", "httproutes")
        ):
            self._gateway(model, route, weight)
            mem.route_at = (weight, now)

    def _gateway(self, model: OnlineModel, route_name: str, weight: int) -> None:
        route = self.kube.get(
            "gateway.networking.k8s.io/v1", "HTTPRoute", model.namespace, route_name
        )
        if route is None:
            raise SpecError("spec.rollout.trafficRouting.gatewayAPI.httpRoute",
                            f"HTTPRoute {route_name!r} does not exist")  # fmt: skip
        rules = route_weights(route, model.name, f"{model.name}-canary", weight, builders.HTTP_PORT)
        if rules != (route.get("spec") or {}).get("rules"):
            self.kube.merge_patch(route, {"spec": {"rules": rules}})


def _pin(pointers: Pointers, revision: str) -> Rollback | None:
    """The rollback that pinned ``served``, as it wrote itself beside the pin."""
    if not pointers.pinned or pointers.pinTo is None or pointers.pinAt is None:
        return None
    return Rollback(pointers.pinAt, revision, pointers.pinFrom, pointers.pinTo,
                    pointers.pinReason, pointers.pinLatest)  # fmt: skip


def _secret_key(secret: Mapping[str, Any]) -> bytes | None:
    """The key in a signing key Secret, as its pods read it; None when it has none."""
    value = (secret.get("data") or {}).get(builders.SIGNING_SECRET_KEY)
    try:
        return base64.b64decode(value, validate=True) if isinstance(value, str) else None
    except ValueError:
        return None


def _owner(manifest: dict[str, Any]) -> dict[str, Any]:
    md = manifest["metadata"]
    return {
        "apiVersion": manifest["apiVersion"],
        "kind": manifest["kind"],
        "name": md["name"],
        "uid": md["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def current_status(body: Mapping[str, Any], mem: ModelMemory) -> dict[str, Any]:
    """The status a turn starts from: the last one this process wrote, else the object's."""
    return mem.status if mem.status is not None else _own(dict(body.get("status") or {}))


def _own(status: dict[str, Any]) -> dict[str, Any]:
    """The operator's part of a status read back from the API (kopf keeps its own keys)."""
    return {k: v for k, v in status.items() if k != "kopf"}


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return _own(a) == _own(b)


def status_patch(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """A merge patch from ``before`` to ``after``: removed keys become null."""
    patch: dict[str, Any] = {k: v for k, v in after.items() if before.get(k) != v}
    for k in before:
        if k not in after and k != "kopf":
            patch[k] = None
    return patch
