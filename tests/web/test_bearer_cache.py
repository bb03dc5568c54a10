"""BearerAuthenticator (gateway/services/auth.py): a verified token is cached; when it is not,
concurrent requests with it share one verification; a revocation is never undone by a
verification that overlapped it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.authz.tokens import TokenInvalid
from gateway.services.auth import BearerAuthenticator
from gateway.web.http import AUTHENTICATOR
from tests.web.conftest import Gateway

GATE = "gate-metro-l1-xiaoshizi"


def _counting(auth: BearerAuthenticator) -> list[int]:
    calls = [0]
    real = auth._tokens.verify

    def verify(token: str) -> Any:
        calls[0] += 1
        return real(token)

    auth._tokens.verify = verify  # type: ignore[method-assign]
    return calls


async def test_concurrent_misses_share_one_verification(gw: Gateway) -> None:
    auth = gw.app[AUTHENTICATOR]
    token = await gw.client_token(GATE)
    auth._cache.clear()
    calls = _counting(auth)
    claims = await asyncio.gather(*[auth.verify(token) for _ in range(50)])
    assert calls[0] == 1
    assert {c.jti for c in claims} == {claims[0].jti}
    assert auth.cached(token) is claims[0]
    assert not auth._checking


async def test_a_shared_failure_reaches_every_waiter(gw: Gateway) -> None:
    auth = gw.app[AUTHENTICATOR]
    token = await gw.client_token(GATE)
    bad = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    calls = _counting(auth)
    results = await asyncio.gather(*[auth.verify(bad) for _ in range(10)],
                                   return_exceptions=True)
    assert calls[0] == 1 and all(isinstance(r, TokenInvalid) for r in results)
    assert auth.cached(bad) is None and not auth._checking


async def test_a_revoked_token_is_refused_after_its_cache_entry_is_gone(gw: Gateway) -> None:
    auth = gw.app[AUTHENTICATOR]
    token = await gw.client_token(GATE)
    claims = await auth.verify(token)
    await auth.revoke(claims)
    assert auth.cached(token) is None
    with pytest.raises(TokenInvalid):
        await auth.verify(token)


async def test_a_check_overlapping_a_revocation_is_not_cached(gw: Gateway) -> None:
    auth = gw.app[AUTHENTICATOR]
    token = await gw.client_token(GATE)
    other = await auth.verify(await gw.client_token(GATE))
    auth._cache.clear()
    # hold the check at its revocation read (the real store's, just later)
    released = asyncio.Event()
    real_peek = auth._revoked.peek

    async def later_peek(key: str) -> Any:
        await released.wait()
        return await real_peek(key)

    auth._revoked.peek = later_peek  # type: ignore[method-assign]
    pending = asyncio.ensure_future(auth.verify(token))
    await asyncio.sleep(0.01)                   # the check is waiting on its read
    await auth.revoke(other)                    # a revocation lands meanwhile
    released.set()
    assert (await pending).jti != other.jti     # the token itself is fine...
    assert auth.cached(token) is None           # ...but not trusted from cache: checked again
