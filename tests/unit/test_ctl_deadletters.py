"""``kubectl tideline deadletters``'s pure parts: the Redis URL found in the learner
Deployment the operator builds, a URL shown without its password, the way round an
unreachable Redis, and the rows printed."""

from __future__ import annotations

import base64

import pytest

from tests.helpers import manifest
from tideline.contracts import DeadLetter, Keys
from tideline.ctl.deadletters import (
    NoRedis,
    learner_of,
    port_forward_hint,
    redact,
    redis_url_of,
)
from tideline.ctl.main import build_parser
from tideline.ctl.view import render_deadletters
from tideline.spec import parse
from tideline_operator.builders import OperatorConfig, build_learner, build_redis_secret

SETTINGS = OperatorConfig(image="img:1", redis_url="redis://:s3cret@redis.data.svc:6379/0")
NOW = 1_790_000_000.0


def secrets_of(*objs: dict) -> dict[tuple[str, str], str]:
    """The Secrets as the API would return them: ``data`` base64."""
    out = {}
    for s in objs:
        for k, v in (s.get("stringData") or {}).items():
            out[(s["metadata"]["name"], k)] = base64.b64encode(v.encode()).decode()
    return out


@pytest.mark.parametrize(
    ("redis", "expected_url", "where"),
    [
        ({}, "redis://:s3cret@redis.data.svc:6379/0", "Secret fraud-redis, key url"),
        ({"url": "redis://cache:6379/3"}, "redis://cache:6379/3", "Secret fraud-redis, key url"),
        ({"secretRef": {"name": "team-redis", "key": "address"}}, "redis://team:6379/1",
         "Secret team-redis, key address"),
    ],
    ids=[
        "the operator's default Redis, through the model's own Secret",
        "the spec's redis.url, through the model's own Secret",
        "a Secret of the team's that spec.redis.secretRef names",
    ],
)  # fmt: skip
def test_the_url_is_the_one_the_learner_deployment_gets_from_its_secret(
    redis: dict, expected_url: str, where: str
) -> None:
    model = parse(manifest("fraud", redis=redis))
    deployment = build_learner(model, SETTINGS, model.revision)
    stored = secrets_of(build_redis_secret(model, SETTINGS) or {})
    stored[("team-redis", "address")] = base64.b64encode(b"redis://team:6379/1").decode()
    asked = []

    def secret(name: str, key: str) -> str:
        asked.append((name, key))
        return base64.b64decode(stored[(name, key)]).decode()

    assert redis_url_of(deployment, secret) == (expected_url, where)
    assert len(asked) == 1


def test_a_plain_value_is_read_and_a_deployment_without_the_env_is_refused() -> None:
    model = parse(manifest("fraud"))
    deployment = build_learner(model, SETTINGS, model.revision)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = [e for e in container["env"] if e["name"] == "TIDELINE_REDIS_URL"][0]
    env.pop("valueFrom")
    env["value"] = "redis://plain:6379"
    assert redis_url_of(deployment, lambda *_: "never") == (
        "redis://plain:6379", f"Deployment fraud-learner-{model.revision}")  # fmt: skip
    container["env"] = [e for e in container["env"] if e is not env]
    with pytest.raises(NoRedis, match="has no TIDELINE_REDIS_URL in its env: name the Redis with"):
        redis_url_of(deployment, lambda *_: "never")


def test_the_stable_revisions_learner_is_read_before_a_canarys() -> None:
    model = parse(manifest("fraud"))
    stable = build_learner(model, SETTINGS, "aaaa")
    canary = build_learner(model, SETTINGS, "bbbb")
    assert learner_of([canary, stable], "aaaa") is stable
    assert learner_of([canary], "aaaa") is canary  # (whichever there is)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
        ("rediss://default:p%40ss@r.example:6380", "rediss://default:***@r.example:6380"),
        ("redis://redis:6379/0", "redis://redis:6379/0"),
    ],
    ids=["a password alone", "a user and a password over TLS", "no password"],
)
def test_a_url_is_shown_without_its_password(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("redis://redis.data.svc.cluster.local:6379/0",
         "kubectl port-forward -n data svc/redis 6379:6379, then --redis-url "
         "redis://127.0.0.1:6379/0"),
        ("redis://cache:6380", "kubectl port-forward -n team svc/cache 6380:6380, then "
         "--redis-url redis://127.0.0.1:6380"),
        ("redis://:pw@10.0.0.7:6379/1", "kubectl port-forward -n team svc/<the Redis Service> "
         "6379:6379, then --redis-url redis://:PASSWORD@127.0.0.1:6379/1"),
    ],
    ids=[
        "a Service's cluster name gives its namespace and name",
        "a bare name is a Service of the model's namespace",
        "an address names no Service, and the password is not repeated",
    ],
)  # fmt: skip
def test_the_hint_forwards_the_redis_service_to_loopback(url: str, hint: str) -> None:
    assert port_forward_hint(url, "team") == hint


def test_the_rows_say_when_why_from_where_and_the_fields_abbreviated() -> None:
    keys = Keys("team", "fraud")
    letters = [
        DeadLetter(keys.feedback, "1-0", "unmatched: no prediction p-1", {"id": "p-1"},
                   at=NOW - 120),
        DeadLetter("orders", "3/17", "invalid label 'x' " + "y" * 80, {"data": "z" * 100},
                   at=NOW - 5),
    ]  # fmt: skip
    header, first, second = render_deadletters(letters, keys.prefix, NOW).splitlines()
    assert header.split() == ["TIME", "AGE", "REASON", "FROM", "ENTRY", "FIELDS"]
    assert first.split()[:2] == ["2026-09-21T14:11:20Z", "2m"]
    assert " unmatched: no prediction p-1 " in first and " feedback " in first
    assert first.split()[-2:] == ["1-0", "id=p-1"]
    assert " orders " in second and " 3/17 " in second
    assert second.rstrip().endswith("data=" + "z" * 54 + "…")  # (60 characters in all)
    assert max(len(line) for line in (first, second)) < 200
    assert render_deadletters([], keys.prefix, NOW) == "No dead letters."


@pytest.mark.parametrize("tail", ["0", "-3", "many"])
def test_tail_wants_a_whole_number_of_at_least_one(
    tail: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["deadletters", "fraud", "--tail", tail])
    assert e.value.code == 2
    assert f"argument --tail: a whole number of dead letters, at least 1 (got '{tail}')" in (
        capsys.readouterr().err
    )
