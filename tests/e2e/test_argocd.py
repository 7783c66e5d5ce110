"""The Argo CD health check and resource actions, run by their own tests in gopher-lua (the
VM Argo CD runs them in), and each action on each test object as Argo CD runs one."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e.cluster.controlplane import find_binaries
from tests.unit.operator.test_chart import run_action

pytestmark = pytest.mark.e2e
CHECK = (
    Path(__file__).parents[2]
    / "charts/tideline/argocd/resource_customizations/tideline.dev/OnlineModel"
)
ACTIONS = CHECK / "actions"
NAMES = sorted(p.parent.name for p in ACTIONS.glob("*/action.lua"))


def argocd_lua(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(find_binaries() / "argocd-lua"), *map(str, args)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_the_health_check_and_the_actions_pass_their_tests_in_argo_cds_lua_vm() -> None:
    out = argocd_lua(CHECK)
    assert out.returncode == 0, out.stdout + out.stderr
    health = yaml.safe_load((CHECK / "health_test.yaml").read_text())["tests"]
    actions = yaml.safe_load((ACTIONS / "action_test.yaml").read_text())
    lines = out.stdout.splitlines()
    assert sum(line.startswith("ok   testdata/") for line in lines) == len(health) >= 12
    assert sum(line.startswith("ok   discovery ") for line in lines) == len(
        actions["discoveryTests"]
    )
    assert sum(line.startswith("ok   action ") for line in lines) == len(actions["actionTests"])
    assert len(lines) == len(health) + len(actions["discoveryTests"]) + len(actions["actionTests"])


@pytest.mark.parametrize("name", NAMES)
def test_each_action_does_in_gopher_lua_what_it_does_in_lua_5_4(name: str) -> None:
    """On every test object: both VMs refuse it, or both return the same object."""
    assert len(NAMES) == 5
    ran = 0
    for path in sorted((ACTIONS / "testdata").glob("*.yaml")):
        out = argocd_lua("run-action", CHECK, path, name)
        try:
            want = run_action(yaml.safe_load(path.read_text()), name)
        except LookupError:
            assert out.returncode == 1 and f"action {name} is" in out.stderr, out.stdout
            continue
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == want, path.name
        ran += 1
    assert ran >= 2


def test_a_wrong_expectation_fails_the_run(tmp_path: Path) -> None:
    """The runner can fail: a case whose expected message is not what the check says."""
    (tmp_path / "testdata").mkdir()
    (tmp_path / "health.lua").write_text((CHECK / "health.lua").read_text())
    (tmp_path / "testdata" / "new.yaml").write_text(
        yaml.safe_dump({"metadata": {"name": "x", "generation": 1}})
    )
    (tmp_path / "health_test.yaml").write_text(yaml.safe_dump({"tests": [
        {"healthStatus": {"status": "Healthy", "message": "all good"},
         "inputPath": "testdata/new.yaml"}]}))  # fmt: skip
    out = argocd_lua(tmp_path)
    assert out.returncode == 1 and "FAIL testdata/new.yaml" in out.stdout


def test_a_wrong_action_result_fails_the_run(tmp_path: Path) -> None:
    """...and an action whose object is not the one expected (promote expected to abort)."""
    import shutil

    shutil.copytree(ACTIONS, tmp_path / "actions")
    tests = yaml.safe_load((ACTIONS / "action_test.yaml").read_text())
    tests["actionTests"] = [{"action": "promote", "inputPath": "testdata/canary_inFlight.yaml",
                             "expectedOutputPath": "testdata/canary_abortRequested.yaml"}]  # fmt: skip
    (tmp_path / "actions" / "action_test.yaml").write_text(yaml.safe_dump(tests))
    out = argocd_lua(tmp_path)
    assert out.returncode == 1 and "FAIL action promote on testdata/canary_inFlight" in out.stdout
