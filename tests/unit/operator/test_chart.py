"""The Helm chart's static parts: the CRD copy, the Argo CD health check, the dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from lupa import LuaRuntime

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


def _health(obj: dict) -> dict:
    lua = LuaRuntime(unpack_returned_tuples=True)
    # Argo CD hands the check the object as a Lua table; JSON -> Lua the same way.
    to_table = lua.eval(
        """
        function(convert, value)
          local function walk(v)
            if python.builtins.isinstance(v, python.builtins.dict) then
              local t = {}
              for k in python.iter(v) do t[k] = walk(v[k]) end
              return t
            elseif python.builtins.isinstance(v, python.builtins.list) then
              local t = {}
              for i = 0, python.builtins.len(v) - 1 do t[i + 1] = walk(v[i]) end
              return t
            end
            return v
          end
          return walk(value)
        end
        """
    )
    lua.globals().obj = to_table(None, obj)
    script = (CHECK / "health.lua").read_text()
    result = lua.execute(script)
    return {"status": result["status"], "message": result["message"]}


CASES = yaml.safe_load((CHECK / "health_test.yaml").read_text())["tests"]


@pytest.mark.parametrize("case", CASES, ids=[c["inputPath"] for c in CASES])
def test_the_argo_cd_health_check_in_lua_5_4_too(case: dict) -> None:
    """Argo CD's own test cases (run in gopher-lua by tests/e2e/test_argocd.py), in another VM."""
    import yaml

    obj = yaml.safe_load((CHECK / case["inputPath"]).read_text())
    assert _health(obj) == case["healthStatus"]


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
