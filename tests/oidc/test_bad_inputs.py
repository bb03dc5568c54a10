"""Every bad input of issue 5 answers the RFC's error, and none of them yields a token."""

from __future__ import annotations

import asyncio
import base64
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway.clock import FrozenClock
from tests.oidc.conftest import JKB, JKB_CB, OP, AuthRequest
from tests.web.conftest import GatewayFactory

HALL = "rp-service-hall"


def _q(location: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(location).query)


async def _code(op: OP, token: str, req: AuthRequest | None = None) -> tuple[str, AuthRequest]:
    req = req or op.auth_request()
    redirect_to = await op.login(req, token)
    return _q(redirect_to)["code"][0], req


def _code_form(code: str, req: AuthRequest, **over: str | None) -> dict[str, str]:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": JKB_CB,
            "code_verifier": req.verifier, **over}
    return {k: v for k, v in form.items() if v is not None}


# -- authorization endpoint: errors before the redirect URI is trusted stay on our origin --

@pytest.mark.parametrize("params", [
    {"redirect_uri": "http://127.0.0.1:8400/evil"},               # unregistered
    {"redirect_uri": "http://127.0.0.1:8400/callback/"},          # not an exact match
    {"redirect_uri": "HTTP://127.0.0.1:8400/callback"},           # not an exact match
    {"redirect_uri": ""},                                          # missing
    {"client_id": "no-such-client"},                               # unknown client
    {"client_id": "app-ykb"},                                      # not a relying party
    {"client_id": ""},                                             # missing
])
async def test_unvalidated_client_or_redirect_gets_an_html_page_not_a_redirect(
        op: OP, params: dict[str, str]) -> None:
    req = op.auth_request(**params)
    r = await op.c.get(req.url, allow_redirects=False)
    assert r.status == 400
    assert "Location" not in r.headers
    assert r.content_type == "text/html"
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]


async def test_repeated_client_id_is_not_redirected(op: OP) -> None:
    req = op.auth_request()
    r = await op.c.get(req.url + "&client_id=" + HALL, allow_redirects=False)
    assert r.status == 400 and "Location" not in r.headers


@pytest.mark.parametrize(("params", "error"), [
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge_method": ""}, "invalid_request"),
    ({"code_challenge": ""}, "invalid_request"),
    ({"code_challenge": "short"}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"response_type": "code id_token"}, "unsupported_response_type"),
    ({"response_type": ""}, "invalid_request"),
    ({"response_mode": "fragment"}, "invalid_request"),
    ({"scope": "profile"}, "invalid_scope"),
    ({"scope": "openid codes:verify"}, "invalid_scope"),
    ({"prompt": "none"}, "login_required"),
    ({"request": "eyJhbGciOiJub25lIn0.e30."}, "request_not_supported"),
    ({"request_uri": "https://evil.example/r"}, "request_uri_not_supported"),
    ({"unknown_param": "x"}, "invalid_request"),
    ({"login_hint": "x" * 600}, "invalid_request"),
    ({"max_age": "-1"}, "invalid_request"),
])
async def test_errors_after_validation_redirect_with_state_and_iss(
        op: OP, params: dict[str, str], error: str) -> None:
    req = op.auth_request(**params)
    r = await op.c.get(req.url, allow_redirects=False)
    assert r.status == 302
    loc = r.headers["Location"]
    assert loc.startswith(JKB_CB + "?")
    q = _q(loc)
    assert q["error"] == [error]
    assert q["state"] == [req.state] and q["iss"] == [op.base]
    assert "code" not in q


async def test_oversized_state_is_refused_and_not_echoed(op: OP) -> None:
    req = op.auth_request(state="s" * 513)
    r = await op.c.get(req.url, allow_redirects=False)
    assert r.status == 302
    q = _q(r.headers["Location"])
    assert q["error"] == ["invalid_request"] and "state" not in q


async def test_oversized_request_line_is_refused(op: OP) -> None:
    extra = {name: "x" * 500 for name in ("login_hint", "ui_locales", "acr_values",
                                          "claims_locales", "display", "id_token_hint",
                                          "claims", "nonce", "max_age")}
    req = op.auth_request(**extra)
    r = await op.c.get(req.url, allow_redirects=False)
    assert r.status == 302 and _q(r.headers["Location"])["error"] == ["invalid_request"]


# -- token endpoint: codes ------------------------------------------------------------------

async def test_missing_or_wrong_verifier_and_the_code_is_burnt(op: OP) -> None:
    token = await op.resident()
    for bad in (None, "x" * 43, "wrong-verifier-" + "a" * 40, ""):
        code, req = await _code(op, token)
        status, body = await op.token(_code_form(code, req, code_verifier=bad))
        assert status == 400 and body["error"] == "invalid_grant", body
        status, body = await op.token(_code_form(code, req))   # right verifier, too late
        assert status == 400 and body["error"] == "invalid_grant"
        assert "access_token" not in body


async def test_redirect_uri_must_match_at_the_token_endpoint(op: OP) -> None:
    code, req = await _code(op, await op.resident())
    status, body = await op.token(_code_form(code, req, redirect_uri=None))
    assert status == 400 and body["error"] == "invalid_grant"
    code, req = await _code(op, await op.resident())
    status, body = await op.token(_code_form(code, req,
                                             redirect_uri="https://jkb.example.cq.gov.cn/oidc/callback"))
    assert status == 400 and body["error"] == "invalid_grant"


async def test_reused_code_is_refused_and_revokes_what_it_issued(op: OP) -> None:
    code, req = await _code(op, await op.resident())
    status, first = await op.token(_code_form(code, req))
    assert status == 200
    status, body = await op.token(_code_form(code, req))
    assert status == 400 and body["error"] == "invalid_grant" and "access_token" not in body
    r = await op.c.get("/oauth2/userinfo",
                       headers={"Authorization": f"Bearer {first['access_token']}"})
    assert r.status == 401
    status, body = await op.token({"grant_type": "refresh_token",
                                   "refresh_token": first["refresh_token"]})
    assert status == 400 and body["error"] == "invalid_grant"


async def test_concurrent_redemption_of_one_code_yields_one_token_at_most(op: OP) -> None:
    code, req = await _code(op, await op.resident())
    results = await asyncio.gather(*(op.token(_code_form(code, req)) for _ in range(8)))
    assert sum(1 for status, _ in results if status == 200) <= 1
    assert sum(1 for status, _ in results if status == 400) >= 7


async def test_code_of_another_client_is_refused(op: OP) -> None:
    code, req = await _code(op, await op.resident())
    status, body = await op.token(_code_form(code, req), client_id=HALL)
    assert status == 400 and body["error"] == "invalid_grant"
    status, body = await op.token(_code_form(code, req))   # burnt for its own client too
    assert status == 400 and body["error"] == "invalid_grant"


async def test_unknown_code_and_resident_apps_are_refused(op: OP) -> None:
    code, req = await _code(op, await op.resident())
    status, body = await op.token(_code_form("not-a-code", req))
    assert status == 400 and body["error"] == "invalid_grant"
    status, body = await op.token(_code_form(code, req), client_id="app-ykb")
    assert status == 400 and body["error"] == "unauthorized_client"


async def test_mismatched_client_authentication(op: OP) -> None:
    code, req = await _code(op, await op.resident())
    form = _code_form(code, req)
    wrong = "Basic " + base64.b64encode(f"{JKB}:not-the-secret".encode()).decode()
    r = await op.c.post("/oauth2/token", data=form, headers={"Authorization": wrong})
    assert r.status == 401 and (await r.json())["error"] == "invalid_client"
    r = await op.c.post("/oauth2/token", data={**form, "client_id": HALL},
                        headers={"Authorization": op.gw.basic(JKB)})
    assert r.status == 401 and (await r.json())["error"] == "invalid_client"
    secret = op.gw.demo_secret(JKB)["client_secret"]
    r = await op.c.post("/oauth2/token", data={**form, "client_id": JKB,
                                               "client_secret": secret})   # wrong method
    assert r.status == 401 and (await r.json())["error"] == "invalid_client"
    r = await op.c.post("/oauth2/token", data={**form, "client_id": JKB})  # no auth at all
    assert r.status == 401
    # None of those spent the code: the right client still redeems it once.
    status, body = await op.token(form)
    assert status == 200 and "id_token" in body


async def test_expired_code_is_refused(make_gateway: GatewayFactory,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_RATELIMIT_LOGIN_IP", "1000/1/1000")
    clock = FrozenClock(time.time() - 100)   # pyjwt checks iat against the real time
    op = OP(await make_gateway(clock=clock))
    code, req = await _code(op, await op.resident())
    clock.advance(61)
    status, body = await op.token(_code_form(code, req))
    assert status == 400 and body["error"] == "invalid_grant"


# -- token endpoint: refresh tokens ----------------------------------------------------------

async def test_reused_refresh_token_revokes_the_family(op: OP) -> None:
    code, req = await _code(op, await op.resident())
    _, first = await op.token(_code_form(code, req))
    status, second = await op.token({"grant_type": "refresh_token",
                                     "refresh_token": first["refresh_token"]})
    assert status == 200
    await asyncio.sleep(2.3)   # past the grace period
    status, body = await op.token({"grant_type": "refresh_token",
                                   "refresh_token": first["refresh_token"]})
    assert status == 400 and body["error"] == "invalid_grant"
    status, body = await op.token({"grant_type": "refresh_token",
                                   "refresh_token": second["refresh_token"]})
    assert status == 400 and body["error"] == "invalid_grant"   # the family is gone
    r = await op.c.get("/oauth2/userinfo",
                       headers={"Authorization": f"Bearer {second['access_token']}"})
    assert r.status == 401


async def test_concurrent_refreshes_within_the_grace_period_both_work(op: OP) -> None:
    code, req = await _code(op, await op.resident())
    _, first = await op.token(_code_form(code, req))
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    (s1, b1), (s2, b2) = await asyncio.gather(op.token(form), op.token(form))
    assert (s1, s2) == (200, 200)
    assert b1["refresh_token"] == b2["refresh_token"]   # one successor (review finding 2)


async def test_refresh_token_of_another_client_or_malformed_is_refused(op: OP) -> None:
    code, req = await _code(op, await op.resident())
    _, first = await op.token(_code_form(code, req))
    status, body = await op.token({"grant_type": "refresh_token",
                                   "refresh_token": first["refresh_token"]}, client_id=HALL)
    assert status == 400 and body["error"] == "invalid_grant"
    status, body = await op.token({"grant_type": "refresh_token",
                                   "refresh_token": first["refresh_token"],
                                   "scope": "openid essc codes:verify"})
    assert status == 400 and body["error"] == "invalid_scope"
    for bad in ("x", first["access_token"], first["refresh_token"] + "x"):
        status, body = await op.token({"grant_type": "refresh_token", "refresh_token": bad})
        assert status == 400 and body["error"] == "invalid_grant"
    # Still one good use left for its owner: the refused attempts did not spend it.
    status, body = await op.token({"grant_type": "refresh_token",
                                   "refresh_token": first["refresh_token"]})
    assert status == 200


async def test_refresh_token_introspection_is_private_to_its_client(op: OP) -> None:
    code, req = await _code(op, await op.resident())
    _, first = await op.token(_code_form(code, req))
    r = await op.c.post("/oauth2/introspect", data={"token": first["refresh_token"]},
                        headers={"Authorization": op.gw.basic(HALL)})
    assert await r.json() == {"active": False}
    r = await op.c.post("/oauth2/revoke", data={"token": first["refresh_token"]},
                        headers={"Authorization": op.gw.basic(HALL)})
    assert r.status == 200
    status, _ = await op.token({"grant_type": "refresh_token",
                                "refresh_token": first["refresh_token"]})
    assert status == 200   # another client's revocation request did nothing


# -- login sessions ----------------------------------------------------------------------------

async def test_expired_login_session(make_gateway: GatewayFactory,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_RATELIMIT_LOGIN_IP", "1000/1/1000")
    # pyjwt checks iat/exp against the real time: start the frozen clock in the past.
    clock = FrozenClock(time.time() - 400)
    op = OP(await make_gateway(clock=clock))
    token = await op.resident()
    page = await op.open_page(op.auth_request().url)
    status, _ = await op.scan(token, page.qr)
    assert status == 200
    clock.advance(181)
    assert (await op.poll(page.session_id))["status"] == "expired"
    status, body = await op.approve(token, page.session_id, page.number)
    assert status == 409 and body["code"] == "conflict", body
    page2 = await op.open_page(op.auth_request().url)
    clock.advance(181)
    status, body = await op.scan(token, page2.qr)
    assert status == 409 and body["code"] == "conflict"
    assert "redirect_to" not in await op.poll(page2.session_id)


async def test_approved_twice_or_by_a_second_resident(op: OP) -> None:
    zhang, li = await op.resident("r-zhang-wei"), await op.resident("r-li-na")
    page = await op.open_page(op.auth_request().url)
    assert (await op.scan(zhang, page.qr))[0] == 200
    status, body = await op.scan(li, page.qr)
    assert status == 409 and body["code"] == "conflict"
    status, body = await op.approve(li, page.session_id, page.number)
    assert status == 403 and body["code"] == "forbidden"
    assert (await op.approve(zhang, page.session_id, page.number))[0] == 200
    status, body = await op.approve(zhang, page.session_id, page.number)
    assert status == 409 and body["code"] == "conflict"
    status, body = await op.deny(zhang, page.session_id)
    assert status == 409


async def test_concurrent_scans_by_two_residents_one_wins(op: OP) -> None:
    tokens = [await op.resident(r) for r in ("r-zhang-wei", "r-li-na", "r-wang-lei")]
    page = await op.open_page(op.auth_request().url)
    results = await asyncio.gather(*(op.scan(t, page.qr) for t in tokens))
    assert sorted(s for s, _ in results) == [200, 409, 409]


async def test_wrong_number_cancels_the_session(op: OP) -> None:
    token = await op.resident()
    page = await op.open_page(op.auth_request().url)
    _, scanned = await op.scan(token, page.qr)
    wrong = next(n for n in scanned["number_choices"] if n != page.number)
    status, _ = await op.approve(token, page.session_id, wrong)
    assert status == 403
    status, _body = await op.approve(token, page.session_id, page.number)
    assert status == 409
    polled = await op.poll(page.session_id)
    assert polled["status"] == "denied" and "redirect_to" not in polled


async def test_a_number_that_is_not_a_number_is_refused_and_decides_nothing(op: OP) -> None:
    token = await op.resident()
    page = await op.open_page(op.auth_request().url)
    await op.scan(token, page.qr)
    for bad in ("seven", True, 3.5, [page.number]):
        status, body = await op.approve(token, page.session_id, bad)
        assert status == 400 and body["code"] == "invalid_request"
    assert (await op.poll(page.session_id))["status"] == "scanned"
    assert (await op.approve(token, page.session_id, page.number))[0] == 200


async def test_denied_session_never_redirects(op: OP) -> None:
    token = await op.resident()
    page = await op.open_page(op.auth_request().url)
    await op.scan(token, page.qr)
    assert (await op.deny(token, page.session_id))[0] == 200
    polled = await op.poll(page.session_id)
    assert polled["status"] == "denied" and "redirect_to" not in polled


async def test_scan_needs_a_resident_token_and_a_genuine_qr(op: OP) -> None:
    page = await op.open_page(op.auth_request().url)
    rp_token = await op.gw.client_token(JKB, "certificates:read")
    status, _ = await op.scan(rp_token, page.qr)
    assert status == 403
    r = await op.c.post("/v1/login-sessions/scan", json={"qr": page.qr})
    assert r.status == 401
    token = await op.resident()
    forged = page.qr.rsplit(".", 1)[0] + "." + "A" * 32
    status, _ = await op.scan(token, forged)
    assert status == 404
    status, _body = await op.scan(token, "YKLOGIN:garbage")   # ours in form: no such session
    assert status == 404
    status, _body = await op.scan(token, "https://example.com/not-a-login-qr")
    assert status == 400
    assert (await op.poll(page.session_id))["status"] == "pending"


async def test_approve_before_scan_and_unknown_session(op: OP) -> None:
    token = await op.resident()
    page = await op.open_page(op.auth_request().url)
    status, _body = await op.approve(token, page.session_id, page.number)
    assert status == 409
    r = await op.c.get("/v1/login-sessions/" + "A" * 24)
    assert r.status == 404


async def test_login_page_is_rate_limited_per_ip(make_gateway: GatewayFactory,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_RATELIMIT_LOGIN_IP", raising=False)
    monkeypatch.delenv("GATEWAY_RATELIMIT_ENABLED", raising=False)
    op = OP(await make_gateway())
    url = op.auth_request().url
    statuses = [(await op.c.get(url, allow_redirects=False)).status for _ in range(12)]
    assert statuses[:10] == [200] * 10 and statuses[-1] == 429
    r = await op.c.get(url, allow_redirects=False)
    assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
    assert r.content_type == "text/html"


async def test_query_of_the_page_has_every_security_header(op: OP) -> None:
    r = await op.c.get(op.auth_request().url)
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'nonce-" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["Cache-Control"] == "no-store"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Path=/v1/login-sessions/" in cookie
    html = await r.text()
    assert "http://" not in html.split("<body>")[1].replace(
        "http://127.0.0.1", "")   # no external assets
    assert "<script src" not in html and "<link" not in html
