"""`gateway audit verify` (audit_verify_main): the whole chain on real Redis after real
traffic; tampering with any entry is named by its seq."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis.asyncio as aioredis

from gateway.adapters.redis_audit import RedisAuditLog, audit_list_main, audit_verify_main

from .conftest import HALL_RP, Api


async def _traffic(api: Api) -> None:
    zhang = await api.resident("r-zhang-wei")
    subject = await api.counter_subject(zhang)
    rp = await api.gw.client_token(HALL_RP)
    _, created = await api.request(rp, subject, ["resident_id"], max_uses=1)
    await api.me("POST", f"/v1/me/consents/{created['consent_id']}/approve", zhang)
    await api.query(rp, created["consent_id"])
    await api.query(rp, created["consent_id"])          # refused: exhausted
    await api.query(rp, "cns_" + "Q" * 22)              # refused: forged


async def _rewrite(r: aioredis.Redis, key: str, seq: int, change: dict[str, object],
                   rehash: bool = False) -> None:
    """What an attacker with Redis access would do: rebuild the stream with one entry changed
    (a stream cannot be edited in place)."""
    from gateway.services.audit import entry_hash

    rows = await r.xrange(key)
    await r.delete(key)
    for sid, fields in rows:
        doc = json.loads(fields[b"e"])
        if doc["seq"] == seq:
            doc.update(change)
            if rehash:
                doc["hash"] = entry_hash(doc)
        await r.xadd(key, {"e": json.dumps(doc, ensure_ascii=False)}, id=sid)


@pytest.mark.parametrize(("seq", "change", "rehash", "broken"), [
    (1, {"actor": "rp:someone-else"}, False, 1),
    (4, {"outcome": "ok", "reason": None}, False, 4),
    (3, {"types": ["resident_id", "degree"]}, True, 4),
])
async def test_audit_verify_names_the_first_broken_seq(
        api: Api, redis_url: str, capsys: pytest.CaptureFixture[str], seq: int,
        change: dict[str, object], rehash: bool, broken: int) -> None:
    await _traffic(api)
    settings = api.gw.settings
    assert await asyncio.to_thread(audit_verify_main, settings) == 0
    assert "audit chain ok" in capsys.readouterr().out
    r = aioredis.Redis.from_url(redis_url)
    try:
        key = RedisAuditLog(r, settings.redis_prefix).stream_key
        assert await r.xlen(key) == 5
        await _rewrite(r, key, seq, change, rehash)
    finally:
        await r.aclose()
    assert await asyncio.to_thread(audit_verify_main, settings) == 1
    assert f"BROKEN at seq {broken}" in capsys.readouterr().out


async def test_deleting_an_entry_or_the_tail_is_found(api: Api, redis_url: str) -> None:
    await _traffic(api)
    settings = api.gw.settings
    r = aioredis.Redis.from_url(redis_url)
    try:
        key = RedisAuditLog(r, settings.redis_prefix).stream_key
        last = int((await r.xrevrange(key, count=1))[0][0].decode().split("-")[0])
        await r.xdel(key, f"{last}-1")
    finally:
        await r.aclose()
    assert await asyncio.to_thread(audit_verify_main, settings) == 1


def test_no_redis_means_nothing_durable_to_verify(capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.settings import Settings

    assert audit_verify_main(Settings()) == 2
    assert "memory only" in capsys.readouterr().out


async def test_audit_list_prints_the_entries_as_json_lines(
        api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    """`gateway audit list`: what an operator reads — the chain's entries, no personal data."""
    await _traffic(api)
    settings = api.gw.settings
    assert await asyncio.to_thread(audit_list_main, settings, 0, 3) == 0
    out = capsys.readouterr().out
    last3 = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [e["seq"] for e in last3] == [3, 4, 5]
    assert last3[-1]["action"] == "consent.refused"
    assert await asyncio.to_thread(audit_list_main, settings, 2, 2) == 0
    assert [json.loads(x)["seq"] for x in capsys.readouterr().out.splitlines()] == [2, 3]
    person = api.person(await api.resident("r-zhang-wei"))
    assert await asyncio.to_thread(audit_list_main, settings, 1, 100) == 0
    assert person not in capsys.readouterr().out
