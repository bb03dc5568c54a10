"""Pushed authorization requests (RFC 9126): the RP pushes its request, authenticated, and
sends the browser with only client_id and the one-time request_uri; a client registered with
`require_pushed_authorization_requests` cannot start a login any other way."""

from __future__ import annotations

import secrets
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from gateway.authz.pkce import s256
from gateway.clock import FrozenClock
from tests.oidc.conftest import JKB, JKB_CB, OP, parse_page
from tests.web.conftest import GatewayFactory


def _request(**extra: str) -> tuple[dict[str, str], str]:
    verifier = secrets.token_urlsafe(48)
    form = {"response_type": "code", "client_id": JKB, "redirect_uri": JKB_CB,
            "scope": "openid profile", "state": secrets.token_urlsafe(8),
            "nonce": secrets.token_urlsafe(8), "code_challenge": s256(verifier),
            "code_challenge_method": "S256", **extra}
    return {k: v for k, v in form.items() if v != ""}, verifier


async def _push(op: OP, form: dict[str, str], client_id: str = JKB) -> tuple[int, dict[str, str]]:
    r = await op.c.post("/oauth2/par", data=form,
                        headers={"Authorization": op.gw.basic(client_id)})
    return r.status, dict(await r.json())


async def test_pushed_request_code_flow(op: OP) -> None:
    form, verifier = _request()
    status, pushed = await _push(op, form)
    assert status == 201, pushed
    assert pushed["request_uri"].startswith("urn:ietf:params:oauth:request_uri:")
    assert pushed["expires_in"] == 60
    url = "/oauth2/authorize?" + urlencode({"client_id": JKB,
                                            "request_uri": pushed["request_uri"]})
    page = await op.open_page(url)
    token = await op.resident()
    assert (await op.scan(token, page.qr))[0] == 200
    assert (await op.approve(token, page.session_id, page.number))[0] == 200
    redirect_to = (await op.poll(page.session_id))["redirect_to"]
    query = parse_qs(urlsplit(redirect_to).query)
    assert query["state"] == [form["state"]] and query["iss"] == [op.base]
    status, body = await op.token({"grant_type": "authorization_code",
                                   "code": query["code"][0], "redirect_uri": JKB_CB,
                                   "code_verifier": verifier})
    assert status == 200 and "id_token" in body
    # a request_uri works once (RFC 9126 §4)
    r = await op.c.get(url, allow_redirects=False)
    assert r.status == 400 and "text/html" in r.headers["Content-Type"]


async def test_a_request_uri_is_its_clients_own(op: OP) -> None:
    form, _ = _request()
    _, pushed = await _push(op, form)
    url = "/oauth2/authorize?" + urlencode({"client_id": "rp-service-hall",
                                            "request_uri": pushed["request_uri"]})
    r = await op.c.get(url, allow_redirects=False)
    assert r.status == 400
    # and the attempt used it up: no second chance for the right client either
    url = "/oauth2/authorize?" + urlencode({"client_id": JKB,
                                            "request_uri": pushed["request_uri"]})
    assert (await op.c.get(url, allow_redirects=False)).status == 400


@pytest.mark.parametrize("extra,error", [
    ({"code_challenge": ""}, "invalid_request"),
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"scope": "openid codes:verify"}, "invalid_scope"),
    ({"redirect_uri": "http://127.0.0.1:8400/other"}, "invalid_request"),
    ({"request_uri": "urn:ietf:params:oauth:request_uri:x"}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
])
async def test_a_bad_pushed_request_is_answered_400_not_redirected(
        op: OP, extra: dict[str, str], error: str) -> None:
    form, _ = _request(**extra)
    status, body = await _push(op, form)
    assert status == 400 and body["error"] == error


async def test_pushing_needs_client_authentication(op: OP) -> None:
    form, _ = _request()
    r = await op.c.post("/oauth2/par", data=form)
    assert r.status == 401 and (await r.json())["error"] == "invalid_client"
    # another client's id in the body than the one authenticated
    r = await op.c.post("/oauth2/par", data=form,
                        headers={"Authorization": op.gw.basic("rp-service-hall")})
    assert r.status == 401 and (await r.json())["error"] == "invalid_client"
    del form["client_id"]   # only relying parties log residents in
    r = await op.c.post("/oauth2/par", data=form,
                        headers={"Authorization": op.gw.basic("gate-metro-l1-xiaoshizi")})
    assert r.status == 400 and (await r.json())["error"] == "unauthorized_client"


async def test_a_client_that_requires_par_cannot_log_in_without_it(op: OP) -> None:
    admin = {"Authorization": "Bearer " + (op.gw.settings.keys_dir / "sandbox" /
                                           "admin-token").read_text().strip()}
    r = await op.c.post("/admin/v1/clients", headers=admin, json={
        "client_id": "rp-par-only", "kind": "rp", "display_name": "PAR only",
        "redirect_uris": ["http://127.0.0.1:8410/cb"],
        "require_pushed_authorization_requests": True})
    assert r.status == 201, await r.text()
    secret = (await r.json())["client_secret"]
    req = op.auth_request(client_id="rp-par-only", redirect_uri="http://127.0.0.1:8410/cb")
    r = await op.c.get(req.url, allow_redirects=False)
    assert r.status == 302
    location = parse_qs(urlsplit(r.headers["Location"]).query)
    assert location["error"] == ["invalid_request"] and location["state"] == [req.state]
    # pushed, it works
    form, _ = _request(client_id="rp-par-only", redirect_uri="http://127.0.0.1:8410/cb")
    import base64
    basic = "Basic " + base64.b64encode(f"rp-par-only:{secret}".encode()).decode()
    r = await op.c.post("/oauth2/par", data=form, headers={"Authorization": basic})
    assert r.status == 201
    url = "/oauth2/authorize?" + urlencode({"client_id": "rp-par-only",
                                            "request_uri": (await r.json())["request_uri"]})
    r = await op.c.get(url)
    assert r.status == 200 and parse_page(await r.text()).session_id


async def test_a_request_uri_expires_after_60_s(make_gateway: GatewayFactory,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_RATELIMIT_LOGIN_IP", "1000/1/1000")
    clock = FrozenClock(time.time())
    op = OP(await make_gateway(use_redis=False, clock=clock))
    form, _ = _request()
    _, pushed = await _push(op, form)
    clock.advance(61)
    url = "/oauth2/authorize?" + urlencode({"client_id": JKB,
                                            "request_uri": pushed["request_uri"]})
    assert (await op.c.get(url, allow_redirects=False)).status == 400


async def test_discovery_names_the_par_endpoint(op: OP) -> None:
    doc = await (await op.c.get("/.well-known/openid-configuration")).json()
    assert doc["pushed_authorization_request_endpoint"] == f"{op.base}/oauth2/par"
    assert doc["require_pushed_authorization_requests"] is False
