"""The README's five-minute tour on real pods, command by command as written.

The commands are read from README.md itself, step by step (the fenced blocks of "A
five-minute tour", ``tests.helpers.fenced_commands``), and run in order from the
checkout's root, each checked on what it shows. Only these are substituted, each for what
a user's cluster has and this one lacks, or for what a user does by hand:

- ``kubectl`` and ``helm`` are the suite's (``~/.cache/tideline-e2e``) with its cluster's
  kubeconfig (``KUBECONFIG``), first on the PATH; ``kubectl tideline`` finds
  ``kubectl-tideline`` on the PATH, a script like the console script pip installs.
- ``helm install`` gets two flags appended: ``--set redis.bundled.image=`` the Redis image
  imported on the node (nothing is pulled here), and ``--set
  redis.bundled.persistence.enabled=false`` (no StorageClass provisions the claim here:
  an emptyDir instead). The runtime image needs none: the chart's default,
  ``tideline/runtime:<appVersion>`` with ``IfNotPresent``, is the image imported.
- a ``-w`` command runs until the line it waits for appears (``kubectl get om fraud -w``:
  a row with the phase ``Healthy``; ``kubectl tideline get fraud -w``: a tree showing the
  canary), then gets SIGINT, as Ctrl-C would stop it.
- ``kubectl port-forward`` runs in the background (the README's ``&``) while the ``curl``
  commands (the real curl) talk to it, and is stopped at the end. Were its local port held
  by something else on this machine, a free one would take its place in it and in the
  ``curl`` commands (said in the output).
- the ``9f2c...`` id of the feedback command is the id the predict command answered.
- step 6's "change ``spec.model.params`` and apply again" is done here: a copy of
  examples/fraud.yaml with another ``forgetting``, ``kubectl apply -f`` that copy. Then
  step 6's commands; ``kubectl get om fraud -o wide`` is run again until it shows the
  canary (the operator names it within a turn of the apply).

The README's "Two commands" are run elsewhere: ``make test`` is what .ci/run runs, and
``make demo``'s loop (its ``tideline run examples/fraud.yaml``, shortened) is
tests/integration/test_demo.py's; tests/unit/test_readme.py checks every README command
against what it names.

The tour runs on the package's cluster (``real``) before test_real_pods.py (its module
sorts first), under the README's names (release ``tideline`` in ``tideline-system``,
``fraud`` in ``default``), and removes its model and release at the end, so that module's
``helm install`` starts on an empty cluster again.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.cluster.node import REDIS_IMAGE, RealCluster
from tests.e2e.pods.kit import (
    MODEL,
    MODEL_NS,
    NAMESPACE,
    RELEASE,
    ROOT,
    columns,
    explain,
    helm,
    model,
    until,
)
from tests.helpers import fenced_commands, wait_until

pytestmark = pytest.mark.e2e

README = ROOT / "README.md"
HELM_SETS = (f"redis.bundled.image={REDIS_IMAGE}", "redis.bundled.persistence.enabled=false")
ID_SHOWN = "9f2c..."  # the README's feedback command's id: the one predict answered goes there


def tour_steps(text: str) -> dict[int, list[str]]:
    """The commands of each numbered step of the README's "A five-minute tour"."""
    section = text.split("\n## A five-minute tour\n", 1)[1].split("\n## ", 1)[0]
    parts = re.split(r"^(\d+)\. ", section, flags=re.M)
    return {int(n): fenced_commands(body) for n, body in zip(parts[1::2], parts[2::2], strict=True)}


class Watched:
    """A command running in the background, its output lines gathered as they come."""

    def __init__(self, words: list[str], env: dict[str, str]) -> None:
        self.words = words
        self.proc = subprocess.Popen(words, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)  # fmt: skip
        self.lines: list[str] = []
        self.errors: list[str] = []
        for pipe, into in ((self.proc.stdout, self.lines), (self.proc.stderr, self.errors)):
            threading.Thread(target=self._gather, args=(pipe, into), daemon=True).start()

    @staticmethod
    def _gather(pipe: Any, into: list[str]) -> None:
        for line in pipe:
            into.append(line.rstrip("\n"))

    def wait_for(self, shows: Callable[[list[str]], object], timeout: float, what: str) -> float:
        """Seconds until ``shows(lines so far)``; fails past ``timeout`` or if it ended."""

        def seen() -> bool:
            if shows(list(self.lines)):
                return True
            assert self.proc.poll() is None, self.said(f"ended ({self.proc.returncode})")
            return False

        return wait_until(seen, timeout, 0.5, lambda: f"{what}; {self.said('shows')}")

    def said(self, how: str) -> str:
        out, err = "\n".join(self.lines[-40:]), "\n".join(self.errors[-20:])
        return f"{shlex.join(self.words)!r} {how}:\n{out}\n(stderr)\n{err}"

    def stop(self) -> int:
        """SIGINT, as Ctrl-C; its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Shell:
    """Runs the README's commands as a user's shell would, with the substitutions above."""

    def __init__(self, real: RealCluster, home: Path) -> None:
        plugins = home / "bin"
        plugins.mkdir()
        plugin = plugins / "kubectl-tideline"
        plugin.write_text(f"#!{sys.executable}\nimport sys\nfrom tideline.ctl.main import main\n"
                          "sys.exit(main())\n")  # fmt: skip
        plugin.chmod(0o755)
        self.home = home
        self.env = {
            **os.environ,
            "PATH": os.pathsep.join([str(plugins), str(real.cp.bin), os.environ["PATH"]]),
            "KUBECONFIG": str(real.cp.kubeconfig),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "runtime"), str(ROOT / "operator")]),
        }
        self.background: list[Watched] = []

    def run(self, words: list[str], timeout: float = 300) -> str:
        """The command's stdout; fails on an exit status but 0."""
        started = time.monotonic()
        done = subprocess.run(words, cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
        said = f"$ {shlex.join(words)}  ({time.monotonic() - started:.1f}s)\n{done.stdout}"
        print(said + done.stderr)
        assert done.returncode == 0, f"{said}exited {done.returncode}: {done.stderr}"
        return done.stdout

    def watch(self, words: list[str]) -> Watched:
        print(f"$ {shlex.join(words)}")
        watched = Watched(words, self.env)
        self.background.append(watched)
        return watched


def local_port(wanted: int) -> int:
    """``wanted`` when nothing on this machine listens there, else a free port."""
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", wanted)) != 0:
            return wanted
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    print(f"[tour] 127.0.0.1:{wanted} is taken on this machine: port-forward and curl use {port}")
    return port


def changed_params(home: Path) -> Path:
    """A copy of examples/fraud.yaml with its model's params changed: a new revision."""
    doc = yaml.safe_load((ROOT / "examples" / "fraud.yaml").read_text())
    params = doc["spec"]["model"]["params"]
    params["forgetting"] = 0.998 if params.get("forgetting") != 0.998 else 0.997
    path = home / "fraud.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def shell(real: RealCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shell]:
    """The user's shell; afterwards, what the tour made is deleted (the model, then the
    release) and gone before test_real_pods.py installs the chart again."""
    sh = Shell(real, tmp_path_factory.mktemp("tour"))
    yield sh
    for watched in sh.background:
        watched.stop()
    kubectl = real.cp.kubectl
    kubectl("delete", "om", MODEL, "-n", MODEL_NS, "--ignore-not-found", "--wait=true",
            "--timeout=120s", check=False)  # fmt: skip
    helm(real, "uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "120s", check=False)
    until(lambda: kubectl("get", "pods", "-A", "-l", "app.kubernetes.io/part-of=tideline",
                          "-o", "name").stdout.strip() == "", 120, "the tour's pods gone")  # fmt: skip


def test_the_readme_tour_runs_command_by_command_on_real_pods(
    shell: Shell, real: RealCluster
) -> None:
    text = README.read_text()
    steps = tour_steps(text)
    assert sorted(n for n, commands in steps.items() if commands) == [2, 3, 4, 5, 6], steps
    started = time.monotonic()
    took: dict[str, float] = {}

    def step(n: int, *expected: str) -> list[list[str]]:
        """Step ``n``'s commands, which must start as ``expected`` (a README change that
        adds, drops or reorders a command fails here, not silently)."""
        commands = steps[n]
        assert len(commands) == len(expected), (n, commands)
        assert all(c.startswith(e) for c, e in zip(commands, expected, strict=True)), (n, commands)
        took[f"step {n}"] = time.monotonic() - started
        return [shlex.split(c) for c in commands]

    # 2. the chart, with the bundled Redis
    [install] = step(2, "helm install")
    out = shell.run([*install, *(w for s in HELM_SETS for w in ("--set", s))])
    assert "STATUS: deployed" in out, out

    # 3. the example, until its phase is Healthy
    apply, get_w = step(3, "kubectl apply -f", "kubectl get om fraud -w")
    assert f"onlinemodel.tideline.dev/{MODEL} created" in shell.run(apply)
    watching = shell.watch(get_w)

    def healthy(lines: list[str]) -> bool:
        return any(line.split()[:2] == [MODEL, "Healthy"] for line in lines)

    try:
        watching.wait_for(healthy, 360, "a row with the phase Healthy")
    except AssertionError:
        print(explain(real, MODEL_NS))
        raise
    watching.stop()
    print("\n".join(watching.lines))
    assert watching.lines[0].split()[:2] == ["NAME", "PHASE"], watching.lines
    stable = model(real)["status"]["stableRevision"]

    # 4. a prediction through the port-forward
    forward, predict = step(4, "kubectl port-forward svc/fraud", "curl -s localhost:")
    assert re.search(rf"^\s*{re.escape(shlex.join(forward))} &$", text, re.M), (
        "the README runs the port-forward in the background"
    )
    wanted, remote = forward[-1].split(":")
    port = local_port(int(wanted))
    forward[-1] = f"{port}:{remote}"

    def to_port(words: list[str]) -> list[str]:  # (the same, unless the port was taken)
        return [w.replace(f"localhost:{wanted}/", f"localhost:{port}/") for w in words]

    forwarding = shell.watch(forward)
    forwarding.wait_for(lambda lines: any(f"Forwarding from 127.0.0.1:{port}" in x for x in lines),
                        60, "the port forwarded")  # fmt: skip
    answer = json.loads(shell.run(to_port(predict), timeout=60))
    assert len(answer["predictions"]) == 1 and 0 <= answer["predictions"][0] <= 1, answer
    [prediction_id] = answer["ids"]
    assert "model_version" in answer and answer["revision"] == stable, (answer, stable)

    # 5. its label, by the id predict answered
    [feedback] = step(5, "curl -s localhost:")
    body_at = feedback.index("-d") + 1
    body = json.loads(feedback[body_at])
    assert body["id"] == ID_SHOWN, body
    feedback[body_at] = json.dumps({**body, "id": prediction_id})
    assert json.loads(shell.run(to_port(feedback), timeout=60)) == {"accepted": 1}

    # 6. spec.model.params changed and applied again; the canary followed
    wide, tree_w, describe = step(6, "kubectl get om fraud -o wide", "kubectl tideline get fraud -w",
                                  "kubectl describe om fraud")  # fmt: skip
    assert "configured" in shell.run(["kubectl", "apply", "-f", str(changed_params(shell.home))])
    shown: dict[str, str] = {}

    def canary_shown() -> bool:
        shown.update(columns(shell.run(wide))[0])
        return bool(shown["CANARY"])

    until(canary_shown, 60, "kubectl get om fraud -o wide showing the canary")
    canary = model(real)["status"]["canaryRevision"]
    assert shown["CANARY"] == canary != shown["STABLE"] == stable, (shown, canary, stable)
    following = shell.watch(tree_w)
    following.wait_for(lambda lines: f"Canary: {canary}" in " ".join(" ".join(lines).split()),
                       120, f"a tree showing the canary {canary}")  # fmt: skip
    assert following.stop() == 0, following.said("ended")
    print("\n".join(following.lines))
    told = shell.run(describe)
    events = told.split("\nEvents:", 1)[1]
    assert "CanaryStarted" in events and f"revision {canary}" in events, told
    forwarding.stop()
    took["all"] = time.monotonic() - started
    marks = ", ".join(f"{k} {v:.0f}s" for k, v in took.items())
    print(f"[tour] since helm install: {marks}")
