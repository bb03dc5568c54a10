"""In-memory transaction records (the embedded sandbox, unit tests): one process, nothing
survives a restart. `MemoryRecordStore` passes the same contract suite as the PostgreSQL store
(tests/contract/test_record_store.py); `MemoryRecordingClaims` appends straight to it — the
sandbox has no outbox to drain."""

from __future__ import annotations

import math
from collections.abc import Sequence

from gateway.adapters.memory import MemorySingleUse
from gateway.services.records import ExportPage, RecordStore, TransactionRecord

__all__ = ["MemoryRecordStore", "MemoryRecordingClaims"]

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


class MemoryRecordingClaims:
    """Claims in a `MemorySingleUse`; a winning claim's record goes straight to the store."""

    def __init__(self, once: MemorySingleUse, store: RecordStore) -> None:
        self._once = once
        self._store = store

    async def claim(self, key: str, ttl_s: float, value: str, record: TransactionRecord, *,
                    used_since: float | None = None) -> str | None:
        # (used_since: this store's history lives and dies with the process)
        prev = await self._once.claim(key, ttl_s, value)
        if prev is None:
            await self._store.write((record,))
        return prev

    async def peek(self, key: str) -> str | None:
        return await self._once.peek(key)

    async def remember(self, key: str, ttl_s: float, value: str) -> None:
        await self._once.claim(key, ttl_s, value)  # the first answer kept stays
