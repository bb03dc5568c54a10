"""One contract suite for the identity store (memory and real Redis), through the service:
a credential links to one person only (also under concurrency), linking is all or nothing,
the trust root finds one person, revocations carry a version."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from gateway.adapters.memory_identity import MemoryIdentityStore
from gateway.adapters.redis_identity import RedisIdentityStore
from gateway.authz.datakeys import DataKeys
from gateway.errors import IdentityMismatch
from gateway.services.identity import (
    CredentialInput,
    IdentityService,
    Person,
)
from gateway.services.upstream import UpstreamIdentity
from tests.deny_lists import memory_deny_list

from .conftest import Backend

CID_A = "500106195803129997"
CID_B = "500240197506219985"


def make(backend: Backend) -> tuple[Any, IdentityService]:
    store: Any = (RedisIdentityStore(backend.redis, backend.prefix, backend.coalescer)
                  if backend.redis is not None else MemoryIdentityStore())
    return store, IdentityService(store, backend.clock, DataKeys(os.urandom(32)),
                                  deny_list=memory_deny_list(backend.clock.now))


def ident(cid: str, account: str, platform: str = "ykb", region: str | None = None,
          ) -> UpstreamIdentity:
    return UpstreamIdentity(platform, region, account, cid, "张伟", "j", "iss", 0, 1)  # type: ignore[arg-type]


async def test_resolve_creates_then_finds_one_person(backend: Backend) -> None:
    _, svc = make(backend)
    p1 = await svc.resolve_upstream(ident(CID_A, "ykm-1"))
    p2 = await svc.resolve_upstream(ident(CID_A, "essc-cq-1", "essc", "CQ"))
    p3 = await svc.resolve_upstream(ident(CID_A, "ykm-1"))
    assert p1.person_id == p2.person_id == p3.person_id
    assert len(p1.person_id) == 32 and int(p1.person_id, 16) >= 0
    got = await svc.get(p1.person_id)
    assert got is not None and {c.kind for c in got.credentials} == {"ykm", "essc"}
    assert await svc.citizen_id(p1.person_id) == CID_A
    assert CID_A not in got.to_json() and "ykm-1" not in got.to_json()
    assert await svc.essc_account(p1.person_id) == ("CQ", "essc-cq-1")


async def test_a_credential_links_to_one_person_only(backend: Backend) -> None:
    _, svc = make(backend)
    a = await svc.resolve_upstream(ident(CID_A, "ykm-1"))
    with pytest.raises(IdentityMismatch):
        await svc.resolve_upstream(ident(CID_B, "ykm-1"))
    b = await svc.resolve_upstream(ident(CID_B, "ykm-2"))
    with pytest.raises(IdentityMismatch):
        await svc.link_upstream(b.person_id, ident(CID_A, "ykm-3"))
    assert (await svc.find_by_credential("ykm", None, "ykm-1")).person_id == a.person_id  # type: ignore[union-attr]


async def test_concurrent_links_of_one_credential_one_winner(backend: Backend) -> None:
    _, svc = make(backend)
    people = [await svc.resolve_upstream(ident(c, f"ykm-{i}"))
              for i, c in enumerate((CID_A, CID_B, "510104198802049963", "500103199207159953"))]
    card = CredentialInput("ssc_card", "CQ", "CQ100000025")
    results = await asyncio.gather(*(svc._link(p, card) for p in people),
                                   return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, IdentityMismatch) for r in results if isinstance(r, BaseException))
    holders = [p for p in [await svc.get(x.person_id) for x in people]
               if p is not None and any(c.kind == "ssc_card" for c in p.credentials)]
    assert len(holders) == 1


async def test_concurrent_first_sight_creates_one_person(backend: Backend) -> None:
    _, svc = make(backend)
    got = await asyncio.gather(*(svc.resolve_upstream(ident(CID_A, f"ykm-{i}"))
                                 for i in range(8)))
    assert len({p.person_id for p in got}) == 1
    p = await svc.get(got[0].person_id)
    assert p is not None and len(p.credentials) == 8


async def test_link_is_all_or_nothing(backend: Backend) -> None:
    store, svc = make(backend)
    p = await svc.resolve_upstream(ident(CID_A, "ykm-1"))

    async def failing_replace(old: Person, new: Person) -> bool:
        raise OSError("store lost mid-link")

    original = store.replace
    store.replace = failing_replace
    with pytest.raises(OSError):
        await svc.link_upstream(p.person_id, ident(CID_A, "essc-x", "essc", "CQ"))
    store.replace = original
    rh = svc.ref_hash("essc", "CQ", "essc-x")
    assert await store.lookup("credential", rh) is None  # the claim was released
    assert len((await svc.get(p.person_id)).credentials) == 1  # type: ignore[union-attr]
    # and another person can now take it
    b = await svc.resolve_upstream(ident(CID_B, "essc-x", "essc", "CQ"))
    assert b.person_id != p.person_id


async def test_stale_index_entry_is_taken_over(backend: Backend) -> None:
    store, svc = make(backend)
    rh = svc.ref_hash("ykm", None, "ykm-9")
    assert await store.claim("credential", rh, "f" * 32) is None  # a crash left this behind
    p = await svc.resolve_upstream(ident(CID_A, "ykm-9"))
    assert await store.lookup("credential", rh) == p.person_id


async def test_cas_refuses_stale_versions(backend: Backend) -> None:
    store, svc = make(backend)
    p = await svc.resolve_upstream(ident(CID_A, "ykm-1"))
    fresh = await store.get(p.person_id)
    from dataclasses import replace
    assert await store.replace(fresh, replace(fresh, version=fresh.version + 1))
    assert not await store.replace(fresh, replace(fresh, version=fresh.version + 1))
    assert not await store.create(fresh)


async def test_revocations_versioned_and_loss_visible(backend: Backend) -> None:
    store, svc = make(backend)
    p = await svc.resolve_upstream(ident(CID_A, "ykm-1"))
    p, card, _ = await svc._link(p, CredentialInput("ssc_card", "CQ", "CQ100000025"))
    v0 = await store.revocation_version()
    await svc.report_loss(p.person_id, card.credential_id)
    assert await store.revocation_version() == v0 + 1
    v, revoked = await store.revocations()
    assert card.ref_hash in revoked and v == v0 + 1
    other = IdentityService(store, backend.clock, svc.keys, ref_seal_key=b"k" * 32,
                            deny_list=memory_deny_list(backend.clock.now))
    assert not other.is_card_revoked(card.ref_hash)
    assert await other.refresh_revocations()
    assert other.is_card_revoked(card.ref_hash)
    assert svc.is_card_revoked(card.ref_hash)
    # idempotent: no version bump for no change
    await store.set_revoked(card.ref_hash, True)
    assert await store.revocation_version() == v0 + 1


async def test_unlink_frees_the_credential(backend: Backend) -> None:
    store, svc = make(backend)
    p = await svc.resolve_upstream(ident(CID_A, "ykm-1"))
    p2 = await svc.resolve_upstream(ident(CID_A, "essc-1", "essc", "SC"))
    cred = next(c for c in p2.credentials if c.kind == "essc")
    await svc.unlink(p.person_id, cred.credential_id)
    assert await svc.find_by_credential("essc", "SC", "essc-1") is None
    assert await store.lookup("credential", cred.ref_hash) is None


async def test_redis_keys_share_hash_tags(backend: Backend) -> None:
    if backend.redis is None:
        return
    _, svc = make(backend)
    p = await svc.resolve_upstream(ident(CID_A, "ykm-1"))
    await svc._link(p, CredentialInput("ssc_card", "CQ", "CQ100000025", "lost"))
    if isinstance(backend.redis, RedisCluster):  # KEYS goes to one random node unless told
        raw = await backend.redis.keys("*", target_nodes=RedisCluster.PRIMARIES)
    else:
        raw = await backend.redis.keys("*")
    keys = [k.decode() for k in raw]
    assert keys and all(k.startswith(backend.prefix) and "{" in k and "}" in k for k in keys)
    assert all(CID_A not in k for k in keys)
