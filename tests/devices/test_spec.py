"""The device endpoints' answers validate against docs/openapi.yaml (JSON Schema 2020-12)."""

from __future__ import annotations

from typing import Any

from loadtests.phone import Phone
from tests.api.conftest import check_response
from tests.devices.conftest import Gateway, demo_person, resident_token


async def _json(resp: Any) -> Any:
    return await resp.json(content_type=None)


async def test_device_answers_match_the_spec(gw: Gateway) -> None:
    token = resident_token(gw, await demo_person(gw))
    auth = {"Authorization": f"Bearer {token}"}
    phone = Phone.new("ES256")
    r = await gw.client.post("/v1/devices/challenge", headers=auth)
    body = await _json(r)
    check_response("POST", "/v1/devices/challenge", r.status, r.headers, body)
    for status in (201, 200):  # enrol, then renew
        if status == 200:
            body = await _json(await gw.client.post("/v1/devices/challenge", headers=auth))
        r = await gw.client.post("/v1/devices", json=phone.enrolment_body(body["challenge"]),
                                 headers=auth)
        answer = await _json(r)
        assert r.status == status
        check_response("POST", "/v1/devices", r.status, r.headers, answer)
    r = await gw.client.post("/v1/devices", json={"alg": "RS256"}, headers=auth)
    check_response("POST", "/v1/devices", r.status, r.headers, await _json(r))
    r = await gw.client.get("/v1/me/devices", headers=auth)
    check_response("GET", "/v1/me/devices", r.status, r.headers, await _json(r))
    r = await gw.client.delete(f"/v1/me/devices/{answer['device_id']}", headers=auth)
    assert r.status == 204
    r = await gw.client.delete(f"/v1/me/devices/{answer['device_id']}", headers=auth)
    check_response("DELETE", "/v1/me/devices/{id}", r.status, r.headers, await _json(r))
    gate = {"Authorization": f"Bearer {await gw.client_token('gate-metro-l1-xiaoshizi')}"}
    for query in ("", "?since=1", "?since=x"):
        r = await gw.client.get("/v1/revocations/devices" + query, headers=gate)
        check_response("GET", "/v1/revocations/devices", r.status, r.headers, await _json(r))
    r = await gw.client.get("/v1/revocations/devices")
    check_response("GET", "/v1/revocations/devices", r.status, r.headers, await _json(r))
