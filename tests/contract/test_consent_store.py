"""ONE contract suite for the consent store: memory and real Redis (tests/contract/conftest.py).

The atomic steps (transition, take_use) decide on status, lifetime and uses in the same step
that changes them; the concurrency tests fire many coroutines at one consent at once.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from gateway.adapters.memory_consent import MemoryConsentStore
from gateway.adapters.redis_consent import RedisConsentStore
from gateway.services.consents import (
    AUTHORISED,
    AWAITING,
    EXHAUSTED,
    EXPIRED,
    REJECTED,
    REVOKED,
    Consent,
    ConsentStore,
)

from .conftest import Backend


def store_for(backend: Backend) -> ConsentStore:
    if backend.redis is not None:
        return RedisConsentStore(backend.redis, backend.prefix, backend.coalescer)
    return MemoryConsentStore(backend.clock)


def consent(backend: Backend, **kw: Any) -> Consent:
    now = backend.clock.now()
    base: dict[str, Any] = dict(
        id="cns_" + secrets.token_urlsafe(16), client_id="rp-a", sector="sec-a",
        subject="sub-a", person_id="p-1", types=("degree", "qualification"),
        purpose_code="hr.check", purpose_text="入职核验", created_at=now,
        approve_by=now + 600, expires_at=now + 3600, max_uses=3)
    base.update(kw)
    return Consent(**base)


async def test_create_get_round_trip_and_person_list(backend: Backend) -> None:
    s = store_for(backend)
    c = consent(backend)
    await s.create(c, "d1", 86400)
    got = await s.get(c.id)
    assert got == c
    assert await s.get("cns_" + "x" * 22) is None
    other = consent(backend, person_id="p-2")
    await s.create(other, "d2", 86400)
    assert [x.id for x in await s.for_person("p-1")] == [c.id]
    assert [x.id for x in await s.for_person("p-2")] == [other.id]
    assert await s.for_person("p-3") == []


async def test_transitions_follow_the_status_machine(backend: Backend) -> None:
    s = store_for(backend)
    c = consent(backend)
    await s.create(c, "d", 86400)
    now = backend.clock.now()
    assert await s.transition(c.id, (AWAITING,), AUTHORISED, now) == (True, AWAITING)
    assert await s.transition(c.id, (AWAITING,), REJECTED, now) == (False, AUTHORISED)
    got = await s.get(c.id)
    assert got is not None and got.status == AUTHORISED and got.decided_at == now
    assert await s.transition(c.id, (AWAITING, AUTHORISED), REVOKED, now + 1) == (True, AUTHORISED)
    got = await s.get(c.id)
    assert got is not None and got.status == REVOKED and got.revoked_at == now + 1
    assert await s.transition(c.id, (AUTHORISED,), AUTHORISED, now) == (False, REVOKED)
    assert await s.transition("cns_" + "y" * 22, (AWAITING,), AUTHORISED, now) == (False, None)


async def test_expiry_is_decided_by_the_clock_inside_the_atomic_step(backend: Backend) -> None:
    s = store_for(backend)
    c = consent(backend)
    await s.create(c, "d", 86400)
    late = c.approve_by
    assert await s.transition(c.id, (AWAITING,), AUTHORISED, late) == (False, EXPIRED)
    c2 = consent(backend)
    await s.create(c2, "d2", 86400)
    assert (await s.transition(c2.id, (AWAITING,), AUTHORISED, c2.created_at))[0]
    assert (await s.take_use(c2.id, c2.expires_at - 1))[0]
    assert await s.take_use(c2.id, c2.expires_at) == (False, EXPIRED, 1)


async def test_uses_are_counted_and_the_last_one_exhausts(backend: Backend) -> None:
    s = store_for(backend)
    c = consent(backend, max_uses=2)
    await s.create(c, "d", 86400)
    now = backend.clock.now()
    assert await s.take_use(c.id, now) == (False, AWAITING, 0)
    await s.transition(c.id, (AWAITING,), AUTHORISED, now)
    assert await s.take_use(c.id, now) == (True, AUTHORISED, 1)
    assert await s.take_use(c.id, now) == (True, AUTHORISED, 2)
    assert await s.take_use(c.id, now) == (False, EXHAUSTED, 2)
    got = await s.get(c.id)
    assert got is not None and got.status == EXHAUSTED and got.uses == 2
    await s.refund_use(c.id)
    got = await s.get(c.id)
    assert got is not None and got.status == AUTHORISED and got.uses == 1
    assert await s.take_use(c.id, now) == (True, AUTHORISED, 2)
    assert await s.take_use("cns_" + "z" * 22, now) == (False, None, 0)


async def test_revocation_stops_the_next_use(backend: Backend) -> None:
    s = store_for(backend)
    c = consent(backend, max_uses=10)
    await s.create(c, "d", 86400)
    now = backend.clock.now()
    await s.transition(c.id, (AWAITING,), AUTHORISED, now)
    assert (await s.take_use(c.id, now))[0]
    await s.transition(c.id, (AUTHORISED,), REVOKED, now)
    assert await s.take_use(c.id, now) == (False, REVOKED, 1)


@pytest.mark.parametrize("max_uses", [1, 7])
async def test_concurrent_fetches_never_share_the_last_use(backend: Backend,
                                                          max_uses: int) -> None:
    s = store_for(backend)
    c = consent(backend, max_uses=max_uses)
    await s.create(c, "d", 86400)
    now = backend.clock.now()
    await s.transition(c.id, (AWAITING,), AUTHORISED, now)
    results = await asyncio.gather(*(s.take_use(c.id, now) for _ in range(50)))
    taken = [r for r in results if r[0]]
    assert len(taken) == max_uses
    assert sorted(r[2] for r in taken) == list(range(1, max_uses + 1))
    got = await s.get(c.id)
    assert got is not None and got.uses == max_uses and got.status == EXHAUSTED


async def test_concurrent_approve_and_revoke_have_one_winner_each_step(backend: Backend) -> None:
    s = store_for(backend)
    c = consent(backend)
    await s.create(c, "d", 86400)
    now = backend.clock.now()
    results = await asyncio.gather(
        *(s.transition(c.id, (AWAITING,), AUTHORISED if i % 2 else REJECTED, now)
          for i in range(20)))
    assert sum(1 for ok, _ in results if ok) == 1


async def test_approval_code_is_single_use_and_bound(backend: Backend) -> None:
    s = store_for(backend)
    c = consent(backend)
    await s.create(c, "digest-1", 86400)
    assert await s.approval_code("digest-1") == c.id
    assert await s.approval_code("digest-2") is None
    assert not await s.spend_approval_code("digest-1", "cns_" + "o" * 22)
    assert await s.approval_code("digest-1") == c.id
    spent = await asyncio.gather(*(s.spend_approval_code("digest-1", c.id) for _ in range(10)))
    assert spent.count(True) == 1
    assert await s.approval_code("digest-1") is None


async def test_approval_code_lives_only_the_approval_window(backend: Backend) -> None:
    s = store_for(backend)
    now = backend.clock.now()
    c = consent(backend, approve_by=now + 0.2)
    await s.create(c, "digest-w", 86400)
    assert await s.approval_code("digest-w") == c.id
    await backend.elapse(0.3)
    assert await s.approval_code("digest-w") is None


async def test_subject_index(backend: Backend) -> None:
    s = store_for(backend)
    assert await s.person_for_subject("sec", "sub") is None
    await s.remember_subject("sec", "sub", "p-9", 0.2)
    assert await s.person_for_subject("sec", "sub") == "p-9"
    assert await s.person_for_subject("other-sec", "sub") is None
    await backend.elapse(0.3)
    assert await s.person_for_subject("sec", "sub") is None
