"""The dynamic code codec: 渝快码 (ykm, ``YK1:``) and 电子社保卡 (essc, ``ESSC1:``).

Pure functions over bytes, keys and a clock value passed in; no I/O, no framework. A gate
vendor may lift this package out whole (dependencies: cryptography, PyNaCl, msgpack).
Format specification: docs/code-format.md.
"""

from __future__ import annotations

from .base45 import Base45Error, b45decode, b45encode
from .claims import MAX_LIFETIME_S, Alg, CodeClaims, DecodedCode, Face
from .errors import CodeError, Reason
from .essc import encode_essc
from .keys import (
    Ed25519Signer,
    Es256Signer,
    PublicKey,
    Signer,
    VerificationKey,
    derive_kid,
    raw_public_key,
)
from .registry import FORMATS, CodeFormat, decode
from .verify import KeyLookup, check_signature, check_window, verify_code
from .ykm import encode_ykm

__all__ = [
    "FORMATS",
    "MAX_LIFETIME_S",
    "Alg",
    "Base45Error",
    "CodeClaims",
    "CodeError",
    "CodeFormat",
    "DecodedCode",
    "Ed25519Signer",
    "Es256Signer",
    "Face",
    "KeyLookup",
    "PublicKey",
    "Reason",
    "Signer",
    "VerificationKey",
    "b45decode",
    "b45encode",
    "check_signature",
    "check_window",
    "decode",
    "derive_kid",
    "encode_essc",
    "encode_ykm",
    "raw_public_key",
    "verify_code",
]
