"""The consent store port (memory and Redis implementations; one contract suite,
tests/contract/test_consent_store.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.services.consents.model import Consent


class ConsentStore(Protocol):
    """Consents, approval codes and the subject index. `transition` and `take_use` are atomic
    on one consent (one Redis key, one Lua script): they read the status, lifetime and uses
    they decide on in the same step that changes them."""

    async def create(self, consent: Consent, approval_digest: str, retain_s: float) -> None: ...

    async def get(self, consent_id: str) -> Consent | None: ...

    async def for_person(self, person_id: str) -> Sequence[Consent]: ...

    async def transition(self, consent_id: str, allowed_from: Sequence[str], to: str,
                         now: float) -> tuple[bool, str | None]:
        """Move to `to` if the effective status is in `allowed_from`. Returns (moved, the
        effective status before the call, None if no such consent)."""
        ...

    async def take_use(self, consent_id: str, now: float) -> tuple[bool, str | None, int]:
        """Count one use if authorised, unexpired and uses are left (the last use turns the
        status to exhausted). Returns (taken, effective status before, uses after)."""
        ...

    async def refund_use(self, consent_id: str) -> None:
        """Give back a use taken for a fetch the library then failed."""
        ...

    async def approval_code(self, digest: str) -> str | None:
        """The consent id an approval code stands for (None: unknown, used or expired)."""
        ...

    async def spend_approval_code(self, digest: str, consent_id: str) -> bool:
        """Delete the code if it still stands for this consent (single use)."""
        ...

    async def remember_subject(self, sector: str, subject: str, person_id: str,
                               ttl_s: float) -> None: ...

    async def person_for_subject(self, sector: str, subject: str) -> str | None: ...
