"""Contract: the device store (enrolled devices, the device revocation log) on every store —
memory, real Redis, real Redis Cluster (gateway/services/devices.DeviceStore)."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.adapters.memory_devices import MemoryDeviceStore
from gateway.adapters.redis_devices import RedisDeviceStore
from gateway.services.devices import REVOCATION_GRACE_S, DeviceRecord
from tests.contract.conftest import Backend

NOW = 1_790_000_000


def _store(backend: Backend) -> Any:
    if backend.redis is not None:
        return RedisDeviceStore(backend.redis, backend.prefix)
    return MemoryDeviceStore()


def _dev(n: int, person: str = "p1") -> DeviceRecord:
    return DeviceRecord(device_id=f"dev_{n}", person_id=person, alg="EdDSA",
                        key_hash=f"{n:064x}", created_at=NOW + n)


async def test_add_list_remove(backend: Backend) -> None:
    store = _store(backend)
    assert await store.add(_dev(1), 3) == "added"
    assert await store.add(_dev(2), 3) == "added"
    assert await store.add(_dev(9, "p2"), 3) == "added"
    assert sorted(d.device_id for d in await store.for_person("p1")) == ["dev_1", "dev_2"]
    assert [d for d in await store.for_person("p1") if d.device_id == "dev_1"] == [_dev(1)]
    removed = await store.remove("p1", "dev_1")
    assert removed == _dev(1)
    assert await store.remove("p1", "dev_1") is None
    assert await store.remove("p2", "dev_2") is None  # another person's device id
    assert [d.device_id for d in await store.for_person("p1")] == ["dev_2"]
    assert await store.for_person("nobody") == []


async def test_a_removed_key_is_barred_for_that_person(backend: Backend) -> None:
    store = _store(backend)
    assert await store.add(_dev(1), 3) == "added"
    await store.remove("p1", "dev_1")
    again = DeviceRecord(device_id="dev_new", person_id="p1", alg="EdDSA",
                         key_hash=_dev(1).key_hash, created_at=NOW)
    assert await store.add(again, 3) == "removed"
    assert await store.add(_dev(1, "p2"), 3) == "added"  # another person may hold that key
    assert await store.add(_dev(2), 3) == "added"


async def test_one_device_per_key_and_person_under_concurrency(backend: Backend) -> None:
    store = _store(backend)
    same_key = [DeviceRecord(device_id=f"dev_{i}", person_id="p1", alg="EdDSA",
                             key_hash="ab" * 32, created_at=NOW) for i in range(20)]
    results = await asyncio.gather(*(store.add(r, 3) for r in same_key))
    assert results.count("added") == 1 and results.count("exists") == 19
    assert len(await store.for_person("p1")) == 1


async def test_at_most_max_per_person_under_concurrency(backend: Backend) -> None:
    store = _store(backend)
    results = await asyncio.gather(*(store.add(_dev(i), 3) for i in range(40)))
    assert results.count("added") == 3 and results.count("full") == 37
    assert len(await store.for_person("p1")) == 3
    # the same device again is an update, not another slot
    kept = (await store.for_person("p1"))[0]
    assert await store.add(kept, 3) == "added"
    assert await store.add(_dev(99, "p2"), 3) == "added"  # per person


async def test_certificates_are_recorded_and_old_ones_forgotten(backend: Backend) -> None:
    store = _store(backend)
    await store.add(_dev(1), 3)
    r = await store.add_certificate("p1", "dev_1", "aa" * 12, NOW + 86400, NOW)
    assert r is not None and r.certificates == (("aa" * 12, NOW + 86400),)
    later = NOW + 86400 + REVOCATION_GRACE_S + 1
    r = await store.add_certificate("p1", "dev_1", "bb" * 12, later + 86400, later)
    assert r is not None and r.certificates == (("bb" * 12, later + 86400),)
    assert (await store.for_person("p1"))[0].certificates == r.certificates
    assert await store.add_certificate("p1", "dev_404", "cc" * 12, NOW, NOW) is None
    assert await store.add_certificate("p2", "dev_1", "cc" * 12, NOW, NOW) is None


async def test_revocation_log_versions_deltas_and_expiry(backend: Backend) -> None:
    store = _store(backend)
    assert await store.revocations(0, NOW) == (0, [])
    assert await store.revoke_serials([], NOW) == 0
    v1 = await store.revoke_serials([("01" * 12, NOW + 100), ("02" * 12, NOW + 5000)], NOW)
    v2 = await store.revoke_serials([("03" * 12, NOW + 200)], NOW)
    assert NOW * 1000 <= v1 < v2  # ms times, growing even within one millisecond
    version, entries = await store.revocations(0, NOW)
    assert version == v2
    assert sorted((e.serial, e.not_after, e.version) for e in entries) == [
        ("01" * 12, NOW + 100, v1), ("02" * 12, NOW + 5000, v1), ("03" * 12, NOW + 200, v2)]
    _, delta = await store.revocations(v1, NOW)
    assert [e.serial for e in delta] == ["03" * 12]
    # a serial listed twice keeps its first version
    v3 = await store.revoke_serials([("01" * 12, NOW + 100)], NOW)
    _, delta = await store.revocations(v2, NOW)
    assert delta == [] and v3 > v2
    # a clock that went back does not make the version go back
    assert await store.revoke_serials([("04" * 12, NOW + 100)], NOW - 3600) > v3
    # past their window (+ grace): no longer listed, and pruned on the next write
    late = NOW + 300 + REVOCATION_GRACE_S
    _, entries = await store.revocations(0, late)
    assert [e.serial for e in entries] == ["02" * 12]
    await store.revoke_serials([], late)
    assert [e.serial for e in (await store.revocations(0, late))[1]] == ["02" * 12]


async def test_revocations_are_seen_by_another_worker(backend: Backend) -> None:
    store = _store(backend)
    if backend.redis is None:
        other = store  # one process: the same object is every "worker"
    else:
        other = RedisDeviceStore(await backend.another_client(), backend.prefix)
    await store.revoke_serials([("0a" * 12, NOW + 100)], NOW)
    version, entries = await other.revocations(0, NOW)
    assert version >= 1 and [e.serial for e in entries] == ["0a" * 12]
