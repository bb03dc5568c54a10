"""Shared fixtures. Redis is real: a private redis-server for the session (see redis_server.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from hypothesis import settings as hypothesis_settings

from tests.redis_server import session_redis_url

# Property tests judge results, not speed: Hypothesis's default 200 ms deadline per example
# fails at random on a shared 2-core box (seen at load average 8 on a validation test whose
# examples take ~1 ms when the box is quiet). Speed lives in the benchmarks.
hypothesis_settings.register_profile("shared-box", deadline=None)
hypothesis_settings.load_profile("shared-box")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url, server = session_redis_url()
    try:
        yield url
    finally:
        if server is not None:
            server.stop()


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A private three-master Redis Cluster (or GATEWAY_TEST_REDIS_CLUSTER_URL)."""
    import os

    from tests.redis_server import RedisClusterServers

    url = os.environ.get("GATEWAY_TEST_REDIS_CLUSTER_URL")
    if url:
        yield url
        return
    cluster = RedisClusterServers().start()
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client on a freshly flushed database: each test starts from nothing."""
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A private PostgreSQL server for the session (or GATEWAY_TEST_DATABASE_URL)."""
    from tests.postgres_server import session_database_url

    url, server = session_database_url()
    try:
        yield url
    finally:
        if server is not None:
            server.remove()
