"""电子社保卡 (essc) code format ``ESSC1:``, issued by an e-SSC platform with its own key.

Spec: docs/code-format.md §4. Binary::

    off   len  field
      0     1  N = payload length (uint8)
      1     N  payload: MessagePack array of 7 elements
               [version, region (str, 2 upper-case letters), kid (str),
                holder (bin, 1..24), iat (uint, seconds), lifetime (uint, 1..60), nonce (bin, 12)]
    1+N    64  signature, raw r || s, over ASCII "ESSC1:" || bytes 0..N

``version`` names the signature algorithm: 1 = ES256, 2 = SM2 (SM2 with SM3, default
distinguishing identifier; the layout is otherwise the same).

The code string is ``"ESSC1:" + Base45(binary)`` (RFC 9285); issuer is ``essc:<region>``.
"""

from __future__ import annotations

import re
import secrets
from typing import Any, Final

import msgpack

from .base45 import Base45Error, b45decode, b45encode
from .claims import MAX_LIFETIME_S, Alg, CodeClaims, DecodedCode
from .errors import CodeError
from .keys import KID_RE, SIGNATURE_LEN, Signer

__all__ = ["MAX_HOLDER_LEN", "NONCE_LEN", "PREFIX", "EsscFormat", "encode_essc"]

PREFIX: Final = "ESSC1:"
VERSION: Final = 1
_VERSION_TO_ALG: Final[dict[int, Alg]] = {1: "ES256", 2: "SM2"}
_ALG_TO_VERSION: Final[dict[str, int]] = {"ES256": 1, "SM2": 2}
MAX_HOLDER_LEN: Final = 24
NONCE_LEN: Final = 12
_PREFIX_BYTES: Final = PREFIX.encode("ascii")
_REGION_RE: Final = re.compile(r"[A-Z]{2}")
_FIELDS: Final = 7
#: Upper bound of a well-formed code string; longer input is refused before any parsing.
MAX_CODE_LEN: Final = len(PREFIX) + (1 + 255 + SIGNATURE_LEN + 1) // 2 * 3


def encode_essc(
    *,
    region: str,
    holder: bytes,
    issued_at: int,
    lifetime_s: int,
    signer: Signer,
    nonce: bytes | None = None,
) -> str:
    """Issue an e-SSC code as the ``region`` platform would (sandbox and tests).

    The signer must be ES256 or SM2; its ``kid`` is the platform's key id as listed in the
    trust list.
    Raises ``CodeError("malformed")`` for out-of-range arguments, ``ValueError`` for a bad signer.
    """
    if type(issued_at) is not int or not 0 <= issued_at <= 0xFFFFFFFF:
        raise CodeError("malformed")
    if type(lifetime_s) is not int or not 1 <= lifetime_s <= MAX_LIFETIME_S:
        raise CodeError("malformed")
    if nonce is None:
        nonce = secrets.token_bytes(NONCE_LEN)
    if not isinstance(region, str) or _REGION_RE.fullmatch(region) is None:
        raise CodeError("malformed")
    if not 1 <= len(holder) <= MAX_HOLDER_LEN or len(nonce) != NONCE_LEN:
        raise CodeError("malformed")
    version = _ALG_TO_VERSION.get(signer.alg)
    if version is None:
        raise ValueError("e-SSC codes are signed with ES256 or SM2")
    if KID_RE.fullmatch(signer.kid) is None:
        raise ValueError("invalid signer kid")
    payload = msgpack.packb(
        [version, region, signer.kid, bytes(holder), issued_at, lifetime_s, bytes(nonce)],
        use_bin_type=True,
    )
    signed = _PREFIX_BYTES + bytes((len(payload),)) + payload
    signature = signer.sign(signed)
    if len(signature) != SIGNATURE_LEN:
        raise ValueError("signer returned a signature of the wrong length")
    return PREFIX + b45encode(signed[len(_PREFIX_BYTES) :] + signature)


def _is_uint(value: Any, upper: int) -> bool:
    return type(value) is int and 0 <= value <= upper


class EsscFormat:
    """Decoder for ``ESSC1:`` codes (registered in :data:`gateway.codec.registry.FORMATS`)."""

    prefix: Final = PREFIX
    face: Final = "essc"

    def decode(self, code: str) -> DecodedCode:
        if len(code) > MAX_CODE_LEN:
            raise CodeError("malformed")
        try:
            raw = b45decode(code[len(PREFIX) :])
        except Base45Error:
            raise CodeError("malformed") from None
        if not raw:
            raise CodeError("malformed")
        n = raw[0]
        if len(raw) != 1 + n + SIGNATURE_LEN:
            raise CodeError("malformed")
        try:
            fields = msgpack.unpackb(
                raw[1 : 1 + n],
                use_list=True,
                raw=False,
                strict_map_key=True,
            )
        except (ValueError, TypeError, msgpack.UnpackException):
            # msgpack signals bad input with ValueError subclasses (ExtraData, FormatError,
            # StackError, UnicodeDecodeError) and UnpackException.
            raise CodeError("malformed") from None
        if type(fields) is not list or len(fields) != _FIELDS:
            raise CodeError("malformed")
        version, region, kid, holder, iat, lifetime_s, nonce = fields
        alg = _VERSION_TO_ALG.get(version) if type(version) is int else None
        if (
            alg is None
            or type(region) is not str
            or _REGION_RE.fullmatch(region) is None
            or type(kid) is not str
            or KID_RE.fullmatch(kid) is None
            or type(holder) is not bytes
            or not 1 <= len(holder) <= MAX_HOLDER_LEN
            or not _is_uint(iat, 0xFFFFFFFF)
            or not _is_uint(lifetime_s, MAX_LIFETIME_S)
            or lifetime_s < 1
            or type(nonce) is not bytes
            or len(nonce) != NONCE_LEN
        ):
            raise CodeError("malformed")
        claims = CodeClaims(
            face="essc",
            issuer="essc:" + region,
            region=region,
            kid=kid,
            alg=alg,
            holder=holder,
            issued_at=iat,
            lifetime_s=lifetime_s,
            nonce=nonce,
            flags=0,
        )
        return DecodedCode(
            claims=claims, signed=_PREFIX_BYTES + raw[: 1 + n], signature=raw[1 + n :]
        )
