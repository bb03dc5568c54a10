"""Transaction records (CONTRACT "Offline gates and transaction records", docs/records.md).

Every gate decision — a code or a card, online or uploaded from an offline gate — becomes one
`TransactionRecord`: what fare clearing (清分结算) and the statistics consume. A record holds no
personal datum and no code string: the subject is the pairwise one of the gate's sector, the
credential is named only by a hash of (issuer, kid, nonce), the attributes are exactly those
the scene disclosed (a concession category).

The gate path never waits on PostgreSQL. A record is appended to a bounded Redis Stream outbox
atomically with the single-use claim that decides it (`RecordingClaims`, one round trip); the
`Exporter` (one active at a time across workers) drains the outbox in batches into the
`RecordStore` (PostgreSQL: an append-only table partitioned by day), idempotent on record id,
and only then deletes what it wrote — so an exporter crash re-delivers, never loses, and the
store's ``ON CONFLICT DO NOTHING`` makes re-delivery harmless.

Without Redis (the embedded sandbox) the claim appends straight to the in-memory store.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol

import msgpack
import structlog

from gateway.ports import SingleUse
from gateway.services.ports import (
    Claim,
    ExporterLock,
    Outbox,
    PreparingRecordStore,
    RecordingClaims,
    RecordStore,
)
from gateway.timefmt import MS_EPSILON

__all__ = [
    "Batch",
    "Claim",
    "ExportPage",
    "Exporter",
    "ExporterLock",
    "Origin",
    "Outbox",
    "OutboxFull",
    "RecordStore",
    "RecordingClaims",
    "TransactionRecord",
    "UnrecordedClaims",
    "credential_hash",
    "new_record_id",
    "to_ms",
]

log = structlog.get_logger("gateway.records")

Origin = Literal["online", "offline"]
WIRE_VERSION: Final = 1
RENEW_EVERY_S: Final = 3.0  # the exporter renews its lock at least this often


def new_record_id(now: float) -> str:
    """A UUIDv7 (RFC 9562 §5.7): 48-bit Unix milliseconds, then random bits. Time-ordered, so
    the store's index on it stays append-mostly; random, so it tells nothing about the scan."""
    # The 16 bytes written out directly (uuid.UUID(int=…) and its str() were 6.9 µs of the
    # 8 a record id cost; an offline upload makes 500 of them per batch)
    r = os.urandom(10)
    h = ((int(now * 1000) & 0xFFFF_FFFF_FFFF).to_bytes(6, "big")
         + bytes((0x70 | (r[0] & 0x0F), r[1], 0x80 | (r[2] & 0x3F))) + r[3:]).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def credential_hash(issuer: str, kid: str, nonce: bytes) -> bytes:
    """SHA-256 over issuer ‖ 0x00 ‖ kid ‖ 0x00 ‖ nonce (the gate pipeline's use reference): the
    same code seen at two gates (online or uploaded) has the same hash, and nothing about the
    holder or the code string can be read from it (the nonce is 96 random bits)."""
    return hashlib.sha256(b"%s\0%s\0%s" % (issuer.encode(), kid.encode(), nonce)).digest()


def to_ms(t: float) -> float:
    """`t` cut to the millisecond exactly as `gateway.timefmt.rfc3339` cuts it (down): a
    record's times say what the gate's answer said."""
    sec = int(t // 1)
    return (sec * 1000 + min(999, int((t - sec) * 1000 + MS_EPSILON))) / 1000


def _rfc3339(t: float) -> str:
    """RFC 3339 of a millisecond-exact time (`to_ms`)."""
    ms = round(t * 1000)
    sec, frac = divmod(ms, 1000)
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:03d}Z"


@dataclass(slots=True)
class TransactionRecord:
    """One gate decision. Times are Unix seconds, millisecond-exact (`to_ms`).

    Not frozen: a frozen dataclass's __init__ sets each of its 14 fields through
    object.__setattr__, and the exporter builds 50,000 of these a second (3.8 → 1.x µs,
    measured). Treat it as immutable all the same."""

    record_id: str
    gate: str
    scene: str
    face: str | None          # ykm | essc | ssc_card; None for an unreadable code
    decision: str             # allow | deny
    reason: str               # the decision's reason code (CONTRACT "Codes")
    scanned_at: float
    verified_at: float
    origin: Origin
    request_id: str
    subject: str | None = None             # pairwise, in the gate's sector; allows only
    attributes: dict[str, Any] = field(default_factory=dict)  # what the scene disclosed
    credential_hash: bytes | None = None   # credential_hash(issuer, kid, nonce) for codes
    venue: str | None = None               # the gate's venue, once venues exist

    def to_wire(self) -> bytes:
        """The outbox entry: a msgpack array (compact; decoded by the exporter in bulk)."""
        packed: bytes = msgpack.packb(
            (WIRE_VERSION, self.record_id, self.gate, self.venue, self.scene, self.face,
             self.decision, self.reason, self.subject, self.attributes,
             self.credential_hash, round(self.scanned_at * 1000),
             round(self.verified_at * 1000), self.origin, self.request_id),
            use_bin_type=True)
        return packed

    @classmethod
    def from_wire(cls, raw: bytes) -> TransactionRecord:
        v = msgpack.unpackb(raw, raw=False)
        if not isinstance(v, list) or len(v) != 15 or v[0] != WIRE_VERSION:
            raise ValueError("not a version-1 transaction record")
        (_, record_id, gate, venue, scene, face, decision, reason, subject, attributes,
         chash, scanned_ms, verified_ms, origin, request_id) = v
        # positional: the field order of the class (keywords cost ≈ 30 % more here)
        return cls(record_id, gate, scene, face, decision, reason, scanned_ms / 1000,
                   verified_ms / 1000, origin, request_id, subject, attributes or {}, chash,
                   venue)

    def to_json(self, cursor: str | None = None) -> dict[str, Any]:
        """The export shape (docs/openapi.yaml `TransactionRecord`)."""
        out: dict[str, Any] = {
            "record_id": self.record_id, "gate": self.gate, "venue": self.venue,
            "scene": self.scene, "face": self.face, "decision": self.decision,
            "reason": self.reason, "subject": self.subject, "attributes": self.attributes,
            "credential_hash": (self.credential_hash.hex()
                                if self.credential_hash is not None else None),
            "scanned_at": _rfc3339(self.scanned_at), "verified_at": _rfc3339(self.verified_at),
            "origin": self.origin, "request_id": self.request_id}
        if cursor is not None:
            out["cursor"] = cursor
        return out


# ------------------------------------------------------------------------------- ports

@dataclass(frozen=True)
class ExportPage:
    """Records after a cursor, in the order the store took them, and the cursor after them
    (the same cursor when there is nothing new)."""

    records: Sequence[tuple[str, TransactionRecord]]  # (cursor of the record, record)
    next_cursor: str


class OutboxFull(Exception):
    """The outbox is at its bound: the decision stands, its record could not be queued."""


class UnrecordedClaims:
    """`RecordingClaims` with records switched off (GATEWAY_TRANSACTIONS_ENABLED=false, for
    measurement only; production refuses it): plain single-use claims."""

    def __init__(self, once: SingleUse) -> None:
        self._once = once

    async def claim(self, key: str, ttl_s: float, value: str, record: TransactionRecord, *,
                    used_since: float | None = None) -> str | None:
        return await self._once.claim(key, ttl_s, value, used_since=used_since)

    async def claim_many(self, claims: Sequence[Claim]) -> list[str | None]:
        return await claim_each(self, claims)

    async def peek(self, key: str) -> str | None:
        return await self._once.peek(key)

    async def remember(self, key: str, ttl_s: float, value: str) -> None:
        await self._once.claim(key, ttl_s, value)

    async def remember_many(self, ttl_s: float, items: Sequence[tuple[str, str]]) -> None:
        await asyncio.gather(*(self.remember(k, ttl_s, v) for k, v in items))


async def claim_each(claims: RecordingClaims, batch: Sequence[Claim]) -> list[str | None]:
    """`claim_many` as one `claim` each, issued in the same loop tick (a store without a bulk
    call of its own: memory, or single-use claims without records)."""
    return list(await asyncio.gather(*(
        claims.claim(c.key, c.ttl_s, c.value, c.record, used_since=c.used_since)
        for c in batch)))


@dataclass
class Batch:
    """Records taken from the outbox; `ack` deletes them there once they are stored."""

    records: list[TransactionRecord]
    ack: Callable[[], Any]
    bad: int = 0  # entries that did not decode (deleted with the batch, logged)
    position: Any = None  # where the batch ends in the outbox (the adapter's own)
    #: the store's work on the batch done ahead of its write (`PreparingRecordStore`)
    prepared: object | None = None


# ------------------------------------------------------------------------------- exporter

class ExporterMetrics(Protocol):
    def exported(self, n: int) -> None: ...

    def outbox_length(self, n: int, bound: int) -> None: ...

    def export_failed(self) -> None: ...


class Exporter:
    """Drains the outbox into the record store, in batches, while it holds the lock.

    Order of a step: take a batch (not removed) → write it (idempotent on record id) → ack
    (delete from the outbox). A crash between write and ack re-delivers the batch to the next
    exporter; the store keeps one copy. A store outage: the batch stays in the outbox, the
    exporter backs off (capped) and tries again; the gate path never notices.

    `step` is the unit of work (one batch). Whatever must count a batch exactly once — the
    statistics' daily roll-ups — belongs in the store's own write transaction
    (`PostgresRecordStore(pool, ExporterRollups(…))`), not after it: a hook after the commit
    counts a batch twice when the ack is lost, or never when the hook fails."""

    def __init__(self, outbox: Outbox, store: RecordStore, lock: ExporterLock, *,
                 batch_size: int = 5000, idle_s: float = 0.2, linger_s: float = 0.0,
                 max_backoff_s: float = 5.0,
                 retention_s: float | None = None, now: Callable[[], float] = time.time,
                 metrics: ExporterMetrics | None = None, high_water: float = 0.8,
                 renew_every_s: float = RENEW_EVERY_S) -> None:
        self.outbox = outbox
        self.store = store
        self.lock = lock
        self.batch_size = batch_size
        self.idle_s = idle_s
        #: caught up (the outbox held less than a batch), the loop lets the next batch fill
        #: this long before it takes again: a batch's own cost (its commit, the roll-up rows it
        #: touches) is paid per batch, so a trickle of small batches costs several times more
        #: per record than full ones (docs/records.md "Figures": 65 + 114 µs per record at
        #: batches of 500, 16 + 9.5 at 20,000, same run)
        self.linger_s = linger_s
        self._caught_up = False
        self.max_backoff_s = max_backoff_s
        self.retention_s = retention_s
        self.now = now
        self.metrics = metrics
        self.high_water = high_water
        self.renew_every_s = renew_every_s
        self._alarmed = False
        self._pruned_at = 0.0
        self._preparing = store if isinstance(store, PreparingRecordStore) else None

    async def step(self) -> int:
        """One batch: returns how many outbox entries were taken (0: the outbox was empty)."""
        batch = await self.outbox.take(self.batch_size)
        if batch is None:
            return 0
        return await self._store(batch)

    async def _take(self, after: Batch | None = None) -> Batch | None:
        """The next batch, with the store's CPU work on it already done: as the read-ahead
        of `drain` it runs while the store's server writes the batch before (measured in
        docs/records.md "Figures")."""
        batch = await self.outbox.take(self.batch_size, after)
        if batch is not None and batch.records and self._preparing is not None:
            batch.prepared = await self._preparing.prepare(batch.records)
        return batch

    async def _store(self, batch: Batch) -> int:
        if batch.records:
            if batch.prepared is not None and self._preparing is not None:
                new = await self._preparing.write(batch.records, batch.prepared)
            else:
                new = await self.store.write(batch.records)
            if self.metrics is not None:
                self.metrics.exported(new)
        if batch.bad:
            log.error("transactions.undecodable", entries=batch.bad)
        result = batch.ack()
        if asyncio.iscoroutine(result):
            await result
        return len(batch.records) + batch.bad

    async def drain(self, stop: asyncio.Event | None = None,
                    budget_s: float | None = None, until_partial: bool = False) -> int:
        """Batches until the outbox is empty (or `stop`), the next batch read from Redis
        while the current one is written to the store: the two waits overlap (measured
        ≈ 1.5× the records/s of one after the other). A failure cancels the read ahead; the
        next drain starts again from the oldest entry not acknowledged. `until_partial`:
        stop after a batch shorter than a full one (the outbox is caught up; what arrived
        meanwhile waits for the next, fuller batch)."""
        total = 0
        self._caught_up = False
        deadline = None if budget_s is None else time.monotonic() + budget_s
        ahead: asyncio.Future[Batch | None] = asyncio.ensure_future(self._take())
        try:
            while True:
                batch = await ahead
                if batch is None:
                    self._caught_up = True
                    return total
                partial = until_partial and len(batch.records) + batch.bad < self.batch_size
                if partial or (stop is not None and stop.is_set()) or \
                        (deadline is not None and time.monotonic() > deadline):
                    ahead = asyncio.ensure_future(_none())
                else:
                    ahead = asyncio.ensure_future(self._take(batch))
                total += await self._store(batch)
                if partial:
                    self._caught_up = True
                    return total
        finally:
            if not ahead.done():
                ahead.cancel()
                # wait for it without taking its outcome as ours: a suppress() around
                # `await ahead` also swallowed a cancellation of this task (shutdown hung)
                await asyncio.wait({ahead})
                if not ahead.cancelled():
                    ahead.exception()  # retrieved: its error is not this drain's

    async def check_length(self) -> int:
        n = await self.outbox.length()
        bound = self.outbox.bound
        if self.metrics is not None:
            self.metrics.outbox_length(n, bound)
        if n >= self.high_water * bound and not self._alarmed:
            self._alarmed = True
            log.error("transactions.outbox_high", length=n, bound=bound)
        elif n < self.high_water * bound * 0.5 and self._alarmed:
            self._alarmed = False
            log.info("transactions.outbox_recovered", length=n, bound=bound)
        return n

    async def prune_if_due(self, every_s: float = 3600.0) -> None:
        if self.retention_s is None:
            return
        now = self.now()
        if now - self._pruned_at < every_s:
            return
        self._pruned_at = now
        dropped = await self.store.prune(now - self.retention_s)
        if dropped:
            log.info("transactions.pruned", days=dropped)

    async def run(self, stop: asyncio.Event) -> None:
        """The background loop (one per worker; only the lock holder works)."""
        backoff = self.idle_s
        holding = False
        last_check = 0.0
        while not stop.is_set():
            try:
                holding = await (self.lock.renew() if holding else self.lock.acquire())
                if not holding:
                    await _wait(stop, 1.0)
                    continue
                if self.now() - last_check >= 1.0:
                    last_check = self.now()
                    await self.check_length()
                    await self.prune_if_due()
                # a bounded drain: the lock is renewed between drains (it lapses in 15 s)
                n = await self.drain(stop, budget_s=self.renew_every_s,
                                     until_partial=self.linger_s > 0)
                backoff = self.idle_s
                if self._caught_up and self.linger_s > 0:
                    await _wait(stop, self.linger_s)
                elif n == 0:
                    await _wait(stop, self.idle_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a store or outbox outage: back off, retry
                if self.metrics is not None:
                    self.metrics.export_failed()
                log.warning("transactions.export_failed", error=type(exc).__name__,
                            retry_in_s=round(backoff, 2))
                await _wait(stop, backoff)
                backoff = min(self.max_backoff_s, backoff * 2)
        if holding:
            try:
                await self.lock.release()
            except Exception:  # noqa: BLE001 - the lock expires by itself
                log.debug("transactions.lock_release_failed")


async def _none() -> None:
    return None


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
