"""The PostgreSQL record store (docs/records.md): an append-only table partitioned by day.

Driver: asyncpg — binary COPY (`copy_records_to_table`) and a C protocol implementation; the
exporter's figure (≥ 50,000 records/s, script/bench) rests on its COPY.

* ``gw_transactions`` is partitioned by range of ``verified_at``, one partition per UTC day
  (``gw_transactions_pYYYYMMDD``), created by the writer when a batch first needs it.
  Retention drops whole partitions (no ``DELETE``, no vacuum debt).
* A write is one transaction: COPY the batch into a temporary staging table, then
  ``INSERT … SELECT … ON CONFLICT DO NOTHING`` into the table, in batch order. The primary key
  (record_id, verified_at) makes a re-delivered batch a no-op (the partition key must be in a
  partitioned table's unique keys; a record's verified_at never changes, so this is
  uniqueness of record_id).
* ``seq`` (a sequence) is the export cursor. Writers take a transaction-scoped advisory lock
  first, so writes commit one after the other and every ``seq`` a reader can see was
  committed after every smaller one: paging by ``seq > cursor`` never skips a record, even one
  that arrived late (an offline upload, an outbox drained after an outage).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Protocol

import asyncpg

from gateway.errors import Unavailable
from gateway.services.records import ExportPage, TransactionRecord

__all__ = ["PostgresRecordStore", "connect_pool"]

TABLE: Final = "gw_transactions"
#: pg_advisory_xact_lock key serialising writers and DDL (an arbitrary constant: "gwtx").
LOCK_KEY: Final = 0x67777478
_PARTITION: Final = re.compile(rf"^{TABLE}_p(\d{{8}})$")

_INSERT_COLUMNS: Final = ("record_id, verified_at, scanned_at, gate, venue, scene, face, "
                          "decision, reason, subject, attributes, credential_hash, origin, "
                          "request_id")
_INSERT_COLUMN_NAMES: Final = tuple(c.strip() for c in _INSERT_COLUMNS.split(","))
# Statements built from the constants above only (no input reaches them): hence the noqa.
_INSERT: Final = (f"INSERT INTO {TABLE} ({_INSERT_COLUMNS}) "  # noqa: S608
                  f"SELECT {_INSERT_COLUMNS} FROM {TABLE}_staging ORDER BY ord "
                  "ON CONFLICT DO NOTHING RETURNING record_id")
_PAGE: Final = (f"SELECT seq, {_INSERT_COLUMNS} FROM {TABLE} "  # noqa: S608
                "WHERE seq > $1 ORDER BY seq LIMIT $2")

_SCHEMA: Final = f"""
CREATE SEQUENCE IF NOT EXISTS {TABLE}_seq AS bigint;
CREATE TABLE IF NOT EXISTS {TABLE} (
    seq             bigint      NOT NULL DEFAULT nextval('{TABLE}_seq'),
    record_id       uuid        NOT NULL,
    verified_at     timestamptz NOT NULL,
    scanned_at      timestamptz NOT NULL,
    gate            text        NOT NULL,
    venue           text,
    scene           text        NOT NULL,
    face            text,
    decision        text        NOT NULL,
    reason          text        NOT NULL,
    subject         text,
    attributes      jsonb       NOT NULL DEFAULT '{{}}',
    credential_hash bytea,
    origin          text        NOT NULL,
    request_id      text        NOT NULL,
    PRIMARY KEY (record_id, verified_at)
) PARTITION BY RANGE (verified_at);
CREATE INDEX IF NOT EXISTS {TABLE}_seq_idx ON {TABLE} (seq);
COMMENT ON TABLE {TABLE} IS
    'Gate decisions (docs/records.md): append-only, one partition per UTC day, no personal data';
"""

_STAGING: Final = f"""
CREATE TEMPORARY TABLE IF NOT EXISTS {TABLE}_staging (
    ord int, record_id uuid, verified_at timestamptz, scanned_at timestamptz, gate text,
    venue text, scene text, face text, decision text, reason text, subject text,
    attributes jsonb, credential_hash bytea, origin text, request_id text
) ON COMMIT DELETE ROWS
"""


#: PostgreSQL's timestamps count microseconds from 2000-01-01T00:00:00Z.
_PG_EPOCH_MS: Final = 946_684_800_000


def _encode_ts(unix_ms: int) -> tuple[int]:
    return ((unix_ms - _PG_EPOCH_MS) * 1000,)


def _decode_ts(value: tuple[int]) -> float:
    return value[0] / 1_000_000 + _PG_EPOCH_MS / 1000


async def _init_connection(conn: Any) -> None:
    """timestamptz travels as Unix milliseconds out (ints) and Unix seconds in (floats), in
    PostgreSQL's binary form: no datetime object per value (two per record were a fifth of
    the exporter's Python time, measured)."""
    await conn.set_type_codec("timestamptz", schema="pg_catalog", encoder=_encode_ts,
                              decoder=_decode_ts, format="tuple")


async def connect_pool(url: str, *, min_size: int = 1, max_size: int = 4,
                       timeout_s: float = 5.0) -> asyncpg.Pool:
    """A small pool (the exporter writes on one connection; exports read on the others)."""
    pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size,
                                     timeout=timeout_s, command_timeout=60,
                                     init=_init_connection)
    assert pool is not None
    return pool


def _ts(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


class Rollups(Protocol):
    """The statistics' roll-ups kept in the write's own transaction
    (gateway/adapters/postgres_stats.py `ExporterRollups`): `summarise` is CPU only (done
    ahead of the write when the exporter prepares a batch), `apply` adds a summary to the
    tables on the write's connection, `within` is the two at once."""

    async def ensure_schema(self, conn: Any) -> None: ...

    async def places(self) -> Mapping[str, tuple[str, str, str]]: ...

    def summarise(self, records: Sequence[TransactionRecord],
                  places: Mapping[str, tuple[str, str, str]]) -> object: ...

    async def apply(self, conn: Any, summary: object) -> None: ...

    async def within(self, conn: Any, records: Sequence[TransactionRecord],
                     places: Mapping[str, tuple[str, str, str]]) -> None: ...


@dataclass(slots=True)
class Prepared:
    """A batch made ready for its write (`PostgresRecordStore.prepare`): the COPY rows, the
    day partitions they need, and — with roll-ups — the places it was rolled up with and the
    roll-up of the whole batch (what the common write, where every record is new, adds)."""

    records: Sequence[TransactionRecord]
    rows: list[tuple[Any, ...]]
    days: set[datetime]
    places: Mapping[str, tuple[str, str, str]]
    summary: object | None


def _rows(records: Sequence[TransactionRecord]) -> tuple[list[tuple[Any, ...]], set[datetime]]:
    rows = []
    day_numbers: set[int] = set()
    encoded: dict[Any, str] = {}  # a batch holds a handful of distinct attribute sets
    for r in records:
        verified_ms = round(r.verified_at * 1000)
        day_numbers.add(verified_ms // 86_400_000)
        attributes = "{}"
        if r.attributes:
            try:
                key: Any = tuple(r.attributes.items())
                attributes = encoded.get(key) or encoded.setdefault(
                    key, json.dumps(r.attributes))
            except TypeError:  # an unhashable value: encode it each time
                attributes = json.dumps(r.attributes)
        rows.append((r.record_id, verified_ms, round(r.scanned_at * 1000), r.gate,
                     r.venue, r.scene, r.face, r.decision, r.reason, r.subject,
                     attributes, r.credential_hash, r.origin, r.request_id))
    return rows, {_ts(d * 86400.0) for d in day_numbers}


class PostgresRecordStore:
    """`rollups`: when given, every write adds the records it really inserted to the daily
    roll-up tables in the same transaction (docs/stats.md) — a batch counted once or not at
    all, whatever crashes.

    A `PreparingRecordStore` (gateway/services/ports.py): the exporter calls `prepare` on the
    next batch while this store's write of the current one waits on PostgreSQL, so the
    Python work of a batch (rows, roll-up sums) overlaps PostgreSQL's (COPY, commit)."""

    def __init__(self, pool: asyncpg.Pool, rollups: Rollups | None = None) -> None:
        self._pool = pool
        self._partitions: set[str] = set()
        self._schema_ready = False
        self.rollups = rollups

    async def ensure_schema(self) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            await conn.execute(_SCHEMA)
            if self.rollups is not None:
                await self.rollups.ensure_schema(conn)
        self._schema_ready = True

    async def _ensure_partitions(self, conn: Any, days: set[datetime]) -> set[str]:
        """Create the day partitions the batch needs; the names are cached by the caller
        once its transaction committed (a rolled-back CREATE is gone)."""
        created = set()
        for day in sorted(days):
            name = f"{TABLE}_p{day:%Y%m%d}"
            if name in self._partitions:
                continue
            nxt = day + timedelta(days=1)
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {TABLE} "
                f"FOR VALUES FROM ('{day.isoformat()}') TO ('{nxt.isoformat()}')")
            created.add(name)
        return created

    async def prepare(self, records: Sequence[TransactionRecord]) -> Prepared:
        """A batch's work that needs no connection: no lock held, nothing written."""
        rows, days = _rows(records)
        rollups = self.rollups
        if rollups is None:
            return Prepared(records, rows, days, {}, None)
        places = await rollups.places()
        return Prepared(records, rows, days, places, rollups.summarise(records, places))

    async def write(self, records: Sequence[TransactionRecord],
                    prepared: object | None = None) -> int:
        if not records:
            return 0
        if not self._schema_ready:
            await self.ensure_schema()
        if not isinstance(prepared, Prepared) or prepared.records is not records \
                or (prepared.summary is None) != (self.rollups is None):
            prepared = await self.prepare(records)
        rows, days, places = prepared.rows, prepared.days, prepared.places
        rollups = self.rollups
        async with self._pool.acquire() as conn:
            try:
                try:
                    # The common case: nothing in the batch is stored yet — ONE COPY into the
                    # table (rows routed to their day partitions), half the server's work of
                    # the staging path.
                    async with conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
                        created = await self._ensure_partitions(conn, days)
                        await conn.copy_records_to_table(TABLE, records=rows,
                                                         columns=_INSERT_COLUMN_NAMES)
                        if rollups is not None:  # every record of the batch was inserted
                            await rollups.apply(conn, prepared.summary)
                    self._partitions |= created
                    return len(rows)
                except asyncpg.UniqueViolationError:
                    pass
                # A re-delivered batch (an exporter stopped between its write and its ack):
                # COPY into staging, then insert what is new, in batch order; only the new
                # records are rolled up (the prepared summary of the whole batch is not used).
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
                    created = await self._ensure_partitions(conn, days)
                    await conn.execute(_STAGING)
                    await conn.copy_records_to_table(
                        f"{TABLE}_staging", records=[(i, *row) for i, row in enumerate(rows)],
                        columns=("ord", *_INSERT_COLUMN_NAMES))
                    inserted = await conn.fetch(_INSERT)
                    if rollups is not None and inserted:  # only what is new counts
                        new = {str(r[0]) for r in inserted}
                        await rollups.within(conn, [r for r in records if r.record_id in new],
                                             places)
                self._partitions |= created
            except (asyncpg.UndefinedTableError, asyncpg.CheckViolationError):
                # a partition we thought we had was dropped (retention, another process)
                self._partitions.clear()
                raise
        return len(inserted)

    def valid_cursor(self, cursor: str) -> bool:
        return cursor.isascii() and cursor.isdigit() and len(cursor) <= 18

    async def page(self, after: str | None, limit: int) -> ExportPage:
        if not self._schema_ready:
            try:
                await self.ensure_schema()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                raise Unavailable("The record store is not reachable; retry later") from None
        start = int(after) if after else 0
        try:
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(_PAGE, start, max(0, limit))
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            raise Unavailable("The record store is not reachable; retry later") from None
        out = [(str(row["seq"]), _record(row)) for row in rows]
        return ExportPage(out, out[-1][0] if out else (after or "0"))

    async def prune(self, older_than: float) -> int:
        """Drop every day partition that ended at or before `older_than`."""
        if not self._schema_ready:
            await self.ensure_schema()
        cutoff = _ts(older_than)
        dropped = 0
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            names = await conn.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1", TABLE)
            for row in names:
                m = _PARTITION.match(row["relname"])
                if m is None:
                    continue
                end = datetime.strptime(m.group(1), "%Y%m%d").replace(tzinfo=UTC) + \
                    timedelta(days=1)
                if end <= cutoff:
                    await conn.execute(f"DROP TABLE {row['relname']}")
                    self._partitions.discard(row["relname"])
                    dropped += 1
        return dropped

    async def ping(self) -> None:
        async with self._pool.acquire() as conn:
            await conn.fetchval("SELECT 1")


def _record(row: Any) -> TransactionRecord:
    attributes = row["attributes"]
    return TransactionRecord(
        record_id=str(row["record_id"]), gate=row["gate"], venue=row["venue"],
        scene=row["scene"], face=row["face"], decision=row["decision"], reason=row["reason"],
        subject=row["subject"],
        attributes=json.loads(attributes) if isinstance(attributes, str) else {},
        credential_hash=bytes(row["credential_hash"]) if row["credential_hash"] else None,
        scanned_at=row["scanned_at"], verified_at=row["verified_at"],
        origin=row["origin"], request_id=row["request_id"])


# ------------------------------------------------------------------------------- commands

def export_main(url: str | None, after: str | None, page_size: int = 5000,
                out: Any = None) -> int:
    """`gateway transactions export [--after CURSOR]`: every record after the cursor as NDJSON
    on stdout (each line with its own `cursor`), then the cursor to resume from on stderr."""
    import asyncio
    import sys

    if not url:
        print("gateway: GATEWAY_DATABASE_URL is not set (without it the sandbox keeps records "
              "in its own memory: GET /admin/v1/transactions)", file=sys.stderr)
        return 2
    sink = out or sys.stdout

    async def run() -> str:
        pool = await connect_pool(url, max_size=1)
        try:
            store = PostgresRecordStore(pool)
            cursor = after
            if cursor is not None and not store.valid_cursor(cursor):
                raise ValueError("--after must be a cursor from an earlier export")
            while True:
                page = await store.page(cursor, page_size)
                for c, r in page.records:
                    sink.write(json.dumps(r.to_json(c), ensure_ascii=False) + "\n")
                cursor = page.next_cursor
                if len(page.records) < page_size:
                    return cursor
        finally:
            await pool.close()

    try:
        cursor = asyncio.run(run())
    except ValueError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"gateway: PostgreSQL is not reachable ({type(exc).__name__})", file=sys.stderr)
        return 1
    sink.flush()
    print(f"next cursor: {cursor}", file=sys.stderr)
    return 0


def prune_main(url: str | None, retention_days: int) -> int:
    """`gateway transactions prune`: drop the day partitions older than the retention."""
    import asyncio
    import sys
    import time

    if not url:
        print("gateway: GATEWAY_DATABASE_URL is not set", file=sys.stderr)
        return 2

    async def run() -> int:
        pool = await connect_pool(url, max_size=1)
        try:
            return await PostgresRecordStore(pool).prune(time.time() - retention_days * 86400)
        finally:
            await pool.close()

    dropped = asyncio.run(run())
    print(f"transactions: {dropped} day partitions dropped "
          f"(retention {retention_days} days)", file=sys.stderr)
    return 0
