"""Issue 16: each finding of the security review, with a test that failed before its fix."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt import PyJWKSet

from gateway.app import CORE
from gateway.authz.client_auth import JWT_BEARER
from gateway.authz.clients import Client
from gateway.settings import config_from_env
from tests.consents.conftest import Api
from tests.oidc.conftest import JKB, JKB_CB, JWT_TYPE, OP, TOKEN_EXCHANGE
from tests.web.conftest import Gateway, GatewayFactory

RESIDENTS = Path(__file__).resolve().parents[2] / "gateway" / "data" / "residents.json"


# -- finding 1: number matching is on by default ------------------------------------------------
async def test_number_matching_is_required_by_default(op: OP) -> None:
    """A victim who scans an attacker's QR and approves with no body must not log the
    attacker's browser in: the approval has to name the number that browser shows."""
    token = await op.resident()
    page = await op.open_page(op.auth_request().url)
    status, scanned = await op.scan(token, page.qr)
    assert status == 200 and page.number in scanned["number_choices"]
    r = await op.c.post(f"/v1/login-sessions/{page.session_id}/approve",
                        headers={"Authorization": f"Bearer {token}"})
    assert r.status == 400 and (await r.json())["code"] == "invalid_request"
    assert (await op.poll(page.session_id))["status"] == "scanned"
    assert (await op.approve(token, page.session_id, page.number))[0] == 200


async def test_without_number_matching_no_choices_are_offered(
        make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Turned off, the scan answer lists no choices (a guess among them would win 1 in 3)."""
    limits = config_from_env({"GATEWAY_RATELIMIT_LOGIN_IP": "1000/1/1000"})
    op = OP(await make_gateway(rate_limits=limits, login_require_number=False))
    token = await op.resident()
    page = await op.open_page(op.auth_request().url)
    status, scanned = await op.scan(token, page.qr)
    assert status == 200 and "number_choices" not in scanned
    r = await op.c.post(f"/v1/login-sessions/{page.session_id}/approve",
                        headers={"Authorization": f"Bearer {token}"})
    assert r.status == 200, await r.text()


# -- finding 3: `none` only where RFC 6749 allows a public client ---------------------------
@pytest.fixture
def gw(op: OP) -> Gateway:
    return op.gw


def _admin(gw: Gateway) -> dict[str, str]:
    token = (gw.settings.keys_dir / "sandbox" / "admin-token").read_text().strip()
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("kind,extra", [("gate", {"scene": "library"}), ("app", {})])
async def test_registration_refuses_none_for_confidential_kinds(
        gw: Gateway, kind: str, extra: dict[str, str]) -> None:
    spec = {"client_id": f"{kind}-public-1", "kind": kind, "display_name": "Public",
            "auth_method": "none", **extra}
    r = await gw.client.post("/admin/v1/clients", json=spec, headers=_admin(gw))
    assert r.status == 400 and (await r.json())["code"] == "invalid_request"


async def test_a_public_rp_may_not_use_client_credentials(gw: Gateway) -> None:
    """RFC 6749 §4.4: the client credentials grant MUST only be used by confidential clients."""
    spec = {"client_id": "rp-public-1", "kind": "rp", "display_name": "Public RP",
            "auth_method": "none", "redirect_uris": ["http://127.0.0.1:8409/cb"]}
    r = await gw.client.post("/admin/v1/clients", json=spec, headers=_admin(gw))
    assert r.status == 201, await r.text()
    r = await gw.client.post("/oauth2/token", data={"grant_type": "client_credentials",
                                                    "client_id": "rp-public-1"})
    assert r.status in (400, 401)
    assert (await r.json())["error"] in ("unauthorized_client", "invalid_client")


async def test_a_stored_gate_with_none_cannot_get_a_token(gw: Gateway) -> None:
    """A record written before registration refused `none` (or by hand) still gets nothing."""
    await gw.app[CORE].clients.put(Client(client_id="gate-legacy-none", kind="gate",
                                          display_name="Legacy", auth_method="none",
                                          scene="library"))
    r = await gw.client.post("/oauth2/token", data={"grant_type": "client_credentials",
                                                    "client_id": "gate-legacy-none"})
    assert r.status == 401 and (await r.json())["error"] == "invalid_client"


# -- finding 5: a client assertion's audience is exactly the issuer -------------------------
def _gate_assertion(gw: Gateway, **over: object) -> str:
    cred = gw.demo_secret("gate-metro-l2-jwt")
    key = load_pem_private_key(cred["private_key_pem"].encode(), None)
    now = int(time.time())
    claims = {"iss": "gate-metro-l2-jwt", "sub": "gate-metro-l2-jwt", "aud": gw.base,
              "iat": now, "exp": now + 60, "jti": secrets.token_urlsafe(12), **over}
    return jwt.encode(claims, key, algorithm="ES256",  # type: ignore[arg-type]
                      headers={"kid": cred["public_jwk"]["kid"]})


async def _assertion_status(gw: Gateway, assertion: str) -> int:
    r = await gw.client.post("/oauth2/token", data={
        "grant_type": "client_credentials", "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion})
    return r.status


@pytest.mark.parametrize("aud", [
    ["https://foreign.example", "{issuer}"], ["{issuer}", "{issuer}/oauth2/token"],
    "{issuer}/oauth2/token", "{issuer}/", ["{issuer}"]])
async def test_an_assertion_audience_other_than_exactly_the_issuer_is_refused(
        gw: Gateway, aud: str | list[str]) -> None:
    value: object = ([a.format(issuer=gw.base) for a in aud] if isinstance(aud, list)
                     else aud.format(issuer=gw.base))
    assert await _assertion_status(gw, _gate_assertion(gw, aud=value)) == 401


async def test_an_assertion_for_exactly_the_issuer_is_accepted(gw: Gateway) -> None:
    assert await _assertion_status(gw, _gate_assertion(gw)) == 200


# -- finding 10: a newcomer can log in from the sandbox listing alone ------------------------
async def test_the_demo_lists_redirect_uris_and_certificate_types(gw: Gateway) -> None:
    r = await gw.client.get("/sandbox/v1/demo")
    assert r.status == 200
    rps = {c["client_id"]: c for c in (await r.json())["clients"] if c["kind"] == "rp"}
    assert rps["rp-jingkuaiban"]["redirect_uris"][0] == "http://127.0.0.1:8400/callback"
    assert rps["rp-ykb-portal"]["redirect_uris"] == ["http://127.0.0.1:8402/callback"]
    assert rps["rp-jingkuaiban"]["certificate_types"] == sorted(
        ["driving_licence", "resident_id", "household_register"])
    assert "resident_id" in rps["rp-service-hall"]["certificate_types"]
    assert rps["rp-ykb-portal"]["certificate_types"] == []
    # and with them, the authorization request of a newcomer is accepted
    op = OP(gw)
    page = await op.open_page(op.auth_request(
        client_id="rp-ykb-portal", redirect_uri=rps["rp-ykb-portal"]["redirect_uris"][0]).url)
    assert page.session_id


# -- finding 2: the refresh grace window hands back the same successor -----------------------
async def _tokens(op: OP) -> dict[str, str]:
    token = await op.resident()
    req = op.auth_request()
    redirect_to = await op.login(req, token)
    code = parse_qs(urlsplit(redirect_to).query)["code"][0]
    status, body = await op.token({"grant_type": "authorization_code", "code": code,
                                   "redirect_uri": JKB_CB, "code_verifier": req.verifier})
    assert status == 200, body
    return dict(body)


async def test_a_spent_refresh_token_within_the_grace_window_gets_the_same_pair(op: OP) -> None:
    first = await _tokens(op)
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    s1, b1 = await op.token(form)
    s2, b2 = await op.token(form)      # a retry within 2 s: the same successor, no branch
    assert (s1, s2) == (200, 200)
    assert b2["refresh_token"] == b1["refresh_token"]
    assert b2["access_token"] == b1["access_token"]
    # the family has one live branch: rotating it works once, then its reuse revokes all
    s3, b3 = await op.token({"grant_type": "refresh_token",
                             "refresh_token": b1["refresh_token"]})
    assert s3 == 200
    await asyncio.sleep(2.3)
    s4, _ = await op.token({"grant_type": "refresh_token", "refresh_token": b1["refresh_token"]})
    assert s4 == 400
    s5, _ = await op.token({"grant_type": "refresh_token", "refresh_token": b3["refresh_token"]})
    assert s5 == 400     # reuse detection fired: the whole family is revoked


async def test_concurrent_refreshes_share_one_successor(op: OP) -> None:
    first = await _tokens(op)
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    answers = await asyncio.gather(*(op.token(form) for _ in range(5)))
    assert {s for s, _ in answers} == {200}
    assert len({b["refresh_token"] for _, b in answers}) == 1


# -- finding 4: a consent receipt cannot pass for an ID token ------------------------------
async def test_a_consent_receipt_does_not_validate_as_an_id_token(gw: Gateway) -> None:
    """An RP validating an ID token (OIDC Core §3.1.3.7: iss, aud = itself, sub, signature from
    the JWKS) must refuse the consent receipt it holds for the same resident; the receipt and
    the ID token each name their own `typ`."""
    api = Api(gw)
    token = await api.resident("r-chen-jing")
    subject = await api.login_subject(token, "cq-police")
    rp = await gw.client_token("rp-jingkuaiban")
    status, created = await api.request(rp, subject, ["driving_licence"])
    assert status == 201, created
    cid = created["consent_id"]
    assert (await api.me("POST", f"/v1/me/consents/{cid}/approve", token))[0] == 200
    r = await gw.client.get(f"/v1/consents/{cid}", headers={"Authorization": f"Bearer {rp}"})
    receipt = (await r.json())["consent_receipt"]
    jwks = PyJWKSet.from_dict(await (await gw.client.get("/.well-known/jwks.json")).json())
    head = jwt.get_unverified_header(receipt)
    assert head["typ"] == "consent-receipt+jwt"
    with pytest.raises(jwt.PyJWTError):   # what an RP's ID-token check does
        jwt.decode(receipt, jwks[head["kid"]].key, algorithms=[head["alg"]],
                   audience="rp-jingkuaiban", issuer=gw.base,
                   options={"require": ["iss", "sub", "aud", "exp", "iat"]})
    claims = jwt.decode(receipt, jwks[head["kid"]].key, algorithms=[head["alg"]],
                        issuer=gw.base, options={"verify_aud": False})
    assert "aud" not in claims and "sub" not in claims
    assert claims["recipient"] == "rp-jingkuaiban" and claims["piiPrincipalId"] == subject
    # and the ID token names its own type
    op = OP(gw)
    body = await _tokens(op)
    assert jwt.get_unverified_header(body["id_token"])["typ"] == "JWT"


# -- finding 8: the login session's redirect (with its code) is sealed at rest --------------
async def test_the_redirect_with_the_code_is_not_in_clear_in_redis(op: OP, redis_url: str) -> None:
    token = await op.resident()
    req = op.auth_request()
    page = await op.open_page(req.url)
    await op.scan(token, page.qr)
    await op.approve(token, page.session_id, page.number)
    r = await op.c.get(f"/v1/login-sessions/{page.session_id}")
    polled = await r.json()
    code = parse_qs(urlsplit(polled["redirect_to"]).query)["code"][0]
    redis = aioredis.Redis.from_url(redis_url)
    try:
        raw = b"".join(k + v for k, v in
                       (await redis.hgetall(f"gw:oidc:ls:{{{page.session_id}}}")).items())
    finally:
        await redis.aclose()
    assert raw and code.encode() not in raw and b"code=" not in raw
    # and the bound browser still reads it on its next poll
    again = await (await op.c.get(f"/v1/login-sessions/{page.session_id}")).json()
    assert again["redirect_to"] == polled["redirect_to"]


# -- finding 8: registration validates scopes per client kind ------------------------------
@pytest.mark.parametrize("kind,scopes,extra", [
    ("rp", ["openid", "anything-at-all"], {"redirect_uris": ["http://127.0.0.1:8409/cb"]}),
    ("rp", ["openid", "codes:verify"], {"redirect_uris": ["http://127.0.0.1:8409/cb"]}),
    ("gate", ["codes:verify", "me"], {"scene": "library"}),
    ("app", ["codes:issue", "certificates:read"], {}),
    ("app", ["me", ""], {}),
])
async def test_registration_refuses_scopes_foreign_to_the_kind(
        gw: Gateway, kind: str, scopes: list[str], extra: dict[str, object]) -> None:
    spec = {"client_id": f"{kind}-scoped-1", "kind": kind, "display_name": "Scoped",
            "scopes": scopes, **extra}
    r = await gw.client.post("/admin/v1/clients", json=spec, headers=_admin(gw))
    assert r.status == 400 and (await r.json())["code"] == "invalid_request"


async def test_registration_accepts_a_subset_of_the_kinds_scopes(gw: Gateway) -> None:
    spec = {"client_id": "rp-scoped-2", "kind": "rp", "display_name": "Scoped",
            "scopes": ["openid", "profile"], "redirect_uris": ["http://127.0.0.1:8409/cb"]}
    r = await gw.client.post("/admin/v1/clients", json=spec, headers=_admin(gw))
    assert r.status == 201 and (await r.json())["scopes"] == ["openid", "profile"]


# -- finding 8: a suspended person can neither exchange tokens nor log in -------------------
def _citizen_id(resident: str) -> str:
    data = json.loads(RESIDENTS.read_text("utf-8"))
    rows = data["residents"] if isinstance(data, dict) else data
    return str(next(r["citizen_id"] for r in rows if r["id"] == resident))


async def _suspend(gw: Gateway, resident: str, suspended: bool = True) -> None:
    r = await gw.client.post("/admin/v1/persons/suspend", headers=_admin(gw),
                             json={"citizen_id": _citizen_id(resident), "suspended": suspended})
    assert r.status == 200, await r.text()


async def test_suspension_stops_token_exchange_and_login(op: OP) -> None:
    gw = op.gw
    before = await _tokens(op)               # a grant made before the suspension
    token = await op.resident()              # a resident token made before it
    page = await op.open_page(op.auth_request().url)
    await _suspend(gw, "r-zhang-wei")
    r = await gw.client.post("/sandbox/v1/upstream-assertions",
                             json={"resident": "r-zhang-wei", "platform": "ykb"})
    assertion = (await r.json())["assertion"]
    r = await gw.client.post("/oauth2/token", headers={"Authorization": gw.basic("app-ykb")},
                             data={"grant_type": TOKEN_EXCHANGE, "subject_token": assertion,
                                   "subject_token_type": JWT_TYPE})
    assert r.status == 400 and (await r.json())["error"] == "invalid_grant"
    status, body = await op.scan(token, page.qr)
    assert status == 403 and body["code"] == "forbidden"
    status, body = await op.token({"grant_type": "refresh_token",
                                   "refresh_token": before["refresh_token"]})
    assert status == 400 and body["error"] == "invalid_grant"
    r = await gw.client.get("/oauth2/userinfo",
                            headers={"Authorization": f"Bearer {before['access_token']}"})
    assert r.status == 401
    # reinstated, the person logs in again
    await _suspend(gw, "r-zhang-wei", False)
    assert (await _tokens(op))["id_token"]


async def test_suspension_between_approval_and_redemption_refuses_the_code(op: OP) -> None:
    token = await op.resident()
    req = op.auth_request()
    redirect_to = await op.login(req, token)
    code = parse_qs(urlsplit(redirect_to).query)["code"][0]
    await _suspend(op.gw, "r-zhang-wei")
    status, body = await op.token({"grant_type": "authorization_code", "code": code,
                                   "redirect_uri": JKB_CB, "code_verifier": req.verifier})
    assert status == 400 and body["error"] == "invalid_grant"


# -- finding 8: the token, introspection and revocation endpoints are limited per client IP,
#    before any client authentication (a private_key_jwt costs an ECDSA check) ---------------
@pytest.mark.parametrize("path", ["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke",
                                  # the same per-IP allowance before client authentication:
                                  # PAR and the device grant's kiosk endpoints
                                  "/oauth2/par", "/oauth2/device_authorization",
                                  "/oauth2/device/card-tap", "/oauth2/device/card-confirm"])
async def test_oauth_endpoints_are_limited_before_client_authentication(
        make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    gw = await make_gateway(rate_limits=config_from_env({"GATEWAY_RATELIMIT_OAUTH_IP": "3/60/3"}))
    form = {"grant_type": "client_credentials", "token": "x",
            "client_assertion_type": JWT_BEARER, "client_assertion": _gate_assertion(
                gw, aud="https://foreign.example")}
    statuses = []
    for _ in range(5):
        r = await gw.client.post(path, data=form)
        statuses.append(r.status)
        body = await r.json()
    assert statuses == [401, 401, 401, 429, 429]
    assert int(r.headers["Retry-After"]) >= 1 and body["error"] == "invalid_request"


# -- finding 8: ES256 signatures are not malleable (low-S only) ------------------------------
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _twin(token: str) -> str:
    """The same token with S replaced by n - S: an equally valid ECDSA signature."""
    head, body, sig = token.split(".")
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    r, s = raw[:32], int.from_bytes(raw[32:], "big")
    return f"{head}.{body}.{_b64u(r + (P256_N - s).to_bytes(32, 'big'))}"


def _s(token: str) -> int:
    sig = token.split(".")[2]
    return int.from_bytes(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))[32:], "big")


async def test_high_s_twins_of_our_tokens_are_refused(op: OP) -> None:
    body = await _tokens(op)
    access = body["access_token"]
    assert jwt.get_unverified_header(access)["alg"] == "ES256"
    jwks = PyJWKSet.from_dict(await (await op.c.get("/.well-known/jwks.json")).json())
    key = jwks[jwt.get_unverified_header(access)["kid"]].key
    twin = _twin(access)
    # the twin is a valid signature to a plain ECDSA check ...
    jwt.decode(twin, key, algorithms=["ES256"], audience=op.base, issuer=op.base)
    # ... but the gateway refuses it wherever a token is presented
    r = await op.c.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {twin}"})
    assert r.status == 401
    r = await op.c.post("/oauth2/introspect", data={"token": twin},
                        headers={"Authorization": op.gw.basic(JKB)})
    assert (await r.json()) == {"active": False}
    r = await op.c.get("/oauth2/userinfo", headers={"Authorization": f"Bearer {access}"})
    assert r.status == 200


async def test_every_signature_we_make_is_low_s(op: OP) -> None:
    tokens = [await op.gw.client_token("gate-metro-l1-xiaoshizi") for _ in range(24)]
    body = await _tokens(op)
    tokens += [body["access_token"], body["id_token"]]
    assert all(_s(t) <= P256_N // 2 for t in tokens)


# -- finding 9: the server answers as the spec says ------------------------------------------
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_userinfo_401_without_credentials_has_a_json_body(gw: Gateway, method: str) -> None:
    r = await gw.client.request(method, "/oauth2/userinfo")
    assert r.status == 401 and r.content_type == "application/json"
    assert (await r.json())["error"] == "invalid_token"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error=" not in r.headers["WWW-Authenticate"]   # RFC 6750 §3.1


@pytest.mark.parametrize("path", ["/v1/login-sessions/scan", "/v1/me/consents/scan",
                                  "/v1/device-authorizations/scan"])
async def test_options_on_a_scan_route_names_only_its_own_methods(gw: Gateway, path: str) -> None:
    r = await gw.client.options(path)
    assert r.status == 405 and r.headers["Allow"] == "POST"
    r = await gw.client.get(path)
    assert r.status == 405 and r.headers["Allow"] == "POST"
