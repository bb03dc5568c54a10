"""Every port the use cases depend on, gathered in one place (the services layer's; the
shared ones — SingleUse, ClientStore, Health — are in gateway/ports.py, the OIDC stores in
gateway/authz/ports.py). Adapters implement them; the composition root (gateway/app.py)
types each store it builds by its port, so mypy checks every adapter against it; ONE
contract suite per store runs over every implementation (tests/contract/).

Record types are imported for annotations only: this module imports nothing at run time
that could import it back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from gateway.services.consents.model import Consent
    from gateway.services.devices import AddResult, DeviceRecord, RevokedSerial
    from gateway.services.gate import Verified
    from gateway.services.identity.records import Person
    from gateway.services.identity.store import IndexKind
    from gateway.services.records import Batch, ExportPage, TransactionRecord
    from gateway.services.upstream import (
        Certificate,
        Platform,
        UpstreamAccount,
        UpstreamIdentity,
    )

__all__ = [
    "AuditLog",
    "CardDenyList",
    "CertificateLibrary",
    "CodeIdentity",
    "ConsentStore",
    "CredentialFace",
    "DeviceStore",
    "EsscPlatform",
    "ExporterLock",
    "GateIdentity",
    "IdentityPlatform",
    "IdentityStore",
    "Outbox",
    "RecordStore",
    "RecordingClaims",
    "SuspensionObserver",
]


# --------------------------------------------------------------------------------------------
# Stores (memory, Redis and — records — PostgreSQL implementations; tests/contract/)
# --------------------------------------------------------------------------------------------

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


class AuditLog(Protocol):
    """The store: appends atomically (no two entries with one seq, never a fork across
    workers) and reads back in order. It chains under `chain_key`."""

    chain_key: bytes

    async def append(self, event: Mapping[str, Any], ts: float) -> dict[str, Any]:
        """Chain `event` (an AuditEvent body) after the current head; return the entry."""
        ...

    async def entries(self, start_seq: int = 1, count: int = 1000) -> Sequence[dict[str, Any]]:
        """Entries with seq ≥ start_seq, in order, at most `count`."""
        ...

    async def head(self) -> tuple[int, str]:
        """(last seq, last hash); (0, GENESIS) when empty."""
        ...

    async def for_subject(self, subject: str, limit: int = 100) -> Sequence[dict[str, Any]]:
        """The newest `limit` entries about one holder subject, newest first."""
        ...


class DeviceStore(Protocol):
    """Enrolled devices per person, and the device revocation log (tests/contract/)."""

    async def add(self, record: DeviceRecord, max_per_person: int) -> AddResult:
        """Add a device unless the person already has ``max_per_person`` (atomically), removed
        a device with this key before (``"removed"``: a lost phone's key stays out), or has
        another device with this key already (``"exists"``: a concurrent enrolment won)."""
        ...

    async def for_person(self, person_id: str) -> Sequence[DeviceRecord]: ...

    async def add_certificate(self, person_id: str, device_id: str, serial: str,
                              not_after: int, now: float) -> DeviceRecord | None:
        """Record a new certificate (and forget those past their window); None if the device
        is gone (revoked meanwhile: no certificate for it)."""
        ...

    async def remove(self, person_id: str, device_id: str) -> DeviceRecord | None:
        """Delete the device and bar its key for the person; the record as it was, or None."""
        ...

    async def revoke_serials(self, serials: Sequence[tuple[str, int]], now: float) -> int:
        """Append serials (hex, not_after) to the revocation log and drop entries past
        their window; the log's new version — the time in ms, or the last version + 1 when
        that is not larger (unchanged when ``serials`` is empty)."""
        ...

    async def revocations(self, since: int, now: float) -> tuple[int, list[RevokedSerial]]:
        """The log's version and its entries newer than ``since`` still in their window."""
        ...


class CardDenyList(Protocol):
    """Where a physical card's refusal is published for offline gates
    (gateway.services.revocations.RevocationLists; docs/offline.md §5): the identity service
    tells it of every card refused or reinstated."""

    async def card_status(self, region: str | None, card_no: str, revoked: bool) -> int: ...


#: Told of every suspend/unsuspend with (person id, suspended), after the person's revocation
#: moved (gateway.services.devices.DeviceRevocationLog.on_suspension).
SuspensionObserver = Callable[[str, bool], Awaitable[None]]


class RecordStore(Protocol):
    """Where records live (PostgreSQL in production; memory in the sandbox).

    `write` is idempotent on record id: writing a record twice stores it once. `page` lists
    in the order records were written: a reader that keeps the cursor sees every record once,
    also the late ones (an offline upload, an outbox drained after an outage)."""

    async def write(self, records: Sequence[TransactionRecord]) -> int:
        """Store the records; returns how many were new."""
        ...

    async def page(self, after: str | None, limit: int) -> ExportPage: ...

    def valid_cursor(self, cursor: str) -> bool: ...

    async def prune(self, older_than: float) -> int:
        """Drop whole days that ended before `older_than` (retention); returns days dropped."""
        ...

    async def ping(self) -> None: ...


@runtime_checkable
class PreparingRecordStore(Protocol):
    """A record store that can do a batch's CPU work (rows encoded, roll-ups summed) before
    its write: the exporter prepares the next batch while the store's server writes the
    current one (PostgreSQL: its own process, the other core). `write(records, prepared)`
    stores exactly what `write(records)` would; a store may ignore what does not match."""

    async def prepare(self, records: Sequence[TransactionRecord]) -> object: ...

    async def write(self, records: Sequence[TransactionRecord],
                    prepared: object | None = None) -> int: ...


class RecordingClaims(Protocol):
    """Single-use claims that append a record when, and only when, they win — atomically and
    in one round trip (Redis: one script over the claim key and an outbox stream in the same
    hash slot; memory: one call).

    The adapter places a claim by its key alone (Redis: the outbox shard is a hash of the key),
    so every caller of one key — a retry under another scan time, an upload — meets it.

    `claim` returns None when this call claimed the key (and the record was queued), or the
    value of whoever claimed it first (and nothing was queued). A claim that wins while the
    outbox is full raises nothing: the decision must stand; the adapter counts and alarms."""

    async def claim(self, key: str, ttl_s: float, value: str,
                    record: TransactionRecord, *,
                    used_since: float | None = None) -> str | None:
        """`used_since` as for `gateway.ports.SingleUse.claim` (the store epoch): a store
        that lost the item's history answers `HISTORY_LOST` (treated as already used)."""
        ...

    async def peek(self, key: str) -> str | None: ...

    async def remember(self, key: str, ttl_s: float, value: str) -> None:
        """Set the key, if unset, without a record (an answer kept for idempotent retries)."""
        ...


class Outbox(Protocol):
    """The exporter's side of the outbox."""

    async def take(self, max_records: int, after: Batch | None = None) -> Batch | None:
        """The oldest records not yet acknowledged (None when empty), or those right after
        batch `after` (read ahead while it is being stored). Not removed."""
        ...

    async def length(self) -> int: ...

    @property
    def bound(self) -> int: ...


class ExporterLock(Protocol):
    """At most one exporter drains the outbox at a time (across workers and hosts)."""

    async def acquire(self) -> bool: ...

    async def renew(self) -> bool: ...

    async def release(self) -> None: ...



# --------------------------------------------------------------------------------------------
# Upstream platforms (gateway/adapters/upstream/, sandboxes in gateway/adapters/sandbox/)
# --------------------------------------------------------------------------------------------

@runtime_checkable
class IdentityPlatform(Protocol):
    """渝快办 or an e-SSC platform as an identity provider."""

    platform: Platform

    async def verify_assertion(self, assertion: str) -> UpstreamIdentity:
        """Verify signature, issuer, audience and lifetime; raise :class:`AssertionRejected`.

        Raises ``gateway.errors.UpstreamUnavailable`` when the keys cannot be fetched. Replay of
        ``jti`` is the caller's check (it holds the store).
        """
        ...

    async def lookup_account(self, account_id: str,
                             region: str | None = None) -> UpstreamAccount | None:
        """The account, or ``None`` when the platform does not know it."""
        ...


@runtime_checkable
class EsscPlatform(Protocol):
    """The national e-SSC platform: codes in its own format and their verification keys."""

    async def issue_code(self, holder_account_id: str, region: str) -> str:
        """A fresh e-SSC code for the holder (not idempotent: never retried)."""
        ...

    async def code_keys(self, region: str | None = None) -> list[dict[str, Any]]:
        """Code-verification JWKs (RFC 7517) with ``iss``, ``nbf``, ``exp`` validity members;
        all regions when ``region`` is ``None``."""
        ...


@runtime_checkable
class CertificateLibrary(Protocol):
    async def fetch(self, citizen_id: str, types: Sequence[str]) -> list[Certificate]:
        """The holder's certificates of the given types (those the library has)."""
        ...



# --------------------------------------------------------------------------------------------
# The gate path (gateway/services/gate.py, faces.py) and code issuance
# --------------------------------------------------------------------------------------------

class GateIdentity(Protocol):
    """What the gate path needs from the identity service (``GateIdentityAdapter``)."""

    def is_suspended(self, person_id: str) -> bool:
        """In-process revocation view of persons (no I/O on the gate path)."""
        ...

    async def person_by_essc(self, region: str, holder_account_id: str) -> str | None:
        """The person id linked (actively) to this e-SSC holder account, if any."""
        ...

    async def card_holder(self, region: str, card_no: str) -> tuple[str, Any] | None:
        """(person id, identity record) for an active card not in the revocation set."""
        ...

    async def disclose(self, person_id: str, names: Sequence[str]) -> dict[str, Any]:
        """Exactly the named attributes (docs/scenes.md vocabulary); NotFound if no record."""
        ...

    def disclose_from(self, record: Any, names: Sequence[str]) -> dict[str, Any]:
        """The named attributes from a record already read."""
        ...


class CredentialFace(Protocol):
    """One face's verifier (:mod:`gateway.services.faces`)."""

    def check(self, credential: Any, gate_id: str, request_id: str,
              now: float, at: float | None = None) -> Verified:
        """Signature/MAC and validity window at the scan's time `at` (default now; a tap
        carries its own), without I/O; raises :class:`Refused`."""
        ...

    async def resolve(self, verified: Verified) -> Verified:
        """The person behind it (``person_id`` set); raises ``Refused("revoked")``."""
        ...


class CodeIdentity(Protocol):
    """What issuing codes needs from the identity service (``GateIdentityAdapter`` in
    gateway/services/identity.py provides it)."""

    async def essc_account(self, person_id: str,
                           region: str | None) -> tuple[str, str] | None:
        """(platform holder account id, region) of the person's active e-SSC, if any."""
        ...

    async def disclose(self, person_id: str, names: Sequence[str]) -> dict[str, Any]:
        """Exactly the named attributes (docs/scenes.md vocabulary), nothing else."""
        ...

