"""What a code says (its claims) and a decoded-but-unverified code.

Both faces (渝快码 ``ykm``, 电子社保卡 ``essc``) decode into the same :class:`CodeClaims`, see
docs/code-format.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["MAX_LIFETIME_S", "Alg", "CodeClaims", "DecodedCode", "Face"]

Face = Literal["ykm", "essc"]
Alg = Literal["EdDSA", "ES256", "SM2"]

#: A code lives at most 60 s (CONTRACT.md "Codes"); larger lifetimes are malformed.
MAX_LIFETIME_S: Final = 60


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
