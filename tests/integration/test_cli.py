"""The `tideline` command as a user runs it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import (
    manifest,
    on_one_redis_and_a_cluster,
    processes_under,
    push_samples,
    wait_until,
)

ROOT = Path(__file__).parents[2]
# both source roots of this tree (an editable install may point at another checkout's)
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'runtime'}:{ROOT / 'operator'}"}


def _published(redis_server, tmp_path: Path, doc: dict):  # type: ignore[no-untyped-def]
    """The manifest written to a file, a clean Redis, and the model's untrained v0 published."""
    from tideline.algorithms import make_learner
    from tideline.spec import parse
    from tideline.store import ModelStore

    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    model = parse(doc)
    client = redis_server.client()
    client.flushall()
    ModelStore(client, model.namespace, model.name).publish(
        model.revision, 0, make_learner(model.spec.model.to_dict())
    )
    return path, model, client


def _get(url: str, timeout: float = 2) -> str | None:
    """The body at ``url``; None while nothing (or an error status) answers there."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read().decode()
    except OSError:
        return None


def _tideline(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tideline.cli", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"learning": {"batchSize": 0}}, "spec.learning.batchSize: must be >= 1 (got 0)"),
        ({"serving": {"timeout": "fast"}}, "spec.serving.timeout: must be a duration"),
    ],
    ids=["a zero batch size", "a timeout that is not a duration"],
)
def test_a_bad_manifest_exits_2_naming_the_field(
    tmp_path: Path, change: dict, message: str
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(manifest(**change)))
    out = _tideline("learner", "--config", str(path), "--redis", "redis://127.0.0.1:1/0")
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_an_unreachable_redis_is_reported_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(manifest()))
    out = _tideline("learner", "--config", str(path), "--redis", "redis://127.0.0.1:1/0")
    assert out.returncode == 3
    assert "cannot reach redis" in out.stderr and "Traceback" not in out.stderr


def test_a_redis_that_never_answers_is_one_line_in_bounded_time(tmp_path: Path) -> None:
    import socket
    import time

    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(manifest()))
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel does), never answers
    port = silent.getsockname()[1]
    try:
        start = time.monotonic()
        out = _tideline("learner", "--config", str(path), "--redis", f"redis://u:s3cret@127.0.0.1:{port}/0",
                        timeout=30)  # fmt: skip
        took = time.monotonic() - start
    finally:
        silent.close()
    assert out.returncode == 3 and took < 20, (took, out.stderr)
    assert f"redis at 127.0.0.1:{port} accepted the connection but did not answer" in out.stderr
    assert "Traceback" not in out.stderr and "s3cret" not in out.stderr


def test_the_operator_without_credentials_stops_with_one_line(tmp_path: Path) -> None:
    env = {
        **ENV,
        "KUBECONFIG": str(tmp_path / "none"),
        "PYTHONPATH": f"{ROOT / 'runtime'}:{ROOT / 'operator'}",
    }
    out = subprocess.run([sys.executable, "-m", "tideline.cli", "operator", "--metrics-port", "0"],
                         capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)  # fmt: skip
    assert out.returncode == 1 and "no Kubernetes credentials" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("TIDELINE_MONITOR_LABELS", "release=a b", "'release=a b': the value is"),
        ("TIDELINE_OPERATOR_INTERVAL", "1s", "'1s' is not a number of at least 0.05"),
        ("TIDELINE_OPERATOR_WORKERS", "0", "'0' is not a whole number of at least 1"),
        ("TIDELINE_RETIRED_GRACE_SECONDS", "-5", "'-5' is not a number of at least 0"),
    ],
    ids=["a bad monitor label", "an interval with a unit", "no workers", "a negative grace"],
)
def test_the_operator_with_a_bad_setting_stops_naming_the_variable(
    tmp_path: Path, variable: str, value: str, said: str
) -> None:
    env = {**ENV, "KUBECONFIG": str(tmp_path / "none"), variable: value}
    out = subprocess.run([sys.executable, "-m", "tideline.cli", "operator", "--metrics-port", "0"],
                         capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(f"tideline: {variable}: {said}"), out.stderr
    assert "Traceback" not in out.stderr


def test_help_is_plain_text_and_shows_defaults() -> None:
    top = _tideline("--help").stdout
    assert "``" not in top and "online-learning models on Kubernetes" in top
    server = _tideline("server", "--help").stdout
    assert "(default: 8080)" in server and "(default: 1)" in server


@pytest.mark.integration
def test_run_serves_learns_and_stops_every_process_it_started(tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    # a version every 1,000 samples: the first is due well before the drift. With the example's
    # 5,000 it fell due after the drift, and whether the gate (the live learner's loss on the
    # last 2,000 labels vs the untrained v1's) let it out was up to the timing of the run
    doc = yaml.safe_load((ROOT / "examples/fraud.yaml").read_text())
    doc["spec"]["learning"]["publishEvery"] = 1000
    (tmp_path / "fraud.yaml").write_text(yaml.safe_dump(doc))
    out = _tideline("run", str(tmp_path / "fraud.yaml"), "--duration", "8s", "--rate", "1000/s",
                    "--drift-at", "4s", "--report", str(report))  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = orjson.loads(out.stdout.strip().splitlines()[-1])
    assert summary["predictions_served"] > 3000 and summary["request_errors"] == 0
    assert summary["labels_sent"] > 0.5 * summary["predictions_served"]
    assert summary["samples_learned"] > 0 and summary["versions_published"] >= 2
    assert "DriftInjected" in out.stdout and "started    fraud-server-" in out.stdout
    assert "<img" in report.read_text()
    assert not processes_under(summary["workdir"]), "no stray processes"
    assert not summary["interrupted"] and not Path(summary["workdir"]).exists(), "its folder went"


def test_run_watch_shows_the_status_tree_of_kubectl_tideline_get(tmp_path: Path) -> None:
    """``--watch``: the tree ``kubectl tideline get`` draws, of the run's own model (its
    operator's status and Events), in place of the line a second."""
    out = _tideline("run", "examples/fraud.yaml", "--duration", "4s", "--rate", "300/s",
                    "--report", "", "--watch")  # fmt: skip
    assert out.returncode == 0, out.stderr
    summary = orjson.loads(out.stdout.strip().splitlines()[-1])
    text = " ".join(out.stdout.split())
    assert "Name: fraud Namespace: default" in text
    assert f"Revisions: Stable: {summary['stable_revision']} (weight 100%)" in text
    assert "Versions: Latest: v" in text and "Conditions: TYPE STATUS REASON SINCE MESSAGE" in text
    assert re.search(r"Events: AGE TYPE REASON MESSAGE \d+s Normal Deployed revision", text)
    assert not re.search(r"predictions/s, p95", out.stdout), "no line a second"


def _run_until_signalled(tmp_path: Path, signum: int, *flags: str) -> tuple[int, str, str]:
    """``tideline run`` started as from a terminal (a process group of its own, a temporary
    directory of its own), sent ``signum`` as a terminal's Ctrl-C sends it - to the whole
    group - once it has served for a second: its exit status, stdout and stderr."""
    env = {**ENV, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tideline.cli", "run", str(ROOT / "examples/fraud.yaml"),
         "--duration", "120s", "--rate", "500/s", "--report", str(tmp_path / "report.html"),
         *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
        start_new_session=True,
    )  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))  # type: ignore[union-attr]
    reader.start()
    try:
        # a line a second once the servers answer (not a terminal: no live table), here one
        # that counts answered predictions
        wait_until(lambda: any(re.search(r" [1-9][0-9]* predictions/s", x) for x in lines)
                   or proc.poll() is not None, timeout=90)  # fmt: skip
        assert proc.poll() is None, "".join(lines) + proc.stderr.read()  # type: ignore[union-attr]
        os.killpg(proc.pid, signum)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(10)
    return proc.returncode, "".join(lines), proc.stderr.read()  # type: ignore[union-attr]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("signal_name", "flags", "status"),
    [("SIGINT", (), 130), ("SIGTERM", ("--keep",), 143)],
    ids=[
        "Ctrl-C: status 130, the summary and a partial report, the run's folder removed",
        "SIGTERM with --keep: status 143, the summary, the folder kept and named",
    ],
)
def test_a_run_stopped_by_a_signal_ends_with_its_summary_and_report(
    tmp_path: Path, signal_name: str, flags: tuple[str, ...], status: int
) -> None:
    code, out, err = _run_until_signalled(tmp_path, getattr(signal, signal_name), *flags)
    assert code == status, out[-3000:] + err[-3000:]
    assert "cannot reach redis" not in out + err and "Traceback" not in err, err[-3000:]
    summary = orjson.loads(out.strip().splitlines()[-1])
    assert summary["interrupted"] and summary["seconds"] < summary["duration"] == 120
    assert summary["predictions_served"] > 0, "what ran is counted"
    assert "interrupted after" in out and "predictions served over HTTP" in out
    report = tmp_path / "report.html"
    assert summary["report"] == str(report) and "Interrupted after" in report.read_text()
    assert not processes_under(summary["workdir"]), "no stray processes"
    workdir = Path(summary["workdir"])
    assert workdir.parent == tmp_path / "tmp"
    if "--keep" in flags:
        assert (workdir / "logs").is_dir() and f"kept: {workdir}" in out
        shutil.rmtree(workdir)
    else:
        assert not workdir.exists()
    left = [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith("tideline-")]
    assert left == [], "nothing of the run left in the temporary directory"


@pytest.mark.integration
def test_the_learner_serves_prometheus_metrics(redis_server, tmp_path: Path) -> None:
    from tideline.contracts import Keys
    from tideline.demo.embedded import free_port

    doc = manifest(learning={"maxBatchDelay": "20ms"})
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    keys = Keys("test", "m")
    client = redis_server.client()
    client.flushall()
    for i in range(300):
        client.xadd(
            keys.samples, {"data": orjson.dumps({"features": {"amount": i % 7}, "label": i % 2})}
        )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tideline.cli", "learner", "--config", str(path),
         "--redis", redis_server.url, "--port", str(port)],
        env=ENV, cwd=ROOT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        learned = "tideline_learner_samples_total 300.0"
        wait_until(lambda: learned in (_get(url) or ""), timeout=30, interval=0.2,
                   message="300 samples in the learner's metrics")  # fmt: skip
        body = _get(url) or ""
        assert "tideline_learner_batches_total" in body
        assert "tideline_learner_update_seconds_bucket" in body
        assert "tideline_learner_latest_version" in body
    finally:
        proc.terminate()
        proc.wait(20)
    assert proc.returncode == 0  # a SIGTERM is a clean stop


@pytest.mark.integration
@pytest.mark.parametrize(
    "workers", [1, 2], ids=["one worker", "two workers sharing the port and the metrics"]
)
def test_tideline_server_serves_a_published_version_and_stops_cleanly(
    redis_server, tmp_path: Path, workers: int
) -> None:
    import urllib.error
    import urllib.request

    from tideline.demo.embedded import free_port

    path, model, client = _published(redis_server, tmp_path, manifest(name="fraud"))
    port, labels_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tideline.cli", "server", "--config", str(path),
         "--redis", redis_server.url, "--port", str(port), "--workers", str(workers),
         "--write-port", str(labels_port)],
        env={k: v for k, v in ENV.items() if k != "PROMETHEUS_MULTIPROC_DIR"}, cwd=ROOT,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        ready = f"http://127.0.0.1:{port}/v2/health/ready"
        wait_until(lambda: _get(ready, timeout=1) is not None, timeout=30, interval=0.1,
                   message="the server ready")  # fmt: skip
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/models/fraud:predict",
            data=orjson.dumps({"instances": [{"amount": 3.0}]}),
            headers={"content-type": "application/json"},
        )
        for _ in range(6):
            resp = urllib.request.urlopen(req, timeout=5)
            assert resp.headers["date"] and resp.headers["server"] is None  # no stack banner
            body = orjson.loads(resp.read())
            assert (
                body["predictions"] == [0.5] and body["model_version"] == 0
            )  # v0 knows nothing yet
        metrics = (
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        )
        assert (
            'tideline_server_predictions_total{track="stable"} 6.0' in metrics
        )  # every worker counted
        # missing values too (each worker adds its own every second); one served version and
        # age per server, not a series per worker
        missing = 'tideline_server_missing_values_total{feature="hour"} 6.0'
        url = f"http://127.0.0.1:{port}/metrics"
        wait_until(lambda: missing in (_get(url, timeout=5) or ""), timeout=30, interval=0.2,
                   message=lambda: f"{missing!r} in the metrics:\n{_get(url, timeout=5)}")  # fmt: skip
        metrics = _get(url, timeout=5) or ""
        ours = [line for line in metrics.splitlines() if line.startswith(
            ("tideline_server_served_version{", "tideline_server_model_age_seconds "))]  # fmt: skip
        assert len(ours) == 2 and not any("pid=" in line for line in ours), ours
        # labels only on the write port: a NetworkPolicy can admit them from few
        label = orjson.dumps({"id": body["ids"][0], "label": 1})

        def post(p: int) -> int:
            req = urllib.request.Request(f"http://127.0.0.1:{p}/v1/models/fraud/feedback", data=label,
                                         headers={"content-type": "application/json"})  # fmt: skip
            try:
                return urllib.request.urlopen(req, timeout=5).status
            except urllib.error.HTTPError as e:
                assert e.code != 404 or f"port {labels_port}" in e.read().decode()
                return e.code

        assert [post(port), post(labels_port)] == [404, 202]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why
    assert proc.returncode in (0, -15), err
    assert "Application shutdown complete" in err


@pytest.mark.integration
@on_one_redis_and_a_cluster
def test_tideline_monitor_writes_health_and_serves_metrics(
    redis_under_test, tmp_path: Path
) -> None:
    import urllib.request

    from tideline.contracts import Keys
    from tideline.demo.embedded import free_port
    from tideline.demo.simulate import SyntheticStream

    doc = manifest(name="fraud", rollout={"analysis": {"interval": "200ms"}})
    path, model, client = _published(redis_under_test, tmp_path, doc)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tideline.cli", "monitor", "--config", str(path),
         "--redis", redis_under_test.url, "--port", str(port)],
        env=ENV, cwd=ROOT,
    )  # fmt: skip
    keys = Keys("test", "fraud")
    try:
        wait_until(lambda: client.get(keys.health) is not None, timeout=30, interval=0.1,
                   message="a first health summary (the monitor started)")  # fmt: skip
        rows, y = SyntheticStream(model.spec.model.to_dict()["features"], "binary", seed=1).take(
            300
        )
        push_samples(client, keys.samples, rows, y)

        def labelled() -> int | None:
            stable = orjson.loads(client.get(keys.health))["tracks"].get("stable", {})
            return stable.get("labelled")  # type: ignore[no-any-return]

        wait_until(lambda: labelled() == 300, timeout=30, interval=0.1,
                   message=lambda: f"300 labelled on stable; health {client.get(keys.health)!r}")  # fmt: skip
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body)
            for s in family.samples
        }
        stable, concept = (("track", "stable"),), (("kind", "concept"),)
        assert samples[("tideline_monitor_labelled", stable)] == 300.0
        assert 0.0 <= samples[("tideline_monitor_accuracy", stable)] <= 1.0
        assert samples[("tideline_monitor_drift_detected", concept)] == 0.0
        # the names of the release before, for this release (dashboards written against them)
        assert samples[("tideline_labelled", stable)] == 300.0
        assert ("tideline_online_accuracy", stable) in samples
    finally:
        proc.terminate()
        proc.wait(20)
    assert proc.returncode == 0
