"""``kubectl tideline`` with the suite's operator running: it promotes, pauses and resumes
as the plugin asked, and get and history show what it wrote."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import Installed, Operator, PausingModel, until
from tideline.ctl.main import main

pytestmark = pytest.mark.e2e


def test_the_running_operator_does_what_the_plugin_asked(
    installed: Installed, operator: Operator, capsys: pytest.CaptureFixture[str]
) -> None:
    """promote, pause and resume, and get shows the canary at its manual pause."""
    cp = installed.cluster
    ns, name = "e2e-ctl-operator", "steer"
    model = PausingModel(cp, ns, name)
    status, apply = model.status, model.apply

    def ctl(*args: str) -> tuple[int, str]:
        code = main([*args, name, "-n", ns, "--kubeconfig", str(cp.kubeconfig)])
        out, err = capsys.readouterr()
        return code, out + err

    apply({})
    until(lambda: status().get("stableRevision"), 60, "stable")
    code, said = ctl("promote")
    assert code == 1 and "no canary in flight to promote" in said
    apply({"optimizer": "adagrad"})
    until(lambda: status().get("phase") == "Paused", 60, "a canary paused")
    canary = status()["canaryRevision"]
    code, said = ctl("get")
    assert code == 0
    assert f"Canary: {canary} (weight 10%)" in " ".join(said.split())
    assert "Step: 2 of 2: pause until promoted" in " ".join(said.split())

    assert ctl("promote")[0] == 0
    until(lambda: status().get("stableRevision") == canary, 30, "promoted")
    assert ctl("pause")[0] == 0
    until(lambda: status().get("learningPaused") is True, 30, "learning paused")
    assert ctl("resume")[0] == 0
    until(lambda: not status().get("learningPaused"), 30, "learning resumed")
    code, said = ctl("history")
    assert code == 0 and "Promoted" in said
