"""The daily roll-up tables in PostgreSQL (docs/stats.md), kept by the exporter.

Two tables, beside the record store (gateway/adapters/postgres_records.py):

* ``gw_stats_venue`` — one row per day × district × scene × venue × credential form: scans,
  allows, denies by reason (jsonb ``{reason: n}``), decision latency (jsonb ``{bucket: n}``,
  the log-scale histogram of gateway/services/stats.py). Primary key (day, district, scene,
  venue, face): a period is a range of the key's first column.
* ``gw_stats_verified`` — (day, venue) for every venue with an allow of a code or a card that
  day: what application depth asks, without reading the venue rows.
* ``gw_stats_level`` — the same counts summed at the four coarser levels (day, district | *,
  scene | *, face), with the distinct-resident sketch (``residents``: 1,024 HyperLogLog
  registers, NULL until an allow carried a subject): what every question that does not group
  by venue reads (a 30-day dashboard reads 30 × 3 rows of it, never a raw record).

The exporter writes them **in the transaction that stores the records**
(`PostgresRecordStore.write` calls `ExporterRollups.within` after its COPY), from the records
that transaction really inserted: a re-delivered batch (an exporter that crashed between its
write and its ack) inserts nothing and counts nothing, and a rolled-back write rolls its counts
back with it. The counts and the jsonb maps are added by PostgreSQL in the upsert itself
(`t.scans + EXCLUDED.scans`; a map key by key, an inline sub-select — a SQL function per row
cost ~100 µs, measured): no roll-up row travels back. Only the level rows' sketches are read,
merged here (registers by max) and written back when changed; writers are serialised by the
record store's advisory lock, so that read-merge-write loses no update. Moving the adding
into the upsert cut the exporter's Python time per batch of 5,000 (456 venue rows, 585 level
rows) from ~52 to ~33 ms and added ~9 ms to PostgreSQL's (~50 → ~58 ms; 2 interleaved pairs,
12 applies each, load ~7): the exporter's process is the busier one (docs/records.md).

`rebuild` (``gateway stats rebuild --from DAY [--to DAY]``) recomputes the roll-ups of those days
from the records, one transaction per day under the same lock: the exporter waits for one day's
recount at a time, and the dashboard sees a day's old figures or its new ones, never a half-built
day.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, cast

import asyncpg

from gateway.errors import Unavailable
from gateway.services.records import TransactionRecord
from gateway.services.stats import (
    FORMS,
    GROUP_KEYS,
    Rollup,
    RowKey,
    SketchKey,
    hll_merge,
    level_keys,
    level_of_question,
    roll_up,
)

__all__ = ["ExporterRollups", "PostgresStatsStore", "RebuildRefused"]

#: the record store's writer lock (postgres_records.LOCK_KEY): one writer at a time
LOCK_KEY: Final = 0x67777478


class RebuildRefused(ValueError):
    """A rebuild that would destroy roll-ups it cannot recompute (its message says why)."""


#: what one rebuild transaction reads of the records at a time (a server-side cursor)
REBUILD_CHUNK: Final = 20_000
#: the record store's day partitions (postgres_records: gw_transactions_pYYYYMMDD)
_PARTITION: Final = re.compile(r"^gw_transactions_p(\d{8})$")

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS gw_stats_venue (
    day      date   NOT NULL,
    district text   NOT NULL,
    scene    text   NOT NULL,
    venue    text   NOT NULL,
    face     text   NOT NULL,
    scans    bigint NOT NULL,
    allows   bigint NOT NULL,
    denies   jsonb  NOT NULL DEFAULT '{}',
    latency  jsonb  NOT NULL DEFAULT '{}',
    PRIMARY KEY (day, district, scene, venue, face)
);
CREATE TABLE IF NOT EXISTS gw_stats_level (
    day       date   NOT NULL,
    district  text   NOT NULL,
    scene     text   NOT NULL,
    face      text   NOT NULL,
    scans     bigint NOT NULL,
    allows    bigint NOT NULL,
    denies    jsonb  NOT NULL DEFAULT '{}',
    latency   jsonb  NOT NULL DEFAULT '{}',
    residents bytea,
    PRIMARY KEY (day, district, scene, face)
);
-- a level question names its district and scene level ('*', a value) and a day range
CREATE INDEX IF NOT EXISTS gw_stats_level_ds ON gw_stats_level (district, scene, day);
CREATE INDEX IF NOT EXISTS gw_stats_level_s ON gw_stats_level (scene, day);
-- the venues that verified something on a day (what depth asks): small, one row per
-- (day, venue) with at least one allow of a code or a card
CREATE TABLE IF NOT EXISTS gw_stats_verified (
    day   date NOT NULL,
    venue text NOT NULL,
    PRIMARY KEY (day, venue)
);
COMMENT ON TABLE gw_stats_venue IS
    'Daily roll-ups per venue (docs/stats.md): counts only, kept by the exporter';
COMMENT ON TABLE gw_stats_level IS
    'Daily roll-ups at (day, district|*, scene|*, face) with HyperLogLog resident sketches';
"""

#: a jsonb map of counts plus another, key by key, as an expression over `old` and `new`
#: (inline in the statement: a SQL function per row costs ~100 µs, measured)
_ADD_MAPS: Final = ("CASE WHEN {new} = '{{}}'::jsonb THEN {old} ELSE {old} || ("
                    "SELECT jsonb_object_agg(e.key, e.value::bigint "
                    "+ coalesce(({old} ->> e.key)::bigint, 0)) "
                    "FROM jsonb_each_text({new}) e) END")
# Statements built from the constants above only (no input reaches them): hence the noqa.
_UPSERT_VENUE: Final = f"""
INSERT INTO gw_stats_venue AS t (day, district, scene, venue, face, scans, allows, denies,
                                 latency)
SELECT d::date, di, sc, v, f, n, a, de::jsonb, l::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[],
            $7::int8[], $8::text[], $9::text[]) AS u(d, di, sc, v, f, n, a, de, l)
ON CONFLICT (day, district, scene, venue, face) DO UPDATE SET
    scans = t.scans + EXCLUDED.scans, allows = t.allows + EXCLUDED.allows,
    denies = {_ADD_MAPS.format(old="t.denies", new="EXCLUDED.denies")},
    latency = {_ADD_MAPS.format(old="t.latency", new="EXCLUDED.latency")}
"""  # noqa: S608
_READ_SKETCHES: Final = """
SELECT l.day::text, l.district, l.scene, l.face, l.residents
FROM gw_stats_level l
JOIN unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS u(d, di, sc, f)
  ON l.day = u.d::date AND l.district = u.di AND l.scene = u.sc AND l.face = u.f
WHERE l.residents IS NOT NULL
"""
_ADD_LEVELS: Final = f"""
INSERT INTO gw_stats_level AS t (day, district, scene, face, scans, allows, denies, latency,
                                 residents)
SELECT d::date, di, sc, f, n, a, de::jsonb, l::jsonb, r
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[],
            $7::text[], $8::text[], $9::bytea[]) AS u(d, di, sc, f, n, a, de, l, r)
ON CONFLICT (day, district, scene, face) DO UPDATE SET
    scans = t.scans + EXCLUDED.scans, allows = t.allows + EXCLUDED.allows,
    denies = {_ADD_MAPS.format(old="t.denies", new="EXCLUDED.denies")},
    latency = {_ADD_MAPS.format(old="t.latency", new="EXCLUDED.latency")},
    residents = coalesce(EXCLUDED.residents, t.residents)
"""  # noqa: S608


def _dumps(counts: Mapping[Any, int]) -> str:
    """`{key: n}` as JSON; reason codes and bucket numbers are plain names, so most maps are
    formatted directly (json.dumps per map was a tenth of a batch's roll-up time)."""
    if not counts:
        return "{}"
    if all(type(k) is int or (k.isascii() and k.replace("_", "a").isalnum())
           for k in counts):
        return "{" + ",".join(f'"{k}":{int(v)}' for k, v in counts.items()) + "}"
    return json.dumps({str(k): v for k, v in counts.items()}, separators=(",", ":"))


def _rollup(scans: int, allows: int, denies: str | None, latency: str | None) -> Rollup:
    return Rollup(int(scans), int(allows),
                  {k: int(v) for k, v in json.loads(denies or "{}").items()},
                  {int(k): int(v) for k, v in json.loads(latency or "{}").items()})


def _level_condition(column: str, value: str, n: int) -> tuple[str, list[str]]:
    """A level filter as SQL: a value ($n), every value ("": not the all-of row), or the
    all-of row ("*")."""
    if value == "":
        return f"{column} <> '*'", []
    return f"{column} = ${n}", [value]


class PostgresStatsStore:
    """`gateway.services.ports.StatsStore` on PostgreSQL (the contract suite:
    tests/contract/test_stats_store.py)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._schema_ready = False

    async def ensure_schema(self) -> None:
        if self._schema_ready:
            return
        async with self._pool.acquire() as c, c.transaction():
            await c.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            await c.execute(SCHEMA)
        self._schema_ready = True

    # ---------------------------------------------------------------- writing
    async def add(self, rows: Mapping[RowKey, Rollup],
                  sketches: Mapping[SketchKey, bytes | bytearray]) -> None:
        await self.ensure_schema()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            await self.apply(conn, rows, sketches)

    async def apply(self, conn: Any, rows: Mapping[RowKey, Rollup],
                    sketches: Mapping[SketchKey, bytes | bytearray]) -> None:
        """Add rows and merge sketches on `conn`, inside the caller's transaction, which
        holds the writer lock (LOCK_KEY). The counts are added by PostgreSQL in the upsert
        (no row read back, no JSON decoded here); only the sketches of the level rows the
        batch touches are read, merged here (register-wise max) and written when changed."""
        if not rows and not sketches:
            return
        venue_keys = sorted(rows)
        cols: list[list[Any]] = [[] for _ in range(9)]
        levels: dict[SketchKey, Rollup] = {}
        for key in venue_keys:
            row = rows[key]
            for c, v in zip(cols, (*key, row.scans, row.allows, _dumps(row.denies),
                                   _dumps(row.latency)), strict=True):
                c.append(v)
            day, d, sc, _, face = key
            for lk in level_keys(day, d, sc, face):
                acc = levels.get(lk)
                if acc is None:
                    acc = levels[lk] = Rollup()
                acc.add(row)
        if rows:
            await conn.execute(_UPSERT_VENUE, *cols)
            verified = sorted({(k[0], k[3]) for k, r in rows.items()
                               if r.allows and k[4] in FORMS})
            if verified:
                await conn.execute(
                    "INSERT INTO gw_stats_verified (day, venue) SELECT d::date, v FROM "
                    "unnest($1::text[], $2::text[]) AS u(d, v) ON CONFLICT DO NOTHING",
                    [d for d, _ in verified], [v for _, v in verified])
        held: dict[SketchKey, bytes] = {}
        sketch_keys = sorted(sketches)
        if sketch_keys:
            for r in await conn.fetch(_READ_SKETCHES,
                                      *([k[i] for k in sketch_keys] for i in range(4))):
                held[(r[0], r[1], r[2], r[3])] = r[4]
        out: list[list[Any]] = [[] for _ in range(9)]
        none = Rollup()
        for k in sorted(set(levels) | set(sketches)):
            new = levels.get(k, none)
            add = sketches.get(k)
            changed: bytes | None = None  # NULL: the stored sketch stands (coalesce)
            if add is not None:
                reg = held.get(k)
                if reg is None:
                    changed = bytes(add)
                else:
                    merged = bytearray(reg)
                    hll_merge(merged, add)
                    if merged != reg:  # a day's sketch soon changes in few batches
                        changed = bytes(merged)
            for c, v in zip(out, (*k, new.scans, new.allows, _dumps(new.denies),
                                  _dumps(new.latency), changed), strict=True):
                c.append(v)
        await conn.execute(_ADD_LEVELS, *out)

    async def clear_from(self, first_day: str) -> int:
        await self.ensure_schema()
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            return await self._clear(conn, first_day)

    async def _clear(self, conn: Any, first_day: str, last_day: str | None = None) -> int:
        """Drop the roll-ups of first_day .. last_day (and later when last_day is None)."""
        where = "day >= $1::text::date"
        args: list[Any] = [first_day]
        if last_day is not None:
            where += " AND day <= $2::text::date"
            args.append(last_day)
        status = await conn.execute(f"DELETE FROM gw_stats_venue WHERE {where}",  # noqa: S608
                                    *args)
        await conn.execute(f"DELETE FROM gw_stats_level WHERE {where}", *args)  # noqa: S608
        await conn.execute(f"DELETE FROM gw_stats_verified WHERE {where}",  # noqa: S608
                           *args)
        return int(status.rsplit(" ", 1)[-1])

    async def stored_days(self) -> tuple[str | None, str | None]:
        """(the oldest record partition's day, the last day a rebuild with no end must
        cover): the later of the newest roll-up row and the day after the newest record
        partition (a record is scanned at most the allowed skew after its verification, well
        under a day). None: nothing of that kind stored."""
        await self.ensure_schema()
        async with self._pool.acquire() as conn:
            rolled = await conn.fetchval("SELECT max(day)::text FROM gw_stats_level")
            names = await conn.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'gw_transactions'")
        parts = sorted(datetime.strptime(m.group(1), "%Y%m%d").date()
                       for m in (_PARTITION.match(r["relname"]) for r in names) if m)
        days = [rolled] if rolled else []
        if parts:
            days.append((parts[-1] + timedelta(days=1)).isoformat())
        return (parts[0].isoformat() if parts else None), (max(days) if days else None)

    async def last_day(self) -> str | None:
        return (await self.stored_days())[1]

    async def rebuild(self, first_day: str, place_of: Mapping[str, tuple[str, str, str]],
                      last_day: str | None = None,
                      progress: Callable[[str, int, int], None] | None = None
                      ) -> tuple[int, int]:
        """Recompute the roll-ups of `first_day` .. `last_day` (both UTC days, inclusive;
        no `last_day`: through the last day anything is stored, `last_day()`) from the
        records scanned on those days — **one transaction per day** under the writer lock, so
        the exporter waits for one day's recount at a time, never for the whole range, and
        the dashboard sees a day's old figures or its new ones, never a half-built day.
        `progress(day, records, rows)` is called after each day commits. Returns (records
        read, venue rows written).

        Refused (`RebuildRefused`, nothing changed) for a day before the oldest stored
        record partition: its records are pruned (retention) or were never stored, and the
        roll-ups — which outlive the records — could only be wiped, not recomputed."""
        await self.ensure_schema()
        start = date.fromisoformat(first_day)
        oldest, stored_end = await self.stored_days()
        if oldest is None:
            raise RebuildRefused("no transaction records are stored: nothing to rebuild from")
        if first_day < oldest:
            raise RebuildRefused(f"the records before {oldest} are not stored (retention): "
                                 f"their roll-ups cannot be recomputed; rebuild from {oldest}")
        open_ended = last_day is None
        end_text = last_day if last_day is not None else stored_end
        end = date.fromisoformat(end_text) if end_text is not None else start
        if end < start:
            if not open_ended:
                raise RebuildRefused("--to is before --from")
            end = start
        read = written = 0
        day = start
        while day <= end:
            # the last day of an open-ended rebuild also drops any roll-up after it
            clear_to = None if open_ended and day == end else day.isoformat()
            n, rows = await self._rebuild_day(day, place_of, clear_to)
            read, written = read + n, written + rows
            if progress is not None:
                progress(day.isoformat(), n, rows)
            day += timedelta(days=1)
        return read, written

    async def _rebuild_day(self, day: date, place_of: Mapping[str, tuple[str, str, str]],
                           clear_to: str | None) -> tuple[int, int]:
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        # records are partitioned by verified_at; a scan is at most the offline allowance
        # (GATEWAY_OFFLINE_MAX_S ≤ a day) older than its verification and at most the skew
        # newer: the partitions of the day before to the day after next hold every record
        # scanned on `day`, and the query reads only them
        lo_ms = int((midnight - timedelta(days=1)).timestamp() * 1000)
        hi_ms = int((midnight + timedelta(days=3)).timestamp() * 1000)
        scan_lo = int(midnight.timestamp() * 1000)
        scan_hi = int((midnight + timedelta(days=1)).timestamp() * 1000)
        rows: dict[RowKey, Rollup] = {}
        sketches: dict[SketchKey, bytearray] = {}
        read = 0
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            exists = await conn.fetchval("SELECT to_regclass('gw_transactions') IS NOT NULL")
            await self._clear(conn, day.isoformat(), clear_to)
            if exists:
                cursor = await conn.cursor(
                    "SELECT gate, venue, scene, face, decision, reason, subject, scanned_at, "
                    "verified_at, origin FROM gw_transactions WHERE verified_at >= $1 "
                    "AND verified_at < $2 AND scanned_at >= $3 AND scanned_at < $4",
                    lo_ms, hi_ms, scan_lo, scan_hi)
                while True:
                    chunk = await cursor.fetch(REBUILD_CHUNK)
                    if not chunk:
                        break
                    read += len(chunk)
                    part_rows, part_sketches = roll_up([_Rec(*r) for r in chunk], place_of)
                    for k, v in part_rows.items():
                        acc = rows.get(k)
                        if acc is None:
                            rows[k] = v
                        else:
                            acc.add(v)
                    for sk, reg in part_sketches.items():
                        held = sketches.get(sk)
                        if held is None:
                            sketches[sk] = reg
                        else:
                            hll_merge(held, reg)
            await self.apply(conn, rows, sketches)
        return read, len(rows)

    # ---------------------------------------------------------------- reading
    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[Any]:
        """A connection for a question; PostgreSQL away → `Unavailable` (503, retry later),
        never a driver's error in an answer."""
        try:
            if not self._schema_ready:
                await self.ensure_schema()
            async with self._pool.acquire() as conn:
                yield conn
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            raise Unavailable("The statistics store is not reachable; retry later") from None

    async def rows(self, first_day: str, last_day: str, district: str | None = None,
                   scene: str | None = None) -> list[tuple[RowKey, Rollup]]:
        where, args = self._range(first_day, last_day, district, scene)
        async with self._read() as conn:
            got = await conn.fetch(
                "SELECT day::text, district, scene, venue, face, scans, allows, "  # noqa: S608
                f"denies::text, latency::text FROM gw_stats_venue WHERE {where} "
                "ORDER BY day, district, scene, venue, face", *args)
        return [((r[0], r[1], r[2], r[3], r[4]), _rollup(r[5], r[6], r[7], r[8])) for r in got]

    @staticmethod
    def _range(first_day: str, last_day: str, district: str | None, scene: str | None
               ) -> tuple[str, list[Any]]:
        where = ["day BETWEEN $1::text::date AND $2::text::date"]
        args: list[Any] = [first_day, last_day]
        if district is not None:
            args.append(district)
            where.append(f"district = ${len(args)}")
        if scene is not None:
            args.append(scene)
            where.append(f"scene = ${len(args)}")
        return " AND ".join(where), args

    @staticmethod
    def _level_range(first_day: str, last_day: str, district: str, scene: str
                     ) -> tuple[str, list[Any]]:
        where = ["day BETWEEN $1::text::date AND $2::text::date"]
        args: list[Any] = [first_day, last_day]
        for column, value in (("district", district), ("scene", scene)):
            cond, extra = _level_condition(column, value, len(args) + 1)
            where.append(cond)
            args.extend(extra)
        return " AND ".join(where), args

    async def levels(self, first_day: str, last_day: str, district: str, scene: str
                     ) -> list[tuple[SketchKey, Rollup]]:
        where, args = self._level_range(first_day, last_day, district, scene)
        async with self._read() as conn:
            got = await conn.fetch(
                "SELECT day::text, district, scene, face, scans, allows, "  # noqa: S608
                f"denies::text, latency::text FROM gw_stats_level WHERE {where} "
                "ORDER BY day, district, scene, face", *args)
        return [((r[0], r[1], r[2], r[3]), _rollup(r[4], r[5], r[6], r[7])) for r in got]

    async def sketches(self, first_day: str, last_day: str, district: str, scene: str
                       ) -> list[tuple[SketchKey, bytes | bytearray]]:
        where, args = self._level_range(first_day, last_day, district, scene)
        async with self._read() as conn:
            got = await conn.fetch(
                "SELECT day::text, district, scene, face, residents "  # noqa: S608
                f"FROM gw_stats_level WHERE {where} AND residents IS NOT NULL "
                "ORDER BY day, district, scene, face", *args)
        return [((r[0], r[1], r[2], r[3]), r[4]) for r in got]

    async def totals(self, first_day: str, last_day: str, group_by: Sequence[str],
                     district: str | None, scene: str | None
                     ) -> list[tuple[tuple[str, ...], Rollup]]:
        """One GROUP BY for the counts and one over the reasons and latency buckets (jsonb
        keys): the database sums, only the groups travel."""
        for g in group_by:
            if g not in GROUP_KEYS:
                raise ValueError(f"group_by takes {', '.join(GROUP_KEYS)}")
        if "venue" in group_by:
            table = "gw_stats_venue"
            where, args = self._range(first_day, last_day, district, scene)
        else:
            table = "gw_stats_level"
            where, args = self._level_range(first_day, last_day,
                                            *level_of_question(group_by, district, scene))
        cols = ", ".join("day::text" if g == "day" else g for g in group_by)
        n = len(group_by)
        groups: dict[tuple[str, ...], Rollup] = {}
        async with self._read() as conn:
            counts = await conn.fetch(
                f"SELECT {cols}, sum(scans), sum(allows) FROM {table} "  # noqa: S608
                f"WHERE {where} GROUP BY {cols}", *args)
            for r in counts:
                groups[tuple(r[:n])] = Rollup(int(r[n]), int(r[n + 1]))
            parts = await conn.fetch(
                f"SELECT {cols}, 'd', e.key, sum(e.value::bigint) FROM {table}, "  # noqa: S608
                f"jsonb_each_text(denies) e WHERE {where} GROUP BY {cols}, e.key "
                f"UNION ALL SELECT {cols}, 'l', e.key, sum(e.value::bigint) FROM {table}, "
                f"jsonb_each_text(latency) e WHERE {where} GROUP BY {cols}, e.key", *args)
        for r in parts:
            row = groups.get(tuple(r[:n]))
            if row is None:  # not reached: a row with reasons has counts
                continue
            if r[n] == "d":
                row.denies[r[n + 1]] = int(r[n + 2])
            else:
                row.latency[int(r[n + 1])] = int(r[n + 2])
        return sorted(groups.items())

    async def verified_venues(self, first_day: str, last_day: str) -> set[str]:
        async with self._read() as conn:
            got = await conn.fetch(
                "SELECT DISTINCT venue FROM gw_stats_verified WHERE day BETWEEN "
                "$1::text::date AND $2::text::date", first_day, last_day)
        return {r[0] for r in got}

    async def ping(self) -> None:
        async with self._pool.acquire() as conn:
            await conn.fetchval("SELECT 1")


class _Rec:
    """A record as the rebuild reads it (the fields a roll-up needs)."""

    __slots__ = ("decision", "face", "gate", "origin", "reason", "scanned_at", "scene",
                 "subject", "venue", "verified_at")

    def __init__(self, gate: str, venue: str | None, scene: str, face: str | None,
                 decision: str, reason: str, subject: str | None, scanned_at: float,
                 verified_at: float, origin: str) -> None:
        self.gate, self.venue, self.scene, self.face = gate, venue, scene, face
        self.decision, self.reason, self.subject = decision, reason, subject
        self.scanned_at, self.verified_at, self.origin = scanned_at, verified_at, origin


class ExporterRollups:
    """What the record store's write calls to keep the roll-ups in its own transaction:
    `places()` before the transaction (the venue registry's gate → (venue, district, scene),
    refreshed when its version moved), `within(conn, records, places)` after the COPY, with
    the records that transaction inserted."""

    def __init__(self, stats: PostgresStatsStore,
                 places: Callable[[], Awaitable[Mapping[str, tuple[str, str, str]]]]) -> None:
        self.stats = stats
        self._places = places

    async def ensure_schema(self, conn: Any) -> None:
        """In the record store's schema transaction (its lock held)."""
        await conn.execute(SCHEMA)

    async def places(self) -> Mapping[str, tuple[str, str, str]]:
        return await self._places()

    def summarise(self, records: Sequence[TransactionRecord],
                  places: Mapping[str, tuple[str, str, str]]
                  ) -> tuple[dict[RowKey, Rollup], dict[SketchKey, bytearray]]:
        """The batch's roll-up rows and sketches: CPU only, no connection (the exporter's
        read-ahead runs it while PostgreSQL writes the batch before)."""
        return roll_up(records, places)

    async def apply(self, conn: Any, summary: object) -> None:
        """Add a `summarise` result on `conn`, inside the write's transaction (its lock
        held). `apply` does not change the summary: a failed write's retry may add it again."""
        rows, sketches = cast(
            "tuple[dict[RowKey, Rollup], dict[SketchKey, bytearray]]", summary)
        await self.stats.apply(conn, rows, sketches)

    async def within(self, conn: Any, records: Sequence[TransactionRecord],
                     places: Mapping[str, tuple[str, str, str]]) -> None:
        await self.apply(conn, self.summarise(records, places))
