"""``kubectl tideline deadletters``: the model's Redis found as its pods find it, and the last
dead letters read from it.

The learner Deployment the operator made for the model holds the Redis URL in its
container's env (``TIDELINE_REDIS_URL``, from a Secret: :func:`tideline_operator.builders.
build_learner`); :func:`redis_url_of` reads it from there, given a way to read a Secret's
key. :func:`read` takes the newest entries of :attr:`tideline.contracts.Keys.deadletter`.
The only module of the plugin that talks to Redis; a URL it prints has no password
(:func:`redact`).

Examples
--------
>>> redact("redis://:s3cret@redis.data.svc:6379/0"), redact("redis://redis:6379")
('redis://:***@redis.data.svc:6379/0', 'redis://redis:6379')
>>> port_forward_hint("redis://:s3cret@redis.data.svc.cluster.local:6380/2", "team")
'kubectl port-forward -n data svc/redis 6380:6380, then --redis-url redis://:PASSWORD@127.0.0.1:6380/2'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tideline.contracts import DeadLetter, Keys

REDIS_ENV = "TIDELINE_REDIS_URL"  # (tideline_operator.builders._redis_env)
PAGE = 500  # entries read at a time, newest first, while --reason filters
CONNECT_TIMEOUT = 3.0  # seconds


class NoRedis(Exception):
    """The model's Redis cannot be found or reached: the message says which and how to help it."""


def redact(url: str) -> str:
    """``url`` with its password (if any: ``user:password@``, or redis-py's ``?password=``)
    as ``***``.

    >>> redact("rediss://u:pw@h:1/0?password=pw&ssl_cert_reqs=none")
    'rediss://u:***@h:1/0?password=***&ssl_cert_reqs=none'
    >>> redact("redis://:pw@h:notaport/0")
    'redis://:***@h:notaport/0'
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    query = "&".join(
        f"{k}=***" if k.lower() == "password" else (f"{k}={v}" if v or "=" in pair else k)
        for pair in parts.query.split("&")
        if pair
        for k, _, v in [pair.partition("=")]
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def port_forward_hint(url: str, namespace: str) -> str:
    """What to run to reach ``url``'s Redis from here: a Service name (``svc.ns.svc...``)
    forwarded to the same port on loopback."""
    parts = urlsplit(url)
    try:
        port = parts.port or 6379
    except ValueError:  # (not a port: the hint says the usual one)
        port = 6379
    host = parts.hostname or "redis"
    labels = host.split(".")
    if host.replace(".", "").isdigit() or ":" in host:  # (an address: which Service, unknown)
        svc, ns = "<the Redis Service>", namespace
    elif len(labels) == 2 or (len(labels) > 2 and labels[2] == "svc"):  # svc.ns[.svc...]
        svc, ns = labels[0], labels[1]
    else:
        svc, ns = labels[0], namespace
    auth = ":PASSWORD@" if parts.password is not None else ""
    scheme = parts.scheme or "redis"
    return (f"kubectl port-forward -n {ns} svc/{svc} {port}:{port}, then --redis-url "
            f"{scheme}://{auth}127.0.0.1:{port}{parts.path}")  # fmt: skip


def learner_of(deployments: Sequence[Mapping[str, Any]], revision: str | None) -> Mapping[str, Any]:
    """The learner Deployment of the stable revision (else any of the model's)."""

    def rev(d: Mapping[str, Any]) -> str | None:
        return ((d.get("metadata") or {}).get("labels") or {}).get("tideline.dev/revision")

    mine = [d for d in deployments if rev(d) == revision]
    return (mine or list(deployments))[0]


def redis_url_of(
    deployment: Mapping[str, Any], secret: Callable[[str, str], str]
) -> tuple[str, str]:
    """The Redis URL the learner's container gets, and where it is kept (for an error):
    a plain ``value``, or ``secret(name, key)`` for a ``secretKeyRef``."""
    name = (deployment.get("metadata") or {}).get("name", "?")
    containers = ((deployment.get("spec") or {}).get("template") or {}).get("spec", {}).get(
        "containers") or []  # fmt: skip
    for c in containers:
        for env in c.get("env") or []:
            if env.get("name") != REDIS_ENV:
                continue
            if env.get("value"):
                return str(env["value"]), f"Deployment {name}"
            ref = (env.get("valueFrom") or {}).get("secretKeyRef") or {}
            if ref.get("name") and ref.get("key"):
                return secret(ref["name"], ref["key"]), f"Secret {ref['name']}, key {ref['key']}"
    raise NoRedis(f"the Deployment {name} has no {REDIS_ENV} in its env: name the Redis "
                  "with --redis-url")  # fmt: skip


def _errors() -> tuple[type[BaseException], ...]:
    """What a Redis client raises when its Redis cannot be used (a cluster's own errors are
    not ``RedisError``s)."""
    import redis
    from redis.exceptions import RedisClusterException

    return redis.RedisError, RedisClusterException, OSError, ValueError


def _said(e: BaseException, url: str) -> str:
    """An error's first line, with no password of ``url`` in it."""
    said = str(e).splitlines()[0] if str(e) else type(e).__name__
    password = urlsplit(url).password
    return said.replace(url, redact(url)).replace(password, "***") if password else said


def connect(url: str, namespace: str) -> Any:
    """A client of the Redis at ``url`` (a cluster node: the cluster), answering, or
    :class:`NoRedis` naming the URL (no password) and the way round."""
    from tideline.store import connect as store_connect

    try:
        client = store_connect(url, socket_connect_timeout=CONNECT_TIMEOUT,
                               socket_timeout=10.0)  # fmt: skip
        client.ping()
        return client
    except _errors() as e:
        raise NoRedis(f"cannot reach the model's Redis at {redact(url)}: {_said(e, url)}; from "
                      f"outside the cluster: {port_forward_hint(url, namespace)}") from None  # fmt: skip


def letters(url: str, namespace: str, keys: Keys, last: int,
            reason: str | None = None) -> list[DeadLetter]:  # fmt: skip
    """:func:`read` from the Redis at ``url``; :class:`NoRedis` when it cannot be reached or
    read (a timeout while a reason is looked for, a key of another type)."""
    client = connect(url, namespace)
    try:
        return read(client, keys, last, reason)
    except _errors() as e:
        raise NoRedis(f"cannot read the dead letters from {redact(url)}: {_said(e, url)}") from None
    finally:
        client.close()


def read(client: Any, keys: Keys, last: int, reason: str | None = None) -> list[DeadLetter]:
    """The newest ``last`` dead letters (of that reason: its kind, or how it begins), oldest
    first."""
    out: list[DeadLetter] = []
    top = "+"
    while len(out) < last:
        page = client.xrevrange(keys.deadletter, max=top, min="-", count=PAGE)
        for entry_id, fields in page:
            d = DeadLetter.decode(entry_id, fields)
            if reason is None or d.kind == reason or d.reason.startswith(reason):
                out.append(d)
                if len(out) == last:
                    break
        if len(page) < PAGE:
            break
        eid = page[-1][0]
        top = "(" + (eid.decode() if isinstance(eid, bytes) else eid)
    return out[::-1]
