"""Bearer-token checks for the API, with a small cache so the gate path does not re-verify
the gate's JWT on every scan (issue 7: the signature check costs more than the verify itself).

A cached entry lives at most `cache_ttl_s`; a revoked token therefore stops working on a
gate within that time, and immediately on every uncached path.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from gateway.authz.tokens import AccessTokenClaims, AccessTokens, TokenInvalid
from gateway.ports import SingleUse


class BearerAuthenticator:
    def __init__(self, tokens: AccessTokens, revoked: SingleUse, clock: Callable[[], float],
                 cache_ttl_s: float = 10.0, cache_size: int = 10_000) -> None:
        self._tokens = tokens
        self._revoked = revoked
        self._now = clock
        self._ttl = cache_ttl_s
        self._size = cache_size
        self._cache: OrderedDict[str, tuple[float, AccessTokenClaims]] = OrderedDict()

    def cached(self, token: str) -> AccessTokenClaims | None:
        """The claims of a token verified in the last `cache_ttl_s` (and not expired), without
        awaiting; None when it must go through `verify`."""
        hit = self._cache.get(token)
        if hit is not None:
            now = self._now()
            if now < hit[0] and now < hit[1].exp:
                return hit[1]
        return None

    async def verify(self, token: str) -> AccessTokenClaims:
        now = self._now()
        hit = self._cache.get(token)
        if hit is not None:
            until, claims = hit
            if now < until and now < claims.exp:
                return claims
            del self._cache[token]
        claims = self._tokens.verify(token)
        if await self._revoked.peek(f"revoked:{claims.jti}") is not None:
            raise TokenInvalid("revoked")
        self._cache[token] = (min(now + self._ttl, claims.exp), claims)
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return claims

    async def revoke(self, claims: AccessTokenClaims) -> None:
        """RFC 7009 for access tokens: remember the jti until the token would expire anyway."""
        ttl = max(1.0, claims.exp - self._now())
        await self._revoked.claim(f"revoked:{claims.jti}", ttl)
        for token, (_, c) in list(self._cache.items()):
            if c.jti == claims.jti:
                del self._cache[token]
