"""The append-only, hash-chained audit log of consent-based certificate access (docs/audit.md).

Every consent request, grant, rejection, refusal, fetch and revocation becomes one entry::

    {seq, ts, actor, action, consent_id, subject, types, purpose, outcome, reason,
     prev_hash, hash}

`hash` = SHA-256 over the entry's canonical JSON (every member except `hash`, keys sorted,
no insignificant whitespace, UTF-8 — the RFC 8785 shape for our value set: strings, integers,
lists, null) — and that JSON includes `prev_hash`, so changing, removing or reordering any entry
breaks every later link. The first entry's `prev_hash` is `GENESIS` (64 zeros).

`subject` is the holder's pairwise subject for the audit log's own sector (`AUDIT_SECTOR`):
stable per person (so a resident's access log can be listed), correlatable with no client's
subjects. Neither the citizen ID nor an internal person id is ever written here.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.timefmt import rfc3339

GENESIS = "0" * 64
AUDIT_SECTOR = "gateway-audit"

ACTIONS = frozenset({
    "consent.requested", "consent.authorised", "consent.rejected", "consent.revoked",
    "consent.scanned", "consent.fetched", "consent.refused",
})


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    """Deterministic JSON: sorted keys, compact separators, UTF-8 (RFC 8785 for our values)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def entry_hash(entry: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of every member but `hash` (prev_hash included)."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body)).hexdigest()



@dataclass(frozen=True)
class AuditEvent:
    """What a use case records; the log adds seq, ts, prev_hash and hash."""

    actor: str
    action: str
    outcome: str                      # "ok" | "refused"
    consent_id: str | None = None
    subject: str | None = None        # holder's subject in AUDIT_SECTOR
    types: tuple[str, ...] = ()
    purpose: str | None = None        # purpose code
    reason: str | None = None         # stable refusal reason, None when ok

    def body(self) -> dict[str, Any]:
        if self.action not in ACTIONS:
            raise ValueError("unknown audit action")
        return {"actor": self.actor, "action": self.action, "outcome": self.outcome,
                "consent_id": self.consent_id, "subject": self.subject,
                "types": list(self.types), "purpose": self.purpose, "reason": self.reason}


def chain_entry(event_body: Mapping[str, Any], seq: int, ts: float,
                prev_hash: str) -> dict[str, Any]:
    """The full entry that follows `prev_hash` at position `seq`."""
    entry = dict(event_body)
    entry.update(seq=seq, ts=rfc3339(ts), prev_hash=prev_hash)
    entry["hash"] = entry_hash(entry)
    return entry


def verify_chain(entries: Iterable[Mapping[str, Any]], *, start_seq: int = 1,
                 prev_hash: str = GENESIS) -> tuple[bool, int | None]:
    """Check every link: contiguous `seq` from `start_seq`, `prev_hash` equal to the previous
    entry's `hash`, and `hash` equal to the recomputed digest.

    Returns (True, None) or (False, first broken seq) — the seq the chain expected at the
    first entry that does not fit (a deleted entry shows up as the seq that is missing).
    """
    expected_seq = start_seq
    prev = prev_hash
    for e in entries:
        seq = e.get("seq")
        if seq != expected_seq:
            return False, expected_seq
        stated = str(e.get("hash", ""))
        if not hmac.compare_digest(str(e.get("prev_hash", "")), prev) \
                or not hmac.compare_digest(entry_hash(e), stated):
            return False, expected_seq
        prev = stated
        expected_seq += 1
    return True, None


class AuditLog(Protocol):
    """The store: appends atomically (no two entries with one seq, never a fork across
    workers) and reads back in order."""

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


async def verify_log(log: AuditLog, page: int = 1000) -> tuple[bool, int | None, int]:
    """Verify the whole stored chain page by page and its head record.

    Returns (ok, first broken seq, entries checked). A head that is ahead of or disagrees with
    the last entry (entries cut off the end) is reported as the seq after the last good one.
    """
    seq, prev = 1, GENESIS
    checked = 0
    while True:
        batch = await log.entries(seq, page)
        if not batch:
            break
        ok, broken = verify_chain(batch, start_seq=seq, prev_hash=prev)
        if not ok:
            return False, broken, checked
        checked += len(batch)
        seq = int(batch[-1]["seq"]) + 1
        prev = str(batch[-1]["hash"])
    head_seq, head_hash = await log.head()
    if head_seq != seq - 1 or not hmac.compare_digest(head_hash, prev):
        return False, seq, checked
    return True, None, checked


class AuditTrail:
    """The use-case side: write events, read a holder's part."""

    def __init__(self, log: AuditLog, now: Any) -> None:
        self.log = log
        self._now = now

    async def record(self, event: AuditEvent) -> dict[str, Any]:
        return await self.log.append(event.body(), self._now())

    async def for_subject(self, subject: str, limit: int = 100) -> Sequence[dict[str, Any]]:
        return await self.log.for_subject(subject, limit)
