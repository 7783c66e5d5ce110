"""The Helm chart's static parts: the CRD copy, the Argo CD health check and actions, the
dashboard, the alerts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa.lua54 import LuaError, LuaRuntime  # lupa's default is the newest Lua (5.5 in 2.8)

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "tideline"
CHECK = CHART / "argocd" / "resource_customizations" / "tideline.dev" / "OnlineModel"


def test_the_chart_carries_an_identical_copy_of_the_crd() -> None:
    assert (CHART / "crds" / "onlinemodel.yaml").read_bytes() == (
        ROOT / "crds" / "onlinemodel.yaml"
    ).read_bytes(), "copy crds/onlinemodel.yaml to charts/tideline/crds/"


def test_the_chart_and_the_operator_name_the_image_make_image_tags() -> None:
    import yaml

    import tideline
    from tideline_operator.builders import OperatorConfig

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert values["image"]["repository"] == tideline.IMAGE
    assert chart["appVersion"] == tideline.__version__  # the tag when image.tag is empty
    assert OperatorConfig().image == f"{tideline.IMAGE}:{tideline.__version__}"
    build = (ROOT / "image" / "build.sh").read_text()
    assert "tideline.IMAGE" in build and "tideline.__version__" in build  # read, not repeated


def test_the_image_the_operator_pod_and_the_model_pods_run_as_one_user() -> None:
    """Dockerfile's USER, the chart's podSecurityContext and the builders (IMAGE_UID): one
    user, so a pod's processes read what the image holds and own what they write."""
    from tideline.contracts import IMAGE_GID, IMAGE_UID

    [user] = re.findall(r"^USER (\S+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert user == f"{IMAGE_UID}:{IMAGE_GID}"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    pod = values["podSecurityContext"]
    ids = (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"])
    assert ids == (IMAGE_UID, IMAGE_GID, IMAGE_GID)
    assert pod["runAsNonRoot"] is True and pod["seccompProfile"] == {"type": "RuntimeDefault"}
    container = values["securityContext"]
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}


def _lua(obj: dict) -> LuaRuntime:
    """A Lua 5.4 VM set up as Argo CD sets up gopher-lua for a script in argocd-cm: ``obj``
    the resource as Lua tables, and no library but base and table (and package)."""
    lua = LuaRuntime(unpack_returned_tuples=True)
    # Argo CD hands the script the object as Lua tables (objects by key, arrays from 1)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    lua.execute("string, math, os, io, utf8, coroutine, debug, python = nil")
    return lua


def _from_lua(value: Any, before: Any) -> Any:
    """A Lua value back as JSON, as Argo CD reads an action's result: a table with keys 1..n
    is an array, one with string keys an object, an empty one an array unless the object
    had an object there (Argo CD's cleanReturnedObj)."""
    if not hasattr(value, "items"):
        return value
    items = dict(value.items())
    if not items:
        return {} if isinstance(before, dict) else []
    if all(isinstance(k, int) for k in items):
        assert sorted(items) == list(range(1, len(items) + 1)), "a sparse array"
        old = before if isinstance(before, list) else []
        return [
            _from_lua(items[i + 1], old[i] if i < len(old) else None) for i in range(len(items))
        ]
    assert all(isinstance(k, str) for k in items), "an object with keys not strings"
    old = before if isinstance(before, dict) else {}
    return {k: _from_lua(v, old.get(k)) for k, v in items.items()}


def _health(obj: dict) -> dict:
    result = _lua(obj).execute((CHECK / "health.lua").read_text())
    return {"status": result["status"], "message": result["message"]}


CASES = yaml.safe_load((CHECK / "health_test.yaml").read_text())["tests"]


@pytest.mark.parametrize("case", CASES, ids=[c["inputPath"] for c in CASES])
def test_the_argo_cd_health_check_in_lua_5_4_too(case: dict) -> None:
    """Argo CD's own test cases (run in gopher-lua by tests/e2e/test_argocd.py), in another VM."""
    import yaml

    obj = yaml.safe_load((CHECK / case["inputPath"]).read_text())
    assert _health(obj) == case["healthStatus"]


ACTIONS = CHECK / "actions"
ACTION_TESTS = yaml.safe_load((ACTIONS / "action_test.yaml").read_text())
DISCOVERY_CASES = ACTION_TESTS["discoveryTests"]
ACTION_CASES = ACTION_TESTS["actionTests"]


def _read(path: str) -> dict:
    return yaml.safe_load((ACTIONS / path).read_text())  # type: ignore[no-any-return]


def _discover(obj: dict) -> list[dict]:
    """discovery.lua's answer as Argo CD lists it: one entry per action, by name."""
    found = _from_lua(_lua(obj).execute((ACTIONS / "discovery.lua").read_text()), {})
    return sorted(({"name": name, **a} for name, a in found.items()), key=lambda a: a["name"])


def run_action(obj: dict, name: str) -> dict:
    """An action as Argo CD runs one (``argocd admin settings resource-overrides run-action``,
    or the UI's menu): discovery first - an action it lists disabled or not at all is
    refused - then ``actions/<name>/action.lua``, the changed object back."""
    offered = {a["name"]: a for a in _discover(obj)}
    if name not in offered or offered[name]["disabled"]:
        raise LookupError(f"action {name} is not offered for this object")
    result = _lua(obj).execute((ACTIONS / name / "action.lua").read_text())
    return _from_lua(result, obj)  # type: ignore[no-any-return]


@pytest.mark.parametrize("case", DISCOVERY_CASES, ids=[c["inputPath"] for c in DISCOVERY_CASES])
def test_the_argo_cd_actions_offered_are_those_that_apply(case: dict) -> None:
    """Argo CD's own discovery cases (gopher-lua runs them in tests/e2e/test_argocd.py)."""
    want = sorted(case["result"], key=lambda a: a["name"])
    assert _discover(_read(case["inputPath"])) == want


@pytest.mark.parametrize(
    "case", ACTION_CASES, ids=[f"{c['action']} on {c['inputPath']}" for c in ACTION_CASES]
)
def test_each_argo_cd_action_sets_what_its_test_expects(case: dict) -> None:
    out = run_action(_read(case["inputPath"]), case["action"])
    assert out == _read(case["expectedOutputPath"])


def test_every_action_has_its_script_a_discovery_entry_and_a_test() -> None:
    scripts = {p.parent.name for p in ACTIONS.glob("*/action.lua")}
    discovered = {a["name"] for a in _discover(_read(DISCOVERY_CASES[0]["inputPath"]))}
    tested = {c["action"] for c in ACTION_CASES}
    assert scripts == discovered == tested == {
        "promote", "abort", "rollback", "pause-learning", "resume-learning"
    }  # fmt: skip
    used = {c[k] for c in ACTION_CASES for k in ("inputPath", "expectedOutputPath")}
    used |= {c["inputPath"] for c in DISCOVERY_CASES}
    assert used == {f"testdata/{p.name}" for p in (ACTIONS / "testdata").iterdir()}


@pytest.mark.parametrize(
    ("action", "path"),
    [
        ("promote", "testdata/stable_servingNewerThanLastGood.yaml"),
        ("abort", "testdata/canary_aborted.yaml"),
        ("rollback", "testdata/stable_nothingProven.yaml"),
        ("rollback", "testdata/stable_servingLastGood.yaml"),
        ("pause-learning", "testdata/stable_learningPaused.yaml"),
        ("resume-learning", "testdata/stable_servingNewerThanLastGood.yaml"),
    ],
    ids=[
        "promote without a canary in flight",
        "abort of a canary already aborted",
        "rollback with nothing proven",
        "rollback while lastGood is served",
        "pause while paused",
        "resume while learning",
    ],
)
def test_an_action_that_does_not_apply_is_refused(action: str, path: str) -> None:
    with pytest.raises(LookupError):
        run_action(_read(path), action)


@pytest.mark.parametrize(
    ("action", "path"),
    [("promote", "testdata/stable_servingNewerThanLastGood.yaml"),
     ("abort", "testdata/canary_aborted.yaml"),
     ("rollback", "testdata/stable_nothingProven.yaml")],
    ids=["promote with no canary", "abort of an aborted canary", "rollback with nothing proven"],
)  # fmt: skip
def test_an_action_run_where_it_does_not_apply_fails_and_changes_nothing(
    action: str, path: str
) -> None:
    """Argo CD's API can run an action its menu shows disabled: the script refuses."""
    obj = _read(path)
    with pytest.raises(LuaError, match="no "):
        _lua(obj).execute((ACTIONS / action / "action.lua").read_text())


def _turn(obj: dict) -> list[Any]:
    """The operator's next decision on the object as an action left it (its status, and its
    annotations as the loop observes them)."""
    from tests.helpers import manifest
    from tideline.spec import parse
    from tideline_operator.rollout import Observed, RolloutStatus, decide

    st = obj["status"]
    observed = Observed(
        revision=st.get("canaryRevision") or st["stableRevision"],
        annotations=obj["metadata"].get("annotations", {}),
        served=st["servedVersion"], last_good=st.get("lastGoodVersion"),
        latest=st["latestVersion"], generation=obj["metadata"]["generation"],
    )  # fmt: skip
    spec = parse(manifest(rollout={"steps": [{"setWeight": 10}, {"pause": {}}]})).spec
    return decide(spec, RolloutStatus.from_status(st), observed, None, now=100.0).actions


@pytest.mark.parametrize(
    "case", ACTION_CASES, ids=[f"{c['action']} on {c['inputPath']}" for c in ACTION_CASES]
)
def test_the_operator_does_what_each_action_asks_at_its_next_turn(case: dict) -> None:
    """An action sets only annotations the operator reads, and the operator acts on them."""
    from tideline_operator.rollout import (
        ABORT,
        PAUSE_LEARNING,
        PROMOTE,
        ROLLBACK_TO,
        Event,
        PauseLearning,
        Promote,
        RollbackTo,
    )

    before = _read(case["inputPath"])
    after = run_action(before, case["action"])
    was, now = before["metadata"].pop("annotations", {}), after["metadata"].pop("annotations")
    assert after == before, "an action changes annotations only"
    assert set(was) | set(now) <= {PROMOTE, ABORT, PAUSE_LEARNING, ROLLBACK_TO}
    after["metadata"]["annotations"] = now
    turn = _turn(after)
    done = [a for a in turn if not isinstance(a, Event)]
    events = [a.reason for a in turn if isinstance(a, Event)]
    match case["action"]:
        case "promote":
            assert Promote("9c1d00e2aa", "f2b7345303") in done
        case "abort":
            assert "RolloutAborted" in events and not any(isinstance(a, Promote) for a in done)
        case "rollback":
            assert [a.to for a in done if isinstance(a, RollbackTo)] == [6]
        case "pause-learning":
            assert PauseLearning("f2b7345303", True) in done
        case "resume-learning":
            assert PauseLearning("f2b7345303", False) in done


def _metric_names() -> set[str]:
    """The names the components' registries export (the operator's: the default registry)."""
    from prometheus_client import REGISTRY

    import tideline_operator.handlers  # noqa: F401 - registers the operator's metrics
    from tideline.pods.metrics import LearnerMetrics, MonitorMetrics, ServerMetrics

    registries = [m(None).registry for m in (LearnerMetrics, ServerMetrics, MonitorMetrics)]
    # a family's name (a labelled metric has no sample before its first label)
    return {family.name for registry in [*registries, REGISTRY] for family in registry.collect()}


def test_every_dashboard_query_names_a_metric_the_code_exports() -> None:
    dash = json.loads((CHART / "dashboards" / "tideline.json").read_text())
    exported = _metric_names()
    queried = {
        re.sub(r"_(total|bucket|count|sum)$", "", m)
        for p in dash["panels"]
        for t in p["targets"]
        for m in re.findall(r"tideline_[a-z_]+", t["expr"])
    }
    assert len(queried) >= 15
    missing = {q for q in queried if q not in exported and f"{q}_total" not in exported}
    assert not missing, f"dashboard queries metrics nobody exports: {sorted(missing)}"


RULES = CHART / "templates" / "prometheusrule.yaml"


def test_every_alert_names_a_metric_the_code_exports() -> None:
    """The PrometheusRule's expressions (and what its descriptions point at); promtool runs
    the rules in tests/e2e/test_alerts.py."""
    named = {re.sub(r"_(total|bucket|count|sum)$", "", m)
             for m in re.findall(r"tideline_[a-z_]+", RULES.read_text())}  # fmt: skip
    exported = _metric_names()
    assert len(named) >= 7
    missing = {n for n in named if n not in exported and f"{n}_total" not in exported}
    assert not missing, f"alerts on metrics nobody exports: {sorted(missing)}"


def test_the_alerts_on_conditions_name_reasons_the_operator_gives() -> None:
    from tideline_operator import rollout

    source = Path(rollout.__file__).read_text()
    said = re.findall(r'type="(\w+)",\s*(?:status="(\w+)",\s*)?reason=~?"([\w|]+)"',
                      RULES.read_text())  # fmt: skip
    assert {t for t, _, _ in said} == {"ModelQuality", "LogCapacity"}
    for kind, status, reasons in said:
        assert f'"{kind}"' in source
        for reason in reasons.split("|"):
            assert f'"{reason}"' in source, f"{kind} has no reason {reason}"
        assert status in ("", "False")
