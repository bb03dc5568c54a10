"""Finding 2 of issue 12: a Redis that lost its data can never let a used code through
again. The store epoch (gateway/adapters/store_epoch.py) notices an empty restart or a store
restored from an old snapshot within one claim, refuses every code and card tap whose first
use could be in the lost history, alarms (log + metric) and resumes by itself; the sandbox's
clients come back without a restart; production refuses a Redis that does not persist."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from structlog.testing import capture_logs

from gateway.settings import config_from_env
from tests.codes.conftest import demo_person
from tests.faults.conftest import METRO_GATE, REPO, kill, mint_codes, restart, verify_body
from tests.redis_server import RedisServer
from tests.web.conftest import Gateway

CARD = "CQ100000462"   # 赵敏's active physical card (gateway/data/residents.json)


async def _verify(g: Gateway, token: str, code: str, rid: str | None = None) -> tuple[int, Any]:
    r = await g.client.post("/v1/codes/verify", json=verify_body(code, rid),
                            headers={"Authorization": f"Bearer {token}"})
    return r.status, await r.json(content_type=None)


async def _settled(call: Any, within_s: float = 3.0) -> tuple[int, Any]:
    """The answer once Redis is back (503 while the gateway reconnects in the background)."""
    deadline = time.monotonic() + within_s
    while True:
        status, d = await call()
        if status != 503:
            return status, d
        assert time.monotonic() < deadline, d
        await asyncio.sleep(0.05)


async def _tap_body(g: Gateway, rid: str) -> dict[str, Any]:
    at = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    r = await g.client.post("/sandbox/v1/card-taps", json={
        "card_no": CARD, "gate_client_id": METRO_GATE, "request_id": rid, "scanned_at": at})
    assert r.status == 200, await r.text()
    mac = (await r.json())["terminal_mac"]
    return {"card_no": CARD, "region": "CQ", "terminal_mac": mac, "scene": "metro",
            "request_id": rid, "scanned_at": at}


async def _tap(g: Gateway, token: str, body: dict[str, Any]) -> tuple[int, Any]:
    r = await g.client.post("/v1/cards/verify", json=body,
                            headers={"Authorization": f"Bearer {token}"})
    return r.status, await r.json(content_type=None)


async def _until(pred: Any, within_s: float) -> float:
    t0 = time.monotonic()
    while not await pred():
        assert time.monotonic() - t0 < within_s
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


async def test_an_empty_restart_refuses_what_was_used_and_resumes_by_itself(
        make_gateway: Any, own_redis: RedisServer, monkeypatch: Any) -> None:
    limits = config_from_env({"GATEWAY_RATELIMIT_ENABLED": "false"})   # one gate, many scans
    g = await make_gateway(redis_url=own_redis.url, rate_limits=limits)
    token = await g.client_token(METRO_GATE)
    person = await demo_person(g)
    used = mint_codes(g.settings.keys_dir, person, 100)
    for code in used:
        status, d = await _verify(g, token, code)
        assert (status, d.get("decision")) == (200, "allow"), d
    taps = [await _tap_body(g, f"tap-{i}") for i in range(10)]
    for body in taps:
        status, d = await _tap(g, token, body)
        assert (status, d.get("decision")) == (200, "allow"), d

    kill(own_redis)                       # kill -9: no persistence, the data is gone
    restart(own_redis)
    restarted = time.monotonic()
    with capture_logs() as logs:
        replays = [await _settled(lambda c=code: _verify(g, token, c)) for code in used]
        tap_replays = [await _settled(lambda b=body: _tap(g, token, b)) for body in taps]
    # never an allow: until the sandbox's records are put back, the gate's and the person's
    # records are gone too (scene_not_permitted, revoked); a claim, or the store clock's
    # tick within a second, finds the loss
    assert [(s, d["decision"]) for s, d in replays + tap_replays] == [(200, "deny")] * 110
    lost = [e for e in logs if e["event"] == "store.epoch_lost"]
    assert lost and lost[0]["reason"] == "missing" and lost[0]["log_level"] == "error"
    metrics = await (await g.client.get("/metrics")).text()
    assert 'gateway_store_epoch_losses_total{reason="missing"} 1.0' in metrics

    # the sandbox's clients came back (the gate authenticates again) without a restart
    async def token_ok() -> bool:
        r = await g.client.post("/oauth2/token", data={"grant_type": "client_credentials"},
                                headers={"Authorization": g.basic(METRO_GATE)})
        return r.status == 200

    await _until(token_ok, 3.0)
    # resumes by itself: a code made after the loss was found is judged normally
    async def fresh_allowed() -> bool:
        # the re-seeded demo resident is a new person record (the old one was lost)
        fresh = mint_codes(g.settings.keys_dir, await demo_person(g), 1)[0]
        status, d = await _verify(g, token, fresh)
        assert status == 200
        return bool(d["decision"] == "allow")

    await _until(fresh_allowed, 5.0)
    first_allow_s = time.monotonic() - restarted
    print(f"\nempty restart: 100/100 used codes and 10/10 taps refused; first allow "
          f"{first_allow_s:.2f} s after the restart")
    assert first_allow_s < 6.0
    # with the records back, every used code and tap is `replayed`
    replays = [await _verify(g, token, code) for code in used]
    tap_replays = [await _tap(g, token, body) for body in taps]
    assert [(s, d["decision"], d["reason"]) for s, d in replays + tap_replays] == \
        [(200, "deny", "replayed")] * 110, replays[:3]

    # and every used code is still refused afterwards
    status, d = await _verify(g, token, used[0])
    assert d["reason"] == "replayed"


async def test_a_store_restored_from_an_old_snapshot_refuses_what_came_after(
        make_gateway: Any, own_redis: RedisServer) -> None:
    g = await make_gateway(redis_url=own_redis.url)
    token = await g.client_token(METRO_GATE)
    person = await demo_person(g)
    before, after = mint_codes(g.settings.keys_dir, person, 20), \
        mint_codes(g.settings.keys_dir, person, 20)
    for code in before:
        assert (await _verify(g, token, code))[1]["decision"] == "allow"
    r = aioredis.Redis.from_url(own_redis.url)
    await r.save()                        # the snapshot (dump.rdb)
    await r.aclose()
    await asyncio.sleep(1.2)              # a tick of the store clock goes by
    for code in after:
        assert (await _verify(g, token, code))[1]["decision"] == "allow"
    kill(own_redis)
    restart(own_redis)                    # loads the old dump.rdb: `after` is not in it
    replays = [(await _settled(lambda c=code: _verify(g, token, c)))[1]
               for code in before + after]
    assert [(d["decision"], d["reason"]) for d in replays] == [("deny", "replayed")] * 40


async def test_production_refuses_a_redis_that_does_not_persist(
        tmp_path: Path, own_redis: RedisServer) -> None:
    from gateway.adapters.redis_store import connect
    from gateway.app import ensure_keys, require_persistence
    from gateway.clock import SystemClock
    from gateway.settings import Settings

    ensure_keys(Settings(env="sandbox", keys_dir=tmp_path / "keys"), SystemClock())
    psam = tmp_path / "psam.json"
    psam.write_text("{}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_ENV="production", GATEWAY_REDIS_URL=own_redis.url,
               GATEWAY_ADMIN_TOKEN=secrets.token_urlsafe(32),
               GATEWAY_METRICS_TOKEN=secrets.token_urlsafe(32),
               GATEWAY_ISSUER="https://gateway.example", GATEWAY_YKB_URL="https://ykb.example",
               GATEWAY_ESSC_URL="https://essc.example",
               GATEWAY_CERTLIB_URL="https://certlib.example", GATEWAY_PSAM_GATE_KEYS=str(psam),
               # never reached: the persistence check comes first (a closed loopback port)
               GATEWAY_DATABASE_URL="postgresql://gw@127.0.0.1:9/gw",
               GATEWAY_KEYS_DIR=str(tmp_path / "keys"), PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "gateway", "serve"]
    # own_redis runs with --appendonly no and the default maxmemory-policy (noeviction)
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, timeout=60)
    assert done.returncode == 2, done.stderr.decode()[-2000:]
    assert "appendonly is 'no', must be 'yes'" in done.stderr.decode()
    assert "server.started" not in done.stderr.decode() + done.stdout.decode()
    r = aioredis.Redis.from_url(own_redis.url)
    await r.config_set("appendonly", "yes")
    await r.config_set("maxmemory-policy", "allkeys-lru")
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, timeout=60)
    assert done.returncode == 2 and "maxmemory-policy is 'allkeys-lru'" in done.stderr.decode()
    await r.config_set("maxmemory-policy", "noeviction")
    await r.aclose()
    client = connect(own_redis.url, timeout_s=1.0)
    try:
        await require_persistence(client)   # persisting: no objection
    finally:
        await client.aclose()


async def test_readyz_fails_in_production_when_redis_stops_persisting(
        make_gateway: Any, own_redis: RedisServer, tmp_path: Path) -> None:
    from gateway.app import ensure_keys
    from gateway.clock import SystemClock
    from gateway.settings import Settings

    keys = tmp_path / "prod-keys"
    ensure_keys(Settings(env="sandbox", keys_dir=keys), SystemClock())   # keys on disk
    psam = tmp_path / "psam.json"
    psam.write_text(json.dumps({}))
    r = aioredis.Redis.from_url(own_redis.url)
    await r.config_set("appendonly", "yes")
    g = await make_gateway(env="production", redis_url=own_redis.url, keys_dir=keys,
                           admin_token=secrets.token_urlsafe(32), ykb_url="https://ykb.example",
                           essc_url="https://essc.example", certlib_url="https://certlib.example",
                           psam_gate_keys_file=psam)
    ready = await g.client.get("/readyz")
    assert ready.status == 200, await ready.text()
    assert (await ready.json())["checks"]["redis_persistence"] == "ok"
    await r.config_set("appendonly", "no")
    await r.aclose()
    ready = await g.client.get("/readyz")
    assert ready.status == 503
    assert (await ready.json())["checks"] == {"redis": "ok", "redis_persistence": "fail"}
