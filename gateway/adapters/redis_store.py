"""Redis stores, and the command coalescer that keeps the gate path at one round trip.

Key design (docs/architecture.md "Adding a feature"): every key starts with the configured
prefix; a command that touches several keys only ever touches keys sharing one `{hash tag}`, so
the same code runs on Redis Cluster. Single-use claims are one `SET key value NX PX ttl GET`
(Redis ≥ 7.0): atomic, one key, one round trip, TTL equal to the remaining life of what is
claimed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.adapters.resp import RespPipe
from gateway.adapters.store_epoch import StoreEpoch
from gateway.authz.clients import Client
from gateway.ports import HISTORY_LOST

#: What a lost, frozen, loading, read-only or full Redis raises (redis-py and the RESP pipe):
#: the edge answers them 503 `unavailable` (CONTRACT "Faults"); a ResponseError from a wrong
#: command stays a 500.
STORE_FAULTS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError, redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError, redis.exceptions.ClusterDownError,
    redis.exceptions.MasterDownError, redis.exceptions.TryAgainError, TimeoutError)
RedisClient = aioredis.Redis | RedisCluster


def connect(url: str, *, cluster: bool = False, max_connections: int = 64,
            timeout_s: float = 5.0) -> RedisClient:
    """A client (no I/O yet: redis-py connects lazily).

    `timeout_s` bounds each reply (connecting a pooled connection and waiting for a free one:
    at least 0.5 s, as a burst of new connections on a busy worker took longer than 150 ms;
    a frozen Redis still accepts connections, its replies time out); nothing is retried (a
    retried `SET NX` may claim twice, and a retry only makes a frozen Redis slower to
    report). The gate path's `RespPipe` takes the reply timeout from the pool's connection
    kwargs, and connects with it too (one connection per worker)."""
    no_retry = Retry(NoBackoff(), 0)
    if cluster:
        return RedisCluster.from_url(url, max_connections=max_connections,
                                     socket_timeout=timeout_s,
                                     socket_connect_timeout=timeout_s, retry=no_retry)
    # A blocking pool waits for a free connection; redis-py's default pool raises past its cap.
    # (waiting for a pooled connection is not a Redis fault: a busy worker's burst may wait a
    # little longer than one command may take)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=max(timeout_s, 0.5),
        health_check_interval=30,
        socket_timeout=timeout_s, socket_connect_timeout=max(timeout_s, 0.5), retry=no_retry)
    return aioredis.Redis(connection_pool=pool)


class Coalescer:
    """Sends the commands issued during one event-loop tick as ONE pipeline.

    At peak, hundreds of verifications are in flight per worker; one awaited redis-py call each
    costs far more CPU in the client than Redis spends on it. Batching the tick's commands into
    one non-transactional pipeline keeps the per-request cost near the floor (issue 7
    measurements). Each caller still gets its own reply (or its own exception).

    On one Redis node (redis:// or unix://) the batch goes through `RespPipe`: one pipelined
    socket per worker, hiredis parsing, no redis-py per command. On Redis Cluster, or over TLS
    (rediss://), it goes through a redis-py pipeline (which routes by slot, or wraps TLS).
    """

    def __init__(self, redis: RedisClient, max_batch: int = 512) -> None:
        self._redis = redis
        self._pending: list[tuple[tuple[Any, ...], dict[str, Any], asyncio.Future[Any]]] = []
        self._scheduled = False
        self._max_batch = max_batch
        self._tasks: set[asyncio.Task[None]] = set()
        self._pipe: RespPipe | None = None
        if isinstance(redis, aioredis.Redis):
            pool = redis.connection_pool
            if pool.connection_class in (aioredis.Connection, UnixDomainSocketConnection):
                self._pipe = RespPipe.from_connection_kwargs(dict(pool.connection_kwargs))

    @property
    def pipelined(self) -> bool:
        """True when commands go through the gateway's own RESP pipe."""
        return self._pipe is not None

    def execute(self, *args: Any, **options: Any) -> asyncio.Future[Any]:
        """Queue one command; `options` go to redis-py's reply parser (e.g. get=True) on the
        redis-py path; the RESP pipe returns the raw reply, which is the same for the commands
        queued here (GET, SET … GET, HGET, EVALSHA, SET … PX)."""
        if self._pipe is not None:
            return self._pipe.execute(*args)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending.append((args, options, fut))
        if len(self._pending) >= self._max_batch:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.ensure_future(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(
        self, batch: list[tuple[tuple[Any, ...], dict[str, Any], asyncio.Future[Any]]]
    ) -> None:
        try:
            if len(batch) == 1:
                args, options, fut = batch[0]
                result = await self._redis.execute_command(*args, **options)
                if not fut.done():
                    fut.set_result(result)
                return
            pipe = self._redis.pipeline(transaction=False)
            for args, options, _ in batch:
                pipe.execute_command(*args, **options)
            results = await pipe.execute(raise_on_error=False)
        except (aioredis.RedisError, OSError) as exc:
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, _, fut), result in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(result, Exception):
                fut.set_exception(result)
            else:
                fut.set_result(result)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pipe is not None:
            await self._pipe.aclose()


def text(v: Any) -> str:
    """A Redis reply (bytes from the RESP pipe and redis-py without decoding) as text."""
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def text_or_none(v: Any) -> str | None:
    """`text`, or None for a nil reply."""
    return None if v is None else text(v)


class RedisSingleUse:
    """Claims as `SET … NX PX … GET`; with a `StoreEpoch`, each tick's claims follow one
    INCR of the store clock, and a store that lost its history answers HISTORY_LOST
    (gateway/adapters/store_epoch.py)."""

    def __init__(self, coalescer: Coalescer, prefix: str = "gw:",
                 epoch: StoreEpoch | None = None) -> None:
        self._c = coalescer
        self._prefix = prefix + "once:"
        self.epoch = epoch

    async def claim(self, key: str, ttl_s: float, value: str = "1", *,
                    used_since: float | None = None) -> str | None:
        ttl_ms = max(1, int(ttl_s * 1000))
        epoch = self.epoch
        if epoch is None:
            prev = await self._c.execute("SET", self._prefix + key, value, "NX", "PX", ttl_ms,
                                          "GET", get=True)
            return text_or_none(prev)
        if epoch.refuses(used_since):
            return HISTORY_LOST
        intact = epoch.guard()   # queued before the claim: Redis runs it first
        prev = await self._c.execute("SET", self._prefix + key, value, "NX", "PX", ttl_ms,
                                      "GET", get=True)
        if not await intact or epoch.refuses(used_since):
            return HISTORY_LOST
        return text_or_none(prev)

    async def peek(self, key: str) -> str | None:
        return text_or_none(await self._c.execute("GET", self._prefix + key))


class RedisClientStore:
    """Clients as JSON strings under `<prefix>client:<id>`, ids in a set for listing, and a
    counter `<prefix>clients:version` incremented after every put (ClientStore.version).

    With a `coalescer`, the two reads of the token and introspection endpoints (`get` and
    `version`: the client cache confirms the version on every request) go through it — one
    pipelined socket, hiredis — instead of a redis-py call each (issue 13: ≈ 50 µs of worker
    CPU per introspection under the profiler)."""

    def __init__(self, redis: RedisClient, prefix: str = "gw:",
                 coalescer: Coalescer | None = None) -> None:
        self._r = redis
        self._c = coalescer
        self._prefix = prefix
        self._version_key = f"{prefix}clients:version"

    def _key(self, client_id: str) -> str:
        return f"{self._prefix}client:{client_id}"

    async def get(self, client_id: str) -> Client | None:
        key = self._key(client_id)
        raw = await (self._r.get(key) if self._c is None else self._c.execute("GET", key))
        if raw is None:
            return None
        return Client.from_dict(json.loads(raw))

    async def put(self, client: Client) -> None:
        # Two single-key commands, the object first: a listed id always has its object.
        await self._r.set(self._key(client.client_id), json.dumps(client.to_dict()))
        await self._r.sadd(f"{self._prefix}clients", client.client_id)
        await self._r.incr(f"{self._prefix}clients:version")  # after the record: see the port

    async def version(self) -> str | None:
        key = self._version_key
        return text_or_none(
            await (self._r.get(key) if self._c is None else self._c.execute("GET", key)))

    async def list(self) -> Sequence[Client]:
        ids = sorted(text(i) for i in await self._r.smembers(f"{self._prefix}clients"))
        out = []
        for cid in ids:
            c = await self.get(cid)
            if c is not None:
                out.append(c)
        return out

    async def ping(self) -> None:
        await self._r.ping()
