"""DPoP (RFC 9449) against the live gateway: proofs made here with `cryptography` + PyJWT as a
client library would (ES256 and EdDSA keys), the server nonce dance, `cnf.jkt` in access
tokens, bound refresh tokens for public clients, userinfo and /v1/certificates/query
enforcing the binding, and a DPoP-only client refused bearer tokens."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.authz.dpop import thumbprint
from tests.oidc.conftest import JKB, JKB_CB, OP


class Key:
    """A client's DPoP key pair and the proofs it signs."""

    def __init__(self, alg: str = "ES256") -> None:
        self.alg = alg
        self.private: Any = (ec.generate_private_key(ec.SECP256R1()) if alg == "ES256"
                             else ed25519.Ed25519PrivateKey.generate())
        algo = jwt.get_algorithm_by_name(alg)
        self.jwk = json.loads(algo.to_jwk(self.private.public_key()))

    @property
    def jkt(self) -> str:
        return thumbprint(self.jwk)

    def proof(self, method: str, url: str, *, nonce: str | None = None,
              access_token: str | None = None, iat: float | None = None) -> str:
        claims: dict[str, Any] = {"jti": secrets.token_urlsafe(16), "htm": method, "htu": url,
                                  "iat": int(iat if iat is not None else time.time())}
        if nonce:
            claims["nonce"] = nonce
        if access_token:
            claims["ath"] = base64.urlsafe_b64encode(
                hashlib.sha256(access_token.encode()).digest()).rstrip(b"=").decode()
        return jwt.encode(claims, self.private, algorithm=self.alg,
                          headers={"typ": "dpop+jwt", "jwk": self.jwk})


async def _code(op: OP, client_id: str = JKB, redirect_uri: str = JKB_CB) -> tuple[str, str]:
    req = op.auth_request(client_id=client_id, redirect_uri=redirect_uri)
    redirect_to = await op.login(req, await op.resident())
    return parse_qs(urlsplit(redirect_to).query)["code"][0], req.verifier


async def _token(op: OP, form: dict[str, str], key: Key | None,
                 headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    """One token request with the nonce dance: a first proof without a nonce is answered
    use_dpop_nonce + DPoP-Nonce; the retry carries it."""
    url = f"{op.base}/oauth2/token"
    h = dict(headers or {})
    if key is not None:
        h["DPoP"] = key.proof("POST", url)
    r = await op.c.post("/oauth2/token", data=form, headers=h)
    body = await r.json()
    if key is not None and r.status == 400 and body.get("error") == "use_dpop_nonce":
        h["DPoP"] = key.proof("POST", url, nonce=r.headers["DPoP-Nonce"])
        r = await op.c.post("/oauth2/token", data=form, headers=h)
        body = await r.json()
    return r.status, body, r.headers.get("DPoP-Nonce", "")


async def _bound_tokens(op: OP, key: Key) -> dict[str, Any]:
    code, verifier = await _code(op)
    status, body, _ = await _token(op, {"grant_type": "authorization_code", "code": code,
                                        "redirect_uri": JKB_CB, "code_verifier": verifier},
                                   key, {"Authorization": op.gw.basic(JKB)})
    assert status == 200, body
    return body


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
async def test_code_flow_with_dpop_binds_the_access_token(op: OP, alg: str) -> None:
    key = Key(alg)
    code, verifier = await _code(op)
    url = f"{op.base}/oauth2/token"
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": JKB_CB,
            "code_verifier": verifier}
    r = await op.c.post("/oauth2/token", data=form, headers={
        "Authorization": op.gw.basic(JKB), "DPoP": key.proof("POST", url)})
    assert r.status == 400 and (await r.json())["error"] == "use_dpop_nonce"
    nonce = r.headers["DPoP-Nonce"]
    r = await op.c.post("/oauth2/token", data=form, headers={
        "Authorization": op.gw.basic(JKB), "DPoP": key.proof("POST", url, nonce=nonce)})
    body = await r.json()
    assert r.status == 200 and body["token_type"] == "DPoP", body
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["cnf"] == {"jkt": key.jkt}
    info = f"{op.base}/oauth2/userinfo"
    at = body["access_token"]
    r = await op.c.get("/oauth2/userinfo", headers={
        "Authorization": f"DPoP {at}", "DPoP": key.proof("GET", info, access_token=at)})
    assert r.status == 200 and (await r.json())["sub"]


async def test_userinfo_enforces_the_binding(op: OP) -> None:
    key = Key()
    at = (await _bound_tokens(op, key))["access_token"]
    info = f"{op.base}/oauth2/userinfo"

    async def status(headers: dict[str, str]) -> int:
        r = await op.c.get("/oauth2/userinfo", headers=headers)
        if r.status == 401:
            assert r.headers["WWW-Authenticate"].startswith("DPoP")
            assert (await r.json())["error"] in ("invalid_token", "invalid_dpop_proof")
        return r.status

    assert await status({"Authorization": f"Bearer {at}"}) == 401     # bearer use refused
    assert await status({"Authorization": f"DPoP {at}"}) == 401       # no proof
    assert await status({"Authorization": f"DPoP {at}",               # another key's proof
                         "DPoP": Key().proof("GET", info, access_token=at)}) == 401
    assert await status({"Authorization": f"DPoP {at}",               # no ath
                         "DPoP": key.proof("GET", info)}) == 401
    assert await status({"Authorization": f"DPoP {at}",               # other request
                         "DPoP": key.proof("POST", info, access_token=at)}) == 401
    assert await status({"Authorization": f"DPoP {at}",               # stale
                         "DPoP": key.proof("GET", info, access_token=at,
                                           iat=time.time() - 300)}) == 401
    good = key.proof("GET", info, access_token=at)
    assert await status({"Authorization": f"DPoP {at}", "DPoP": good}) == 200
    assert await status({"Authorization": f"DPoP {at}", "DPoP": good}) == 401  # replayed jti
    # and a bearer token may not be dressed as a DPoP one
    plain = (await op.token(_code_form(*(await _code(op)))))[1]["access_token"]
    assert await status({"Authorization": f"DPoP {plain}",
                         "DPoP": key.proof("GET", info, access_token=plain)}) == 401


def _code_form(code: str, verifier: str) -> dict[str, str]:
    return {"grant_type": "authorization_code", "code": code, "redirect_uri": JKB_CB,
            "code_verifier": verifier}


async def test_bad_proofs_at_the_token_endpoint(op: OP) -> None:
    key = Key()
    url = f"{op.base}/oauth2/token"
    code, verifier = await _code(op)
    form = _code_form(code, verifier)
    basic = {"Authorization": op.gw.basic(JKB)}
    r = await op.c.post("/oauth2/token", data=form, headers={**basic, "DPoP": "x.y.z"})
    assert r.status == 400 and (await r.json())["error"] == "invalid_dpop_proof"
    nonce = r.headers["DPoP-Nonce"]
    wrong_url = key.proof("POST", f"{op.base}/oauth2/other", nonce=nonce)
    r = await op.c.post("/oauth2/token", data=form, headers={**basic, "DPoP": wrong_url})
    assert r.status == 400 and (await r.json())["error"] == "invalid_dpop_proof"
    forged_nonce = key.proof("POST", url, nonce="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
    r = await op.c.post("/oauth2/token", data=form, headers={**basic, "DPoP": forged_nonce})
    assert r.status == 400 and (await r.json())["error"] == "use_dpop_nonce"
    # none of these spent the code
    status, body, _ = await _token(op, form, key, basic)
    assert status == 200 and body["token_type"] == "DPoP"


async def _register(op: OP, spec: dict[str, Any]) -> dict[str, Any]:
    admin = {"Authorization": "Bearer " + (op.gw.settings.keys_dir / "sandbox" /
                                           "admin-token").read_text().strip()}
    r = await op.c.post("/admin/v1/clients", headers=admin, json=spec)
    assert r.status == 201, await r.text()
    return dict(await r.json())


async def test_a_public_clients_refresh_tokens_are_bound_to_its_key(op: OP) -> None:
    cb = "http://127.0.0.1:8411/cb"
    await _register(op, {"client_id": "rp-public-dpop", "kind": "rp", "display_name": "SPA",
                         "auth_method": "none", "redirect_uris": [cb]})
    key = Key("EdDSA")
    code, verifier = await _code(op, "rp-public-dpop", cb)
    status, body, _ = await _token(op, {"grant_type": "authorization_code", "code": code,
                                        "redirect_uri": cb, "code_verifier": verifier,
                                        "client_id": "rp-public-dpop"}, key)
    assert status == 200 and body["token_type"] == "DPoP", body
    refresh = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"],
               "client_id": "rp-public-dpop"}
    status, other, _ = await _token(op, refresh, Key())          # another key
    assert status == 400 and other["error"] == "invalid_grant"
    status, other, _ = await _token(op, refresh, None)           # no proof at all
    assert status == 400 and other["error"] == "invalid_grant"
    status, again, _ = await _token(op, refresh, key)            # its own key
    assert status == 200 and again["token_type"] == "DPoP"
    claims = jwt.decode(again["access_token"], options={"verify_signature": False})
    assert claims["cnf"]["jkt"] == key.jkt


async def test_a_dpop_only_client_gets_no_bearer_token(op: OP) -> None:
    cb = "http://127.0.0.1:8412/cb"
    reg = await _register(op, {"client_id": "rp-dpop-only", "kind": "rp",
                               "display_name": "DPoP only", "redirect_uris": [cb],
                               "dpop_bound_access_tokens": True})
    basic = "Basic " + base64.b64encode(
        f"rp-dpop-only:{reg['client_secret']}".encode()).decode()
    code, verifier = await _code(op, "rp-dpop-only", cb)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": cb,
            "code_verifier": verifier}
    status, body, _ = await _token(op, form, None, {"Authorization": basic})
    assert status == 400 and body["error"] == "invalid_dpop_proof"
    status, body, _ = await _token(op, {"grant_type": "client_credentials"}, None,
                                   {"Authorization": basic})
    assert status == 400 and body["error"] == "invalid_dpop_proof"
    status, body, _ = await _token(op, form, Key(), {"Authorization": basic})
    assert status == 200 and body["token_type"] == "DPoP"


async def test_certificate_query_enforces_the_binding(op: OP) -> None:
    key = Key()
    status, body, _ = await _token(op, {"grant_type": "client_credentials",
                                        "scope": "certificates:read"}, key,
                                   {"Authorization": op.gw.basic("rp-service-hall")})
    assert status == 200 and body["token_type"] == "DPoP"
    at = body["access_token"]
    url = f"{op.base}/v1/certificates/query"
    query = {"consent_id": "cns_" + "A" * 22}
    r = await op.c.post("/v1/certificates/query", json=query,
                        headers={"Authorization": f"Bearer {at}"})
    assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("DPoP")
    r = await op.c.post("/v1/certificates/query", json=query, headers={
        "Authorization": f"DPoP {at}", "DPoP": Key().proof("POST", url, access_token=at)})
    assert r.status == 401
    r = await op.c.post("/v1/certificates/query", json=query, headers={
        "Authorization": f"DPoP {at}", "DPoP": key.proof("POST", url, access_token=at)})
    assert r.status == 404   # past authentication: no such consent


async def test_discovery_advertises_dpop(op: OP) -> None:
    doc = await (await op.c.get("/.well-known/openid-configuration")).json()
    assert doc["dpop_signing_alg_values_supported"] == ["ES256", "EdDSA", "Ed25519"]
