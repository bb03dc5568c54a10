"""The gateway on a real Redis Cluster (GATEWAY_REDIS_CLUSTER=true): the resident, code, gate
and card paths run their scripts and claims across three masters without a CROSSSLOT."""

from __future__ import annotations

import secrets

from redis.asyncio.cluster import RedisCluster

from tests.web.conftest import GatewayFactory


async def test_codes_and_cards_on_a_redis_cluster(make_gateway: GatewayFactory,
                                                  redis_cluster_url: str) -> None:
    cluster = await RedisCluster.from_url(redis_cluster_url).initialize()
    await cluster.flushall()
    await cluster.aclose()
    gw = await make_gateway(use_redis=False, redis_url=redis_cluster_url, redis_cluster=True)
    assert (await (await gw.client.get("/readyz")).json())["status"] == "ready"

    resident = await gw.resident_token("r-zhang-wei")
    gate = await gw.client_token("gate-metro-l1-xiaoshizi")
    r = await gw.client.post("/v1/codes", json={"face": "ykm"},
                             headers={"Authorization": f"Bearer {resident}"})
    code = (await r.json())["code"]
    answers = []
    for rid in ("c-1", "c-2", "c-1"):
        r = await gw.client.post("/v1/codes/verify", json={
            "code": code, "scene": "metro", "request_id": rid},
            headers={"Authorization": f"Bearer {gate}"})
        answers.append(await r.json())
    assert [a["reason"] for a in answers] == ["ok", "replayed", "ok"]
    assert answers[0] == answers[2]  # the idempotent retry
    assert answers[0]["attributes"] == {"concession": "senior"}

    rid = secrets.token_hex(4)
    tap = await (await gw.client.post("/sandbox/v1/card-taps", json={
        "card_no": "CQ100000025", "gate_client_id": "gate-metro-l1-xiaoshizi",
        "request_id": rid, "scanned_at": answers[0]["verified_at"]})).json()
    r = await gw.client.post("/v1/cards/verify", json={
        "card_no": "CQ100000025", "region": "CQ", "terminal_mac": tap["terminal_mac"],
        "scene": "metro", "request_id": rid, "scanned_at": answers[0]["verified_at"]},
        headers={"Authorization": f"Bearer {gate}"})
    card = await r.json()
    assert card["decision"] == "allow" and card["subject"] == answers[0]["subject"]
