"""One person, one record (CONTRACT "Identity model"): 渝快码 (ykm), 电子社保卡 (essc, per issuing
region) and the physical card 实体卡 (ssc_card) linked to ONE person rooted in the citizen ID
(居民身份证, 身份信任源点).

* The citizen ID is stored only as a keyed hash (`trust_root_hash`, for lookup) and AES-GCM
  ciphertext bound to the person id (`sealed_trust_root`, for upstream calls); never in clear.
* A credential's platform account id / card number is stored as a keyed hash (`ref_hash`, for
  lookup) and AES-GCM ciphertext bound to the person and credential ids (`sealed_ref`).
* Clients only ever see pairwise subject identifiers (OpenID Connect Core 1.0 §8.1).

Linking is all or nothing: the credential index entry is claimed first (atomic "first one
wins"), then the person record is updated by compare-and-set; if the update fails the claim is
released. The person record is the truth: an index entry that its person's record does not
back (a crash between the two steps) is stale and may be taken over. A credential therefore
links to one person only, whatever the concurrency.

Revocation (挂失): lost and replaced cards are kept in a revocation set with a version number;
every worker holds an in-process copy (`RevocationView`) kept fresh by pub/sub plus a version
poll, so the gate path answers `revoked` without a store round trip (docs/identity.md).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.authz.datakeys import DataKeys, SealError, suite_of
from gateway.base64url import b64u, unb64u
from gateway.clock import Clock
from gateway.errors import Conflict, IdentityMismatch, InvalidRequest, NotFound
from gateway.services.upstream import (
    AssertionRejected,
    UpstreamIdentity,
    is_valid_card_no,
    is_valid_citizen_id,
    mask_name,
)
from gateway.timefmt import rfc3339_s

CredentialKind = Literal["ykm", "essc", "ssc_card"]
CredentialStatus = Literal["active", "lost", "replaced"]
KINDS: Final = ("ykm", "essc", "ssc_card")
STATUSES: Final = ("active", "lost", "replaced")
#: The attribute vocabulary a scene policy may name (data minimisation: nothing else exists).
ATTRIBUTES: Final = ("concession", "adult", "name_masked", "ssc_card_no", "essc_region")
ADULT_AGE: Final = 18
_CAS_RETRIES: Final = 16


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Credential:
    """A linked credential. `ref_hash` = DataKeys.credential_ref_hash(kind, region, ref);
    the ref itself (account id / card number) only as `sealed_ref` (AES-GCM)."""

    credential_id: str
    kind: CredentialKind
    region: str | None
    ref_hash: str
    masked: str
    status: CredentialStatus
    linked_at: float
    replaced_by: str | None = None
    sealed_ref: str = field(default="", repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.credential_id, "kind": self.kind, "region": self.region,
                "ref_hash": self.ref_hash, "masked": self.masked, "status": self.status,
                "linked_at": self.linked_at, "replaced_by": self.replaced_by,
                "sealed_ref": self.sealed_ref}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Credential:
        return cls(credential_id=d["id"], kind=d["kind"], region=d.get("region"),
                   ref_hash=d["ref_hash"], masked=d["masked"], status=d["status"],
                   linked_at=float(d["linked_at"]), replaced_by=d.get("replaced_by"),
                   sealed_ref=d.get("sealed_ref", ""))

    def public(self) -> dict[str, Any]:
        """What GET /v1/me shows: masked, no hash, no ciphertext."""
        return {"id": self.credential_id, "kind": self.kind, "region": self.region,
                "masked": self.masked, "status": self.status,
                "linked_at": rfc3339_s(self.linked_at), "replaced_by": self.replaced_by}


@dataclass(frozen=True, slots=True)
class Person:
    """`person_id`: 32 hex characters (16 random bytes). `attributes` holds only the minimum
    the attribute vocabulary needs: `adult_on` (ISO date of the 18th birthday), `name_masked`,
    `concession`."""

    person_id: str
    trust_root_hash: str
    sealed_trust_root: str = field(repr=False)
    credentials: tuple[Credential, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)
    version: int = 0

    def credential(self, credential_id: str) -> Credential | None:
        return next((c for c in self.credentials if c.credential_id == credential_id), None)

    def by_ref(self, ref_hash: str) -> Credential | None:
        return next((c for c in self.credentials if c.ref_hash == ref_hash), None)

    def to_json(self) -> str:
        return json.dumps({"pid": self.person_id, "trh": self.trust_root_hash,
                           "str": self.sealed_trust_root,
                           "creds": [c.to_dict() for c in self.credentials],
                           "attrs": dict(self.attributes), "v": self.version},
                          separators=(",", ":"), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Person:
        d = json.loads(raw)
        return cls(person_id=d["pid"], trust_root_hash=d["trh"], sealed_trust_root=d["str"],
                   credentials=tuple(Credential.from_dict(c) for c in d["creds"]),
                   attributes=dict(d["attrs"]), version=int(d["v"]))


# --------------------------------------------------------------------------------------------
# Store port (memory + Redis implementations; one contract suite)
# --------------------------------------------------------------------------------------------

IndexKind = Literal["trust_root", "credential"]


class IdentityStore(Protocol):
    """Person records plus two unique indexes (trust-root hash → person, credential ref hash →
    person) and the card revocation set. Every method touches ONE key (or keys sharing one
    hash tag), so the Redis implementation is Cluster-safe."""

    async def get(self, person_id: str) -> Person | None: ...

    async def create(self, person: Person) -> bool:
        """Store a new record; False if the person id exists already."""
        ...

    async def delete(self, person_id: str) -> None:
        """Drop a record no index points at (the loser of a creation race)."""
        ...

    async def replace(self, old: Person, new: Person) -> bool:
        """Compare-and-set on the version: store `new` (version old.version + 1) only if the
        stored record is still at `old.version`."""
        ...

    async def lookup(self, index: IndexKind, key: str) -> str | None: ...

    async def claim(self, index: IndexKind, key: str, person_id: str,
                    replacing: str | None = None) -> str | None:
        """Atomically point `key` at `person_id` if it is free (or currently points at
        `replacing`). Returns None on success, else the person id it points at."""
        ...

    async def release(self, index: IndexKind, key: str, person_id: str) -> None:
        """Remove `key` only if it points at `person_id`."""
        ...

    async def set_revoked(self, ref_hash: str, revoked: bool) -> int:
        """Add/remove a card from the revocation set, bump and return the version, and
        notify every worker."""
        ...

    async def revocations(self) -> tuple[int, frozenset[str]]: ...

    async def revocation_version(self) -> int: ...

    async def ping(self) -> None: ...

    def person_ids(self) -> AsyncIterator[str]:
        """Every stored person id, in no particular order (operator commands only)."""
        ...


class RevocationView:
    """The in-process copy of the revocation set the gate path consults (no round trip).

    Kept fresh by `apply` (a pub/sub message) and `load` (a full reload when the polled
    version moved): a lost message is repaired by the next poll."""

    def __init__(self) -> None:
        self.version = -1
        self._revoked: frozenset[str] = frozenset()
        self._pending_add: set[str] = set()
        self._pending_remove: set[str] = set()

    def is_revoked(self, ref_hash: str) -> bool:
        if ref_hash in self._pending_remove:
            return False
        return ref_hash in self._revoked or ref_hash in self._pending_add

    def apply(self, ref_hash: str, revoked: bool) -> None:
        if revoked:
            self._pending_add.add(ref_hash)
            self._pending_remove.discard(ref_hash)
        else:
            self._pending_remove.add(ref_hash)
            self._pending_add.discard(ref_hash)

    def load(self, version: int, revoked: frozenset[str]) -> None:
        self.version = version
        self._revoked = revoked
        self._pending_add.clear()
        self._pending_remove.clear()

    def __len__(self) -> int:
        return len((self._revoked | self._pending_add) - self._pending_remove)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def new_person_id() -> str:
    return secrets.token_hex(16)


def mask_ref(ref: str) -> str:
    """Account id / card number mask: first 2 and last 2 characters (CQ*******25)."""
    if len(ref) <= 4:
        return "*" * len(ref)
    return ref[:2] + "*" * (len(ref) - 4) + ref[-2:]


def adult_on(citizen_id: str) -> str:
    """ISO date of the 18th birthday from the birth date in the citizen ID (GB 11643-1999
    §5: digits 7-14 are YYYYMMDD). 29 February births come of age on 1 March."""
    y, m, d = int(citizen_id[6:10]), int(citizen_id[10:12]), int(citizen_id[12:14])
    dt.date(y, m, d)  # ValueError on an impossible date
    try:
        return dt.date(y + ADULT_AGE, m, d).isoformat()
    except ValueError:
        return dt.date(y + ADULT_AGE, 3, 1).isoformat()


def credential_kind(ident: UpstreamIdentity) -> tuple[CredentialKind, str | None]:
    if ident.platform == "ykb":
        return "ykm", None
    return "essc", ident.region


@dataclass(frozen=True, slots=True)
class CredentialInput:
    """A credential as an upstream or the registry names it, before linking."""

    kind: CredentialKind
    region: str | None
    ref: str = field(repr=False)
    status: CredentialStatus = "active"


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """One person of an operator registry sync (same shape as gateway/data/residents.json)."""

    citizen_id: str = field(repr=False)
    display_name: str = field(repr=False)
    credentials: tuple[CredentialInput, ...]
    concession: str | None = None


@dataclass(frozen=True, slots=True)
class SyncReport:
    persons: int = 0
    created: int = 0
    linked: int = 0
    updated: int = 0
    conflicts: int = 0


@dataclass
class ResealReport:
    """What `gateway identity reseal` changed (docs/crypto-suites.md "Migration")."""

    suite: str = "intl"
    dry_run: bool = False
    persons: int = 0
    persons_changed: int = 0
    trust_roots_rehashed: int = 0
    trust_roots_resealed: int = 0
    credentials_rehashed: int = 0
    credentials_resealed: int = 0
    revocations_moved: int = 0
    already_current: int = 0
    failed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# --------------------------------------------------------------------------------------------
# The use cases
# --------------------------------------------------------------------------------------------

class CardDenyList(Protocol):
    """Where a physical card's refusal is published for offline gates
    (gateway.services.revocations.RevocationLists; docs/offline.md §5)."""

    async def card_status(self, region: str | None, card_no: str, revoked: bool) -> int: ...


class IdentityService:
    def __init__(self, store: IdentityStore, clock: Clock, keys: DataKeys, *,
                 ref_seal_key: bytes | None = None,
                 deny_list: CardDenyList | None = None) -> None:
        """`ref_seal_key`: 32 bytes for AES-GCM sealing of credential refs; by default
        `keys.credential_seal_key` (HKDF of the data master key, its own label).
        `deny_list`: the offline gates' card deny-list, told of every card refusal."""
        self.store = store
        self.deny_list = deny_list
        self.clock = clock
        self.keys = keys
        # An explicit key keeps the original AES-GCM form; otherwise DataKeys seals in the
        # configured crypto suite and opens both (docs/crypto-suites.md).
        self._ref_aead = AESGCM(ref_seal_key) if ref_seal_key is not None else None
        self.revocations = RevocationView()
        #: called after every suspend/unsuspend with (person id, suspended)
        self.suspension_hooks: list[Callable[[str, bool], Awaitable[None]]] = []

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
        if suspended and deny_list is not None:  # offline gates: the cards join the deny-list
            for _, card in cards:
                await deny_list.card_status(card[0], card[1], True)
        await self._set_revoked(self._person_revocation_key(person_id), suspended)
        for hook in self.suspension_hooks:  # e.g. device certificates onto their list
            await hook(person_id, suspended)
        if not suspended and deny_list is not None:
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
        if card is not None and self.deny_list is not None and deny:
            await self.deny_list.card_status(card[0], card[1], True)
        await self.store.set_revoked(ref_hash, revoked)
        self.revocations.apply(ref_hash, revoked)
        if card is not None and self.deny_list is not None and not deny:
            await self.deny_list.card_status(card[0], card[1], False)

    def _card(self, person: Person, cred: Credential) -> tuple[str | None, str] | None:
        """(region, card number) of a physical card, for the deny-list."""
        if cred.kind != "ssc_card" or self.deny_list is None:
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


# --------------------------------------------------------------------------------------------
# Linking by upstream assertion (POST /v1/me/links)
# --------------------------------------------------------------------------------------------

class _Claimer(Protocol):
    async def claim(self, key: str, ttl_s: float, value: str = "1") -> str | None: ...


AssertionCheck = Callable[[str], Awaitable[UpstreamIdentity]]


def assertion_replay_key(ident: UpstreamIdentity) -> str:
    """The single-use key of an assertion: shared with the token-exchange grant, so one
    assertion serves one purpose once."""
    return f"assertion:{ident.issuer}:{ident.jti}"


class Links:
    def __init__(self, service: IdentityService, verify_assertion: AssertionCheck,
                 replay: _Claimer) -> None:
        self.service = service
        self.verify_assertion = verify_assertion
        self.replay = replay

    async def link(self, person_id: str, assertion: str) -> Credential:
        try:
            ident = await self.verify_assertion(assertion)
        except AssertionRejected as exc:
            raise InvalidRequest(f"The assertion was rejected: {exc.reason}") from None
        remaining = max(1.0, float(ident.expires_at) - self.service.clock.now()) + 60
        if await self.replay.claim(assertion_replay_key(ident), remaining):
            raise InvalidRequest("The assertion was already used")
        return await self.service.link_upstream(person_id, ident)


# --------------------------------------------------------------------------------------------
# What the gate pipeline and code issuance need (services.gate.GateIdentity, codes.CodeIdentity)
# --------------------------------------------------------------------------------------------

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


class _Platform(Protocol):
    async def verify_assertion(self, assertion: str) -> UpstreamIdentity: ...


class AssertionRouter:
    """Picks the platform verifier by the assertion's (unverified) `iss`: 渝快办 or the e-SSC
    platform of a region; the chosen verifier then checks everything (RFC 7523 §3)."""

    def __init__(self, by_issuer: Mapping[str, _Platform]) -> None:
        self.by_issuer = dict(by_issuer)

    async def __call__(self, assertion: str) -> UpstreamIdentity:
        if not isinstance(assertion, str) or len(assertion) > 8192:
            raise AssertionRejected("malformed")
        parts = assertion.split(".")
        try:
            if len(parts) != 3:
                raise ValueError("not a compact JWS")
            iss = json.loads(unb64u(parts[1])).get("iss")
        except (ValueError, UnicodeDecodeError, AttributeError):
            raise AssertionRejected("malformed") from None
        platform = self.by_issuer.get(iss) if isinstance(iss, str) else None
        if platform is None:
            raise AssertionRejected("unknown_issuer")
        return await platform.verify_assertion(assertion)
