"""Usage statistics and application depth through the API, against a count by hand from the
venue registry (docs/stats.md); the roll-up maths on its own."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.services.stats import (
    hll_add,
    hll_count,
    hll_empty,
    level_of,
    parse_period,
    roll_up,
    target_for,
)
from gateway.web import admin
from gateway.web.stats import STATS
from tests.operator.conftest import bootstrap, new_operator
from tests.operator.records import Rec
from tests.web.conftest import Gateway

NOW = time.time()
TODAY = datetime.fromtimestamp(NOW, UTC).date().isoformat()


async def feed(gw: Gateway, records: list[Rec]) -> None:
    index = gw.app[admin.VENUE_INDEX]
    await gw.app[STATS].ingest(records, index.gates)


def demo_traffic() -> list[Rec]:
    """Allows at one of 渝中区's two metro venues and at its scenic spot; only denies at the
    pharmacy; the 沙坪坝 library and service hall verify; nothing at the 江北 library."""
    out = []
    for i in range(5):
        out.append(Rec("gate-metro-l1-xiaoshizi", "metro", "ykm", "allow", "ok", NOW, f"s{i}"))
    out.append(Rec("gate-metro-l1-xiaoshizi", "metro", "ssc_card", "allow", "ok", NOW, "s0"))
    out.append(Rec("gate-metro-l2-jwt", "metro", "ykm", "deny", "expired", NOW))
    out.append(Rec("gate-scenic-hongyadong", "scenic_spot", "essc", "allow", "ok", NOW, "s9"))
    out += [Rec("gate-pharmacy-tongjunge", "pharmacy", "ykm", "deny", "replayed", NOW)] * 3
    out.append(Rec("gate-library-cqlib", "library", "ssc_card", "allow", "ok", NOW, "s1"))
    out.append(Rec("gate-hall-shapingba", "service_hall", "ykm", "allow", "ok", NOW, "s2"))
    out.append(Rec("gate-bus-route-111", "bus", None, "deny", "malformed", NOW))
    return out


async def test_depth_equals_a_count_by_hand_from_the_registry(gw: Gateway) -> None:
    await feed(gw, demo_traffic())
    ah = bootstrap(gw)
    depth = await (await gw.client.get("/admin/v1/stats/depth?period=today",
                                       headers=ah)).json()
    # by hand, from gateway/data/venues.json: identity-scene venues that are active
    venues = (await (await gw.client.get("/admin/v1/venues", headers=ah)).json())["venues"]
    scenes = {s["id"]: s for s in (await (await gw.client.get("/v1/scenes")).json())["scenes"]}
    verified_gates = {"gate-metro-l1-xiaoshizi", "gate-scenic-hongyadong",
                      "gate-library-cqlib", "gate-hall-shapingba"}
    by_hand: dict[str, list[int]] = {}
    for v in venues:
        if v["status"] != "active" or "identity" not in scenes[v["scene"]]["categories"]:
            continue
        cell = by_hand.setdefault(v["district"], [0, 0])
        cell[0] += 1
        cell[1] += bool(set(v["gates"]) & verified_gates)
    got = {d["district"]: [d["active_venues"], d["verified_venues"]] for d in depth["districts"]}
    assert got == by_hand
    levels = {d["district"]: d["level"] for d in depth["districts"]}
    for district, (active, verified) in by_hand.items():
        assert levels[district] == level_of(verified / active)
    cells = {(c["scene"], c["district"]): c for c in depth["cells"]}
    assert cells[("metro", "500103")]["share"] == 0.5
    assert cells[("metro", "500103")]["level"] == "一级"
    assert cells[("metro", "500103")]["target"] == target_for(
        scenes["metro"]["depth_target"], date.today().year)
    assert cells[("scenic_spot", "500103")]["level"] == "三级"
    assert cells[("pharmacy", "500103")]["level"] == "none"   # only denies
    assert ("hotel", "500103") not in cells                     # inactive venue


async def test_a_disabled_gate_does_not_make_its_venue_verified(gw: Gateway) -> None:
    await feed(gw, demo_traffic())
    ah = bootstrap(gw)
    r = await gw.client.post("/admin/v1/clients/gate-scenic-hongyadong/disable", headers=ah)
    assert r.status == 200
    depth = await (await gw.client.get("/admin/v1/stats/depth?period=today",
                                       headers=ah)).json()
    cells = {(c["scene"], c["district"]): c for c in depth["cells"]}
    assert cells[("scenic_spot", "500103")]["verified_venues"] == 0


async def test_usage_groups_and_filters(gw: Gateway) -> None:
    await feed(gw, demo_traffic())
    vh = await new_operator(gw, "vera", "viewer")
    r = await gw.client.get(f"/admin/v1/stats/usage?from={TODAY}&to={TODAY}"
                            "&group_by=district,face", headers=vh)
    assert r.status == 200
    groups = {(g["district"], g["face"]): g for g in (await r.json())["groups"]}
    metro = groups[("500103", "ykm")]
    assert (metro["scans"], metro["allows"], metro["denies"]) == (9, 5, 4)
    assert metro["deny_reasons"] == {"expired": 1, "replayed": 3}
    assert metro["distinct_residents"] == 5
    assert groups[("500106", "none")]["deny_reasons"] == {"malformed": 1}
    r = await gw.client.get(f"/admin/v1/stats/usage?from={TODAY}&to={TODAY}&group_by=face",
                            headers=vh)
    faces = {g["face"]: g for g in (await r.json())["groups"]}
    assert faces["ykm"]["distinct_residents"] == 5  # s2 at the hall was seen at the metro
    assert faces["ssc_card"]["distinct_residents"] == 2
    r = await gw.client.get(f"/admin/v1/stats/usage?from={TODAY}&to={TODAY}&group_by=venue",
                            headers=vh)
    assert all(g["distinct_residents"] is None for g in (await r.json())["groups"])
    r = await gw.client.get(f"/admin/v1/stats/usage?from={TODAY}&to={TODAY}&group_by=scene"
                            "&district=500106", headers=vh)
    assert {g["scene"] for g in (await r.json())["groups"]} == {"library", "service_hall",
                                                                 "bus"}
    for bad in ("group_by=gate", "from=2026-13-01", "district=110101", "scene=nope",
                "from=2026-02-01&to=2026-01-01"):
        r = await gw.client.get(f"/admin/v1/stats/usage?{bad}", headers=vh)
        assert r.status == 400, bad


async def test_the_half_yearly_report_is_an_audited_export(gw: Gateway) -> None:
    await feed(gw, demo_traffic())
    half = f"{TODAY[:4]}-H{1 if int(TODAY[5:7]) <= 6 else 2}"
    viewer = await new_operator(gw, "vera", "viewer")
    r = await gw.client.get(f"/admin/v1/stats/report?period={half}&format=csv",
                            headers=viewer)
    assert r.status == 403
    auditor = await new_operator(gw, "audrey", "auditor")
    r = await gw.client.get(f"/admin/v1/stats/report?period={half}&format=csv",
                            headers=auditor)
    assert r.status == 200 and r.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO((await r.read()).decode("utf-8-sig"))))
    metro = next(x for x in rows if x["scene"] == "metro" and x["district"] == "500103")
    assert (metro["level"], metro["active_venues"], metro["verified_venues"]) == ("一级", "2",
                                                                                   "1")
    r = await gw.client.get(f"/admin/v1/stats/report?period={half}", headers=auditor)
    doc = await r.json()
    assert doc["period"]["label"] == half and doc["rows"]
    entries = (await (await gw.client.get("/admin/v1/audit", headers=auditor)).json())["entries"]
    exports = [e for e in entries if e["action"] == "admin.stats.exported"]
    assert [e["actor"] for e in exports] == ["operator:audrey"] * 2


def test_periods() -> None:
    t = date(2026, 12, 2)
    assert (parse_period("2026-H1", t).first, parse_period("2026-H1", t).last) == (
        date(2026, 1, 1), date(2026, 6, 30))
    assert parse_period("2026-H2", t).last == date(2026, 12, 31)
    assert parse_period("30d", t).first == date(2026, 11, 3)
    assert parse_period("2026-02", t).last == date(2026, 2, 28)
    assert parse_period("2026-12", t).last == date(2026, 12, 31)
    for bad in ("2026-H3", "yesterday", "2026-13", "0d", "2026-02-01..2026-01-01"):
        with pytest.raises(ValueError):
            parse_period(bad, t)


def test_levels_and_targets() -> None:
    assert [level_of(x) for x in (None, 0.0, 0.49, 0.5, 0.69, 0.7, 0.9, 1.0)] == [
        "none", "none", "none", "一级", "一级", "二级", "三级", "三级"]
    assert level_of(7 / 10) == "二级" and level_of(9 / 10) == "三级"
    plan = {"2024": "一级", "2025": "二级", "2027": "三级"}
    assert [target_for(plan, y) for y in (2024, 2026, 2030)] == ["一级", "二级", "三级"]
    assert target_for({"note": "试点"}, 2026) == "试点"


def test_a_subjects_register_and_rank_are_pinned() -> None:
    """The sketches stored in PostgreSQL outlive a release: a subject must keep its register
    and rank (SHA-256's first 64 bits: top 10 the register, the first 1 bit of the rest the
    rank), whatever the code computing them."""
    from gateway.services.stats import hll_position

    assert [hll_position(s) for s in ("", "a", "0" * 43, "sub-1", "居民")] == [
        (910, 1), (810, 2), (740, 2), (42, 8), (138, 1)]


def test_distinct_residents_are_counted_not_listed() -> None:
    regs = hll_empty()
    for i in range(5000):
        hll_add(regs, f"subject-{i}")
        hll_add(regs, f"subject-{i}")  # the same resident twice counts once
    assert abs(hll_count(regs) - 5000) / 5000 < 0.1
    rows, sketches = roll_up([Rec("g", "metro", "ykm", "allow", "ok", NOW, "secret-subject")],
                             {})
    assert len(rows) == 1 and len(sketches) == 4  # (district, scene) at four levels
    assert all(b"secret" not in bytes(reg) and hll_count(reg) == 1 for reg in sketches.values())


async def test_records_in_the_record_store_are_rolled_up(gw: Gateway) -> None:
    """The roll-ups follow the record store's cursor (gateway/services/records.py): what the
    exporter writes there is in the next answer, once (re-reading the cursor adds nothing)."""
    from gateway.services.records import TransactionRecord, new_record_id
    from gateway.web.transactions import RECORD_STORE

    store = gw.app[RECORD_STORE]
    recs = [TransactionRecord(new_record_id(NOW), "gate-metro-l1-xiaoshizi", "metro", "ykm",
                              "allow", "ok", NOW, NOW, "online", f"rr-{i}", subject=f"p{i % 2}")
            for i in range(3)]
    recs.append(TransactionRecord(new_record_id(NOW), "gate-metro-l1-xiaoshizi", "metro",
                                  None, "deny", "malformed", NOW, NOW, "online", "rr-bad"))
    assert await store.write(recs) == 4
    ah = bootstrap(gw)
    for _ in range(2):
        r = await gw.client.get("/admin/v1/stats/usage?group_by=district,scene,face",
                                headers=ah)
        groups = {(g["district"], g["scene"], g["face"]): g
                  for g in (await r.json())["groups"]}
        metro = groups[("500103", "metro", "ykm")]
        assert (metro["scans"], metro["allows"], metro["distinct_residents"]) == (3, 3, 2)
        assert groups[("500103", "metro", "none")]["deny_reasons"] == {"malformed": 1}


async def test_real_verifications_reach_the_statistics(gw: Gateway) -> None:
    """Through the gate path: each decision is a transaction record (outbox → exporter →
    record store), rolled up by the follower."""
    import asyncio

    from tests.codes.conftest import METRO_GATE, demo_person, issue, resident_token, verify

    token = resident_token(gw, await demo_person(gw))
    gate = await gw.client_token(METRO_GATE)
    for i in range(3):
        code = (await (await issue(gw, token)).json())["code"]
        _, ans = await verify(gw, gate, code, "metro", request_id=f"rv-{i}")
        assert ans["decision"] == "allow"
    ah = bootstrap(gw)
    deadline = time.monotonic() + 10  # the exporter drains the outbox, then the roll-up
    while True:
        r = await gw.client.get("/admin/v1/stats/usage?group_by=district,scene,face",
                                headers=ah)
        groups = {(g["district"], g["scene"], g["face"]): g for g in (await r.json())["groups"]}
        if ("500103", "metro", "ykm") in groups or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    metro = groups[("500103", "metro", "ykm")]
    assert (metro["scans"], metro["allows"], metro["distinct_residents"]) == (3, 3, 1)


async def test_with_postgresql_the_exporter_keeps_the_roll_ups(make_gateway,  # type: ignore[no-untyped-def]
                                                               database_url: str) -> None:
    """GATEWAY_DATABASE_URL set: verifications → outbox → exporter → the records AND the
    roll-up tables in one transaction; the API reads PostgreSQL's roll-ups (no follower)."""
    import asyncio

    from gateway.adapters.postgres_stats import PostgresStatsStore
    from tests.codes.conftest import METRO_GATE, demo_person, issue, resident_token, verify
    from tests.contract.test_record_store import drop_schema
    from tests.contract.test_stats_store import drop_stats

    await drop_schema(database_url)
    await drop_stats(database_url)
    g = await make_gateway(database_url=database_url)
    assert isinstance(g.app[STATS].store, PostgresStatsStore)
    token = resident_token(g, await demo_person(g))
    gate = await g.client_token(METRO_GATE)
    for i in range(4):
        code = (await (await issue(g, token)).json())["code"]
        _, ans = await verify(g, gate, code, "metro", request_id=f"pg-{i}")
        assert ans["decision"] == "allow"
    _, ans = await verify(g, gate, "not-a-code", "metro", request_id="pg-bad")
    assert ans["decision"] == "deny"
    ah = bootstrap(g)
    deadline = time.monotonic() + 15
    while True:
        r = await g.client.get("/admin/v1/stats/usage?group_by=district,face", headers=ah)
        assert r.status == 200
        groups = {(x["district"], x["face"]): x for x in (await r.json())["groups"]}
        got = groups.get(("500103", "ykm"))
        if (got is not None and got["scans"] == 4 and ("500103", "none") in groups) or \
                time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert got is not None
    assert (got["scans"], got["allows"], got["distinct_residents"]) == (4, 4, 1)
    assert got["latency_ms"]["p50"] is not None
    assert groups[("500103", "none")]["deny_reasons"] == {"malformed": 1}
    r = await g.client.get("/admin/v1/stats/depth?period=today&district=500103", headers=ah)
    metro = next(c for c in (await r.json())["cells"] if c["scene"] == "metro")
    assert metro["verified_venues"] >= 1


@pytest.mark.parametrize("use_redis", [True, False], ids=["redis", "memory"])
async def test_the_live_view_counts_each_decision_as_it_is_made(make_gateway,  # type: ignore[no-untyped-def]
                                                                 use_redis: bool) -> None:
    """Live counters (GATEWAY_STATS_LIVE): counted by the claim's own script (Redis) or the
    sandbox's claims — in the answer at once, no exporter, no roll-up in between; a retry of
    the same request is not counted twice."""
    from tests.codes.conftest import METRO_GATE, demo_person, issue, resident_token, verify

    g = await make_gateway(use_redis=use_redis)
    token = resident_token(g, await demo_person(g))
    gate = await g.client_token(METRO_GATE)
    for i in range(3):
        code = (await (await issue(g, token)).json())["code"]
        for _ in range(2):  # the gate retries: one decision
            _, ans = await verify(g, gate, code, "metro", request_id=f"live-{i}")
            assert ans["decision"] == "allow"
    _, ans = await verify(g, gate, "not-a-code", "metro", request_id="live-bad")
    assert ans["decision"] == "deny"
    ah = bootstrap(g)
    r = await g.client.get("/admin/v1/stats/live?minutes=5", headers=ah)
    assert r.status == 200, await r.text()
    live = await r.json()
    assert live["day"] == TODAY
    assert (live["today"]["scans"], live["today"]["allows"]) == (4, 3)
    assert live["today"]["deny_reasons"] == {"malformed": 1}
    assert [(d["district"], d["scans"]) for d in live["districts"]] == [("500103", 4)]
    assert {f["face"]: f["scans"] for f in live["faces"]} == {"ykm": 3, "none": 1}
    assert len(live["minutes"]) == 5 and sum(m["scans"] for m in live["minutes"]) == 4
    other = await g.client.get("/admin/v1/stats/live?district=500106", headers=ah)
    assert (await other.json())["today"]["scans"] == 0
    for bad in ("minutes=0", "minutes=121", "minutes=x", "district=999999"):
        r = await g.client.get(f"/admin/v1/stats/live?{bad}", headers=ah)
        assert r.status == 400 and "Traceback" not in await r.text()
    viewer = await new_operator(g, "vera", "viewer")
    assert (await g.client.get("/admin/v1/stats/live", headers=viewer)).status == 200
    assert (await g.client.get("/admin/v1/stats/live")).status == 401


async def test_the_live_view_switched_off(make_gateway) -> None:  # type: ignore[no-untyped-def]
    g = await make_gateway(stats_live=False)
    r = await g.client.get("/admin/v1/stats/live", headers=bootstrap(g))
    assert r.status == 503 and (await r.json())["code"] == "unavailable"


@given(st.binary(min_size=1024, max_size=1024).map(lambda b: bytes(x % 56 for x in b)),
       st.binary(min_size=1024, max_size=1024).map(lambda b: bytes(x % 56 for x in b)))
def test_the_sketch_merge_is_the_register_wise_max(a: bytes, b: bytes) -> None:
    """hll_merge works on the registers as one big integer (SWAR): it must equal the plain
    register-wise max for every register value a rank can take (0..55)."""
    from gateway.services.stats import hll_merge

    into = bytearray(a)
    hll_merge(into, b)
    assert bytes(into) == bytes(map(max, a, b))
    edge = bytearray([0, 55] * 512)
    hll_merge(edge, bytes([55, 0] * 512))
    assert edge == bytearray([55] * 1024)


async def test_statistics_with_postgresql_away_answer_503(make_gateway) -> None:  # type: ignore[no-untyped-def]
    from tests.redis_server import free_port

    g = await make_gateway(database_url=f"postgresql://gw@127.0.0.1:{free_port()}/none")
    ah = bootstrap(g)
    for path in ("/admin/v1/stats/usage?group_by=district", "/admin/v1/stats/depth",
                 "/admin/v1/stats/usage?group_by=venue"):
        r = await g.client.get(path, headers=ah)
        body = await r.text()
        assert r.status == 503, body
        assert "asyncpg" not in body and "Traceback" not in body and "127.0.0.1" not in body
