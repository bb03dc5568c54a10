"""The identity service as the gate path and code issuance see it
(gateway.services.gate.GateIdentity, gateway.services.codes.CodeIdentity)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.services.identity.records import Person
from gateway.services.identity.service import IdentityService


class GateIdentityAdapter:
    """IdentityService seen through gateway.services.gate.GateIdentity (the gate path) and
    gateway.services.codes.CodeIdentity (issuing codes)."""

    def __init__(self, service: IdentityService) -> None:
        self.service = service

    async def essc_account(self, person_id: str,
                           region: str | None) -> tuple[str, str] | None:
        got = await self.service.essc_account(person_id, region)
        if got is None:
            return None
        r, account = got
        return account, r  # codes wants (holder account id, region)

    async def person_by_essc(self, region: str, holder_account_id: str) -> str | None:
        p = await self.service.find_by_credential("essc", region, holder_account_id)
        if p is None:
            return None
        c = self.service.credential_of(p, "essc", region, holder_account_id)
        return p.person_id if c is not None and c.status == "active" else None

    async def card_holder(self, region: str, card_no: str) -> tuple[str, Person] | None:
        """The person of an active card: the revocation view first (no I/O: a lost or
        replaced card stops at once), then the record (one store read)."""
        hashes = self.service.ref_hashes("ssc_card", region, card_no)
        if any(self.service.is_card_revoked(rh) for rh in hashes):  # either suite's form
            return None
        person = await self.service.find_by_credential("ssc_card", region, card_no)
        cred = (self.service.credential_of(person, "ssc_card", region, card_no)
                if person is not None else None)
        if person is None or cred is None or cred.status != "active":
            return None
        return person.person_id, person

    def is_suspended(self, person_id: str) -> bool:
        # e-SSC codes are also bound to a live link (person_by_essc), cards to an active card;
        # every face stops when the person is suspended. In-process view: no round trip.
        return self.service.is_person_suspended(person_id)

    async def disclose(self, person_id: str, names: Sequence[str]) -> dict[str, Any]:
        return await self.service.disclose(person_id, names)

    def disclose_from(self, record: Person, names: Sequence[str]) -> dict[str, Any]:
        return self.service.disclose_from(record, names)
