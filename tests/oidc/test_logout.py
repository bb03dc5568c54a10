"""OpenID Connect RP-Initiated Logout 1.0 at /oauth2/logout: id_token_hint, an exactly
registered post_logout_redirect_uri, state; the grant the ID token names ends."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest

from gateway.settings import config_from_env
from tests.oidc.conftest import JKB, JKB_CB, OP
from tests.web.conftest import GatewayFactory

LOGGED_OUT = "http://127.0.0.1:8400/logged-out"


async def _tokens(op: OP) -> dict[str, str]:
    req = op.auth_request()
    redirect_to = await op.login(req, await op.resident())
    code = parse_qs(urlsplit(redirect_to).query)["code"][0]
    status, body = await op.token({"grant_type": "authorization_code", "code": code,
                                   "redirect_uri": JKB_CB, "code_verifier": req.verifier})
    assert status == 200
    return dict(body)


async def _still_active(op: OP, tokens: dict[str, str]) -> bool:
    r = await op.c.post("/oauth2/introspect", data={"token": tokens["refresh_token"]},
                        headers={"Authorization": op.gw.basic(JKB)})
    return bool((await r.json())["active"])


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_logout_ends_the_grant_and_returns_to_the_rp(op: OP, method: str) -> None:
    tokens = await _tokens(op)
    params = {"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": LOGGED_OUT,
              "state": "s-123"}
    if method == "GET":
        r = await op.c.get("/oauth2/logout?" + urlencode(params), allow_redirects=False)
    else:
        r = await op.c.post("/oauth2/logout", data=params, allow_redirects=False)
    assert r.status == 302 and r.headers["Location"] == f"{LOGGED_OUT}?state=s-123"
    assert not await _still_active(op, tokens)
    r = await op.c.get("/oauth2/userinfo",
                       headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert r.status == 401
    status, body = await op.token({"grant_type": "refresh_token",
                                   "refresh_token": tokens["refresh_token"]})
    assert status == 400 and body["error"] == "invalid_grant"


@pytest.mark.parametrize("bad", [
    {"post_logout_redirect_uri": "http://127.0.0.1:8400/logged-out/"},   # not exact
    {"post_logout_redirect_uri": "https://evil.example/"},
    {"post_logout_redirect_uri": JKB_CB},     # a login redirect URI is not a logout one
    {"client_id": "rp-service-hall"},         # the hint names another client
])
async def test_a_bad_logout_request_is_a_page_and_ends_nothing(
        op: OP, bad: dict[str, str]) -> None:
    tokens = await _tokens(op)
    params = {"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": LOGGED_OUT,
              **bad}
    r = await op.c.get("/oauth2/logout?" + urlencode(params), allow_redirects=False)
    assert r.status == 400 and "text/html" in r.headers["Content-Type"]
    assert await _still_active(op, tokens)


async def test_only_our_id_tokens_are_hints(op: OP) -> None:
    tokens = await _tokens(op)
    for hint in (tokens["access_token"], "x.y.z"):
        r = await op.c.get("/oauth2/logout?" + urlencode({"id_token_hint": hint}),
                           allow_redirects=False)
        assert r.status == 400
    assert await _still_active(op, tokens)


async def test_logout_without_a_hint_shows_the_page(op: OP) -> None:
    r = await op.c.get("/oauth2/logout", allow_redirects=False)
    assert r.status == 200 and "Logged out" in await r.text()
    # a redirect needs a client that registered it
    r = await op.c.get("/oauth2/logout?" + urlencode({
        "client_id": JKB, "post_logout_redirect_uri": LOGGED_OUT}), allow_redirects=False)
    assert r.status == 302
    r = await op.c.get("/oauth2/logout?" + urlencode({"post_logout_redirect_uri": LOGGED_OUT}),
                       allow_redirects=False)
    assert r.status == 400


async def test_discovery_names_the_end_session_endpoint(op: OP) -> None:
    doc = await (await op.c.get("/.well-known/openid-configuration")).json()
    assert doc["end_session_endpoint"] == f"{op.base}/oauth2/logout"


# -- OIDC Back-Channel Logout 1.0 ---------------------------------------------------------------
async def test_logout_tells_the_rps_back_end_with_a_logout_token(op: OP) -> None:
    """A relying party registered with a backchannel_logout_uri (here a real HTTP server on
    loopback) receives, when its grant ends by RP-initiated logout, a logout token it can
    verify from the JWKS: typ logout+jwt, iss, aud, the ID token's sub and sid, the event,
    no nonce."""
    import asyncio
    import base64

    import jwt
    from aiohttp import web
    from aiohttp.test_utils import TestServer
    from jwt import PyJWKSet

    received: asyncio.Queue[str] = asyncio.Queue()

    async def backchannel(request: web.Request) -> web.Response:
        form = await request.post()
        await received.put(str(form["logout_token"]))
        return web.Response(status=200, headers={"Cache-Control": "no-store"})

    rp_app = web.Application()
    rp_app.router.add_post("/backchannel-logout", backchannel)
    rp = TestServer(rp_app, host="127.0.0.1")
    await rp.start_server()
    try:
        cb = "http://127.0.0.1:8413/cb"
        admin = {"Authorization": "Bearer " + (op.gw.settings.keys_dir / "sandbox" /
                                               "admin-token").read_text().strip()}
        r = await op.c.post("/admin/v1/clients", headers=admin, json={
            "client_id": "rp-backchannel", "kind": "rp", "display_name": "Back-channel RP",
            "redirect_uris": [cb], "post_logout_redirect_uris": [cb + "/bye"],
            "backchannel_logout_uri": str(rp.make_url("/backchannel-logout"))})
        assert r.status == 201, await r.text()
        basic = "Basic " + base64.b64encode(
            f"rp-backchannel:{(await r.json())['client_secret']}".encode()).decode()
        req = op.auth_request(client_id="rp-backchannel", redirect_uri=cb)
        redirect_to = await op.login(req, await op.resident())
        code = parse_qs(urlsplit(redirect_to).query)["code"][0]
        r = await op.c.post("/oauth2/token", headers={"Authorization": basic}, data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": cb,
            "code_verifier": req.verifier})
        tokens = await r.json()
        r = await op.c.get("/oauth2/logout?" + urlencode({
            "id_token_hint": tokens["id_token"], "post_logout_redirect_uri": cb + "/bye"}),
            allow_redirects=False)
        assert r.status == 302
        logout_token = await asyncio.wait_for(received.get(), 5)
    finally:
        await rp.close()
    jwks = PyJWKSet.from_dict(await (await op.c.get("/.well-known/jwks.json")).json())
    head = jwt.get_unverified_header(logout_token)
    assert head["typ"] == "logout+jwt"
    claims = jwt.decode(logout_token, jwks[head["kid"]].key, algorithms=[head["alg"]],
                        audience="rp-backchannel", issuer=op.base)
    id_claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert claims["sub"] == id_claims["sub"] and claims["sid"] == id_claims["sid"]
    assert claims["events"] == {"http://schemas.openid.net/event/backchannel-logout": {}}
    assert "nonce" not in claims and claims["jti"] and claims["exp"] > claims["iat"]
    doc = await (await op.c.get("/.well-known/openid-configuration")).json()
    assert doc["backchannel_logout_supported"] is True
    assert doc["backchannel_logout_session_supported"] is True


async def test_logout_is_limited_per_client_address(make_gateway: GatewayFactory) -> None:
    """The logout page spends its caller's own `login_ip` allowance (GATEWAY_RATELIMIT_LOGIN_IP),
    the client address as the authorization page reads it. It used to spend one bucket shared
    by every caller (the kind's name was passed as the address): a burst of ten logouts from
    anywhere locked every resident out of logging out for the rest of the window."""
    limits = config_from_env({"GATEWAY_RATELIMIT_LOGIN_IP": "1/60/1"})
    gw = await make_gateway(rate_limits=limits)
    # 127.0.0.1 spends its allowance on the authorization page: its logout is refused too
    r = await gw.client.get("/oauth2/authorize?client_id=" + JKB)
    assert r.status != 429
    r = await gw.client.get("/oauth2/logout", allow_redirects=False)
    assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
    # another caller (another loopback source address) has its own allowance
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(connector=connector) as other:
        async with other.get(f"{gw.base}/oauth2/logout", allow_redirects=False) as r:
            assert r.status != 429
        async with other.get(f"{gw.base}/oauth2/logout", allow_redirects=False) as r:
            assert r.status == 429
