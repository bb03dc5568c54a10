"""Authorization code binding to a DPoP key (RFC 9449 §10, §10.1) against the live gateway:
`dpop_jkt` at /oauth2/authorize and in a pushed request, or a DPoP proof on the PAR request
itself; the code is then redeemed only with a proof by that key (else `invalid_grant`).
A DPoP-only client (`dpop_bound_access_tokens`) may start a login without a key binding, as
the RFC makes `dpop_jkt` optional; its token request still needs a proof."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from tests.oidc.conftest import JKB, JKB_CB, OP, parse_page
from tests.oidc.test_dpop import Key, _register, _token
from tests.oidc.test_par import _push, _request


async def _login(op: OP, url: str) -> str:
    """Browser + resident app: open the page, scan, approve; the code from the redirect."""
    page = await op.open_page(url)
    token = await op.resident()
    assert (await op.scan(token, page.qr))[0] == 200
    assert (await op.approve(token, page.session_id, page.number))[0] == 200
    return parse_qs(urlsplit((await op.poll(page.session_id))["redirect_to"]).query)["code"][0]


def _form(code: str, verifier: str, redirect_uri: str = JKB_CB) -> dict[str, str]:
    return {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "code_verifier": verifier}


async def _pushed_code(op: OP, form: dict[str, str], headers: dict[str, str] | None = None,
                       client_id: str = JKB, basic: str | None = None) -> str:
    r = await op.c.post("/oauth2/par", data=form, headers={
        "Authorization": basic or op.gw.basic(client_id), **(headers or {})})
    body = await r.json()
    assert r.status == 201, body
    return await _login(op, "/oauth2/authorize?" + urlencode(
        {"client_id": client_id, "request_uri": body["request_uri"]}))


async def test_dpop_jkt_at_authorize_binds_the_code(op: OP) -> None:
    key = Key()
    basic = {"Authorization": op.gw.basic(JKB)}
    # another key, then no proof at all: refused, and the code is spent by the attempt
    for wrong in (Key(), None):
        req = op.auth_request(dpop_jkt=key.jkt)
        code = await _login(op, req.url)
        status, body, _ = await _token(op, _form(code, req.verifier), wrong, basic)
        assert status == 400 and body["error"] == "invalid_grant", body
        status, body, _ = await _token(op, _form(code, req.verifier), key, basic)
        assert status == 400 and body["error"] == "invalid_grant", body
    req = op.auth_request(dpop_jkt=key.jkt)
    code = await _login(op, req.url)
    status, body, _ = await _token(op, _form(code, req.verifier), key, basic)
    assert status == 200 and body["token_type"] == "DPoP", body


@pytest.mark.parametrize("value", ["abc", "A" * 44, "A" * 42 + "=", "+" * 43])
async def test_a_malformed_dpop_jkt_is_redirected_as_invalid_request(op: OP, value: str) -> None:
    req = op.auth_request(dpop_jkt=value)
    r = await op.c.get(req.url, allow_redirects=False)
    assert r.status == 302
    q = parse_qs(urlsplit(r.headers["Location"]).query)
    assert q["error"] == ["invalid_request"] and q["state"] == [req.state]
    form, _ = _request(dpop_jkt=value)
    status, body = await _push(op, form)
    assert status == 400 and body["error"] == "invalid_request"


async def test_a_dpop_proof_on_the_par_request_binds_the_code(op: OP) -> None:
    """RFC 9449 §10.1: as if its key's thumbprint had been sent as dpop_jkt. No nonce is
    needed at PAR; the answer hands one out for the token request."""
    key = Key("EdDSA")
    basic = {"Authorization": op.gw.basic(JKB)}
    form, verifier = _request()
    r = await op.c.post("/oauth2/par", data=form, headers={
        **basic, "DPoP": key.proof("POST", f"{op.base}/oauth2/par")})
    assert r.status == 201, await r.text()
    nonce = r.headers["DPoP-Nonce"]
    code = await _login(op, "/oauth2/authorize?" + urlencode(
        {"client_id": JKB, "request_uri": (await r.json())["request_uri"]}))
    other = Key()
    r = await op.c.post("/oauth2/token", data=_form(code, verifier), headers={
        **basic, "DPoP": other.proof("POST", f"{op.base}/oauth2/token", nonce=nonce)})
    assert r.status == 400 and (await r.json())["error"] == "invalid_grant"

    form, verifier = _request()
    code = await _pushed_code(op, form, {"DPoP": key.proof("POST", f"{op.base}/oauth2/par")})
    r = await op.c.post("/oauth2/token", data=_form(code, verifier), headers={
        **basic, "DPoP": key.proof("POST", f"{op.base}/oauth2/token", nonce=nonce)})
    body = await r.json()
    assert r.status == 200 and body["token_type"] == "DPoP", body


async def test_dpop_jkt_in_the_pushed_body_binds_the_code(op: OP) -> None:
    key = Key()
    basic = {"Authorization": op.gw.basic(JKB)}
    form, verifier = _request(dpop_jkt=key.jkt)
    code = await _pushed_code(op, form)
    status, body, _ = await _token(op, _form(code, verifier), Key(), basic)
    assert status == 400 and body["error"] == "invalid_grant"
    form, verifier = _request(dpop_jkt=key.jkt)
    code = await _pushed_code(op, form)
    status, body, _ = await _token(op, _form(code, verifier), key, basic)
    assert status == 200 and body["token_type"] == "DPoP"


async def test_par_refuses_a_proof_that_is_not_dpop_jkt_or_not_good(op: OP) -> None:
    key = Key()
    basic = {"Authorization": op.gw.basic(JKB)}
    par = f"{op.base}/oauth2/par"
    cases: list[tuple[dict[str, str], str]] = [
        (_request(dpop_jkt=Key().jkt)[0], key.proof("POST", par)),     # both, other keys
        (_request()[0], key.proof("POST", f"{op.base}/oauth2/token")),  # for another URL
        (_request()[0], key.proof("GET", par)),                         # another method
        (_request()[0], "x.y.z"),
    ]
    for i, (form, proof) in enumerate(cases):
        r = await op.c.post("/oauth2/par", data=form, headers={**basic, "DPoP": proof})
        body: dict[str, Any] = await r.json()
        assert r.status == 400 and body["error"] == "invalid_dpop_proof", body
        assert r.headers["Cache-Control"] == "no-store"
        if i > 0:   # a bad proof is answered with a fresh nonce (RFC 9449 §12.2)
            assert r.headers["DPoP-Nonce"]
    replayed = key.proof("POST", par)
    r = await op.c.post("/oauth2/par", data=_request()[0], headers={**basic, "DPoP": replayed})
    assert r.status == 201
    r = await op.c.post("/oauth2/par", data=_request()[0], headers={**basic, "DPoP": replayed})
    assert r.status == 400 and (await r.json())["error"] == "invalid_dpop_proof"
    both = _request(dpop_jkt=key.jkt)[0]                                # both, one key
    r = await op.c.post("/oauth2/par", data=both, headers={**basic, "DPoP": key.proof("POST",
                                                                                     par)})
    assert r.status == 201


async def test_a_dpop_only_client_may_push_without_a_key_binding(op: OP) -> None:
    """RFC 9449 §10 makes dpop_jkt optional, so a DPoP-only client's PAR without one is
    accepted; its tokens are still bound, the token request refused without a proof."""
    cb = "http://127.0.0.1:8413/cb"
    reg = await _register(op, {"client_id": "rp-dpop-par", "kind": "rp",
                               "display_name": "DPoP + PAR", "redirect_uris": [cb],
                               "dpop_bound_access_tokens": True,
                               "require_pushed_authorization_requests": True})
    basic = "Basic " + base64.b64encode(
        f"rp-dpop-par:{reg['client_secret']}".encode()).decode()
    form, verifier = _request(client_id="rp-dpop-par", redirect_uri=cb)
    code = await _pushed_code(op, form, client_id="rp-dpop-par", basic=basic)
    status, body, _ = await _token(op, _form(code, verifier, cb), None,
                                   {"Authorization": basic})
    assert status == 400 and body["error"] == "invalid_dpop_proof"
    status, body, _ = await _token(op, _form(code, verifier, cb), Key(),
                                   {"Authorization": basic})
    assert status == 200 and body["token_type"] == "DPoP", body


async def test_the_page_of_a_bound_request_is_the_ordinary_one(op: OP) -> None:
    """The binding is the RP's business: the resident sees the same page and scan answer."""
    req = op.auth_request(dpop_jkt=Key().jkt)
    r = await op.c.get(req.url)
    page = parse_page(await r.text())
    status, scanned = await op.scan(await op.resident(), page.qr)
    assert status == 200 and "dpop_jkt" not in scanned
