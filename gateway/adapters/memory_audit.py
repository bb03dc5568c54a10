"""In-memory audit log for the sandbox and unit tests (one process; nothing survives a
restart — docs/audit.md says where the log is durable)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.services.audit import GENESIS, chain_entry


class MemoryAuditLog:
    def __init__(self, chain_key: bytes) -> None:
        self.chain_key = chain_key
        self._entries: list[dict[str, Any]] = []
        self._by_subject: dict[str, list[int]] = {}

    async def append(self, event: Mapping[str, Any], ts: float) -> dict[str, Any]:
        # No await between reading the head and appending: atomic on one event loop.
        seq, prev = (len(self._entries),
                     self._entries[-1]["hash"] if self._entries else GENESIS)
        entry = chain_entry(event, seq + 1, ts, prev, self.chain_key)
        self._entries.append(entry)
        if entry.get("subject"):
            self._by_subject.setdefault(entry["subject"], []).append(entry["seq"])
        return dict(entry)

    async def entries(self, start_seq: int = 1, count: int = 1000) -> Sequence[dict[str, Any]]:
        start = max(0, start_seq - 1)
        return [dict(e) for e in self._entries[start:start + count]]

    async def head(self) -> tuple[int, str]:
        if not self._entries:
            return 0, GENESIS
        return len(self._entries), str(self._entries[-1]["hash"])

    async def for_subject(self, subject: str, limit: int = 100) -> Sequence[dict[str, Any]]:
        seqs = self._by_subject.get(subject, [])[-limit:]
        return [dict(self._entries[s - 1]) for s in reversed(seqs)]
