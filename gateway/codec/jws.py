"""Compact JWS (RFC 7515 §7.1) for the documents an offline gate trusts: the trust list, the
card deny-list and trust-key endorsements (docs/code-format.md §6, docs/offline.md).

* Signing goes through the codec's :class:`~gateway.codec.keys.Signer` (64-byte raw
  signatures: Ed25519 ``R || S``, ES256 ``r || s`` — exactly the JWS forms of RFC 8037 §3.1 and
  RFC 7518 §3.4), so another algorithm slots in as another ``Signer``.
* Verification is over the signing input **as received** (``BASE64URL(header) || "." ||
  BASE64URL(payload)``) and returns the payload bytes as received: nothing is re-serialised, so
  no canonical JSON is needed to verify.
* The header must be exactly ``alg``, ``kid``, ``typ`` (no ``crit``, ``jku``, ``x5u`` …: nothing
  that would make a verifier fetch keys), ``typ`` must be the expected one (RFC 8725 §3.11) and
  ``alg`` must equal the key's algorithm (RFC 8725 §3.1): ``none`` never verifies.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .claims import Alg
from .keys import PublicKey, Signer, VerificationKey

__all__ = ["JwsError", "JwsKey", "b64u", "canonical_json", "sign_compact", "unb64u",
           "verify_compact"]

_B64U: Final = re.compile(r"[A-Za-z0-9_-]*")
_HEADER_MEMBERS: Final = frozenset({"alg", "kid", "typ"})
#: The documents are small; anything longer is refused before decoding.
MAX_JWS_LEN: Final = 8 * 1024 * 1024


class JwsError(Exception):
    """A JWS did not verify; ``reason`` is a short stable word, never key material."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64u(text: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2): other characters or a non-canonical
    final group are refused."""
    if _B64U.fullmatch(text) is None or len(text) % 4 == 1:
        raise JwsError("malformed")
    try:
        out = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise JwsError("malformed") from None
    if b64u(out) != text:
        raise JwsError("malformed")
    return out


def canonical_json(obj: Any) -> bytes:
    """The gateway's serialisation of what it signs: sorted keys, no spaces, UTF-8. Verifiers
    never need to reproduce it (they verify the bytes received)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class JwsKey:
    """A document-signing public key (the trust-list key): ``kid``, ``alg`` and the key.

    The JWK form is that of docs/code-format.md §5 without the trust-list members; the kid is
    derived from the key exactly as a 渝快码 kid (SHA-256 of the raw public key, 4 bytes, hex),
    so a pinned JWK cannot carry a kid that names another key.
    """

    kid: str
    alg: Alg
    _key: VerificationKey

    @classmethod
    def of(cls, public_key: PublicKey) -> JwsKey:
        # the codec's verification key is reused for its strict signature checks; "ykm" is the
        # issuer whose kid rule (derived from the key) this key follows
        vk = VerificationKey.of("ykm", public_key)
        return cls(vk.kid, vk.alg, vk)

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> JwsKey:
        """From a public JWK (OKP/Ed25519 or EC/P-256) whose ``kid`` is the derived one.
        Raises ``ValueError`` otherwise."""
        if not isinstance(jwk, Mapping):
            raise ValueError("a JWK is a JSON object")
        members = {k: v for k, v in jwk.items()
                   if k in ("kty", "crv", "x", "y", "alg", "use", "kid", "d")}
        # issuer "ykm" carries the rule wanted here: the kid must be derived from the key
        vk = VerificationKey.from_jwk(members, issuer="ykm", not_before=None, not_after=None)
        return cls(vk.kid, vk.alg, VerificationKey.of("ykm", vk.public_key))

    @property
    def public_key(self) -> PublicKey:
        return self._key.public_key

    def to_jwk(self) -> dict[str, Any]:
        """The public JWK (``kid``, ``alg``, ``use: sig``), without trust-list members."""
        jwk = self._key.to_jwk()
        for member in ("iss", "nbf", "exp"):
            jwk.pop(member, None)
        return jwk

    def verify(self, data: bytes, signature: bytes) -> bool:
        return self._key.verify(data, signature)


def sign_compact(signer: Signer, payload: bytes, typ: str) -> str:
    """``header.payload.signature`` with header ``{"alg", "kid", "typ"}``; deterministic for
    Ed25519 and for the codec's RFC 6979 ES256 signer."""
    header = b64u(canonical_json({"alg": signer.alg, "kid": signer.kid, "typ": typ}))
    signing_input = f"{header}.{b64u(payload)}"
    return f"{signing_input}.{b64u(signer.sign(signing_input.encode('ascii')))}"


def verify_compact(token: str, key_for: Callable[[str], JwsKey | None],
                   typ: str) -> tuple[JwsKey, bytes]:
    """Verify a compact JWS and return (the key that verified it, the payload bytes).

    ``key_for(kid)`` returns the trusted key of that kid or None. Reasons: ``malformed``,
    ``wrong_type``, ``unknown_key``, ``bad_signature``.
    """
    if not isinstance(token, str) or len(token) > MAX_JWS_LEN:
        raise JwsError("malformed")
    parts = token.split(".")
    if len(parts) != 3:
        raise JwsError("malformed")
    try:
        header = json.loads(unb64u(parts[0]))
    except ValueError:
        raise JwsError("malformed") from None
    if not isinstance(header, dict) or set(header) != _HEADER_MEMBERS \
            or not all(isinstance(header[m], str) for m in _HEADER_MEMBERS):
        raise JwsError("malformed")
    if header["typ"] != typ:
        raise JwsError("wrong_type")
    key = key_for(header["kid"])
    if key is None:
        raise JwsError("unknown_key")
    signature = unb64u(parts[2])
    payload = unb64u(parts[1])
    if header["alg"] != key.alg or not key.verify(
            f"{parts[0]}.{parts[1]}".encode("ascii"), signature):
        raise JwsError("bad_signature")
    return key, payload
