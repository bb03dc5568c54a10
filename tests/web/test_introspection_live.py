"""Introspection (RFC 7662) decides `active` per call (issue 13): the token's signature is
checked once per token and worker (`BearerAuthenticator.live`, keyed by SHA-256), but its
revocation is read from the store on every call, so a token revoked through ANOTHER worker
(a second app over the same real Redis here) is inactive at once, not after the gate path's
10 s bearer cache; a store fault fails the call closed (503), never `active: true` from memory.
The active answer is encoded once per token, byte for byte what json_response wrote."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import redis.asyncio as aioredis

from gateway.web import oauth
from gateway.web.http import AUTHENTICATOR
from tests.redis_server import RedisServer
from tests.web.conftest import Gateway, GatewayFactory
from tests.web.test_bearer_cache import _counting

GATE = "gate-metro-l1-xiaoshizi"


async def _introspect(gw: Gateway, token: str) -> tuple[int, dict[str, Any], Any]:
    r = await gw.client.post("/oauth2/introspect", data={"token": token},
                             headers={"Authorization": gw.basic(GATE)})
    return r.status, json.loads(await r.read()), r


async def test_revoked_by_another_worker_is_inactive_at_once(
        make_gateway: GatewayFactory) -> None:
    here = await make_gateway()
    elsewhere = await make_gateway(issuer=here.base)  # the same Redis, keys and issuer
    token = await here.client_token(GATE)
    for _ in range(3):  # cached in this worker (bearer cache and signature cache)
        status, body, _ = await _introspect(here, token)
        assert status == 200 and body["active"] is True
    r = await elsewhere.client.post("/oauth2/revoke", data={"token": token},
                                    headers={"Authorization": elsewhere.basic(GATE)})
    assert r.status == 200
    status, body, _ = await _introspect(here, token)
    assert status == 200 and body == {"active": False}


async def test_signature_checked_once_revocation_read_every_call(
        gw: Gateway, redis_url: str) -> None:
    auth = gw.app[AUTHENTICATOR]
    token = await gw.client_token(GATE)
    status, body, _ = await _introspect(gw, token)  # the first call verifies it
    assert status == 200 and body["active"] is True
    calls = _counting(auth)
    r = aioredis.Redis.from_url(redis_url)
    try:
        before = int((await r.info("commandstats")).get("cmdstat_get", {}).get("calls", 0))
        for _ in range(5):
            status, body, _ = await _introspect(gw, token)
            assert status == 200 and body["active"] is True
        gets = int((await r.info("commandstats"))["cmdstat_get"]["calls"]) - before
    finally:
        await r.aclose()
    assert calls[0] == 0
    # per call: the client store's version and the token's revocation key (the app's
    # background tasks may read a key meanwhile, hence no upper bound)
    assert gets >= 10
    assert list(auth._live) == [hashlib.sha256(token.encode()).digest()]  # no token kept


async def test_a_lost_redis_fails_closed_with_the_signature_cached(
        make_gateway: GatewayFactory) -> None:
    own = RedisServer().start()  # this test's own redis-server: it kills it
    try:
        gw = await make_gateway(redis_url=own.url)
        token = await gw.client_token(GATE)
        for _ in range(2):
            status, body, _ = await _introspect(gw, token)
            assert status == 200 and body["active"] is True
        assert own.proc is not None
        own.proc.kill()
        own.proc.wait()
        own.proc = None
        status, body, _ = await _introspect(gw, token)
        assert status == 503 and body["error"] == "temporarily_unavailable"  # RFC 6749 §5.2
        assert token not in json.dumps(body)
    finally:
        own.stop()


async def test_the_active_answer_is_json_responses_bytes(gw: Gateway) -> None:
    token = await gw.client_token(GATE)
    claims = await gw.app[AUTHENTICATOR].live(token)
    expected = {
        "active": True, "client_id": claims.client_id, "scope": " ".join(sorted(claims.scopes)),
        "sub": claims.sub, "exp": claims.exp, "iat": claims.iat, "jti": claims.jti,
        "token_type": "Bearer", "iss": gw.base, "aud": gw.base, "scene": "metro"}
    for _ in range(2):  # encoded, then from the answer cache
        status, _body, r = await _introspect(gw, token)
        assert status == 200 and await r.read() == json.dumps(expected).encode()
        assert r.headers["Content-Type"] == "application/json; charset=utf-8"
        assert r.headers["Cache-Control"] == "no-store" and r.headers["Pragma"] == "no-cache"
    assert claims.jti in gw.app[oauth.INTROSPECTION_ANSWERS]
