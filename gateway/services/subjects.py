"""The subject index hook: pairwise subjects (OIDC Core §8.1) are one-way, so a relying party
can name a person in a consent request only by a subject the gateway recorded when it handed
that subject out — at a gate's verify (code or card) or in an ID token.

Recording costs a store write, so it happens only for the sectors whose relying parties may
request consents (a metro gate's sector has none: the gate path stays at one round trip).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from gateway.authz.clients import Client

SubjectSeen = Callable[[str, str, str], Awaitable[None]]


class SubjectLedger:
    def __init__(self, remember: SubjectSeen,
                 list_clients: Callable[[], Awaitable[Iterable[Client]]],
                 may_request: Callable[[str], bool], now: Callable[[], float],
                 refresh_s: float = 60.0) -> None:
        self._remember = remember
        self._list = list_clients
        self._may_request = may_request
        self._now = now
        self._refresh_s = refresh_s
        self._sectors: frozenset[str] = frozenset()
        self._loaded_at = float("-inf")
        self._loading: asyncio.Task[None] | None = None

    async def _load(self) -> None:
        self._sectors = frozenset(
            c.sector for c in await self._list()
            if c.kind == "rp" and not c.disabled and self._may_request(c.client_id))
        self._loaded_at = self._now()

    async def consent_sectors(self) -> frozenset[str]:
        """Sectors of relying parties allowed to request consents (re-read once a minute, so a
        newly registered relying party is covered without a restart). One reload at a time:
        the first call waits for it; later ones keep the current set meanwhile (64 concurrent
        verifications each listing every client was measured on the gate path)."""
        if self._now() - self._loaded_at >= self._refresh_s:
            if self._loading is None or self._loading.done():
                self._loading = asyncio.ensure_future(self._load())
                # a failed background reload is retried by the next call; never unobserved
                self._loading.add_done_callback(
                    lambda t: None if t.cancelled() else t.exception())
            if self._loaded_at == float("-inf"):
                await asyncio.shield(self._loading)
        return self._sectors

    async def seen(self, sector: str, subject: str, person_id: str) -> None:
        if sector in await self.consent_sectors():
            await self._remember(sector, subject, person_id)
