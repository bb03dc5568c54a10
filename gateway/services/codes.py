"""Dynamic codes: 申码/制码 (issue) and 验码 (verify) for both faces (CONTRACT "Codes").

* 渝快码 (ykm): encoded with :mod:`gateway.codec` (``YK1:``, docs/code-format.md §3) and signed
  with the gateway's ``code`` key ring. The 16-byte holder handle is AES-128/256-CTR of the
  16-byte person id under ``DataKeys.code_holder_key`` with the code's 12-byte nonce (padded with
  four zero bytes, NIST SP 800-38A counter block) as IV: no personal data in clear, unlinkable
  across codes (fresh nonce), recovered at the gate side of the gateway without any I/O.
* 电子社保卡 (essc): issued by the e-SSC platform of the holder's region (``ESSC1:``); the
  gateway only relays it. Verification keys come from the trust list.

Verification — 验码 — is the gate decision pipeline's (:mod:`gateway.services.gate`); the
ykm attribute flags byte is written here and read there.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from gateway.authz.datakeys import DataKeys, HolderCipher, SealError
from gateway.authz.keyring import KeyRing
from gateway.authz.tokens import AccessTokenClaims
from gateway.clock import Clock
from gateway.codec import CodeError, Signer, decode, encode_ykm, signer_for
from gateway.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unavailable
from gateway.services.trustlist import TrustList
from gateway.services.upstream import EsscPlatform
from gateway.timefmt import rfc3339

__all__ = [
    "CONCESSIONS",
    "SEALABLE",
    "CodeIdentity",
    "CodeService",
    "IssuedCode",
    "holder_handle",
    "open_attributes",
    "open_holder_handle",
    "seal_attributes",
]

ISSUE_FACES: Final = ("ykm", "essc")


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
    """What issuing codes needs from the identity service (``GateIdentityAdapter`` in
    gateway/services/identity.py provides it)."""

    async def essc_account(self, person_id: str,
                           region: str | None) -> tuple[str, str] | None:
        """(platform holder account id, region) of the person's active e-SSC, if any."""
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


class CodeService:
    """申码 / 制码: fresh codes of either face for a resident (CONTRACT "Codes")."""

    def __init__(self, *, code_ring: Callable[[], KeyRing], data_keys: DataKeys,
                 trust: TrustList, identity: CodeIdentity, essc: EsscPlatform, clock: Clock,
                 code_ttl_s: int = 30, refresh_in_s: int = 20) -> None:
        self._ring = code_ring
        self._keys = data_keys
        self.trust = trust
        self._identity = identity
        self._essc = essc
        self._clock = clock
        self._ttl = code_ttl_s
        self._refresh = refresh_in_s
        self._signers: dict[str, Signer] = {}
        self._holder = data_keys.code_holder

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
        return self.trust.set_essc_keys(await self._essc.code_keys())

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
            try:
                attributes = await self._identity.disclose(person_id, tuple(SEALABLE))
            except NotFound:  # no record: nothing sealed; the gate side asks (and denies)
                attributes = None
            return self.issue_ykm(person_id, attributes)
        if face != "essc":
            raise InvalidRequest("face must be ykm or essc")
        account = await self._identity.essc_account(person_id, region)
        if account is None:
            raise Conflict("No electronic social security card is linked")
        holder, acct_region = account
        code = await self._essc.issue_code(holder, acct_region)
        try:
            claims = decode(code).claims
        except CodeError:
            raise Unavailable("The e-SSC platform returned an unusable code") from None
        now = self._clock.now()
        remaining = max(0, int(claims.expires_at - now))
        return IssuedCode(code, "essc", rfc3339(claims.issued_at), rfc3339(claims.expires_at),
                          min(self._refresh, remaining))
