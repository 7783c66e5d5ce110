"""``kubectl tideline`` (the console script ``kubectl-tideline``, and ``tideline ctl``): the
API calls and the command line; what is printed is :mod:`tideline.ctl.view`'s, what is
annotated :mod:`tideline.ctl.requests`'.

Every failure is one line on stderr and exit status 1, no traceback: no kubeconfig, an API
server that does not answer, a model that does not exist (404), a request RBAC refuses
(403, naming the verb and the resource), a request that would do nothing. A usage error
is status 2 (argparse's).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tideline.contracts import Keys
from tideline.ctl import deadletters, output, view
from tideline.ctl.requests import Refused, request
from tideline.spec import GROUP, KIND, PLURAL, VERSION

RESOURCE = f"{PLURAL}.{GROUP}"
TIMEOUT = (5.0, 30.0)  # connect, read (seconds) for every call but a watch
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class CtlError(Exception):
    """One line for the terminal; exit status 1."""


@dataclass
class Cluster:
    """The API clients for one kubeconfig context, and that context's namespace."""

    api: Any  # kubernetes.client.ApiClient
    namespace: str
    host: str

    @property
    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    @property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)


def connect(kubeconfig: str | None, context: str | None) -> Cluster:
    """Credentials from ``kubeconfig`` (else ``$KUBECONFIG``, else ``~/.kube/config``; in a
    pod with none of them, its ServiceAccount's), or :class:`CtlError` naming what is
    missing."""
    from kubernetes import client, config

    path = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    cfg = client.Configuration()
    namespace = "default"
    files = [Path(p).expanduser() for p in path.split(os.pathsep) if p]
    if not any(f.is_file() for f in files):
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            try:
                config.load_incluster_config(client_configuration=cfg)
            except config.ConfigException as e:
                raise CtlError(
                    f"no kubeconfig at {path}, and no usable ServiceAccount: {e}"
                ) from None
            if SERVICE_ACCOUNT_NAMESPACE.is_file():
                namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or namespace
            return _cluster(cfg, namespace)
        where = (
            "--kubeconfig"
            if kubeconfig
            else "$KUBECONFIG"
            if os.environ.get("KUBECONFIG")
            else "the default"
        )
        raise CtlError(f"no kubeconfig: no file at {path} ({where}); set KUBECONFIG or "
                       "--kubeconfig to a cluster's")  # fmt: skip
    try:
        contexts, active = config.list_kube_config_contexts(config_file=path)
        if context is not None:
            active = next((c for c in contexts if c.get("name") == context), None)
            if active is None:
                raise CtlError(f"no context {context!r} in the kubeconfig at {path}")
        config.load_kube_config(config_file=path, context=context, client_configuration=cfg)
    except config.ConfigException as e:
        raise CtlError(f"the kubeconfig at {path} cannot be used: {e}") from None
    namespace = ((active or {}).get("context") or {}).get("namespace") or namespace
    return _cluster(cfg, namespace)


def _cluster(cfg: Any, namespace: str) -> Cluster:
    from kubernetes import client

    cfg.retries = 1  # (urllib3's default, 3 with backoff, keeps a dead address for seconds)
    return Cluster(client.ApiClient(cfg), namespace, cfg.host)


def _calling(cluster: Cluster, verb: str, namespace: str | None, name: str | None = None,
             resource: str = RESOURCE) -> Callable[[Callable[[], Any]], Any]:  # fmt: skip
    """A call made with every failure turned into a :class:`CtlError` that says what was
    asked of whom."""

    def call(fn: Callable[[], Any]) -> Any:
        import urllib3
        from kubernetes.client.exceptions import ApiException

        try:
            return fn()
        except ApiException as e:
            raise CtlError(_api_error(e, cluster, verb, namespace, name, resource)) from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            reason = getattr(e, "reason", None) or e
            raise CtlError(f"cannot reach the Kubernetes API at {cluster.host}: {reason}") from None

    return call


def _api_error(e: Any, cluster: Cluster, verb: str, namespace: str | None, name: str | None,
               resource: str) -> str:  # fmt: skip
    try:
        body = json.loads(e.body or "{}")
    except (TypeError, ValueError):
        body = {}
    said = body.get("message") or e.reason or ""
    where = f" in namespace {namespace}" if namespace else " in any namespace"
    match e.status:
        case 404 if name is not None and (body.get("details") or {}).get("name") == name:
            kind = "OnlineModel" if resource == RESOURCE else resource
            return f"{kind} {name!r} not found{where}"
        case 404:
            return (f"the API server at {cluster.host} serves no {resource}: is the OnlineModel "
                    f"CRD installed? (kubectl apply -f crds/onlinemodel.yaml) ({said})")  # fmt: skip
        case 403:
            return f"forbidden: cannot {verb} {resource}{where} ({said})"
        case 401:
            return (
                f"unauthorized: the API server at {cluster.host} refused the credentials ({said})"
            )
    return f"{verb} {resource}{where}: {e.status} {said}"


# --------------------------------------------------------------------------- reads
def get_model(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    call = _calling(cluster, "get", namespace, name)
    return dict(call(lambda: cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, _request_timeout=TIMEOUT)))  # fmt: skip


def list_models(cluster: Cluster, namespace: str | None) -> list[dict[str, Any]]:
    call = _calling(cluster, "list", namespace)
    if namespace is None:
        out = call(lambda: cluster.custom.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, _request_timeout=TIMEOUT))  # fmt: skip
    else:
        out = call(lambda: cluster.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, _request_timeout=TIMEOUT))  # fmt: skip
    return list(out.get("items") or [])


def model_events(cluster: Cluster, obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The core/v1 Events whose involvedObject is the model (this one: its uid), as dicts."""
    meta = obj.get("metadata") or {}
    namespace, name, uid = meta.get("namespace"), meta.get("name"), meta.get("uid")
    selector = f"involvedObject.kind={KIND},involvedObject.name={name}"
    call = _calling(cluster, "list", namespace, resource="events")
    out = call(lambda: cluster.core.list_namespaced_event(
        namespace, field_selector=selector, _request_timeout=TIMEOUT))  # fmt: skip
    events = [cluster.api.sanitize_for_serialization(ev) for ev in out.items]
    return [
        ev for ev in events if not uid or (ev.get("involvedObject") or {}).get("uid") in (None, uid)
    ]


def events_or_none(cluster: Cluster, obj: Mapping[str, Any], prog: str) -> list[dict[str, Any]]:
    """:func:`model_events`, or none where RBAC refuses them: the status is still worth
    printing (one line on stderr says why the Events are missing)."""
    try:
        return model_events(cluster, obj)
    except CtlError as e:
        if "forbidden" not in str(e):
            raise
        print(f"{prog}: no Events shown: {e}", file=sys.stderr)
        return []


# --------------------------------------------------------------------------- commands
def cmd_list(cluster: Cluster, args: argparse.Namespace) -> int:
    models = list_models(cluster, None if args.all_namespaces else args.namespace)
    if args.output:
        sys.stdout.write(output.dump(output.list_data(models), args.output))
        return 0
    print(view.render_list(models, time.time()))
    return 0


def cmd_get(cluster: Cluster, args: argparse.Namespace) -> int:
    def shown(obj: dict[str, Any]) -> str:
        events = events_or_none(cluster, obj, args.prog)
        if args.output:
            return output.dump(output.get_data(obj, events), args.output).rstrip("\n")
        return view.render_get(obj, events, time.time())

    if not args.watch:
        print(shown(get_model(cluster, args.namespace, args.name)))
        return 0
    get_model(cluster, args.namespace, args.name)  # (a missing model: 404 at once, not a wait)
    try:
        for obj in watch_model(cluster, args.namespace, args.name):
            text = shown(obj)
            sys.stdout.write(_separator(args.output) + text + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        return 0
    # (with -o, stdout holds documents alone)
    print(f"OnlineModel {args.name!r} was deleted", file=sys.stderr if args.output else sys.stdout)
    return 0


def _separator(fmt: str | None) -> str:
    """What goes before each tree or document ``get -w`` prints: a YAML document's start,
    nothing between JSON documents (as ``kubectl get -w -o json``), a cleared terminal."""
    if fmt == "yaml":
        return "---\n"
    if fmt:
        return ""
    return "\x1b[H\x1b[2J" if sys.stdout.isatty() else "\n"  # (home, clear: redrawn in place)


def watch_model(cluster: Cluster, namespace: str, name: str) -> Iterator[dict[str, Any]]:
    """The object at each change (the first: as it is now), until it is deleted; a watch the
    API server ends (its timeout) or that expired (410 Gone) starts again."""
    from kubernetes import watch
    from kubernetes.client.exceptions import ApiException

    call = _calling(cluster, "watch", namespace, name)
    while True:
        stream = watch.Watch().stream(
            cluster.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
            field_selector=f"metadata.name={name}", timeout_seconds=300,
        )  # fmt: skip

        def following(stream: Iterator[Any] = stream) -> Any:
            try:
                return next(stream, None)
            except ApiException as e:
                if e.status == 410:
                    return None
                raise

        while (event := call(following)) is not None:
            kind, obj = event.get("type"), event.get("object")
            if kind == "DELETED":
                return
            if kind in ("ADDED", "MODIFIED") and isinstance(obj, dict):
                yield obj


def cmd_history(cluster: Cluster, args: argparse.Namespace) -> int:
    obj = get_model(cluster, args.namespace, args.name)
    events = events_or_none(cluster, obj, args.prog)
    if args.output:
        sys.stdout.write(output.dump(output.history_data(obj, events), args.output))
        return 0
    print(view.render_history(obj, events, time.time()))
    return 0


def cmd_request(cluster: Cluster, args: argparse.Namespace) -> int:
    obj = get_model(cluster, args.namespace, args.name)
    try:
        req = request(args.command, obj, to=getattr(args, "to", None))
    except Refused as e:
        raise CtlError(str(e)) from None
    call = _calling(cluster, "patch", args.namespace, args.name)
    # a merge patch (the client's choice for a dict body): null removes an annotation
    call(lambda: cluster.custom.patch_namespaced_custom_object(
        GROUP, VERSION, args.namespace, PLURAL, args.name, req.patch,
        _request_timeout=TIMEOUT))  # fmt: skip
    print(req.said)
    return 0


def learner_deployment(cluster: Cluster, obj: Mapping[str, Any]) -> dict[str, Any]:
    """The learner Deployment the operator made for the model (its stable revision's)."""
    from kubernetes import client

    meta = obj.get("metadata") or {}
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    call = _calling(cluster, "list", namespace, resource="deployments.apps")
    out = call(lambda: client.AppsV1Api(cluster.api).list_namespaced_deployment(
        namespace, label_selector=f"tideline.dev/model={name},tideline.dev/component=learner",
        _request_timeout=TIMEOUT))  # fmt: skip
    found = [cluster.api.sanitize_for_serialization(d) for d in out.items]
    if not found:
        raise CtlError(f"no learner Deployment of {name} in namespace {namespace} (has the "
                       "operator made it?): name the model's Redis with --redis-url")  # fmt: skip
    stable = ((obj.get("status") or {}).get("stableRevision")) or None
    return dict(deadletters.learner_of(found, stable))


def secret_value(cluster: Cluster, namespace: str, name: str, key: str) -> str:
    """One key of a Secret, decoded (never printed)."""
    call = _calling(cluster, "get", namespace, name, resource="secrets")
    secret = call(lambda: cluster.core.read_namespaced_secret(
        name, namespace, _request_timeout=TIMEOUT))  # fmt: skip
    data = (secret.data or {}).get(key)
    if data is None:
        raise CtlError(f"the Secret {name} in namespace {namespace} has no key {key!r}")
    return base64.b64decode(data).decode()


def cmd_deadletters(cluster: Cluster, args: argparse.Namespace) -> int:
    obj = get_model(cluster, args.namespace, args.name)
    url = args.redis_url
    if url is None:
        dep = learner_deployment(cluster, obj)
        try:
            url, _ = deadletters.redis_url_of(
                dep, lambda name, key: secret_value(cluster, args.namespace, name, key)
            )
        except deadletters.NoRedis as e:
            raise CtlError(str(e)) from None
        except CtlError as e:
            raise CtlError(f"{e}; or name the model's Redis with --redis-url") from None
    try:
        keys = Keys(args.namespace, args.name)
        letters = deadletters.letters(url, args.namespace, keys, args.tail, args.reason)
    except deadletters.NoRedis as e:
        raise CtlError(str(e)) from None
    if args.output:
        sys.stdout.write(output.dump(output.deadletters_data(letters), args.output))
        return 0
    print(view.render_deadletters(letters, Keys(args.namespace, args.name).prefix, time.time()))
    return 0


def positive(value: str) -> int:
    """``-n``'s argument type: a whole number of entries, at least 1."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(
            f"a whole number of dead letters, at least 1 (got {value!r})"
        )
    return n


HISTORY_HELP = (
    "what the model did, oldest first: its Events the API server still keeps (an hour by "
    "default: kube-apiserver --event-ttl) - deployed, canary started, backtest, promoted, "
    "aborted, proven, rolled back, unpinned, concept drift, store reset - and the moments "
    "its status keeps (created, the last promotion, rollback, abort, concept drift and "
    "store reset), then the versions now. Older versions and decisions are in the model's "
    "Redis, which this does not read."
)


def build_parser(prog: str = "kubectl tideline") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Read OnlineModels' status and steer their rollout, as kubectl argo "
        "rollouts does for Rollouts. promote, abort, rollback, pause and resume set or "
        "remove the annotations the operator reads (tideline.dev/promote, /abort, "
        "/rollback-to, /pause-learning); it acts at its next turn.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace",
                        help="the namespace (default: the kubeconfig context's, else default)")  # fmt: skip
    common.add_argument(
        "--kubeconfig", help="the kubeconfig (default: $KUBECONFIG, else ~/.kube/config)"
    )
    common.add_argument("--context", help="the kubeconfig context (default: its current one)")
    out = argparse.ArgumentParser(add_help=False)
    out.add_argument("-o", "--output", choices=output.FORMATS,
                     help="json or yaml, with stable keys (default: text for people)")  # fmt: skip
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    lp = sub.add_parser("list", parents=[common, out], help="one line per model: phase, revisions, "
                        "canary weight, served/latest/lastGood versions, age")  # fmt: skip
    lp.add_argument("-A", "--all-namespaces", action="store_true", help="models of every namespace")
    lp.set_defaults(func=cmd_list)

    gp = sub.add_parser("get", parents=[common, out], help="a model's status as a tree, and its "
                        "newest Events")  # fmt: skip
    gp.add_argument("name", help="the OnlineModel")
    gp.add_argument("-w", "--watch", action="store_true",
                    help="print it again at every change, until Ctrl-C")  # fmt: skip
    gp.set_defaults(func=cmd_get)

    hp = sub.add_parser("history", parents=[common, out], help="versions and decisions over time",
                        description=HISTORY_HELP)  # fmt: skip
    hp.add_argument("name", help="the OnlineModel")
    hp.set_defaults(func=cmd_history)

    dp = sub.add_parser(
        "deadletters", parents=[common, out], help="the last dead letters of a model, with reasons",
        description="The newest entries the model's learner could not learn from (a label "
        "for no logged prediction, an invalid row, ...), read from the model's Redis: the URL the "
        "learner Deployment the operator made gets from its Secret, or --redis-url.",
    )  # fmt: skip
    dp.add_argument("name", help="the OnlineModel")
    dp.add_argument("--tail", type=positive, default=20, metavar="N",
                    help="how many, the newest (default: 20)")  # fmt: skip
    dp.add_argument("--reason", metavar="R", help="only those of this reason: its kind "
                    "(invalid, late, unmatched, duplicate, nonfinite, poison) or how it begins")  # fmt: skip
    dp.add_argument("--redis-url", metavar="URL", help="the model's Redis (through kubectl "
                    "port-forward, say) instead of the one its learner Deployment names")  # fmt: skip
    dp.set_defaults(func=cmd_deadletters)

    for verb, what in (
        ("promote", "promote the canary now (tideline.dev/promote=true, abort removed)"),
        ("abort", "abort the canary (tideline.dev/abort=true, promote removed)"),
        ("rollback", "serve an older version of the stable revision (tideline.dev/rollback-to)"),
        ("pause", "pause the stable learner (tideline.dev/pause-learning=true)"),
        ("resume", "resume learning (tideline.dev/pause-learning=false)"),
    ):
        rp = sub.add_parser(verb, parents=[common], help=what, description=what)
        rp.add_argument("name", help="the OnlineModel")
        if verb == "rollback":
            rp.add_argument("--to", type=int, metavar="VERSION",
                            help="the version (default: status.lastGoodVersion, the last one "
                            "proven on labels)")  # fmt: skip
        rp.set_defaults(func=cmd_request)
    return p


def main(argv: Sequence[str] | None = None, prog: str = "kubectl tideline") -> int:
    args = build_parser(prog).parse_args(argv)
    args.prog = prog
    try:
        cluster = connect(args.kubeconfig, args.context)
        args.namespace = args.namespace or cluster.namespace
        return int(args.func(cluster, args))
    except CtlError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # (| head): the reader has what it wanted; no traceback at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
