"""The venue registry (点位): admin API, the all-or-nothing idempotent CSV import, gates
belonging to venues."""

from __future__ import annotations

from tests.operator.conftest import bootstrap, new_operator
from tests.web.conftest import Gateway

HEADER = "id,name,scene,district,operator,status,address\n"
GOOD = (HEADER +
        "v-lib-beibei,北碚区图书馆,library,500109,北碚区文旅委,active,北碚区\n"
        "v-hall-wanzhou,万州区政务服务中心,service_hall,500101,万州区政府,,\n")


async def _venues(gw: Gateway) -> dict[str, dict[str, object]]:
    r = await gw.client.get("/admin/v1/venues", headers=bootstrap(gw))
    return {v["id"]: v for v in (await r.json())["venues"]}


async def _import(gw: Gateway, text: str, headers: dict[str, str]) -> tuple[int, dict]:
    r = await gw.client.post("/admin/v1/venues/import", data=text.encode(),
                             headers={**headers, "Content-Type": "text/csv"})
    return r.status, await r.json()


async def test_a_good_file_imports_once_and_again_changes_nothing(gw: Gateway) -> None:
    ah = await new_operator(gw, "alice", "admin")
    status, report = await _import(gw, GOOD, ah)
    assert status == 200 and report == {"created": 2, "updated": 0, "unchanged": 0}
    status, report = await _import(gw, GOOD, ah)
    assert status == 200 and report == {"created": 0, "updated": 0, "unchanged": 2}
    venues = await _venues(gw)
    assert venues["v-hall-wanzhou"]["status"] == "active"
    assert venues["v-lib-beibei"]["district_name"] == "北碚区"
    status, report = await _import(gw, GOOD.replace("active,北碚区", "inactive,北碚区"), ah)
    assert report == {"created": 0, "updated": 1, "unchanged": 1}
    entries = (await (await gw.client.get("/admin/v1/audit", headers=ah)).json())["entries"]
    assert [e["actor"] for e in entries if e["action"] == "admin.venue.imported"] == \
        ["operator:alice"] * 3


async def test_one_bad_row_refuses_the_whole_file_with_row_numbers(gw: Gateway) -> None:
    ah = bootstrap(gw)
    before = await _venues(gw)
    bad = (GOOD +
           "v-x,某馆,no_such_scene,500103,o,,\n"
           "v-y,某馆,library,110101,o,,\n"       # Beijing's 东城区: not a Chongqing code
           "v-lib-beibei,again,library,500109,o,,\n"
           "v-z,某馆,library,500103,o,closed,\n"
           "v-w,only-three,library\n")
    status, body = await _import(gw, bad, ah)
    assert status == 400 and body["code"] == "invalid_request"
    assert [(e["row"], e["field"]) for e in body["errors"]] == [
        (4, "scene"), (5, "district"), (6, "id"), (7, "status"), (8, "")]
    assert await _venues(gw) == before  # nothing half-done
    status, body = await _import(gw, "name,scene\nx,metro\n", ah)
    assert status == 400 and body["errors"][0]["row"] == 1


async def test_put_venue_and_gates_belong_to_venues(gw: Gateway) -> None:
    ah = bootstrap(gw)
    r = await gw.client.put("/admin/v1/venues/v-museum-3g", headers=ah, json={
        "name": "三峡博物馆", "scene": "museum", "district": "500103", "operator": "三峡博物馆"})
    assert r.status == 201 and (await r.json())["status"] == "active"
    r = await gw.client.put("/admin/v1/venues/v-museum-3g", headers=ah, json={
        "name": "三峡博物馆", "scene": "museum", "district": "500199", "operator": "x"})
    assert r.status == 400 and (await r.json())["field"] == "district"
    spec = {"client_id": "gate-museum-1", "kind": "gate", "display_name": "1号门",
            "scene": "museum", "operator": "三峡博物馆"}
    r = await gw.client.post("/admin/v1/clients", json=spec, headers=ah)
    assert r.status == 400 and (await r.json())["field"] == "venue"
    r = await gw.client.post("/admin/v1/clients", json={**spec, "venue": "v-library-cqlib"},
                             headers=ah)
    assert r.status == 400  # a library venue cannot hold a museum gate
    listed = await (await gw.client.get("/admin/v1/clients?kind=gate", headers=ah)).json()
    assert "gate-museum-1" not in {c["client_id"] for c in listed["clients"]}
    r = await gw.client.post("/admin/v1/clients", json={**spec, "venue": "v-museum-3g"},
                             headers=ah)
    assert r.status == 201 and (await r.json())["venue"] == "v-museum-3g"
    venue = await (await gw.client.get("/admin/v1/venues/v-museum-3g", headers=ah)).json()
    assert venue["gates"] == ["gate-museum-1"]


async def test_the_sandbox_has_demo_venues_in_several_districts(gw: Gateway) -> None:
    venues = await _venues(gw)
    assert len({v["district"] for v in venues.values()}) >= 5
    gates = {g for v in venues.values() for g in v["gates"]}  # type: ignore[attr-defined]
    assert "gate-metro-l1-xiaoshizi" in gates


async def test_import_is_the_import_not_a_venue(gw: Gateway) -> None:
    ah = bootstrap(gw)
    r = await gw.client.put("/admin/v1/venues/import", headers=ah, json={
        "name": "x", "scene": "metro", "district": "500103", "operator": "o"})
    assert r.status == 405 and r.headers["Allow"] == "POST"
    status, body = await _import(gw, HEADER + "import,x,metro,500103,o,,\n", ah)
    assert status == 400 and body["errors"][0]["field"] == "id"
