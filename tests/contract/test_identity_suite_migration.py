"""Crypto-suite migration over every identity store (memory, Redis, Redis Cluster): records
written under GATEWAY_CRYPTO_SUITE=intl stay readable and findable under gm, new writes use gm,
`IdentityService.reseal` moves every record (hashes, ciphertexts, index entries, revocations)
and reports it, and a second run changes nothing (docs/crypto-suites.md "Migration")."""

from __future__ import annotations

import os
import secrets
from typing import Any

import pytest

from gateway.adapters.memory_identity import MemoryIdentityStore
from gateway.adapters.redis_identity import RedisIdentityStore
from gateway.authz.datakeys import GM_PREFIX, DataKeys, suite_of
from gateway.errors import IdentityMismatch
from gateway.services.identity import CredentialInput, GateIdentityAdapter, IdentityService
from gateway.services.upstream import UpstreamIdentity
from tests.deny_lists import memory_deny_list

from .conftest import Backend

CID_A = "500106195803129997"
CID_B = "500240197506219985"


def ident(cid: str, account: str, platform: str = "ykb", region: str | None = None,
          ) -> UpstreamIdentity:
    return UpstreamIdentity(platform, region, account, cid, "张伟", "j", "iss", 0, 1)  # type: ignore[arg-type]


def store_for(backend: Backend) -> Any:
    if backend.redis is None:
        return MemoryIdentityStore()
    # a prefix of its own: person_ids() must see this test's records only
    return RedisIdentityStore(backend.redis, f"{backend.prefix}{secrets.token_hex(4)}:",
                              backend.coalescer)


async def test_person_ids_lists_every_record(backend: Backend) -> None:
    store = store_for(backend)
    svc = IdentityService(store, backend.clock, DataKeys(os.urandom(32)),
                          deny_list=memory_deny_list(backend.clock.now))
    made = {(await svc.resolve_upstream(ident(cid, f"ykm-{i}"))).person_id
            for i, cid in enumerate((CID_A, CID_B))}
    assert {pid async for pid in store.person_ids()} == made


async def test_intl_data_readable_under_gm_and_reseal_moves_it(backend: Backend) -> None:
    store = store_for(backend)
    master = os.urandom(32)
    intl = IdentityService(store, backend.clock, DataKeys(master, "intl"),
                           deny_list=memory_deny_list(backend.clock.now))
    p = await intl.resolve_upstream(ident(CID_A, "ykm-1"))
    p, card, _ = await intl._link(p, CredentialInput("ssc_card", "CQ", "CQ100000025"))
    p, lost, _ = await intl._link(p, CredentialInput("ssc_card", "CQ", "CQ100000033"))
    await intl.report_loss(p.person_id, lost.credential_id)
    assert suite_of(p.trust_root_hash) == "intl" and len(p.trust_root_hash) == 64

    gm = IdentityService(store, backend.clock, DataKeys(master, "gm"),
                         deny_list=memory_deny_list(backend.clock.now))
    await gm.refresh_revocations(force=True)
    gate = GateIdentityAdapter(gm)
    # readable and findable before any reseal
    assert (await gm.find_by_citizen_id(CID_A)).person_id == p.person_id  # type: ignore[union-attr]
    assert await gm.citizen_id(p.person_id) == CID_A
    assert (await gm.resolve_upstream(ident(CID_A, "ykm-1"))).person_id == p.person_id
    got = await gate.card_holder("CQ", "CQ100000025")
    assert got is not None and got[0] == p.person_id
    assert await gate.card_holder("CQ", "CQ100000033") is None  # still revoked
    with pytest.raises(IdentityMismatch):  # linked under the old hash: still one person only
        await gm.resolve_upstream(ident(CID_B, "ykm-1"))
    # new writes use gm
    q = await gm.resolve_upstream(ident(CID_B, "ykm-2"))
    assert q.trust_root_hash.startswith(GM_PREFIX) and q.sealed_trust_root.startswith(GM_PREFIX)
    assert all(c.ref_hash.startswith(GM_PREFIX) and c.sealed_ref.startswith(GM_PREFIX)
               for c in q.credentials)

    before = await gm.get(p.person_id)
    dry = await gm.reseal(dry_run=True)
    assert (dry.persons, dry.persons_changed, dry.already_current) == (2, 1, 1)
    assert (await gm.get(p.person_id)) == before  # a dry run writes nothing

    report = await gm.reseal()
    assert report.to_dict() == {
        "suite": "gm", "dry_run": False, "persons": 2, "persons_changed": 1,
        "trust_roots_rehashed": 1, "trust_roots_resealed": 1, "credentials_rehashed": 3,
        "credentials_resealed": 3, "revocations_moved": 1, "already_current": 1, "failed": 0}
    moved = await gm.get(p.person_id)
    assert moved is not None and suite_of(moved.trust_root_hash) == "gm"
    assert all(suite_of(c.ref_hash) == "gm" and suite_of(c.sealed_ref) == "gm"
               for c in moved.credentials)
    # the old index entries and revocation are gone; everything is found under the new forms
    assert await store.lookup("trust_root", p.trust_root_hash) is None
    assert await store.lookup("credential", card.ref_hash) is None
    _, revoked = await store.revocations()
    assert lost.ref_hash not in revoked
    assert gm.ref_hash("ssc_card", "CQ", "CQ100000033") in revoked
    assert (await gm.find_by_citizen_id(CID_A)).person_id == p.person_id  # type: ignore[union-attr]
    assert await gm.citizen_id(p.person_id) == CID_A
    got = await gate.card_holder("CQ", "CQ100000025")
    assert got is not None and got[0] == p.person_id
    assert await gate.card_holder("CQ", "CQ100000033") is None
    # an intl-configured reader still reads it (it opens both forms)
    intl2 = IdentityService(store, backend.clock, DataKeys(master, "intl"),
                            deny_list=memory_deny_list(backend.clock.now))
    assert await intl2.citizen_id(p.person_id) == CID_A

    again = await gm.reseal()
    assert (again.persons_changed, again.already_current, again.failed) == (0, 2, 0)
