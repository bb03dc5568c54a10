"""One contract for the OIDC stores (login sessions, codes, refresh families, consents),
run on memory and on real Redis through the `backend` fixture."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from gateway.adapters import memory_oidc, redis_oidc
from gateway.authz.oidc import (
    GRACE,
    REUSED,
    REVOKED,
    ROTATED,
    UNKNOWN,
    CodeRecord,
    Consent,
    Family,
    LoginSession,
    new_id,
)
from tests.contract.conftest import Backend


@dataclass
class Stores:
    sessions: Any
    codes: Any
    refresh: Any
    consents: Any


def stores(b: Backend) -> Stores:
    if b.redis is not None:
        return Stores(redis_oidc.RedisLoginSessionStore(b.redis, b.prefix),
                      redis_oidc.RedisCodeStore(b.redis, b.prefix),
                      redis_oidc.RedisRefreshStore(b.redis, b.prefix),
                      redis_oidc.RedisConsentStore(b.redis, b.prefix))
    return Stores(memory_oidc.MemoryLoginSessionStore(b.clock),
                  memory_oidc.MemoryCodeStore(b.clock), memory_oidc.MemoryRefreshStore(b.clock),
                  memory_oidc.MemoryConsentStore())


def session(now: float) -> LoginSession:
    return LoginSession(id=new_id(), client_id="rp-x", redirect_uri="http://127.0.0.1/cb",
                        scopes=("openid", "profile"), state="st", nonce=None,
                        code_challenge="c" * 43, scan_secret_hash="a" * 64,
                        binding_hash="b" * 64, number=42, created_at=now,
                        expires_at=now + 180, browser="Chrome 120 on Linux",
                        place="127.0.0.1 (loopback)")


def family(now: float, fid: str | None = None) -> Family:
    return Family(family_id=fid or new_id(), client_id="rp-x", person_id="p-1",
                  scopes=("openid",), auth_time=int(now), created_at=now,
                  expires_at=now + 3600)


async def test_login_session_round_trip_and_compare_and_set(backend: Backend) -> None:
    st = stores(backend)
    s = session(backend.clock.now())
    await st.sessions.create(s, 240)
    got = await st.sessions.get(s.id)
    assert got == s
    assert await st.sessions.get(new_id()) is None
    assert await st.sessions.transition(s.id, "pending", "scanned",
                                        {"person_id": "p-1", "scanned_at": "1.5"})
    assert not await st.sessions.transition(s.id, "pending", "scanned", {"person_id": "p-2"})
    got = await st.sessions.get(s.id)
    assert got.status == "scanned" and got.person_id == "p-1" and got.scanned_at == 1.5
    assert not await st.sessions.transition(new_id(), "pending", "scanned", {})


async def test_login_session_single_transition_under_concurrency(backend: Backend) -> None:
    st = stores(backend)
    s = session(backend.clock.now())
    await st.sessions.create(s, 240)
    wins = await asyncio.gather(*(st.sessions.transition(s.id, "pending", "scanned",
                                                         {"person_id": f"p-{i}"})
                                  for i in range(20)))
    assert sum(wins) == 1
    winner = next(i for i, w in enumerate(wins) if w)
    assert (await st.sessions.get(s.id)).person_id == f"p-{winner}"


async def test_login_session_expires_with_its_ttl(backend: Backend) -> None:
    st = stores(backend)
    s = session(backend.clock.now())
    await st.sessions.create(s, 0.2)
    await backend.elapse(0.3)
    assert await st.sessions.get(s.id) is None


async def test_code_is_single_use_even_concurrently(backend: Backend) -> None:
    st = stores(backend)
    rec = CodeRecord(client_id="rp-x", redirect_uri="http://127.0.0.1/cb",
                     code_challenge="c" * 43, person_id="p-1", scopes=("openid",),
                     nonce="n", auth_time=1, family_id=new_id(), expires_at=2.0)
    await st.codes.put("h1", rec, 60)
    results = await asyncio.gather(*(st.codes.consume("h1") for _ in range(20)))
    assert all(r is not None and r[0] == rec for r in results)
    assert sum(1 for r in results if r[1]) == 1
    got = await st.codes.consume("h1")
    assert got is not None and got[1] is False   # the replay is recognised
    assert await st.codes.consume("h2") is None


async def test_code_record_expires(backend: Backend) -> None:
    st = stores(backend)
    rec = CodeRecord(client_id="rp-x", redirect_uri="u", code_challenge="c" * 43,
                     person_id="p", scopes=("openid",), nonce=None, auth_time=1,
                     family_id=new_id(), expires_at=2.0)
    await st.codes.put("h1", rec, 0.2)
    await backend.elapse(0.3)
    assert await st.codes.consume("h1") is None


async def test_refresh_rotation_grace_and_reuse(backend: Backend) -> None:
    st = stores(backend)
    now = backend.clock.now()
    fam = family(now)
    assert await st.refresh.create(fam, "t1", 3600)
    assert not await st.refresh.create(fam, "t9", 3600)        # ids are never reused
    assert await st.refresh.get(fam.family_id) == fam
    assert await st.refresh.token_state(fam.family_id, "t1") == "active"
    assert await st.refresh.rotate(fam.family_id, "t1", "t2", now, 2.0, "S2") == (ROTATED, None)
    assert await st.refresh.token_state(fam.family_id, "t1") == "spent"
    # within the grace window: the stored successor, and no new token comes alive
    assert await st.refresh.rotate(fam.family_id, "t1", "t3", now + 1.0, 2.0, "S3") \
        == (GRACE, "S2")
    assert await st.refresh.token_state(fam.family_id, "t3") is None
    assert await st.refresh.token_state(fam.family_id, "t2") == "active"
    assert await st.refresh.rotate(fam.family_id, "tx", "t4", now + 1.0, 2.0) == (UNKNOWN, None)
    assert await st.refresh.rotate(fam.family_id, "t1", "t5", now + 5.0, 2.0) == (REUSED, None)
    assert (await st.refresh.get(fam.family_id)).revoked
    assert await st.refresh.rotate(fam.family_id, "t2", "t6", now + 5.0, 2.0) == (REVOKED, None)
    assert await st.refresh.rotate(new_id(), "t1", "t7", now, 2.0) == (UNKNOWN, None)


async def test_refresh_rotation_is_single_use_under_concurrency(backend: Backend) -> None:
    st = stores(backend)
    now = backend.clock.now()
    fam = family(now)
    await st.refresh.create(fam, "t1", 3600)
    results = await asyncio.gather(*(st.refresh.rotate(fam.family_id, "t1", f"n{i}",
                                                       now, 0.0, f"S{i}") for i in range(20)))
    outcomes = [o for o, _ in results]
    assert outcomes.count(ROTATED) == 1
    assert set(outcomes) - {ROTATED} <= {REUSED, REVOKED}
    # with a grace window every loser gets the winner's successor, never its own
    fam2 = family(now)
    await st.refresh.create(fam2, "t1", 3600)
    results = await asyncio.gather(*(st.refresh.rotate(fam2.family_id, "t1", f"n{i}",
                                                       now, 2.0, f"S{i}") for i in range(20)))
    winner = next(i for i, (o, _) in enumerate(results) if o == ROTATED)
    assert [o for o, _ in results].count(ROTATED) == 1
    assert {r for r in results if r[0] != ROTATED} == {(GRACE, f"S{winner}")}


async def test_revoke_before_create_leaves_a_tombstone(backend: Backend) -> None:
    st = stores(backend)
    fam = family(backend.clock.now())
    await st.refresh.revoke(fam.family_id, 60)
    assert not await st.refresh.create(fam, "t1", 3600)
    assert await st.refresh.get(fam.family_id) is None
    other = family(backend.clock.now())
    await st.refresh.create(other, "t1", 3600)
    await st.refresh.revoke(other.family_id, 60)
    assert (await st.refresh.get(other.family_id)).revoked


async def test_consents_remember_list_forget(backend: Backend) -> None:
    st = stores(backend)
    await st.consents.remember("p-1", Consent("rp-b", ("openid",), 1.0))
    await st.consents.remember("p-1", Consent("rp-a", ("openid", "profile"), 2.0))
    await st.consents.remember("p-2", Consent("rp-a", ("openid",), 3.0))
    assert [c.client_id for c in await st.consents.list("p-1")] == ["rp-a", "rp-b"]
    assert await st.consents.get("p-1", "rp-a") == Consent("rp-a", ("openid", "profile"), 2.0)
    assert await st.consents.forget("p-1", "rp-a")
    assert not await st.consents.forget("p-1", "rp-a")
    assert await st.consents.get("p-1", "rp-a") is None
    assert await st.consents.get("p-2", "rp-a") is not None
    assert await st.consents.list("p-3") == []
