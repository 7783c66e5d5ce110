"""spec.notify: webhooks on the operator's Events, read from the manifest."""

from __future__ import annotations

import pytest
import yaml

from tests.helpers import manifest
from tideline.spec import NOTIFY_DEFAULT, SpecError, parse

HOOK = {"url": {"secretRef": {"name": "hooks"}}}


def test_a_receiver_takes_its_url_from_a_secret_and_the_five_decisions_by_default() -> None:
    (n,) = parse(manifest(notify=[HOOK])).spec.notify
    assert (n.url.name, n.url.key, n.format, n.events) == ("hooks", "url", "json", NOTIFY_DEFAULT)
    assert parse(manifest()).spec.notify == ()


def test_each_receiver_has_its_format_and_events() -> None:
    spec = parse(
        manifest(
            notify=[
                {"url": {"secretRef": {"name": "slack", "key": "webhook"}}, "format": "slack"},
                {**HOOK, "events": ["Proven", "StoreReset"]},
            ]
        )
    ).spec
    assert [(n.url.key, n.format, n.events) for n in spec.notify] == [
        ("webhook", "slack", NOTIFY_DEFAULT),
        ("url", "json", ("Proven", "StoreReset")),
    ]


def test_notify_changes_no_revision() -> None:
    plain = parse(manifest()).revision
    assert parse(manifest(notify=[HOOK, {**HOOK, "format": "slack"}])).revision == plain


REFUSED = [
    ("a URL given inline is refused without being echoed",
     [{"url": "https://hooks.slack.com/services/T0/B0/s3cret"}], "spec.notify[0].url", "Secret only"),
    ("a receiver needs a url", [{"format": "json"}], "spec.notify[0].url", "Secret only"),
    ("the url needs a secretRef", [{"url": {}}], "spec.notify[0].url.secretRef", "required"),
    ("the secretRef needs a name", [{"url": {"secretRef": {"key": "url"}}}],
     "spec.notify[0].url.secretRef.name", "required"),
    ("an Event the operator never posts", [{**HOOK, "events": ["RolledBak"]}],
     "spec.notify[0].events[0]", "must be one of"),
    ("an Event named twice", [{**HOOK, "events": ["Promoted", "Promoted"]}],
     "spec.notify[0].events[1]", "duplicate"),
    ("no Event at all", [{**HOOK, "events": []}], "spec.notify[0].events", "1 to"),
    ("a format other than json or slack", [{**HOOK, "format": "teams"}],
     "spec.notify[0].format", "must be one of json, slack"),
    ("a misspelt field", [{**HOOK, "evnts": ["Promoted"]}], "spec.notify[0].evnts",
     "did you mean events"),
    ("more than ten receivers", [HOOK] * 11, "spec.notify", "at most 10"),
    ("notify is a list", HOOK, "spec.notify", "must be a list"),
]  # fmt: skip


@pytest.mark.parametrize(("notify", "path", "says"), [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])  # fmt: skip
def test_what_notify_refuses(notify: object, path: str, says: str) -> None:
    with pytest.raises(SpecError) as e:
        parse(manifest(notify=notify))
    assert e.value.path == path and says in e.value.reason
    assert "s3cret" not in str(e.value)


def test_on_which_yaml_reads_as_true_is_pointed_at_events() -> None:
    # `on:` is a YAML 1.1 boolean (PyYAML's, and kubectl's YAML reader): the key arrives as true
    doc = yaml.safe_load("- url: {secretRef: {name: hooks}}\n  on: [Promoted]\n")
    assert True in doc[0]
    with pytest.raises(
        SpecError, match=r"spec\.notify\[0\]\.on: unknown field \(the Events go in events"
    ):
        parse(manifest(notify=doc))
