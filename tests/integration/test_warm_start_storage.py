"""A warm start from object storage (spec.model.warmStart.storageUri, issue 36): a learner's
first version from a snapshot in S3 (moto's server, credentials checked), in GCS through its
S3-interoperable API (the same server, the endpoint overridden) or at an https:// URL (a
server with a certificate of a CA made here); and each way it can fail, said as a fault
naming the URI and never the keys."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers import FRAUD_FEATURES, manifest, tls_certs
from tideline.algorithms import make_learner
from tideline.contracts import Keys, ModelFault
from tideline.demo.simulate import SyntheticStream
from tideline.pods import faults, storage
from tideline.pods.learner import LearnerProcess
from tideline.pods.storage import WarmStartFailed
from tideline.spec import WarmStart, parse
from tideline.store import learner_to_blob

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
BUCKET, KEY = "models", "fraud/baseline.tdl"
SAMPLES = 3000  # what the baseline learned


@pytest.fixture(scope="module")
def baseline() -> tuple:
    """A batch-trained learner, its snapshot's bytes, and rows to compare predictions on."""
    base = make_learner({"task": "binary", "algorithm": "sgd", "features": FRAUD_FEATURES})
    rows, y = SyntheticStream(FRAUD_FEATURES, "binary", seed=0).take(SAMPLES)
    base.learn_many(base.schema.encode(rows), y)
    return base, learner_to_blob(base), rows[:50]


@pytest.fixture
def keys(s3_server, monkeypatch) -> None:
    """The keys the operator would set from the Secret, in this process's environment."""
    monkeypatch.setenv(storage.ACCESS_KEY_ENV, s3_server.access_key)
    monkeypatch.setenv(storage.SECRET_KEY_ENV, s3_server.secret_key)


def _warm(s3_server, uri: str = f"s3://{BUCKET}/{KEY}", **fields) -> dict:
    return {"storageUri": uri, "endpoint": s3_server.endpoint, "region": "us-east-1",
            "secretRef": {"name": "s3-keys"}, **fields}  # fmt: skip


def _doc(warm: dict, name: str = "fraud") -> dict:
    return manifest(name=name, model={"task": "binary", "algorithm": "sgd",
                                      "features": FRAUD_FEATURES, "warmStart": warm},
                    learning={"publishEvery": 500, "maxBatchDelay": "20ms"})  # fmt: skip


def _start(r, warm: dict) -> LearnerProcess:
    p = LearnerProcess(parse(_doc(warm)), r, checkpoint_seconds=0.0)
    p.start()
    return p


def _first_version_is_the_baseline(p: LearnerProcess, baseline: tuple, source: str) -> None:
    base, _, rows = baseline
    v0, meta = p.store.load(p.revision, 0)
    assert v0.n_seen == base.n_seen == SAMPLES
    X = base.schema.encode(rows)
    np.testing.assert_array_equal(v0.predict_many(X), base.predict_many(X))
    assert meta["warmStart"] == source


@pytest.mark.parametrize("pinned", [False, True], ids=["unpinned", "its sha256 given and right"])
def test_a_learner_warm_starts_from_an_s3_object(r, s3_server, keys, baseline, pinned) -> None:
    blob = baseline[1]
    s3_server.put(BUCKET, KEY, blob)
    sha = {"sha256": hashlib.sha256(blob).hexdigest()} if pinned else {}
    p = _start(r, _warm(s3_server, **sha))
    _first_version_is_the_baseline(p, baseline, f"s3://{BUCKET}/{KEY}")


def test_a_learner_warm_starts_from_gcs_through_its_s3_interoperable_api(
    r, s3_server, keys, baseline
) -> None:
    # (GCS's XML API with an HMAC key signs as S3 does: here the same server, the endpoint
    # given in place of https://storage.googleapis.com, the region left to its default)
    s3_server.put("gcs-models", KEY, baseline[1])
    warm = _warm(s3_server, f"gs://gcs-models/{KEY}")
    del warm["region"]
    p = _start(r, warm)
    _first_version_is_the_baseline(p, baseline, f"gs://gcs-models/{KEY}")


def _fails(r, warm: dict, *said: str, secret: str | None = None) -> str:
    with pytest.raises(WarmStartFailed) as caught:
        _start(r, warm)
    message = caught.value.message
    assert caught.value.reason == "WarmStartFailed"
    assert message.startswith(f"{warm['storageUri']}: "), message
    for words in said:
        assert words in message, message
    if secret is not None:
        assert secret not in message
    return message


def test_a_wrong_sha256_is_refused_before_the_bytes_are_read(r, s3_server, keys, baseline):
    s3_server.put(BUCKET, KEY, baseline[1])
    _fails(r, _warm(s3_server, sha256="0" * 64), "its SHA-256 is",
           "not spec.model.warmStart.sha256's 0000...0000")  # fmt: skip


@pytest.mark.parametrize(
    ("uri", "code"),
    [(f"s3://{BUCKET}/fraud/none.tdl", "NoSuchKey"), ("s3://no-such-bucket/base.tdl", "NoSuchBucket")],
    ids=["an object that is not there", "a bucket that is not there"],
)  # fmt: skip
def test_a_missing_object_or_bucket_is_said(r, s3_server, keys, baseline, uri, code) -> None:
    s3_server.put(BUCKET, KEY, baseline[1])
    _fails(r, _warm(s3_server, uri), f"{s3_server.endpoint} says {code}")


def test_a_wrong_secret_key_is_said_and_never_shown(r, s3_server, baseline, monkeypatch) -> None:
    s3_server.put(BUCKET, KEY, baseline[1])
    wrong = "not-the-secret-key-at-all"
    monkeypatch.setenv(storage.ACCESS_KEY_ENV, s3_server.access_key)
    monkeypatch.setenv(storage.SECRET_KEY_ENV, wrong)
    message = _fails(r, _warm(s3_server), "see the keys in AWS_ACCESS_KEY_ID and "
                     "AWS_SECRET_ACCESS_KEY", secret=wrong)  # fmt: skip
    assert s3_server.secret_key not in message and s3_server.access_key not in message


def test_an_endpoint_nothing_listens_on_is_said_after_a_few_tries(r, keys) -> None:
    with socket.socket() as s:  # a port that was free: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    warm = {"storageUri": f"s3://{BUCKET}/{KEY}", "endpoint": f"http://127.0.0.1:{port}",
            "region": "us-east-1"}  # fmt: skip
    _fails(r, warm, "cannot be read", "onnection refused")


def test_an_object_that_is_no_snapshot_is_said(r, s3_server, keys) -> None:
    s3_server.put(BUCKET, "fraud/notes.txt", b"a batch job's notes, not its model")
    _fails(r, _warm(s3_server, f"s3://{BUCKET}/fraud/notes.txt"), "is not a tideline snapshot")


def test_an_object_larger_than_the_cap_is_refused_before_it_is_read(s3_server, keys) -> None:
    s3_server.put(BUCKET, "big.tdl", b"x" * 4096)
    ws = WarmStart(storageUri=f"s3://{BUCKET}/big.tdl", endpoint=s3_server.endpoint,
                   region="us-east-1")  # fmt: skip
    with pytest.raises(WarmStartFailed, match="big.tdl: is over 1000 bytes"):
        storage.fetch(ws, 1000)
    assert len(storage.fetch(ws, 4096)) == 4096


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *_: object) -> None:  # (quiet)
        pass


@pytest.fixture(scope="module")
def https_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    """An HTTPS server on 127.0.0.1 with a certificate of a CA made here: its URL, the
    folder it serves and the CA's certificate."""
    certs = tls_certs(tmp_path_factory.mktemp("https-tls"))
    served = tmp_path_factory.mktemp("served")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs["broker.pem"])

    def handler(*args: object) -> _Files:
        return _Files(*args, directory=str(served))  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", served, certs["ca.crt"]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "variable", [storage.WARM_START_CA_ENV, storage.CA_BUNDLE_ENV],
    ids=["the CA the operator mounts from caBundle", "the CA in SSL_CERT_FILE"],
)  # fmt: skip
def test_a_learner_warm_starts_from_an_https_url_whose_server_a_private_ca_signed(
    r, https_files, baseline, monkeypatch, variable
) -> None:
    url, served, ca = https_files
    (served / "baseline.tdl").write_bytes(baseline[1])
    warm = {"storageUri": f"{url}/baseline.tdl",
            "sha256": hashlib.sha256(baseline[1]).hexdigest()}  # fmt: skip
    # without the CA, the server's certificate is refused
    for name in (storage.WARM_START_CA_ENV, storage.CA_BUNDLE_ENV):
        monkeypatch.delenv(name, raising=False)
    _fails(r, warm, "cannot be read", "CERTIFICATE_VERIFY_FAILED")
    monkeypatch.setenv(variable, str(ca))
    p = _start(r, warm)
    _first_version_is_the_baseline(p, baseline, f"{url}/baseline.tdl")
    # a URL with nothing there
    _fails(r, {"storageUri": f"{url}/none.tdl"}, "HTTP 404")


def test_a_learner_that_cannot_warm_start_reports_the_fault_and_exits_4(
    redis_server, r, s3_server, tmp_path: Path
) -> None:
    doc = _doc(_warm(s3_server, f"s3://{BUCKET}/fraud/none.tdl"))
    model = parse(doc)
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    log = tmp_path / "termination-log"
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'runtime'}:{ROOT}",
           faults.TERMINATION_LOG_ENV: str(log), storage.ACCESS_KEY_ENV: s3_server.access_key,
           storage.SECRET_KEY_ENV: s3_server.secret_key}  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "tideline.cli", "learner", "--config", str(path),
                          "--redis", redis_server.url], capture_output=True, text=True, env=env,
                         timeout=120, cwd=ROOT)  # fmt: skip
    assert out.returncode == faults.EXIT_STATUS, out.stderr
    assert "Traceback" not in out.stderr
    assert s3_server.secret_key not in out.stderr
    fault = ModelFault.decode(r.hget(Keys(model.namespace, model.name).faults(model.revision),
                                     "learner"))  # fmt: skip
    assert fault is not None and fault.reason == "WarmStartFailed"
    assert fault.message == (f"s3://{BUCKET}/fraud/none.tdl: {s3_server.endpoint} says "
                             "NoSuchKey: The specified key does not exist.")  # fmt: skip
    assert log.read_text() == f"WarmStartFailed: {fault.message}\n"


def test_a_sha256_pins_a_warm_start_file_too(r, tmp_path: Path, baseline) -> None:
    path = tmp_path / "baseline.tdl"
    path.write_bytes(baseline[1])
    with pytest.raises(WarmStartFailed, match=f"{path}: its SHA-256 is"):
        _start(r, {"file": str(path), "sha256": "f" * 64})
    p = _start(r, {"file": str(path), "sha256": hashlib.sha256(baseline[1]).hexdigest()})
    _first_version_is_the_baseline(p, baseline, str(path))


def test_a_presigned_url_s_signature_is_in_no_message_or_log(r, caplog) -> None:
    """The query of an https URL (a presigned URL's signature) and a user:password@ are
    credentials: a failure names the URL without them, and urllib3's retries log nothing."""
    import logging

    with socket.socket() as s:  # a port that was free: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"http://user:pw-secret@127.0.0.1:{port}/m.tdl?X-Amz-Signature=sig-secret"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(WarmStartFailed) as caught:
        _start(r, {"storageUri": uri})
    message = caught.value.message
    assert message.startswith(f"http://127.0.0.1:{port}/m.tdl?...: cannot be read"), message
    said = message + caplog.text
    assert "sig-secret" not in said and "pw-secret" not in said, said
