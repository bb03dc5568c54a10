"""Local verification of upstream assertion JWTs against the issuer's published JWKS.

RFC 7519 (JWT), RFC 7515 (JWS), RFC 7517 (JWK Set), RFC 7523 §3 (processing rules):
explicit algorithms ``ES256`` and ``EdDSA`` only; ``iss``, ``aud``, ``exp``, ``iat``, ``jti``
and ``sub`` required; ``aud`` must be the gateway's issuer URL; clock skew at most 30 s;
lifetime (``exp - iat``) bounded. Time comes from the injected clock (PyJWT's own time checks
are switched off and done here). Replay of ``jti`` is the caller's check.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, Final

import jwt

from gateway.clock import Clock
from gateway.errors import UpstreamUnavailable
from gateway.services.upstream import AssertionRejected

from .http import HttpUpstream, SchemaError, UpstreamResponse, expect_list

__all__ = ["ALLOWED_ALGS", "AssertionVerifier", "JwksCache"]

ALLOWED_ALGS: Final = ("ES256", "EdDSA")
MAX_LEEWAY_S: Final = 30
MAX_ASSERTION_BYTES: Final = 8192
_REQUIRED: Final = ("iss", "aud", "exp", "iat", "jti", "sub")


def _parse_jwks(resp: UpstreamResponse) -> dict[str, jwt.PyJWK]:
    keys: dict[str, jwt.PyJWK] = {}
    for raw in expect_list(resp.body, "keys"):
        if not isinstance(raw, dict):
            raise SchemaError("a JWK must be an object")
        if "d" in raw:
            raise SchemaError("a published JWK must not hold a private key")
        kid = raw.get("kid")
        if not isinstance(kid, str) or not kid:
            raise SchemaError("JWK without kid")
        if raw.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(raw)
        except (jwt.PyJWKError, jwt.InvalidKeyError):
            continue  # keys of other types/algorithms are not ours to use (RFC 7517 §5)
        if key.algorithm_name not in ALLOWED_ALGS:
            continue
        keys[kid] = key
    return keys


class JwksCache:
    """An issuer's JWK Set fetched over HTTP and cached.

    Refreshed when older than ``max_age_s`` or when an unknown ``kid`` is asked for — but at
    most once per ``min_refresh_interval_s`` so a flood of made-up kids cannot hammer the
    issuer. If a refresh fails while a cached key still answers, the cached key is used.
    """

    def __init__(self, upstream: HttpUpstream, path: str, *, clock: Clock,
                 min_refresh_interval_s: float = 30.0, max_age_s: float = 3600.0) -> None:
        self._upstream = upstream
        self._path = path
        self._clock = clock
        self._min_refresh = min_refresh_interval_s
        self._max_age = max_age_s
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    def _due(self, min_interval: float) -> bool:
        return self._fetched_at is None or self._clock.now() - self._fetched_at >= min_interval

    async def _refresh(self) -> None:
        self.fetches += 1
        keys = await self._upstream.request("GET", self._path, op="jwks", parse=_parse_jwks)
        # Only a successful fetch starts the throttle window: after a failure the next
        # verification tries again (the circuit breaker protects the issuer), so an outage
        # is a 503, never a spurious "unknown_key".
        self._keys, self._fetched_at = keys, self._clock.now()

    async def key(self, kid: str) -> jwt.PyJWK | None:
        async with self._lock:
            if self._due(self._max_age) or (kid not in self._keys and self._due(self._min_refresh)):
                stale = self._keys.get(kid)
                try:
                    await self._refresh()
                except UpstreamUnavailable:
                    if stale is None:
                        raise
                    self._keys.setdefault(kid, stale)
            return self._keys.get(kid)


class AssertionVerifier:
    """Verifies assertions from a fixed set of issuers, each with its own JWKS cache."""

    def __init__(self, issuers: Mapping[str, JwksCache], *, audience: str, clock: Clock,
                 leeway_s: int = MAX_LEEWAY_S, max_lifetime_s: int = 600) -> None:
        if not 0 <= leeway_s <= MAX_LEEWAY_S:
            raise ValueError("leeway must be within 0..30 s")
        self._issuers = dict(issuers)
        self._audience = audience
        self._clock = clock
        self._leeway = leeway_s
        self._max_lifetime = max_lifetime_s

    async def verify(self, assertion: str) -> dict[str, Any]:
        """The verified claims, or AssertionRejected(reason)."""
        if not isinstance(assertion, str) or len(assertion) > MAX_ASSERTION_BYTES:
            raise AssertionRejected("malformed")
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except (jwt.DecodeError, json.JSONDecodeError, UnicodeDecodeError):
            raise AssertionRejected("malformed") from None
        alg, kid, iss = header.get("alg"), header.get("kid"), unverified.get("iss")
        if not isinstance(iss, str) or iss not in self._issuers:
            raise AssertionRejected("unknown_issuer")
        if alg not in ALLOWED_ALGS:
            raise AssertionRejected("bad_signature", debug="algorithm not allowed")
        if not isinstance(kid, str) or not kid:
            raise AssertionRejected("unknown_key")
        key = await self._issuers[iss].key(kid)
        if key is None:
            raise AssertionRejected("unknown_key")
        if key.algorithm_name != alg:
            raise AssertionRejected("bad_signature", debug="alg does not match the key")
        try:
            claims: dict[str, Any] = jwt.decode(
                assertion, key.key, algorithms=[alg], audience=self._audience, issuer=iss,
                options={"require": list(_REQUIRED), "verify_exp": False, "verify_nbf": False,
                         "verify_iat": False, "verify_aud": True, "verify_iss": True,
                         "strict_aud": False})
        except jwt.MissingRequiredClaimError:
            raise AssertionRejected("missing_claim") from None
        except jwt.InvalidAudienceError:
            raise AssertionRejected("wrong_audience") from None
        except jwt.InvalidIssuerError:
            raise AssertionRejected("unknown_issuer") from None
        except jwt.InvalidSignatureError:
            raise AssertionRejected("bad_signature") from None
        except jwt.InvalidTokenError:
            raise AssertionRejected("malformed") from None
        self._check_times(claims)
        for name in ("jti", "sub"):
            if not isinstance(claims[name], str) or not claims[name]:
                raise AssertionRejected("malformed")
        return claims

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        iat, exp, nbf = claims["iat"], claims["exp"], claims.get("nbf")
        if type(iat) is not int or type(exp) is not int or (nbf is not None
                                                             and type(nbf) is not int):
            raise AssertionRejected("malformed")
        if exp - iat > self._max_lifetime or exp <= iat:
            raise AssertionRejected("lifetime_too_long" if exp > iat else "malformed")
        now = self._clock.now()
        if now >= exp + self._leeway:
            raise AssertionRejected("expired")
        if iat > now + self._leeway or (nbf is not None and nbf > now + self._leeway):
            raise AssertionRejected("not_yet_valid")
