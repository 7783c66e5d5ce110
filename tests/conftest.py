"""Shared fixtures: one real redis-server for the whole session, a clean db per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tideline.embedded import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def r(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()
