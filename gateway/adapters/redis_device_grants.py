"""Redis device authorizations (RFC 8628). Keys, under the configured prefix:

- `oidc:dev:{<id>}` hash — one device authorization; its status moves by compare-and-set and
  each poll is recorded (slow_down) by Lua on that one key;
- `oidc:dev:dc:<sha256 of device code>`, `oidc:dev:uc:<sha256 of user code>` strings — the
  id, each its own key (Redis Cluster: no script spans slots); the user code's is SET NX, so
  two live authorizations never share a user code.
TTLs equal the authorization's remaining life plus the late-poll margin.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.adapters.redis_oidc import Transition, _decode, _ms, _s, put_fields
from gateway.adapters.redis_store import RedisClient
from gateway.authz.device import DeviceAuthorization

# ARGV: now, step, default interval -> {fields..., too_soon}
_POLL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local interval = tonumber(redis.call('HGET', KEYS[1], 'interval') or ARGV[3])
local last = redis.call('HGET', KEYS[1], 'last_poll')
local soon = 0
if last and tonumber(ARGV[1]) - tonumber(last) < interval then
  soon = 1
  redis.call('HSET', KEYS[1], 'interval', tostring(interval + tonumber(ARGV[2])))
end
redis.call('HSET', KEYS[1], 'last_poll', ARGV[1])
return {redis.call('HGETALL', KEYS[1]), soon}
"""


class RedisDeviceGrantStore:
    def __init__(self, redis: RedisClient, prefix: str = "gw:") -> None:
        self._r = redis
        self._p = prefix + "oidc:dev:"
        self._transition = Transition(redis)
        self._poll = redis.register_script(_POLL)

    def _key(self, auth_id: str) -> str:
        return f"{self._p}{{{auth_id}}}"

    async def create(self, auth: DeviceAuthorization, device_hash: str, user_hash: str,
                     ttl_s: float) -> bool:
        if not await self._r.set(self._p + "uc:" + user_hash, auth.id, nx=True,
                                 px=_ms(ttl_s)):
            return False
        await put_fields(self._r, self._key(auth.id), auth.to_fields(), ttl_s)
        # the device code's index last: it never names an authorization not yet written
        await self._r.set(self._p + "dc:" + device_hash, auth.id, px=_ms(ttl_s))
        return True

    async def get(self, auth_id: str) -> DeviceAuthorization | None:
        raw = await self._r.hgetall(self._key(auth_id))
        return DeviceAuthorization.from_fields(_decode(raw)) if raw else None

    async def _find(self, key: str) -> str | None:
        got = await self._r.get(key)
        return None if got is None else _s(got)

    async def by_device_code(self, device_hash: str) -> str | None:
        return await self._find(self._p + "dc:" + device_hash)

    async def by_user_code(self, user_hash: str) -> str | None:
        return await self._find(self._p + "uc:" + user_hash)

    async def transition(self, auth_id: str, expect: str, to: str,
                         fields: Mapping[str, str]) -> bool:
        return await self._transition(self._key(auth_id), expect, to, fields)

    async def poll(self, auth_id: str, now: float,
                   step_s: int) -> tuple[DeviceAuthorization, bool] | None:
        out = await self._poll(keys=[self._key(auth_id)],
                               args=[repr(now), step_s, DeviceAuthorization.interval])
        if not out:
            return None
        flat = [_s(v) for v in out[0]]
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        return DeviceAuthorization.from_fields(fields), int(out[1]) == 1
