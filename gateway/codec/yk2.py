"""Device-bound 渝快码 ``YK2:``, made by the phone alone. Spec: docs/code-format.md §10.

Binary (big-endian)::

    off   len  field
      0     C  certificate   a device certificate (gateway/codec/device.py), C = 140 or 141
      C     4  issued_at     uint32, Unix seconds, the phone's clock
    C+4     1  lifetime_s    1..60
    C+5     4  counter       uint32, per device, strictly increasing on the phone
    C+9    64  signature     the DEVICE key's, over ASCII "YK2:" || bytes 0 .. C+9

The code string is ``"YK2:" + Base45(binary)``. Face ``ykm``, issuer ``ykm``; ``kid``/``alg``
are the certificate issuer's. The single-use key (``nonce``) is ``serial || counter``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from .base45 import Base45Error, b45decode, b45encode
from .claims import MAX_LIFETIME_S, CodeClaims, DecodedCode, DeviceClaims
from .device import (
    MAX_DEVICE_KEY_LEN,
    DeviceCertificate,
    DeviceVerifier,
    certificate_length,
    certificate_size,
    parse_certificate,
)
from .errors import CodeError
from .keys import SIGNATURE_LEN, Signer

__all__ = ["MAX_CODE_LEN", "PREFIX", "Yk2Format", "encode_yk2"]

PREFIX: Final = "YK2:"
_PREFIX_BYTES: Final = PREFIX.encode("ascii")
_FIELDS: Final = struct.Struct(">IBI")  # issued_at, lifetime_s, counter
_MAX_CERT: Final = certificate_size(MAX_DEVICE_KEY_LEN)
#: Upper bound of a well-formed string (a device key of the longest length allowed).
MAX_CODE_LEN: Final = len(PREFIX) + (_MAX_CERT + _FIELDS.size + SIGNATURE_LEN + 1) // 2 * 3


def encode_yk2(
    *,
    certificate: bytes,
    issued_at: int,
    lifetime_s: int,
    counter: int,
    signer: Signer,
) -> str:
    """Make a ``YK2:`` code on the phone: ``signer`` holds the certified device key.

    Raises ``CodeError("malformed")`` for a certificate that does not parse or out-of-range
    fields, ``ValueError`` when the signer's algorithm is not the certificate's device alg or
    (where the signer shows it) its public key is not the certified one.
    """
    cert = parse_certificate(certificate)
    if type(issued_at) is not int or not 0 <= issued_at <= 0xFFFFFFFF:
        raise CodeError("malformed")
    if type(lifetime_s) is not int or not 1 <= lifetime_s <= MAX_LIFETIME_S:
        raise CodeError("malformed")
    if type(counter) is not int or not 0 <= counter <= 0xFFFFFFFF:
        raise CodeError("malformed")
    if signer.alg != cert.device_alg:
        raise ValueError("the signer's algorithm is not the certificate's device algorithm")
    signed = _PREFIX_BYTES + cert.raw + _FIELDS.pack(issued_at, lifetime_s, counter)
    signature = signer.sign(signed)
    if len(signature) != SIGNATURE_LEN:
        raise ValueError("signer returned a signature of the wrong length")
    return PREFIX + b45encode(signed[len(_PREFIX_BYTES):] + signature)


@dataclass(frozen=True, slots=True)
class _DeviceProof:
    cert: DeviceCertificate
    signed: bytes
    signature: bytes

    @property
    def signed_at(self) -> int:
        return self.cert.not_before

    def verify(self) -> bool:
        verifier: DeviceVerifier = self.cert.verifier()
        return verifier(self.signed, self.signature)


class Yk2Format:
    """Decoder for ``YK2:`` codes (registered in :data:`gateway.codec.registry.FORMATS`)."""

    prefix: Final = PREFIX
    face: Final = "ykm"

    def decode(self, code: str) -> DecodedCode:
        if len(code) > MAX_CODE_LEN:
            raise CodeError("malformed")
        try:
            raw = b45decode(code[len(PREFIX):])
        except Base45Error:
            raise CodeError("malformed") from None
        n = certificate_length(raw)
        if len(raw) != n + _FIELDS.size + SIGNATURE_LEN:
            raise CodeError("malformed")
        cert = parse_certificate(raw[:n])
        issued_at, lifetime_s, counter = _FIELDS.unpack_from(raw, n)
        if not 1 <= lifetime_s <= MAX_LIFETIME_S:
            raise CodeError("malformed")
        body_end = n + _FIELDS.size
        claims = CodeClaims(
            face="ykm",
            issuer="ykm",
            region=None,
            kid=cert.kid,
            alg=cert.alg,
            holder=cert.holder,
            issued_at=issued_at,
            lifetime_s=lifetime_s,
            nonce=cert.serial + counter.to_bytes(4, "big"),
            flags=cert.flags,
            device=DeviceClaims(serial=cert.serial, counter=counter, alg=cert.device_alg,
                                key=cert.device_key, not_before=cert.not_before,
                                not_after=cert.not_after),
        )
        proof = _DeviceProof(cert, _PREFIX_BYTES + raw[:body_end], raw[body_end:])
        return DecodedCode(claims=claims, signed=cert.signed, signature=cert.signature,
                           device=proof)
