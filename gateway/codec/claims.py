"""What a code says (its claims) and a decoded-but-unverified code.

Both faces (渝快码 ``ykm``, 电子社保卡 ``essc``) decode into the same :class:`CodeClaims`, see
docs/code-format.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, Protocol

__all__ = ["MAX_LIFETIME_S", "Alg", "CodeClaims", "DecodedCode", "DeviceClaims", "DeviceProof",
           "Face"]

Face = Literal["ykm", "essc"]
Alg = Literal["EdDSA", "ES256", "SM2"]

#: A code lives at most 60 s (CONTRACT.md "Codes"); larger lifetimes are malformed.
MAX_LIFETIME_S: Final = 60


@dataclass(frozen=True, slots=True)
class DeviceClaims:
    """What a device-bound code (``YK2:``, docs/code-format.md §10) adds: the device
    certificate's serial and window, the device key, and the code's per-device counter."""

    serial: bytes
    counter: int
    alg: str
    key: bytes
    not_before: int
    not_after: int


@dataclass(frozen=True, slots=True)
class CodeClaims:
    """The signed content of a code.

    ``issuer`` is ``"ykm"`` for 渝快码 codes and ``"essc:<region>"`` for e-SSC codes;
    ``kid`` is 8 lower-case hex digits for ykm (derived, see keys.derive_kid) and the
    platform's own key id for essc. ``holder`` is opaque to the codec.
    """

    face: Face
    issuer: str
    region: str | None
    kid: str
    alg: Alg
    holder: bytes
    issued_at: int
    lifetime_s: int
    nonce: bytes
    flags: int
    #: ``YK2:`` only; then ``nonce`` is ``serial || counter`` (the single-use key) and
    #: ``kid``/``alg`` name the key that signed the device certificate.
    device: DeviceClaims | None = None

    @property
    def holder_iv(self) -> bytes:
        """The 12 bytes the issuer's holder/flags keystream starts from: the code nonce for
        ``YK1:``, the certificate serial for ``YK2:`` (its holder is sealed once, at
        enrolment)."""
        return self.device.serial if self.device is not None else self.nonce

    @property
    def expires_at(self) -> int:
        """Last second (inclusive, before clock skew) at which the code is valid."""
        return self.issued_at + self.lifetime_s


@dataclass(frozen=True, slots=True)
class DecodedCode:
    """A syntactically valid code whose signature has NOT been checked yet.

    ``signed`` is the exact signature input (ASCII prefix + binary before the signature);
    ``signature`` is 64 raw bytes (Ed25519, or ES256/SM2 ``r || s``).
    """

    claims: CodeClaims
    signed: bytes
    signature: bytes
    #: ``YK2:``: the device's signature over the code, checked after the issuer's
    #: signature over the certificate (``signed``/``signature`` above).
    device: DeviceProof | None = None


class DeviceProof(Protocol):
    """The second link of a ``YK2:`` chain: the certificate's device key over the code."""

    @property
    def signed_at(self) -> int:
        """When the issuer signed the certificate (its not-before): the trust-list key must
        have been valid then."""
        ...

    def verify(self) -> bool:
        """Whether the device signature verifies; never raises on a bad signature."""
        ...
