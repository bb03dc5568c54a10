"""The app flow and every bad input, over HTTP on real Redis: each refused with a stable
`code` + `reason` AND written to the audit log."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import replace
from typing import Any

import jwt
import pytest
from jwt import PyJWKSet

from gateway.clock import FrozenClock
from gateway.services.audit import verify_chain

from .conftest import HALL_RP, POLICE_RP, Api, GatewayFactory, bearer


def refusals(entries: list[dict[str, Any]], reason: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["outcome"] == "refused" and e["reason"] == reason]


async def _authorised(api: Api, resident: str = "r-chen-jing", rp_id: str = POLICE_RP,
                      sector: str = "cq-police", types: tuple[str, ...] = ("driving_licence",),
                      **kw: Any) -> tuple[str, str, str]:
    """App flow: the RP knows the resident from a login; the resident approves in the app."""
    token = await api.resident(resident)
    subject = await api.login_subject(token, sector)
    rp = await api.gw.client_token(rp_id)
    status, created = await api.request(rp, subject, list(types), **kw)
    assert status == 201, created
    status, listed = await api.me("GET", "/v1/me/consents", token)
    assert status == 200
    assert [c["consent_id"] for c in listed["consents"]] == [created["consent_id"]]
    assert listed["consents"][0]["status"] == "awaiting_authorisation"
    status, body = await api.me("POST", f"/v1/me/consents/{created['consent_id']}/approve", token)
    assert status == 200, body
    return token, rp, created["consent_id"]


async def test_app_flow_and_revocation(api: Api) -> None:
    chen, rp, cid = await _authorised(api, max_uses=5)
    status, got = await api.query(rp, cid)
    assert status == 200 and [c["type"] for c in got["certificates"]] == ["driving_licence"]
    assert set(got["certificates"][0]["fields"]) == {"name", "class", "valid_until"}
    status, body = await api.me("DELETE", f"/v1/me/consents/{cid}", chen)
    assert status == 200 and body["status"] == "revoked"
    status, refused = await api.query(rp, cid)
    assert status == 403 and refused["code"] == "forbidden" and refused["reason"] == "revoked"
    status, again = await api.me("DELETE", f"/v1/me/consents/{cid}", chen)
    assert status == 409 and again["reason"] == "revoked"
    entries = await api.audit()
    assert [e["action"] for e in entries if e["consent_id"] == cid] == [
        "consent.requested", "consent.authorised", "consent.fetched", "consent.revoked",
        "consent.refused", "consent.refused"]
    assert verify_chain(entries, key=api.service.audit.log.chain_key) == (True, None)


async def test_resident_rejects(api: Api) -> None:
    li = await api.resident("r-li-na")
    subject = await api.counter_subject(li)
    rp = await api.gw.client_token(HALL_RP)
    _, created = await api.request(rp, subject, ["degree"])
    status, body = await api.me("POST", f"/v1/me/consents/{created['consent_id']}/reject", li)
    assert status == 200 and body["status"] == "rejected"
    status, refused = await api.query(rp, created["consent_id"])
    assert status == 403 and refused["reason"] == "rejected"
    status, late = await api.me("POST", f"/v1/me/consents/{created['consent_id']}/approve", li)
    assert status == 409 and late["reason"] == "rejected"


async def test_consent_for_another_clients_subject_is_unknown(api: Api) -> None:
    zhang = await api.resident("r-zhang-wei")
    hall_subject = await api.counter_subject(zhang)
    police = await api.gw.client_token(POLICE_RP)
    status, body = await api.request(police, hall_subject, ["driving_licence"])
    assert status == 404 and body["code"] == "not_found" and body["reason"] == "unknown_subject"
    status, body = await api.request(police, "made-up-subject", ["driving_licence"])
    assert status == 404 and body["reason"] == "unknown_subject"
    assert len(refusals(await api.audit(), "unknown_subject")) == 2


async def test_types_the_client_may_not_request(api: Api) -> None:
    chen = await api.resident("r-chen-jing")
    subject = await api.login_subject(chen, "cq-police")
    police = await api.gw.client_token(POLICE_RP)
    status, body = await api.request(police, subject, ["driving_licence", "degree"])
    assert status == 403 and body["code"] == "forbidden" and body["reason"] == "type_not_allowed"
    [entry] = refusals(await api.audit(), "type_not_allowed")
    assert entry["actor"] == "rp:" + POLICE_RP and entry["subject"]
    assert entry["types"] == ["driving_licence", "degree"]
    status, body = await api.request(police, subject, ["passport"])
    assert status == 400 and body["code"] == "invalid_request"


async def test_fetch_beyond_max_uses_concurrently_exactly_one(api: Api) -> None:
    _, rp, cid = await _authorised(api, max_uses=1)
    results = await asyncio.gather(*(api.query(rp, cid) for _ in range(20)))
    assert sorted(s for s, _ in results) == [200] + [403] * 19
    assert {b["reason"] for s, b in results if s == 403} == {"exhausted"}
    entries = await api.audit()
    assert len([e for e in entries if e["action"] == "consent.fetched"]) == 1
    assert len(refusals(entries, "exhausted")) == 19
    assert verify_chain(entries, key=api.service.audit.log.chain_key) == (True, None)


async def test_fetch_after_expiry(make_gateway: GatewayFactory) -> None:
    clock = FrozenClock(time.time() - 300)  # PyJWT checks iat/exp against real time
    api = Api(await make_gateway(clock=clock))
    _, _, cid = await _authorised(api, expires_in=120, max_uses=5)
    clock.advance(121)
    rp = await api.gw.client_token(POLICE_RP)
    status, body = await api.query(rp, cid)
    assert status == 403 and body["reason"] == "expired"
    r = await api.c.get(f"/v1/consents/{cid}", headers=bearer(rp))
    view = await r.json()
    assert view["status"] == "expired" and "consent_receipt" not in view
    assert refusals(await api.audit(), "expired")


async def test_unapproved_consent_expires_after_the_approval_window(
        make_gateway: GatewayFactory) -> None:
    clock = FrozenClock(time.time() - 300)  # PyJWT checks iat/exp against real time
    api = Api(await make_gateway(clock=clock))
    api.service.policy = replace(api.service.policy, approval_window_s=60)
    chen = await api.resident("r-chen-jing")
    subject = await api.login_subject(chen, "cq-police")
    rp = await api.gw.client_token(POLICE_RP)
    _, created = await api.request(rp, subject, ["driving_licence"], expires_in=86400)
    import datetime as dt

    def t(s: str) -> float:
        return dt.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

    assert round(t(created["approve_by"]) - t(created["expires_at"])) == 60 - 86400
    clock.advance(61)
    chen = await api.resident("r-chen-jing")
    status, body = await api.me("POST", f"/v1/me/consents/{created['consent_id']}/approve", chen)
    assert status == 409 and body["reason"] == "expired"


async def test_tampered_receipt_fails_verification(api: Api) -> None:
    _, rp, cid = await _authorised(api)
    r = await api.c.get(f"/v1/consents/{cid}", headers=bearer(rp))
    receipt = (await r.json())["consent_receipt"]
    jwks = PyJWKSet.from_dict(await (await api.c.get("/.well-known/jwks.json")).json())
    head, payload, sig = receipt.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["max_uses"] = 1000
    claims["certificate_types"].append("degree")
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    key = jwks[jwt.get_unverified_header(receipt)["kid"]].key
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(f"{head}.{forged_payload}.{sig}", key, algorithms=["ES256", "EdDSA"])
    # the gateway's own check refuses it too, and accepts the untouched one
    from gateway.authz.tokens import TokenInvalid

    with pytest.raises(TokenInvalid):
        api.service.verify_receipt(f"{head}.{forged_payload}.{sig}", POLICE_RP)
    assert api.service.verify_receipt(receipt, POLICE_RP)["consent_id"] == cid
    with pytest.raises(TokenInvalid):  # a receipt is not for another party
        api.service.verify_receipt(receipt, HALL_RP)


async def test_forged_and_foreign_consent_ids(api: Api) -> None:
    _, police, cid = await _authorised(api)
    hall = await api.gw.client_token(HALL_RP)
    for forged in ("cns_" + "A" * 22, "../../etc", cid[:-1] + ("A" if cid[-1] != "A" else "B")):
        status, body = await api.query(police, forged)
        assert status == 404 and body["reason"] == "unknown_consent", forged
    r = await api.c.get("/v1/consents/cns_" + "B" * 22, headers=bearer(police))
    assert r.status == 404 and (await r.json())["reason"] == "unknown_consent"
    # another RP's consent: looks missing, is audited as wrong_client
    status, body = await api.query(hall, cid)
    assert status == 404 and body["reason"] == "unknown_consent"   # no existence oracle
    r = await api.c.get(f"/v1/consents/{cid}", headers=bearer(hall))
    assert r.status == 404
    entries = await api.audit()
    assert len(refusals(entries, "unknown_consent")) == 4   # the log knows which was which
    assert len(refusals(entries, "wrong_client")) == 2
    forged_ids = {e["consent_id"] for e in refusals(entries, "unknown_consent")}
    assert "../../etc" not in forged_ids and all(
        i.startswith(("cns_", "forged:")) for i in forged_ids)


async def test_approval_by_a_different_resident(api: Api) -> None:
    zhang = await api.resident("r-zhang-wei")
    subject = await api.counter_subject(zhang)
    rp = await api.gw.client_token(HALL_RP)
    _, created = await api.request(rp, subject, ["resident_id"])
    cid, code = created["consent_id"], created["approval_code"]
    wang = await api.resident("r-wang-lei")
    status, body = await api.me("POST", "/v1/me/consents/scan", wang, {"approval_code": code})
    assert status == 404 and body["reason"] == "bad_approval_code"
    for path in (f"/v1/me/consents/{cid}/approve", f"/v1/me/consents/{cid}/reject"):
        status, body = await api.me("POST", path, wang)
        assert status == 404 and body["reason"] == "unknown_consent"
    status, body = await api.me("DELETE", f"/v1/me/consents/{cid}", wang)
    assert status == 404 and body["reason"] == "unknown_consent"
    _, listed = await api.me("GET", "/v1/me/consents", wang)
    assert listed["consents"] == []
    # the code was not spent by the wrong person: the holder can still scan it
    status, body = await api.me("POST", "/v1/me/consents/scan", zhang, {"approval_code": code})
    assert status == 200 and body["consent_id"] == cid
    entries = await api.audit()
    assert len(refusals(entries, "not_holder")) == 4
    # the holder's access log does not show the other resident's attempts as theirs
    _, log = await api.me("GET", "/v1/me/access-log", zhang)
    assert all(e["reason"] != "not_holder" for e in log["entries"])


async def test_token_kinds_and_scopes(api: Api) -> None:
    zhang = await api.resident("r-zhang-wei")
    rp = await api.gw.client_token(HALL_RP)
    gate = await api.gw.client_token("gate-hall-shapingba")
    status, _ = await api.me("GET", "/v1/me/consents", rp)
    assert status == 403
    status, _ = await api.request(zhang, "x", ["degree"])
    assert status == 403
    status, _ = await api.request(gate, "x", ["degree"])
    assert status == 403
    rp_no_read = await api.gw.client_token(HALL_RP, scope="consents:request")
    status, _ = await api.query(rp_no_read, "cns_" + "A" * 22)
    assert status == 403
    r = await api.c.post("/v1/consents", json={})
    assert r.status == 401
    status, body = await api.me("POST", "/v1/me/consents/scan", zhang, {"approval_code": "x"})
    assert status == 404 and body["reason"] == "bad_approval_code"


async def test_revocation_is_effective_at_once_on_another_worker(
        make_gateway: GatewayFactory) -> None:
    a = Api(await make_gateway())
    b = Api(await make_gateway())   # same Redis, same keys: a second worker
    chen, _, cid = await _authorised(a, max_uses=10)
    rp_b = await b.gw.client_token(POLICE_RP)
    status, _ = await b.query(rp_b, cid)
    assert status == 200
    status, _ = await a.me("DELETE", f"/v1/me/consents/{cid}", chen)
    assert status == 200
    status, body = await b.query(rp_b, cid)
    assert status == 403 and body["reason"] == "revoked"
