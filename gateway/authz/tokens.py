"""Access tokens: short-lived JWTs (RFC 9068 profile) signed by the `token` key ring.

Issued with explicit `iss`, `aud`, `sub`, `client_id`, `scope`, `iat`, `exp`, `jti` and a
`typ` header of `at+jwt` (RFC 9068 §2.1) so an ID token can never pass for an access token.
Verification names its algorithms, audience and issuer; an unknown `kid` is refused.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from gateway.authz import sm2jws
from gateway.authz.ecdsa import P256_N, is_low_s, to_low_s
from gateway.authz.keyring import ALGORITHMS, KeyRing, SigningKey
from gateway.base64url import b64u

sm2jws.register()  # "SM2" JWS for the 国密 suite (docs/oidc.md "Algorithms")

ACCESS_TOKEN_TYP = "at+jwt"


class TokenInvalid(Exception):
    """The token is not one of ours, not for this audience, expired or revoked.

    `reason` is for the log; the caller answers an opaque 401."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AccessTokenClaims:
    jti: str
    client_id: str
    kind: str
    sub: str
    scopes: frozenset[str]
    exp: int
    iat: int
    scene: str | None = None
    sealed_person: str | None = None  # `pid`: encrypted person id (resident tokens only)
    sid: str | None = None  # grant id (refresh family / consent) when there is one
    jkt: str | None = None  # `cnf.jkt`: bound to this DPoP key (RFC 9449 §6)

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


def check_times(claims: dict[str, Any], now: float, leeway_s: float = 0, *,
                iat: bool = True) -> None:
    """RFC 7519 §4.1.4-6 at ``now`` of the injected clock, with pyjwt's own rules and errors
    (pyjwt would read the wall clock, so it is told not to check these): ``exp`` is past when
    ``exp <= now - leeway``; ``nbf`` / ``iat`` beyond ``now + leeway`` are not yet valid;
    each must be an integer (NumericDate) when present. ``iat=False`` leaves it unchecked."""
    for name, error in (("exp", jwt.DecodeError), ("nbf", jwt.DecodeError),
                        ("iat", jwt.InvalidIssuedAtError)):
        if name not in claims or (name == "iat" and not iat):
            continue
        try:
            value = int(claims[name])
        except (ValueError, TypeError, OverflowError):
            raise error(f"The {name} claim must be an integer.") from None
        if name == "exp":
            if value <= now - leeway_s:
                raise jwt.ExpiredSignatureError("Signature has expired")
        elif value > now + leeway_s:
            raise jwt.ImmatureSignatureError(f"The token is not yet valid ({name})")


_ES256 = ec.ECDSA(hashes.SHA256())
_HALF_N = P256_N // 2


def jws_header_segment(alg: str, kid: str, typ: str) -> str:
    """The protected header's base64url, byte for byte what pyjwt writes for
    ``jwt.encode(..., algorithm=alg, headers={"kid": kid, "typ": typ})`` (compact JSON,
    keys sorted)."""
    return b64u(json.dumps({"alg": alg, "kid": kid, "typ": typ}, separators=(",", ":"),
                           sort_keys=True).encode())


def sign_compact(key: SigningKey, header_segment: str, claims: dict[str, Any]) -> str:
    """A compact JWS of `claims` (pyjwt's JSON: compact, insertion order) under an ES256 or
    EdDSA key, without pyjwt's per-call header, algorithm and DER work (issue 13: a third of
    the token endpoint's signing time). ES256 signatures come out low-S
    (gateway/authz/ecdsa.py)."""
    signing_input = f"{header_segment}.{b64u(json.dumps(claims, separators=(',', ':')).encode())}"
    data = signing_input.encode("ascii")
    pk = key.private_key
    if key.alg == "ES256" and isinstance(pk, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(pk.sign(data, _ES256))
        if s > _HALF_N:
            s = P256_N - s
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    elif key.alg == "EdDSA" and isinstance(pk, ed25519.Ed25519PrivateKey):
        sig = pk.sign(data)
    else:
        raise ValueError(f"sign_compact: no fast path for {key.alg}")
    return f"{signing_input}.{b64u(sig)}"


class JwtSigner:
    """Signs and verifies JWTs with the current key ring (re-read on every call, so a
    rotated ring takes effect without a restart)."""

    def __init__(self, ring: Callable[[], KeyRing], clock: Callable[[], float]) -> None:
        self._ring = ring
        self._now = clock
        self._headers: dict[tuple[str, str, str], str] = {}  # (alg, kid, typ) -> segment

    def sign(self, claims: dict[str, Any], typ: str = "JWT") -> str:
        key = self._ring().current()
        if key.alg in ("ES256", "EdDSA"):
            cache_key = (key.alg, key.kid, typ)
            segment = self._headers.get(cache_key)
            if segment is None:
                if len(self._headers) > 64:
                    self._headers.clear()
                segment = self._headers[cache_key] = jws_header_segment(key.alg, key.kid, typ)
            return sign_compact(key, segment, claims)
        # SM2 keys are gateway.codec.sm2 objects, understood by the registered "SM2" algorithm
        # (SM2 has no (r, n - s) twin to normalise away: t = r + s enters the verification)
        token = jwt.encode(claims, cast(Any, key.private_key), algorithm=key.alg,
                           headers={"kid": key.kid, "typ": typ})
        return to_low_s(token) if key.alg == "ES256" else token

    def verify(self, token: str, *, audience: str | list[str] | None, issuer: str,
               typ: str | None = None, leeway_s: int = 0,
               require: tuple[str, ...] = ("exp", "iat", "iss")) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenInvalid("malformed") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise TokenInvalid("algorithm not allowed")
        if typ is not None and str(header.get("typ", "")).lower() != typ:
            raise TokenInvalid("wrong token type")
        if alg == "ES256" and not is_low_s(token):
            raise TokenInvalid("high-S signature")   # we only sign low-S (authz/ecdsa.py)
        key = self._ring().verification_key(str(header.get("kid", "")), self._now())
        if key is None or key.alg != alg:
            raise TokenInvalid("unknown kid")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, cast(Any, key.private_key.public_key()), algorithms=[key.alg],
                audience=audience, issuer=issuer,
                # exp / nbf / iat on the injected clock, not pyjwt's wall clock
                options={"require": list(require), "verify_aud": audience is not None,
                         "verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
            check_times(claims, self._now(), leeway_s)
            return claims
        except jwt.ExpiredSignatureError:
            raise TokenInvalid("expired") from None
        except jwt.InvalidAudienceError:
            raise TokenInvalid("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise TokenInvalid("wrong issuer") from None
        except jwt.PyJWTError:
            raise TokenInvalid("invalid") from None


class AccessTokens:
    def __init__(self, signer: JwtSigner, issuer: str, clock: Callable[[], float]) -> None:
        self._signer = signer
        self.issuer = issuer
        self._now = clock

    def issue(self, *, client_id: str, kind: str, sub: str,
              scopes: tuple[str, ...] | frozenset[str], ttl_s: int, scene: str | None = None,
              sealed_person: str | None = None, sid: str | None = None,
              audience: str | None = None, jkt: str | None = None
              ) -> tuple[str, AccessTokenClaims]:
        now = int(self._now())
        claims = AccessTokenClaims(
            jti=secrets.token_urlsafe(16), client_id=client_id, kind=kind, sub=sub,
            scopes=frozenset(scopes), exp=now + ttl_s, iat=now, scene=scene,
            sealed_person=sealed_person, sid=sid, jkt=jkt)
        body: dict[str, Any] = {
            "iss": self.issuer, "aud": audience or self.issuer, "sub": sub,
            "client_id": client_id, "kind": kind, "scope": " ".join(sorted(claims.scopes)),
            "iat": now, "exp": claims.exp, "jti": claims.jti,
        }
        if scene:
            body["scene"] = scene
        if sealed_person:
            body["pid"] = sealed_person
        if sid:
            body["sid"] = sid
        if jkt:
            body["cnf"] = {"jkt": jkt}
        return self._signer.sign(body, typ=ACCESS_TOKEN_TYP), claims

    def verify(self, token: str) -> AccessTokenClaims:
        c = self._signer.verify(token, audience=self.issuer, issuer=self.issuer,
                                typ=ACCESS_TOKEN_TYP,
                                require=("exp", "iat", "iss", "aud", "sub", "jti"))
        try:
            return AccessTokenClaims(
                jti=str(c["jti"]), client_id=str(c["client_id"]), kind=str(c["kind"]),
                sub=str(c["sub"]), scopes=frozenset(str(c.get("scope", "")).split()),
                exp=int(c["exp"]), iat=int(c["iat"]), scene=c.get("scene"),
                sealed_person=c.get("pid"), sid=c.get("sid"),
                jkt=str(c["cnf"]["jkt"]) if isinstance(c.get("cnf"), dict) else None)
        except (KeyError, TypeError, ValueError):
            raise TokenInvalid("claims missing") from None
