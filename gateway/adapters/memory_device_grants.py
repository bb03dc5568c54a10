"""In-memory device authorizations (RFC 8628) for the sandbox and tests. Atomic under one
event loop: no method awaits between its read and its write. They pass the contract suite in
tests/contract/test_device_grant_store.py."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.adapters.memory_oidc import _Expiring
from gateway.authz.device import DeviceAuthorization
from gateway.clock import Clock


class MemoryDeviceGrantStore:
    def __init__(self, clock: Clock) -> None:
        self._auth = _Expiring(clock)
        self._index = _Expiring(clock)   # "dc:<hash>" / "uc:<hash>" -> {"id": ...}

    async def create(self, auth: DeviceAuthorization, device_hash: str, user_hash: str,
                     ttl_s: float) -> bool:
        if self._index.get("uc:" + user_hash) is not None:
            return False
        self._index.set("uc:" + user_hash, {"id": auth.id}, ttl_s)
        self._index.set("dc:" + device_hash, {"id": auth.id}, ttl_s)
        self._auth.set(auth.id, auth.to_fields(), ttl_s)
        return True

    async def get(self, auth_id: str) -> DeviceAuthorization | None:
        f = self._auth.get(auth_id)
        return None if f is None else DeviceAuthorization.from_fields(f)

    def _find(self, key: str) -> str | None:
        f = self._index.get(key)
        return None if f is None else f["id"]

    async def by_device_code(self, device_hash: str) -> str | None:
        return self._find("dc:" + device_hash)

    async def by_user_code(self, user_hash: str) -> str | None:
        return self._find("uc:" + user_hash)

    async def transition(self, auth_id: str, expect: str, to: str,
                         fields: Mapping[str, str]) -> bool:
        return self._auth.transition(auth_id, expect, to, fields)

    async def poll(self, auth_id: str, now: float,
                   step_s: int) -> tuple[DeviceAuthorization, bool] | None:
        f = self._auth.get(auth_id)
        if f is None:
            return None
        interval = int(f.get("interval") or DeviceAuthorization.interval)
        last = f.get("last_poll")
        too_soon = last is not None and now - float(last) < interval
        if too_soon:
            f["interval"] = str(interval + step_s)
        f["last_poll"] = repr(now)
        return DeviceAuthorization.from_fields(f), too_soon
