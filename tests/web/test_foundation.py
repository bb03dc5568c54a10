"""The foundation through the real app: meta endpoints, errors, client_credentials."""

from __future__ import annotations

import time
import uuid

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tests.web.conftest import Gateway


async def test_health_and_readiness(gw: Gateway) -> None:
    r = await gw.client.get("/healthz")
    assert r.status == 200 and (await r.json())["status"] == "ok"
    r = await gw.client.get("/readyz")
    body = await r.json()
    assert r.status == 200 and body["checks"]["redis"] == "ok"


async def test_unknown_path_is_problem_json(gw: Gateway) -> None:
    r = await gw.client.get("/nope", headers={"X-Request-Id": "abc-123"})
    assert r.status == 404
    assert r.content_type == "application/problem+json"
    body = await r.json()
    assert body["code"] == "not_found" and body["request_id"] == "abc-123"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Server"] == "cq-gateway"   # no stack or version fingerprint


async def test_no_answer_names_the_stack(gw: Gateway) -> None:
    token = await gw.client_token("gate-metro-l1-xiaoshizi")
    answers = [await gw.client.get("/healthz"), await gw.client.get("/v1/trust-list"),
               await gw.client.post("/v1/codes/verify", json={
                   "code": "YK1:X", "scene": "metro", "request_id": "srv-1"},
                   headers={"Authorization": f"Bearer {token}"}),
               await gw.client.get("/.well-known/openid-configuration")]
    for r in answers:
        assert r.headers.getall("Server") == ["cq-gateway"], r.url


async def test_discovery_and_jwks(gw: Gateway) -> None:
    d = await (await gw.client.get("/.well-known/openid-configuration")).json()
    assert d["issuer"] == gw.base and d["code_challenge_methods_supported"] == ["S256"]
    keys = (await (await gw.client.get("/.well-known/jwks.json")).json())["keys"]
    assert len(keys) == 2 and all("d" not in k for k in keys)


async def test_gate_gets_token_with_secret(gw: Gateway) -> None:
    token = await gw.client_token("gate-metro-l1-xiaoshizi")
    jwks = (await (await gw.client.get("/.well-known/jwks.json")).json())
    header = jwt.get_unverified_header(token)
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(token, jwt.PyJWK(key).key, algorithms=["ES256"], audience=gw.base,
                        issuer=gw.base)
    assert claims["client_id"] == "gate-metro-l1-xiaoshizi" and claims["scene"] == "metro"
    assert header["typ"] == "at+jwt"


def _assertion(gw: Gateway, client_id: str, **over: object) -> str:
    cred = gw.demo_secret(client_id)
    key = load_pem_private_key(cred["private_key_pem"].encode(), None)
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": gw.base,
              "iat": now, "exp": now + 60, "jti": uuid.uuid4().hex, **over}
    return jwt.encode(claims, key, algorithm="ES256",
                      headers={"kid": cred["public_jwk"]["kid"]})


async def test_gate_gets_token_with_private_key_jwt_once(gw: Gateway) -> None:
    a = _assertion(gw, "gate-metro-l2-jwt")
    form = {"grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": a}
    r = await gw.client.post("/oauth2/token", data=form)
    assert r.status == 200, await r.text()
    assert r.headers["Cache-Control"] == "no-store"
    r = await gw.client.post("/oauth2/token", data=form)
    assert r.status == 401 and (await r.json())["error"] == "invalid_client"


async def test_expired_or_wrong_audience_assertion_refused(gw: Gateway) -> None:
    ct = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    for over in ({"exp": int(time.time()) - 60}, {"aud": "https://elsewhere"},
                 {"exp": int(time.time()) + 3600}):
        form = {"grant_type": "client_credentials", "client_assertion_type": ct,
                "client_assertion": _assertion(gw, "gate-metro-l2-jwt", **over)}
        r = await gw.client.post("/oauth2/token", data=form)
        assert r.status == 401 and (await r.json())["error"] == "invalid_client"


async def test_wrong_secret_and_unknown_client(gw: Gateway) -> None:
    import base64

    for cid, secret in (("gate-metro-l1-xiaoshizi", "wrong"), ("nobody", "x")):
        h = "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()
        r = await gw.client.post("/oauth2/token", data={"grant_type": "client_credentials"},
                                 headers={"Authorization": h})
        assert r.status == 401
        assert (await r.json()) == {"error": "invalid_client",
                                    "error_description": "Client authentication failed"}
        assert "WWW-Authenticate" in r.headers


async def test_token_endpoint_bad_inputs(gw: Gateway) -> None:
    h = {"Authorization": gw.basic("gate-metro-l1-xiaoshizi")}
    r = await gw.client.post("/oauth2/token", json={"grant_type": "client_credentials"}, headers=h)
    assert r.status == 400 and (await r.json())["error"] == "invalid_request"
    r = await gw.client.post("/oauth2/token", data={"grant_type": "password"}, headers=h)
    assert (await r.json())["error"] == "unsupported_grant_type"
    r = await gw.client.post("/oauth2/token", data={"grant_type": "client_credentials",
                                                    "scope": "certificates:read"}, headers=h)
    assert (await r.json())["error"] == "invalid_scope"
    r = await gw.client.post("/oauth2/token", data=b"a=" + b"x" * 40000, headers={
        **h, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 413


async def test_key_rotation_keeps_old_tokens_valid(gw: Gateway) -> None:
    from gateway.adapters.keyfiles import KeyRingFiles
    from gateway.app import CORE
    from gateway.web.http import AUTHENTICATOR

    old = await gw.client_token("gate-metro-l1-xiaoshizi")
    core = gw.app[CORE]
    KeyRingFiles(gw.settings.keys_dir, "token").rotate(time.time(), 3600)
    assert core.token_ring.reload_if_changed()
    new = await gw.client_token("gate-metro-l1-xiaoshizi")
    assert jwt.get_unverified_header(old)["kid"] != jwt.get_unverified_header(new)["kid"]
    assert AUTHENTICATOR in gw.app
    r = await gw.client.post("/oauth2/introspect", data={"token": old},
                             headers={"Authorization": gw.basic("gate-metro-l1-xiaoshizi")})
    assert (await r.json())["active"] is True
    jwks = await (await gw.client.get("/.well-known/jwks.json")).json()
    kids = {k["kid"] for k in jwks["keys"]}
    assert jwt.get_unverified_header(old)["kid"] in kids


async def test_method_not_allowed_names_the_allowed_methods(gw: Gateway) -> None:
    r = await gw.client.delete("/v1/codes")
    assert r.status == 405 and "POST" in r.headers["Allow"]
    assert (await r.json())["code"] == "invalid_request"  # one of the contract's stable codes


async def test_openapi_servers_is_this_apps_issuer(gw: Gateway, make_gateway: object) -> None:
    other = await make_gateway()  # type: ignore[operator]
    for g in (gw, other):
        doc = await (await g.client.get("/openapi.json")).json()
        assert doc["servers"] == [{"url": g.base}]


async def test_userinfo_bearer_challenges_follow_rfc6750(gw: Gateway) -> None:
    r = await gw.client.get("/oauth2/userinfo")
    assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error=" not in r.headers["WWW-Authenticate"]       # RFC 6750 §3.1
    assert (await r.json())["error"] == "invalid_token"          # a JSON body all the same
    r = await gw.client.get("/oauth2/userinfo", headers={"Authorization": "Bearer nope"})
    assert r.status == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert (await r.json())["error"] == "invalid_token"


async def test_chunked_body_over_the_limit_is_413(gw: Gateway) -> None:
    token = await gw.client_token("gate-metro-l1-xiaoshizi")

    async def chunks():  # no Content-Length: the limit holds while reading
        for _ in range(40):
            yield b" " * 1024

    r = await gw.client.post("/v1/codes/verify", data=chunks(), headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert r.status == 413 and (await r.json())["code"] == "payload_too_large"
