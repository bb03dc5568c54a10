"""The counter flow end to end over HTTP on real Redis: the hall gate verifies a resident's
渝快码 → the service-hall RP asks for a consent on that subject → the resident scans the
approval code in the app and approves → the RP fetches → certificates whose issuer
signatures verify against the sandbox issuer keys; receipts verify offline from the JWKS."""

from __future__ import annotations

import json

import jwt
from jwt import PyJWKSet

from gateway.services.audit import verify_chain

from .conftest import HALL_RP, Api, bearer


async def _jwks(api: Api, path: str) -> PyJWKSet:
    r = await api.c.get(path)
    assert r.status == 200
    return PyJWKSet.from_dict(await r.json())


async def test_counter_flow(api: Api) -> None:
    zhang = await api.resident("r-zhang-wei")
    subject = await api.counter_subject(zhang)
    rp = await api.gw.client_token(HALL_RP)

    status, created = await api.request(rp, subject, ["household_register", "resident_id"],
                                        max_uses=2)
    assert status == 201, created
    assert created["status"] == "awaiting_authorisation"
    code, cid = created["approval_code"], created["consent_id"]
    assert len(code) == 10 and code.isalnum() and code.isupper()

    # not yet authorised: no receipt, fetch refused
    r = await api.c.get(f"/v1/consents/{cid}", headers=bearer(rp))
    body = await r.json()
    assert r.status == 200 and body["status"] == "awaiting_authorisation"
    assert "consent_receipt" not in body
    status, refused = await api.query(rp, cid)
    assert status == 403 and refused["reason"] == "not_authorised"

    # the resident scans the approval code at the counter, sees who asks for what, approves
    status, shown = await api.me("POST", "/v1/me/consents/scan", zhang, {"approval_code": code})
    assert status == 200, shown
    assert shown["consent_id"] == cid
    assert shown["client"]["display_name"] == "沙坪坝区政务服务中心"
    assert shown["certificate_types"] == ["household_register", "resident_id"]
    assert shown["purpose"]["text"] == "户口迁移 材料核验"
    status, again = await api.me("POST", "/v1/me/consents/scan", zhang, {"approval_code": code})
    assert status == 404 and again["reason"] == "bad_approval_code"   # single use
    status, approved = await api.me("POST", f"/v1/me/consents/{cid}/approve", zhang)
    assert status == 200 and approved["status"] == "authorised"

    jwks = await _jwks(api, "/.well-known/jwks.json")
    # the resident's receipt: for the app, with the app's subject
    head = jwt.get_unverified_header(approved["consent_receipt"])
    assert head["typ"] == "consent-receipt+jwt"
    mine = jwt.decode(approved["consent_receipt"], jwks[head["kid"]].key,
                      algorithms=[head["alg"]], issuer=api.gw.base)
    assert mine["consent_id"] == cid and mine["client_id"] == HALL_RP
    assert mine["recipient"] == "app-ykb" and "aud" not in mine

    # the RP's receipt, verified offline from the JWKS
    r = await api.c.get(f"/v1/consents/{cid}", headers=bearer(rp))
    view = await r.json()
    assert view["status"] == "authorised"
    receipt = view["consent_receipt"]
    head = jwt.get_unverified_header(receipt)
    claims = jwt.decode(receipt, jwks[head["kid"]].key, algorithms=[head["alg"]],
                        issuer=api.gw.base)
    assert claims["recipient"] == HALL_RP and claims["piiPrincipalId"] == subject
    assert claims["jti"] == cid and "sub" not in claims
    assert claims["certificate_types"] == ["household_register", "resident_id"]
    assert claims["jurisdiction"] == "CN-CQ" and claims["max_uses"] == 2
    assert claims["services"][0]["purposes"][0]["piiCategory"] == claims["certificate_types"]

    # fetch: certificates with the issuers' signatures intact and verifiable
    status, got = await api.query(rp, cid)
    assert status == 200, got
    certs = got["certificates"]
    assert sorted(c["type"] for c in certs) == ["household_register", "resident_id"]
    issuers = await _jwks(api, "/sandbox/upstreams/certlib/issuers/jwks.json")
    for c in certs:
        h = jwt.get_unverified_header(c["issuer_signature"])
        payload = jwt.decode(c["issuer_signature"], issuers[h["kid"]].key, algorithms=["ES256"],
                             options={"verify_aud": False})
        assert payload["typ"] == c["type"] and payload["num"] == c["number"]
        assert payload["fields"] == c["fields"] and payload["iss"] == c["issuer"]
    # the gateway's own answer never names the citizen ID
    text = json.dumps({k: v for k, v in got.items()}, ensure_ascii=False)
    outside_jws = text
    for c in certs:
        outside_jws = outside_jws.replace(c["issuer_signature"], "")
    assert "500106" not in outside_jws.replace("RID-500106", "").replace("HR-500106", "")

    # only the consented types; one more use left, then exhausted
    status, refused = await api.query(rp, cid, ["degree"])
    assert status == 403 and refused["reason"] == "type_not_consented"
    status, one = await api.query(rp, cid, ["resident_id"])
    assert status == 200 and [c["type"] for c in one["certificates"]] == ["resident_id"]
    status, refused = await api.query(rp, cid)
    assert status == 403 and refused["reason"] == "exhausted" and refused["code"] == "forbidden"
    r = await api.c.get(f"/v1/consents/{cid}", headers=bearer(rp))
    assert (await r.json())["status"] == "exhausted"

    # the resident sees who read what, when and why
    status, log = await api.me("GET", "/v1/me/access-log", zhang)
    assert status == 200
    fetched = [e for e in log["entries"] if e["action"] == "consent.fetched"]
    assert len(fetched) == 2
    assert fetched[0]["by"] == {"kind": "rp", "client_id": HALL_RP,
                                "display_name": "沙坪坝区政务服务中心"}
    assert fetched[0]["certificate_types"] == ["resident_id"]
    assert fetched[0]["purpose"] == "hall.household_move"
    assert fetched[0]["purpose_text"] == "户口迁移 材料核验"  # "for what purpose", in words
    assert {e["action"] for e in log["entries"]} >= {
        "consent.requested", "consent.scanned", "consent.authorised", "consent.fetched",
        "consent.refused"}

    # the whole audit chain verifies; nothing in it names the person
    entries = await api.audit()
    assert verify_chain(entries, key=api.service.audit.log.chain_key) == (True, None)
    person = api.person(zhang)
    assert person not in json.dumps(entries)
