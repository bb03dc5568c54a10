"""The dynamic code codec: 渝快码 (ykm, ``YK1:``; made on the phone, ``YK2:``) and
电子社保卡 (essc, ``ESSC1:``).

Pure functions over bytes, keys and a clock value passed in; no I/O, no framework. A gate
vendor may lift this package out whole (dependencies: cryptography, PyNaCl, msgpack; SM2 uses
the system's OpenSSL 3 libcrypto, see sm2.py).
Format specification: docs/code-format.md.
"""

from __future__ import annotations

from .base45 import Base45Error, b45decode, b45encode
from .claims import MAX_LIFETIME_S, Alg, CodeClaims, DecodedCode, DeviceClaims, Face
from .device import (
    DEVICE_ALGS,
    DeviceAlgorithm,
    DeviceCertificate,
    encode_certificate,
    normalise_device_key,
    parse_certificate,
    register_device_alg,
)
from .errors import CodeError, Reason
from .essc import encode_essc
from .keys import (
    Ed25519Signer,
    Es256Signer,
    PublicKey,
    Signer,
    Sm2Signer,
    VerificationKey,
    derive_kid,
    raw_public_key,
    signer_for,
)
from .registry import FORMATS, CodeFormat, decode
from .verify import KeyLookup, check_signature, check_window, verify_code
from .yk2 import encode_yk2
from .ykm import encode_ykm

__all__ = [
    "DEVICE_ALGS",
    "FORMATS",
    "MAX_LIFETIME_S",
    "Alg",
    "Base45Error",
    "CodeClaims",
    "CodeError",
    "CodeFormat",
    "DecodedCode",
    "DeviceAlgorithm",
    "DeviceCertificate",
    "DeviceClaims",
    "Ed25519Signer",
    "Es256Signer",
    "Face",
    "KeyLookup",
    "PublicKey",
    "Reason",
    "Signer",
    "Sm2Signer",
    "VerificationKey",
    "b45decode",
    "b45encode",
    "check_signature",
    "check_window",
    "decode",
    "derive_kid",
    "encode_certificate",
    "encode_essc",
    "encode_yk2",
    "encode_ykm",
    "normalise_device_key",
    "parse_certificate",
    "raw_public_key",
    "register_device_alg",
    "signer_for",
    "verify_code",
]
