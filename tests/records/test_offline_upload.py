"""POST /v1/gates/offline-scans (CONTRACT "Offline gates"): each scan re-verified at its scan
time through the same pipeline and single-use store; confirmed / double_use / invalid;
idempotent per (gate, request_id); one bad item never fails the batch."""

from __future__ import annotations

import time
from typing import Any

from gateway.clock import FrozenClock
from gateway.timefmt import rfc3339
from tests.records.conftest import (
    METRO_GATE,
    SECOND_GATE,
    Gateway,
    all_records,
    demo_person,
    fresh_code,
    second_gate,
    verify,
)


async def upload(g: Gateway, token: str, scans: list[Any]) -> tuple[int, Any]:
    r = await g.client.post("/v1/gates/offline-scans", json={"scans": scans},
                             headers={"Authorization": f"Bearer {token}"})
    return r.status, await r.json()


def scan(code: str, rid: str, at: float, decision: str = "allow") -> dict[str, Any]:
    return {"request_id": rid, "code": code, "scanned_at": rfc3339(at),
            "local_decision": decision}


async def test_confirmed_then_double_use_at_a_second_gate_then_idempotent(
        make_gateway) -> None:  # type: ignore[no-untyped-def]
    clock = FrozenClock(time.time())
    g = await make_gateway(clock=clock)
    pid = await demo_person(g)
    codes = [await fresh_code(g, pid) for _ in range(5)]
    t0 = clock.now()
    clock.advance(300)  # back online five minutes later: every code has expired meanwhile
    gate, other = await g.client_token(METRO_GATE), await second_gate(g)
    batch = [scan(c, f"o-{i}", t0 + 1 + i) for i, c in enumerate(codes)]
    status, body = await upload(g, gate, batch)
    assert status == 200
    assert [r["status"] for r in body["results"]] == ["confirmed"] * 5
    assert [r["request_id"] for r in body["results"]] == [f"o-{i}" for i in range(5)]
    # the same codes from another gate: double use, naming the first gate and its scan time
    status, dup = await upload(g, other, [scan(c, f"o-{i}", t0 + 2 + i)
                                          for i, c in enumerate(codes)])
    assert status == 200
    for i, r in enumerate(dup["results"]):
        assert r["status"] == "double_use"
        assert r["first_use"] == {"gate": METRO_GATE, "at": rfc3339(t0 + 1 + i)}
    # the first batch again, an hour later: the same answers, nothing recorded twice
    clock.advance(3600)
    gate, other = await g.client_token(METRO_GATE), await second_gate(g)  # fresh tokens
    _, again = await upload(g, gate, batch)
    assert again == body
    _, dup_again = await upload(g, other, [scan(c, f"o-{i}", t0 + 2 + i)
                                           for i, c in enumerate(codes)])
    assert dup_again == dup
    recs = await all_records(g)
    assert len(recs) == 10
    assert {(r["gate"], r["decision"], r["origin"]) for r in recs} == {
        (METRO_GATE, "allow", "offline"), (SECOND_GATE, "deny", "offline")}
    assert len({r["record_id"] for r in recs}) == 10


async def test_an_online_use_first_makes_the_upload_a_double_use(gw: Gateway) -> None:
    code = await fresh_code(gw)
    gate, other = await gw.client_token(METRO_GATE), await second_gate(gw)
    _, online = await verify(gw, gate, code, "metro", "on-1")
    assert online["decision"] == "allow"
    _, body = await upload(gw, other, [scan(code, "off-1", time.time())])
    [r] = body["results"]
    assert r["status"] == "double_use" and r["first_use"]["gate"] == METRO_GATE
    # the gate that verified online and then uploaded the same request: confirmed, not twice
    _, mine = await upload(gw, gate, [scan(code, "on-1", time.time())])
    assert mine["results"][0]["status"] == "confirmed"
    recs = await all_records(gw)
    assert sorted((r["request_id"], r["origin"]) for r in recs) == [("off-1", "offline"),
                                                                    ("on-1", "online")]


async def test_bad_items_are_invalid_and_never_fail_the_batch(gw: Gateway) -> None:
    gate = await gw.client_token(METRO_GATE)
    good = await fresh_code(gw)
    now = time.time()
    items: list[Any] = [
        scan(good, "ok-1", now),
        "not an object",
        {"code": good, "scanned_at": rfc3339(now)},                       # no request_id
        {"request_id": "both", "code": good, "card": {}, "scanned_at": rfc3339(now)},
        {"request_id": "neither", "scanned_at": rfc3339(now)},
        {"request_id": "when", "code": good, "scanned_at": "yesterday"},
        {"request_id": "nooffset", "code": good, "scanned_at": "2026-01-01T00:00:00"},
        {"request_id": "future", "code": await fresh_code(gw), "scanned_at": rfc3339(now + 60)},
        {"request_id": "old", "code": await fresh_code(gw), "scanned_at": rfc3339(now - 901)},
        {"request_id": "junk", "code": "YK1:NOTACODE", "scanned_at": rfc3339(now)},
        {"request_id": "typed", "code": 42, "scanned_at": rfc3339(now)},
        {"request_id": "local", "code": good, "scanned_at": rfc3339(now),
         "local_decision": "maybe"},
        {"request_id": "card", "card": {"card_no": "CQ100000025", "region": "CQ"},
         "scanned_at": rfc3339(now)},
    ]
    status, body = await upload(gw, gate, items)
    assert status == 200
    got = [(r["request_id"], r["status"], r.get("reason")) for r in body["results"]]
    assert got == [
        ("ok-1", "confirmed", None), (None, "invalid", "malformed"),
        (None, "invalid", "malformed"), ("both", "invalid", "malformed"),
        ("neither", "invalid", "malformed"), ("when", "invalid", "malformed"),
        ("nooffset", "invalid", "malformed"), ("future", "invalid", "not_yet_valid"),
        ("old", "invalid", "expired"), ("junk", "invalid", "malformed"),
        ("typed", "invalid", "malformed"), ("local", "invalid", "malformed"),
        ("card", "invalid", "malformed")]


async def test_card_taps_upload_confirmed_and_a_forged_mac_invalid(gw: Gateway) -> None:
    gate = await gw.client_token(METRO_GATE)
    at = rfc3339(time.time() - 120)
    tap = {"card_no": "CQ100000025", "gate_client_id": METRO_GATE, "request_id": "tap-1",
           "scanned_at": at}
    r = await gw.client.post("/sandbox/v1/card-taps", json=tap)
    assert r.status in (200, 201), await r.text()
    mac = (await r.json())["terminal_mac"]
    card = {"card_no": "CQ100000025", "region": "CQ", "terminal_mac": mac}
    forged = {**card, "terminal_mac": ("A" if mac[0] != "A" else "B") + mac[1:]}
    _, body = await upload(gw, gate, [
        {"request_id": "tap-1", "card": card, "scanned_at": at},
        {"request_id": "tap-2", "card": forged, "scanned_at": at}])
    assert [(x["status"], x.get("reason")) for x in body["results"]] == [
        ("confirmed", None), ("invalid", "bad_signature")]
    recs = await all_records(gw)
    assert sorted((r["request_id"], r["face"], r["decision"]) for r in recs) == [
        ("tap-1", "ssc_card", "allow"), ("tap-2", "ssc_card", "deny")]
    assert all("CQ100000025" not in str(r) for r in recs)


async def test_another_gates_request_ids_never_collide(gw: Gateway) -> None:
    gate, other = await gw.client_token(METRO_GATE), await second_gate(gw)
    a, b = await fresh_code(gw), await fresh_code(gw)
    _, mine = await upload(gw, gate, [scan(a, "same-id", time.time())])
    _, theirs = await upload(gw, other, [scan(b, "same-id", time.time())])
    assert mine["results"][0]["status"] == theirs["results"][0]["status"] == "confirmed"
    assert len(await all_records(gw)) == 2


async def test_over_a_thousand_scans_is_413_and_needs_a_gate(gw: Gateway) -> None:
    gate = await gw.client_token(METRO_GATE)
    item = {"request_id": "x", "code": "YK1:X", "scanned_at": rfc3339(time.time())}
    status, body = await upload(gw, gate, [item] * 1001)
    assert status == 413 and body["code"] == "payload_too_large"
    status, body = await upload(gw, gate, [item] * 1000)
    assert status == 200 and len(body["results"]) == 1000
    status, _ = await upload(gw, "not-a-token", [item])
    assert status == 401
    r = await gw.client.post("/v1/gates/offline-scans", json={"scans": "nope"},
                             headers={"Authorization": f"Bearer {gate}"})
    assert r.status == 400


async def test_a_full_batch_of_real_codes_fits_the_body_limit(gw: Gateway) -> None:
    """1,000 e-SSC-sized scans are ~250 KB: far above the default 16 KiB body limit, within
    the route's own (2 MiB), sent with a Content-Length as gates send it."""
    import json

    gate = await gw.client_token(METRO_GATE)
    item = {"request_id": "x" * 128, "code": "ESSC1:" + "A" * 176,
            "scanned_at": rfc3339(time.time()), "local_decision": "allow"}
    body = json.dumps({"scans": [item] * 1000}).encode()
    assert len(body) > 200_000
    r = await gw.client.post("/v1/gates/offline-scans", data=body, headers={
        "Authorization": f"Bearer {gate}", "Content-Type": "application/json",
        "Content-Length": str(len(body))})
    assert r.status == 200, await r.text()
    big = json.dumps({"scans": [{**item, "code": "A" * 1024}] * 1000} | {"pad": "x" * 2**21})
    r = await gw.client.post("/v1/gates/offline-scans", data=big.encode(), headers={
        "Authorization": f"Bearer {gate}", "Content-Type": "application/json"})
    assert r.status == 413
