"""渝快码 (ykm) code format ``YK1:``, issued by this gateway. Spec: docs/code-format.md §3.

Binary (big-endian), 40 bytes signed content then a 64-byte signature::

    off len field
      0   1 version      = 1
      1   1 alg          1 = EdDSA (Ed25519), 2 = ES256, 3 = SM2 (SM2 with SM3)
      2   4 kid          SHA-256(raw public key)[:4]
      6  16 holder       opaque holder handle
     22   4 issued_at    uint32, Unix seconds
     26   1 lifetime_s   1..60
     27  12 nonce        random
     39   1 flags        policy flags (opaque to the codec)
     40  64 signature    over ASCII "YK1:" || bytes 0..39

The code string is ``"YK1:" + Base45(binary)`` (RFC 9285).
"""

from __future__ import annotations

import secrets
import struct
from typing import Final

from .base45 import Base45Error, b45decode, b45encode
from .claims import MAX_LIFETIME_S, Alg, CodeClaims, DecodedCode
from .errors import CodeError
from .keys import SIGNATURE_LEN, Signer

__all__ = ["HOLDER_LEN", "ISSUER_ALGS", "NONCE_LEN", "PREFIX", "YkmFormat", "check_sealed",
           "encode_ykm", "issuer_fields"]

PREFIX: Final = "YK1:"
VERSION: Final = 1
HOLDER_LEN: Final = 16
NONCE_LEN: Final = 12
ISSUER: Final = "ykm"
_PREFIX_BYTES: Final = PREFIX.encode("ascii")
_BODY: Final = struct.Struct(">BB4s16sIB12sB")
BODY_LEN: Final = _BODY.size  # 40
BINARY_LEN: Final = BODY_LEN + SIGNATURE_LEN  # 104
#: Base45 length of the binary: 3 characters per 2 bytes.
CODE_LEN: Final = len(PREFIX) + BINARY_LEN // 2 * 3  # 160
#: The issuer's signature algorithm ids (YK1 codes and device certificates, §3 and §10.2).
ISSUER_ALGS: Final[dict[int, Alg]] = {1: "EdDSA", 2: "ES256", 3: "SM2"}
_ALG_TO_ID: Final[dict[str, int]] = {v: k for k, v in ISSUER_ALGS.items()}


def issuer_fields(signer: Signer, role: str) -> tuple[int, bytes]:
    """(algorithm id, 4-byte kid) of a code-key signer, as YK1 codes and device certificates
    carry them. ``ValueError`` for an algorithm this format does not know or a kid that is not
    a derived 8-hex-digit one (``role`` names the signer in the message)."""
    alg_id = _ALG_TO_ID.get(signer.alg)
    if alg_id is None:
        raise ValueError("unsupported signer algorithm")
    try:
        kid = bytes.fromhex(signer.kid)
    except ValueError:
        raise ValueError(f"a {role} signer needs a derived 8-hex-digit kid") from None
    if len(kid) != 4 or signer.kid != kid.hex():
        raise ValueError(f"a {role} signer needs a derived 8-hex-digit kid")
    return alg_id, kid


def check_sealed(holder: bytes, flags: int) -> None:
    """The sealed holder handle and its flags byte (§3): ``CodeError("malformed")`` unless
    16 bytes and 0..255."""
    if len(holder) != HOLDER_LEN or type(flags) is not int or not 0 <= flags <= 0xFF:
        raise CodeError("malformed")


def _check_common(issued_at: int, lifetime_s: int) -> None:
    if type(issued_at) is not int or not 0 <= issued_at <= 0xFFFFFFFF:
        raise CodeError("malformed")
    if type(lifetime_s) is not int or not 1 <= lifetime_s <= MAX_LIFETIME_S:
        raise CodeError("malformed")


def encode_ykm(
    *,
    holder: bytes,
    issued_at: int,
    lifetime_s: int,
    signer: Signer,
    flags: int = 0,
    nonce: bytes | None = None,
) -> str:
    """Issue a 渝快码 code. ``nonce`` defaults to 12 fresh random bytes (tests pin it).

    Raises ``CodeError("malformed")`` for out-of-range arguments (lifetime > 60 s included) and
    ``ValueError`` for a signer whose kid is not a derived 4-byte kid.
    """
    _check_common(issued_at, lifetime_s)
    if nonce is None:
        nonce = secrets.token_bytes(NONCE_LEN)
    if len(nonce) != NONCE_LEN:
        raise CodeError("malformed")
    check_sealed(holder, flags)
    alg_id, kid = issuer_fields(signer, "ykm")
    body = _BODY.pack(
        VERSION, alg_id, kid, bytes(holder), issued_at, lifetime_s, bytes(nonce), flags
    )
    signature = signer.sign(_PREFIX_BYTES + body)
    if len(signature) != SIGNATURE_LEN:
        raise ValueError("signer returned a signature of the wrong length")
    return PREFIX + b45encode(body + signature)


class YkmFormat:
    """Decoder for ``YK1:`` codes (registered in :data:`gateway.codec.registry.FORMATS`)."""

    prefix: Final = PREFIX
    face: Final = "ykm"

    def decode(self, code: str) -> DecodedCode:
        if len(code) != CODE_LEN:
            raise CodeError("malformed")
        try:
            raw = b45decode(code[len(PREFIX) :])
        except Base45Error:
            raise CodeError("malformed") from None
        version, alg_id, kid, holder, issued_at, lifetime_s, nonce, flags = _BODY.unpack_from(
            raw
        )
        alg = ISSUER_ALGS.get(alg_id)
        if version != VERSION or alg is None or not 1 <= lifetime_s <= MAX_LIFETIME_S:
            raise CodeError("malformed")
        claims = CodeClaims(
            face="ykm",
            issuer=ISSUER,
            region=None,
            kid=kid.hex(),
            alg=alg,
            holder=holder,
            issued_at=issued_at,
            lifetime_s=lifetime_s,
            nonce=nonce,
            flags=flags,
        )
        return DecodedCode(
            claims=claims, signed=_PREFIX_BYTES + raw[:BODY_LEN], signature=raw[BODY_LEN:]
        )
