"""An operator suspends a person: both code faces and the card deny `revoked`; reinstating
restores them. Over real HTTP on real Redis."""

from __future__ import annotations

import json
from pathlib import Path

from tests.identity.conftest import Api, bearer

METRO_GATE, METRO = "gate-metro-l1-xiaoshizi", "metro"
RESIDENTS = Path(__file__).resolve().parents[2] / "gateway" / "data" / "residents.json"


def _citizen_id(resident: str) -> str:
    data = json.loads(RESIDENTS.read_text("utf-8"))
    rows = data["residents"] if isinstance(data, dict) else data
    return str(next(r["citizen_id"] for r in rows if r["id"] == resident))


async def _verify_fresh_code(api: Api, resident_token: str, gate_token: str, rid: str) -> str:
    r = await api.c.post("/v1/codes", json={"face": "ykm"}, headers=bearer(resident_token))
    assert r.status == 201, await r.text()
    code = (await r.json())["code"]
    r = await api.c.post("/v1/codes/verify", json={"code": code, "scene": METRO,
                                                   "request_id": rid},
                         headers=bearer(gate_token))
    assert r.status == 200
    return str((await r.json())["reason"])


async def test_suspended_person_is_revoked_everywhere_and_reinstated(api: Api) -> None:
    admin = {"Authorization": "Bearer " + (api.gw.settings.keys_dir / "sandbox" /
                                           "admin-token").read_text().strip()}
    resident = await api.resident_token("r-zhang-wei")
    gate = await api.gw.client_token(METRO_GATE)
    assert await _verify_fresh_code(api, resident, gate, "s1") == "ok"
    assert (await api.tap("CQ100000025", METRO_GATE, METRO, request_id="t1",
                          token=gate))["reason"] == "ok"

    cid = _citizen_id("r-zhang-wei")
    r = await api.c.post("/admin/v1/persons/suspend", json={"citizen_id": cid},
                         headers=admin)
    assert r.status == 200, await r.text()
    assert await _verify_fresh_code(api, resident, gate, "s2") == "revoked"
    assert (await api.tap("CQ100000025", METRO_GATE, METRO, request_id="t2",
                          token=gate))["reason"] == "revoked"

    r = await api.c.post("/admin/v1/persons/suspend",
                         json={"citizen_id": cid, "suspended": False}, headers=admin)
    assert r.status == 200
    assert await _verify_fresh_code(api, resident, gate, "s3") == "ok"


async def test_suspension_needs_an_operator_and_a_known_person(api: Api) -> None:
    r = await api.c.post("/admin/v1/persons/suspend", json={"citizen_id": "x" * 18})
    assert r.status == 401
    admin = {"Authorization": "Bearer " + (api.gw.settings.keys_dir / "sandbox" /
                                           "admin-token").read_text().strip()}
    r = await api.c.post("/admin/v1/persons/suspend",
                         json={"citizen_id": "500103199001010000"}, headers=admin)
    assert r.status == 404
    r = await api.c.post("/admin/v1/persons/suspend", json={"citizen_id": 5}, headers=admin)
    assert r.status == 400
