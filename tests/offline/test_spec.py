"""The live answers of the offline-gate endpoints match docs/openapi.yaml."""

from __future__ import annotations

from typing import Any

from tests.api.conftest import check_response
from tests.web.conftest import Gateway

GATE = "gate-metro-l1-xiaoshizi"


async def _json(resp: Any) -> Any:
    return await resp.json() if resp.status != 304 else None


async def test_deny_list_full_delta_304_and_errors_match_the_spec(gw: Gateway) -> None:
    token = await gw.client_token(GATE)
    h = {"Authorization": f"Bearer {token}"}
    r = await gw.client.get("/v1/revocations/cards", headers=h)
    doc = await r.json()
    check_response("GET", "/v1/revocations/cards", r.status, r.headers, doc)
    v = doc["deny_list"]["version"]
    r = await gw.client.get(f"/v1/revocations/cards?since={v}", headers=h)
    delta = await r.json()
    assert delta["deny_list"]["full"] is False
    check_response("GET", "/v1/revocations/cards", r.status, r.headers, delta)
    r = await gw.client.get(f"/v1/revocations/cards?since={v}",
                            headers={**h, "If-None-Match": r.headers["ETag"]})
    check_response("GET", "/v1/revocations/cards", r.status, r.headers, None)
    assert r.status == 304
    for headers, status in (({}, 401), (h, 400)):
        r = await gw.client.get("/v1/revocations/cards?since=x", headers=headers)
        assert r.status == status
        check_response("GET", "/v1/revocations/cards", r.status, r.headers, await r.json())


async def test_trust_list_with_endorsements_matches_the_spec(gw: Gateway) -> None:
    r = await gw.client.get("/v1/trust-list")
    body = await r.json()
    assert body["endorsements"] and body["trust_list"]["scenes"]
    check_response("GET", "/v1/trust-list", r.status, r.headers, body)
