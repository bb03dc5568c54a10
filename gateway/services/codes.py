"""Dynamic codes: 申码/制码 (issue) and 验码 (verify) for both faces (CONTRACT "Codes").

* 渝快码 (ykm): encoded with :mod:`gateway.codec` (``YK1:``, docs/code-format.md §3) and signed
  with the gateway's ``code`` key ring. The 16-byte holder handle is AES-128/256-CTR of the
  16-byte person id under ``DataKeys.code_holder_key`` with the code's 12-byte nonce (padded with
  four zero bytes, NIST SP 800-38A counter block) as IV: no personal data in clear, unlinkable
  across codes (fresh nonce), recovered at the gate side of the gateway without any I/O.
* 电子社保卡 (essc): issued by the e-SSC platform of the holder's region (``ESSC1:``); the
  gateway only relays it. Verification keys come from the trust list.

Verification (the hot path, issue 7): codec verify (signature, window) → scene policy (face,
e-SSC region) → revocation (in-process view) → ONE Redis round trip: the single-use claim
``SET code:<nonce> <gate>|<request_id>|<verified_at> NX PX <ttl> GET`` issued in the same
event-loop tick as the attribute read, so the Coalescer sends both in one pipeline. The same
gate re-sending the same request id gets the first answer (same ``verified_at``); any other
second use is ``replayed``. One structured log line per verification, never the code string.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import structlog
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from gateway.authz.datakeys import DataKeys, SealError
from gateway.authz.keyring import KeyRing
from gateway.authz.tokens import AccessTokenClaims
from gateway.clock import Clock
from gateway.codec import (
    CodeClaims,
    CodeError,
    Signer,
    decode,
    encode_ykm,
    signer_for,
    verify_code,
)
from gateway.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unavailable
from gateway.ports import ClientStore, SingleUse
from gateway.services.decision import Face, Reason, VerifyDecision
from gateway.services.scenes import SceneCatalogue
from gateway.services.subjects import SubjectSeen
from gateway.services.trustlist import TrustList
from gateway.services.upstream import EsscPlatform

__all__ = [
    "CodeIdentity",
    "CodeService",
    "IssuedCode",
    "holder_handle",
    "open_holder_handle",
    "rfc3339",
]

log = structlog.get_logger("gateway.codes")

ISSUE_FACES: Final = ("ykm", "essc")
#: Idempotent retries are answered for this long after a code expired (the claim's TTL is the
#: code's remaining life + skew + this grace; the record is gone after that).
RETRY_GRACE_S: Final = 30
_CLIENT_CACHE_S: Final = 60.0


_SECOND: list[Any] = [None, ""]  # [whole second, its "YYYY-MM-DDTHH:MM:SS"] (per worker)


def rfc3339(t: float) -> str:
    """UTC, second precision plus milliseconds (RFC 3339 §5.6). Every verification answers
    with one; the date part is formatted once per second."""
    sec = int(t // 1)
    if _SECOND[0] != sec:
        _SECOND[1] = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _SECOND[0] = sec
    ms = min(999, int((t - sec) * 1000))
    return f"{_SECOND[1]}.{ms:03d}Z"


class HolderCipher:
    """AES-CTR keystream for one code: counter blocks ``nonce‖0x00000000`` (the holder handle)
    and ``nonce‖0x00000001`` (its first byte seals the attribute flags). The two blocks are
    encrypted with one reusable AES block encryptor — exactly CTR mode, without building a
    cipher object per code (a measured ~25 µs on the gate path)."""

    def __init__(self, key: bytes) -> None:
        # ECB over distinct counter blocks *is* CTR's keystream; never used on data directly.
        self._block = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305

    def keystream(self, nonce: bytes) -> bytes:
        if len(nonce) != 12:
            raise ValueError("a code nonce is 12 bytes")
        return self._block.update(nonce + b"\x00\x00\x00\x00" + nonce + b"\x00\x00\x00\x01")

    def seal(self, person_id: str, nonce: bytes, flags: int = 0) -> tuple[bytes, int]:
        raw = bytes.fromhex(person_id)
        if len(raw) != 16:
            raise ValueError("a person id is 32 hexadecimal characters")
        ks = self.keystream(nonce)
        return _xor16(raw, ks), flags ^ ks[16]

    def open(self, holder: bytes, nonce: bytes, flags: int = 0) -> tuple[str, int]:
        if len(holder) != 16:
            raise ValueError("a holder handle is 16 bytes")
        ks = self.keystream(nonce)
        return _xor16(holder, ks).hex(), flags ^ ks[16]


def _xor16(data: bytes, keystream: bytes) -> bytes:
    """data (16 bytes) XOR the first 16 keystream bytes, as integers (one C operation)."""
    return (int.from_bytes(data, "big") ^ int.from_bytes(keystream[:16], "big")).to_bytes(
        16, "big")


def holder_handle(key: bytes, person_id: str, nonce: bytes) -> bytes:
    """The ykm holder handle: AES-CTR(person id bytes) with the code nonce as IV."""
    return HolderCipher(key).seal(person_id, nonce)[0]


def open_holder_handle(key: bytes, holder: bytes, nonce: bytes) -> str:
    """The person id inside a (signature-checked) ykm holder handle."""
    return HolderCipher(key).open(holder, nonce)[0]


# The ykm `flags` byte, sealed by the issuer (gates must treat it as opaque): the attributes a
# fare or entry scene may disclose, fixed at issuance (≤ 60 s before the scan), so the gate
# path needs no identity read for them (issue 7). Layout of the clear byte:
#   bit 7   attributes are sealed here (0: ask the identity service)
#   bit 6   adult (18+)
#   bits 0–3 concession category, an index into CONCESSIONS (0 = none)
SEALED: Final = 0x80
ADULT: Final = 0x40
CONCESSIONS: Final = (None, "senior", "disabled", "student", "veteran", "child", "retired")
SEALABLE: Final = frozenset({"concession", "adult"})


def seal_attributes(attributes: dict[str, Any]) -> int:
    """The clear flags byte for these attributes, or 0 when they cannot all be sealed."""
    concession = attributes.get("concession")
    if concession not in CONCESSIONS:
        return 0
    return SEALED | (ADULT if attributes.get("adult") else 0) | CONCESSIONS.index(concession)


def open_attributes(flags: int, names: Sequence[str]) -> dict[str, Any] | None:
    """The named attributes from a clear flags byte; None when they are not all in it."""
    if not flags & SEALED or any(n not in SEALABLE for n in names):
        return None
    index = flags & 0x0F
    if index >= len(CONCESSIONS):
        return None
    out: dict[str, Any] = {}
    for n in names:
        out[n] = CONCESSIONS[index] if n == "concession" else bool(flags & ADULT)
    return out


class CodeIdentity(Protocol):
    """What codes need from the identity service (gateway/services/identity.py provides it as
    ``CodeIdentityAdapter``)."""

    async def essc_account(self, person_id: str,
                           region: str | None) -> tuple[str, str] | None:
        """(platform holder account id, region) of the person's active e-SSC, if any."""
        ...

    async def person_by_essc(self, region: str, holder_account_id: str) -> str | None:
        """The person id linked (actively) to this e-SSC holder account, if any."""
        ...

    def is_revoked(self, person_id: str, face: str, region: str | None) -> bool:
        """In-process revocation view (no I/O on the hot path)."""
        ...

    async def disclose(self, person_id: str, names: Sequence[str]) -> dict[str, Any]:
        """Exactly the named attributes (docs/scenes.md vocabulary), nothing else."""
        ...


@dataclass(frozen=True)
class IssuedCode:
    code: str
    face: str
    issued_at: str
    expires_at: str
    refresh_in: int

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "face": self.face, "issued_at": self.issued_at,
                "expires_at": self.expires_at, "refresh_in": self.refresh_in}


class _ClientCache:
    """Gate client records (sector) cached in-process: the gate token carries only client id
    and scene; the sector changes only by operator action."""

    def __init__(self, store: ClientStore, now: Callable[[], float]) -> None:
        self._store = store
        self._now = now
        self._cache: dict[str, tuple[float, str]] = {}

    def cached(self, client_id: str) -> str | None:
        """The sector of a gate read in the last minute, without awaiting (else None)."""
        hit = self._cache.get(client_id)
        if hit is not None and hit[0] > self._now():
            return hit[1]
        return None

    async def sector(self, client_id: str) -> str | None:
        cached = self.cached(client_id)
        if cached is not None:
            return cached
        now = self._now()
        client = await self._store.get(client_id)
        if client is None or client.disabled:
            self._cache.pop(client_id, None)
            return None
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[client_id] = (now + _CLIENT_CACHE_S, client.sector)
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


class CodeService:
    def __init__(self, *, code_ring: Callable[[], KeyRing], data_keys: DataKeys,
                 single_use: SingleUse, scenes: SceneCatalogue, trust: TrustList,
                 clients: ClientStore, clock: Clock, code_ttl_s: int = 30,
                 max_skew_s: int = 5, refresh_in_s: int = 20,
                 identity: CodeIdentity | None = None,
                 essc: EsscPlatform | None = None) -> None:
        self._ring = code_ring
        self._keys = data_keys
        self._once = single_use
        self.scenes = scenes
        self.trust = trust
        self._clients = _ClientCache(clients, clock.now)
        self._clock = clock
        self._ttl = code_ttl_s
        self._skew = max_skew_s
        self._refresh = refresh_in_s
        self.identity = identity
        self.essc = essc
        self.subject_seen: SubjectSeen | None = None  # the consent feature's subject index
        self._signers: dict[str, Signer] = {}
        self._holder = HolderCipher(data_keys.code_holder_key)
        self._deny_lines = LineBudget()

    # ---------------------------------------------------------------- 申码 / 制码 (issue)
    def person_of(self, resident: AccessTokenClaims) -> str:
        """The internal person id sealed in a resident token (bound to its client id)."""
        if resident.sealed_person is None:
            raise Forbidden("This token carries no resident")
        try:
            return self._keys.open_person_id(resident.sealed_person, resident.client_id)
        except SealError:
            raise Forbidden("This token carries no resident") from None

    async def refresh_essc_keys(self) -> int:
        """Fetch the e-SSC platforms' code keys into the trust list (start-up and periodic)."""
        if self.essc is None:
            return 0
        return self.trust.set_essc_keys(await self.essc.code_keys())

    def _signer(self) -> Signer:
        key = self._ring().current()
        s = self._signers.get(key.kid)
        if s is None:
            s = signer_for(key.private_key)
            if s.kid != key.kid:  # the ring and the codec derive kids the same way
                raise RuntimeError("code key id derivation mismatch")
            self._signers = {key.kid: s}
        return s

    def issue_ykm(self, person_id: str, attributes: dict[str, Any] | None = None) -> IssuedCode:
        now = int(self._clock.now())
        nonce = secrets.token_bytes(12)
        holder, flags = self._holder.seal(person_id, nonce,
                                          seal_attributes(attributes or {}))
        code = encode_ykm(holder=holder, issued_at=now, lifetime_s=self._ttl,
                          signer=self._signer(), nonce=nonce, flags=flags)
        return IssuedCode(code, "ykm", rfc3339(now), rfc3339(now + self._ttl),
                          min(self._refresh, self._ttl))

    async def issue_code(self, person_id: str, face: str = "ykm",
                         client: str | None = None, region: str | None = None) -> IssuedCode:
        """A fresh code of ``face`` for the person; ``client`` is the calling app (audit)."""
        if face == "ykm":
            attributes = None
            if self.identity is not None:
                try:
                    attributes = await self.identity.disclose(person_id, tuple(SEALABLE))
                except NotFound:  # no record: nothing sealed; the gate side asks (and denies)
                    attributes = None
            return self.issue_ykm(person_id, attributes)
        if face != "essc":
            raise InvalidRequest("face must be ykm or essc")
        if self.identity is None or self.essc is None:
            raise Unavailable("e-SSC codes are not available on this gateway")
        account = await self.identity.essc_account(person_id, region)
        if account is None:
            raise Conflict("No electronic social security card is linked")
        holder, acct_region = account
        code = await self.essc.issue_code(holder, acct_region)
        try:
            claims = decode(code).claims
        except CodeError:
            raise Unavailable("The e-SSC platform returned an unusable code") from None
        now = self._clock.now()
        remaining = max(0, int(claims.expires_at - now))
        return IssuedCode(code, "essc", rfc3339(claims.issued_at), rfc3339(claims.expires_at),
                          min(self._refresh, remaining))

    # ---------------------------------------------------------------- 验码 (verify)
    def _deny(self, reason: Reason, face: Face | None, request_id: str, verified_at: str,
              scene: str) -> VerifyDecision:
        suppressed = self._deny_lines.take(reason, self._clock.now())
        if suppressed is not None:
            log.info("code.verified", face=face, decision="deny", reason=reason, scene=scene,
                     suppressed=suppressed)
        return VerifyDecision("deny", reason, face, request_id, verified_at)

    async def verify_code(self, code: str, scene_id: str, gate: AccessTokenClaims,
                          request_id: str, scanned_at: float | None = None) -> VerifyDecision:
        now = self._clock.now()
        verified_at = rfc3339(now)
        scene = self.scenes.get(scene_id)
        if scene is None:
            raise InvalidRequest("Unknown scene")
        try:
            claims = verify_code(code, self.trust.lookup, now, self._skew)
        except CodeError as exc:
            if exc.reason == "expired":
                retry = await self._expired_retry(code, gate.client_id, request_id, scene_id)
                if retry is not None:
                    return retry
            face: Face | None = None
            if exc.reason != "malformed":
                face = _face_of(code)
            return self._deny(exc.reason, face, request_id, verified_at, scene_id)
        except (ValueError, TypeError, OverflowError):
            return self._deny("malformed", None, request_id, verified_at, scene_id)
        face = claims.face
        if not scene.permits(claims.face, claims.region):
            return self._deny("scene_not_permitted", face, request_id, verified_at, scene_id)
        # the ykm person and a known gate's sector need no I/O: no coroutine for them
        person_id, sealed = self._ykm_person(claims) if face == "ykm" else \
            await self._person(claims)
        if person_id is None:
            return self._deny("revoked", face, request_id, verified_at, scene_id)
        sector = self._clients.cached(gate.client_id) or \
            await self._clients.sector(gate.client_id)
        if sector is None:
            return self._deny("scene_not_permitted", face, request_id, verified_at, scene_id)

        ttl = claims.expires_at + self._skew - now + RETRY_GRACE_S
        claim = self._once.claim(f"code:{claims.nonce.hex()}", max(1.0, ttl),
                                 f"{gate.client_id}|{request_id}|{verified_at}")
        attributes: dict[str, Any] = {}
        from_code = open_attributes(sealed, scene.attributes) if scene.attributes else None
        if from_code is not None:
            attributes = from_code
            prev = await claim
        elif scene.attributes and self.identity is not None:
            prev, disclosed = await asyncio.gather(
                claim, self.identity.disclose(person_id, scene.attributes),
                return_exceptions=True)
            if isinstance(prev, BaseException):
                raise prev
            if isinstance(disclosed, NotFound):  # the person record is gone
                return self._deny("revoked", face, request_id, verified_at, scene_id)
            if isinstance(disclosed, BaseException):
                raise disclosed
            attributes = {k: v for k, v in disclosed.items() if k in scene.attributes}
        else:
            prev = await claim
        if prev is not None:
            first = _same_request(prev, gate.client_id, request_id)
            if first is None:
                return self._deny("replayed", face, request_id, verified_at, scene_id)
            verified_at = first
        # An allow is counted in gateway_verify_decisions_total; a line per allow would say no
        # more (no gate, no person) at thousands a second, so it is a debug line. Denies stay info.
        log.debug("code.verified", face=face, decision="allow", reason="ok", scene=scene_id,
                  retry=prev is not None)
        return VerifyDecision("allow", "ok", face, request_id, verified_at,
                              subject=await self._subject(sector, person_id),
                              attributes=attributes)

    async def _subject(self, sector: str, person_id: str) -> str:
        subject = self._keys.pairwise_subject(sector, person_id)
        if self.subject_seen is not None:
            await self.subject_seen(sector, subject, person_id)
        return subject

    async def _person(self, claims: CodeClaims) -> tuple[str | None, int]:
        """The person behind a verified code (None when unknown or revoked) and the clear
        attribute flags (0 unless sealed by us in a ykm code).

        ykm: decrypt the holder handle and flags (no I/O). essc: the actively linked
        credential (one store read). Then the identity service's in-process revocation view."""
        if claims.face == "ykm":
            return self._ykm_person(claims)
        if self.identity is None or claims.region is None:
            return None, 0
        try:
            holder = claims.holder.decode("ascii")
        except UnicodeDecodeError:
            return None, 0
        pid = await self.identity.person_by_essc(claims.region, holder)
        if pid is None or self.identity.is_revoked(pid, claims.face, claims.region):
            return None, 0
        return pid, 0

    def _ykm_person(self, claims: CodeClaims) -> tuple[str | None, int]:
        """`_person` for a ykm code: the holder handle and flags decrypted, then the
        revocation view (no I/O)."""
        pid, flags = self._holder.open(claims.holder, claims.nonce, claims.flags)
        if self.identity is not None and self.identity.is_revoked(pid, claims.face,
                                                                  claims.region):
            return None, 0
        return pid, flags

    async def _expired_retry(self, code: str, client_id: str, request_id: str,
                             scene_id: str) -> VerifyDecision | None:
        """A gate retrying (same request id) just after the code expired gets its first answer
        as long as the claim record lives (the signature was already checked by the codec:
        ``expired`` is only reported for a correctly signed code)."""
        try:
            claims = decode(code).claims
        except CodeError:
            return None
        prev = await self._once.peek(f"code:{claims.nonce.hex()}")
        if prev is None:
            return None
        first = _same_request(prev, client_id, request_id)
        if first is None:
            return None
        return await self._replay_answer(claims, client_id, request_id, first, scene_id)

    async def _replay_answer(self, claims: CodeClaims, client_id: str, request_id: str,
                             verified_at: str, scene_id: str) -> VerifyDecision | None:
        scene = self.scenes.get(scene_id)
        person_id, sealed = await self._person(claims)
        sector = await self._clients.sector(client_id)
        if scene is None or person_id is None or sector is None:
            return None
        attributes: dict[str, Any] = {}
        from_code = open_attributes(sealed, scene.attributes) if scene.attributes else None
        if from_code is not None:
            attributes = from_code
        elif scene.attributes and self.identity is not None:
            try:
                got = await self.identity.disclose(person_id, scene.attributes)
            except NotFound:
                return None
            attributes = {k: v for k, v in got.items() if k in scene.attributes}
        log.debug("code.verified", face=claims.face, decision="allow", reason="ok",
                  scene=scene_id, retry=True)
        return VerifyDecision("allow", "ok", claims.face, request_id, verified_at,
                              subject=await self._subject(sector, person_id),
                              attributes=attributes)


def _same_request(prev: str, client_id: str, request_id: str) -> str | None:
    """The first answer's verified_at when ``prev`` was stored by this gate for this request."""
    gate, sep, rest = prev.partition("|")
    rid, sep2, verified_at = rest.rpartition("|")
    if not (sep and sep2):
        return None
    same_gate = hmac.compare_digest(gate.encode(), client_id.encode())
    same_rid = hmac.compare_digest(rid.encode(), request_id.encode())
    return verified_at if same_gate and same_rid else None


def _face_of(code: str) -> Face | None:
    try:
        return decode(code).claims.face
    except CodeError:
        return None

