"""Every gate decision is one transaction record (docs/records.md), and scans are judged at
their scan time — through the real app, on real Redis (outbox + exporter) and in memory."""

from __future__ import annotations

import hashlib
import time

import pytest

from gateway.clock import FrozenClock
from gateway.codec import decode
from gateway.timefmt import rfc3339
from gateway.web import admin
from tests.records.conftest import (
    METRO_GATE,
    SECOND_GATE,
    Gateway,
    all_records,
    demo_person,
    export_page,
    fresh_code,
    second_gate,
    verify,
)


@pytest.fixture(params=["redis", "memory"])
async def g(request: pytest.FixtureRequest, make_gateway) -> Gateway:  # type: ignore[no-untyped-def]
    return await make_gateway(use_redis=request.param == "redis")  # type: ignore[no-any-return]


async def test_an_allow_is_one_record_without_personal_data_or_the_code(g: Gateway) -> None:
    pid = await demo_person(g)
    code = await fresh_code(g, pid)
    gate = await g.client_token(METRO_GATE)
    status, answer = await verify(g, gate, code, "metro", "rec-1")
    assert (status, answer["decision"]) == (200, "allow")
    [rec] = await all_records(g)
    claims = decode(code).claims
    assert rec["record_id"] and rec["cursor"]
    assert (rec["gate"], rec["scene"], rec["face"], rec["decision"], rec["reason"],
            rec["origin"], rec["request_id"]) == (METRO_GATE, "metro", "ykm", "allow", "ok",
                                                  "online", "rec-1")
    assert rec["subject"] == answer["subject"] and rec["attributes"] == answer["attributes"]
    assert rec["verified_at"] == answer["verified_at"]
    assert rec["credential_hash"] == hashlib.sha256(
        b"%s\0%s\0%s" % (claims.issuer.encode(), claims.kid.encode(), claims.nonce)).hexdigest()
    assert rec["venue"] is None
    text = str(rec)
    assert code not in text and code.split(":", 1)[1][:20] not in text
    assert pid not in text  # the person id never leaves the gateway


async def test_a_retry_is_not_recorded_twice_and_a_replay_is_its_own_deny(g: Gateway) -> None:
    code = await fresh_code(g)
    gate = await g.client_token(METRO_GATE)
    other = await second_gate(g)
    _, first = await verify(g, gate, code, "metro", "r-1")
    _, again = await verify(g, gate, code, "metro", "r-1")
    assert again == first
    _, replay = await verify(g, other, code, "metro", "r-9")
    _, replay_again = await verify(g, other, code, "metro", "r-9")
    assert replay["reason"] == replay_again["reason"] == "replayed"
    # outbox shards drain one after the other: the store's order is not the scans' order
    recs = sorted(await all_records(g), key=lambda r: r["request_id"])
    assert [(r["gate"], r["request_id"], r["decision"], r["reason"]) for r in recs] == [
        (METRO_GATE, "r-1", "allow", "ok"), (SECOND_GATE, "r-9", "deny", "replayed")]
    assert recs[0]["credential_hash"] == recs[1]["credential_hash"]
    assert recs[1]["subject"] is None


async def test_denies_before_any_claim_are_recorded_once_per_request(g: Gateway) -> None:
    gate = await g.client_token(METRO_GATE)
    code = await fresh_code(g)
    bad = code[:-3] + ("AAA" if not code.endswith("AAA") else "BBB")
    for _ in range(3):
        _, d = await verify(g, gate, bad, "metro", "bad-1")
        assert d["decision"] == "deny"
    _, junk = await verify(g, gate, "not a code", "metro", "junk-1")
    assert junk["reason"] == "malformed"
    recs = sorted(await all_records(g), key=lambda r: r["request_id"])
    assert [(r["request_id"], r["decision"]) for r in recs] == [("bad-1", "deny"),
                                                               ("junk-1", "deny")]
    assert recs[1]["face"] is None and recs[1]["credential_hash"] is None


async def test_a_scan_two_minutes_old_of_a_code_valid_then_is_an_allow(make_gateway) -> None:  # type: ignore[no-untyped-def]
    """Done-when of issue 14: an online verify carrying a scanned_at two minutes old."""
    clock = FrozenClock(time.time())
    g = await make_gateway(clock=clock)
    code = await fresh_code(g)
    scanned = clock.now() + 1
    clock.advance(120)  # the code (30 s) expired 90 s ago; the gate scanned it while valid
    gate = await g.client_token(METRO_GATE)
    _, d = await verify(g, gate, code, "metro", "late-1", scanned_at=rfc3339(scanned))
    assert (d["decision"], d["reason"]) == ("allow", "ok")
    _, again = await verify(g, gate, code, "metro", "late-2", scanned_at=rfc3339(scanned))
    assert again["reason"] == "replayed"
    rec = next(r for r in await all_records(g) if r["request_id"] == "late-1")
    assert rec["scanned_at"] == rfc3339(scanned) and rec["verified_at"] == d["verified_at"]
    # without scanned_at the same late arrival is judged now: expired
    code2 = await fresh_code(g)
    clock.advance(120)
    _, now_judged = await verify(g, gate, code2, "metro", "late-3")
    assert now_judged["reason"] == "expired"


async def test_scan_time_bounds_the_skew_ahead_and_the_allowance_behind(make_gateway) -> None:  # type: ignore[no-untyped-def]
    clock = FrozenClock(time.time())
    g = await make_gateway(clock=clock, offline_max_s=300)
    gate = await g.client_token(METRO_GATE)
    code = await fresh_code(g)
    issued = clock.now()
    _, ahead = await verify(g, gate, code, "metro", "a", scanned_at=rfc3339(issued + 30))
    assert ahead["reason"] == "not_yet_valid"
    clock.advance(301)
    _, old = await verify(g, gate, code, "metro", "b", scanned_at=rfc3339(issued + 1))
    assert old["reason"] == "expired"
    status, _ = await verify(g, gate, code, "metro", "c", scanned_at="yesterday")
    assert status == 400


async def test_single_use_holds_over_the_whole_offline_window(make_gateway) -> None:  # type: ignore[no-untyped-def]
    """A code used online is still `replayed` when a buffered scan of it arrives 10 minutes
    later (its claim lives for the code's life + the allowance, not just the code's life)."""
    clock = FrozenClock(time.time())
    # in memory: the claims expire on the injected clock (a Redis TTL runs on the server's;
    # tests/codes/test_codes_web.py reads that TTL)
    g = await make_gateway(clock=clock, use_redis=False)
    gate = await g.client_token(METRO_GATE)
    other = await second_gate(g)
    code = await fresh_code(g)
    scanned = clock.now() + 1
    _, first = await verify(g, gate, code, "metro", "x-1")
    assert first["decision"] == "allow"
    clock.advance(600)
    _, late = await verify(g, other, code, "metro", "y-1", scanned_at=rfc3339(scanned))
    assert late["reason"] == "replayed"


async def test_the_export_pages_behind_its_cursor_and_refuses_bad_parameters(
        g: Gateway) -> None:
    gate = await g.client_token(METRO_GATE)
    for i in range(5):
        await verify(g, gate, "junk", "metro", f"p-{i}")
    await all_records(g)
    status, first, cursor = await export_page(g, limit=2)
    assert status == 200 and len(first) == 2
    assert cursor == first[-1]["cursor"]
    _, rest, cursor2 = await export_page(g, cursor, 10)
    assert sorted(r["request_id"] for r in first + rest) == [f"p-{i}" for i in range(5)]
    _, empty, cursor3 = await export_page(g, cursor2, 10)
    assert empty == [] and cursor3 == cursor2
    for bad in ({"after": "x"}, {"after": ""}, {"limit": "0"}, {"limit": "10001"},
                {"limit": "ten"}):
        r = await g.client.get("/admin/v1/transactions", params=bad,
                               headers={"Authorization": f"Bearer {g.app[admin.ADMIN_TOKEN]}"})
        assert r.status == 400 and (await r.json())["code"] == "invalid_request"
    r = await g.client.get("/admin/v1/transactions")
    assert r.status == 401
    r = await g.client.get("/admin/v1/transactions", headers={"Authorization": "Bearer nope"})
    assert r.status == 403


async def test_the_outbox_and_the_exporter_show_in_metrics(gw: Gateway) -> None:
    import asyncio

    gate = await gw.client_token(METRO_GATE)
    await verify(gw, gate, await fresh_code(gw), "metro", "m-1")
    text = ""
    for _ in range(100):  # the background exporter takes it within its idle interval
        text = await (await gw.client.get("/metrics")).text()
        if "gateway_transactions_exported_total 1.0" in text:
            break
        await asyncio.sleep(0.05)
    assert "gateway_transactions_exported_total 1.0" in text
    assert "gateway_transactions_outbox_bound 2e+06" in text
    assert "gateway_transactions_dropped_total 0.0" in text
