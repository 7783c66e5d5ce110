"""The chart's PrometheusRule: when helm renders it, and its alerts under `promtool test
rules` (tests/e2e/test_alerts.yaml) - both binaries from ``make e2e-bin``; no control plane."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e.cluster.controlplane import find_binaries
from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.e2e
CHART = str(ROOT / "charts" / "tideline")
TESTS = Path(__file__).with_suffix(".yaml")
API = ["--api-versions", "monitoring.coreos.com/v1/PrometheusRule"]


def _bin(name: str) -> Path:
    try:
        return find_binaries() / name
    except RuntimeError as e:  # not built: `make e2e-bin` names what is missing
        pytest.fail(str(e), pytrace=False)


def rules(*args: str) -> list[dict]:
    """The PrometheusRules ``helm template`` renders with these arguments."""
    out = subprocess.run([str(_bin("helm")), "template", "t", CHART, *args], capture_output=True,
                         text=True, check=True, timeout=120)  # fmt: skip
    return [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "PrometheusRule"]


def promtool(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``promtool test rules`` of tests/e2e/test_alerts.yaml against the rules rendered with
    these arguments (written beside a copy of it as rules.yaml)."""
    [rule] = rules(*API, *args)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    shutil.copy(TESTS, tmp_path / TESTS.name)
    check = subprocess.run([str(_bin("promtool")), "check", "rules", "rules.yaml"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    return subprocess.run([str(_bin("promtool")), "test", "rules", TESTS.name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "installed"),
    [
        ([], False),
        (API, True),
        ([*API, "--set", "prometheusRule.enabled=false"], False),
        (["--set", "prometheusRule.enabled=true"], True),
    ],
    ids=[
        "not without the Prometheus Operator's CRD",
        "by default where the cluster serves PrometheusRule",
        "not when disabled, CRD or not",
        "when enabled, CRD or not",
    ],
)
def test_the_rule_is_installed_where_prometheus_operator_reads_it(
    args: list[str], installed: bool
) -> None:
    assert len(rules(*args)) == int(installed)


def test_the_rules_labels_and_thresholds_come_from_the_values() -> None:
    [rule] = rules(*API, "--set", "prometheusRule.labels.release=kps",
                   "--set", "prometheusRule.additionalAlertLabels.team=ml",
                   "--set", "prometheusRule.serverErrorRate=0.05",
                   "--set", "prometheusRule.learnerLagSeconds=120",
                   "--set", "prometheusRule.for=30m")  # fmt: skip
    assert rule["metadata"]["labels"]["release"] == "kps"
    assert rule["metadata"]["namespace"] == "default"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert len(alerts) == 7
    assert all(r["labels"]["team"] == "ml" and r["labels"]["severity"] for r in alerts.values())
    assert alerts["TidelineServerErrors"]["expr"].endswith("> 0.05")
    assert "tideline_learner_lag_seconds > 120" in alerts["TidelineLearnerLagging"]["expr"]
    assert alerts["TidelineLogCapacityInsufficient"]["for"] == "30m"
    assert "(over 5%)" in alerts["TidelineServerErrors"]["annotations"]["description"]


def test_the_alerts_pass_their_promtool_tests(tmp_path: Path) -> None:
    out = promtool(tmp_path)
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def test_promtool_fails_the_tests_of_rules_that_do_not_fire_as_expected(tmp_path: Path) -> None:
    """The tests can fail: with a 5 % threshold the 2 % error rate no longer alerts."""
    out = promtool(tmp_path, "--set", "prometheusRule.serverErrorRate=0.05")
    assert out.returncode == 1 and "alertname: TidelineServerErrors" in out.stdout + out.stderr
