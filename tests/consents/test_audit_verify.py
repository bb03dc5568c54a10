"""`gateway audit verify` (audit_verify_main): the whole chain on real Redis after real
traffic; tampering with any entry is named by its seq."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path

import jwt
import pytest
import redis.asyncio as aioredis

from gateway.adapters.redis_audit import (
    RedisAuditLog,
    audit_checkpoint_main,
    audit_list_main,
    audit_verify_main,
)
from tests.web.conftest import GatewayFactory

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
                   rehash: bool = False, chain_key: bytes | None = None) -> None:
    """What an attacker with Redis access would do: rebuild the stream with one entry changed
    (a stream cannot be edited in place) and, with `rehash`, re-chain every entry from it on
    — with plain SHA-256, or with `chain_key` (an insider holding the data key)."""
    from gateway.services.audit import canonical_json, entry_hash

    def digest(doc: dict[str, object]) -> str:
        if chain_key is not None:
            return entry_hash(doc, chain_key)
        return hashlib.sha256(canonical_json(
            {k: v for k, v in doc.items() if k != "hash"})).hexdigest()

    rows = await r.xrange(key)
    await r.delete(key)
    prev = None
    for sid, fields in rows:
        doc = json.loads(fields[b"e"])
        if doc["seq"] == seq:
            doc.update(change)
        if rehash and doc["seq"] >= seq:
            if prev is not None:
                doc["prev_hash"] = prev
            doc["hash"] = digest(doc)
        prev = doc["hash"]
        await r.xadd(key, {"e": json.dumps(doc, ensure_ascii=False)}, id=sid)
    if rehash:
        await r.set(key.replace(":log", ":head"), f"{len(rows)} {prev}")


@pytest.mark.parametrize(("seq", "change", "rehash", "broken"), [
    (1, {"actor": "rp:someone-else"}, False, 1),
    (4, {"outcome": "ok", "reason": None}, False, 4),
    # re-chained from entry 3 on without the chain key (finding 7 of issue 16: verified before)
    (3, {"types": ["resident_id", "degree"]}, True, 3),
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
        key = RedisAuditLog(r, settings.redis_prefix, chain_key=b"").stream_key
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
        key = RedisAuditLog(r, settings.redis_prefix, chain_key=b"").stream_key
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


# -- issue 16, finding 7: signed checkpoints outside Redis --------------------------------
async def test_checkpoints_detect_a_chain_rebuilt_with_the_key_and_a_rollback(
        api: Api, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An insider holding the data key can re-chain consistently, and anyone can cut the tail
    and set the head back; `audit verify --checkpoint F` finds both, plain verify cannot."""
    await _traffic(api)
    settings = api.gw.settings
    cp = tmp_path / "audit-checkpoints.jwsl"
    assert await asyncio.to_thread(audit_checkpoint_main, settings, cp) == 0
    assert "seq 5" in capsys.readouterr().out
    line = cp.read_text().strip()
    assert jwt.get_unverified_header(line)["typ"] == "audit-checkpoint+jwt"
    assert await asyncio.to_thread(audit_verify_main, settings, cp) == 0
    assert "1 checkpoints held" in capsys.readouterr().out
    chain_key = api.service.audit.log.chain_key
    r = aioredis.Redis.from_url(redis_url)
    try:
        key = RedisAuditLog(r, settings.redis_prefix, chain_key=b"").stream_key
        await _rewrite(r, key, 3, {"types": ["degree"]}, rehash=True, chain_key=chain_key)
    finally:
        await r.aclose()
    assert await asyncio.to_thread(audit_verify_main, settings) == 0   # consistent ...
    capsys.readouterr()
    assert await asyncio.to_thread(audit_verify_main, settings, cp) == 1   # ... but not ours
    assert "BROKEN at seq 5" in capsys.readouterr().out


async def test_a_rolled_back_chain_is_found_by_a_checkpoint(
        api: Api, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    await _traffic(api)
    settings = api.gw.settings
    cp = tmp_path / "cp.jwsl"
    assert await asyncio.to_thread(audit_checkpoint_main, settings, cp) == 0
    r = aioredis.Redis.from_url(redis_url)
    try:
        log = RedisAuditLog(r, settings.redis_prefix, chain_key=b"")
        entries = await log.entries(1, 10)
        await r.xdel(log.stream_key, "5-1", "4-1")
        await r.set(log.head_key, f"3 {entries[2]['hash']}")
    finally:
        await r.aclose()
    assert await asyncio.to_thread(audit_verify_main, settings) == 0
    assert await asyncio.to_thread(audit_verify_main, settings, cp) == 1
    assert "BROKEN at seq 4" in capsys.readouterr().out


async def test_a_forged_checkpoint_file_is_refused(
        api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    await _traffic(api)
    settings = api.gw.settings
    cp = tmp_path / "cp.jwsl"
    assert await asyncio.to_thread(audit_checkpoint_main, settings, cp) == 0
    head, body, sig = cp.read_text().strip().split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["audit_seq"] = 2
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    cp.write_text(f"{head}.{forged}.{sig}\n")
    capsys.readouterr()
    assert await asyncio.to_thread(audit_verify_main, settings, cp) == 1
    assert "checkpoint INVALID" in capsys.readouterr().out
    # an access token is not a checkpoint either
    cp.write_text(await api.gw.client_token("rp-service-hall") + "\n")
    assert await asyncio.to_thread(audit_verify_main, settings, cp) == 1


async def test_the_server_exports_checkpoints_to_a_file(
        make_gateway: GatewayFactory, tmp_path: Path) -> None:
    cp = tmp_path / "exported.jwsl"
    gw = await make_gateway(audit_checkpoint_file=cp, audit_checkpoint_interval_s=1)
    api = Api(gw)
    await _traffic(api)
    for _ in range(50):
        if cp.exists() and cp.read_text().strip():
            break
        await asyncio.sleep(0.1)
    lines = cp.read_text().split()
    assert lines and jwt.get_unverified_header(lines[-1])["typ"] == "audit-checkpoint+jwt"
    assert await asyncio.to_thread(audit_verify_main, gw.settings, cp) == 0
