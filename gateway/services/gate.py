"""The gate decision pipeline (验码 / 验卡): ONE use case for every credential a gate presents —
渝快码 and e-SSC codes (``POST /v1/codes/verify``) and physical-card taps
(``POST /v1/cards/verify``) — answering ONE decision type (CONTRACT "Codes": the same shape
for every face; a failed scan is a ``deny`` with a stable reason, never an HTTP error).

The steps, each written once, in this order (the first failure is the answer):

1. **gate** — the caller is a verified gate token (the bearer check and the per-caller rate
   limit are the web edge's, ``web/http.principal``); the scene must exist (else 400) and be
   the gate's own (else 403).
2. **face** — the credential verified by its face (:mod:`gateway.services.faces`): a code's
   signature and validity window, a tap's PSAM MAC and freshness — judged at the scan's time
   (``scanned_at``: no more than the skew ahead, no more than GATEWAY_OFFLINE_MAX_S behind,
   docs/records.md); then the scene's policy for
   that face (and e-SSC region); then the person behind it (a ykm holder handle opens without
   I/O, an e-SSC link or a card is one store read) and the in-process revocation view.
3. **gate sector** — the gate's client record (its pairwise-subject sector), cached in-process
   on the injected clock; a disabled or unknown gate is ``scene_not_permitted``.
4. **subject and attributes** — the pairwise subject (HMAC, no I/O) and exactly the scene's
   attributes: sealed in the code, read with the card, or one identity read (an e-SSC code,
   a ykm code without sealed attributes) — before the claim, because its record holds them.
5. **claim and record** — single use and the transaction record, atomically, in ONE round
   trip (`RecordingClaims`: ``SET key value NX PX ttl GET`` and, only when it claimed,
   ``XADD`` to the records' outbox; docs/records.md). The claim's value remembers who used the
   credential and when (``gate|scanned_at|verified_at|request_id``). A same-gate, same-request
   retry gets the first answer (its ``verified_at``) and no second record; any other second use
   is ``replayed`` (naming the first use). A deny is recorded once per (gate, request id) the
   same way. Other commands that must ride the claim's round trip (a live counter) are issued
   in the same event-loop tick: the Coalescer sends them in the same pipeline.
6. **count** — ``gateway_verify_decisions_total`` for every decision, a sampled log line per
   deny reason, a debug line per allow. Never the code string or a personal datum.

A retry of an *expired* code (the codec reports ``expired`` only for a correctly signed one)
reads the claim record instead of writing it: the same request gets its first answer for as
long as the record lives; the code is decoded once either way.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from gateway.authz.datakeys import DataKeys
from gateway.authz.tokens import AccessTokenClaims
from gateway.clock import Clock
from gateway.errors import Forbidden, InvalidRequest, NotFound, Unavailable
from gateway.ports import ClientStore
from gateway.services.codes import open_attributes
from gateway.services.decision import Face, Reason, UseRef, VerifyDecision
from gateway.services.ports import CredentialFace, GateIdentity
from gateway.services.records import (
    Claim,
    Origin,
    RecordingClaims,
    TransactionRecord,
    credential_hash,
    new_record_id,
    to_ms,
)
from gateway.services.scenes import Scene, SceneCatalogue
from gateway.services.subjects import SubjectSeen
from gateway.timefmt import rfc3339

__all__ = [
    "CardTap",
    "CredentialFace",
    "DecisionCounter",
    "FirstUse",
    "GateIdentity",
    "GatePipeline",
    "GateScan",
    "GateSectors",
    "LineBudget",
    "Refused",
    "UseRef",
    "Verified",
]

log = structlog.get_logger("gateway.codes")

GATE_SECTOR_CACHE_S: Final = 60.0
#: `verify_many` yields to the loop after this many faces' checks: ~100 signature checks are a
#: few milliseconds, so other requests of the worker (and their Redis replies) never wait long
BULK_TICK: Final = 100


# ------------------------------------------------------------------------------ what a gate sends
@dataclass(frozen=True, slots=True)
class CardTap:
    """A physical-card tap (实体卡) as the gate's PSAM attested it: the MAC covers
    (card_no, region, gate, request_id, scanned_at) exactly as sent (docs/upstreams.md
    "PSAM attestation of card taps")."""

    card_no: str = field(repr=False)
    region: str
    terminal_mac: str = field(repr=False)
    scanned_at: str


@dataclass(slots=True)
class GateScan:
    """One presentation at a gate: a scanned code string or a card tap, for a scene, under the
    gate's request id; ``scanned_at`` when the gate said when it scanned (Unix seconds)."""

    scene: str
    request_id: str
    credential: str | CardTap
    scanned_at: float | None = None
    origin: Origin = "online"  # "offline": uploaded from an offline gate's journal
    # Not frozen, like `Verified`: treat both as immutable all the same. A frozen dataclass
    # sets every field through object.__setattr__ (11 fields: 1.34 µs against 0.37 µs,
    # measured; one of each per verification, issue 13).


# --------------------------------------------------------------------------- between the steps
@dataclass(slots=True)
class Verified:
    """A credential whose face checked out (signature or MAC; validity window unless the face
    raised ``expired`` with it). ``person_id`` is None until the face's ``resolve`` read it;
    ``lookup`` is what that read needs (face-specific); ``sealed`` the clear attribute flags of a
    ykm code (0: none); ``record`` the identity record a face already read (attributes come from
    it without another read)."""

    face: Face
    region: str | None
    use_key: str
    use_ttl_s: float
    use: UseRef
    person_id: str | None = None
    sealed: int = 0
    record: Any = None
    lookup: Any = None
    scanned_at: float | None = None
    #: the earliest time it could have been used: a store that lost its history since then
    #: refuses the claim (gateway/adapters/store_epoch.py; issue 12)
    usable_from: float | None = None


class Refused(Exception):
    """A deny, raised where the fact is known; the pipeline turns it into the decision.
    ``verified`` is set when the face checked out but the credential's window did not (an
    ``expired`` credential may still be an idempotent retry)."""

    def __init__(self, reason: Reason, face: Face | None,
                 verified: Verified | None = None, first_use: FirstUse | None = None) -> None:
        super().__init__(reason)
        self.reason: Reason = reason
        self.face = face
        self.verified = verified
        self.first_use = first_use  # `replayed`: who used it first, and when


# ------------------------------------------------------------------------------------- ports


#: Counts one decision (gateway_verify_decisions_total{face, decision, reason}).
DecisionCounter = Callable[[VerifyDecision], None]


# ------------------------------------------------------------------------------ the gate sector
class GateSectors:
    """Gate client records' sectors cached in-process on the injected clock: the gate token
    carries only client id and scene; the sector changes only by operator action."""

    def __init__(self, store: ClientStore, now: Callable[[], float],
                 ttl_s: float = GATE_SECTOR_CACHE_S) -> None:
        self._store = store
        self._now = now
        self._ttl = ttl_s
        self._cache: dict[str, tuple[float, str]] = {}
        # one store read per gate at a time: the first burst of a fresh worker (hundreds of
        # verifies of one gate) waited on hundreds of reads and as many new Redis
        # connections, some of which timed out (issue 12)
        self._reading: dict[str, asyncio.Future[str | None]] = {}

    def cached(self, client_id: str) -> str | None:
        """The sector of a gate read in the last `ttl_s`, without awaiting (else None)."""
        hit = self._cache.get(client_id)
        if hit is not None and hit[0] > self._now():
            return hit[1]
        return None

    def forget(self) -> None:
        """Drop every cached sector (the store they came from lost its data: issue 12)."""
        self._cache.clear()

    async def sector(self, client_id: str) -> str | None:
        """The gate's sector; None for an unknown or disabled gate (never cached). Concurrent
        misses for one gate share one read (a cold cache meets a whole batch of an offline
        upload, or a burst: one store read, not one per scan)."""
        cached = self.cached(client_id)
        if cached is not None:
            return cached
        pending = self._reading.get(client_id)
        if pending is None:
            pending = self._reading[client_id] = asyncio.ensure_future(self._read(client_id))
            pending.add_done_callback(lambda _: self._reading.pop(client_id, None))
        return await asyncio.shield(pending)

    async def _read(self, client_id: str) -> str | None:
        now = self._now()
        client = await self._store.get(client_id)
        if client is None or client.disabled or not client.sector:
            self._cache.pop(client_id, None)
            return None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[client_id] = (now + self._ttl, client.sector)
        return client.sector


class LineBudget:
    """At most `per_second` log lines per key (a deny reason) per second in this worker; the
    line that follows a suppressed stretch says how many were left out. A flood of junk or
    replays is counted in full by gateway_verify_decisions_total; the log keeps a sample
    instead of a line per scan (a line costs ~20 µs and a write under attack)."""

    def __init__(self, per_second: int = 20) -> None:
        self._per_second = per_second
        self._state: dict[str, list[int]] = {}  # key -> [second, lines this second, suppressed]

    def take(self, key: str, now: float) -> int | None:
        """None: do not log; else log, with this many lines suppressed since the last one."""
        sec = int(now)
        st = self._state.get(key)
        if st is None:
            st = self._state[key] = [sec, 0, 0]
        if st[0] != sec:
            st[0], st[1] = sec, 0
        if st[1] >= self._per_second:
            st[2] += 1
            return None
        st[1] += 1
        suppressed, st[2] = st[2], 0
        return suppressed


# --------------------------------------------------------------------------------- the pipeline
class GatePipeline:
    """验码 / 验卡: a gate's presentation → one :class:`VerifyDecision` (module docstring)."""

    def __init__(self, *, scenes: SceneCatalogue, sectors: GateSectors,
                 codes: CredentialFace, cards: CredentialFace, claims: RecordingClaims,
                 identity: GateIdentity, data_keys: DataKeys, subject_seen: SubjectSeen,
                 count: DecisionCounter, clock: Clock, deny_ttl_s: float = 960.0) -> None:
        self._scenes = scenes
        self._sectors = sectors
        self._codes = codes
        self._cards = cards
        self._claims = claims
        self._identity = identity
        self._keys = data_keys
        self._subject_seen = subject_seen
        self._count = count
        self._clock = clock
        self._deny_ttl = deny_ttl_s  # a deny's record key: the retry window of its request
        self._deny_lines = LineBudget()

    def forget_cached_sectors(self) -> None:
        self._sectors.forget()

    async def verify(self, gate: AccessTokenClaims, scan: GateScan) -> VerifyDecision:
        # 1. gate: the scene exists and is this gate's own (request errors, not decisions)
        scene = self._gate_scene(gate, scan.scene)
        now = self._clock.now()
        verified_at = rfc3339(now)
        face = self._cards if isinstance(scan.credential, CardTap) else self._codes
        gate_id = gate.client_id
        v: Verified | None = None
        try:
            # 2. face: signature / MAC and window, at the scan's time; an expired one may be
            # a retry
            retry_of: str | None = None
            try:
                v = face.check(scan.credential, gate_id, scan.request_id, now, scan.scanned_at)
            except Refused as refused:
                v = refused.verified
                if v is None:
                    raise
                retry_of = await self._first_answer(v, gate_id, scan.request_id)
                if retry_of is None:
                    raise
            if not scene.permits(v.face, v.region):
                raise Refused("scene_not_permitted", v.face, v)
            if v.person_id is None:
                v = await face.resolve(v)
            person_id = v.person_id
            assert person_id is not None  # resolve() sets it or refuses
            if self._identity.is_suspended(person_id):
                raise Refused("revoked", v.face, v)
            # 3. gate sector: the known gate's needs no coroutine
            sector = self._sectors.cached(gate_id) or await self._sectors.sector(gate_id)
            if sector is None:
                raise Refused("scene_not_permitted", v.face, v)
            # 4. attributes and the pairwise subject (OIDC Core §8.1) before the claim: the
            # transaction record rides the claim's round trip and carries both
            attributes = await self._attributes(v, scene.attributes)
            subject = self._keys.pairwise_subject(sector, person_id)
            # 5. claim single use, atomically with the record of this allow
            first = retry_of
            if first is None:
                first = await self._claim(v, gate_id, scan, now, verified_at, subject,
                                          attributes)
            if first is not None:
                verified_at = first
        except Refused as refused:
            return await self._deny(refused, gate_id, scan, verified_at, now)
        await self._subject_seen(sector, subject, person_id)
        decision = _allow_decision(v, gate_id, scan, verified_at, subject, attributes)
        # 6. count. An allow is counted in gateway_verify_decisions_total; a line per allow would
        # say no more (no gate, no person) at thousands a second: a debug line. Denies: info.
        self._count(decision)
        log.debug("code.verified", face=v.face, decision="allow", reason="ok",
                  scene=scan.scene, retry=first is not None)
        return decision

    def _gate_scene(self, gate: AccessTokenClaims, scene_id: str) -> Scene:
        """Step 1: the scene exists and is the gate's own (request errors, not decisions)."""
        scene = self._scenes.get(scene_id)
        if scene is None:
            raise InvalidRequest("Unknown scene")
        if gate.scene != scene_id:
            raise Forbidden("This gate is registered for another scene")
        return scene

    async def _claim(self, v: Verified, gate_id: str, scan: GateScan, now: float,
                     verified_at: str, subject: str,
                     attributes: dict[str, Any]) -> str | None:
        """Step 5: claim the single use and, when this is the first, append its transaction
        record — ONE script, ONE round trip (docs/records.md). Returns the first answer's
        ``verified_at`` when this is a retry of it (None: first use); raises ``replayed``
        (with the first use's gate and time) for any other second use."""
        c = _allow_claim(v, gate_id, scan, now, verified_at, subject, attributes)
        # (a store that lost this credential's history answers HISTORY_LOST: `replayed`)
        prev = await self._claims.claim(c.key, c.ttl_s, c.value, c.record,
                                        used_since=c.used_since)
        return _first_answer_of(prev, v, gate_id, scan.request_id)

    def _local_attributes(self, v: Verified, names: tuple[str, ...]) -> dict[str, Any] | None:
        """The scene's attributes without I/O (none asked, sealed in the code, or from the
        record the face read); None when the identity service must be asked."""
        if not names:
            return {}
        if v.sealed:
            sealed = open_attributes(v.sealed, names)
            if sealed is not None:
                return sealed
        if v.record is not None:
            got = self._identity.disclose_from(v.record, names)
            return {k: got[k] for k in names if k in got}
        return None

    async def _attributes(self, v: Verified, names: tuple[str, ...]) -> dict[str, Any]:
        """Exactly the scene's attributes: at hand (no I/O), or one identity read."""
        local = self._local_attributes(v, names)
        if local is not None:
            return local
        assert v.person_id is not None
        try:
            got = await self._identity.disclose(v.person_id, names)
        except NotFound:  # the person record is gone
            raise Refused("revoked", v.face, v) from None
        return {k: got[k] for k in names if k in got}

    async def _first_answer(self, v: Verified, gate_id: str, request_id: str) -> str | None:
        """The first answer's ``verified_at`` when this (gate, request id) already used this
        credential and its claim record still lives; else None."""
        prev = await self._claims.peek(v.use_key)
        first = parse_claim(prev) if prev is not None else None
        if first is not None and _same(first.gate, gate_id) and \
                _same(first.request_id, request_id):
            return first.verified_at
        return None

    async def _deny(self, refused: Refused, gate_id: str, scan: GateScan, verified_at: str,
                    now: float) -> VerifyDecision:
        decision = self._deny_decision(refused, gate_id, scan, verified_at)
        # The deny's record, once per (gate, request id): a retry of the same request is
        # answered the same and recorded once (the same script as an allow's claim).
        await self._record_deny(decision, scan, now)
        self._denied(decision, refused, now)
        return decision

    @staticmethod
    def _deny_decision(refused: Refused, gate_id: str, scan: GateScan,
                       verified_at: str) -> VerifyDecision:
        v, first = refused.verified, refused.first_use
        return VerifyDecision("deny", refused.reason, refused.face, scan.request_id,
                              verified_at, gate=gate_id, scene=scan.scene,
                              scanned_at=_scanned_at(scan, v),
                              use=v.use if v is not None else None,
                              first_use=(first.gate, first.used_at)
                              if first is not None else None)

    def _denied(self, decision: VerifyDecision, refused: Refused, now: float) -> None:
        """Count a deny, and log it within the reason's line budget."""
        self._count(decision)
        reason = refused.reason
        suppressed = self._deny_lines.take(reason, now)
        if suppressed is not None:
            log.info("code.verified", face=refused.face, decision="deny", reason=reason,
                     scene=decision.scene, suppressed=suppressed)

    async def _record_deny(self, d: VerifyDecision, scan: GateScan, now: float) -> None:
        c = self._deny_claim(d, scan, now)
        await self._claims.claim(c.key, c.ttl_s, c.value, c.record)

    def _deny_claim(self, d: VerifyDecision, scan: GateScan, now: float) -> Claim:
        assert d.gate is not None
        record = TransactionRecord(
            new_record_id(now), d.gate, scan.scene, d.face, "deny", d.reason,
            to_ms(d.scanned_at if d.scanned_at is not None else now), to_ms(now), scan.origin,
            scan.request_id, None, {}, _use_hash(d.use))
        return Claim(f"deny:{d.gate}|{scan.request_id}", self._deny_ttl, d.reason, record)

    # ------------------------------------------------------------------------ in bulk
    async def verify_many(
            self, gate: AccessTokenClaims, scans: Sequence[GateScan],
            one: Callable[[GateScan], Awaitable[VerifyDecision]] | None = None,
    ) -> list[VerifyDecision]:
        """Many presentations by ONE gate (an offline upload's batch), each decided as
        `verify` decides it, with the work in bulk: the faces' checks (signatures) in a tight
        loop, the gate's sector once, and every claim — the allows' and the denies' records —
        in ONE `RecordingClaims.claim_many` round trip (a second one only for the records of
        the scans that turn out `replayed`). A scan that needs I/O of its own before its claim
        (a person record to read, an expired code's first answer to look up, attributes not
        sealed in the code, a key being fetched) is decided by `one` (default `verify`),
        concurrently. A store fault raises: nothing is answered that was not claimed."""
        if not scans:
            return []
        scene_id = scans[0].scene
        scene = self._gate_scene(gate, scene_id)
        if any(s.scene != scene_id for s in scans):
            raise Forbidden("This gate is registered for another scene")
        one = one or (lambda scan: self.verify(gate, scan))
        now = self._clock.now()
        verified_at = rfc3339(now)
        gate_id = gate.client_id
        names = scene.attributes
        sector = self._sectors.cached(gate_id) or await self._sectors.sector(gate_id)
        slow: list[int] = []
        refused: list[tuple[int, Refused]] = []
        allows: list[tuple[int, Verified, str, dict[str, Any]]] = []
        claims: list[Claim] = []
        codes, cards = self._codes, self._cards
        for i, scan in enumerate(scans):
            if i and not i % BULK_TICK:
                await asyncio.sleep(0)  # other requests of this worker run between chunks
            face = cards if isinstance(scan.credential, CardTap) else codes
            try:
                v = face.check(scan.credential, gate_id, scan.request_id, now, scan.scanned_at)
            except Refused as no:
                if no.verified is not None:  # expired, yet maybe a retry: its own lookup
                    slow.append(i)
                else:
                    refused.append((i, no))
                continue
            except Unavailable:  # a key being fetched: `one` waits for it, boundedly
                slow.append(i)
                continue
            if not scene.permits(v.face, v.region):
                refused.append((i, Refused("scene_not_permitted", v.face, v)))
                continue
            person_id = v.person_id
            attributes = self._local_attributes(v, names) if person_id is not None else None
            if person_id is None or attributes is None:
                slow.append(i)  # a store read of its own first
                continue
            if self._identity.is_suspended(person_id):
                refused.append((i, Refused("revoked", v.face, v)))
                continue
            if sector is None:
                refused.append((i, Refused("scene_not_permitted", v.face, v)))
                continue
            subject = self._keys.pairwise_subject(sector, person_id)
            allows.append((i, v, subject, attributes))
            claims.append(_allow_claim(v, gate_id, scan, now, verified_at, subject,
                                       attributes))
        denied = [(i, no, self._deny_decision(no, gate_id, scans[i], verified_at))
                  for i, no in refused]
        claims.extend(self._deny_claim(d, scans[i], now) for i, _, d in denied)
        slow_done = asyncio.gather(*(one(scans[i]) for i in slow))
        try:
            prevs = await self._claims.claim_many(claims)
        except BaseException:
            slow_done.cancel()
            raise
        out: list[VerifyDecision | None] = [None] * len(scans)
        replayed: list[tuple[int, Refused, VerifyDecision]] = []
        for (i, v, subject, attributes), prev in zip(allows, prevs, strict=False):
            scan = scans[i]
            try:
                first = _first_answer_of(prev, v, gate_id, scan.request_id)
            except Refused as twice:
                replayed.append((i, twice, self._deny_decision(twice, gate_id, scan,
                                                               verified_at)))
                continue
            assert sector is not None and v.person_id is not None
            await self._subject_seen(sector, subject, v.person_id)
            d = _allow_decision(v, gate_id, scan, first or verified_at, subject, attributes)
            self._count(d)
            out[i] = d
        if replayed:  # their records, once per (gate, request id) as `verify` writes them
            await self._claims.claim_many([self._deny_claim(d, scans[i], now)
                                           for i, _, d in replayed])
        for i, why, d in denied + replayed:
            self._denied(d, why, now)
            out[i] = d
        for i, d in zip(slow, await slow_done, strict=True):
            out[i] = d
        log.debug("code.verified_many", scene=scene_id, scans=len(scans),
                  allowed=len(allows) - len(replayed), separately=len(slow))
        assert all(d is not None for d in out)
        return out  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class FirstUse:
    """Who claimed a credential first, and when (a claim's value, docs/records.md)."""

    gate: str
    used_at: str      # RFC 3339: when that gate scanned
    verified_at: str  # RFC 3339: the first answer's verified_at
    request_id: str


def claim_value(gate_id: str, used_at: float, verified_at: str, request_id: str,
                verified: float | None = None) -> str:
    """``gate|used_at|verified_at|request_id`` (request id last: it may hold a ``|``; a gate's
    client id never does). `verified`: the time `verified_at` says, when known — a scan used
    at that very time (an online scan without ``scanned_at``) reuses its text."""
    used = verified_at if used_at == verified else rfc3339(used_at)
    return f"{gate_id}|{used}|{verified_at}|{request_id}"


def parse_claim(value: str) -> FirstUse | None:
    parts = value.split("|", 3)
    if len(parts) != 4:
        return None
    return FirstUse(parts[0], parts[1], parts[2], parts[3])


def _allow_claim(v: Verified, gate_id: str, scan: GateScan, now: float, verified_at: str,
                 subject: str, attributes: dict[str, Any]) -> Claim:
    """Step 5's claim: the credential's single use, valued with who used it and when, and
    the record of this allow."""
    used_at = _scanned_at(scan, v) or now
    record = TransactionRecord(
        new_record_id(now), gate_id, scan.scene, v.face, "allow", "ok", to_ms(used_at),
        to_ms(now), scan.origin, scan.request_id, subject, attributes, _use_hash(v.use))
    return Claim(v.use_key, v.use_ttl_s,
                 claim_value(gate_id, used_at, verified_at, scan.request_id, now),
                 record, v.usable_from)


def _allow_decision(v: Verified, gate_id: str, scan: GateScan, verified_at: str, subject: str,
                    attributes: dict[str, Any]) -> VerifyDecision:
    return VerifyDecision("allow", "ok", v.face, scan.request_id, verified_at, subject,
                          attributes, gate=gate_id, scene=scan.scene,
                          scanned_at=_scanned_at(scan, v), use=v.use)


def _first_answer_of(prev: str | None, v: Verified, gate_id: str,
                     request_id: str) -> str | None:
    """What a claim's answer means: None (this use is the first), the first answer's
    ``verified_at`` (a retry of the same gate's same request), else raises ``replayed``
    naming the first use."""
    if prev is None:
        return None
    first = parse_claim(prev)
    if first is not None and _same(first.gate, gate_id) and \
            _same(first.request_id, request_id):
        return first.verified_at
    raise Refused("replayed", v.face, v, first)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _use_hash(use: UseRef | None) -> bytes | None:
    return credential_hash(use.issuer, use.kid, use.nonce) if use is not None else None


def _scanned_at(scan: GateScan, v: Verified | None) -> float | None:
    """When the gate scanned: what it said, or what the credential attests (a tap)."""
    if scan.scanned_at is not None or v is None:
        return scan.scanned_at
    return v.scanned_at
