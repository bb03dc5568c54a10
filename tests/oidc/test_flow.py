"""The whole flow with an unmodified standard client: Authlib's AsyncOAuth2Client (code +
PKCE S256) against the real server on loopback; the ID token verified with pyjwt against
/.well-known/jwks.json; userinfo, refresh, introspection, revocation."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from joserfc.jwk import ECKey

from tests.oidc.conftest import JKB, JKB_CB, OP, parse_page


async def _id_token_claims(base: str, id_token: str, client_id: str) -> dict[str, object]:
    async with httpx.AsyncClient() as h:
        conf = (await h.get(f"{base}/.well-known/openid-configuration")).json()
        jwks = (await h.get(conf["jwks_uri"])).json()
    kid = jwt.get_unverified_header(id_token)["kid"]
    key = jwt.PyJWKSet.from_dict(jwks)[kid]
    return dict(jwt.decode(id_token, key.key, algorithms=["ES256", "EdDSA"],
                           audience=client_id, issuer=base))


async def _browser_login(op: OP, url: str, token: str) -> str:
    """The browser fetches the page (keeping its binding cookie) and later polls."""
    async with httpx.AsyncClient(base_url=op.base) as browser:
        r = await browser.get(url)
        assert r.status_code == 200
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        page = parse_page(r.text)
        status, scanned = await op.scan(token, page.qr)
        assert status == 200, scanned
        assert scanned["client"]["display_name"] == "警快办"
        assert scanned["context"]["place"] == "127.0.0.1 (loopback)"
        assert page.number in scanned["number_choices"]
        status, _ = await op.approve(token, page.session_id, page.number)
        assert status == 200
        # Another browser (no cookie) learns the status but never the redirect.
        other = await op.poll(page.session_id)
        assert other == {"status": "approved", "expires_at": other["expires_at"]}
        polled = (await browser.get(f"/v1/login-sessions/{page.session_id}")).json()
        assert polled["status"] == "approved"
        return str(polled["redirect_to"])


async def test_authlib_code_pkce_userinfo_refresh_introspect_revoke(op: OP) -> None:
    secret = op.gw.demo_secret(JKB)["client_secret"]
    token = await op.resident("r-zhang-wei")
    rp = AsyncOAuth2Client(client_id=JKB, client_secret=secret, scope="openid profile essc",
                           redirect_uri=JKB_CB, code_challenge_method="S256")
    verifier = generate_token(48)
    nonce = generate_token(16)
    url, state = rp.create_authorization_url(f"{op.base}/oauth2/authorize",
                                             code_verifier=verifier, nonce=nonce)
    redirect_to = await _browser_login(op, url, token)
    q = parse_qs(urlsplit(redirect_to).query)
    assert redirect_to.startswith(JKB_CB + "?")
    assert q["state"] == [state] and q["iss"] == [op.base]      # RFC 9207

    tok = await rp.fetch_token(f"{op.base}/oauth2/token", authorization_response=redirect_to,
                               code_verifier=verifier, state=state)
    assert tok["token_type"] == "Bearer" and set(tok["scope"].split()) == {
        "openid", "profile", "essc"}
    claims = await _id_token_claims(op.base, tok["id_token"], JKB)
    assert claims["nonce"] == nonce and claims["azp"] == JKB and "auth_time" in claims
    assert "at_hash" in claims

    r = await rp.get(f"{op.base}/oauth2/userinfo")
    assert r.status_code == 200
    info = r.json()
    assert info["sub"] == claims["sub"]
    assert info["name"] == "张*" and info["essc_region"] == "CQ"
    assert info["essc_card_no"].startswith("CQ")
    # Pairwise: another sector sees another subject for the same resident.
    assert claims["sub"] != (await _sub_for(op, "rp-service-hall", token))

    first_refresh = tok["refresh_token"]
    new = await rp.refresh_token(f"{op.base}/oauth2/token", refresh_token=first_refresh)
    assert new["refresh_token"] != first_refresh
    assert (await _id_token_claims(op.base, new["id_token"], JKB))["sub"] == claims["sub"]

    r = await rp.introspect_token(f"{op.base}/oauth2/introspect", token=new["refresh_token"],
                                  token_type_hint="refresh_token")
    body = r.json()
    assert body["active"] is True and body["client_id"] == JKB and body["sub"] == claims["sub"]
    r = await rp.introspect_token(f"{op.base}/oauth2/introspect", token=first_refresh)
    assert r.json() == {"active": False}   # spent by rotation

    r = await rp.revoke_token(f"{op.base}/oauth2/revoke", token=new["refresh_token"],
                              token_type_hint="refresh_token")
    assert r.status_code == 200
    r = await rp.introspect_token(f"{op.base}/oauth2/introspect", token=new["refresh_token"])
    assert r.json() == {"active": False}
    # Revoking the refresh token ended the grant: its access token no longer works.
    r = await rp.get(f"{op.base}/oauth2/userinfo")
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    status, body = await op.token({"grant_type": "refresh_token",
                                   "refresh_token": new["refresh_token"]})
    assert status == 400 and body["error"] == "invalid_grant"
    await rp.aclose()


async def _sub_for(op: OP, client_id: str, token: str) -> str:
    req = op.auth_request(client_id=client_id, redirect_uri="http://127.0.0.1:8401/callback",
                          scope="openid")
    redirect_to = await op.login(req, token)
    code = parse_qs(urlsplit(redirect_to).query)["code"][0]
    status, body = await op.token({"grant_type": "authorization_code", "code": code,
                                   "redirect_uri": "http://127.0.0.1:8401/callback",
                                   "code_verifier": req.verifier}, client_id)
    assert status == 200, body
    return str(jwt.decode(body["id_token"], options={"verify_signature": False})["sub"])


async def test_authlib_private_key_jwt_client(op: OP) -> None:
    """rp-ykb-portal authenticates with private_key_jwt (RFC 7523) through Authlib."""
    cb = "http://127.0.0.1:8402/callback"
    pem = op.gw.demo_secret("rp-ykb-portal")["private_key_pem"]
    token_url = f"{op.base}/oauth2/token"
    rp = AsyncOAuth2Client(client_id="rp-ykb-portal", client_secret=ECKey.import_key(pem),
                           # Authlib's default assertion life (3600 s) exceeds our cap
                           # (GATEWAY_CLIENT_ASSERTION_MAX_TTL_S, 300 s): ask for 120 s;
                           # its `aud` is this first argument: our issuer, exactly.
                           token_endpoint_auth_method=PrivateKeyJWT(
                               op.base, alg="ES256", claims={"exp": int(time.time()) + 120}),
                           scope="openid profile", redirect_uri=cb,
                           code_challenge_method="S256")
    verifier = generate_token(48)
    url, state = rp.create_authorization_url(f"{op.base}/oauth2/authorize",
                                             code_verifier=verifier, nonce="n-portal")
    redirect_to = await _browser_login_any(op, url, await op.resident("r-li-na"))
    tok = await rp.fetch_token(token_url, authorization_response=redirect_to,
                               code_verifier=verifier, state=state)
    claims = await _id_token_claims(op.base, tok["id_token"], "rp-ykb-portal")
    assert claims["nonce"] == "n-portal"
    r = await rp.get(f"{op.base}/oauth2/userinfo")
    assert set(r.json()) == {"sub", "name"}   # profile only: no card data (minimisation)
    await rp.aclose()


async def _browser_login_any(op: OP, url: str, token: str) -> str:
    async with httpx.AsyncClient(base_url=op.base) as browser:
        page = parse_page((await browser.get(url)).text)
        assert (await op.scan(token, page.qr))[0] == 200
        assert (await op.approve(token, page.session_id, page.number))[0] == 200
        return str((await browser.get(f"/v1/login-sessions/{page.session_id}")).json()[
            "redirect_to"])


async def test_consent_is_remembered_listed_and_revocable(op: OP) -> None:
    token = await op.resident("r-wang-lei")
    req = op.auth_request(scope="openid profile")
    redirect_to = await op.login(req, token)
    code = parse_qs(urlsplit(redirect_to).query)["code"][0]
    status, tok = await op.token({"grant_type": "authorization_code", "code": code,
                                  "redirect_uri": JKB_CB, "code_verifier": req.verifier})
    assert status == 200
    h = {"Authorization": f"Bearer {token}"}
    listed = await (await op.c.get("/v1/me/authorisations", headers=h)).json()
    assert [a["client_id"] for a in listed["authorisations"]] == [JKB]
    assert listed["authorisations"][0]["scopes"] == ["openid", "profile"]
    page = await op.open_page(op.auth_request(scope="openid").url)
    status, scanned = await op.scan(token, page.qr)
    assert scanned["consent_remembered"] is True
    r = await op.c.delete(f"/v1/me/authorisations/{JKB}", headers=h)
    assert r.status == 204
    r = await op.c.get("/oauth2/userinfo",
                       headers={"Authorization": f"Bearer {tok['access_token']}"})
    assert r.status == 401
    status, body = await op.token({"grant_type": "refresh_token",
                                   "refresh_token": tok["refresh_token"]})
    assert status == 400 and body["error"] == "invalid_grant"
    r = await op.c.delete(f"/v1/me/authorisations/{JKB}", headers=h)
    assert r.status == 404


async def test_discovery_describes_what_the_provider_does(op: OP) -> None:
    async with httpx.AsyncClient() as h:
        conf = (await h.get(f"{op.base}/.well-known/openid-configuration")).json()
        for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint",
                     "revocation_endpoint", "introspection_endpoint", "jwks_uri"):
            assert conf[name].startswith(op.base)
            if name != "jwks_uri" and name != "token_endpoint":
                # each endpoint answers (not 404): GET with no parameters is a client error
                r = await h.get(conf[name])
                assert r.status_code in (400, 401, 405), (name, r.status_code)
    assert conf["issuer"] == op.base
    assert conf["code_challenge_methods_supported"] == ["S256"]
    assert conf["response_types_supported"] == ["code"]
    assert conf["subject_types_supported"] == ["pairwise"]
    assert conf["authorization_response_iss_parameter_supported"] is True
    assert {"authorization_code", "refresh_token"} <= set(conf["grant_types_supported"])
