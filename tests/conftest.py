"""Shared fixtures: one real redis-server for the whole session (a clean db per test), a
Redis Cluster, a Kafka broker and an S3 server when a test asks for them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.helpers import tls_certs
from tests.s3 import MotoServer
from tideline.demo.embedded import EmbeddedCluster, EmbeddedKafka, EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[EmbeddedCluster]:
    """A real Redis Cluster (three primaries) for the tests that run on both kinds."""
    with EmbeddedCluster() as cluster:
        yield cluster


@pytest.fixture
def redis_kind(request: pytest.FixtureRequest) -> str:
    """Which Redis ``r`` and ``redis_under_test`` are: "one redis", unless a test is
    parametrised over it (``tests.helpers.on_one_redis_and_a_cluster``)."""
    return getattr(request, "param", "one redis")


@pytest.fixture
def redis_under_test(
    request: pytest.FixtureRequest, redis_kind: str
) -> EmbeddedRedis | EmbeddedCluster:
    """The Redis of ``redis_kind`` (``.url``, ``.client()``)."""
    name = {"one redis": "redis_server", "redis cluster": "redis_cluster"}[redis_kind]
    server: EmbeddedRedis | EmbeddedCluster = request.getfixturevalue(name)
    return server


@pytest.fixture
def r(redis_under_test: EmbeddedRedis | EmbeddedCluster) -> Iterator[redis.Redis]:
    """A client of ``redis_under_test``, emptied first."""
    client = redis_under_test.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def kafka_certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The test broker's TLS listener's CA and certificates, and a client's (tls_certs)."""
    return tls_certs(tmp_path_factory.mktemp("kafka-tls"))


@pytest.fixture(scope="session")
def kafka_broker(kafka_certs: dict[str, Path]) -> Iterator[EmbeddedKafka]:
    """A real Kafka broker (one KRaft node, jars from `make kafka-bin`) for the session; a
    second listener (``bootstrap_tls``) takes TLS clients with a certificate from its CA."""
    with EmbeddedKafka(tls=(kafka_certs["broker.pem"], kafka_certs["ca.crt"])) as broker:
        yield broker


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer]:
    """moto's S3 server on 127.0.0.1 (`make s3-bin`), with an IAM user's keys it checks."""
    with MotoServer() as server:
        yield server
