"""Redis identity store and the revocation follower (docs/identity.md "Redis keys").

Keys (every one starts with the configured prefix; each command touches one key, or keys
sharing one `{hash tag}`, so the same code runs on Redis Cluster):

    <p>idn:p:{<person_id>}        hash  v (version), doc (Person JSON)
    <p>idn:tr:{<trust_root_hash>} string → person id   (unique index)
    <p>idn:cr:{<ref_hash>}        string → person id   (unique index)
    <p>idn:{rev}:set              set of revoked card ref hashes
    <p>idn:{rev}:ver              integer version, bumped on every change
    <p>idn:rev                    pub/sub channel: "1|<ref_hash>" / "0|<ref_hash>"

Every write is one Lua script over one slot (atomic). Reads on the gate path go through the
Coalescer (one pipeline per loop tick).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import redis.asyncio as aioredis
import structlog

from gateway.adapters.redis_store import Coalescer, RedisClient, text, text_or_none
from gateway.authz.datakeys import DataKeys
from gateway.services.identity import (
    IdentityService,
    IndexKind,
    Person,
    ResealReport,
    SyncReport,
    registry_entries,
)

log = structlog.get_logger("gateway.identity")
_T = TypeVar("_T")

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'doc', ARGV[2])
return 1
"""
_REPLACE = """
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'doc', ARGV[3])
return 1
"""
_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] or (ARGV[2] ~= '' and cur == ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[1])
  return false
end
return cur
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""
# The version and the set together, atomically (one slot: the {rev} hash tag). A MULTI
# pipeline would do on one node, but redis-py's cluster pipeline breaks on it.
_REVOCATIONS = """
return {redis.call('GET', KEYS[1]) or '0', redis.call('SMEMBERS', KEYS[2])}
"""

_REVOKE = """
local changed
if ARGV[2] == '1' then changed = redis.call('SADD', KEYS[1], ARGV[1])
else changed = redis.call('SREM', KEYS[1], ARGV[1]) end
if changed == 1 then
  local v = redis.call('INCR', KEYS[2])
  redis.call('PUBLISH', ARGV[3], ARGV[2] .. '|' .. ARGV[1])
  return v
end
return tonumber(redis.call('GET', KEYS[2]) or '0')
"""


class RedisIdentityStore:
    def __init__(self, redis: RedisClient, prefix: str = "gw:",
                 coalescer: Coalescer | None = None) -> None:
        self._r = redis
        self._c = coalescer
        self._p = prefix + "idn:"
        self.channel = self._p + "rev"
        self._create = redis.register_script(_CREATE)
        self._replace = redis.register_script(_REPLACE)
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)
        self._revoke = redis.register_script(_REVOKE)
        self._revocations = redis.register_script(_REVOCATIONS)

    def _pkey(self, person_id: str) -> str:
        return f"{self._p}p:{{{person_id}}}"

    def _ikey(self, index: IndexKind, key: str) -> str:
        return f"{self._p}{'tr' if index == 'trust_root' else 'cr'}:{{{key}}}"

    async def _cmd(self, *args: Any) -> Any:
        if self._c is not None:
            return await self._c.execute(*args)
        return await self._r.execute_command(*args)

    async def get(self, person_id: str) -> Person | None:
        raw = await self._cmd("HGET", self._pkey(person_id), "doc")
        return None if raw is None else Person.from_json(raw)

    async def create(self, person: Person) -> bool:
        return bool(await self._create(keys=[self._pkey(person.person_id)],
                                       args=[str(person.version), person.to_json()]))

    async def delete(self, person_id: str) -> None:
        await self._r.delete(self._pkey(person_id))

    async def replace(self, old: Person, new: Person) -> bool:
        if new.version != old.version + 1 or new.person_id != old.person_id:
            return False
        return bool(await self._replace(keys=[self._pkey(old.person_id)],
                                        args=[str(old.version), str(new.version),
                                              new.to_json()]))

    async def lookup(self, index: IndexKind, key: str) -> str | None:
        return text_or_none(await self._cmd("GET", self._ikey(index, key)))

    async def claim(self, index: IndexKind, key: str, person_id: str,
                    replacing: str | None = None) -> str | None:
        return text_or_none(await self._claim(keys=[self._ikey(index, key)],
                                       args=[person_id, replacing or ""]))

    async def release(self, index: IndexKind, key: str, person_id: str) -> None:
        await self._release(keys=[self._ikey(index, key)], args=[person_id])

    async def set_revoked(self, ref_hash: str, revoked: bool) -> int:
        return int(await self._revoke(keys=[self._p + "{rev}:set", self._p + "{rev}:ver"],
                                      args=[ref_hash, "1" if revoked else "0", self.channel]))

    async def revocations(self) -> tuple[int, frozenset[str]]:
        ver, members = await self._revocations(
            keys=[self._p + "{rev}:ver", self._p + "{rev}:set"])
        return int(ver or 0), frozenset(text(m) for m in members)

    async def revocation_version(self) -> int:
        return int(await self._cmd("GET", self._p + "{rev}:ver") or 0)

    async def ping(self) -> None:
        await self._r.ping()

    async def person_ids(self) -> AsyncIterator[str]:
        """Every person id (SCAN over the record keys; on a cluster, over every primary).
        Operator commands only (`gateway identity reseal`), never a request path."""
        start = len(self._p) + len("p:{")
        async for key in self._r.scan_iter(match=self._p + "p:{*}", count=500):
            name = text_or_none(key) or ""
            if name.endswith("}"):
                yield name[start:-1]


class RevocationFollower:
    """Keeps every worker's RevocationView fresh: pub/sub for speed, a version poll every
    `poll_s` for safety (a message lost while reconnecting is repaired by the next poll)."""

    def __init__(self, redis: RedisClient, store: RedisIdentityStore,
                 service: IdentityService, poll_s: float = 0.25) -> None:
        self._r = redis
        self._store = store
        self._service = service
        self._poll_s = poll_s
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    async def start(self) -> None:
        await self._service.refresh_revocations(force=True)
        self._tasks = [asyncio.ensure_future(self._listen()),
                       asyncio.ensure_future(self._poll())]

    async def stop(self) -> None:
        # redis-py can swallow a cancellation that lands while a pub/sub connection is being
        # set up; the flag and the bounded wait make stopping finite whatever it does.
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        self._tasks = []

    async def _poll(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._poll_s)
            try:
                await self._service.refresh_revocations()
            except (aioredis.RedisError, OSError):
                log.warning("identity.revocations.poll_failed")

    async def _listen(self) -> None:
        while not self._stopping:
            pubsub = self._r.pubsub()
            try:
                await pubsub.subscribe(self._store.channel)
                while not self._stopping:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                    if msg is None or msg.get("type") != "message":
                        continue
                    data = text_or_none(msg.get("data")) or ""
                    flag, _, ref_hash = data.partition("|")
                    if ref_hash and flag in ("0", "1"):
                        self._service.revocations.apply(ref_hash, flag == "1")
            except (aioredis.RedisError, OSError):
                log.warning("identity.revocations.subscribe_failed")
                await asyncio.sleep(self._poll_s)
            finally:
                with contextlib.suppress(aioredis.RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]


def load_registry(path: Path) -> Mapping[str, Any]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict):
        raise ValueError("the registry file must hold a JSON object")
    return doc


async def sync_registry_async(service: IdentityService, path: Path) -> SyncReport:
    """Operator registry sync: idempotent upsert of persons and credentials from an upstream
    registry export (the shape of gateway/data/residents.json)."""
    return await service.sync(registry_entries(load_registry(path)))


def cli_identity_service(settings: Any, redis: RedisClient, keys: DataKeys) -> IdentityService:
    """The identity service a CLI command works with: over the configured Redis, telling the
    same card deny-list as the server (a card the registry sync refuses reaches the offline
    gates too; docs/offline.md §5). Device certificates of a person suspended here are not
    revoked: suspension is the operator API's (``/admin/v1/persons/suspend``)."""
    from gateway.adapters.keyfiles import KeyRingFiles
    from gateway.adapters.redis_revocations import RedisDenyListStore
    from gateway.clock import SystemClock
    from gateway.codec.offline import CardHash
    from gateway.services.revocations import RevocationLists

    clock = SystemClock()
    trust_files = KeyRingFiles(settings.keys_dir, "trust")
    deny_list = RevocationLists(  # the CLI writes entries, never signs a list: no ring read
        RedisDenyListStore(redis, settings.redis_prefix, settings.deny_list_delta_events),
        trust_files.load, CardHash(keys.card_deny_salt, settings.card_hash_iterations),
        clock.now, max_age_s=settings.deny_list_max_age_s)
    return IdentityService(RedisIdentityStore(redis, settings.redis_prefix), clock, keys,
                           deny_list=deny_list)


def _on_configured_redis(settings: Any, refusal: str,
                         use: Callable[[IdentityService], Awaitable[_T]]) -> _T:
    """Run `use` with the CLI's identity service over GATEWAY_REDIS_URL (SettingsError
    `refusal` without one), the connection closed afterwards."""
    from gateway.adapters.keyfiles import load_data_keys
    from gateway.adapters.redis_store import connect
    from gateway.settings import SettingsError

    if not settings.redis_url:
        raise SettingsError(refusal)

    async def run() -> _T:
        keys = load_data_keys(settings.keys_dir, settings.crypto_suite,
                              create=settings.is_sandbox, env_value=settings.data_key_b64)
        redis = connect(settings.redis_url, cluster=settings.redis_cluster)
        try:
            return await use(cli_identity_service(settings, redis, keys))
        finally:
            await redis.aclose()

    return asyncio.run(run())


def sync_registry(settings: Any, path: Path) -> int:
    """CLI hook (`gateway identity sync FILE`): upsert the registry export at `path` into the
    configured store; returns the number of persons processed. Needs GATEWAY_REDIS_URL (an
    in-memory store would vanish with this process)."""
    report = _on_configured_redis(
        settings, "identity sync needs GATEWAY_REDIS_URL (an in-memory store would vanish "
        "with this process)", lambda service: sync_registry_async(service, path))
    log.info("identity.sync", persons=report.persons, created=report.created,
             linked=report.linked, updated=report.updated, conflicts=report.conflicts)
    return report.persons


def reseal_store(settings: Any, *, dry_run: bool = False) -> ResealReport:
    """CLI hook (`gateway identity reseal [--dry-run]`): move every identity record in the
    configured Redis to GATEWAY_CRYPTO_SUITE (IdentityService.reseal). Needs GATEWAY_REDIS_URL."""
    report = _on_configured_redis(
        settings, "identity reseal needs GATEWAY_REDIS_URL (the in-memory sandbox store "
        "lives only inside the server process)",
        lambda service: service.reseal(dry_run=dry_run))
    log.info("identity.reseal", **report.to_dict())
    return report
