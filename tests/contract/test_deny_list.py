"""One contract suite for the revocation-list store (memory, Redis, Redis Cluster): versions
only grow, a no-op keeps the version, deltas name each entry's last change, a `since` older
than the log (or newer than the version) gets the full list, concurrent changes all land."""

from __future__ import annotations

import asyncio

from gateway.adapters.memory_revocations import MemoryDenyListStore
from gateway.adapters.redis_revocations import RedisDenyListStore
from gateway.services.ports import DenyListStore

from .conftest import Backend


def make(backend: Backend, delta_events: int = 10_000) -> DenyListStore:
    if backend.redis is not None:
        return RedisDenyListStore(backend.redis, backend.prefix, delta_events)
    return MemoryDenyListStore(delta_events)


async def test_versions_grow_and_noops_keep_them(backend: Backend) -> None:
    store = make(backend)
    assert await store.version("cards") == 0
    v1 = await store.change("cards", "a" * 32, True, 1_000)
    assert v1 == 1_000
    assert await store.change("cards", "a" * 32, True, 2_000) == v1  # already there
    assert await store.change("cards", "b" * 32, False, 2_000) == v1  # never there
    v2 = await store.change("cards", "b" * 32, True, 500)  # a clock behind: still grows
    assert v2 == v1 + 1
    v3 = await store.change("cards", "a" * 32, False, 3_000)
    assert v3 == 3_000 and await store.version("cards") == v3
    full = await store.read("cards", None)
    assert full.full and full.version == v3 and full.entries == {"b" * 32}
    assert (await store.read("devices", None)).entries == frozenset()  # lists are separate


async def test_deltas_and_their_limits(backend: Backend) -> None:
    store = make(backend, delta_events=3)
    v1 = await store.change("cards", "e1", True, 10)
    v2 = await store.change("cards", "e2", True, 20)
    d = await store.read("cards", v1)
    assert not d.full and d.version == v2 and d.added == {"e2"} and d.removed == frozenset()
    v3 = await store.change("cards", "e1", False, 30)
    v4 = await store.change("cards", "e2", False, 40)
    d = await store.read("cards", v2)
    assert not d.full and d.added == frozenset() and d.removed == {"e1", "e2"}
    # e3 added then removed after `since`: its last change counts
    await store.change("cards", "e3", True, 50)
    v6 = await store.change("cards", "e3", False, 60)
    d = await store.read("cards", v4)
    assert d.removed == {"e3"} and d.added == frozenset() and d.version == v6
    assert (await store.read("cards", v6)).full is False  # up to date: an empty delta
    # the log keeps 3 changes: v1 is older than the log now -> the full list
    gone = await store.read("cards", v1)
    assert gone.full and gone.entries == frozenset() and gone.version == v6
    assert (await store.read("cards", v6 + 1)).full  # a version this store never made
    assert v3 > v2


async def test_concurrent_changes_all_land(backend: Backend) -> None:
    store = make(backend)
    versions = await asyncio.gather(*(store.change("cards", f"c{i:03d}", True, 7)
                                      for i in range(50)))
    assert len(set(versions)) == 50  # every change its own version
    full = await store.read("cards", None)
    assert len(full.entries) == 50 and full.version == max(versions)
