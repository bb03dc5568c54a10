"""The bulk path of POST /v1/gates/offline-scans (docs/records.md "Offline uploads"; issue 14
speed): a batch's scans are checked in a tight loop and ALL claimed — with their records and
live counts — in one round trip (one script call per outbox shard), their kept answers in one
more; every semantic of the scan-by-scan path holds. Real app, real Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import redis.asyncio as aioredis

from tests.faults.conftest import mint_codes, own_redis  # noqa: F401 - fixture
from tests.records.conftest import (
    METRO_GATE,
    SECOND_GATE,
    Gateway,
    all_records,
    demo_person,
    second_gate,
)
from tests.records.test_offline_upload import scan, upload
from tests.redis_server import RedisServer


async def _evalsha_calls(url: str) -> int:
    r = aioredis.Redis.from_url(url)
    try:
        stats = await r.info("commandstats")
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
    finally:
        await r.aclose()


async def test_a_batch_of_500_is_claimed_in_one_round_trip_per_step(
        make_gateway: Any, own_redis: RedisServer) -> None:  # noqa: F811
    g: Gateway = await make_gateway(redis_url=own_redis.url)
    gate = await g.client_token(METRO_GATE)
    codes = mint_codes(g.settings.keys_dir, await demo_person(g), 500)
    now = time.time()
    r = aioredis.Redis.from_url(own_redis.url)
    await r.config_resetstat()
    await r.aclose()
    status, body = await upload(g, gate, [scan(c, f"b-{i}", now) for i, c in enumerate(codes)])
    assert status == 200
    assert [x["status"] for x in body["results"]] == ["confirmed"] * 500
    # one script call per outbox shard for the claims (and their records), one per shard for
    # the kept answers — where the scan-by-scan path made 500 + 500 calls; a few more are the
    # rate limiter's, the bearer check's and the exporter lock's
    shards = g.settings.transactions_outbox_shards
    assert await _evalsha_calls(own_redis.url) <= 2 * shards + 10
    recs = await all_records(g)
    assert sorted(x["request_id"] for x in recs) == sorted(f"b-{i}" for i in range(500))
    assert {(x["decision"], x["origin"]) for x in recs} == {("allow", "offline")}


async def test_two_gates_uploading_the_same_codes_at_once_confirm_each_exactly_once(
        gw: Gateway) -> None:
    gate, other = await gw.client_token(METRO_GATE), await second_gate(gw)
    codes = mint_codes(gw.settings.keys_dir, await demo_person(gw), 300)
    now = time.time()
    mine = [scan(c, f"a-{i}", now) for i, c in enumerate(codes)]
    theirs = [scan(c, f"b-{i}", now) for i, c in enumerate(codes)]
    (s1, b1), (s2, b2) = await asyncio.gather(upload(gw, gate, mine),
                                              upload(gw, other, theirs))
    assert s1 == s2 == 200
    for i, (x, y) in enumerate(zip(b1["results"], b2["results"], strict=True)):
        assert sorted((x["status"], y["status"])) == ["confirmed", "double_use"], (i, x, y)
        dup = x if x["status"] == "double_use" else y
        winner = METRO_GATE if dup is y else SECOND_GATE
        assert dup["first_use"]["gate"] == winner
    recs = await all_records(gw)
    allows = [x for x in recs if x["decision"] == "allow"]
    denies = [x for x in recs if x["decision"] == "deny"]
    assert len(allows) == 300 and len(denies) == 300
    assert {x["reason"] for x in denies} == {"replayed"}
    assert len({x["record_id"] for x in recs}) == 600


async def test_a_mixed_batch_answers_per_item_and_the_same_batch_again_the_same(
        gw: Gateway) -> None:
    gate = await gw.client_token(METRO_GATE)
    pid = await demo_person(gw)
    a, b, c = mint_codes(gw.settings.keys_dir, pid, 3)
    now = time.time()
    forged = a[:-4] + ("AAAA" if not a.endswith("AAAA") else "BBBB")
    items: list[Any] = [
        scan(a, "m-1", now),
        scan(a, "m-2", now),            # the same code again in the same batch: double use
        scan(b, "m-3", now),
        scan(b, "m-3", now),            # the same request twice: the same answer, once
        scan(forged, "m-4", now),       # a broken signature
        {"request_id": "m-5", "code": c, "scanned_at": "soon"},
        scan(c, "m-6", now + 3600),     # in the future
        scan(c, "m-7", now),
    ]
    status, body = await upload(gw, gate, items)
    assert status == 200
    got = [(x["request_id"], x["status"], x.get("reason")) for x in body["results"]]
    assert got[0] == ("m-1", "confirmed", None)
    assert got[1] == ("m-2", "double_use", None)
    assert body["results"][1]["first_use"]["gate"] == METRO_GATE
    assert got[2:] == [("m-3", "confirmed", None), ("m-3", "confirmed", None),
                       ("m-4", "invalid", got[4][2]), ("m-5", "invalid", "malformed"),
                       ("m-6", "invalid", "not_yet_valid"), ("m-7", "confirmed", None)]
    assert got[4][2] in ("bad_signature", "malformed")
    before = sorted((x["request_id"], x["decision"], x["reason"])
                    for x in await all_records(gw))
    assert before == sorted([("m-1", "allow", "ok"), ("m-2", "deny", "replayed"),
                             ("m-3", "allow", "ok"), ("m-4", "deny", got[4][2]),
                             ("m-6", "deny", "not_yet_valid"), ("m-7", "allow", "ok")])
    _, again = await upload(gw, gate, items)
    assert again == body
    assert sorted((x["request_id"], x["decision"], x["reason"])
                  for x in await all_records(gw)) == before


async def test_a_lost_redis_fails_the_upload_closed_and_it_is_sent_again(
        make_gateway: Any, own_redis: RedisServer) -> None:  # noqa: F811
    """Redis frozen mid-upload (SIGSTOP: its replies never come): 503, not one scan answered
    `confirmed`. Thawed, the same upload sent again confirms every scan, each recorded once
    (claims the frozen server ran late are this gate's own request: a retry)."""
    from gateway.settings import Settings

    g: Gateway = await make_gateway(redis_url=own_redis.url,
                                    redis_timeout_s=Settings().redis_timeout_s)
    gate = await g.client_token(METRO_GATE)
    codes = mint_codes(g.settings.keys_dir, await demo_person(g), 50)
    now = time.time()
    batch = [scan(c, f"f-{i}", now) for i, c in enumerate(codes)]
    assert own_redis.proc is not None
    os.kill(own_redis.proc.pid, signal.SIGSTOP)
    try:
        r = await g.client.post("/v1/gates/offline-scans", json={"scans": batch},
                                headers={"Authorization": f"Bearer {gate}"})
        text = await r.text()
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
    assert r.status == 503 and "confirmed" not in text, text
    deadline = time.monotonic() + 10
    while True:
        r = await g.client.post("/v1/gates/offline-scans", json={"scans": batch},
                                headers={"Authorization": f"Bearer {gate}"})
        if r.status != 503 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert r.status == 200
    assert [x["status"] for x in (await r.json())["results"]] == ["confirmed"] * 50
    recs = await all_records(g)
    assert sorted(x["request_id"] for x in recs) == sorted(f"f-{i}" for i in range(50))
