"""Answers of the real app (real Redis, sandbox demo data) validate against docs/openapi.yaml:
the document it serves, discovery, a verify deny (malformed and replayed), problem+json and
OAuth errors, the trust list's ETag/304, issued codes in JSON and as images."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from tests.api.conftest import Gateway, check_response, load_spec

GATE = "gate-metro-l1-xiaoshizi"   # demo gate, scene `metro`
APP = "app-ykb"                    # demo resident app
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


async def _json(resp: Any) -> Any:
    return await resp.json(content_type=None)


async def resident_token(gw: Gateway, resident: str = "r-zhang-wei") -> str:
    r = await gw.client.post("/sandbox/v1/upstream-assertions",
                             json={"resident": resident, "platform": "ykb"})
    body = await _json(r)
    check_response("POST", "/sandbox/v1/upstream-assertions", r.status, r.headers, body)
    assert r.status == 201
    form = {"grant_type": TOKEN_EXCHANGE, "subject_token": body["assertion"],
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt"}
    r = await gw.client.post("/oauth2/token", data=form,
                             headers={"Authorization": gw.basic(APP)})
    tokens = await _json(r)
    check_response("POST", "/oauth2/token", r.status, r.headers, tokens)
    assert r.status == 200
    return str(tokens["access_token"])


async def test_openapi_json_is_this_document(gw: Gateway) -> None:
    r = await gw.client.get("/openapi.json")
    served = await _json(r)
    check_response("GET", "/openapi.json", r.status, r.headers, served)
    servers = served.pop("servers")
    assert served == load_spec()
    assert isinstance(servers, list) and len(servers) == 1
    assert servers[0]["url"].startswith(("http://", "https://"))


async def test_discovery_and_jwks_match_the_spec(gw: Gateway) -> None:
    for path in ("/.well-known/openid-configuration", "/.well-known/jwks.json",
                 "/v1/scenes", "/healthz", "/readyz"):
        r = await gw.client.get(path)
        check_response("GET", path, r.status, r.headers, await _json(r))
        assert r.status == 200
    d = await _json(await gw.client.get("/.well-known/openid-configuration"))
    assert d["issuer"] == gw.base


async def test_verify_deny_matches_the_spec(gw: Gateway) -> None:
    gate = await gw.client_token(GATE)
    h = {"Authorization": f"Bearer {gate}"}
    r = await gw.client.post("/v1/codes/verify", headers=h, json={
        "code": "NOT-A-CODE", "scene": "metro", "request_id": uuid.uuid4().hex,
        "scanned_at": "2026-01-01T08:00:00+08:00"})
    body = await _json(r)
    check_response("POST", "/v1/codes/verify", r.status, r.headers, body)
    assert r.status == 200 and body["decision"] == "deny" and body["reason"] == "malformed"


async def test_issued_code_allow_then_replayed_match_the_spec(gw: Gateway) -> None:
    resident = await resident_token(gw)
    rh = {"Authorization": f"Bearer {resident}"}
    r = await gw.client.post("/v1/codes", headers=rh, json={"face": "ykm"})
    issued = await _json(r)
    check_response("POST", "/v1/codes", r.status, r.headers, issued)
    assert r.status == 201 and r.headers["Cache-Control"] == "no-store"
    for accept, magic in (("image/png", b"\x89PNG"), ("image/svg+xml", b"<")):
        r = await gw.client.post("/v1/codes", headers={**rh, "Accept": accept})
        check_response("POST", "/v1/codes", r.status, r.headers, None)
        assert r.content_type == accept and (await r.read()).lstrip().startswith(magic)
    gate = await gw.client_token(GATE)
    gh = {"Authorization": f"Bearer {gate}"}
    answers = []
    for _ in range(2):
        r = await gw.client.post("/v1/codes/verify", headers=gh, json={
            "code": issued["code"], "scene": "metro", "request_id": uuid.uuid4().hex})
        body = await _json(r)
        check_response("POST", "/v1/codes/verify", r.status, r.headers, body)
        answers.append((body["decision"], body["reason"]))
    assert answers == [("allow", "ok"), ("deny", "replayed")]


async def test_problem_json_errors_match_the_spec(gw: Gateway) -> None:
    rid = "api-spec-1"
    r = await gw.client.post("/v1/codes/verify", json={"code": "x", "scene": "metro",
                                                       "request_id": "1"},
                             headers={"X-Request-Id": rid})
    body = await _json(r)
    check_response("POST", "/v1/codes/verify", r.status, r.headers, body)
    assert r.status == 401 and body["code"] == "unauthorized" and body["request_id"] == rid
    assert r.content_type == "application/problem+json" and "WWW-Authenticate" in r.headers
    gate = await gw.client_token(GATE)
    h = {"Authorization": f"Bearer {gate}"}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"json": {"code": "x", "scene": "no-such-scene", "request_id": "1"}}, 400,
         "invalid_request"),
        ({"json": {"code": "x", "scene": "library", "request_id": "1"}}, 403, "forbidden"),
        ({"data": b"code=x", "headers": {"Content-Type": "text/plain"}}, 415,
         "unsupported_media_type"),
        ({"data": b"{" + b" " * 20000 + b"}",
          "headers": {"Content-Type": "application/json"}}, 413, "payload_too_large"),
    ]
    for kwargs, status, code in cases:
        headers = {**h, **kwargs.pop("headers", {})}
        r = await gw.client.post("/v1/codes/verify", headers=headers, **kwargs)
        body = await _json(r)
        check_response("POST", "/v1/codes/verify", r.status, r.headers, body)
        assert (r.status, body["code"]) == (status, code)
        assert body["request_id"] == r.headers["X-Request-Id"]


async def test_oauth_errors_match_the_spec(gw: Gateway) -> None:
    import base64

    bad = "Basic " + base64.b64encode(f"{GATE}:wrong".encode()).decode()
    r = await gw.client.post("/oauth2/token", data={"grant_type": "client_credentials"},
                             headers={"Authorization": bad})
    body = await _json(r)
    check_response("POST", "/oauth2/token", r.status, r.headers, body)
    assert r.status == 401 and body["error"] == "invalid_client"
    r = await gw.client.post("/oauth2/token", data={"grant_type": "password"},
                             headers={"Authorization": gw.basic(GATE)})
    body = await _json(r)
    check_response("POST", "/oauth2/token", r.status, r.headers, body)
    assert body["error"] == "unsupported_grant_type"
    r = await gw.client.post("/oauth2/introspect", data={"token": "junk"},
                             headers={"Authorization": gw.basic(GATE)})
    body = await _json(r)
    check_response("POST", "/oauth2/introspect", r.status, r.headers, body)
    assert body == {"active": False}


async def test_trust_list_etag_and_304_match_the_spec(gw: Gateway) -> None:
    r = await gw.client.get("/v1/trust-list")
    check_response("GET", "/v1/trust-list", r.status, r.headers, await _json(r))
    assert r.status == 200
    r2 = await gw.client.get("/v1/trust-list", headers={"If-None-Match": r.headers["ETag"]})
    check_response("GET", "/v1/trust-list", r2.status, r2.headers, None)
    assert r2.status == 304 and r2.headers["ETag"] == r.headers["ETag"]


async def test_identity_and_sandbox_answers_match_the_spec(gw: Gateway) -> None:
    resident = await resident_token(gw)
    r = await gw.client.get("/v1/me", headers={"Authorization": f"Bearer {resident}"})
    check_response("GET", "/v1/me", r.status, r.headers, await _json(r))
    assert r.status == 200
    r = await gw.client.get("/sandbox/v1/demo")
    check_response("GET", "/sandbox/v1/demo", r.status, r.headers, await _json(r))
    assert r.status == 200


async def test_card_taps_allow_then_revoked_after_loss_match_the_spec(gw: Gateway) -> None:
    demo = await _json(await gw.client.get("/sandbox/v1/demo"))
    zhang = next(r for r in demo["residents"] if r["id"] == "r-zhang-wei")
    card = next(c for c in zhang["credentials"]["ssc_card"] if c["status"] == "active")
    gate = await gw.client_token(GATE)
    gh = {"Authorization": f"Bearer {gate}"}

    async def tap() -> dict[str, Any]:
        tap_req = {"card_no": card["card_no"], "gate_client_id": GATE,
                   "request_id": uuid.uuid4().hex,
                   "scanned_at": datetime.now(UTC).isoformat(timespec="seconds")}
        r = await gw.client.post("/sandbox/v1/card-taps", json=tap_req)
        tapped = await _json(r)
        check_response("POST", "/sandbox/v1/card-taps", r.status, r.headers, tapped)
        body = {k: tapped[k] for k in ("card_no", "region", "terminal_mac", "request_id",
                                       "scanned_at")}
        r = await gw.client.post("/v1/cards/verify", headers=gh, json={**body, "scene": "metro"})
        decision = await _json(r)
        check_response("POST", "/v1/cards/verify", r.status, r.headers, decision)
        assert decision["face"] == "ssc_card"
        return dict(decision)

    first = await tap()
    resident = await resident_token(gw)
    rh = {"Authorization": f"Bearer {resident}"}
    me = await _json(await gw.client.get("/v1/me", headers=rh))
    cred = next(c for c in me["credentials"] if c["kind"] == "ssc_card"
                and c["status"] == "active" and c["region"] == card["region"])
    r = await gw.client.post(f"/v1/me/cards/{cred['id']}/report-loss", headers=rh)
    lost = await _json(r)
    check_response("POST", "/v1/me/cards/{id}/report-loss", r.status, r.headers, lost)
    assert lost["status"] == "lost"
    second = await tap()
    assert (first["decision"], second["decision"], second["reason"]) == ("allow", "deny",
                                                                         "revoked")


async def test_operator_api_matches_the_spec(gw: Gateway) -> None:
    token = (gw.settings.keys_dir / "sandbox" / "admin-token").read_text().strip()
    ah = {"Authorization": f"Bearer {token}"}
    r = await gw.client.get("/admin/v1/clients")
    check_response("GET", "/admin/v1/clients", r.status, r.headers, await _json(r))
    assert r.status == 401
    spec = {"client_id": "gate-api-spec", "kind": "gate", "display_name": "Spec gate",
            "scene": "library", "venue": "v-library-cqlib"}
    r = await gw.client.post("/admin/v1/clients", json=spec, headers=ah)
    check_response("POST", "/admin/v1/clients", r.status, r.headers, await _json(r))
    assert r.status == 201
    r = await gw.client.post("/admin/v1/clients/gate-api-spec/disable", headers=ah)
    check_response("POST", "/admin/v1/clients/{client_id}/disable", r.status, r.headers,
                   await _json(r))
    assert r.status == 200
    r = await gw.client.get("/admin/v1/clients", params={"kind": "gate"}, headers=ah)
    listed = await _json(r)
    check_response("GET", "/admin/v1/clients", r.status, r.headers, listed)
    assert "gate-api-spec" in {c["client_id"] for c in listed["clients"]}
