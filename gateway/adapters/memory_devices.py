"""Enrolled devices and the device revocation log in process memory (sandbox, tests).

Same contract as the Redis store (tests/contract/test_device_store.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from gateway.services.devices import (
    REVOCATION_GRACE_S,
    AddResult,
    DeviceRecord,
    RevokedSerial,
    record_with,
)


class MemoryDeviceStore:
    def __init__(self) -> None:
        self._by_person: dict[str, dict[str, DeviceRecord]] = {}
        self._removed: dict[str, set[str]] = {}
        self._log: dict[str, RevokedSerial] = {}
        self._version = 0
        self._lock = asyncio.Lock()

    async def add(self, record: DeviceRecord, max_per_person: int) -> AddResult:
        async with self._lock:
            if record.key_hash in self._removed.get(record.person_id, ()):
                return "removed"
            devices = self._by_person.setdefault(record.person_id, {})
            if record.device_id not in devices:
                if any(d.key_hash == record.key_hash for d in devices.values()):
                    return "exists"
                if len(devices) >= max_per_person:
                    return "full"
            devices[record.device_id] = record
            return "added"

    async def for_person(self, person_id: str) -> Sequence[DeviceRecord]:
        return list(self._by_person.get(person_id, {}).values())

    async def add_certificate(self, person_id: str, device_id: str, serial: str,
                              not_after: int, now: float) -> DeviceRecord | None:
        async with self._lock:
            devices = self._by_person.get(person_id, {})
            record = devices.get(device_id)
            if record is None:
                return None
            devices[device_id] = record = record_with(record, serial, not_after, now)
            return record

    async def remove(self, person_id: str, device_id: str) -> DeviceRecord | None:
        async with self._lock:
            record = self._by_person.get(person_id, {}).pop(device_id, None)
            if record is not None:
                self._removed.setdefault(person_id, set()).add(record.key_hash)
            return record

    async def revoke_serials(self, serials: Sequence[tuple[str, int]], now: float) -> int:
        async with self._lock:
            if serials:
                self._version = max(int(now * 1000), self._version + 1)
                for serial, not_after in serials:
                    if serial not in self._log:
                        self._log[serial] = RevokedSerial(serial, int(not_after), self._version)
            cut = now - REVOCATION_GRACE_S
            self._log = {s: e for s, e in self._log.items() if e.not_after > cut}
            return self._version

    async def revocations(self, since: int, now: float) -> tuple[int, list[RevokedSerial]]:
        cut = now - REVOCATION_GRACE_S
        return self._version, [e for e in self._log.values()
                               if e.version > since and e.not_after > cut]
