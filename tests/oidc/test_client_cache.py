"""The client-record cache of client authentication (issue 13): the token endpoint no longer
reads the client record from Redis on every request, and a client disabled or given a new
secret by ANOTHER process (another worker, the CLI: a second store over the same real Redis
here) stops working within CLIENT_VERSION_CHECK_S of the injected clock; a change made through
the cache (this worker's admin API) at once."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.adapters.memory import MemorySingleUse
from gateway.adapters.redis_store import RedisClientStore
from gateway.authz.client_auth import CLIENT_VERSION_CHECK_S, ClientAuthenticator, ClientCache
from gateway.authz.clients import Client, hash_secret
from gateway.clock import FrozenClock
from gateway.errors import OAuthError

ISSUER = "https://gw.example"
PREFIX = "cc:"


def _gate(secret: str = "s3cret", **kw: object) -> Client:
    c = Client(client_id="gate-1", kind="gate", display_name="Metro L1 gate 3",
               secret_hash=hash_secret(secret), scopes=("codes:verify",), scene="metro")
    return dataclasses.replace(c, **kw)  # type: ignore[arg-type]


def _basic(secret: str) -> str:
    return "Basic " + base64.b64encode(f"gate-1:{secret}".encode()).decode()


class World:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.clock = FrozenClock()
        self.here = RedisClientStore(redis, PREFIX)       # this worker's store
        self.elsewhere = RedisClientStore(redis, PREFIX)  # another process's
        self.cache = ClientCache(self.here, self.clock.now)
        self.auth = ClientAuthenticator(self.cache, MemorySingleUse(self.clock), ISSUER,
                                        self.clock.now)

    async def gets(self) -> int:
        stats = await self.redis.info("commandstats")
        return int(stats.get("cmdstat_get", {}).get("calls", 0))

    async def accepted(self, secret: str = "s3cret") -> bool:
        try:
            await self.auth.authenticate(_basic(secret), {"grant_type": "client_credentials"})
            return True
        except OAuthError as exc:
            assert exc.http_status == 401 and exc.error == "invalid_client"
            return False


@pytest.fixture
async def world(redis_client: aioredis.Redis) -> AsyncIterator[World]:
    w = World(redis_client)
    await w.elsewhere.put(_gate())
    yield w


async def test_cached_requests_do_not_read_the_store(world: World) -> None:
    assert await world.accepted()
    before = await world.gets()
    for _ in range(200):
        world.clock.advance(0.004)  # 200 requests in 0.8 s: under one version check
        assert await world.accepted()
    assert await world.gets() - before == 0
    world.clock.advance(CLIENT_VERSION_CHECK_S)
    assert await world.accepted()
    assert await world.gets() - before == 1  # the version, not the record


async def test_disabled_elsewhere_stops_within_the_bound(world: World) -> None:
    assert await world.accepted()
    await world.elsewhere.put(_gate(disabled=True))
    world.clock.advance(CLIENT_VERSION_CHECK_S * 0.9)
    assert await world.accepted()  # still cached: the documented window
    world.clock.advance(CLIENT_VERSION_CHECK_S * 0.1)
    assert not await world.accepted()


async def test_rotated_elsewhere_old_secret_stops_new_one_works(world: World) -> None:
    assert await world.accepted("s3cret")
    await world.elsewhere.put(_gate("n3w"))
    world.clock.advance(CLIENT_VERSION_CHECK_S)
    assert not await world.accepted("s3cret")
    assert await world.accepted("n3w")


async def test_a_change_through_the_cache_is_seen_at_once(world: World) -> None:
    assert await world.accepted()
    await world.cache.put(_gate(disabled=True))  # this worker's admin API
    assert not await world.accepted()  # no clock movement at all


async def test_a_store_that_lost_its_data_drops_the_cache(world: World) -> None:
    assert await world.accepted()
    await world.redis.flushdb()
    world.clock.advance(CLIENT_VERSION_CHECK_S)
    assert not await world.accepted()


async def test_records_expire_even_if_the_version_never_moves(world: World) -> None:
    assert await world.accepted()
    # written behind the port's back (no version change): the TTL still bounds it
    await world.redis.set(f"{PREFIX}client:gate-1",
                          json.dumps(_gate(disabled=True).to_dict()))
    world.clock.advance(CLIENT_VERSION_CHECK_S)
    assert await world.accepted()
    world.clock.advance(60)
    assert not await world.accepted()


async def test_unknown_ids_are_not_cached(world: World) -> None:
    before = await world.gets()
    for _ in range(3):
        with pytest.raises(OAuthError):
            await world.auth.authenticate(
                "Basic " + base64.b64encode(b"nobody:x").decode(), {})
    assert await world.gets() - before == 3 + 1  # every one read (+ the first version read)


async def test_a_store_outage_is_not_answered_from_the_cache(world: World) -> None:
    assert await world.accepted()
    dead = aioredis.Redis.from_url("redis://127.0.0.1:1/0")  # nothing listens there
    cache = ClientCache(RedisClientStore(dead, PREFIX), world.clock.now)
    try:
        with pytest.raises(aioredis.ConnectionError):
            await cache.get("gate-1")
    finally:
        await dead.aclose()
