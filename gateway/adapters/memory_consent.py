"""In-memory consent store for the sandbox and unit tests (one process). Every operation
runs without an await between its read and its write, so it is atomic on one event loop;
it passes the same contract suite as the Redis store (tests/contract/test_consent_store.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from gateway.clock import Clock
from gateway.services.consents import (
    AUTHORISED,
    EXHAUSTED,
    Consent,
    with_status,
)


class MemoryConsentStore:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._consents: dict[str, Consent] = {}
        self._by_person: dict[str, list[str]] = {}
        self._codes: dict[str, tuple[str, float]] = {}
        self._subjects: dict[tuple[str, str], tuple[str, float]] = {}

    async def create(self, consent: Consent, approval_digest: str, retain_s: float) -> None:
        self._consents[consent.id] = consent
        self._by_person.setdefault(consent.person_id, []).append(consent.id)
        self._codes[approval_digest] = (consent.id, consent.approve_by)

    async def get(self, consent_id: str) -> Consent | None:
        return self._consents.get(consent_id)

    async def for_person(self, person_id: str) -> Sequence[Consent]:
        return [self._consents[i] for i in self._by_person.get(person_id, ())
                if i in self._consents]

    async def transition(self, consent_id: str, allowed_from: Sequence[str], to: str,
                         now: float) -> tuple[bool, str | None]:
        c = self._consents.get(consent_id)
        if c is None:
            return False, None
        before = c.effective_status(now)
        if before not in allowed_from:
            return False, before
        self._consents[consent_id] = with_status(c, to, now)
        return True, before

    async def take_use(self, consent_id: str, now: float) -> tuple[bool, str | None, int]:
        c = self._consents.get(consent_id)
        if c is None:
            return False, None, 0
        before = c.effective_status(now)
        if before != AUTHORISED or c.uses >= c.max_uses:
            return False, (EXHAUSTED if before == AUTHORISED else before), c.uses
        uses = c.uses + 1
        self._consents[consent_id] = replace(
            c, uses=uses, status=EXHAUSTED if uses >= c.max_uses else c.status)
        return True, before, uses

    async def refund_use(self, consent_id: str) -> None:
        c = self._consents.get(consent_id)
        if c is None or c.uses <= 0:
            return
        status = AUTHORISED if c.status == EXHAUSTED else c.status
        self._consents[consent_id] = replace(c, uses=c.uses - 1, status=status)

    async def approval_code(self, digest: str) -> str | None:
        item = self._codes.get(digest)
        if item is None or item[1] <= self._clock.now():
            return None
        return item[0]

    async def spend_approval_code(self, digest: str, consent_id: str) -> bool:
        item = self._codes.get(digest)
        if item is None or item[0] != consent_id or item[1] <= self._clock.now():
            return False
        del self._codes[digest]
        return True

    async def remember_subject(self, sector: str, subject: str, person_id: str,
                               ttl_s: float) -> None:
        self._subjects[(sector, subject)] = (person_id, self._clock.now() + ttl_s)

    async def person_for_subject(self, sector: str, subject: str) -> str | None:
        item = self._subjects.get((sector, subject))
        if item is None or item[1] <= self._clock.now():
            return None
        return item[0]
