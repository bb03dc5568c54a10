"""The identity use cases: reads, the revocation view, disclosure, linking and the
registry sync (module docstring of gateway.services.identity)."""

from __future__ import annotations

import datetime as dt
import os
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.authz.datakeys import DataKeys, SealError, suite_of
from gateway.base64url import b64u, unb64u
from gateway.clock import Clock
from gateway.errors import Conflict, IdentityMismatch, NotFound
from gateway.services.identity.records import (
    STATUSES,
    Credential,
    CredentialInput,
    CredentialStatus,
    Person,
    RegistryEntry,
    ResealReport,
    SyncReport,
    adult_on,
    credential_kind,
    mask_ref,
    new_person_id,
)
from gateway.services.identity.store import IndexKind, RevocationView
from gateway.services.ports import CardDenyList, IdentityStore, SuspensionObserver
from gateway.services.upstream import (
    UpstreamIdentity,
    is_valid_card_no,
    is_valid_citizen_id,
    mask_name,
)

_CAS_RETRIES: Final = 16  # compare-and-set attempts before a write gives up (Conflict)


class IdentityService:
    def __init__(self, store: IdentityStore, clock: Clock, keys: DataKeys, *,
                 deny_list: CardDenyList, on_suspension: Sequence[SuspensionObserver] = (),
                 ref_seal_key: bytes | None = None) -> None:
        """`deny_list`: the offline gates' card deny-list, told of every card refusal.
        `on_suspension`: told of every suspend/unsuspend with (person id, suspended), after
        the revocation set moved (e.g. the device revocation log).
        `ref_seal_key`: 32 bytes for AES-GCM sealing of credential refs; by default
        `keys.credential_seal_key` (HKDF of the data master key, its own label)."""
        self.store = store
        self.deny_list = deny_list
        self._on_suspension = tuple(on_suspension)
        self.clock = clock
        self.keys = keys
        # An explicit key keeps the original AES-GCM form; otherwise DataKeys seals in the
        # configured crypto suite and opens both (docs/crypto-suites.md).
        self._ref_aead = AESGCM(ref_seal_key) if ref_seal_key is not None else None
        self.revocations = RevocationView()

    # -- sealing ------------------------------------------------------------------------------
    def _seal_ref(self, ref: str, person_id: str, credential_id: str) -> str:
        aad = f"{person_id}|{credential_id}".encode()
        if self._ref_aead is None:
            return self.keys.seal_credential_ref(ref, aad)
        nonce = os.urandom(12)
        return b64u(nonce + self._ref_aead.encrypt(nonce, ref.encode("utf-8"), aad))

    def open_ref(self, person: Person, cred: Credential) -> str:
        aad = f"{person.person_id}|{cred.credential_id}".encode()
        if self._ref_aead is None:
            return self.keys.open_credential_ref(cred.sealed_ref, aad)
        raw = unb64u(cred.sealed_ref)
        try:
            return self._ref_aead.decrypt(raw[:12], raw[12:], aad).decode("utf-8")
        except InvalidTag:
            raise SealError("credential ref does not authenticate") from None

    def ref_hash(self, kind: str, region: str | None, ref: str) -> str:
        """The configured crypto suite's hash (what new links are indexed under)."""
        return self.keys.credential_ref_hash(kind, region, ref)

    def ref_hashes(self, kind: str, region: str | None, ref: str) -> tuple[str, ...]:
        """Every suite's hash, the configured one first: a credential linked before a suite
        switch is found under its old hash until `gateway identity reseal` moves it."""
        return self.keys.credential_ref_hashes(kind, region, ref)

    def credential_of(self, person: Person, kind: str, region: str | None,
                      ref: str) -> Credential | None:
        for rh in self.ref_hashes(kind, region, ref):
            c = person.by_ref(rh)
            if c is not None:
                return c
        return None

    def holds_trust_root(self, person: Person, citizen_id: str) -> bool:
        return person.trust_root_hash in self.keys.trust_root_hashes(citizen_id)

    # -- reads --------------------------------------------------------------------------------
    async def get(self, person_id: str) -> Person | None:
        return await self.store.get(person_id)

    async def require(self, person_id: str) -> Person:
        p = await self.store.get(person_id)
        if p is None:
            raise NotFound("No such person")
        return p

    async def find_by_credential(self, kind: str, region: str | None,
                                 ref: str) -> Person | None:
        for rh in self.ref_hashes(kind, region, ref):
            p = await self.find_by_ref_hash(rh)
            if p is not None:
                return p
        return None

    async def find_by_ref_hash(self, ref_hash: str) -> Person | None:
        pid = await self.store.lookup("credential", ref_hash)
        if pid is None:
            return None
        p = await self.store.get(pid)
        if p is None or p.by_ref(ref_hash) is None:
            return None  # a stale index entry: the record is the truth
        return p

    async def find_by_citizen_id(self, citizen_id: str) -> Person | None:
        for trh in self.keys.trust_root_hashes(citizen_id):
            pid = await self.store.lookup("trust_root", trh)
            if pid is None:
                continue
            p = await self.store.get(pid)
            if p is not None and p.trust_root_hash == trh:
                return p
        return None

    def subject_for(self, sector: str, person_id: str) -> str:
        return self.keys.pairwise_subject(sector, person_id)

    async def citizen_id(self, person_id: str) -> str:
        """The decrypted trust root, for upstream calls only (never log or return it)."""
        p = await self.require(person_id)
        return self.keys.open_trust_root(p.sealed_trust_root, p.person_id)

    async def essc_account(self, person_id: str,
                           region: str | None = None) -> tuple[str, str] | None:
        """(region, e-SSC card-holder id) of an active e-SSC credential; CQ first by default."""
        p = await self.require(person_id)
        cands = [c for c in p.credentials if c.kind == "essc" and c.status == "active"
                 and (region is None or c.region == region)]
        if not cands:
            return None
        cands.sort(key=lambda c: (c.region != "CQ", c.linked_at))
        c = cands[0]
        return str(c.region), self.open_ref(p, c)

    def is_card_revoked(self, ref_hash: str) -> bool:
        """Gate path: the in-process revocation view, no store round trip."""
        return self.revocations.is_revoked(ref_hash)

    @staticmethod
    def _person_revocation_key(person_id: str) -> str:
        return "person:" + person_id

    def is_person_suspended(self, person_id: str) -> bool:
        """Gate path: a suspended person's codes and taps deny `revoked` (in-process view)."""
        return self.revocations.is_revoked(self._person_revocation_key(person_id))

    async def person_suspended(self, person_id: str) -> bool:
        """Off the gate path (token exchange, login): the view brought up to the store's
        version first, so a suspension holds at once on every worker, not within a second."""
        await self.refresh_revocations()
        return self.is_person_suspended(person_id)

    async def suspend(self, person_id: str, suspended: bool = True) -> None:
        """Operator action (e.g. a fraud case, a death registered): every credential of the
        person stops at every gate within a second, through the same revocation view as a
        lost card. Reversible."""
        person = await self.require(person_id)
        deny_list = self.deny_list
        cards = [(c, card) for c in person.credentials
                 if (card := self._card(person, c)) is not None]
        if suspended:  # offline gates: the cards join the deny-list
            for _, card in cards:
                await deny_list.card_status(card[0], card[1], True)
        await self._set_revoked(self._person_revocation_key(person_id), suspended)
        for observer in self._on_suspension:  # e.g. device certificates onto their list
            await observer(person_id, suspended)
        if not suspended:
            for cred, card in cards:
                if cred.status == "active":
                    await deny_list.card_status(card[0], card[1], False)

    async def refresh_revocations(self, force: bool = False) -> bool:
        """Reload the view when the store's version moved (the periodic poll)."""
        version = await self.store.revocation_version()
        if not force and version == self.revocations.version:
            return False
        v, revoked = await self.store.revocations()
        self.revocations.load(v, revoked)
        return True

    async def disclose(self, person_id: str, names: Sequence[str]) -> dict[str, Any]:
        """Only the named attributes of the vocabulary (ATTRIBUTES); unknown names are skipped."""
        p = await self.require(person_id)
        return self.disclose_from(p, names)

    def disclose_from(self, p: Person, names: Iterable[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        attrs = p.attributes
        for name in names:
            if name == "concession":
                out[name] = attrs.get("concession")
            elif name == "adult":
                ao = attrs.get("adult_on")
                today = dt.datetime.fromtimestamp(self.clock.now(), dt.UTC).date().isoformat()
                out[name] = bool(ao) and today >= str(ao)
            elif name == "name_masked":
                out[name] = attrs.get("name_masked")
            elif name == "ssc_card_no":
                card = next((c for c in p.credentials
                             if c.kind == "ssc_card" and c.status == "active"), None)
                out[name] = self.open_ref(p, card) if card is not None else None
            elif name == "essc_region":
                e = sorted((c for c in p.credentials if c.kind == "essc" and c.status == "active"),
                           key=lambda c: (c.region != "CQ", c.linked_at))
                out[name] = e[0].region if e else None
        return out

    # -- person creation and linking ------------------------------------------------------------
    async def _person_for_trust_root(self, citizen_id: str,
                                     display_name: str) -> tuple[Person, bool]:
        """Find by trust root, else create (race-safe: the trust-root index is unique)."""
        if not is_valid_citizen_id(citizen_id):
            raise ValueError("invalid citizen ID")
        trh = self.keys.trust_root_hash(citizen_id)
        for _ in range(_CAS_RETRIES):
            known = await self.find_by_citizen_id(citizen_id)  # either suite's hash
            if known is not None:
                return known, False
            pid = await self.store.lookup("trust_root", trh)
            new_pid = new_person_id()
            person = Person(
                person_id=new_pid, trust_root_hash=trh,
                sealed_trust_root=self.keys.seal_trust_root(citizen_id, new_pid),
                credentials=(), attributes={"adult_on": adult_on(citizen_id),
                                            "name_masked": mask_name(display_name)})
            # Record first, then the index: a claimed index entry always has its record.
            if not await self.store.create(person):
                continue
            owner = await self.store.claim("trust_root", trh, new_pid, replacing=pid)
            if owner is None:
                return person, True
            # Lost the race: another worker created this person; drop our unreferenced record.
            await self.store.delete(new_pid)
        raise Conflict("The person record is being changed concurrently")

    async def _link(self, person: Person, cred_in: CredentialInput, *,
                    replaced_by: str | None = None) -> tuple[Person, Credential, bool]:
        """Link (all or nothing). Returns (person, credential, newly_linked). Raises
        IdentityMismatch when the credential is linked to another person."""
        rh = self.ref_hash(cred_in.kind, cred_in.region, cred_in.ref)
        existing = self.credential_of(person, cred_in.kind, cred_in.region, cred_in.ref)
        if existing is not None:
            return person, existing, False
        for old in self.ref_hashes(cred_in.kind, cred_in.region, cred_in.ref)[1:]:
            # linked to someone else under the other suite's hash (before a reseal)
            owner = await self.store.lookup("credential", old)
            if owner is not None and owner != person.person_id:
                other = await self.store.get(owner)
                if other is not None and other.by_ref(old) is not None:
                    raise IdentityMismatch()
        stale: str | None = None
        for _ in range(_CAS_RETRIES):
            owner = await self.store.claim("credential", rh, person.person_id, replacing=stale)
            if owner is None or owner == person.person_id:
                break
            other = await self.store.get(owner)
            if other is not None and other.by_ref(rh) is not None:
                raise IdentityMismatch()
            stale = owner  # an index entry its record does not back: take it over
        else:
            raise Conflict("The credential is being linked concurrently")
        try:
            for _ in range(_CAS_RETRIES):
                fresh = await self.store.get(person.person_id)
                if fresh is None:
                    raise NotFound("No such person")
                already = fresh.by_ref(rh)
                if already is not None:
                    return fresh, already, False
                cid = "c" + secrets.token_hex(8)
                cred = Credential(
                    credential_id=cid, kind=cred_in.kind, region=cred_in.region, ref_hash=rh,
                    masked=mask_ref(cred_in.ref), status=cred_in.status,
                    linked_at=self.clock.now(), replaced_by=replaced_by,
                    sealed_ref=self._seal_ref(cred_in.ref, fresh.person_id, cid))
                new = replace(fresh, credentials=(*fresh.credentials, cred),
                              version=fresh.version + 1)
                if await self.store.replace(fresh, new):
                    break
            else:
                raise Conflict("The person record is being changed concurrently")
        except BaseException:
            await self.store.release("credential", rh, person.person_id)
            raise
        if cred.kind == "ssc_card":
            await self._set_revoked(rh, cred.status != "active",
                                    (cred_in.region, cred_in.ref))
        return new, cred, True

    async def resolve_upstream(self, ident: UpstreamIdentity) -> Person:
        """Token exchange: the person an upstream assertion names. Found by the credential,
        else by the trust root (the credential is linked on first sight), else created."""
        kind, region = credential_kind(ident)
        found = await self.find_by_credential(kind, region, ident.account_id)
        if found is not None:
            if not self.holds_trust_root(found, ident.citizen_id):
                raise IdentityMismatch(debug="credential bound to another trust root")
            return found
        person, _ = await self._person_for_trust_root(ident.citizen_id, ident.display_name)
        person, _, _ = await self._link(person, CredentialInput(kind, region, ident.account_id))
        return person

    async def link_upstream(self, person_id: str, ident: UpstreamIdentity) -> Credential:
        """POST /v1/me/links: the assertion's trust root must be this person's."""
        person = await self.require(person_id)
        if not self.holds_trust_root(person, ident.citizen_id):
            raise IdentityMismatch()
        kind, region = credential_kind(ident)
        _, cred, _ = await self._link(person, CredentialInput(kind, region, ident.account_id))
        return cred

    async def unlink(self, person_id: str, credential_id: str) -> None:
        for _ in range(_CAS_RETRIES):
            person = await self.require(person_id)
            cred = person.credential(credential_id)
            if cred is None:
                raise NotFound("No such linked credential")
            new = replace(person, credentials=tuple(c for c in person.credentials
                                                    if c.credential_id != credential_id),
                          version=person.version + 1)
            if await self.store.replace(person, new):
                await self.store.release("credential", cred.ref_hash, person_id)
                if cred.kind == "ssc_card":
                    # an unlinked card no longer names anybody: taps must not pass
                    await self._set_revoked(cred.ref_hash, True, self._card(person, cred))
                return
        raise Conflict("The person record is being changed concurrently")

    # -- crypto-suite migration ------------------------------------------------------------
    async def reseal(self, *, dry_run: bool = False) -> ResealReport:
        """Move every record to the configured crypto suite: re-hash the trust root and each
        credential number under its keyed hash, re-seal their ciphertexts, move the unique
        index entries and revocations to the new hashes, release the old entries. Each
        person is one compare-and-set; a record changed concurrently is retried, then
        counted as failed (run again). Idempotent: a second run changes nothing."""
        report = ResealReport(suite=self.keys.suite, dry_run=dry_run)
        await self.refresh_revocations(force=True)  # which cards are revoked, from the store
        async for pid in self.store.person_ids():
            report.persons += 1
            for _ in range(_CAS_RETRIES):
                try:
                    done = await self._reseal_one(pid, report, dry_run)
                except (SealError, IdentityMismatch):
                    report.failed += 1
                    break
                if done:
                    break
            else:
                report.failed += 1
        return report

    async def _reseal_one(self, pid: str, report: ResealReport, dry_run: bool) -> bool:
        """One person; False when its record changed under us (the caller retries)."""
        person = await self.store.get(pid)
        if person is None:
            return True
        suite = self.keys.suite
        counts = {"trh": 0, "trs": 0, "crh": 0, "crs": 0, "rev": 0}
        claims: list[tuple[IndexKind, str]] = []
        releases: list[tuple[IndexKind, str]] = []
        trh, sealed_tr = person.trust_root_hash, person.sealed_trust_root
        if suite_of(trh) != suite or suite_of(sealed_tr) != suite:
            citizen_id = self.keys.open_trust_root(sealed_tr, pid)
            if suite_of(trh) != suite:
                trh = self.keys.trust_root_hash(citizen_id)
                claims.append(("trust_root", trh))
                releases.append(("trust_root", person.trust_root_hash))
                counts["trh"] += 1
            if suite_of(sealed_tr) != suite:
                sealed_tr = self.keys.seal_trust_root(citizen_id, pid)
                counts["trs"] += 1
        creds: list[Credential] = []
        moved_revocations: list[tuple[str, str]] = []
        for c in person.credentials:
            if suite_of(c.ref_hash) == suite and suite_of(c.sealed_ref) == suite:
                creds.append(c)
                continue
            ref = self.open_ref(person, c)
            new = c
            if suite_of(c.ref_hash) != suite:
                rh = self.ref_hash(c.kind, c.region, ref)
                new = replace(new, ref_hash=rh)
                claims.append(("credential", rh))
                releases.append(("credential", c.ref_hash))
                counts["crh"] += 1
                if c.kind == "ssc_card" and self.revocations.is_revoked(c.ref_hash):
                    moved_revocations.append((c.ref_hash, rh))
                    counts["rev"] += 1
            if suite_of(c.sealed_ref) != suite:
                new = replace(new, sealed_ref=self._seal_ref(ref, pid, c.credential_id))
                counts["crs"] += 1
            creds.append(new)
        if not any(counts.values()):
            report.already_current += 1
            return True
        if not dry_run:
            claimed: list[tuple[IndexKind, str]] = []
            try:
                for index, key in claims:
                    owner = await self.store.claim(index, key, pid)
                    if owner is not None and owner != pid:
                        raise IdentityMismatch(debug="the new hash is indexed to another person")
                    claimed.append((index, key))
                updated = replace(person, trust_root_hash=trh, sealed_trust_root=sealed_tr,
                                  credentials=tuple(creds), version=person.version + 1)
                if not await self.store.replace(person, updated):
                    for index, key in claimed:
                        await self.store.release(index, key, pid)
                    return False
            except IdentityMismatch:
                for index, key in claimed:
                    await self.store.release(index, key, pid)
                raise
            for old, new_rh in moved_revocations:
                await self._set_revoked(new_rh, True)  # the new form first: never a gap
                await self._set_revoked(old, False)
            for index, key in releases:
                await self.store.release(index, key, pid)
        report.persons_changed += 1
        report.trust_roots_rehashed += counts["trh"]
        report.trust_roots_resealed += counts["trs"]
        report.credentials_rehashed += counts["crh"]
        report.credentials_resealed += counts["crs"]
        report.revocations_moved += counts["rev"]
        return True

    async def _set_revoked(self, ref_hash: str, revoked: bool,
                           card: tuple[str | None, str] | None = None,
                           deny_card: bool | None = None) -> None:
        """The online revocation set and, for a physical card (``card`` = region, number),
        the offline deny-list (``deny_card``, default ``revoked``): an addition to the
        deny-list is made first and a removal last, so a failure between the two writes leaves
        the card refused (fail closed)."""
        deny = revoked if deny_card is None else deny_card
        if card is not None and deny:
            await self.deny_list.card_status(card[0], card[1], True)
        await self.store.set_revoked(ref_hash, revoked)
        self.revocations.apply(ref_hash, revoked)
        if card is not None and not deny:
            await self.deny_list.card_status(card[0], card[1], False)

    def _card(self, person: Person, cred: Credential) -> tuple[str | None, str] | None:
        """(region, card number) of a physical card, for the deny-list."""
        if cred.kind != "ssc_card":
            return None
        try:
            return cred.region, self.open_ref(person, cred)
        except SealError:
            return None

    async def set_card_status(self, person_id: str, credential_id: str,
                              status: CredentialStatus,
                              replaced_by: str | None = None) -> Credential:
        if status not in STATUSES:
            raise ValueError("unknown status")
        for _ in range(_CAS_RETRIES):
            person = await self.require(person_id)
            cred = person.credential(credential_id)
            if cred is None or cred.kind != "ssc_card":
                raise NotFound("No such card")
            if cred.status == status and cred.replaced_by == (replaced_by or cred.replaced_by):
                new_cred = cred
                ok = True
            else:
                new_cred = replace(cred, status=status,
                                   replaced_by=replaced_by or cred.replaced_by)
                new = replace(person, credentials=tuple(
                    new_cred if c.credential_id == credential_id else c
                    for c in person.credentials), version=person.version + 1)
                ok = await self.store.replace(person, new)
            if ok:
                # Revoke before answering: the loss is effective when the call returns.
                await self._set_revoked(
                    cred.ref_hash, status != "active", self._card(person, cred),
                    deny_card=status != "active" or self.is_person_suspended(person_id))
                return new_cred
        raise Conflict("The person record is being changed concurrently")

    async def report_loss(self, person_id: str, credential_id: str) -> Credential:
        """挂失: the card's taps deny `revoked` on every worker within one second."""
        person = await self.require(person_id)
        cred = person.credential(credential_id)
        if cred is None or cred.kind != "ssc_card":
            raise NotFound("No such card")
        if cred.status == "replaced":
            return cred
        return await self.set_card_status(person_id, credential_id, "lost")

    # -- operator registry sync ---------------------------------------------------------------
    async def upsert(self, entry: RegistryEntry) -> SyncReport:
        """Idempotent upsert of one person and their credentials from an upstream registry:
        creates the person, links missing credentials, updates card status (and the
        replacement chain: a `replaced` card points at the active card of its region)."""
        person, created = await self._person_for_trust_root(entry.citizen_id,
                                                            entry.display_name)
        linked = updated = conflicts = 0
        for c in entry.credentials:
            if c.kind == "ssc_card" and not is_valid_card_no(c.ref):
                raise ValueError("bad card number in registry entry")
            try:
                person, cred, new = await self._link(person, c)
            except IdentityMismatch:
                conflicts += 1
                continue
            linked += int(new)
            if c.kind == "ssc_card" and cred.status != c.status:
                await self.set_card_status(person.person_id, cred.credential_id, c.status)
                updated += 1
        person = await self.require(person.person_id)
        # replacement chain
        for old in person.credentials:
            if old.kind == "ssc_card" and old.status == "replaced" and old.replaced_by is None:
                succ = next((d for d in person.credentials if d.kind == "ssc_card"
                             and d.region == old.region and d.status == "active"), None)
                if succ is not None:
                    await self.set_card_status(person.person_id, old.credential_id, "replaced",
                                               replaced_by=succ.credential_id)
                    updated += 1
        for _ in range(_CAS_RETRIES):
            person = await self.require(person.person_id)
            attrs = dict(person.attributes)
            attrs["concession"] = entry.concession
            attrs["name_masked"] = mask_name(entry.display_name)
            if attrs == dict(person.attributes):
                break
            if await self.store.replace(person, replace(person, attributes=attrs,
                                                        version=person.version + 1)):
                updated += 1
                break
        return SyncReport(persons=1, created=int(created), linked=linked, updated=updated,
                          conflicts=conflicts)

    async def sync(self, entries: Iterable[RegistryEntry]) -> SyncReport:
        total = SyncReport()
        for e in entries:
            r = await self.upsert(e)
            total = SyncReport(total.persons + r.persons, total.created + r.created,
                               total.linked + r.linked, total.updated + r.updated,
                               total.conflicts + r.conflicts)
        return total


def registry_entries(doc: Mapping[str, Any]) -> list[RegistryEntry]:
    """Registry document → entries. Shape: {"residents": [{citizen_id, display_name,
    ykm_account?, essc_accounts: [{region, holder_id}], cards: [{card_no, region, status}],
    concession?}]} (the shape of gateway/data/residents.json)."""
    out = []
    for r in doc.get("residents", doc.get("persons", [])):
        creds: list[CredentialInput] = []
        if r.get("ykm_account"):
            creds.append(CredentialInput("ykm", None, r["ykm_account"]))
        for a in r.get("essc_accounts", ()):
            creds.append(CredentialInput("essc", a["region"], a["holder_id"]))
        # active cards first, so a replaced card can point at its successor
        for c in sorted(r.get("cards", ()), key=lambda c: c["status"] != "active"):
            if c["status"] not in STATUSES:
                raise ValueError("bad card status in registry entry")
            creds.append(CredentialInput("ssc_card", c["region"], c["card_no"], c["status"]))
        out.append(RegistryEntry(citizen_id=r["citizen_id"], display_name=r["display_name"],
                                 credentials=tuple(creds), concession=r.get("concession")))
    return out


PersonResolverFn = Callable[[UpstreamIdentity], Awaitable[Person]]
