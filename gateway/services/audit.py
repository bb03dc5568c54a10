"""The append-only, keyed hash chain of consent-based certificate access (docs/audit.md).

Every consent request, grant, rejection, refusal, fetch and revocation becomes one entry::

    {seq, ts, actor, action, consent_id, subject, types, purpose, outcome, reason,
     prev_hash, hash}

`hash` = HMAC-SHA256, under the audit chain key (`DataKeys.audit_chain_key`, HKDF from the
data master key), over the entry's canonical JSON (every member except `hash`, keys sorted, no
insignificant whitespace, UTF-8 — the RFC 8785 shape for our value set: strings, integers,
lists, null) — and that JSON includes `prev_hash`, so changing, removing or reordering any entry
breaks every later link, and nobody without the key can re-chain the log (a plain digest let
whoever could write Redis rebuild it from any entry: review finding 7 of issue 16). The first
entry's `prev_hash` is `GENESIS` (64 zeros).

Checkpoints anchor the chain outside Redis: a JWS (`typ` audit-checkpoint+jwt, token key
ring) over `(seq, hash)` of the head, appended to a file; `verify_log(..., checkpoints=…)`
refuses a chain that no longer holds each checkpointed entry, or is shorter than one.

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
from typing import Any, Protocol, cast

import jwt

from gateway.authz.ecdsa import is_low_s
from gateway.authz.keyring import KeyRing
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


def entry_hash(entry: Mapping[str, Any], key: bytes) -> str:
    """HMAC-SHA256 (hex) under the chain key of the canonical JSON of every member but
    `hash` (prev_hash included)."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hmac.new(key, canonical_json(body), hashlib.sha256).hexdigest()



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
                prev_hash: str, key: bytes) -> dict[str, Any]:
    """The full entry that follows `prev_hash` at position `seq`."""
    entry = dict(event_body)
    entry.update(seq=seq, ts=rfc3339(ts), prev_hash=prev_hash)
    entry["hash"] = entry_hash(entry, key)
    return entry


def verify_chain(entries: Iterable[Mapping[str, Any]], *, key: bytes, start_seq: int = 1,
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
                or not hmac.compare_digest(entry_hash(e, key), stated):
            return False, expected_seq
        prev = stated
        expected_seq += 1
    return True, None


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


@dataclass(frozen=True)
class Checkpoint:
    """The chain's head at one moment, as a signed checkpoint states it."""

    seq: int
    hash: str


async def verify_log(log: AuditLog, page: int = 1000,
                     checkpoints: Sequence[Checkpoint] = ()) -> tuple[bool, int | None, int]:
    """Verify the whole stored chain page by page, its head record, and that it still holds
    every checkpointed `(seq, hash)`.

    Returns (ok, first broken seq, entries checked). A head that is ahead of or disagrees with
    the last entry (entries cut off the end) is reported as the seq after the last good one; an
    entry that differs from a checkpoint (the chain was rebuilt) as that checkpoint's seq; a
    chain shorter than a checkpoint (rolled back) as the seq after its end.
    """
    want = {c.seq: c.hash for c in checkpoints}
    seq, prev = 1, GENESIS
    checked = 0
    while True:
        batch = await log.entries(seq, page)
        if not batch:
            break
        ok, broken = verify_chain(batch, key=log.chain_key, start_seq=seq, prev_hash=prev)
        if not ok:
            return False, broken, checked
        for e in batch:
            anchored = want.get(int(e["seq"]))
            if anchored is not None and not hmac.compare_digest(anchored, str(e["hash"])):
                return False, int(e["seq"]), checked
            checked += 1
        seq = int(batch[-1]["seq"]) + 1
        prev = str(batch[-1]["hash"])
    head_seq, head_hash = await log.head()
    if head_seq != seq - 1 or not hmac.compare_digest(head_hash, prev):
        return False, seq, checked
    if any(c.seq >= seq for c in checkpoints):
        return False, seq, checked
    return True, None, checked


CHECKPOINT_TYP = "audit-checkpoint+jwt"


def checkpoint_claims(issuer: str, seq: int, head_hash: str, now: float) -> dict[str, Any]:
    """What a checkpoint signs: no `aud`, no `sub`, no `exp` — a statement of fact that never
    passes for a token (RFC 8725 §3.11)."""
    return {"iss": issuer, "iat": int(now), "audit_seq": seq, "audit_hash": head_hash}


class CheckpointInvalid(ValueError):
    """A checkpoint line that is not a checkpoint of ours (bad signature, type, issuer…)."""


def read_checkpoints(lines: Iterable[str], ring: KeyRing, issuer: str) -> list[Checkpoint]:
    """Verify each non-empty line (a compact JWS) against the token key ring — any key of it
    by `kid`, retired ones included (a checkpoint outlives the key that signed it) — and
    return the checkpoints. Raises CheckpointInvalid naming the line."""
    out: list[Checkpoint] = []
    for n, line in enumerate(lines, start=1):
        token = line.strip()
        if not token:
            continue
        try:
            header = jwt.get_unverified_header(token)
            key = next((k for k in ring.keys if k.kid == header.get("kid")), None)
            if key is None or header.get("alg") != key.alg:
                raise CheckpointInvalid(f"line {n}: not signed by a key of the token ring")
            if header.get("typ") != CHECKPOINT_TYP:
                raise CheckpointInvalid(f"line {n}: not an audit checkpoint")
            if key.alg == "ES256" and not is_low_s(token):
                raise CheckpointInvalid(f"line {n}: high-S signature")
            # an SM2 key (gm suite) is understood by the registered "SM2" algorithm (sm2jws)
            claims = jwt.decode(token, cast(Any, key.private_key.public_key()),
                                algorithms=[key.alg],
                                issuer=issuer, options={"require": ["iss", "iat"],
                                                        "verify_aud": False})
            seq, head_hash = claims["audit_seq"], claims["audit_hash"]
        except jwt.PyJWTError:
            raise CheckpointInvalid(f"line {n}: signature or claims invalid") from None
        except KeyError:
            raise CheckpointInvalid(f"line {n}: not an audit checkpoint") from None
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1 \
                or not isinstance(head_hash, str):
            raise CheckpointInvalid(f"line {n}: malformed checkpoint")
        out.append(Checkpoint(seq, head_hash))
    return out


class CheckpointSigner(Protocol):
    def sign(self, claims: dict[str, Any], typ: str = ...) -> str: ...


async def make_checkpoint(log: AuditLog, signer: CheckpointSigner, issuer: str,
                          now: float) -> tuple[int, str] | None:
    """(seq, signed checkpoint of the current head), or None while the log is empty."""
    seq, head_hash = await log.head()
    if seq == 0:
        return None
    return seq, signer.sign(checkpoint_claims(issuer, seq, head_hash, now), typ=CHECKPOINT_TYP)


class AuditTrail:
    """The use-case side: write events, read a holder's part."""

    def __init__(self, log: AuditLog, now: Any) -> None:
        self.log = log
        self._now = now

    async def record(self, event: AuditEvent) -> dict[str, Any]:
        return await self.log.append(event.body(), self._now())

    async def for_subject(self, subject: str, limit: int = 100) -> Sequence[dict[str, Any]]:
        return await self.log.for_subject(subject, limit)
