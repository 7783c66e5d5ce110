"""The Argo CD health check, run by its own tests in gopher-lua (the VM Argo CD runs it in)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e.cluster.controlplane import find_binaries

pytestmark = pytest.mark.e2e
CHECK = (
    Path(__file__).parents[2]
    / "charts/tideline/argocd/resource_customizations/tideline.dev/OnlineModel"
)


def test_the_health_check_passes_its_tests_in_argo_cds_lua_vm() -> None:
    out = subprocess.run([str(find_binaries() / "argocd-lua"), str(CHECK)], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    cases = yaml.safe_load((CHECK / "health_test.yaml").read_text())["tests"]
    assert out.stdout.count("\nok ") + out.stdout.startswith("ok ") == len(cases) >= 12


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
    out = subprocess.run([str(find_binaries() / "argocd-lua"), str(tmp_path)], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 1 and "FAIL testdata/new.yaml" in out.stdout
