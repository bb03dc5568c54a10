"""In-memory transaction records (the embedded sandbox, unit tests): one process, nothing
survives a restart. `MemoryRecordStore` passes the same contract suite as the PostgreSQL store
(tests/contract/test_record_store.py); `MemoryRecordingClaims` appends straight to it — the
sandbox has no outbox to drain."""

from __future__ import annotations

import math
from collections.abc import Sequence

from gateway.adapters.memory import MemorySingleUse
from gateway.services.records import (
    Claim,
    ExportPage,
    RecordStore,
    TransactionRecord,
    claim_each,
)
from gateway.services.stats import LiveCounts, live_field

__all__ = ["MemoryLiveCounters", "MemoryRecordStore", "MemoryRecordingClaims"]

DAY_S = 86400


class MemoryRecordStore:
    def __init__(self, max_records: int = 1_000_000) -> None:
        self._rows: list[tuple[int, TransactionRecord]] = []  # (seq, record), seq ascending
        self._ids: dict[str, int] = {}
        self._seq = 0
        self._max = max_records

    async def write(self, records: Sequence[TransactionRecord]) -> int:
        new = 0
        for r in records:
            if r.record_id in self._ids:
                continue
            if len(self._rows) >= self._max:
                # the sandbox's memory is bounded: the oldest tenth goes at once (one list
                # shift per tenth, not one per record)
                cut = max(1, self._max // 10)
                for _, old in self._rows[:cut]:
                    self._ids.pop(old.record_id, None)
                del self._rows[:cut]
            self._seq += 1
            self._rows.append((self._seq, r))
            self._ids[r.record_id] = self._seq
            new += 1
        return new

    def valid_cursor(self, cursor: str) -> bool:
        return cursor.isascii() and cursor.isdigit() and len(cursor) <= 18

    async def page(self, after: str | None, limit: int) -> ExportPage:
        start = int(after) if after else 0
        lo, hi = 0, len(self._rows)
        while lo < hi:  # first row with seq > start
            mid = (lo + hi) // 2
            if self._rows[mid][0] <= start:
                lo = mid + 1
            else:
                hi = mid
        rows = self._rows[lo:lo + max(0, limit)]
        out = [(str(seq), r) for seq, r in rows]
        return ExportPage(out, out[-1][0] if out else (after or "0"))

    async def prune(self, older_than: float) -> int:
        cutoff_day = math.floor(older_than / DAY_S)  # days ending at or before the cutoff
        keep = [(s, r) for s, r in self._rows if math.floor(r.verified_at / DAY_S) >= cutoff_day]
        dropped_days = {math.floor(r.verified_at / DAY_S) for s, r in self._rows
                        if math.floor(r.verified_at / DAY_S) < cutoff_day}
        self._rows = keep
        self._ids = {r.record_id: s for s, r in keep}
        return len(dropped_days)

    async def ping(self) -> None:
        return None


class MemoryLiveCounters:
    """The sandbox's live counters (docs/stats.md): the same fields as Redis's, per minute,
    kept 25 hours; "today" is the sum of today's minutes, as on Redis."""

    KEEP_MINUTES = 25 * 60

    def __init__(self) -> None:
        self._minutes: dict[int, dict[str, int]] = {}

    def count(self, record: TransactionRecord) -> None:
        fld = live_field(record)
        minute = int(record.verified_at // 60)
        held = self._minutes.get(minute)
        if held is None:
            held = self._minutes[minute] = {}
            for old in [x for x in self._minutes if x <= minute - self.KEEP_MINUTES]:
                del self._minutes[old]
        held[fld] = held.get(fld, 0) + 1

    async def read(self, now: float, minutes: int) -> LiveCounts:
        minute, day = int(now // 60), int(now // 86400)
        today: dict[str, int] = {}
        for m, held in self._minutes.items():
            if day * 1440 <= m <= minute:
                for fld, n in held.items():
                    today[fld] = today.get(fld, 0) + n
        wanted = range(minute - minutes + 1, minute + 1)
        return LiveCounts(day, today, {m: dict(self._minutes.get(m, {})) for m in wanted})


class MemoryRecordingClaims:
    """Claims in a `MemorySingleUse`; a winning claim's record goes straight to the store
    (and to the live counters, when on)."""

    def __init__(self, once: MemorySingleUse, store: RecordStore,
                 live: MemoryLiveCounters | None = None) -> None:
        self._once = once
        self._store = store
        self._live = live

    async def claim(self, key: str, ttl_s: float, value: str, record: TransactionRecord, *,
                    used_since: float | None = None) -> str | None:
        # (used_since: this store's history lives and dies with the process)
        prev = await self._once.claim(key, ttl_s, value)
        if prev is None:
            if self._live is not None:
                self._live.count(record)
            await self._store.write((record,))
        return prev

    async def claim_many(self, claims: Sequence[Claim]) -> list[str | None]:
        return await claim_each(self, claims)  # one process: no round trip to save

    async def peek(self, key: str) -> str | None:
        return await self._once.peek(key)

    async def remember(self, key: str, ttl_s: float, value: str) -> None:
        await self._once.claim(key, ttl_s, value)  # the first answer kept stays

    async def remember_many(self, ttl_s: float, items: Sequence[tuple[str, str]]) -> None:
        for key, value in items:
            await self._once.claim(key, ttl_s, value)
