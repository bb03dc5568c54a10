"""Device certificates: the gateway certifies a key held on the phone (docs/code-format.md §10).

Two levels of keys, as transit-code systems and ISO/IEC 18013-5 mobile licences do it: the
gateway's code key ring (the ``ykm`` keys of the trust list) signs a short-lived certificate
for a device public key; the phone signs each ``YK2:`` code itself with the device key. A gate
verifies the chain trust-list key → certificate → code with no network.

Binary (big-endian), ``K`` = the device key's length for its algorithm::

    off   len  field
      0     1  version       = 1
      1     1  alg           issuer signature algorithm (1 = EdDSA, 2 = ES256), as YK1:
      2     4  kid           issuer key id, SHA-256(raw issuer public key)[:4]
      6     1  device_alg    1 = EdDSA (K = 32, raw Ed25519), 2 = ES256 (K = 33, compressed SEC1)
      7     K  device_key
    7+K    12  serial        random, unique per certificate; also the holder keystream IV
   19+K    16  holder        sealed holder handle (as YK1:, IV = serial)
   35+K     1  flags         sealed fare flags (as YK1:)
   36+K     4  not_before    uint32, Unix seconds
   40+K     4  not_after     uint32, not_before < not_after <= not_before + 86400
   44+K    64  signature     issuer's, over ASCII "YKDC1:" || bytes 0 .. 44+K

The ``"YKDC1:"`` label keeps a certificate signature apart from a ``YK1:`` code signature made
by the same key (each covers its own ASCII label first).

Device algorithms are a table (:data:`DEVICE_ALGS`) keyed by their id byte; another algorithm
(SM2) is one more :class:`DeviceAlgorithm` passed to :func:`register_device_alg`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import nacl.exceptions
import nacl.signing
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from .claims import Alg
from .errors import CodeError
from .keys import SIGNATURE_LEN, Signer
from .sm2 import Sm2PublicKey, compress_point, decompress_point
from .ykm import ISSUER_ALGS, check_sealed, issuer_fields

__all__ = [
    "CERT_CONTEXT",
    "DEVICE_ALGS",
    "DEVICE_DENY_LIST_TYP",
    "ISSUER_ALGS",
    "MAX_CERT_TTL_S",
    "MAX_DEVICE_KEY_LEN",
    "SERIAL_LEN",
    "DeviceAlgorithm",
    "DeviceCertificate",
    "DeviceVerifier",
    "certificate_length",
    "certificate_size",
    "device_alg",
    "device_key_fingerprint",
    "encode_certificate",
    "normalise_device_key",
    "parse_certificate",
    "register_device_alg",
]

VERSION: Final = 1
CERT_CONTEXT: Final = b"YKDC1:"
#: ``typ`` of the signed device deny-list (docs/devices.md), beside the card deny-list's.
DEVICE_DENY_LIST_TYP: Final = "device-deny-list+jwt"
MAX_CERT_TTL_S: Final = 86400
SERIAL_LEN: Final = 12
#: A registered device algorithm's key is at most this long (an uncompressed P-256 point).
MAX_DEVICE_KEY_LEN: Final = 65
_HEAD: Final = struct.Struct(">BB4sB")  # version, alg, kid, device_alg
_TAIL: Final = struct.Struct(">12s16sBII")  # serial, holder, flags, not_before, not_after
_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


DeviceVerifier = Callable[[bytes, bytes], bool]
"""``verify(data, signature) -> bool`` for one device key; never raises on a bad signature."""


@dataclass(frozen=True, slots=True)
class DeviceAlgorithm:
    """One device key algorithm: its id byte, its name (as the API and JWKs spell it), the
    length of the key as carried in a certificate, and how to build a verifier from it.

    ``normalise`` turns the key forms an app may send at enrolment into the certificate form
    (raising ``ValueError`` for anything else, including an invalid point)."""

    alg_id: int
    name: str
    key_len: int
    verifier: Callable[[bytes], DeviceVerifier]
    normalise: Callable[[bytes], bytes]


def _ed25519_verifier(raw: bytes) -> DeviceVerifier:
    vk = nacl.signing.VerifyKey(raw)

    def verify(data: bytes, signature: bytes) -> bool:
        if len(signature) != SIGNATURE_LEN:
            return False
        try:
            vk.verify(data, signature)
        except nacl.exceptions.BadSignatureError:
            return False
        return True

    return verify


def _ed25519_normalise(raw: bytes) -> bytes:
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    nacl.signing.VerifyKey(raw)  # type check only; small-order keys fail at verification
    return bytes(raw)


_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())


def _p256_verifier(raw: bytes) -> DeviceVerifier:
    try:
        pk = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        return lambda data, signature: False  # not a point: nothing verifies

    def verify(data: bytes, signature: bytes) -> bool:
        if len(signature) != SIGNATURE_LEN:
            return False
        r = int.from_bytes(signature[:32], "big")
        s = int.from_bytes(signature[32:], "big")
        if not (0 < r < _P256_ORDER and 0 < s < _P256_ORDER):
            return False
        try:
            pk.verify(encode_dss_signature(r, s), data, _ECDSA_SHA256)
        except InvalidSignature:
            return False
        return True

    return verify


def _p256_normalise(raw: bytes) -> bytes:
    """65-byte uncompressed or 33-byte compressed SEC1 point → the 33-byte compressed form."""
    if len(raw) not in (33, 65):
        raise ValueError("a P-256 public key is a 33- or 65-byte SEC1 point")
    pk = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes(raw))
    return pk.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)


DEVICE_ALGS: dict[int, DeviceAlgorithm] = {}
_BY_NAME: dict[str, DeviceAlgorithm] = {}


def register_device_alg(alg: DeviceAlgorithm) -> None:
    """Add a device key algorithm (the 国密 suite adds SM2). Ids and names are unique."""
    if not 1 <= alg.alg_id <= 0xFF or alg.alg_id in DEVICE_ALGS or alg.name in _BY_NAME:
        raise ValueError("device algorithm id or name already registered")
    if not 1 <= alg.key_len <= MAX_DEVICE_KEY_LEN:
        raise ValueError("device key length out of range")
    DEVICE_ALGS[alg.alg_id] = alg
    _BY_NAME[alg.name] = alg


def _sm2_verifier(raw: bytes) -> DeviceVerifier:
    try:
        pk = Sm2PublicKey(decompress_point(raw))
    except ValueError:
        return lambda data, signature: False  # not a point: nothing verifies
    return lambda data, signature: pk.verify(signature, data)  # never raises


def _sm2_normalise(raw: bytes) -> bytes:
    """65-byte uncompressed or 33-byte compressed SM2 point → the 33-byte compressed form."""
    if len(raw) == 65:
        return compress_point(bytes(raw))
    return compress_point(decompress_point(bytes(raw)))


register_device_alg(DeviceAlgorithm(1, "EdDSA", 32, _ed25519_verifier, _ed25519_normalise))
register_device_alg(DeviceAlgorithm(2, "ES256", 33, _p256_verifier, _p256_normalise))
# 国密: SM2 with SM3 and the default identifier (docs/code-format.md §1), compressed point
register_device_alg(DeviceAlgorithm(3, "SM2", 33, _sm2_verifier, _sm2_normalise))


def device_alg(name: str) -> DeviceAlgorithm:
    """The registered algorithm called ``name``; ``ValueError`` when there is none."""
    alg = _BY_NAME.get(name)
    if alg is None:
        raise ValueError("unsupported device key algorithm")
    return alg


def normalise_device_key(name: str, key: bytes) -> bytes:
    """The certificate form of a device public key sent at enrolment (``ValueError`` if it is
    not a valid key of algorithm ``name``)."""
    return device_alg(name).normalise(key)


def device_key_fingerprint(key: bytes) -> str:
    """16 hex digits of SHA-256 over the certificate form of a device key (shown to users)."""
    return hashlib.sha256(key).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class DeviceCertificate:
    """A parsed device certificate; its issuer signature is NOT checked by parsing."""

    alg: Alg
    kid: str
    device_alg: str
    device_key: bytes
    serial: bytes
    holder: bytes
    flags: int
    not_before: int
    not_after: int
    raw: bytes

    @property
    def signed(self) -> bytes:
        """The issuer signature's input: ``"YKDC1:" || body``."""
        return CERT_CONTEXT + self.raw[:-SIGNATURE_LEN]

    @property
    def signature(self) -> bytes:
        return self.raw[-SIGNATURE_LEN:]

    def verifier(self) -> DeviceVerifier:
        return DEVICE_ALGS[_device_alg_id(self.device_alg)].verifier(self.device_key)


def _device_alg_id(name: str) -> int:
    return device_alg(name).alg_id


def encode_certificate(
    *,
    signer: Signer,
    device_alg: str,
    device_key: bytes,
    serial: bytes,
    holder: bytes,
    flags: int,
    not_before: int,
    not_after: int,
) -> bytes:
    """Sign a device certificate with the issuer's code key (``signer``, derived kid).

    ``device_key`` must already be in certificate form (:func:`normalise_device_key`).
    Raises ``CodeError("malformed")`` for out-of-range fields, ``ValueError`` for a signer or
    device algorithm this format does not know.
    """
    alg = _BY_NAME.get(device_alg)
    if alg is None:
        raise ValueError("unsupported device key algorithm")
    issuer_alg, kid = issuer_fields(signer, "certificate")
    if len(device_key) != alg.key_len or len(serial) != SERIAL_LEN:
        raise CodeError("malformed")
    check_sealed(holder, flags)  # the holder handle and flags, sealed as in YK1: (§10.2)
    if not _window_ok(not_before, not_after):
        raise CodeError("malformed")
    body = (_HEAD.pack(VERSION, issuer_alg, kid, alg.alg_id) + bytes(device_key)
            + _TAIL.pack(bytes(serial), bytes(holder), flags, not_before, not_after))
    signature = signer.sign(CERT_CONTEXT + body)
    if len(signature) != SIGNATURE_LEN:
        raise ValueError("signer returned a signature of the wrong length")
    return body + signature


def _window_ok(not_before: object, not_after: object) -> bool:
    return (type(not_before) is int and type(not_after) is int
            and 0 <= not_before < not_after <= 0xFFFFFFFF
            and not_after - not_before <= MAX_CERT_TTL_S)


def certificate_size(key_len: int) -> int:
    """Bytes in a certificate whose device key is ``key_len`` bytes long (108 + key_len)."""
    return _HEAD.size + key_len + _TAIL.size + SIGNATURE_LEN


def certificate_length(data: bytes, offset: int = 0) -> int:
    """The length of the certificate starting at ``data[offset]``, from its device alg byte;
    ``CodeError("malformed")`` when the header is short or names no known algorithm."""
    if len(data) < offset + _HEAD.size:
        raise CodeError("malformed")
    alg = DEVICE_ALGS.get(data[offset + 6])
    if alg is None:
        raise CodeError("malformed")
    return certificate_size(alg.key_len)


def parse_certificate(raw: bytes) -> DeviceCertificate:
    """Parse exactly one certificate (strict: every byte accounted for, every field in range).

    The issuer signature is not checked here (``gateway.codec.verify``)."""
    raw = bytes(raw)
    if len(raw) != certificate_length(raw):
        raise CodeError("malformed")
    version, alg_id, kid, dev_id = _HEAD.unpack_from(raw)
    issuer_alg = ISSUER_ALGS.get(alg_id)
    dev = DEVICE_ALGS[dev_id]
    if version != VERSION or issuer_alg is None:
        raise CodeError("malformed")
    key = raw[_HEAD.size:_HEAD.size + dev.key_len]
    serial, holder, flags, not_before, not_after = _TAIL.unpack_from(
        raw, _HEAD.size + dev.key_len)
    if not _window_ok(not_before, not_after):
        raise CodeError("malformed")
    return DeviceCertificate(alg=issuer_alg, kid=kid.hex(), device_alg=dev.name,
                             device_key=key, serial=serial, holder=holder, flags=flags,
                             not_before=not_before, not_after=not_after, raw=raw)
