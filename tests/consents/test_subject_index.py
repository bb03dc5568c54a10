"""The subject index is filled where subjects are handed out — only in consent sectors."""

from __future__ import annotations

import secrets

from gateway.web.consents import CONSENTS
from tests.consents.conftest import Api, bearer


async def test_metro_verify_records_nothing_hall_verify_and_card_tap_do(api: Api) -> None:
    token = await api.resident("r-zhang-wei")
    store = api.gw.app[CONSENTS].store
    for gate, scene, sector in (("gate-metro-l1-xiaoshizi", "metro", "cq-transit"),
                                ("gate-hall-shapingba", "service_hall", "cq-service-halls")):
        r = await api.c.post("/v1/codes", json={"face": "ykm"}, headers=bearer(token))
        code = (await r.json())["code"]
        gate_token = await api.gw.client_token(gate)
        r = await api.c.post("/v1/codes/verify", headers=bearer(gate_token), json={
            "code": code, "scene": scene, "request_id": secrets.token_hex(6)})
        body = await r.json()
        assert body["decision"] == "allow", body
        recorded = await store.person_for_subject(sector, body["subject"])
        if sector == "cq-transit":
            assert recorded is None  # no consent-capable RP there: the gate path stays lean
        else:
            assert recorded == api.person(token)
