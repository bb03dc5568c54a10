"""One contract for the device authorization store (RFC 8628), run on memory, real Redis and
a real Redis Cluster through the `backend` fixture: lookups by device and user code, one
live authorization per user code, compare-and-set (an approved code is redeemed once, even
under 50 concurrent redemptions), the poll record behind slow_down, expiry with the TTL."""

from __future__ import annotations

import asyncio

from gateway.adapters.memory_device_grants import MemoryDeviceGrantStore
from gateway.adapters.redis_device_grants import RedisDeviceGrantStore
from gateway.authz import device as dg
from gateway.authz.device import DeviceAuthorization
from gateway.authz.oidc import new_id
from gateway.authz.ports import DeviceGrantStore
from tests.contract.conftest import Backend


def store(b: Backend) -> DeviceGrantStore:
    if b.redis is not None:
        return RedisDeviceGrantStore(b.redis, b.prefix)
    return MemoryDeviceGrantStore(b.clock)


def auth(now: float) -> DeviceAuthorization:
    return DeviceAuthorization(id=new_id(), client_id="rp-kiosk", scopes=("openid", "profile"),
                               number=42, family_id=new_id(), created_at=now,
                               expires_at=now + 600)


async def test_round_trip_and_lookups(backend: Backend) -> None:
    st, a = store(backend), auth(backend.clock.now())
    assert await st.create(a, "dh-1", "uh-1", 900)
    assert await st.get(a.id) == a
    assert await st.by_device_code("dh-1") == a.id
    assert await st.by_user_code("uh-1") == a.id
    assert await st.by_device_code("uh-1") is None      # the two indexes are apart
    assert await st.by_user_code("dh-1") is None
    assert await st.get(new_id()) is None


async def test_a_live_user_code_is_never_shared(backend: Backend) -> None:
    st, now = store(backend), backend.clock.now()
    first, second = auth(now), auth(now)
    assert await st.create(first, "dh-1", "uh-same", 900)
    assert not await st.create(second, "dh-2", "uh-same", 900)
    assert await st.by_user_code("uh-same") == first.id
    assert await st.by_device_code("dh-2") is None and await st.get(second.id) is None


async def test_compare_and_set_moves_status_and_fields(backend: Backend) -> None:
    st, a = store(backend), auth(backend.clock.now())
    await st.create(a, "dh", "uh", 900)
    assert await st.transition(a.id, dg.PENDING, dg.TAPPED,
                               {"person_id": "p-1", "via": "card", "card": "CQ****1234"})
    assert not await st.transition(a.id, dg.PENDING, dg.SCANNED, {"person_id": "p-2"})
    got = await st.get(a.id)
    assert got is not None and got.status == dg.TAPPED and got.person_id == "p-1"
    assert got.via == "card" and got.card == "CQ****1234"
    assert await st.transition(a.id, dg.TAPPED, dg.APPROVED, {"decided_at": "12.5"})
    got = await st.get(a.id)
    assert got is not None and got.decided_at == 12.5
    assert not await st.transition(new_id(), dg.PENDING, dg.SCANNED, {})


async def test_an_approved_code_is_redeemed_once_under_concurrency(backend: Backend) -> None:
    st, a = store(backend), auth(backend.clock.now())
    await st.create(a, "dh", "uh", 900)
    await st.transition(a.id, dg.PENDING, dg.SCANNED, {"person_id": "p-1"})
    await st.transition(a.id, dg.SCANNED, dg.APPROVED, {"decided_at": "1"})
    wins = await asyncio.gather(*(st.transition(a.id, dg.APPROVED, dg.REDEEMED, {})
                                  for _ in range(50)))
    assert sum(wins) == 1
    got = await st.get(a.id)
    assert got is not None and got.status == dg.REDEEMED


async def test_poll_records_and_slows_down(backend: Backend) -> None:
    st, a = store(backend), auth(backend.clock.now())
    await st.create(a, "dh", "uh", 900)
    first = await st.poll(a.id, 100.0, 5)
    assert first is not None and first[1] is False and first[0].last_poll == 100.0
    assert first[0].interval == 5
    soon = await st.poll(a.id, 103.0, 5)            # 3 s < 5 s: slow down, interval 10
    assert soon is not None and soon[1] is True and soon[0].interval == 10
    early = await st.poll(a.id, 111.0, 5)           # 8 s < 10 s: again, 15
    assert early is not None and early[1] is True and early[0].interval == 15
    ok = await st.poll(a.id, 126.5, 5)              # 15.5 s: in time, the interval stays
    assert ok is not None and ok[1] is False and ok[0].interval == 15
    assert (await st.get(a.id)).interval == 15      # type: ignore[union-attr]
    assert await st.poll(new_id(), 1.0, 5) is None


async def test_concurrent_polls_slow_down_all_but_one(backend: Backend) -> None:
    st, a = store(backend), auth(backend.clock.now())
    await st.create(a, "dh", "uh", 900)
    got = await asyncio.gather(*(st.poll(a.id, 200.0, 5) for _ in range(20)))
    assert sum(1 for g in got if g is not None and not g[1]) == 1
    assert (await st.get(a.id)).interval == 5 + 19 * 5   # type: ignore[union-attr]


async def test_expires_with_its_ttl(backend: Backend) -> None:
    st, a = store(backend), auth(backend.clock.now())
    await st.create(a, "dh", "uh", 0.2)
    await backend.elapse(0.3)
    assert await st.get(a.id) is None
    assert await st.by_device_code("dh") is None and await st.by_user_code("uh") is None
    assert await st.create(auth(backend.clock.now()), "dh-2", "uh", 60)   # code free again
