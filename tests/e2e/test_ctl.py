"""``kubectl tideline`` against the suite's kube-apiserver: list and get read what the
status says, the requests set the annotations the operator reads, and every failure is
one line and exit status 1. No operator turns meanwhile: the tests write the status
themselves (through the status subresource, as the operator does), and no pod is waited
for (test_ctl_operator.py: the running operator does what the plugin asked)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.cluster.controlplane import ControlPlane, free_port
from tests.e2e.conftest import Installed, Operator
from tests.helpers import canary_status, online_model
from tideline import cli
from tideline.contracts import DeadLetter, Keys
from tideline.ctl.main import main
from tideline.demo.embedded import EmbeddedRedis
from tideline.spec import parse
from tideline_operator.builders import OperatorConfig, build_learner, build_redis_secret

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[2]
NS = "ctl"
MODEL = online_model("fraud", NS, [{"setWeight": 10}, {"pause": "60s"}, {"setWeight": 50},
                                   {"pause": {}}], features=("amount",))  # fmt: skip
# what the operator would have written mid-canary: at the pause, the second of four steps
STATUS = canary_status(
    "3f2a1b9c0d",
    "9a8b7c6d5e",
    time.time() - 30,
    (11, 12, 9),
    learnerLag=1234,
    conditions=[
        {
            "type": "Ready",
            "status": "True",
            "reason": "Serving",
            "message": "2 servers ready",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        },
        {
            "type": "Progressing",
            "status": "True",
            "reason": "Canary",
            "message": "canary 9a8b7c6d5e at step 2 of 4",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        },
    ],  # fmt: skip
    liftOverBaseline={
        "difference": 0.012,
        "lower": 0.004,
        "upper": 0.02,
        "samples": 5000,
        "baselineVersion": 0,
    },  # fmt: skip
)


@pytest.fixture(scope="module")
def cp(installed: Installed, operator: Operator) -> Iterator[ControlPlane]:
    """The suite's control plane, with no operator turning while these tests write the status
    by hand (it would rewrite it): the suite's operator stops for this module, and starts
    again after it, once the module's models are gone."""
    cluster = installed.cluster
    operator.stop()
    cluster.kubectl("create", "namespace", NS, check=False)
    try:
        yield cluster
    finally:
        cluster.kubectl("delete", "om", "--all", "-n", NS, "--wait=true", check=False)
        operator.start()


@pytest.fixture
def model(cp: ControlPlane) -> dict:
    """The model mid-canary, with one Event of the operator's; annotations none."""
    cp.kubectl("delete", "om", "fraud", "-n", NS, "--ignore-not-found", "--wait=true")
    cp.kubectl("apply", "-f", "-", input=json.dumps(MODEL))
    cp.kubectl("patch", "om", "fraud", "-n", NS, "--subresource=status", "--type=merge",
               "-p", json.dumps({"status": STATUS}))  # fmt: skip
    obj = json.loads(cp.kubectl("get", "om", "fraud", "-n", NS, "-o", "json").stdout)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    event = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": "fraud.", "namespace": NS},
        "involvedObject": {"apiVersion": "tideline.dev/v1alpha1", "kind": "OnlineModel",
                           "name": "fraud", "namespace": NS, "uid": obj["metadata"]["uid"]},
        "type": "Normal", "reason": "CanaryStarted", "message": "revision 9a8b7c6d5e",
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "source": {"component": "kopf"},
    }  # fmt: skip
    cp.kubectl("create", "-f", "-", input=json.dumps(event))
    return obj


def run(cp: ControlPlane, capsys: pytest.CaptureFixture[str], *args: str,
        kubeconfig: Path | None = None) -> tuple[int, str, str]:  # fmt: skip
    code = main([*args, "--kubeconfig", str(kubeconfig or cp.kubeconfig)])
    out, err = capsys.readouterr()
    return code, out, err


def annotations(cp: ControlPlane) -> dict[str, str]:
    obj = json.loads(cp.kubectl("get", "om", "fraud", "-n", NS, "-o", "json").stdout)
    return {k: v for k, v in (obj["metadata"].get("annotations") or {}).items()
            if k.startswith("tideline.dev/")}  # fmt: skip


def test_list_shows_the_model_in_its_namespace_and_in_all(
    cp: ControlPlane, model: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(cp, capsys, "list", "-n", NS)
    assert code == 0
    header, row = out.splitlines()
    assert header.split()[:5] == ["NAMESPACE", "NAME", "PHASE", "STABLE", "CANARY"]
    assert row.split() == [NS, "fraud", "Progressing", "3f2a1b9c0d", "9a8b7c6d5e", "10%",
                           "v11", "v12", "v9", row.split()[-1]]  # fmt: skip
    code, out, _ = run(cp, capsys, "list", "-A")
    assert code == 0 and any(line.split()[:2] == [NS, "fraud"] for line in out.splitlines())
    code, out, _ = run(cp, capsys, "list", "-n", "kube-system")
    assert (code, out.strip()) == (0, "No OnlineModels found.")


def test_get_renders_the_status_tree_with_the_step_and_the_events(
    cp: ControlPlane, model: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(cp, capsys, "get", "fraud", "-n", NS)
    assert (code, err) == (0, "")
    words = " ".join(out.split())
    assert "Phase: Progressing" in words
    assert "Canary: 9a8b7c6d5e (weight 10%)" in words
    assert "Step: 2 of 4: pause 60s" in words
    assert "Learner lag: 1,234 samples" in words
    assert "+0.012 [+0.004, +0.020] on 5,000 samples" in out
    assert "canary 9a8b7c6d5e at step 2 of 4" in out  # (a condition's message)
    assert "CanaryStarted" in out and "revision 9a8b7c6d5e" in out  # (the Event)


def test_history_shows_the_events_and_the_versions_now(
    cp: ControlPlane, model: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(cp, capsys, "history", "fraud", "-n", NS)
    assert code == 0
    lines = out.splitlines()
    assert "Created" in lines[1] and "CanaryStarted" in lines[2]  # oldest first
    assert lines[-1].startswith("Now: Progressing; stable 3f2a1b9c0d serves v11, latest v12")


def test_promote_and_abort_set_their_annotation_and_remove_the_other(
    cp: ControlPlane, model: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(cp, capsys, "abort", "fraud", "-n", NS)
    assert code == 0 and "aborted" in out
    assert annotations(cp) == {"tideline.dev/abort": "9a8b7c6d5e"}  # (the canary's revision)
    code, out, _ = run(cp, capsys, "promote", "fraud", "-n", NS)
    assert code == 0 and "promoted" in out
    assert annotations(cp) == {"tideline.dev/promote": "9a8b7c6d5e"}


def test_rollback_pause_and_resume_set_what_the_operator_reads(
    cp: ControlPlane, model: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(cp, capsys, "rollback", "fraud", "-n", NS)[0] == 0
    assert annotations(cp) == {"tideline.dev/rollback-to": "9"}  # lastGood
    assert run(cp, capsys, "rollback", "fraud", "-n", NS, "--to", "10")[0] == 0
    assert annotations(cp) == {"tideline.dev/rollback-to": "10"}
    assert run(cp, capsys, "pause", "fraud", "-n", NS)[0] == 0
    assert annotations(cp)["tideline.dev/pause-learning"] == "true"
    assert run(cp, capsys, "resume", "fraud", "-n", NS)[0] == 0
    assert annotations(cp)["tideline.dev/pause-learning"] == "false"
    # the operator acted on 10 already: the same number again would do nothing
    cp.kubectl("patch", "om", "fraud", "-n", NS, "--subresource=status", "--type=merge",
               "-p", json.dumps({"status": {"manualRollbackTo": 10}}))  # fmt: skip
    code, _, err = run(cp, capsys, "rollback", "fraud", "-n", NS, "--to", "10")
    assert code == 1 and "once per number" in err


def test_the_requests_are_refused_where_they_would_do_nothing(
    cp: ControlPlane, model: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    cp.kubectl("patch", "om", "fraud", "-n", NS, "--subresource=status", "--type=json", "-p",
               json.dumps([{"op": "remove", "path": "/status/canaryRevision"}]))  # fmt: skip
    code, _, err = run(cp, capsys, "promote", "fraud", "-n", NS)
    assert code == 1 and err.strip() == "kubectl tideline: fraud has no canary in flight to promote"
    assert annotations(cp) == {}


def test_a_missing_model_is_one_line_and_status_1(
    cp: ControlPlane, capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (("get", "nope"), ("promote", "nope"), ("history", "nope"), ("get", "nope", "-w")):
        code, out, err = run(cp, capsys, *args, "-n", NS)
        assert (code, out) == (1, "")
        assert err == f"kubectl tideline: OnlineModel 'nope' not found in namespace {NS}\n"


def test_a_request_rbac_refuses_names_the_verb_and_the_resource(
    cp: ControlPlane, model: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ServiceAccount that may read OnlineModels, not patch them."""
    manifests = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "viewer", "namespace": NS}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "om-viewer", "namespace": NS},
         "rules": [{"apiGroups": ["tideline.dev"], "resources": ["onlinemodels"],
                    "verbs": ["get", "list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "om-viewer", "namespace": NS},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "om-viewer"},
         "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": NS}]},
    ]  # fmt: skip
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests))
    token = cp.kubectl("create", "token", "viewer", "-n", NS).stdout.strip()
    viewer = cp.kubeconfig_for(token, "ctl-viewer")
    code, _, err = run(cp, capsys, "pause", "fraud", "-n", NS, kubeconfig=viewer)
    assert code == 1
    assert err.startswith(
        f"kubectl tideline: forbidden: cannot patch onlinemodels.tideline.dev in namespace {NS} ("
    )
    # the status without the Events it may not list, and a line that says so
    code, out, err = run(cp, capsys, "get", "fraud", "-n", NS, kubeconfig=viewer)
    assert code == 0 and "Canary: 9a8b7c6d5e" in " ".join(out.split())
    assert err.startswith(
        f"kubectl tideline: no Events shown: forbidden: cannot list events in namespace {NS}"
    )
    code, _, err = run(cp, capsys, "list", "-A", kubeconfig=viewer)
    assert code == 1
    assert "forbidden: cannot list onlinemodels.tideline.dev in any namespace" in err


def test_get_watch_prints_each_change_and_ends_at_ctrl_c_with_status_0(
    cp: ControlPlane, model: dict
) -> None:
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig),
           "PYTHONPATH": f"{ROOT / 'runtime'}:{ROOT / 'operator'}"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "tideline.ctl.main", "get", "fraud", "-n", NS, "-w"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        seen = ""
        assert proc.stdout is not None
        while "Name:" not in seen and time.monotonic() < deadline:
            seen += proc.stdout.readline()
        cp.kubectl("patch", "om", "fraud", "-n", NS, "--subresource=status", "--type=merge",
                   "-p", json.dumps({"status": {"latestVersion": 13}}))  # fmt: skip
        while "v13" not in seen and time.monotonic() < deadline:
            seen += proc.stdout.readline()
        assert "Latest: v13" in " ".join(seen.split())
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (proc.returncode, err) == (0, "")


def test_kubectl_runs_the_plugin_from_the_path(
    cp: ControlPlane, model: dict, tmp_path: Path
) -> None:
    """``kubectl tideline``: kubectl finds ``kubectl-tideline`` on the PATH (here a script
    like the one pip writes for the console script) and passes it the rest."""
    script = tmp_path / "kubectl-tideline"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom tideline.ctl.main import main\n"
                      "sys.exit(main())\n")  # fmt: skip
    script.chmod(0o755)
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig),
           "PATH": f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": f"{ROOT / 'runtime'}{os.pathsep}{ROOT / 'operator'}"}  # fmt: skip
    done = subprocess.run([str(cp.bin / "kubectl"), "tideline", "list", "-n", NS], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines()[1].split()[:3] == [NS, "fraud", "Progressing"]
    done = subprocess.run([str(cp.bin / "kubectl"), "tideline", "get", "nope", "-n", NS],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == f"kubectl tideline: OnlineModel 'nope' not found in namespace {NS}\n"


def test_tideline_ctl_is_the_same_plugin(
    cp: ControlPlane, model: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["ctl", "list", "-n", NS, "--kubeconfig", str(cp.kubeconfig)]) == 0
    assert "fraud" in capsys.readouterr().out


def test_an_api_server_that_does_not_answer_is_one_line_and_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    port = free_port()  # (nothing listens there)
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "clusters": [{"name": "gone", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "u",
                                                   "namespace": "team"}}],
    }))  # fmt: skip
    assert main(["get", "fraud", "--kubeconfig", str(kubeconfig)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith(
        f"kubectl tideline: cannot reach the Kubernetes API at https://127.0.0.1:{port}"
    )


def test_deadletters_reads_the_redis_the_learner_deployment_names(
    cp: ControlPlane, model: dict, e2e_redis: EmbeddedRedis,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The learner Deployment and the Secret as the operator builds them (no operator turns
    here), the Secret holding the suite's Redis with a password the plugin never prints."""
    parsed = parse(MODEL)
    settings = OperatorConfig(image="img:1", redis_url=e2e_redis.url)
    learner = build_learner(parsed, settings, STATUS["stableRevision"])
    secret = build_redis_secret(parsed, settings)
    cp.kubectl("delete", "deploy,secret", "-l", "tideline.dev/model=fraud", "-n", NS,
               "--ignore-not-found", "--wait=true")  # fmt: skip
    code, _, err = run(cp, capsys, "deadletters", "fraud", "-n", NS)
    assert code == 1 and err == (
        f"kubectl tideline: no learner Deployment of fraud in namespace {NS} (has the operator "
        "made it?): name the model's Redis with --redis-url\n"
    )
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([secret, learner]))
    keys = Keys(NS, "fraud")
    client = e2e_redis.client()
    try:
        client.delete(keys.deadletter)
        for i in range(5):
            reason = "invalid label 'x'" if i == 2 else f"unmatched: no prediction p-{i}"
            client.xadd(keys.deadletter, DeadLetter(keys.feedback, f"{i}-0", reason,
                                                    {"id": f"p-{i}"}).encode())  # type: ignore[arg-type]  # fmt: skip
        code, out, err = run(cp, capsys, "deadletters", "fraud", "-n", NS, "--tail", "2")
        assert (code, err) == (0, "")
        assert [line.split()[-2:] for line in out.splitlines()[1:]] == [
            ["3-0", "id=p-3"], ["4-0", "id=p-4"]]  # fmt: skip
        code, out, _ = run(cp, capsys, "deadletters", "fraud", "-n", NS, "--reason", "invalid")
        assert code == 0 and [line.split()[-2] for line in out.splitlines()[1:]] == ["2-0"]
        code, out, _ = run(cp, capsys, "deadletters", "fraud", "-n", NS, "-o", "json")
        assert code == 0
        assert [d["fields"] for d in json.loads(out)["items"]] == [
            {"id": f"p-{i}"} for i in range(5)
        ]
    finally:
        client.delete(keys.deadletter)
        client.close()
    # a Redis that does not answer (here: --redis-url to a closed port) is one line
    gone = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    code, out, err = run(cp, capsys, "deadletters", "fraud", "-n", NS, "--redis-url", gone)
    assert (code, out) == (1, "") and len(err.splitlines()) == 1 and "hunter2" not in err
    assert err.startswith("kubectl tideline: cannot reach the model's Redis at redis://:***@")
    assert "kubectl port-forward" in err and "--redis-url" in err


def test_output_json_and_yaml_read_the_same_model(
    cp: ControlPlane, model: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(cp, capsys, "list", "-n", NS, "-o", "json")
    assert code == 0
    [row] = json.loads(out)["items"]
    assert (row["name"], row["canaryRevision"], row["canaryWeight"]) == ("fraud", "9a8b7c6d5e", 10)
    code, out, _ = run(cp, capsys, "get", "fraud", "-n", NS, "-o", "yaml")
    got = yaml.safe_load(out)
    assert code == 0 and got["status"]["learnerLag"] == 1234
    assert [e["reason"] for e in got["events"]] == ["CanaryStarted"]
    code, out, _ = run(cp, capsys, "history", "fraud", "-n", NS, "-o", "json")
    history = json.loads(out)
    assert code == 0 and [m["reason"] for m in history["moments"]] == ["Created", "CanaryStarted"]
    assert history["now"]["servedVersion"] == 11
