"""Signed blobs (tideline.signing): the envelope, the key policy, and the learner's blobs
read back through it - no network."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tideline import codec, signing
from tideline.algorithms import make_learner
from tideline.signing import ForgedBlob, Opened, Sealing, Signer
from tideline.store import learner_from_blob, learner_to_blob, open_version

KEY = b"0123456789abcdef0123456789abcdef"
BLOB = codec.encode({"w": np.arange(3.0)}, {"version": 1})
SGD = {"task": "binary", "algorithm": "sgd", "features": [{"name": "x"}]}
CUSTOM = {"task": "binary", "algorithm": "custom", "features": [{"name": "x"}],
          "custom": {"class": "tideline.model:Nothing", "params": {}}}  # fmt: skip


def _signer(key: bytes = KEY, scope: str = "prod/fraud") -> Signer:
    return Signer(key, scope)


def _flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 1]) + blob[at + 1 :]


def test_a_sealed_blob_opens_to_the_bytes_it_sealed_with_the_array_format_inside() -> None:
    sealed = _signer().seal(BLOB, signing.VERSION)
    assert sealed.startswith(signing.MAGIC) and sealed.endswith(BLOB)
    assert len(sealed) == len(BLOB) + signing.HEADER_BYTES
    assert _signer().open(sealed, signing.VERSION) == BLOB
    arrays, meta = codec.decode(_signer().open(sealed, signing.VERSION))
    assert arrays["w"].tolist() == [0.0, 1.0, 2.0] and meta == {"version": 1}


@pytest.mark.parametrize(
    ("forge", "message"),
    [
        (lambda s: _flip(s, len(s) - 1), "does not match"),
        (lambda s: _flip(s, signing.HEADER_BYTES + 2), "does not match"),
        (lambda s: _flip(s, 10), "does not match"),
        (lambda s: s[: signing.HEADER_BYTES - 1], "truncated"),
        (lambda s: s[:-5], "does not match"),
        (lambda s: s[:4], "truncated"),
        (lambda s: BLOB, "unsigned"),
        (lambda s: b"", "unsigned"),
        (lambda s: _signer(b"another key that is long enough").seal(BLOB), "does not match"),
        (lambda s: _signer(scope="prod/other").seal(BLOB), "does not match"),
        (lambda s: _signer().seal(BLOB, signing.CHECKPOINT), "does not match"),
    ],
    ids=[
        "a byte of the blob's end flipped is refused",
        "a byte of the blob's header flipped is refused",
        "a byte of the signature flipped is refused",
        "a blob cut inside its signature is refused as truncated",
        "a blob cut short after its signature is refused",
        "the magic alone is refused as truncated",
        "an unsigned blob is refused where a key is set",
        "an empty value is refused",
        "a blob sealed with another key is refused",
        "a version of another model, copied under this one's keys, is refused",
        "a checkpoint copied over a version is refused",
    ],
)
def test_a_blob_that_is_not_what_the_models_learner_sealed_is_refused(forge, message) -> None:
    sealed = _signer().seal(BLOB, signing.VERSION)
    with pytest.raises(ForgedBlob, match=message):
        _signer().open(forge(sealed), signing.VERSION)


def test_forged_blob_is_a_value_error_and_no_message_or_repr_shows_the_key() -> None:
    signer = _signer()
    assert issubclass(ForgedBlob, ValueError)
    assert KEY.decode() not in repr(signer)
    with pytest.raises(ForgedBlob) as e:
        signer.open(_flip(signer.seal(BLOB), 40))
    assert KEY.decode() not in str(e.value)


def test_a_key_shorter_than_sixteen_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Signer(b"short", "a/b")


@pytest.mark.parametrize(
    ("environ", "keyed", "error"),
    [
        ({}, False, None),
        ({signing.KEY_ENV: KEY.decode()}, True, None),
        ({signing.KEY_ENV: ""}, False, "has 0 bytes"),
        ({signing.KEY_ENV: "changeme"}, False, "has 8 bytes"),
    ],
    ids=[
        "no key in the environment: unsigned",
        "a key in the environment: sealed",
        "an empty key is refused, not used",
        "a key too short to be one is refused",
    ],
)
def test_the_sealing_takes_its_key_from_the_environment(environ, keyed, error) -> None:
    if error is not None:
        with pytest.raises(ValueError, match=error):
            Sealing.from_env("prod", "fraud", environ)
        return
    assert Sealing.from_env("prod", "fraud", environ).keyed is keyed


def test_with_a_key_blobs_are_sealed_and_every_blob_read_must_verify() -> None:
    sealing = Sealing.from_env("prod", "fraud", {signing.KEY_ENV: KEY.decode()})
    sealed = sealing.seal(BLOB, signing.CHECKPOINT)
    assert sealed != BLOB
    assert sealing.open(sealed, signing.CHECKPOINT, "k") == Opened(BLOB, trusted=True)
    with pytest.raises(ForgedBlob, match="unsigned"):
        sealing.open(BLOB, signing.CHECKPOINT, "k")


def test_without_a_key_blobs_are_unsigned_and_a_signed_one_is_refused() -> None:
    sealing = Sealing(None)
    assert sealing.seal(BLOB, signing.VERSION) == BLOB
    assert sealing.open(BLOB, signing.VERSION, "k") == Opened(BLOB, trusted=False)
    with pytest.raises(ForgedBlob, match="no key to verify"):
        sealing.open(_signer().seal(BLOB), signing.VERSION, "k")


def test_a_refused_blob_is_logged_once_with_its_redis_key_and_counted_once(caplog) -> None:
    counted: list[int] = []
    sealing = Sealing(_signer(), component="server", refused=lambda: counted.append(1))
    forged = _flip(_signer().seal(BLOB), 50)
    caplog.set_level(logging.WARNING, logger="tideline.signing")
    for _ in range(3):  # a server that polls the same forged blob
        with pytest.raises(ForgedBlob):
            sealing.open(forged, signing.VERSION, "tideline:{prod/fraud}:rev:r1:v:7")
    assert counted == [1]
    assert len(caplog.messages) == 1
    assert "tideline:{prod/fraud}:rev:r1:v:7" in caplog.messages[0]
    assert KEY.decode() not in caplog.messages[0]
    with pytest.raises(ForgedBlob):  # another forgery is another count
        sealing.open(_flip(_signer().seal(BLOB), 60), signing.VERSION, "k2")
    assert counted == [1, 1]


def test_a_stored_version_opens_to_a_learner_only_when_it_verifies() -> None:
    m = make_learner(SGD)
    m.learn_many(np.array([[1.0], [2.0]]), np.array([0.0, 1.0]))
    sealing = Sealing(_signer())
    blob = sealing.seal(learner_to_blob(m, {"version": 3}), signing.VERSION)
    learner, meta = open_version(sealing, blob, "k")
    assert meta["version"] == 3 and learner.n_seen == 2
    with pytest.raises(ForgedBlob):
        open_version(sealing, _flip(blob, len(blob) - 3), "k")


def test_without_a_key_only_the_builtins_unsigned_state_is_loaded() -> None:
    plain = learner_to_blob(make_learner(SGD))
    learner, _ = open_version(Sealing(None), plain, "k")
    assert learner.n_seen == 0
    # a team's learner (its state is code): refused before make_learner imports anything
    custom = codec.encode({}, {"model": CUSTOM})
    with pytest.raises(ForgedBlob, match="unsigned state of algorithm 'custom'"):
        open_version(Sealing(None), custom, "k")
    with pytest.raises(ForgedBlob, match="unsigned state of algorithm 'custom'"):
        learner_from_blob(custom)


def test_loading_untrusted_is_true_only_inside_an_untrusted_load() -> None:
    assert not signing.loading_untrusted()
    with signing.loading(trusted=True):
        assert not signing.loading_untrusted()
        with signing.loading(trusted=False):
            assert signing.loading_untrusted()
        assert not signing.loading_untrusted()
    assert not signing.loading_untrusted()


@pytest.mark.parametrize(
    ("algorithm", "environ", "error"),
    [
        ("sgd", {}, None),
        ("custom", {signing.KEY_ENV: KEY.decode()}, None),
        ("custom", {}, "set TIDELINE_SIGNING_KEY"),
        ("river", {}, "set TIDELINE_SIGNING_KEY"),
        ("sgd", {signing.KEY_ENV: "x"}, "has 1 bytes"),
    ],
    ids=[
        "a built-in runs without a key",
        "a team's learner runs with one",
        "a team's learner does not start without one",
        "a River pipeline does not start without one",
        "a key that is no key stops any process",
    ],
)
def test_a_process_checks_its_key_before_it_starts(algorithm, environ, error) -> None:
    if error is None:
        signing.check_environment(algorithm, environ)
    else:
        with pytest.raises(ValueError, match=error):
            signing.check_environment(algorithm, environ)


# --------------------------------------------------------------------------- the operator's side
def test_the_signing_secret_is_immutable_text_and_every_component_reads_it() -> None:
    import base64

    from tideline.spec import parse
    from tideline_operator import builders

    model = parse({"apiVersion": "tideline.dev/v1alpha1", "kind": "OnlineModel",
                   "metadata": {"name": "fraud", "namespace": "prod"},
                   "spec": {"model": {"features": [{"name": "x"}]},
                            "redis": {"url": "redis://r:6379/0"}}})  # fmt: skip
    secret = builders.build_signing_secret(model, "k" * 43)
    assert secret["metadata"]["name"] == "fraud-tideline-signing"
    assert secret["metadata"]["namespace"] == "prod" and secret["immutable"] is True
    assert base64.b64decode(secret["data"]["key"]) == b"k" * 43
    ref = {"name": signing.KEY_ENV,
           "valueFrom": {"secretKeyRef": {"name": "fraud-tideline-signing", "key": "key"}}}  # fmt: skip
    settings = builders.OperatorConfig()
    for deployment in (
        builders.build_learner(model, settings, "r1"),
        builders.build_server(model, settings, "r1"),
        builders.build_monitor(model, settings, "r1"),
        builders.build_learner(model, settings, "r2", warm_start_from="r1"),
    ):
        assert ref in deployment["spec"]["template"]["spec"]["containers"][0]["env"]


def test_a_team_learner_without_a_key_does_not_start(tmp_path) -> None:
    import yaml

    from tideline import cli

    doc = {"apiVersion": "tideline.dev/v1alpha1", "kind": "OnlineModel",
           "metadata": {"name": "m", "namespace": "t"}, "spec": {"model": CUSTOM}}  # fmt: skip
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    # (it stops before it connects: no Redis listens there)
    assert cli.main(["learner", "--config", str(path), "--redis", "redis://127.0.0.1:1/0"]) == 2
