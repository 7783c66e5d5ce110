"""``kubectl tideline``'s pure parts: a status as text (list, get, history), and the
annotations each request sets; and the one line it prints without a kubeconfig."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import canary_status, healthy_status, online_model
from tideline.ctl.main import main
from tideline.ctl.requests import Refused, request
from tideline.ctl.view import moments, render_get, render_history, render_list, timestamp

ROOT = Path(__file__).parents[2]
NOW = timestamp("2026-03-01T12:00:00Z") or 0.0
STEPS = [{"setWeight": 10}, {"pause": "60s"}, {"backtest": {"window": "10m"}}, {"pause": {}}]


def model(status: dict[str, Any] | None = None, annotations: dict[str, str] | None = None,
          steps: list[dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    m = online_model("fraud", "team", STEPS if steps is None else steps, generation=1,
                     creationTimestamp="2026-03-01T11:00:00Z",
                     **({"annotations": annotations} if annotations else {}))  # fmt: skip
    m["spec"]["learning"] = {"history": "1h"}
    m["status"] = {"observedGeneration": 1, **(status or {})}
    return m


HEALTHY = healthy_status("aaaa", (12, 12, 11))
CANARY = canary_status("aaaa", "bbbb", NOW - 20, (12, 12, 11))


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("status", "row"),
    [
        (HEALTHY, "team fraud Healthy aaaa - - v12 v12 v11 1h"),
        (CANARY, "team fraud Progressing aaaa bbbb 10% v12 v12 v11 1h"),
        (
            {
                **CANARY,
                "phase": "Degraded",
                "aborted": {"revision": "bbbb", "reason": "x", "at": NOW},
            },
            "team fraud Degraded aaaa bbbb (aborted) 10% v12 v12 v11 1h",
        ),
        (
            {**HEALTHY, "pinned": True, "servedVersion": 11},
            "team fraud Healthy aaaa - - v11 (pinned) v12 v11 1h",
        ),
        ({}, "team fraud - - - - - - - 1h"),
    ],
    ids=[
        "a healthy model shows its stable revision and versions, no canary",
        "a canary shows its revision and weight",
        "an aborted canary says so",
        "a pinned served version says so",
        "a model the operator has not written a status for shows dashes",
    ],
)
def test_list_shows_one_line_per_model(status: dict[str, Any], row: str) -> None:
    header, line = render_list([model(status)], NOW).splitlines()
    assert header.split()[0] == "NAMESPACE" and header.split()[-1] == "AGE"
    assert words(line) == row


def test_list_sorts_by_namespace_and_name_and_says_when_there_is_none() -> None:
    a, b = model(HEALTHY), model(HEALTHY)
    a["metadata"] = {**a["metadata"], "name": "zeta"}
    b["metadata"] = {**b["metadata"], "namespace": "alpha"}
    lines = render_list([a, b], NOW).splitlines()[1:]
    assert [line.split()[:2] for line in lines] == [["alpha", "fraud"], ["team", "zeta"]]
    assert render_list([], NOW) == "No OnlineModels found."


@pytest.mark.parametrize(
    ("status", "steps", "shown", "absent"),
    [
        (
            CANARY,
            None,
            [
                "Phase: Progressing",
                "Stable: aaaa (weight 90%)",
                "Canary: bbbb (weight 10%)",
                "Step: 2 of 4: pause 60s (paused 20s ago)",
            ],
            ["Aborted:"],
        ),
        ({**CANARY, "currentStep": 2}, None, ["Step: 3 of 4: backtest on 10m of history"], []),
        ({**CANARY, "currentStep": 3}, None, ["Step: 4 of 4: pause until promoted"], []),
        ({**CANARY, "currentStep": 4}, None, ["Step: 4 of 4: all done, promoting"], []),
        (
            {**CANARY, "currentStep": 2},
            [{"setWeight": 50}],
            ["Step: 2 of 2: all done, promoting"],
            [],
        ),
        (
            {
                **CANARY,
                "phase": "Degraded",
                "aborted": {
                    "revision": "bbbb",
                    "reason": "backtest worse",
                    "at": NOW - 60,
                    "cause": "BacktestFailed",
                },
            },
            None,
            ["Aborted: bbbb, 60s ago (BacktestFailed): backtest worse"],
            ["Step:"],
        ),
        (
            {
                **HEALTHY,
                "pinned": True,
                "servedVersion": 11,
                "lastRollback": {
                    "at": NOW - 300,
                    "revision": "aaaa",
                    "from": 12,
                    "to": 11,
                    "reason": "lastGood v11 beats served v12",
                },
            },
            None,
            ["Served: v11 (pinned: rolled back from v12 5m ago: lastGood v11 beats served v12)"],
            ["Canary:", "Last rollback:"],
        ),
        (
            {
                **HEALTHY,
                "lastRollback": {
                    "at": NOW - 300,
                    "revision": "aaaa",
                    "from": 12,
                    "to": 11,
                    "reason": "why",
                },
                "manualRollbackTo": 11,
            },
            None,
            [
                "Last rollback: to v11 from v12, 5m ago: why",
                "Rolled back by hand: v11 (annotation)",
            ],
            ["pinned"],
        ),
        (
            {**HEALTHY, "learningPaused": True, "learnerLag": 42},
            None,
            ["Learning: paused", "Learner lag: 42 samples and labels not learned yet"],
            [],
        ),
        (
            {**HEALTHY, "learningPaused": True, "learningPausedBy": "conceptDrift"},
            None,
            ["Learning: paused (for concept drift: resume sets the annotation to false)"],
            [],
        ),
        (
            {
                **HEALTHY,
                "liftOverBaseline": {
                    "difference": 0.012,
                    "lower": 0.004,
                    "upper": 0.02,
                    "samples": 5000,
                    "baselineVersion": 0,
                },
            },
            None,
            ["Lift over baseline: +0.012 [+0.004, +0.020] on 5,000 samples"],
            ["Backtest:"],
        ),
        (
            {
                **CANARY,
                "backtest": {
                    "done": False,
                    "entries": 3,
                    "of": 10,
                    "rows": 900,
                    "rowsPerSecond": 300,
                    "windowSeconds": 600,
                    "samples": 0,
                },
            },
            None,
            ["Backtest: catching up: 3 of 10 entries (900 rows at 300 rows/s, window 10m)"],
            [],
        ),
        (
            {
                **CANARY,
                "backtest": {
                    "done": True,
                    "entries": 10,
                    "of": 10,
                    "rows": 5000,
                    "rowsPerSecond": 300,
                    "windowSeconds": 600,
                    "samples": 4000,
                    "difference": -0.1,
                    "lower": -0.107,
                    "upper": -0.092,
                },
            },
            None,
            ["Backtest: -0.100 [-0.107, -0.092] on 4,000 samples"],
            [],
        ),
        (
            {
                **HEALTHY,
                "quality": {
                    "samples": 3000,
                    "source": "labels",
                    "served": {"version": 12, "accuracy": 0.91},
                    "lastGood": {
                        "version": 11,
                        "accuracy": 0.9,
                        "vsServed": {
                            "difference": -0.01,
                            "lower": -0.02,
                            "upper": 0.001,
                            "samples": 3000,
                        },
                    },
                },
            },
            None,
            [
                "Common window: 3,000 samples (labels)",
                "served v12 accuracy 0.9100",
                "lastGood v11 accuracy 0.9000 -0.010 [-0.020, +0.001] on 3,000",
            ],
            [],
        ),
        (
            {
                **HEALTHY,
                "log": {
                    "predictionsPerSecond": 2000,
                    "windowSeconds": 1800,
                    "needBytes": 3 * 1024**2,
                    "heldBytes": 1024**2,
                },
                "conditions": [
                    {
                        "type": "LogCapacity",
                        "status": "False",
                        "reason": "Insufficient",
                        "message": "Redis cannot hold 30m of log",
                        "lastTransitionTime": "2026-03-01T11:50:00Z",
                    }
                ],
            },
            None,
            [
                "Log capacity: Insufficient: Redis cannot hold 30m of log",
                "Predictions: 2,000/s over 30m",
                "Needs: 3.0 MiB, holds 1.0 MiB",
                "LogCapacity False Insufficient 10m Redis cannot hold 30m of log",
            ],
            [],
        ),
        (
            {
                **HEALTHY,
                "phase": "Degraded",
                "conditions": [
                    {
                        "type": "Degraded",
                        "status": "True",
                        "reason": "InvalidSpec",
                        "message": "spec.model: bad",
                    }
                ],
            },
            None,
            ["Phase: Degraded Message: InvalidSpec: spec.model: bad"],
            [],
        ),
        ({}, None, ["Phase: (no status yet: is the operator running?)"], ["Conditions:"]),
    ],
    ids=[
        "a canary at a timed pause shows both weights and how long it has paused",
        "a canary at a backtest step names its window",
        "a canary at an indefinite pause waits for a promote",
        "a canary past its last step is being promoted",
        "a canary past its last step (and the backtest history adds first) is being promoted",
        "an aborted canary says why, and no step",
        "a pinned version says from which version it was rolled back and why",
        "a rollback that was unpinned since shows as the last one, and the annotation's number",
        "paused learning and the learner's lag",
        "learning paused for concept drift says why and how it resumes",
        "the lift over the warm-start baseline with its interval",
        "a backtest catching up says how far it is",
        "a judged backtest shows its interval",
        "the quality of each version on the common window, against served",
        "the log capacity condition and what the log needs",
        "a degraded model says why next to its phase",
        "a model without status says the operator has not written one",
    ],
)
def test_get_renders_the_status_as_a_tree(
    status: dict[str, Any], steps: list[dict[str, Any]] | None, shown: list[str], absent: list[str]
) -> None:
    text = words(render_get(model(status, steps=steps), [], NOW))
    for s in shown:
        assert s in text
    for s in absent:
        assert s not in text


def test_get_shows_the_operators_annotations_and_the_newest_events_last() -> None:
    events = [{"type": "Normal", "reason": f"R{i}", "message": f"m{i}",
               "lastTimestamp": f"2026-03-01T11:{i:02d}:00Z"} for i in range(12, 0, -1)]  # fmt: skip
    events.append({"type": "Warning", "reason": "RolledBack", "message": "to v11", "count": 3,
                   "lastTimestamp": "2026-03-01T11:59:00Z"})  # fmt: skip
    obj = model(HEALTHY, annotations={"tideline.dev/promote": "true", "other/x": "y"})
    text = render_get(obj, events, NOW)
    assert "tideline.dev/promote=true: promotes the canary it names" in text
    assert "other/x" not in text
    lines = text.splitlines()
    assert words(lines[-1]) == "60s Warning RolledBack to v11 (x3)"
    assert "(3 older: kubectl tideline history)" in text
    assert "R1 " not in text and "R4 " in text


def test_history_merges_events_with_what_the_status_keeps_oldest_first() -> None:
    status = {**HEALTHY, "promotedAt": NOW - 600,
              "lastRollback": {"at": NOW - 120, "revision": "aaaa", "from": 12, "to": 11,
                               "reason": "worse"},
              "aborted": {"revision": "bbbb", "reason": "analysis failed", "at": NOW - 300}}  # fmt: skip
    events = [
        # the operator's Event of the same rollback says more: the status's line is not repeated
        {"type": "Warning", "reason": "RolledBack", "message": "served v12 -> v11: worse",
         "lastTimestamp": "2026-03-01T11:58:00Z"},
        {"type": "Normal", "reason": "Proven", "message": "v11 is proven",
         "lastTimestamp": "2026-03-01T11:55:00Z"},
    ]  # fmt: skip
    said = [(m.reason, m.source) for m in moments(model(status), events)]
    assert said == [("Created", "status"), ("Promoted", "status"), ("RolloutAborted", "status"),
                    ("Proven", "event"), ("RolledBack", "event")]  # fmt: skip
    text = render_history(model(status), events, NOW)
    assert text.splitlines()[-1] == "Now: Healthy; stable aaaa serves v12, latest v12, lastGood v11"
    assert "5m ago RolloutAborted bbbb: analysis failed (status)" in words(text)


@pytest.mark.parametrize(
    ("verb", "status", "annotations", "to", "want"),
    [
        ("promote", CANARY, {}, None, {"tideline.dev/promote": "bbbb", "tideline.dev/abort": None}),
        ("abort", CANARY, {}, None, {"tideline.dev/abort": "bbbb", "tideline.dev/promote": None}),
        ("rollback", HEALTHY, {}, None, {"tideline.dev/rollback-to": "11"}),
        ("rollback", HEALTHY, {}, 7, {"tideline.dev/rollback-to": "7"}),
        ("rollback", {**HEALTHY, "manualRollbackTo": 11}, {}, 7, {"tideline.dev/rollback-to": "7"}),
        ("pause", HEALTHY, {}, None, {"tideline.dev/pause-learning": "true"}),
        (
            "resume",
            HEALTHY,
            {"tideline.dev/pause-learning": "true"},
            None,
            {"tideline.dev/pause-learning": "false"},
        ),
        (
            "resume",
            {**HEALTHY, "learningPaused": True, "learningPausedBy": "conceptDrift"},
            {"tideline.dev/pause-learning": "false"},
            None,
            {"tideline.dev/pause-learning": "resumed"},
        ),
        (
            "promote",
            {**CANARY, "requestsSeen": {"tideline.dev/promote": "bbbb"}},
            {"tideline.dev/promote": "bbbb"},
            None,
            {"tideline.dev/promote": "true", "tideline.dev/abort": None},
        ),
    ],
    ids=[
        "promote sets promote and removes an abort, which the operator would read first",
        "abort sets abort and removes a promote",
        "rollback goes to lastGood by default",
        "rollback --to goes to the version named",
        "rollback to another number than the operator acted on last",
        "pause sets pause-learning to true, the one value that pauses",
        "resume sets pause-learning to false, as docs/operator.md and Argo CD's action do",
        "resume where it says false already (a pause for concept drift since): a change",
        "promote of a canary back after another, its revision read last: true, a change",
    ],
)
def test_each_request_sets_the_annotations_the_operator_reads(
    verb: str, status: dict[str, Any], annotations: dict[str, str], to: int | None,
    want: dict[str, str | None],
) -> None:  # fmt: skip
    req = request(verb, model(status, annotations=annotations), to=to)
    assert req.annotations == want
    assert req.patch == {"metadata": {"annotations": want}}


@pytest.mark.parametrize(
    ("verb", "status", "to", "why"),
    [
        ("promote", HEALTHY, None, "no canary in flight to promote"),
        (
            "abort",
            {**CANARY, "aborted": {"revision": "bbbb", "reason": "x", "at": 1.0}},
            None,
            "no canary in flight to abort",
        ),
        ("rollback", {**HEALTHY, "lastGoodVersion": None}, None, "has no lastGood version"),
        ("rollback", HEALTHY, 13, "v13 is newer than fraud's latest version v12"),
        ("rollback", HEALTHY, -1, "a version is a number >= 0"),
        ("rollback", {**HEALTHY, "manualRollbackTo": 11}, None, "acts once per number"),
    ],
    ids=[
        "promote without a canary would promote the next one at once",
        "abort of a canary aborted already",
        "rollback without a proven version and no --to",
        "rollback to a version not published yet",
        "rollback to a negative version",
        "rollback to the number the operator acted on already",
    ],
)
def test_a_request_that_would_do_nothing_or_harm_is_refused(
    verb: str, status: dict[str, Any], to: int | None, why: str
) -> None:
    with pytest.raises(Refused, match=why):
        request(verb, model(status), to=to)


def test_no_kubeconfig_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert main(["list"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"kubectl tideline: no kubeconfig: no file at {tmp_path / 'none'} ($KUBECONFIG); "
                   "set KUBECONFIG or --kubeconfig to a cluster's\n")  # fmt: skip
    (tmp_path / "bad").write_text("contexts: []\n")
    assert main(["get", "fraud", "--kubeconfig", str(tmp_path / "bad")]) == 1
    assert capsys.readouterr().err.startswith(
        f"kubectl tideline: the kubeconfig at {tmp_path / 'bad'} cannot be used: "
    )


def test_the_console_script_kubectl_runs_is_the_plugins_main() -> None:
    """kubectl runs ``kubectl tideline`` as the first ``kubectl-tideline`` on the PATH:
    the script pip installs from pyproject's [project.scripts]."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["kubectl-tideline"].partition(":")
    assert getattr(importlib.import_module(module), attr) is main


def shadowed(status: dict[str, Any]) -> dict[str, Any]:
    obj = model(status)
    obj["spec"]["rollout"]["shadow"] = True
    return obj


@pytest.mark.parametrize(
    ("status", "shown"),
    [
        (
            {**CANARY, "currentStep": 0,
             "quality": {"samples": 900, "canary": {
                 "version": 3, "accuracy": 0.91,
                 "vsServed": {"difference": 0.01, "lower": -0.002, "upper": 0.02,
                              "samples": 800}}}},
            ["Stable: aaaa (answers every request)",
             "Canary: bbbb (shadow: every request mirrored to it, its answers logged, never "
             "served)",
             "Shadow vs served: accuracy 0.9100, +0.010 [-0.002, +0.020] on 800 paired samples",
             "Step: 1 of 4: setWeight 10% (not served: shadow)"],
        ),
        (CANARY, ["Shadow vs served: not compared yet (no labels of its answers)"]),
    ],
    ids=["a shadow compared on labels already", "a shadow not compared yet"],
)  # fmt: skip
def test_get_shows_a_shadow_canary_as_mirrored_not_weighted(
    status: dict[str, Any], shown: list[str]
) -> None:
    text = words(render_get(shadowed(status), [], NOW))
    for s in shown:
        assert s in text
    assert "weight" not in text
    assert "Shadow vs served" not in words(render_get(model(status), [], NOW))


def test_list_says_shadow_where_a_split_canary_has_its_weight() -> None:
    assert words(render_list([shadowed(CANARY)], NOW).splitlines()[1]).split()[4:6] == [
        "bbbb", "shadow"]  # fmt: skip
    assert render_list([shadowed(HEALTHY)], NOW).splitlines()[1].split()[4:6] == ["-", "-"]
