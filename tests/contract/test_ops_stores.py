"""The operator stores' contract, on memory, Redis and Redis Cluster: the live scene catalogue
(seed once, revisions checked atomically, history, version), the venue registry (atomic
multi-venue upsert, gate assignment, version) and the operator registry (names unique,
lookup by token digest). Two writers racing on one revision: exactly one wins."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.adapters import memory_ops, redis_ops
from tests.contract.conftest import Backend


def scenes(b: Backend) -> Any:
    if b.redis is not None:
        return redis_ops.RedisSceneStore(b.redis, b.prefix)
    return memory_ops.MemorySceneStore()


def venues(b: Backend) -> Any:
    if b.redis is not None:
        return redis_ops.RedisVenueStore(b.redis, b.prefix)
    return memory_ops.MemoryVenueStore()


def operators(b: Backend) -> Any:
    if b.redis is not None:
        return redis_ops.RedisOperatorStore(b.redis, b.prefix)
    return memory_ops.MemoryOperatorStore()


LIB = {"id": "library", "name_zh": "图书馆", "name_en": "Library", "categories": ["identity"],
       "faces": ["ykm"], "attributes": [], "essc_regions": [], "card_forms": [],
       "sources": [{"seed": "004", "row": 3, "item": ""}], "depth_target": {}, "notes": ""}


async def test_a_catalogue_is_seeded_once_in_order(backend: Backend) -> None:
    store = scenes(backend)
    assert await store.version() == 0
    assert await store.seed([LIB, {**LIB, "id": "museum"}]) is True
    assert await store.seed([{**LIB, "id": "other"}]) is False
    version, held = await store.snapshot()
    assert version == 1 and [s["id"] for s in held] == ["library", "museum"]
    assert held[0]["attributes"] == [] and held[0]["depth_target"] == {}  # [] stays []
    assert held[0]["revision"] == 1
    assert [h["revision"] for h in await store.history("library")] == [1]


async def test_a_put_checks_the_revision_and_keeps_history(backend: Backend) -> None:
    store = scenes(backend)
    await store.seed([LIB])
    meta = {"updated_by": "alice", "updated_at": 1.0}
    assert await store.put({**LIB, "faces": ["ykm", "essc"]}, 2, meta) is None  # stale
    version, stored = await store.put({**LIB, "faces": ["ykm", "essc"]}, 1, meta)
    assert (version, stored["revision"], stored["faces"]) == (2, 2, ["ykm", "essc"])
    assert await store.put({**LIB, "id": "archive"}, 1, meta) is None  # must not exist: 0
    version, new = await store.put({**LIB, "id": "archive"}, 0, meta)
    assert (version, new["revision"]) == (3, 1)
    _, held = await store.snapshot()
    assert [s["id"] for s in held] == ["library", "archive"]
    history = await store.history("library")
    assert [h["revision"] for h in history] == [2, 1]
    assert history[0]["updated_by"] == "alice" and history[0]["scene"]["faces"] == ["ykm",
                                                                                    "essc"]


async def test_two_writers_on_one_revision_one_wins(backend: Backend) -> None:
    store = scenes(backend)
    await store.seed([LIB])
    results = await asyncio.gather(*(store.put({**LIB, "notes": f"w{i}"}, 1,
                                               {"updated_by": f"w{i}"}) for i in range(20)))
    assert sum(r is not None for r in results) == 1
    assert await store.version() == 2


async def test_venues_are_written_together_and_gates_assigned(backend: Backend) -> None:
    store = venues(backend)
    assert await store.version() == 0
    rows = [{"id": f"v{i}", "name": "n", "scene": "metro", "district": "500103",
             "operator": "o", "status": "active", "address": ""} for i in range(50)]
    v1 = await store.put_many(rows)
    assert v1 == 1 and len(await store.list()) == 50
    assert await store.get("v7") == rows[7] and await store.get("__v") is None
    v2 = await store.assign_gate("g1", "v7")
    assert v2 == 2 and await store.gate_venues() == {"g1": "v7"}
    assert await store.put_many([{**rows[7], "status": "inactive"}]) == 3
    assert (await store.get("v7") or {})["status"] == "inactive"


async def test_operator_names_are_unique_and_found_by_token_digest(backend: Backend) -> None:
    store = operators(backend)
    rec = {"name": "alice", "role": "admin", "token_hash": "ab" * 32, "disabled": False}
    assert await store.create(rec) is True
    assert await store.create({**rec, "token_hash": "cd" * 32}) is False
    assert (await store.by_token_hash("ab" * 32) or {})["name"] == "alice"
    assert await store.by_token_hash("cd" * 32) is None
    await store.update({**rec, "disabled": True})
    assert (await store.get("alice") or {})["disabled"] is True
    assert [o["name"] for o in await store.list()] == ["alice"]
