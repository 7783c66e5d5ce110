"""A warm-start snapshot fetched from object storage: ``spec.model.warmStart.storageUri``.

As KServe's and Seldon's ``storageUri`` (issue 36):

* ``s3://bucket/key``: S3, or a store that speaks its API (MinIO, Ceph, ...) at
  ``endpoint``, signed with the keys in ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``
  (the operator sets them from the Secret ``secretRef.name``, KServe's keys; none: an
  anonymous read);
* ``gs://bucket/key``: Google Cloud Storage through its S3-interoperable XML API, with an
  HMAC key in the same two variables (``endpoint`` defaults to
  https://storage.googleapis.com);
* ``https://`` and ``http://`` URLs, read as they are.

The S3 client is MinIO's Python SDK (small, S3 and GCS's interoperable API alike), on the
urllib3 pool this module makes: every request has a connect and a read timeout, and a
connection refused or reset, or a 429 or 5xx answer, is tried again (:data:`RETRIES`
times, backing off). A server's certificate is checked against the bundle
``$TIDELINE_WARM_START_CA`` names (``spec.model.warmStart.caBundle``, mounted by the
operator), else ``$SSL_CERT_FILE`` (as Python's ``ssl`` and MinIO read it), else certifi's.
The body is streamed and refused past ``limit`` bytes, before it is all read when the
server says its length; ``sha256``, when the spec gives it, is checked before anything
decodes the bytes. Whatever fails is a :class:`WarmStartFailed` naming the URI and what
happened - never the credentials - which the learner reports as a model fault
(``WarmStartFailed``, :mod:`tideline.pods.faults`): the operator's ``ModelLoaded``
condition says it.

Examples
--------
>>> from tideline.spec import WarmStart
>>> ws = WarmStart(storageUri="gs://models/fraud/base.tdl")
>>> where(ws)
('https://storage.googleapis.com', 'models', 'fraud/base.tdl')
>>> check_sha256(b"snapshot", "0" * 64, ws.storageUri)
Traceback (most recent call last):
...
tideline.pods.storage.WarmStartFailed: WarmStartFailed: gs://models/fraud/base.tdl: its SHA-256 is 16a0...c112, not spec.model.warmStart.sha256's 0000...0000
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from urllib.parse import unquote, urlsplit

import certifi
import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from tideline.algorithms.external import ModelLoadError
from tideline.contracts import WARM_START_CA_ENV, WARM_START_KEYS
from tideline.spec import WarmStart

ACCESS_KEY_ENV, SECRET_KEY_ENV = WARM_START_KEYS  # (KServe's keys of its S3 Secret)
CA_BUNDLE_ENV = "SSL_CERT_FILE"  # (after WARM_START_CA_ENV; Python's and MinIO's)
S3_ENDPOINT = "https://s3.amazonaws.com"  # (MinIO's SDK picks the region's host from it)
GCS_ENDPOINT = "https://storage.googleapis.com"
GCS_REGION = "auto"  # (GCS's interoperable API signs with any; "auto" spares a location lookup)
CONNECT_TIMEOUT, READ_TIMEOUT = 10.0, 60.0  # seconds; the read's between two reads of bytes
RETRIES = 3
TRANSIENT = (429, 500, 502, 503, 504)
CHUNK = 1 << 20
# what the store says, and what to look at (never a key itself)
_DENIED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled")


class WarmStartFailed(ModelLoadError):
    """A warm start that cannot be had: its message names the source and what happened."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__("WarmStartFailed", f"{source}: {message}")


def shown(uri: str) -> str:
    """A URI as logs, Events and conditions may say it: no user:password@, no query or
    fragment (a presigned URL's signature is a credential).

    >>> shown("https://u:p@example.test/m.tdl?X-Amz-Signature=abc#x")
    'https://example.test/m.tdl?...'
    """
    parts = urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]
    hidden = "?..." if parts.query or parts.fragment else ""
    return f"{parts.scheme}://{host}{parts.path}{hidden}" if parts.scheme else uri


def where(ws: WarmStart) -> tuple[str, str, str]:
    """An ``s3://`` or ``gs://`` URI's endpoint, bucket and key."""
    assert ws.storageUri is not None
    parts = urlsplit(ws.storageUri)
    default = GCS_ENDPOINT if parts.scheme == "gs" else S3_ENDPOINT
    return (ws.endpoint or default).rstrip("/"), parts.netloc, unquote(parts.path[1:])


def pool(env: Mapping[str, str] = os.environ) -> urllib3.PoolManager:
    """The HTTP pool every request of a fetch goes through: timeouts, retries, CA bundle.
    (urllib3 logs each retry with the request's path and query - a presigned URL's
    signature: only its errors are logged.)"""
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    retries = urllib3.Retry(
        total=RETRIES, backoff_factor=0.5, status_forcelist=TRANSIENT,
        allowed_methods=("GET", "HEAD"), raise_on_status=False,
    )  # fmt: skip
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
        retries=retries,
        cert_reqs="CERT_REQUIRED",
        ca_certs=env.get(WARM_START_CA_ENV) or env.get(CA_BUNDLE_ENV) or certifi.where(),
    )


def fetch(ws: WarmStart, limit: int, env: Mapping[str, str] = os.environ) -> bytes:
    """The bytes ``ws.storageUri`` names, at most ``limit`` of them, their ``sha256``
    checked; :class:`WarmStartFailed` when they cannot be had."""
    uri = ws.storageUri
    assert uri is not None
    http = pool(env)
    try:
        if uri.startswith(("https://", "http://")):
            blob = _url(http, uri, limit)
        else:
            blob = _object(http, ws, limit, env)
    except urllib3.exceptions.HTTPError as e:  # (retried: refused, reset, timed out, TLS)
        raise WarmStartFailed(shown(uri), f"cannot be read: {_reason(e)}") from None
    finally:
        http.clear()
    if ws.sha256 is not None:
        check_sha256(blob, ws.sha256, shown(uri))
    return blob


def check_sha256(blob: bytes, want: str, source: str) -> None:
    """:class:`WarmStartFailed` unless ``blob``'s SHA-256 is ``want`` (hex)."""
    got = hashlib.sha256(blob).hexdigest()
    if got != want:
        raise WarmStartFailed(source, f"its SHA-256 is {got[:4]}...{got[-4:]}, not "
                              f"spec.model.warmStart.sha256's {want[:4]}...{want[-4:]}")  # fmt: skip


def _url(http: urllib3.PoolManager, uri: str, limit: int) -> bytes:
    response = http.request("GET", uri, preload_content=False, redirect=True)
    uri = shown(uri)  # (from here on, what is said of it)
    try:
        if response.status != 200:
            raise WarmStartFailed(uri, f"HTTP {response.status} {response.reason or ''}".rstrip())
        return _read(uri, response.headers.get("Content-Length"), response.stream(CHUNK), limit)
    finally:
        response.release_conn()


def _object(http: urllib3.PoolManager, ws: WarmStart, limit: int, env: Mapping[str, str]) -> bytes:
    uri = ws.storageUri
    assert uri is not None
    endpoint, bucket, key = where(ws)
    parts = urlsplit(endpoint)
    gs = uri.startswith("gs://")
    client = Minio(
        parts.netloc,
        access_key=env.get(ACCESS_KEY_ENV) or None,
        secret_key=env.get(SECRET_KEY_ENV) or None,
        region=ws.region or (GCS_REGION if gs else None),
        secure=parts.scheme == "https",
        http_client=http,
    )
    try:
        response = client.get_object(bucket, key)
    except S3Error as e:
        said = f"{endpoint} says {e.code}: {e.message}"
        if e.code in _DENIED:
            said += f" (see the keys in {ACCESS_KEY_ENV} and {SECRET_KEY_ENV})"
        raise WarmStartFailed(uri, said) from None
    except (MinioException, ValueError) as e:  # (a server that answers no S3; a bad name)
        raise WarmStartFailed(uri, f"{endpoint}: {e}") from None
    try:
        return _read(uri, response.headers.get("Content-Length"), response.stream(CHUNK), limit)
    finally:
        response.close()
        response.release_conn()


def _read(uri: str, length: str | None, chunks: Iterable[bytes], limit: int) -> bytes:
    """The body, refused past ``limit`` bytes: before a byte is read when its length says
    so, else as soon as it passes it."""
    too_big = f"is over {limit >> 20} MiB, more than any snapshot" if limit >= 1 << 20 else (
        f"is over {limit} bytes, more than any snapshot")  # fmt: skip
    if length is not None and length.isdigit() and int(length) > limit:
        raise WarmStartFailed(uri, too_big)
    out = bytearray()
    for chunk in chunks:
        out += chunk
        if len(out) > limit:
            raise WarmStartFailed(uri, too_big)
    return bytes(out)


def _reason(e: urllib3.exceptions.HTTPError) -> str:
    """What a transport error comes to, after its retries (a MaxRetryError's cause)."""
    cause = getattr(e, "reason", None) or e
    return f"{type(cause).__name__}: {cause}"
