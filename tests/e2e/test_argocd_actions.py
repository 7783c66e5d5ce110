"""The Argo CD actions against the real operator: each run as Argo CD's server runs one (the
live object, discovery and the action in gopher-lua, a JSON merge patch from the live object
to the changed one), and the operator does what it asked; its conditions in its metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Installed, Operator, PausingModel, get, until
from tests.e2e.test_argocd import CHECK, argocd_lua

pytestmark = pytest.mark.e2e


def merge_patch(live: Any, changed: Any) -> Any:
    """The JSON merge patch (RFC 7386) from ``live`` to ``changed``: what Argo CD's server
    sends after an action (jsonpatch.CreateMergePatch)."""
    if not (isinstance(live, dict) and isinstance(changed, dict)):
        return changed
    patch = {k: None for k in live if k not in changed}
    for k, v in changed.items():
        if k not in live:
            patch[k] = v
        elif live[k] != v:
            patch[k] = merge_patch(live[k], v)
    return patch


def run_action(installed: Installed, tmp: Path, ns: str, name: str, action: str) -> dict:
    """The action on the live object, patched in as Argo CD's server does; the patch."""
    cp = installed.cluster
    live = get(cp, "om", name, "-n", ns)
    (tmp / "live.json").write_text(json.dumps(live))
    out = argocd_lua("run-action", CHECK, tmp / "live.json", action)
    assert out.returncode == 0, out.stderr
    patch = merge_patch(live, json.loads(out.stdout))
    assert list(patch) == ["metadata"] and list(patch["metadata"]) == ["annotations"], patch
    cp.kubectl("patch", "om", name, "-n", ns, "--type", "merge", "-p", json.dumps(patch))
    return patch  # type: ignore[no-any-return]


def offered(installed: Installed, tmp: Path, ns: str, name: str, action: str) -> bool:
    (tmp / "live.json").write_text(json.dumps(get(installed.cluster, "om", name, "-n", ns)))
    return argocd_lua("run-action", CHECK, tmp / "live.json", action).returncode == 0


def test_argo_cd_actions_promote_pause_resume_and_abort_with_the_real_operator(
    installed: Installed, operator: Operator, tmp_path: Path
) -> None:
    ns, name = "e2e-argocd-actions", "act"
    model = PausingModel(installed.cluster, ns, name)
    status, apply = model.status, model.apply

    apply({})
    until(lambda: status().get("stableRevision"), 60, "stable")
    stable = status()["stableRevision"]
    assert not offered(installed, tmp_path, ns, name, "promote")  # no canary yet
    apply({"optimizer": "adagrad"})
    until(lambda: status().get("phase") == "Paused", 60, "a canary paused")
    canary = status()["canaryRevision"]
    assert canary != stable

    patch = run_action(installed, tmp_path, ns, name, "promote")
    assert patch["metadata"]["annotations"] == {"tideline.dev/promote": canary}
    until(lambda: status().get("stableRevision") == canary, 30, "promoted")

    run_action(installed, tmp_path, ns, name, "pause-learning")
    until(lambda: status().get("learningPaused") is True, 30, "learning paused")
    assert not offered(installed, tmp_path, ns, name, "pause-learning")
    run_action(installed, tmp_path, ns, name, "resume-learning")
    until(lambda: not status().get("learningPaused"), 30, "learning resumed")

    # the promote annotation is still on the object: read once, it asks nothing of the next
    # canary, which pauses at its step (it was promoted at once before)
    apply({"optimizer": "sgd"})
    until(lambda: status().get("phase") == "Paused", 60, "a second canary paused")
    second = status()["canaryRevision"]
    assert status()["stableRevision"] == canary
    run_action(installed, tmp_path, ns, name, "abort")
    until(lambda: (status().get("aborted") or {}).get("revision") == second, 30, "aborted")
    assert status()["stableRevision"] == canary
    assert not offered(installed, tmp_path, ns, name, "abort")

    # each condition of the status, one series each, in the operator's metrics
    def series() -> set[tuple[str, str, str]]:
        return {
            (m["type"], m["status"], m["reason"])
            for line in operator.metrics().splitlines()
            if line.startswith("tideline_operator_model_condition{")
            for m in [dict(re.findall(r'(\w+)="([^"]*)"', line))]
            if m["namespace"] == ns and m["model"] == name
        }

    def conditions() -> set[tuple[str, str, str]]:
        return {(c["type"], c["status"], c["reason"]) for c in status()["conditions"]}

    until(lambda: series() == conditions(), 10, "the conditions in the metrics")
    assert ("Degraded", "True", "RolloutAborted") in series()
