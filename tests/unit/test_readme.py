"""Every command the README shows is checked against what it names.

The shell commands of README.md's fenced ``sh`` blocks are read one by one, and each is
checked against the thing it relies on: a ``make`` target against the Makefile (and what
runs it), ``tideline`` and ``kubectl tideline`` against their real argparse parsers (a
wrong flag fails here), ``kubectl apply -f`` against ``tideline.spec.parse``, ``kubectl
get|describe om`` against the CRD's names and columns, ``helm install`` against the chart
and its values, ``kubectl port-forward`` and ``curl`` against the Service the operator
builds and the server's routes. A command none of these checks knows is a failure naming
it: a README command must be one something here can check. The tour's commands are also
run, as written, on real pods: tests/e2e/pods/test_readme_tour.py.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from starlette.routing import compile_path

from tests.helpers import fenced_commands
from tideline import cli, spec
from tideline.ctl import main as ctl
from tideline_operator import builders

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
COMMANDS = fenced_commands(README.read_text())


def makefile_targets() -> dict[str, list[str]]:
    """Each target of the Makefile and its recipe's lines."""
    targets: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("\t") and current is not None:
            current.append(line.strip())
            continue
        m = re.match(r"^([a-z][\w-]*):(?!=)", line)
        current = targets.setdefault(m.group(1), []) if m else None
    return targets


def parse_or_fail(
    parser: argparse.ArgumentParser, args: list[str], command: str
) -> argparse.Namespace:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(args)
    except SystemExit:
        pytest.fail(f"{command!r}: its parser refuses it: {err.getvalue().strip()}")


def applied_models() -> dict[str, spec.OnlineModel]:
    """The models the README's commands apply, by name."""
    models = {}
    for command in COMMANDS:
        words = shlex.split(command)
        if words[:2] == ["kubectl", "apply"] and "-f" in words:
            model = spec.parse(ROOT / words[words.index("-f") + 1])
            models[model.name] = model
    return models


def crd() -> dict:
    return yaml.safe_load((ROOT / "crds" / "onlinemodel.yaml").read_text())


def server_routes() -> list[tuple[str, str]]:
    """(method, path) of every route the prediction server declares."""
    tree = ast.parse((ROOT / "runtime/tideline/pods/server/api.py").read_text())
    routes = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
            if (
                isinstance(target, ast.Name)
                and target.id == "app"
                and node.func.attr in ("get", "post")
            ):
                routes.append((node.func.attr.upper(), ast.literal_eval(node.args[0])))
    return routes


def check_make(words: list[str], command: str) -> None:
    targets = makefile_targets()
    (target,) = words[1:]
    assert target in targets, f"{command!r}: no target {target!r} in the Makefile"
    if target == "demo":
        # the recipe's command is a real `tideline run` command line: its flags parse, its
        # manifest parses (tests/integration/test_demo.py runs the same loop in process)
        (line,) = [x for x in targets["demo"] if "tideline run" in x]
        args = shlex.split(line.split("/bin/tideline", 1)[1])
        ns = parse_or_fail(cli.build_parser(), args, line)
        spec.parse(ROOT / ns.file)
    elif target == "test":
        ci = (ROOT / ".ci" / "run").read_text().splitlines()
        assert "make test" in [x.strip() for x in ci], "the CI (.ci/run) does not run make test"
    else:
        pytest.fail(f"{command!r}: nothing checks what make {target} does")


def check_tideline(args: list[str], command: str) -> None:
    ns = parse_or_fail(cli.build_parser(), args, command)
    for attr in ("file", "config"):
        path = getattr(ns, attr, None)
        if path is not None:
            spec.parse(ROOT / path)


def check_kubectl(words: list[str], command: str) -> None:
    verb, rest = words[1], words[2:]
    names = crd()["spec"]["names"]
    ours = {names["plural"], names["singular"], names["kind"], *names.get("shortNames", [])}
    if verb == "tideline":
        parse_or_fail(ctl.build_parser(), rest, command)
        return
    if verb == "apply":
        assert rest[0] == "-f" and len(rest) == 2, f"{command!r}: expected kubectl apply -f FILE"
        spec.parse(ROOT / rest[1])
        return
    if verb in ("get", "describe"):
        resource, name, *flags = rest
        assert resource in ours, f"{command!r}: {resource!r} is not a name of the CRD"
        assert name in applied_models(), f"{command!r}: no model named {name!r} is applied"
        known = {("-w",), ("-o", "wide")}
        while flags:
            flag = tuple(flags[:2]) if flags[0] == "-o" else (flags[0],)
            assert flag in known, f"{command!r}: {' '.join(flag)} is not checked here"
            flags = flags[len(flag) :]
            if flag == ("-o", "wide"):
                columns = crd()["spec"]["versions"][0]["additionalPrinterColumns"]
                assert any(c.get("priority", 0) > 0 for c in columns), "no wide columns"
        return
    if verb == "port-forward":
        target, ports = rest
        kind, name = target.split("/")
        assert kind in ("svc", "service"), command
        model = applied_models()[name]
        service = builders.build_service(model, "0123456789")
        assert service["metadata"]["name"] == name
        remote = int(ports.split(":")[1])
        assert remote in [p["port"] for p in service["spec"]["ports"]], command
        return
    pytest.fail(f"{command!r}: nothing checks kubectl {verb}")


def check_helm(words: list[str], command: str) -> None:
    assert words[1] == "install", f"{command!r}: nothing checks helm {words[1]}"
    release, chart, *flags = words[2:]
    assert (ROOT / chart / "Chart.yaml").is_file(), f"{command!r}: no chart at {chart}"
    values = yaml.safe_load((ROOT / chart / "values.yaml").read_text())
    for i, flag in enumerate(flags):
        if flag == "--set":
            key = flags[i + 1].split("=", 1)[0]
            node = values
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, (
                    f"{command!r}: {key} is no value of the chart"
                )
                node = node[part]


def check_curl(words: list[str], command: str) -> None:
    url = next(w for w in words[1:] if w.startswith("localhost:"))
    host, _, path = url.partition("/")
    port = int(host.split(":")[1])
    forwarded = [shlex.split(c) for c in COMMANDS if c.startswith("kubectl port-forward ")]
    assert any(int(f[3].split(":")[0]) == port for f in forwarded), (
        f"{command!r}: nothing forwards {port}"
    )
    method = "POST" if "-d" in words else "GET"
    path = "/" + path
    matched = [p for m, p in server_routes() if m == method and compile_path(p)[0].match(path)]
    assert matched, f"{command!r}: the server has no {method} route for {path}"
    model = next(iter(applied_models().values()))
    if "-d" in words:
        body = json.loads(words[words.index("-d") + 1])
        if matched[0].endswith(":predict"):
            features = {f.name for f in model.spec.model.features}
            for row in body["instances"]:
                assert set(row) <= features, f"{command!r}: {set(row) - features} are no features"
        elif matched[0].endswith("/feedback"):
            assert set(body) == {"id", "label"}, command


@pytest.mark.parametrize("command", COMMANDS, ids=COMMANDS)
def test_every_command_in_the_readme_is_checked_by_something(command: str) -> None:
    words = shlex.split(command)
    match words[0]:
        case "make":
            check_make(words, command)
        case "tideline":
            check_tideline(words[1:], command)
        case "kubectl":
            check_kubectl(words, command)
        case "helm":
            check_helm(words, command)
        case "curl":
            check_curl(words, command)
        case _:
            pytest.fail(f"{command!r}: nothing checks {words[0]} commands")


def test_the_readme_shows_commands_and_names_only_make_targets_that_exist() -> None:
    assert {"make demo", "make test"} <= set(COMMANDS)
    targets = makefile_targets()
    named = set(re.findall(r"`make ([a-z][\w-]*)`", README.read_text()))
    assert named and named <= set(targets), f"no such Makefile targets: {named - set(targets)}"


@pytest.mark.parametrize(
    "bad",
    [
        "tideline run examples/fraud.yaml --duraton 90s",
        "kubectl tideline get fraud --wait",
        "kubectl tideline rollback fraud --to v3",
    ],
    ids=[
        "a misspelt tideline run flag is refused by the real parser",
        "a kubectl tideline flag that does not exist is refused",
        "a rollback version that is no number is refused",
    ],
)
def test_a_wrong_flag_fails_the_check(bad: str) -> None:
    words = shlex.split(bad)
    with pytest.raises(pytest.fail.Exception):
        if words[0] == "tideline":
            check_tideline(words[1:], bad)
        else:
            check_kubectl(words, bad)


def test_the_docs_index_lists_every_page_and_every_page_its_contents() -> None:
    docs = ROOT / "docs"
    pages = {p.name for p in docs.glob("*.md")} - {"README.md"}
    index = (docs / "README.md").read_text()
    readme = README.read_text()
    for page in sorted(pages):
        assert f"]({page})" in index, f"docs/README.md does not list {page}"
        assert f"](docs/{page})" in readme, f"README.md does not list docs/{page}"


def test_every_link_between_the_pages_points_at_a_file_and_anchor_that_exist() -> None:
    def anchors(path: Path) -> set[str]:
        text = path.read_text()
        heads = re.findall(r"^#+ (.*)$", text, re.M)
        slugs = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}
        return slugs | set(re.findall(r'<a id="([^"]+)"></a>', text))

    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"https?:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            assert dest.exists(), f"{page.name}: link to {target}: no such file"
            if anchor and dest.suffix == ".md":
                assert anchor in anchors(dest), f"{page.name}: link to {target}: no such anchor"
