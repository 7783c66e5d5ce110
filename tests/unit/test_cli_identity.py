"""The operator's peering identity where the process's uid has no name (an image run as a
uid with no passwd entry, as the runtime image's 65532)."""

from __future__ import annotations

import pwd

import pytest
from kopf._core.engines import peering

from tideline.cli import _peering_identity


@pytest.fixture
def nameless_uid(monkeypatch: pytest.MonkeyPatch) -> None:
    def getpwuid(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", getpwuid)
    for name in ("POD_ID", "LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)


def test_a_uid_with_no_name_gets_an_identity_kopf_could_not_make(nameless_uid: None) -> None:
    with pytest.raises(KeyError):
        peering.detect_own_id(manual=False)  # what kopf.run would call, and die of
    identity = _peering_identity()
    assert isinstance(identity, str) and identity.startswith("uid")


def test_pod_id_or_a_named_user_leaves_the_identity_to_kopf(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POD_ID", "tideline-5b78db744-7xhfd")
    assert _peering_identity() is None
    assert peering.detect_own_id(manual=False) == "tideline-5b78db744-7xhfd"
    monkeypatch.delenv("POD_ID")
    monkeypatch.setenv("USER", "someone")
    assert _peering_identity() is None
