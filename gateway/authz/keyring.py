"""The key ring: signing keys with `kid`, explicit algorithms and a life cycle.

States: ``next`` (published, not yet signing, so caches learn it before it is used) →
``current`` (signs) → ``retired`` (still verifies until ``verify_until``, the moment the last
token or code it signed has expired; then it leaves the JWKS). Rotation without downtime is
therefore: publish next, promote, keep the retired key for one maximum lifetime.
Algorithms: EdDSA (Ed25519, RFC 8037), ES256 (P-256, RFC 7518 §3.4) and SM2 (SM2 with SM3 and
the default distinguishing identifier, GB/T 32918.2; JWK ``kty: EC, crv: SM2``, JWS ``alg: SM2``,
docs/oidc.md "Algorithms"). One ring may hold keys of different algorithms: a rotation from an
EdDSA key to an SM2 key keeps the EdDSA key verifying through the overlap.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.authz import sm2jws  # noqa: F401 - registers the "SM2" JWS algorithm with PyJWT
from gateway.base64url import b64u
from gateway.codec.sm2 import Sm2PrivateKey

Alg = Literal["EdDSA", "ES256", "SM2"]
State = Literal["next", "current", "retired"]
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | Sm2PrivateKey
ALGORITHMS: tuple[Alg, ...] = ("EdDSA", "ES256", "SM2")


def generate_private_key(alg: Alg) -> PrivateKey:
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "SM2":
        return Sm2PrivateKey.generate()
    raise ValueError(f"unsupported algorithm {alg!r}")


def raw_public_bytes(key: PrivateKey) -> bytes:
    if isinstance(key, Sm2PrivateKey):
        return key.public_key().point
    pub = key.public_key()
    if isinstance(pub, ed25519.Ed25519PublicKey):
        return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return pub.public_bytes(serialization.Encoding.X962,
                            serialization.PublicFormat.UncompressedPoint)


def derive_kid(key: PrivateKey) -> str:
    """kid = hex of the first 4 bytes of SHA-256 over the raw public key (as in the code format)."""
    return hashlib.sha256(raw_public_bytes(key)).digest()[:4].hex()


def public_jwk(key: PrivateKey, kid: str, alg: Alg) -> dict[str, Any]:
    raw = raw_public_bytes(key)
    if alg == "EdDSA":
        return {"kty": "OKP", "crv": "Ed25519", "x": b64u(raw), "kid": kid, "alg": alg,
                "use": "sig"}
    crv = "SM2" if alg == "SM2" else "P-256"
    return {"kty": "EC", "crv": crv, "x": b64u(raw[1:33]), "y": b64u(raw[33:65]),
            "kid": kid, "alg": alg, "use": "sig"}


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: Alg
    state: State
    created_at: float
    private_key: PrivateKey = field(repr=False, compare=False)
    activated_at: float | None = None
    retired_at: float | None = None
    verify_until: float | None = None

    def public_jwk(self) -> dict[str, Any]:
        return public_jwk(self.private_key, self.kid, self.alg)

    def verifies_at(self, now: float) -> bool:
        if self.state == "retired":
            return self.verify_until is not None and now < self.verify_until
        return True


@dataclass(frozen=True)
class KeyRing:
    """An immutable view of one purpose's keys (e.g. ``token`` or ``code``)."""

    purpose: str
    keys: tuple[SigningKey, ...]

    def current(self) -> SigningKey:
        for k in self.keys:
            if k.state == "current":
                return k
        raise LookupError(f"key ring {self.purpose!r} has no current key")

    def verification_key(self, kid: str, now: float) -> SigningKey | None:
        for k in self.keys:
            if k.kid == kid and k.verifies_at(now):
                return k
        return None

    def published(self, now: float) -> list[SigningKey]:
        """Keys a verifier should know: next, current and retired-but-still-valid."""
        return [k for k in self.keys if k.verifies_at(now)]

    def jwks(self, now: float) -> dict[str, Any]:
        return {"keys": [k.public_jwk() for k in self.published(now)]}


def new_key(alg: Alg, state: State, now: float) -> SigningKey:
    pk = generate_private_key(alg)
    return SigningKey(kid=derive_kid(pk), alg=alg, state=state, created_at=now, private_key=pk,
                      activated_at=now if state == "current" else None)


def bootstrap(purpose: str, alg: Alg, now: float) -> KeyRing:
    """A fresh ring: one current key and one pre-published next key."""
    return KeyRing(purpose, (new_key(alg, "current", now), new_key(alg, "next", now)))


def rotate(ring: KeyRing, now: float, max_lifetime_s: float, alg: Alg | None = None) -> KeyRing:
    """Promote next → current, retire current (verifies for ``max_lifetime_s`` more),
    generate a new next key, and drop retired keys whose last signature has expired."""
    out: list[SigningKey] = []
    promoted = False
    for k in ring.keys:
        if k.state == "current":
            out.append(replace(k, state="retired", retired_at=now,
                               verify_until=now + max_lifetime_s))
        elif k.state == "next" and not promoted:
            out.append(replace(k, state="current", activated_at=now))
            promoted = True
        elif k.verifies_at(now):
            out.append(k)
    if not promoted:
        out.append(new_key(alg if alg is not None else ring.current().alg, "current", now))
    current_alg: Alg = next(k.alg for k in out if k.state == "current")
    # Algorithm agility: the new next key may use another algorithm; it is published a full
    # rotation before it signs anything.
    out.append(new_key(alg if alg is not None else current_alg, "next", now))
    return KeyRing(ring.purpose, tuple(out))
