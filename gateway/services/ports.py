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
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from gateway.services.consents.model import Consent
    from gateway.services.devices import AddResult, DeviceRecord, RevokedSerial
    from gateway.services.gate import Verified
    from gateway.services.identity.records import Person
    from gateway.services.identity.store import IndexKind
    from gateway.services.records import Batch, ExportPage, TransactionRecord
    from gateway.services.revocations import DenyListRead
    from gateway.services.stats import LiveCounts, Rollup, RowKey, SketchKey
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
    "Claim",
    "CodeIdentity",
    "ConsentStore",
    "CredentialFace",
    "DenyListStore",
    "DeviceStore",
    "EsscPlatform",
    "ExporterLock",
    "GateIdentity",
    "IdentityPlatform",
    "IdentityStore",
    "LiveCounters",
    "OperatorStore",
    "Outbox",
    "PersonClaims",
    "Psam",
    "RecordStore",
    "RecordingClaims",
    "SceneStore",
    "Sealer",
    "StatsStore",
    "SuspensionObserver",
    "VenueStore",
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

    async def claim_many(self, claims: Sequence[Claim]) -> list[str | None]:
        """Each claim as `claim` would answer it (in order), ALL in one round trip: the bulk
        path of an offline upload (Redis: one script call per outbox shard, the shards' calls
        in one pipeline; a Cluster routes each call to its shard's slot). A store fault
        raises: no claim's answer is returned unless every claim was answered."""
        ...

    async def peek(self, key: str) -> str | None: ...

    async def remember(self, key: str, ttl_s: float, value: str) -> None:
        """Set the key, if unset, without a record (an answer kept for idempotent retries)."""
        ...

    async def remember_many(self, ttl_s: float, items: Sequence[tuple[str, str]]) -> None:
        """`remember` for each (key, value), in one round trip."""
        ...


class Claim(NamedTuple):
    """One claim of `RecordingClaims.claim_many`: the arguments of `RecordingClaims.claim`."""

    key: str
    ttl_s: float
    value: str
    record: TransactionRecord
    used_since: float | None = None


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
# The operator's view and the offline gates' deny list (memory_ops.py + redis_ops.py,
# postgres_stats.py, *_records.py live counters, *_revocations.py; tests/contract/)
# --------------------------------------------------------------------------------------------

class SceneStore(Protocol):
    """The shared catalogue every worker follows (memory in a one-process sandbox, Redis
    otherwise). `version` is one cheap read, polled by every worker off the request path;
    a put is atomic: the revision check, the write, the history and the version bump happen
    together or not at all."""

    async def version(self) -> int:
        """The catalogue's version: 0 while empty, +1 on every change."""
        ...

    async def seed(self, scenes: Sequence[Mapping[str, Any]]) -> bool:
        """Store these scenes as version 1 if the store is empty; False if it was not."""
        ...

    async def snapshot(self) -> tuple[int, list[dict[str, Any]]]:
        """(version, scenes in catalogue order) read consistently."""
        ...

    async def put(self, scene: Mapping[str, Any], expected_revision: int | None,
                  meta: Mapping[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """Replace (or add) one scene, its `revision` one above the stored one. None when
        `expected_revision` is given and is not the stored revision (0 = must not exist).
        `meta` (who, when) goes into the history beside the scene. Answers (version, scene)."""
        ...

    async def history(self, scene_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """Earlier and current revisions of one scene, newest first:
        {"revision", "scene", "updated_by", "updated_at"}."""
        ...


class VenueStore(Protocol):
    async def version(self) -> int: ...

    async def get(self, venue_id: str) -> dict[str, Any] | None: ...

    async def list(self) -> list[dict[str, Any]]: ...

    async def put_many(self, venues: Sequence[Mapping[str, Any]]) -> int: ...

    async def assign_gate(self, gate_id: str, venue_id: str) -> int: ...

    async def gate_venues(self) -> dict[str, str]: ...


class OperatorStore(Protocol):
    async def get(self, name: str) -> dict[str, Any] | None: ...

    async def by_token_hash(self, token_hash: str) -> dict[str, Any] | None: ...

    async def create(self, operator: Mapping[str, Any]) -> bool: ...

    async def update(self, operator: Mapping[str, Any]) -> None: ...

    async def list(self) -> list[dict[str, Any]]: ...


class StatsStore(Protocol):
    """The roll-up tables (memory in the sandbox; SQL beside the record store)."""

    async def add(self, rows: Mapping[RowKey, Rollup],
                  sketches: Mapping[SketchKey, bytes | bytearray]) -> None:
        """Add these rows' counts to the stored ones; merge the sketches."""
        ...

    async def sketches(self, first_day: str, last_day: str, district: str, scene: str
                       ) -> list[tuple[SketchKey, bytes | bytearray]]:
        """Sketches of the level (district or "*", scene or "*") in the days, every face."""
        ...

    async def rows(self, first_day: str, last_day: str, district: str | None = None,
                   scene: str | None = None) -> list[tuple[RowKey, Rollup]]:
        """Every row with first_day ≤ day ≤ last_day (ISO dates), optionally filtered."""
        ...

    async def levels(self, first_day: str, last_day: str, district: str, scene: str
                     ) -> list[tuple[SketchKey, Rollup]]:
        """The counts summed at a sketch level (district or "*" or "" = each; scene alike):
        what a question that does not group by venue reads — far fewer rows."""
        ...

    async def totals(self, first_day: str, last_day: str, group_by: Sequence[str],
                     district: str | None, scene: str | None
                     ) -> list[tuple[tuple[str, ...], Rollup]]:
        """The counts summed per group (`group_by` ⊆ GROUP_KEYS, in that order), from the
        venue rows when grouped by venue, else from the level `level_of_question` names
        (PostgreSQL: one GROUP BY; memory: `fold`)."""
        ...

    async def verified_venues(self, first_day: str, last_day: str) -> set[str]:
        """Venues with at least one allow of a code or a card in the days."""
        ...

    async def clear_from(self, first_day: str) -> int:
        """Drop every row of first_day and later (before a rebuild); returns rows dropped."""
        ...


class LiveCounters(Protocol):
    """Counted where the record is queued (Redis: the claim's own script, no extra round
    trip; memory: the sandbox's claims)."""

    async def read(self, now: float, minutes: int) -> LiveCounts: ...


class DenyListStore(Protocol):
    """Revocation lists by name (contract suite: tests/contract/test_deny_list.py)."""

    async def change(self, name: str, entry: str, revoked: bool, now_ms: int) -> int:
        """Add (``revoked``) or remove an entry atomically with its version bump and log
        record; a change that changes nothing keeps the version. Returns the version."""
        ...

    async def version(self, name: str) -> int:
        """The list's current version (0: never changed)."""
        ...

    async def read(self, name: str, since: int | None) -> DenyListRead:
        """The full list (``since`` None, older than the log, or newer than the version) or
        the changes after ``since``."""
        ...



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


class Psam(Protocol):
    """The gate's PSAM attestation check (gateway.services.upstream.PsamAttestation)."""

    def verify(self, *, card_no: str, region: str, gate_client_id: str, request_id: str,
               scanned_at: str, terminal_mac: str) -> bool: ...


class Sealer(Protocol):
    """The YK1: holder cipher (gateway.authz.datakeys.HolderCipher)."""

    def seal(self, person_id: str, nonce: bytes, flags: int = 0) -> tuple[bytes, int]: ...


# --------------------------------------------------------------------------------------------
# The OIDC provider's view of persons (gateway/services/login.py)
# --------------------------------------------------------------------------------------------

class PersonClaims(Protocol):
    """What the login flow needs of the identity service (gateway.services.identity)."""

    def subject_for(self, sector: str, person_id: str) -> str: ...

    def disclose(self, person_id: str, names: Sequence[str]) -> Any: ...

    async def person_suspended(self, person_id: str) -> bool: ...
