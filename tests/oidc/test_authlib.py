"""Authlib (the Python OAuth/OIDC library; AsyncOAuth2Client over httpx) as the relying
party against the live gateway on a real loopback port, beside openid-client
(test_openid_client.py). Its JOSE companion joserfc verifies the ID tokens and signs the DPoP
proofs, so nothing here leans on the PyJWT the server uses.

What Authlib's client does, tested here:
- authorization code + PKCE S256 (`create_authorization_url(code_verifier=…)`, `fetch_token`),
  the ID token validated by Authlib's own `CodeIDToken` claims (iss, aud, nonce, at_hash);
- client authentication with each advertised method: `client_secret_basic`,
  `client_secret_post`, `private_key_jwt` (RFC 7523, Authlib's `PrivateKeyJWT`) and `none`
  (a public client);
- refresh (`refresh_token`), introspection (`introspect_token`, RFC 7662) and revocation
  (`revoke_token`, RFC 7009) with the same authentication.

What it does not do (Authlib 1.9.10, its source and tracker):
- **PAR** (RFC 9126): no client helper (authlib/authlib#814, an open draft). What it does
  support is authenticating any POST with its client authentication (`client_auth(method)`,
  an httpx `Auth`): the tests push with it and build the `request_uri` URL themselves.
- Its `PrivateKeyJWT` given extra `claims` reuses one `jti` for every assertion (it writes
  the jti into that dict); our server refuses the replay, so the tests make fresh claims.
- **DPoP** (RFC 9449): no client support (authlib/authlib#315 open; #808 an open draft). Its
  `TokenAuth` signs only `Bearer` (a `DPoP` token is `UnsupportedTokenTypeError`, asserted
  below so the day Authlib adds DPoP this module says so). The DPoP test makes proofs with
  joserfc and hands them to Authlib's `fetch_token(headers=…)` / `refresh_token(headers=…)`;
  the protected request is made by hand.
docs/oidc.md "Interoperability" says the same.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.integrations.httpx_client.oauth2_client import UnsupportedTokenTypeError
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt as jose_jwt
from joserfc.jwk import ECKey, KeySet, OKPKey

from tests.oidc.conftest import JKB, JKB_CB, OP, parse_page
from tests.oidc.test_dpop import _register

FORM_HEADERS = {"Accept": "application/json",
                "Content-Type": "application/x-www-form-urlencoded;charset=UTF-8"}


async def _validated_id_token(op: OP, id_token: str, client_id: str, nonce: str,
                              access_token: str) -> dict[str, Any]:
    """joserfc checks the signature against our JWKS, Authlib's CodeIDToken the claims."""
    async with httpx.AsyncClient() as h:
        conf = (await h.get(f"{op.base}/.well-known/openid-configuration")).json()
        keys = KeySet.import_key_set((await h.get(conf["jwks_uri"])).json())
    token = jose_jwt.decode(id_token, keys,
                            algorithms=conf["id_token_signing_alg_values_supported"])
    claims = CodeIDToken(token.claims, token.header,
                         options={"iss": {"essential": True, "value": op.base},
                                  "aud": {"essential": True, "values": [client_id]}},
                         params={"nonce": nonce, "access_token": access_token})
    claims.validate(now=int(time.time()))
    assert claims["at_hash"] and claims["azp"] == client_id
    return dict(claims)


async def _login(op: OP, url: str, resident: str = "r-zhang-wei") -> str:
    """The browser (httpx, keeping its binding cookie) and the resident app; the redirect."""
    async with httpx.AsyncClient(base_url=op.base) as browser:
        r = await browser.get(url)
        assert r.status_code == 200, r.text
        page = parse_page(r.text)
        token = await op.resident(resident)
        assert (await op.scan(token, page.qr))[0] == 200
        assert (await op.approve(token, page.session_id, page.number))[0] == 200
        polled = (await browser.get(f"/v1/login-sessions/{page.session_id}")).json()
        return str(polled["redirect_to"])


async def _code_flow_refresh_introspect_revoke(op: OP, rp: AsyncOAuth2Client, client_id: str,
                                               redirect_uri: str) -> None:
    """Everything Authlib's client does for an RP, with one authentication method."""
    token_url = f"{op.base}/oauth2/token"
    verifier, nonce = generate_token(48), generate_token(16)
    url, state = rp.create_authorization_url(f"{op.base}/oauth2/authorize",
                                             code_verifier=verifier, nonce=nonce)
    redirect_to = await _login(op, url)
    assert redirect_to.startswith(redirect_uri + "?")
    assert parse_qs(urlsplit(redirect_to).query)["iss"] == [op.base]
    tok = await rp.fetch_token(token_url, authorization_response=redirect_to,
                               code_verifier=verifier, state=state)
    assert tok["token_type"] == "Bearer"
    claims = await _validated_id_token(op, tok["id_token"], client_id, nonce,
                                       tok["access_token"])
    r = await rp.get(f"{op.base}/oauth2/userinfo")
    assert r.status_code == 200 and r.json()["sub"] == claims["sub"]

    first = tok["refresh_token"]
    new = await rp.refresh_token(token_url, refresh_token=first)
    assert new["refresh_token"] != first and new["access_token"] != tok["access_token"]
    r = await rp.introspect_token(f"{op.base}/oauth2/introspect", token=new["refresh_token"],
                                  token_type_hint="refresh_token")
    body = r.json()
    assert body["active"] is True and body["client_id"] == client_id
    r = await rp.introspect_token(f"{op.base}/oauth2/introspect", token=new["access_token"])
    assert r.json()["active"] is True and r.json()["sub"] == claims["sub"]
    r = await rp.revoke_token(f"{op.base}/oauth2/revoke", token=new["refresh_token"],
                              token_type_hint="refresh_token")
    assert r.status_code == 200
    r = await rp.introspect_token(f"{op.base}/oauth2/introspect", token=new["refresh_token"])
    assert r.json() == {"active": False}
    r = await rp.get(f"{op.base}/oauth2/userinfo")   # the grant is over
    assert r.status_code == 401


async def test_authlib_client_secret_post(op: OP) -> None:
    cb = "http://127.0.0.1:8420/cb"
    reg = await _register(op, {"client_id": "rp-authlib-post", "kind": "rp",
                               "display_name": "Authlib post", "redirect_uris": [cb],
                               "auth_method": "client_secret_post"})
    async with AsyncOAuth2Client(client_id="rp-authlib-post", client_secret=reg["client_secret"],
                                 token_endpoint_auth_method="client_secret_post",
                                 revocation_endpoint_auth_method="client_secret_post",
                                 scope="openid profile", redirect_uri=cb,
                                 code_challenge_method="S256") as rp:
        await _code_flow_refresh_introspect_revoke(op, rp, "rp-authlib-post", cb)


async def test_authlib_client_secret_basic(op: OP) -> None:
    async with AsyncOAuth2Client(client_id=JKB,
                                 client_secret=op.gw.demo_secret(JKB)["client_secret"],
                                 scope="openid profile essc", redirect_uri=JKB_CB,
                                 code_challenge_method="S256") as rp:
        assert rp.token_endpoint_auth_method == "client_secret_basic"
        await _code_flow_refresh_introspect_revoke(op, rp, JKB, JKB_CB)


class ShortPrivateKeyJWT(PrivateKeyJWT):
    """Authlib's PrivateKeyJWT, each assertion living 120 s: its default (3600 s) exceeds our
    cap (GATEWAY_CLIENT_ASSERTION_MAX_TTL_S, 300 s). Fresh extra claims for every assertion:
    Authlib 1.9.10 writes the `jti` it makes into the `claims` dict it was given, so a
    PrivateKeyJWT built with `claims=` sends one jti for ever after, and the second
    assertion is (rightly) refused as a replay."""

    def sign(self, auth: Any, token_endpoint: str) -> Any:
        self.claims = {"exp": int(time.time()) + 120}
        return super().sign(auth, token_endpoint)


def _private_key_jwt(op: OP) -> PrivateKeyJWT:
    # its `aud` is this first argument: our issuer, exactly (review finding 5)
    return ShortPrivateKeyJWT(op.base, alg="ES256")


async def test_authlib_private_key_jwt(op: OP) -> None:
    cb = "http://127.0.0.1:8402/callback"
    key = ECKey.import_key(op.gw.demo_secret("rp-ykb-portal")["private_key_pem"])
    async with AsyncOAuth2Client(client_id="rp-ykb-portal", client_secret=key,
                                 token_endpoint_auth_method=_private_key_jwt(op),
                                 revocation_endpoint_auth_method=_private_key_jwt(op),
                                 scope="openid profile", redirect_uri=cb,
                                 code_challenge_method="S256") as rp:
        await _code_flow_refresh_introspect_revoke(op, rp, "rp-ykb-portal", cb)


async def test_authlib_public_client_none(op: OP) -> None:
    """auth_method none: PKCE is the proof. Revocation works with client_id alone (RFC 7009
    §2.1); introspection needs a credential, which a public client has not."""
    cb = "http://127.0.0.1:8421/cb"
    await _register(op, {"client_id": "rp-authlib-spa", "kind": "rp",
                         "display_name": "Authlib SPA", "redirect_uris": [cb],
                         "auth_method": "none"})
    token_url = f"{op.base}/oauth2/token"
    async with AsyncOAuth2Client(client_id="rp-authlib-spa", scope="openid", redirect_uri=cb,
                                 code_challenge_method="S256") as rp:
        assert rp.token_endpoint_auth_method == "none"
        verifier, nonce = generate_token(48), generate_token(16)
        url, state = rp.create_authorization_url(f"{op.base}/oauth2/authorize",
                                                 code_verifier=verifier, nonce=nonce)
        tok = await rp.fetch_token(token_url, authorization_response=await _login(op, url),
                                   code_verifier=verifier, state=state)
        await _validated_id_token(op, tok["id_token"], "rp-authlib-spa", nonce,
                                  tok["access_token"])
        new = await rp.refresh_token(token_url, refresh_token=tok["refresh_token"])
        assert new["refresh_token"] != tok["refresh_token"]
        r = await rp.introspect_token(f"{op.base}/oauth2/introspect", token=new["access_token"])
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
        r = await rp.revoke_token(f"{op.base}/oauth2/revoke", token=new["refresh_token"])
        assert r.status_code == 200
        r = await rp.get(f"{op.base}/oauth2/userinfo")
        assert r.status_code == 401


async def _push(op: OP, rp: AsyncOAuth2Client, params: dict[str, str],
                headers: dict[str, str] | None = None) -> httpx.Response:
    """PAR with Authlib's client authentication (it has no PAR helper of its own)."""
    return await rp.post(f"{op.base}/oauth2/par", data=params, headers=headers,
                         auth=rp.client_auth(rp.token_endpoint_auth_method))


def _pushed_params(client_id: str, redirect_uri: str, verifier: str, nonce: str,
                   state: str, scope: str = "openid profile") -> dict[str, str]:
    return {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
            "scope": scope, "state": state, "nonce": nonce,
            "code_challenge": create_s256_code_challenge(verifier),
            "code_challenge_method": "S256"}


@pytest.mark.parametrize("method", ["client_secret_basic", "private_key_jwt"])
async def test_authlib_pushed_authorization_request(op: OP, method: str) -> None:
    if method == "private_key_jwt":
        client_id, cb = "rp-ykb-portal", "http://127.0.0.1:8402/callback"
        secret: Any = ECKey.import_key(op.gw.demo_secret(client_id)["private_key_pem"])
        auth: Any = _private_key_jwt(op)
    else:
        client_id, cb = JKB, JKB_CB
        secret, auth = op.gw.demo_secret(JKB)["client_secret"], method
    async with AsyncOAuth2Client(client_id=client_id, client_secret=secret,
                                 token_endpoint_auth_method=auth, redirect_uri=cb,
                                 code_challenge_method="S256") as rp:
        verifier, nonce, state = generate_token(48), generate_token(16), generate_token(16)
        r = await _push(op, rp, _pushed_params(client_id, cb, verifier, nonce, state))
        assert r.status_code == 201, r.text
        url = f"{op.base}/oauth2/authorize?" + urlencode(
            {"client_id": client_id, "request_uri": r.json()["request_uri"]})
        tok = await rp.fetch_token(f"{op.base}/oauth2/token",
                                   authorization_response=await _login(op, url),
                                   code_verifier=verifier, state=state)
        await _validated_id_token(op, tok["id_token"], client_id, nonce, tok["access_token"])
        # the pushed request is spent
        async with httpx.AsyncClient() as browser:
            assert (await browser.get(url)).status_code == 400


class DpopKey:
    """A DPoP key and its proofs, made with joserfc (RFC 9449 §4.2)."""

    def __init__(self, alg: str) -> None:
        self.alg = alg
        self.key: Any = (ECKey.generate_key("P-256") if alg == "ES256"   # else Ed25519
                         else OKPKey.generate_key("Ed25519"))

    @property
    def jkt(self) -> str:
        return str(self.key.thumbprint())

    def proof(self, method: str, url: str, nonce: str | None = None,
              access_token: str | None = None) -> str:
        claims: dict[str, Any] = {"jti": secrets.token_urlsafe(16), "htm": method, "htu": url,
                                  "iat": int(time.time())}
        if nonce:
            claims["nonce"] = nonce
        if access_token:
            claims["ath"] = base64.urlsafe_b64encode(
                hashlib.sha256(access_token.encode()).digest()).rstrip(b"=").decode()
        header = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.key.as_dict(private=False)}
        return jose_jwt.encode(header, claims, self.key, algorithms=[self.alg])


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", "Ed25519"])
async def test_authlib_with_dpop_proofs_made_by_hand(op: OP, alg: str) -> None:
    """PAR with a DPoP proof (binding the code, RFC 9449 §10.1), the code redeemed by
    Authlib with a proof in its headers, a DPoP refresh; Authlib itself cannot present the
    DPoP-bound token, so userinfo is called by hand."""
    key = DpopKey(alg)
    token_url, par_url = f"{op.base}/oauth2/token", f"{op.base}/oauth2/par"
    async with AsyncOAuth2Client(client_id=JKB,
                                 client_secret=op.gw.demo_secret(JKB)["client_secret"],
                                 redirect_uri=JKB_CB, code_challenge_method="S256") as rp:
        verifier, nonce, state = generate_token(48), generate_token(16), generate_token(16)
        r = await _push(op, rp, _pushed_params(JKB, JKB_CB, verifier, nonce, state),
                        headers={"DPoP": key.proof("POST", par_url)})
        assert r.status_code == 201, r.text
        server_nonce = r.headers["DPoP-Nonce"]
        url = f"{op.base}/oauth2/authorize?" + urlencode(
            {"client_id": JKB, "request_uri": r.json()["request_uri"]})
        tok = await rp.fetch_token(
            token_url, authorization_response=await _login(op, url), code_verifier=verifier,
            state=state,
            headers={**FORM_HEADERS, "DPoP": key.proof("POST", token_url, server_nonce)})
        assert tok["token_type"] == "DPoP"
        at = tok["access_token"]
        claims = jose_jwt.decode(at, KeySet.import_key_set(
            (await rp.get(f"{op.base}/.well-known/jwks.json", auth=None)).json()))
        assert claims.claims["cnf"] == {"jkt": key.jkt}
        with pytest.raises(UnsupportedTokenTypeError):
            await rp.get(f"{op.base}/oauth2/userinfo")   # Authlib signs Bearer only
        info_url = f"{op.base}/oauth2/userinfo"
        async with httpx.AsyncClient() as h:
            r = await h.get(info_url, headers={"Authorization": f"DPoP {at}",
                                               "DPoP": key.proof("GET", info_url,
                                                                 access_token=at)})
            assert r.status_code == 200 and r.json()["sub"]
        new = await rp.refresh_token(
            token_url, refresh_token=tok["refresh_token"],
            headers={**FORM_HEADERS, "DPoP": key.proof("POST", token_url, server_nonce)})
        assert new["token_type"] == "DPoP" and new["refresh_token"] != tok["refresh_token"]
