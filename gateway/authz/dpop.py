"""DPoP: OAuth 2.0 Demonstrating Proof of Possession (RFC 9449).

A proof is a JWS with `typ: dpop+jwt` whose header carries the client's public key (`jwk`),
signed by it, over `{jti, htm, htu, iat}` (+ `ath` = BASE64URL(SHA-256(access token)) at a
resource, + `nonce` where the server asks for one). What it binds to is the key's RFC 7638
thumbprint (`jkt`): access tokens carry it as `cnf.jkt` (§6), public clients' refresh tokens
are bound to it (§5), and a bound token is used only with a proof by the same key (§7).

Checks (§4.3): typ, alg (ES256, EdDSA or Ed25519; never none or symmetric), a public `jwk`
that verifies the signature, `htm` and `htu` (scheme, host, path; no query or fragment) equal to the
request's, `iat` within PROOF_WINDOW_S of our clock, `ath` when a token is presented, and
`jti` single use (claimed for 2 × the window, per key). Server nonces (§8): stateless, an HMAC
of the current 5-minute window under a derived key, so every worker accepts every worker's
nonce; this one and the previous window's are good.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.base64url import b64u, unb64u
from gateway.ports import SingleUse

DPOP_TYP = "dpop+jwt"
#: "Ed25519" is the fully-specified name of EdDSA over Ed25519 (RFC 9864), what oauth4webapi
#: / openid-client put in their proofs; "EdDSA" the polymorphic one of RFC 8037.
ALGORITHMS = ("ES256", "EdDSA", "Ed25519")
PROOF_WINDOW_S = 60
NONCE_WINDOW_S = 300


class DpopError(Exception):
    """`error` is `invalid_dpop_proof` or `use_dpop_nonce` (RFC 9449 §12.2)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638: SHA-256 over the required members, lexicographic order, no whitespace."""
    kty = jwk.get("kty")
    if kty == "EC":
        members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    elif kty == "OKP":
        members = {k: jwk[k] for k in ("crv", "kty", "x")}
    else:
        raise DpopError("invalid_dpop_proof", "Unsupported key type")
    raw = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
    return b64u(hashlib.sha256(raw).digest())


def _verified_claims(proof: str, jwk: dict[str, Any], alg: str) -> dict[str, Any]:
    """The proof's claims once its signature verifies under `jwk`."""
    if alg == "Ed25519":   # PyJWT knows it only as EdDSA: verify the Ed25519 JWS directly
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise ValueError("Ed25519 needs an Ed25519 key")
        head, body, sig = proof.split(".")
        Ed25519PublicKey.from_public_bytes(unb64u(str(jwk["x"]))).verify(
            unb64u(sig), f"{head}.{body}".encode("ascii"))
        claims = json.loads(unb64u(body))
        if not isinstance(claims, dict) or any(k not in claims for k in
                                               ("jti", "htm", "htu", "iat")):
            raise ValueError("claims missing")
        return claims
    key = jwt.PyJWK(jwk, algorithm=alg).key
    return dict(jwt.decode(proof, key, algorithms=[alg],
                           options={"require": ["jti", "htm", "htu", "iat"],
                                    "verify_aud": False, "verify_exp": False,
                                    "verify_iat": False, "verify_nbf": False}))


def access_token_hash(token: str) -> str:
    return b64u(hashlib.sha256(token.encode("ascii")).digest())


def _htu(url: str) -> str:
    p = urlsplit(url)
    return f"{p.scheme.lower()}://{p.netloc.lower()}{p.path}"


class DpopVerifier:
    def __init__(self, replay: SingleUse, nonce_key: bytes, clock: Callable[[], float],
                 issuer: str) -> None:
        self.issuer = issuer   # `htu` is our public URL, not what a proxy forwarded
        self._replay = replay
        self._key = nonce_key
        self._now = clock

    def _mac(self, window: int) -> bytes:
        return hmac.new(self._key, window.to_bytes(8, "big"), hashlib.sha256).digest()[:16]

    def nonce(self) -> str:
        """The current server nonce (send it in `DPoP-Nonce`)."""
        window = int(self._now() // NONCE_WINDOW_S)
        return b64u(window.to_bytes(8, "big") + self._mac(window))

    def _nonce_ok(self, nonce: Any) -> bool:
        if not isinstance(nonce, str) or len(nonce) > 64:
            return False
        try:
            raw = unb64u(nonce)
        except ValueError:
            return False
        if len(raw) != 24:
            return False
        window = int.from_bytes(raw[:8], "big")
        current = int(self._now() // NONCE_WINDOW_S)
        return window in (current, current - 1) and hmac.compare_digest(raw[8:],
                                                                        self._mac(window))

    async def verify(self, proof: str, *, method: str, url: str,
                     access_token: str | None = None, require_nonce: bool = False) -> str:
        """The proof's key thumbprint (`jkt`); DpopError when the proof does not hold."""
        def bad(why: str) -> DpopError:
            return DpopError("invalid_dpop_proof", why)
        if len(proof) > 4096 or proof.count(".") != 2:
            raise bad("The DPoP proof is malformed")
        try:
            header = jwt.get_unverified_header(proof)
        except jwt.PyJWTError:
            raise bad("The DPoP proof is malformed") from None
        if header.get("typ") != DPOP_TYP:
            raise bad("The DPoP proof's typ must be dpop+jwt")
        alg, jwk = header.get("alg"), header.get("jwk")
        if alg not in ALGORITHMS:
            raise bad("The DPoP proof's algorithm is not supported")
        if not isinstance(jwk, dict) or "d" in jwk:
            raise bad("The DPoP proof needs a public jwk in its header")
        try:
            jkt = thumbprint(jwk)
            claims = _verified_claims(proof, jwk, alg)
        except (jwt.PyJWTError, InvalidSignature, KeyError, TypeError, ValueError):
            raise bad("The DPoP proof does not verify") from None
        if claims.get("htm") != method or not isinstance(claims.get("htu"), str) \
                or _htu(claims["htu"]) != _htu(url):
            raise bad("The DPoP proof is for another request")
        iat = claims.get("iat")
        if not isinstance(iat, int | float) or abs(self._now() - float(iat)) > PROOF_WINDOW_S:
            raise bad("The DPoP proof is too old or from the future")
        if access_token is not None and not hmac.compare_digest(
                str(claims.get("ath", "")).encode(), access_token_hash(access_token).encode()):
            raise bad("The DPoP proof is not for this access token")
        if require_nonce and not self._nonce_ok(claims.get("nonce")):
            raise DpopError("use_dpop_nonce", "Use the server's DPoP nonce")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 8 <= len(jti) <= 256:
            raise bad("The DPoP proof's jti is missing or malformed")
        if await self._replay.claim(f"dpop:{jkt}:{jti}", 2 * PROOF_WINDOW_S) is not None:
            raise bad("The DPoP proof was used already")
        return jkt
