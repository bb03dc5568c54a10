"""Code-signing keys: signers (issuing side) and verification keys (gate side).

* Ed25519 (RFC 8032) is ``alg = "EdDSA"`` (RFC 8037); ES256 is ECDSA P-256 + SHA-256
  (RFC 7518 §3.4) with the signature as raw ``r || s`` (32 + 32 bytes, big-endian); ``SM2`` is
  SM2 with SM3 and the default distinguishing identifier (GB/T 32918.2, GM/T 0009; see
  :mod:`gateway.codec.sm2`), also raw ``r || s``.
* The 渝快码 key id is derived, never chosen: ``kid = hex(SHA-256(raw public key)[:4])`` where the
  raw public key is the 32-byte Ed25519 key (RFC 8032 §5.1.5) or the 65-byte uncompressed SEC1
  point ``04 || X || Y`` for P-256 and SM2 (SEC 1 §2.3.3). See docs/code-format.md "Key ids".
* JWKs follow RFC 7517 with RFC 8037 (``kty: OKP``) and RFC 7518 §6.2 (``kty: EC``; SM2 keys
  are ``kty: EC, crv: SM2, alg: SM2``, docs/code-format.md "SM2 keys"), plus the trust-list
  members ``iss``, ``nbf``, ``exp`` (RFC 7517 §4: unknown members are ignored).
* Ed25519 verification runs on libsodium (PyNaCl), ES256 on OpenSSL (cryptography); the verifier
  objects are built once per key and cached.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable

import nacl.exceptions
import nacl.signing
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from .claims import Alg
from .sm2 import DEFAULT_DISTID, Sm2PrivateKey, Sm2PublicKey

__all__ = [
    "Ed25519Signer",
    "Es256Signer",
    "PublicKey",
    "Signer",
    "Sm2Signer",
    "VerificationKey",
    "derive_kid",
    "raw_public_key",
    "signer_for",
]

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | Sm2PublicKey

SIGNATURE_LEN: Final = 64
_P256_BYTES: Final = 32
# Key ids travel inside codes (essc) and JWKs: keep them short and QR/JSON safe.
KID_RE: Final = re.compile(r"[0-9A-Za-z._-]{1,32}")
_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())
# RFC 6979 deterministic ECDSA: no dependence on a good RNG at signing time; reproducible vectors.
_ECDSA_SHA256_DET: Final = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


def raw_public_key(public_key: PublicKey) -> bytes:
    """Raw public key bytes: Ed25519 32 bytes, P-256/SM2 uncompressed SEC1 point (65 bytes)."""
    if isinstance(public_key, Sm2PublicKey):
        return public_key.point
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(
        public_key.curve, ec.SECP256R1
    ):
        return public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    raise ValueError("unsupported public key type")


def derive_kid(public_key: PublicKey) -> str:
    """The 渝快码 key id: first 4 bytes of SHA-256 over the raw public key, lower-case hex."""
    return hashlib.sha256(raw_public_key(public_key)).digest()[:4].hex()


def _alg_of(public_key: PublicKey) -> Alg:
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(public_key, Sm2PublicKey):
        return "SM2"
    raw_public_key(public_key)  # raises unless P-256
    return "ES256"


def _check_kid(kid: str) -> str:
    if not isinstance(kid, str) or KID_RE.fullmatch(kid) is None:
        raise ValueError("kid must be 1-32 characters of [0-9A-Za-z._-]")
    return kid


@runtime_checkable
class Signer(Protocol):
    """Something that signs code bytes. ``sign`` returns exactly 64 bytes (see module doc)."""

    @property
    def kid(self) -> str: ...

    @property
    def alg(self) -> Alg: ...

    def sign(self, data: bytes) -> bytes: ...


class Ed25519Signer:
    """EdDSA / Ed25519 signer (RFC 8032 §5.1.6); ``kid`` is derived (see :func:`derive_kid`)."""

    __slots__ = ("_key", "_kid")

    def __init__(self, private_key: ed25519.Ed25519PrivateKey) -> None:
        if not isinstance(private_key, ed25519.Ed25519PrivateKey):
            raise TypeError("an Ed25519 private key is required")
        self._key = private_key
        self._kid = derive_kid(private_key.public_key())

    @classmethod
    def from_pem(cls, pem: bytes, password: bytes | None = None) -> Ed25519Signer:
        key = serialization.load_pem_private_key(pem, password=password)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise TypeError("the PEM does not hold an Ed25519 private key")
        return cls(key)

    @classmethod
    def from_seed(cls, seed: bytes) -> Ed25519Signer:
        """From the 32-byte RFC 8032 private key (seed)."""
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def kid(self) -> str:
        return self._kid

    @property
    def alg(self) -> Alg:
        return "EdDSA"

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def __repr__(self) -> str:
        return f"Ed25519Signer(kid={self._kid!r})"


class Es256Signer:
    """ES256 signer (RFC 7518 §3.4), deterministic nonces (RFC 6979), raw ``r || s`` output.

    ``kid`` defaults to the derived id (required for 渝快码); an e-SSC platform passes its own.
    """

    __slots__ = ("_key", "_kid")

    def __init__(self, private_key: ec.EllipticCurvePrivateKey, kid: str | None = None) -> None:
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(
            private_key.curve, ec.SECP256R1
        ):
            raise TypeError("a P-256 private key is required")
        self._key = private_key
        self._kid = derive_kid(private_key.public_key()) if kid is None else _check_kid(kid)

    @classmethod
    def from_pem(
        cls, pem: bytes, password: bytes | None = None, kid: str | None = None
    ) -> Es256Signer:
        key = serialization.load_pem_private_key(pem, password=password)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TypeError("the PEM does not hold an EC private key")
        return cls(key, kid)

    @classmethod
    def from_scalar(cls, scalar: bytes, kid: str | None = None) -> Es256Signer:
        """From the 32-byte big-endian private scalar ``d``."""
        if len(scalar) != _P256_BYTES:
            raise ValueError("a P-256 scalar is 32 bytes")
        key = ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1())
        return cls(key, kid)

    @property
    def kid(self) -> str:
        return self._kid

    @property
    def alg(self) -> Alg:
        return "ES256"

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self._key.sign(data, _ECDSA_SHA256_DET))
        return r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")

    def __repr__(self) -> str:
        return f"Es256Signer(kid={self._kid!r})"


class Sm2Signer:
    """SM2 signer (GB/T 32918.2 with SM3, default distinguishing identifier), raw ``r || s``.

    Nonces are fresh (OpenSSL's generator): two signatures of one message differ.
    ``kid`` defaults to the derived id (required for 渝快码); an e-SSC platform passes its own.
    """

    __slots__ = ("_distid", "_key", "_kid")

    def __init__(self, private_key: Sm2PrivateKey, kid: str | None = None,
                 distid: bytes = DEFAULT_DISTID) -> None:
        if not isinstance(private_key, Sm2PrivateKey):
            raise TypeError("an SM2 private key is required")
        self._key = private_key
        self._kid = derive_kid(private_key.public_key()) if kid is None else _check_kid(kid)
        self._distid = _check_sm2_id(distid)

    @classmethod
    def from_pem(cls, pem: bytes, kid: str | None = None,
                 distid: bytes = DEFAULT_DISTID) -> Sm2Signer:
        return cls(Sm2PrivateKey.from_pem(pem), kid, distid)

    @classmethod
    def from_scalar(cls, scalar: bytes, kid: str | None = None,
                    distid: bytes = DEFAULT_DISTID) -> Sm2Signer:
        """From the 32-byte big-endian private key ``d``."""
        return cls(Sm2PrivateKey(scalar), kid, distid)

    @property
    def distid(self) -> bytes:
        return self._distid

    @property
    def kid(self) -> str:
        return self._kid

    @property
    def alg(self) -> Alg:
        return "SM2"

    def public_key(self) -> Sm2PublicKey:
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data, self._distid)

    def __repr__(self) -> str:
        return f"Sm2Signer(kid={self._kid!r})"


#: An agreed SM2 identifier (GM/T 0009 §10) travels in a trust-list JWK as ``sm2_id``:
#: printable ASCII, at most 64 characters; absent = ``1234567812345678``.
_SM2_ID_RE: Final = re.compile(rb"[\x20-\x7e]{1,64}")


def _check_sm2_id(distid: bytes) -> bytes:
    if not isinstance(distid, bytes) or _SM2_ID_RE.fullmatch(distid) is None:
        raise ValueError("an SM2 identifier is 1-64 printable ASCII characters")
    return distid


def signer_for(private_key: object, kid: str | None = None) -> Signer:
    """The code signer for a key ring's private key (Ed25519, P-256 or SM2)."""
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return Ed25519Signer(private_key)
    if isinstance(private_key, Sm2PrivateKey):
        return Sm2Signer(private_key, kid)
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return Es256Signer(private_key, kid)
    raise TypeError("unsupported private key type")


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64u(text: object, length: int) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("JWK member is not base64url")
    out = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if len(out) != length or _b64u(out) != text:
        raise ValueError("JWK member has the wrong length")
    return out


def _sm2_id_member(jwk: Mapping[str, Any], alg: Alg) -> bytes:
    value = jwk.get("sm2_id")
    if value is None:
        return DEFAULT_DISTID
    if alg != "SM2" or not isinstance(value, str) or not value.isascii():
        raise ValueError("JWK sm2_id is an ASCII string on SM2 keys only")
    return value.encode("ascii")


def _opt_int(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        raise ValueError("JWK nbf/exp must be integers")
    return value


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A code issuer's public key as listed in the trust list (GET /v1/trust-list).

    Valid for codes whose ``issued_at`` lies in ``[not_before, not_after)`` (``None`` = open).
    For issuer ``"ykm"`` the kid must be the derived kid of the key.
    """

    issuer: str
    kid: str
    alg: Alg
    public_key: PublicKey
    not_before: int | None = None
    not_after: int | None = None
    #: SM2 only: the signer's distinguishing identifier (JWK member ``sm2_id``).
    sm2_id: bytes = DEFAULT_DISTID
    _nacl: nacl.signing.VerifyKey | None = field(
        init=False, repr=False, compare=False, default=None
    )

    def __post_init__(self) -> None:
        _check_kid(self.kid)
        if _alg_of(self.public_key) != self.alg:
            raise ValueError("alg does not match the key type")
        if self.issuer == "ykm" and self.kid != derive_kid(self.public_key):
            raise ValueError("a ykm kid must be derived from its key")
        if not (self.issuer == "ykm" or re.fullmatch(r"essc:[A-Z]{2}", self.issuer)):
            raise ValueError("issuer must be 'ykm' or 'essc:<region>'")
        _check_sm2_id(self.sm2_id)
        if self.alg != "SM2" and self.sm2_id != DEFAULT_DISTID:
            raise ValueError("sm2_id belongs to SM2 keys only")
        if self.alg == "EdDSA":
            object.__setattr__(
                self, "_nacl", nacl.signing.VerifyKey(raw_public_key(self.public_key))
            )

    def valid_at(self, issued_at: int) -> bool:
        """Whether a code issued at ``issued_at`` may be verified with this key."""
        if self.not_before is not None and issued_at < self.not_before:
            return False
        return self.not_after is None or issued_at < self.not_after

    def verify(self, data: bytes, signature: bytes) -> bool:
        """Check a 64-byte raw signature over ``data``; never raises on a bad signature."""
        if len(signature) != SIGNATURE_LEN:
            return False
        vk = self._nacl
        if vk is not None:
            try:
                vk.verify(data, signature)
            except nacl.exceptions.BadSignatureError:
                return False
            return True
        pk = self.public_key
        if isinstance(pk, Sm2PublicKey):
            return pk.verify(signature, data, self.sm2_id)
        assert isinstance(pk, ec.EllipticCurvePublicKey)
        der = encode_dss_signature(
            int.from_bytes(signature[:_P256_BYTES], "big"),
            int.from_bytes(signature[_P256_BYTES:], "big"),
        )
        try:
            pk.verify(der, data, _ECDSA_SHA256)
        except InvalidSignature:
            return False
        return True

    @classmethod
    def of(
        cls,
        issuer: str,
        public_key: PublicKey,
        kid: str | None = None,
        not_before: int | None = None,
        not_after: int | None = None,
        sm2_id: bytes = DEFAULT_DISTID,
    ) -> VerificationKey:
        """From a public key; ``alg`` follows the key type, ``kid`` defaults to the derived one."""
        return cls(
            issuer=issuer,
            kid=derive_kid(public_key) if kid is None else kid,
            alg=_alg_of(public_key),
            public_key=public_key,
            not_before=not_before,
            not_after=not_after,
            sm2_id=sm2_id,
        )

    @classmethod
    def from_jwk(
        cls,
        jwk: Mapping[str, Any],
        issuer: str | None = None,
        not_before: int | None = None,
        not_after: int | None = None,
    ) -> VerificationKey:
        """Build from a public JWK (RFC 8037 OKP/Ed25519, RFC 7518 EC/P-256 or EC/SM2).

        ``issuer``/``not_before``/``not_after`` default to the JWK's ``iss``/``nbf``/``exp``.
        Private members (``d``) are refused: a trust list never carries them.
        """
        if "d" in jwk:
            raise ValueError("a verification JWK must not contain a private key")
        if jwk.get("use", "sig") != "sig":
            raise ValueError("JWK use must be 'sig'")
        kty, crv, alg = jwk.get("kty"), jwk.get("crv"), jwk.get("alg")
        public_key: PublicKey
        if kty == "OKP" and crv == "Ed25519" and alg in ("EdDSA", None):
            public_key = ed25519.Ed25519PublicKey.from_public_bytes(_unb64u(jwk.get("x"), 32))
            key_alg: Alg = "EdDSA"
        elif kty == "EC" and crv == "P-256" and alg in ("ES256", None):
            point = b"\x04" + _unb64u(jwk.get("x"), 32) + _unb64u(jwk.get("y"), 32)
            public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
            key_alg = "ES256"
        elif kty == "EC" and crv == "SM2" and alg in ("SM2", None):
            point = b"\x04" + _unb64u(jwk.get("x"), 32) + _unb64u(jwk.get("y"), 32)
            public_key = Sm2PublicKey(point)  # refuses a point off the curve
            key_alg = "SM2"
        else:
            raise ValueError(
                "unsupported JWK (need OKP/Ed25519/EdDSA, EC/P-256/ES256 or EC/SM2/SM2)")
        iss = jwk.get("iss") if issuer is None else issuer
        if not isinstance(iss, str):
            raise ValueError("the key's issuer is unknown")
        kid = jwk.get("kid")
        if not isinstance(kid, str):
            raise ValueError("JWK kid is required")
        return cls(
            issuer=iss,
            kid=kid,
            alg=key_alg,
            public_key=public_key,
            not_before=_opt_int(jwk.get("nbf")) if not_before is None else not_before,
            not_after=_opt_int(jwk.get("exp")) if not_after is None else not_after,
            sm2_id=_sm2_id_member(jwk, key_alg),
        )

    def to_jwk(self) -> dict[str, Any]:
        """The public JWK, with ``kid``, ``alg``, ``use: sig`` and the trust-list members."""
        raw = raw_public_key(self.public_key)
        jwk: dict[str, Any]
        if self.alg == "EdDSA":
            jwk = {"kty": "OKP", "crv": "Ed25519", "x": _b64u(raw)}
        else:
            crv = "SM2" if self.alg == "SM2" else "P-256"
            jwk = {"kty": "EC", "crv": crv, "x": _b64u(raw[1:33]), "y": _b64u(raw[33:])}
        jwk.update({"kid": self.kid, "alg": self.alg, "use": "sig", "iss": self.issuer})
        if self.sm2_id != DEFAULT_DISTID:
            jwk["sm2_id"] = self.sm2_id.decode("ascii")
        if self.not_before is not None:
            jwk["nbf"] = self.not_before
        if self.not_after is not None:
            jwk["exp"] = self.not_after
        return jwk
