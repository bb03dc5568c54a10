"""In-memory stores for the sandbox and unit tests: one process only, nothing survives a
restart. They pass the same contract suite as the Redis stores (tests/contract/)."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from gateway.authz.clients import Client
from gateway.clock import Clock


class MemorySingleUse:
    def __init__(self, clock: Clock, max_entries: int = 1_000_000) -> None:
        self._clock = clock
        self._items: dict[str, tuple[float, str]] = {}
        self._expiry: list[tuple[float, str]] = []
        self._max = max_entries

    def _purge(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            _, key = heapq.heappop(self._expiry)
            item = self._items.get(key)
            if item is not None and item[0] <= now:
                del self._items[key]

    async def claim(self, key: str, ttl_s: float, value: str = "1", *,
                    used_since: float | None = None) -> str | None:
        # (used_since: this store's history lives and dies with the process)
        now = self._clock.now()
        self._purge(now)
        item = self._items.get(key)
        if item is not None:
            return item[1]
        if len(self._items) >= self._max:
            # Refusing is safer than forgetting: a forgotten nonce could be replayed.
            raise MemoryError("single-use store is full")
        exp = now + max(ttl_s, 0.001)
        self._items[key] = (exp, value)
        heapq.heappush(self._expiry, (exp, key))
        return None

    async def peek(self, key: str) -> str | None:
        now = self._clock.now()
        item = self._items.get(key)
        if item is None or item[0] <= now:
            return None
        return item[1]


class MemoryClientStore:
    def __init__(self) -> None:
        self._clients: dict[str, Client] = {}
        self._version = 0

    async def get(self, client_id: str) -> Client | None:
        return self._clients.get(client_id)

    async def put(self, client: Client) -> None:
        self._clients[client.client_id] = client
        self._version += 1

    async def version(self) -> str | None:
        return str(self._version) if self._version else None

    async def list(self) -> Sequence[Client]:
        return sorted(self._clients.values(), key=lambda c: c.client_id)

    async def ping(self) -> None:
        return None
