"""The one-identity promise over real HTTP (sandbox upstreams mounted in the gateway, loopback)
on real Redis: three credentials → one subject per sector, identity mismatch, card taps."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.services.identity import registry_entries
from gateway.web.identity import IDENTITY
from tests.identity.conftest import Api, bearer, forge, now_rfc3339
from tests.redis_server import free_port
from tests.web.conftest import GatewayFactory

METRO, METRO_GATE = "metro", "gate-metro-l1-xiaoshizi"
SCENIC_GATE = "gate-scenic-hongyadong"


async def _me(api: Api, token: str) -> dict:
    r = await api.c.get("/v1/me", headers=bearer(token))
    assert r.status == 200, await r.text()
    return dict(await r.json())


async def test_three_credentials_one_subject_per_sector(api: Api) -> None:
    t_ykm = await api.resident_token("r-li-na", "ykb")
    t_cq = await api.resident_token("r-li-na", "essc", "CQ")
    t_sc = await api.resident_token("r-li-na", "essc", "SC", app="app-cqrs")
    subs = {(await _me(api, t))["subject"] for t in (t_ykm, t_cq, t_sc)}
    assert len(subs) == 1  # both apps share the cq-resident-apps sector
    me = await _me(api, t_ykm)
    assert {(c["kind"], c["region"]) for c in me["credentials"]} >= {
        ("ykm", None), ("essc", "CQ"), ("essc", "SC"), ("ssc_card", "CQ")}
    assert all("*" in c["masked"] for c in me["credentials"])
    assert "500240" not in str(me)

    tap = await api.tap("CQ100000132", METRO_GATE, METRO, request_id="t-1")
    assert tap["decision"] == "allow" and tap["face"] == "ssc_card"
    # the same gate, a 渝快码 code of the same resident: the same subject
    r = await api.c.post("/v1/codes", json={"face": "ykm"}, headers=bearer(t_sc))
    assert r.status == 201, await r.text()
    code = (await r.json())["code"]
    gate_token = await api.gw.client_token(METRO_GATE)
    r = await api.c.post("/v1/codes/verify", json={"code": code, "scene": METRO,
                                                    "request_id": "c-1"},
                         headers=bearer(gate_token))
    verdict = await r.json()
    assert verdict["decision"] == "allow" and verdict["subject"] == tap["subject"]
    assert tap["subject"] not in subs  # other sector, other subject
    scenic = await api.tap("CQ100000132", SCENIC_GATE, "scenic_spot", request_id="t-2")
    assert scenic["decision"] == "allow" and scenic["subject"] != tap["subject"]


async def test_identity_mismatch_and_replayed_assertions(api: Api) -> None:
    token = await api.resident_token("r-li-na", "ykb")
    other = await api.assertion("r-zhang-wei", "essc", "CQ")
    r = await api.c.post("/v1/me/links", json={"assertion": other}, headers=bearer(token))
    assert r.status == 409 and (await r.json())["code"] == "identity_mismatch"
    # unlink her SC e-SSC, link it back by assertion; the same assertion twice is refused
    me = await _me(api, token)
    sc = next(c for c in me["credentials"] if c["region"] == "SC")
    r = await api.c.delete(f"/v1/me/links/{sc['id']}", headers=bearer(token))
    assert r.status == 204
    assert not any(c["region"] == "SC" for c in (await _me(api, token))["credentials"])
    mine = await api.assertion("r-li-na", "essc", "SC")
    r = await api.c.post("/v1/me/links", json={"assertion": mine}, headers=bearer(token))
    assert r.status == 201, await r.text()
    assert (await r.json())["region"] == "SC"
    r = await api.c.post("/v1/me/links", json={"assertion": mine}, headers=bearer(token))
    assert r.status == 400
    status, _ = await api.exchange(mine)  # nor can it be exchanged afterwards
    assert status == 400
    r = await api.c.post("/v1/me/links", json={"assertion": "a.b.c"}, headers=bearer(token))
    assert r.status == 400
    r = await api.c.delete("/v1/me/links/nope", headers=bearer(token))
    assert r.status == 404


async def test_card_tap_reasons(api: Api) -> None:
    gate_token = await api.gw.client_token(METRO_GATE)
    ok = await api.tap("CQ100000025", METRO_GATE, METRO, request_id="a", token=gate_token)
    assert (ok["decision"], ok["reason"]) == ("allow", "ok")
    again = await api.tap("CQ100000025", METRO_GATE, METRO, request_id="a", token=gate_token)
    assert again == ok  # idempotent retry: the first answer
    r = await api.c.post("/sandbox/v1/card-taps", json={
        "card_no": "CQ100000025", "gate_client_id": METRO_GATE, "request_id": "f",
        "scanned_at": now_rfc3339()})
    good_mac = (await r.json())["terminal_mac"]
    forged = await api.tap("CQ100000025", METRO_GATE, METRO, request_id="f",
                           mac=forge(good_mac), token=gate_token)
    assert forged["reason"] == "bad_signature"
    assert (await api.tap("CQ100000026", METRO_GATE, METRO, request_id="m1",
                          token=gate_token))["reason"] == "malformed"
    assert (await api.tap("CQ100000025", METRO_GATE, METRO, request_id="m2", region="XX",
                          token=gate_token))["reason"] == "malformed"
    # judged at its scan time (issue 14): two minutes old is a tap an offline gate buffered;
    # older than GATEWAY_OFFLINE_MAX_S (900 s) is expired
    buffered = await api.tap("CQ100000025", METRO_GATE, METRO, request_id="b",
                             scanned_at=now_rfc3339(-120), token=gate_token)
    assert buffered["reason"] == "ok"
    old = await api.tap("CQ100000025", METRO_GATE, METRO, request_id="e",
                        scanned_at=now_rfc3339(-901), token=gate_token)
    assert old["reason"] == "expired"
    assert (await api.tap("CQ100000249", METRO_GATE, METRO, request_id="l",
                          token=gate_token))["reason"] == "revoked"   # seeded lost
    assert (await api.tap("CQ100000017", METRO_GATE, METRO, request_id="rp",
                          token=gate_token))["reason"] == "revoked"   # replaced
    # the pharmacy gets the card number; a door gets nothing but the subject
    ph = await api.tap("CQ100000025", "gate-pharmacy-tongjunge", "pharmacy", request_id="p")
    assert ph["decision"] == "allow", ph
    assert ph["attributes"] == {"ssc_card_no": "CQ100000025", "essc_region": "CQ"}
    assert ok["attributes"] == {"concession": "senior"}
    door = await api.tap("CQ100000025", "gate-community-door", "community_door",
                         request_id="d")
    assert door["decision"] == "allow" and door["attributes"] == {}
    # wrong scene for this gate → 403; a resident token → 403
    r = await api.c.post("/v1/cards/verify", json={
        "card_no": "CQ100000025", "region": "CQ", "terminal_mac": good_mac,
        "scene": "library", "request_id": "x", "scanned_at": now_rfc3339()},
        headers=bearer(gate_token))
    assert r.status == 403


async def test_report_loss_then_replacement_works_at_once(api: Api) -> None:
    token = await api.resident_token("r-wang-lei", "ykb")
    me = await _me(api, token)
    card = next(c for c in me["credentials"] if c["kind"] == "ssc_card")
    assert (await api.tap("CQ100000579", METRO_GATE, METRO, request_id="1"))["decision"] \
        == "allow"
    r = await api.c.post(f"/v1/me/cards/{card['id']}/report-loss", headers=bearer(token))
    assert r.status == 200 and (await r.json())["status"] == "lost"
    assert (await api.tap("CQ100000579", METRO_GATE, METRO, request_id="2"))["reason"] \
        == "revoked"
    # the card-management system issues a replacement: registry sync, then it taps at once
    service = api.gw.app[IDENTITY]
    doc = {"residents": [{"citizen_id": "500155200509189973", "display_name": "王磊",
                          "ykm_account": "ykm-7f3a0003", "concession": "student",
                          "cards": [{"card_no": "CQ100000579", "region": "CQ",
                                     "status": "replaced"},
                                    {"card_no": "CQ100000587", "region": "CQ",
                                     "status": "active"}]}]}
    report = await service.sync(registry_entries(doc))
    assert report.linked == 1
    assert (await service.sync(registry_entries(doc))).linked == 0  # idempotent
    new = await api.tap("CQ100000587", METRO_GATE, METRO, request_id="3")
    assert new["decision"] == "allow"
    assert (await api.tap("CQ100000579", METRO_GATE, METRO, request_id="4"))["reason"] \
        == "revoked"
    me = await _me(api, token)
    old = next(c for c in me["credentials"] if c["id"] == card["id"])
    assert old["status"] == "replaced" and old["replaced_by"]


async def test_upstream_timeout_is_503_fast_and_gate_path_unblocked(
        make_gateway: GatewayFactory) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    upstream = web.Application()
    upstream.router.add_route("*", "/{tail:.*}", slow)
    server = TestServer(upstream, host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        port = free_port()
        gw = await make_gateway(port=port, upstream_timeout_s=0.2,
                                issuer=f"http://127.0.0.1:{port}")
        api = Api(gw)
        # point the 渝快办 client at the slow upstream
        from gateway.web.identity import LINKS
        ykb = api.gw.app[LINKS].verify_assertion.by_issuer["https://ykb.sandbox.cq.gov.cn"]
        ykb.http.base_url = str(server.make_url("")).rstrip("/")
        assertion = await api.assertion("r-li-na", "ykb")
        started = time.monotonic()
        exchange = asyncio.ensure_future(api.exchange(assertion))
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        tap = await api.tap("CQ100000132", METRO_GATE, METRO, request_id="during")
        tap_s = time.monotonic() - t0
        status, body = await exchange
        took = time.monotonic() - started
        assert tap["decision"] == "allow" and tap_s < 0.5
        assert status == 503 and body.get("code", body.get("error")) in ("unavailable",
                                                                         "temporarily_unavailable")
        assert took < 2.0
    finally:
        await server.close()
