"""The small interfaces the use cases depend on. Adapters implement them (memory and Redis),
and tests/contract/ holds ONE suite that every implementation must pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.authz.clients import Client


class SingleUse(Protocol):
    """Atomic "first one wins" claims with a time to live (nonces, jti, one-time codes).

    `claim` returns None when this call claimed the key, or the value stored by whoever
    claimed it first. The TTL should match the remaining life of the thing claimed, so the
    record disappears when the thing could no longer be used anyway.
    """

    async def claim(self, key: str, ttl_s: float, value: str = "1") -> str | None: ...

    async def peek(self, key: str) -> str | None: ...


class ClientStore(Protocol):
    """OAuth client registry (gates, resident apps, relying parties)."""

    async def get(self, client_id: str) -> Client | None: ...

    async def put(self, client: Client) -> None: ...

    async def list(self) -> Sequence[Client]: ...


class Health(Protocol):
    async def ping(self) -> None:
        """Raise if the store cannot serve requests."""
        ...
