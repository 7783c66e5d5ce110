"""`make demo`'s loop, shortened: it learns, drifts, rolls back and promotes a canary."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from tests.integration.test_cli import _processes_under
from tideline.local import run_local
from tideline.spec import parse

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(240)
def test_the_demo_shows_learning_a_drift_a_rollback_and_a_promoted_canary(tmp_path: Path) -> None:
    manifest = yaml.safe_load((ROOT / "examples" / "fraud.yaml").read_text())
    out = io.StringIO()
    summary = run_local(manifest, duration=70, rate=1500, drift_at=15,
                        canary_at=40, out=out, report=tmp_path / "report.html")  # fmt: skip
    text = out.getvalue()
    print(text[-3000:])
    assert summary["predictions_served"] > 50_000
    assert summary["predictions_by_track"].get("canary", 0) > 0, "the canary answered"
    assert summary["samples_learned"] > 0.5 * summary["predictions_served"]
    assert summary["concept_drift_events"] >= 1
    assert summary["rollbacks"] >= 1 and "RolledBack" in text
    assert summary["promotions"] >= 1 and "Promoted" in text
    assert summary["stable_revision"] != parse(manifest).revision, "the new revision is stable"
    assert summary["request_errors"] == 0
    assert not _processes_under(summary["workdir"])
