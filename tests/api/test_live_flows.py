"""Whole flows through the real app, every answer checked against docs/openapi.yaml:
scan-to-login (authorize page → scan → approve → poll → code → tokens → userinfo →
remembered authorisations) and consent-based certificate lookup (request → scan → approve →
status with receipt → query → access log → revoke)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.api.conftest import GatewayFactory, check_response
from tests.consents.conftest import Api
from tests.oidc.conftest import JKB, JKB_CB, OP, parse_page


async def _call(c: Any, method: str, url: str, template: str, **kw: Any) -> tuple[int, Any]:
    r = await c.request(method, url, **kw)
    raw = await r.read()
    body = await r.json(content_type=None) if raw and "json" in r.content_type else None
    check_response(method, template, r.status, r.headers, body)
    return r.status, body


@pytest.fixture
async def op(make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch) -> OP:
    monkeypatch.setenv("GATEWAY_RATELIMIT_LOGIN_IP", "1000/1/1000")
    return OP(await make_gateway())


async def test_scan_to_login_matches_the_spec(op: OP) -> None:
    c = op.c
    resident = await op.resident()
    rh = {"Authorization": f"Bearer {resident}"}
    req = op.auth_request()
    r = await c.get(req.url, allow_redirects=False)
    check_response("GET", "/oauth2/authorize", r.status, r.headers, None)
    assert r.status == 200
    page = parse_page(await r.text())
    sid = page.session_id
    path = f"/v1/login-sessions/{sid}"
    assert (await _call(c, "GET", path, "/v1/login-sessions/{id}"))[1]["status"] == "pending"
    status, scanned = await _call(c, "POST", "/v1/login-sessions/scan",
                                  "/v1/login-sessions/scan", json={"qr": page.qr}, headers=rh)
    assert status == 200 and page.number in scanned["number_choices"]
    status, body = await _call(c, "POST", path + "/approve", "/v1/login-sessions/{id}/approve",
                               json={"number": page.number}, headers=rh)
    assert (status, body["status"]) == (200, "approved")
    status, polled = await _call(c, "GET", path, "/v1/login-sessions/{id}")
    redirect = urlsplit(polled["redirect_to"])
    query = parse_qs(redirect.query)
    assert polled["redirect_to"].startswith(JKB_CB) and query["state"] == [req.state]
    assert query["iss"] == [op.base]
    form = {"grant_type": "authorization_code", "code": query["code"][0],
            "redirect_uri": JKB_CB, "code_verifier": req.verifier}
    status, tokens = await _call(c, "POST", "/oauth2/token", "/oauth2/token", data=form,
                                 headers={"Authorization": op.gw.basic(JKB)})
    assert status == 200 and {"id_token", "refresh_token"} <= set(tokens)
    for method in ("GET", "POST"):
        status, info = await _call(c, method, "/oauth2/userinfo", "/oauth2/userinfo",
                                   headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert status == 200 and info["sub"]
    status, body = await _call(c, "GET", "/oauth2/userinfo", "/oauth2/userinfo")
    assert status == 401 and body["error"] == "invalid_token"   # a body, always (issue 16)
    status, body = await _call(c, "GET", "/oauth2/userinfo", "/oauth2/userinfo",
                               headers={"Authorization": "Bearer not-a-token"})
    assert status == 401 and body["error"] == "invalid_token"
    status, refreshed = await _call(c, "POST", "/oauth2/token", "/oauth2/token", data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers={"Authorization": op.gw.basic(JKB)})
    assert status == 200
    status, _ = await _call(c, "POST", "/oauth2/revoke", "/oauth2/revoke",
                            data={"token": refreshed["refresh_token"]},
                            headers={"Authorization": op.gw.basic(JKB)})
    assert status == 200
    status, auths = await _call(c, "GET", "/v1/me/authorisations", "/v1/me/authorisations",
                                headers=rh)
    assert [a["client_id"] for a in auths["authorisations"]] == [JKB]
    status, _ = await _call(c, "DELETE", f"/v1/me/authorisations/{JKB}",
                            "/v1/me/authorisations/{client_id}", headers=rh)
    assert status == 204
    status, body = await _call(c, "DELETE", f"/v1/me/authorisations/{JKB}",
                               "/v1/me/authorisations/{client_id}", headers=rh)
    assert (status, body["code"]) == (404, "not_found")


async def test_authorize_refusals_match_the_spec(op: OP) -> None:
    bad_client = op.auth_request(client_id="nobody")
    r = await op.c.get(bad_client.url, allow_redirects=False)
    check_response("GET", "/oauth2/authorize", r.status, r.headers, None)
    assert r.status == 400
    plain = op.auth_request(code_challenge_method="plain")
    r = await op.c.get(plain.url, allow_redirects=False)
    check_response("GET", "/oauth2/authorize", r.status, r.headers, None)
    assert r.status == 302 and "error=" in r.headers["Location"]


async def test_consent_lookup_matches_the_spec(make_gateway: GatewayFactory) -> None:
    api = Api(await make_gateway())
    c = api.c
    resident = await api.resident("r-zhang-wei")
    rh = {"Authorization": f"Bearer {resident}"}
    subject = await api.login_subject(resident, "cq-police")
    rp = await api.gw.client_token(JKB, "consents:request certificates:read")
    ph = {"Authorization": f"Bearer {rp}"}
    status, created = await _call(c, "POST", "/v1/consents", "/v1/consents", headers=ph, json={
        "subject": subject, "certificate_types": ["resident_id"], "purpose": "身份核验",
        "expires_in": 3600, "max_uses": 1})
    assert status == 201 and created["status"] == "awaiting_authorisation"
    cid = created["consent_id"]
    status, scanned = await _call(c, "POST", "/v1/me/consents/scan", "/v1/me/consents/scan",
                                  headers=rh, json={"approval_code": created["approval_code"]})
    assert status == 200 and scanned["consent_id"] == cid
    status, _ = await _call(c, "POST", f"/v1/me/consents/{cid}/approve",
                            "/v1/me/consents/{id}/approve", headers=rh)
    assert status == 200
    status, view = await _call(c, "GET", f"/v1/consents/{cid}", "/v1/consents/{id}",
                               headers=ph)
    assert view["status"] == "authorised"
    status, certs = await _call(c, "POST", "/v1/certificates/query", "/v1/certificates/query",
                                headers=ph, json={"consent_id": cid})
    assert status == 200 and [x["type"] for x in certs["certificates"]] == ["resident_id"]
    status, refused = await _call(c, "POST", "/v1/certificates/query",
                                  "/v1/certificates/query", headers=ph,
                                  json={"consent_id": cid})
    assert status in (403, 409) and refused["code"] in ("forbidden", "conflict")
    status, log = await _call(c, "GET", "/v1/me/access-log", "/v1/me/access-log", headers=rh)
    assert status == 200 and log["entries"]
    status, mine = await _call(c, "GET", "/v1/me/consents", "/v1/me/consents", headers=rh)
    assert [m["consent_id"] for m in mine["consents"]] == [cid]
    # an exhausted consent can no longer be revoked; a fresh authorised one can
    status, body = await _call(c, "DELETE", f"/v1/me/consents/{cid}", "/v1/me/consents/{id}",
                               headers=rh)
    assert (status, body["code"]) == (409, "conflict")
    status, second = await _call(c, "POST", "/v1/consents", "/v1/consents", headers=ph, json={
        "subject": subject, "certificate_types": ["resident_id"],
        "purpose": {"code": "hall.check", "text": "核验"}, "expires_in": 3600, "max_uses": 2})
    await _call(c, "POST", "/v1/me/consents/scan", "/v1/me/consents/scan", headers=rh,
                json={"approval_code": second["approval_code"]})
    status, body = await _call(c, "POST", f"/v1/me/consents/{second['consent_id']}/reject",
                               "/v1/me/consents/{id}/reject", headers=rh)
    assert (status, body["status"]) == (200, "rejected")
