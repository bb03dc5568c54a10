"""Rate limits wired at the edge (gateway/web/ratelimit.py): per-kind configuration, 429 with
Retry-After and RateLimit header fields through the real app on real Redis, the Coalescer-fed
Redis limiter (atomic under concurrency, NOSCRIPT recovery), the in-memory one without Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st

from gateway.adapters.redis_ratelimit import RedisRateLimiter
from gateway.adapters.redis_store import Coalescer
from gateway.ratelimit import DEFAULT_LIMITS, Limit, MemoryRateLimiter
from gateway.ratelimit.leasing import LeasingRateLimiter
from gateway.settings import LIMIT_DEFAULTS, SettingsError, config_from_env, parse_limit
from gateway.web.ratelimit import CALLER_LIMITS
from loadtests import seed
from tests.web.conftest import Gateway, GatewayFactory

GATE = "gate-metro-l1-xiaoshizi"


# ---------------------------------------------------------------- configuration

def test_parse_limit_reads_rate_period_burst() -> None:
    assert parse_limit("X", "50/1/100") == Limit(rate=50, period_s=1, burst=100)
    assert parse_limit("X", " 30/60/10 ") == Limit(rate=30, period_s=60, burst=10)
    assert parse_limit("X", "5/0.5/1") == Limit(rate=5, period_s=0.5, burst=1)


@pytest.mark.parametrize("raw", ["", "50", "50/1", "50/1/100/2", "a/1/1", "1/x/1", "1/1/1.5",
                                 "0/1/1", "1/0/1", "1/1/0", "1/-1/1", "1/inf/1", "1/nan/1"])
def test_parse_limit_refuses_nonsense_naming_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError, match="GATEWAY_RATELIMIT_GATE"):
        parse_limit("GATEWAY_RATELIMIT_GATE", raw)


@given(st.integers(1, 10**6), st.integers(1, 86400), st.integers(1, 10**6))
def test_parse_limit_round_trips(rate: int, period: int, burst: int) -> None:
    assert parse_limit("X", f"{rate}/{period}/{burst}") == Limit(rate, period, burst)


def test_config_defaults_and_per_kind_overrides() -> None:
    c = config_from_env({})
    assert c.enabled and c.max_inflight == 256
    assert {k: c.limits[k] for k in DEFAULT_LIMITS} == dict(DEFAULT_LIMITS)
    assert c.limits["resident"] == LIMIT_DEFAULTS["resident"]
    assert c.lease
    c = config_from_env({"GATEWAY_RATELIMIT_GATE": "10/1/20", "GATEWAY_RATELIMIT_APP_ISSUE": "",
                         "GATEWAY_RATELIMIT_ENABLED": "false", "GATEWAY_MAX_INFLIGHT": "0",
                         "GATEWAY_RATELIMIT_LEASE": "off"})
    assert not c.lease
    assert c.limits["gate"] == Limit(10, 1, 20)
    assert c.limits["app_issue"] == DEFAULT_LIMITS["app_issue"]  # empty = default
    assert not c.enabled and c.max_inflight == 0


@pytest.mark.parametrize(("env", "message"), [
    ({"GATEWAY_RATELIMIT_GAET": "1/1/1"}, "names no rate-limit kind"),
    ({"GATEWAY_RATELIMIT_ENABLED": "maybe"}, "true or false"),
    ({"GATEWAY_MAX_INFLIGHT": "many"}, "GATEWAY_MAX_INFLIGHT must be an integer"),
    ({"GATEWAY_MAX_INFLIGHT": "-1"}, "between 0"),
])
def test_config_errors_are_clear(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        config_from_env(env)


async def test_bad_setting_fails_at_start_up(make_gateway: GatewayFactory,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SettingsError, match="GATEWAY_RATELIMIT_RP"):
        await make_gateway(rate_limits=config_from_env({"GATEWAY_RATELIMIT_RP": "100/1"}))


# ---------------------------------------------------------------- through the real app

async def _verify(gw: Gateway, token: str, i: int) -> Any:
    return await gw.client.post("/v1/codes/verify", json={
        "code": "YK1:JUNK", "scene": "metro", "request_id": f"rl-{i}"},
        headers={"Authorization": f"Bearer {token}"})


async def test_gate_over_its_limit_gets_429_with_headers(
        make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch,
        redis_client: aioredis.Redis) -> None:
    gw = await make_gateway(rate_limits=config_from_env({"GATEWAY_RATELIMIT_GATE": "1/60/3"}))
    limiter = gw.app[CALLER_LIMITS].limiter
    assert isinstance(limiter, LeasingRateLimiter)
    assert isinstance(limiter._inner, RedisRateLimiter)
    token = await gw.client_token(GATE)
    for i in range(3):
        r = await _verify(gw, token, i)
        assert r.status == 200 and (await r.json())["reason"] == "malformed"
        assert r.headers["RateLimit-Policy"] == '"gate";q=3;w=180'
        assert r.headers["RateLimit"].startswith(f'"gate";r={2 - i};')
        assert "Retry-After" not in r.headers
    r = await _verify(gw, token, 3)
    assert r.status == 429 and r.content_type == "application/problem+json"
    body = await r.json()
    assert body["code"] == "rate_limited" and body["status"] == 429 and body["request_id"]
    assert 59 <= int(r.headers["Retry-After"]) <= 60  # one cell per minute
    assert r.headers["RateLimit"].startswith('"gate";r=0;')
    assert r.headers["RateLimit-Policy"] == '"gate";q=3;w=180'
    # one key per gate, Cluster-safe hash tag, in Redis
    assert await redis_client.exists(f"gw:rl:{{gate:{GATE}}}") == 1
    # another gate has its own allowance
    other = await gw.client_token("gate-bus-route-111")
    r = await gw.client.post("/v1/codes/verify", json={
        "code": "YK1:JUNK", "scene": "bus", "request_id": "x"},
        headers={"Authorization": f"Bearer {other}"})
    assert r.status == 200


async def test_unauthenticated_calls_spend_nothing(
        make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch,
        redis_client: aioredis.Redis) -> None:
    gw = await make_gateway(rate_limits=config_from_env({"GATEWAY_RATELIMIT_GATE": "1/60/1"}))
    for i in range(5):
        r = await _verify(gw, "not-a-token", i)
        assert r.status == 401
    assert await redis_client.keys("gw:rl:*") == []


async def test_concurrent_gate_calls_never_exceed_the_burst(
        make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    gw = await make_gateway(rate_limits=config_from_env({"GATEWAY_RATELIMIT_GATE": "1/60/10"}))
    token = await gw.client_token(GATE)
    answers = await asyncio.gather(*[_verify(gw, token, i) for i in range(60)])
    statuses = sorted(a.status for a in answers)
    assert statuses.count(200) == 10 and statuses.count(429) == 50


async def test_resident_issuance_uses_app_issue_keyed_by_a_hash(
        make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch,
        redis_client: aioredis.Redis) -> None:
    gw = await make_gateway(rate_limits=config_from_env({"GATEWAY_RATELIMIT_APP_ISSUE": "1/60/2"}))
    await gw.client.get("/healthz")
    keys = seed.GatewayKeys.load(gw.settings.keys_dir)
    pid = seed.new_person_id()
    token = seed.mint_resident_token(keys, gw.settings.issuer, pid)
    auth = {"Authorization": f"Bearer {token}"}
    for _ in range(2):
        r = await gw.client.post("/v1/codes", json={"face": "ykm"}, headers=auth)
        assert r.status == 201, await r.text()
        assert r.headers["RateLimit-Policy"] == '"app_issue";q=2;w=120'
    r = await gw.client.post("/v1/codes", json={"face": "ykm"}, headers=auth)
    assert r.status == 429 and (await r.json())["code"] == "rate_limited"
    assert int(r.headers["Retry-After"]) >= 1
    stored = [k.decode() for k in await redis_client.keys("gw:rl:*")]
    sub = keys.data_keys.pairwise_subject(seed.DEFAULT_SECTOR, pid)
    assert len(stored) == 1 and stored[0].startswith("gw:rl:{issue:")
    assert sub not in stored[0] and pid not in stored[0]


async def test_limits_can_be_turned_off(make_gateway: GatewayFactory,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    limits = config_from_env({"GATEWAY_RATELIMIT_GATE": "1/60/1",
                              "GATEWAY_RATELIMIT_ENABLED": "false"})
    gw = await make_gateway(rate_limits=limits)
    token = await gw.client_token(GATE)
    for i in range(4):
        r = await _verify(gw, token, i)
        assert r.status == 200 and "RateLimit" not in r.headers


async def test_sandbox_without_redis_limits_in_memory(
        make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    limits = config_from_env({"GATEWAY_RATELIMIT_GATE": "1/60/2"})
    gw = await make_gateway(rate_limits=limits, use_redis=False)
    assert isinstance(gw.app[CALLER_LIMITS].limiter, MemoryRateLimiter)
    token = await gw.client_token(GATE)
    statuses = [(await _verify(gw, token, i)).status for i in range(4)]
    assert statuses == [200, 200, 429, 429]


# ---------------------------------------------------------------- the Coalescer-fed limiter

async def test_coalesced_limiter_is_atomic_across_pools(redis_url: str,
                                                        redis_client: aioredis.Redis) -> None:
    limit = Limit(rate=1, period_s=60, burst=25)
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    try:
        limiters = []
        for r in clients:
            lim = RedisRateLimiter(r, commands=Coalescer(r), prefix="t:")
            await lim.load()
            limiters.append(lim)
        decisions = await asyncio.gather(*[limiters[i % 2].hit("gate:g", limit)
                                           for i in range(400)])
        assert sum(d.allowed for d in decisions) == 25
        denied = [d for d in decisions if not d.allowed]
        assert all(d.retry_after_s > 0 and d.remaining == 0 for d in denied)
    finally:
        for r in clients:
            await r.aclose()


async def test_coalesced_limiter_reloads_its_script_after_a_flush(
        redis_client: aioredis.Redis) -> None:
    coalescer = Coalescer(redis_client)
    assert coalescer.pipelined  # NOSCRIPT arrives through the gateway's own RESP socket
    lim = RedisRateLimiter(redis_client, commands=coalescer)
    await lim.load()
    limit = Limit(rate=1, period_s=60, burst=2)
    assert (await lim.hit("gate:a", limit)).allowed
    await redis_client.script_flush()
    d = await lim.hit("gate:a", limit)
    assert d.allowed and d.remaining == 0
    assert not (await lim.hit("gate:a", limit)).allowed


async def test_coalesced_limiter_refuses_braces_and_dear_costs(
        redis_client: aioredis.Redis) -> None:
    lim = RedisRateLimiter(redis_client, commands=Coalescer(redis_client))
    await lim.load()
    with pytest.raises(ValueError, match="braces"):
        await lim.hit("gate:{x}", Limit(1, 1, 1))
    with pytest.raises(ValueError, match="burst"):
        await lim.hit("gate:x", Limit(1, 1, 1), cost=2)


# ---------------------------------------------------------------- leases of cells

async def _leasing(redis_client: aioredis.Redis, **kw: Any) -> LeasingRateLimiter:
    inner = RedisRateLimiter(redis_client, commands=Coalescer(redis_client), prefix="t:")
    await inner.load()
    return LeasingRateLimiter(inner, **kw)


async def test_leases_never_admit_more_than_the_burst(redis_url: str,
                                                      redis_client: aioredis.Redis) -> None:
    limit = Limit(rate=1, period_s=60, burst=100)   # leases of 10
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    try:
        workers = [await _leasing(r) for r in clients]   # two workers, one Redis
        assert workers[0].lease_size(limit) == 10
        decisions = await asyncio.gather(*[workers[i % 2].hit("gate:g", limit)
                                           for i in range(400)])
        assert sum(d.allowed for d in decisions) == 100
        assert all(d.retry_after_s > 0 for d in decisions if not d.allowed)
        assert all(0 <= d.remaining <= 100 for d in decisions)
    finally:
        for r in clients:
            await r.aclose()


async def test_an_expired_lease_drops_its_cells(redis_client: aioredis.Redis) -> None:
    lim = await _leasing(redis_client, lease_s=0.05)
    limit = Limit(rate=1, period_s=3600, burst=100)
    assert (await lim.hit("gate:e", limit)).allowed      # leased 10, 9 left locally
    assert (await lim.hit("gate:e", limit)).allowed      # from the lease
    await asyncio.sleep(0.08)
    assert (await lim.hit("gate:e", limit)).allowed      # a new lease of 10
    peek = await lim._inner.hit("gate:e", limit, 0)
    assert peek.remaining == 80   # 20 cells counted in Redis: under-admits, never over


class _CountingLimiter:
    """The shared limiter, counting the hits and cells asked of it."""

    def __init__(self, inner: RedisRateLimiter) -> None:
        self.inner = inner
        self.hits: list[int] = []

    async def hit(self, key: str, limit: Limit, cost: int = 1) -> Any:
        self.hits.append(cost)
        return await self.inner.hit(key, limit, cost)


async def test_the_next_lease_is_asked_for_before_this_one_runs_out(
        redis_client: aioredis.Redis) -> None:
    inner = RedisRateLimiter(redis_client, commands=Coalescer(redis_client), prefix="t:")
    await inner.load()
    counting = _CountingLimiter(inner)
    lim = LeasingRateLimiter(counting)
    limit = Limit(rate=1, period_s=3600, burst=10_000)   # first lease 10; ~no refill in Redis
    assert (await lim.hit("gate:p", limit)).allowed           # waits for the first lease
    assert counting.hits == [10]
    taken = [lim.take("gate:p", limit) for _ in range(7)]     # 2 cells left: < a quarter
    assert all(d is not None and d.allowed for d in taken)
    await asyncio.sleep(0.05)                                 # the prefetch lands meanwhile
    assert len(counting.hits) == 2
    assert 10 <= counting.hits[1] <= 2 * 8                    # at most 2x what was spent (1 + 7)
    # the two leases are spent in order without any request waiting: 2 + the new lease
    more = [lim.take("gate:p", limit) for _ in range(2 + counting.hits[1])]
    assert all(d is not None and d.allowed for d in more)
    await asyncio.sleep(0.05)                                 # any refill in flight lands
    peek = await inner.hit("gate:p", limit, 0)
    assert 10_000 - peek.remaining == sum(counting.hits)      # every cell spent was counted


async def test_a_busy_subject_gets_bigger_leases(redis_client: aioredis.Redis) -> None:
    inner = RedisRateLimiter(redis_client, commands=Coalescer(redis_client), prefix="t:")
    await inner.load()
    counting = _CountingLimiter(inner)
    lim = LeasingRateLimiter(counting)
    limit = Limit(rate=100_000, period_s=1, burst=100_000)
    for _ in range(3000):
        assert (await lim.hit("gate:busy", limit)).allowed
    assert max(counting.hits) > 10                   # sized to the measured rate...
    assert max(counting.hits) <= 1000                # ...within b // 10 and max_cells
    assert len(counting.hits) < 3000 // 10           # fewer trips than leases of 10


async def test_a_refused_prefetch_keeps_the_boundary_exact(redis_url: str,
                                                           redis_client: aioredis.Redis) -> None:
    limit = Limit(rate=1, period_s=3600, burst=40)   # leases of 4
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(3)]
    try:
        workers = [await _leasing(r) for r in clients]
        decisions = []
        for i in range(120):   # one at a time, round robin: prefetches happen and get refused
            decisions.append(await workers[i % 3].hit("gate:edge", limit))
        assert sum(d.allowed for d in decisions) <= 40
        assert sum(d.allowed for d in decisions) >= 40 - 3 * 2 * 4   # ≤ two leases per worker
    finally:
        for r in clients:
            await r.aclose()


async def test_small_bursts_are_never_leased(redis_client: aioredis.Redis) -> None:
    lim = await _leasing(redis_client)
    limit = Limit(rate=1, period_s=3600, burst=19)
    assert lim.lease_size(limit) == 1
    assert sum([(await lim.hit("res:x", limit)).allowed for _ in range(25)]) == 19


async def test_leasing_can_be_turned_off(make_gateway: GatewayFactory,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    gw = await make_gateway(rate_limits=config_from_env({"GATEWAY_RATELIMIT_LEASE": "false"}))
    assert isinstance(gw.app[CALLER_LIMITS].limiter, RedisRateLimiter)
    token = await gw.client_token(GATE)
    assert (await _verify(gw, token, 0)).status == 200


async def test_gate_with_a_leased_limit_gets_exactly_its_burst_through_the_app(
        make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    limits = config_from_env({"GATEWAY_RATELIMIT_GATE": "1/60/40"})   # leases of 4
    gw = await make_gateway(rate_limits=limits)
    token = await gw.client_token(GATE)
    answers = await asyncio.gather(*[_verify(gw, token, i) for i in range(70)])
    statuses = [a.status for a in answers]
    assert statuses.count(200) == 40 and statuses.count(429) == 30
