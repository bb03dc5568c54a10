"""GET/PUT /admin/v1/scenes/{id}: validated, versioned, audited, applied live — on this
worker at once and on another app instance sharing the store within the poll interval."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from gateway.web import admin
from tests.codes.conftest import PHARMACY_GATE, demo_person, issue, resident_token, verify
from tests.operator.conftest import bootstrap, new_operator, scene
from tests.web.conftest import Gateway


async def test_an_edit_that_does_not_validate_changes_nothing(gw: Gateway) -> None:
    ah = await new_operator(gw, "alice", "admin")
    before, etag = await scene(gw, "hotel", ah)
    version = (await (await gw.client.get("/v1/scenes")).json())["version"]
    r = await gw.client.put("/admin/v1/scenes/hotel", json={**before, "faces": ["ykm", "nfc"]},
                            headers=ah)
    body = await r.json()
    assert r.status == 400 and body["code"] == "invalid_request" and body["field"] == "faces/1"
    after, etag2 = await scene(gw, "hotel", ah)
    assert (after, etag2) == (before, etag)
    assert (await (await gw.client.get("/v1/scenes")).json())["version"] == version
    r = await gw.client.put("/admin/v1/scenes/hotel", json={**before, "id": "motel"}, headers=ah)
    assert r.status == 400 and (await r.json())["field"] == "id"


async def test_an_edit_applies_at_once_with_a_new_revision_and_is_audited(gw: Gateway) -> None:
    ah = await new_operator(gw, "alice", "admin")
    pharmacy, etag = await scene(gw, "pharmacy", ah)
    assert pharmacy["essc_regions"] == ["*"]
    token = resident_token(gw, await demo_person(gw, "r-li-na"))
    gate = await gw.client_token(PHARMACY_GATE)
    code = (await (await issue(gw, token, {"face": "essc", "region": "SC"})).json())["code"]
    # Chongqing-insured only: a Sichuan e-SSC is then refused, not consumed
    r = await gw.client.put("/admin/v1/scenes/pharmacy", headers={**ah, "If-Match": etag},
                            json={**pharmacy, "essc_regions": ["CQ"]})
    assert r.status == 200, await r.text()
    stored = await r.json()
    assert stored["revision"] == pharmacy["revision"] + 1
    assert r.headers["ETag"] == f'"{stored["revision"]}"'
    _, ans = await verify(gw, gate, code, "pharmacy")
    assert (ans["decision"], ans["reason"]) == ("deny", "scene_not_permitted")
    served = {s["id"]: s for s in (await (await gw.client.get("/v1/scenes")).json())["scenes"]}
    assert served["pharmacy"]["essc_regions"] == ["CQ"]
    # a second writer with the old revision is refused
    r = await gw.client.put("/admin/v1/scenes/pharmacy", headers={**ah, "If-Match": etag},
                            json=pharmacy)
    assert r.status == 412
    versions = (await (await gw.client.get("/admin/v1/scenes/pharmacy/versions",
                                           headers=ah)).json())["versions"]
    assert [v["revision"] for v in versions][:2] == [stored["revision"], pharmacy["revision"]]
    assert versions[0]["updated_by"] == "alice"
    entries = (await (await gw.client.get("/admin/v1/audit", headers=ah)).json())["entries"]
    edit = [e for e in entries if e["action"] == "admin.scene.updated"]
    assert edit and edit[-1]["actor"] == "operator:alice" and edit[-1]["target"] == \
        "scene:pharmacy"


async def test_a_new_scene_is_created_once(gw: Gateway) -> None:
    ah = bootstrap(gw)
    library, _ = await scene(gw, "library", ah)
    new = {**library, "id": "district_archive", "name_zh": "档案馆", "name_en": "Archive"}
    r = await gw.client.put("/admin/v1/scenes/district_archive", json=new,
                            headers={**ah, "If-None-Match": "*"})
    assert r.status == 201 and (await r.json())["revision"] == 1
    r = await gw.client.put("/admin/v1/scenes/district_archive", json=new,
                            headers={**ah, "If-None-Match": "*"})
    assert r.status == 412
    ids = [s["id"] for s in (await (await gw.client.get("/v1/scenes")).json())["scenes"]]
    assert ids[-1] == "district_archive" and ids.count("district_archive") == 1


async def test_viewers_and_auditors_cannot_change_anything(gw: Gateway) -> None:
    for role in ("viewer", "auditor"):
        h = await new_operator(gw, f"{role}1", role)
        hotel, _ = await scene(gw, "hotel", h)  # reading is fine
        attempts: list[tuple[str, str, Any]] = [
            ("put", "/admin/v1/scenes/hotel", {"json": {**hotel, "faces": ["ykm"]}}),
            ("put", "/admin/v1/venues/v-x", {"json": {"name": "x", "scene": "metro",
                                                      "district": "500103", "operator": "o"}}),
            ("post", "/admin/v1/venues/import", {"data": "id,name,scene,district,operator\n",
                                                 "headers": {"Content-Type": "text/csv"}}),
            ("post", "/admin/v1/clients", {"json": {"client_id": "rp-x", "kind": "rp",
                                                    "display_name": "x"}}),
            ("post", "/admin/v1/clients/gate-community-door/disable", {}),
            ("post", "/admin/v1/gates/gate-community-door/venue", {"json": {"venue": "v"}}),
            ("post", "/admin/v1/persons/suspend", {"json": {"citizen_id": "1" * 18}}),
        ]
        # every changing admin route of the app is tried: a route added later and left out
        # of this list fails here
        changing = {(r.method, re.sub(r"\{[^}]*\}", "{}", r.resource.canonical))
                    for r in gw.app.router.routes()
                    if r.method not in ("GET", "HEAD") and r.resource is not None
                    and r.resource.canonical.startswith("/admin/v1/")}
        ids = r"/(hotel|v-x|gate-community-door)(?=/|$)"
        tried = {(m.upper(), re.sub(ids, "/{}", p)) for m, p, _ in attempts}
        assert len(changing) >= 7 and changing <= tried, changing - tried
        for method, path, kw in attempts:
            headers = {**h, **kw.pop("headers", {})}
            r = await getattr(gw.client, method)(path, headers=headers, **kw)
            assert r.status == 403, (role, path, await r.text())
        assert (await scene(gw, "hotel", h))[0] == hotel
    viewer = await new_operator(gw, "viewer2", "viewer")
    r = await gw.client.get("/admin/v1/audit", headers=viewer)
    assert r.status == 403


async def test_a_disabled_operator_is_refused(gw: Gateway) -> None:
    h = await new_operator(gw, "bob", "admin")
    assert (await gw.client.get("/admin/v1/me", headers=h)).status == 200
    await gw.app[admin.OPERATORS].set_disabled("bob")
    r = await gw.client.get("/admin/v1/me", headers=h)
    assert r.status == 403


async def test_a_second_instance_on_the_store_applies_the_edit_within_two_seconds(
        make_gateway: Any) -> None:
    a = await make_gateway()
    b = await make_gateway(keys_dir=a.settings.keys_dir)  # same Redis, same keys
    ah = await new_operator(a, "alice", "admin")
    hotel, etag = await scene(a, "hotel", ah)
    r = await a.client.put("/admin/v1/scenes/hotel", headers={**ah, "If-Match": etag},
                           json={**hotel, "attributes": []})
    assert r.status == 200
    started = time.monotonic()
    while True:
        served = {s["id"]: s for s in (await (await b.client.get("/v1/scenes")).json())["scenes"]}
        if served["hotel"]["attributes"] == []:
            break
        assert time.monotonic() - started < 2.0, "not applied within 2 s"
        await asyncio.sleep(0.05)
