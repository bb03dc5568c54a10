"""The small interfaces the use cases depend on. Adapters implement them (memory and Redis),
and tests/contract/ holds ONE suite that every implementation must pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

from gateway.authz.clients import Client

#: What `SingleUse.claim` answers when the store cannot vouch for the item's history (it lost
#: data that could hold an earlier use: gateway/adapters/store_epoch.py). It is not None, so
#: every caller treats it as "already claimed" — fail closed — and no stored value equals it.
HISTORY_LOST: Final = "\x00history-lost"


class SingleUse(Protocol):
    """Atomic "first one wins" claims with a time to live (nonces, jti, one-time codes).

    `claim` returns None when this call claimed the key, or the value stored by whoever
    claimed it first (or HISTORY_LOST). The TTL should match the remaining life of the thing
    claimed, so the record disappears when the thing could no longer be used anyway.
    `used_since` is the earliest time the item could have been used (a code's issue time
    minus the clock skew): a store that lost its history since then answers HISTORY_LOST.
    """

    async def claim(self, key: str, ttl_s: float, value: str = "1", *,
                    used_since: float | None = None) -> str | None: ...

    async def peek(self, key: str) -> str | None: ...


class ClientStore(Protocol):
    """OAuth client registry (gates, resident apps, relying parties)."""

    async def get(self, client_id: str) -> Client | None: ...

    async def put(self, client: Client) -> None: ...

    async def list(self) -> Sequence[Client]: ...

    async def version(self) -> str | None:
        """A value that changes whenever any client is put (None before the first put).

        Client authentication caches records per worker and re-reads this at most once a
        second (gateway/authz/client_auth.py ClientCache): a changed value (a client
        registered, disabled or given a new secret in any process, or a store that lost its
        data) drops the cache. Adapters change it after the record is written."""
        ...


class Health(Protocol):
    async def ping(self) -> None:
        """Raise if the store cannot serve requests."""
        ...
