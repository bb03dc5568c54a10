"""The device revocation view the gate path reads (gateway/services/devices.py)."""

from __future__ import annotations

from gateway.adapters.memory_devices import MemoryDeviceStore
from gateway.services.devices import DeviceRevocations, RevokedSerial

NOW = 1_790_000_000


def test_the_view_fails_closed_until_the_log_was_read() -> None:
    view = DeviceRevocations()
    assert view.is_revoked(bytes(12))  # never read: every serial counts as revoked
    view.apply(3, [RevokedSerial("01" * 12, NOW + 100, 3)], NOW)
    view.loaded = True
    assert view.is_revoked(bytes.fromhex("01" * 12))
    assert not view.is_revoked(bytes(12))


async def test_a_local_revocation_does_not_skip_other_workers_entries() -> None:
    """Worker A revokes (version 2) after worker B did (version 1) and before A's poll: A's
    next poll must still bring B's entry."""
    from gateway.clock import FrozenClock
    from gateway.services.devices import DeviceRevocationLog

    store = MemoryDeviceStore()
    clock = FrozenClock(NOW)
    a, b = DeviceRevocationLog(store, clock), DeviceRevocationLog(store, clock)
    await a.refresh()
    await b.refresh()
    await b.revoke([("0b" * 12, NOW + 100)], NOW)
    await a.revoke([("0a" * 12, NOW + 100)], NOW)
    assert a.view.is_revoked(bytes.fromhex("0a" * 12))
    await a.refresh()
    assert a.view.is_revoked(bytes.fromhex("0b" * 12))
