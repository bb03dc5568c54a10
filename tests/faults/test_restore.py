"""The backup and restore runbook (docs/operations.md), tested: an RDB snapshot taken from a
running Redis with `redis-cli --rdb`, restored into a NEW redis-server (RDB loaded with AOF
off, then AOF switched on, which rewrites it from memory), and a gateway on the new server:
consents, clients, persons and the audit chain intact (`gateway audit verify`), used codes
still refused."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.app import CORE
from gateway.authz.clients import Client, hash_secret
from tests.codes.conftest import demo_person
from tests.consents.conftest import POLICE_RP, Api, bearer
from tests.faults.conftest import METRO_GATE, REPO, mint_codes, verify_body
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow   # real redis-servers and gateway processes


async def _verify(api: Api, token: str, code: str) -> dict[str, Any]:
    r = await api.c.post("/v1/codes/verify", json=verify_body(code), headers=bearer(token))
    assert r.status == 200, await r.text()
    return dict(await r.json())


async def _authorised_consent(api: Api) -> tuple[str, str]:
    token = await api.resident("r-chen-jing")
    subject = await api.login_subject(token, "cq-police")
    rp = await api.gw.client_token(POLICE_RP)
    status, created = await api.request(rp, subject, ["driving_licence"], max_uses=5)
    assert status == 201, created
    cid = created["consent_id"]
    status, body = await api.me("POST", f"/v1/me/consents/{cid}/approve", token)
    assert status == 200, body
    status, got = await api.query(rp, cid)
    assert status == 200, got
    return cid, api.person(token)


async def test_a_snapshot_restored_into_a_new_redis_keeps_everything(
        make_gateway: Any, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("GATEWAY_RATELIMIT_ENABLED", "false")
    source = RedisServer(extra_args=["--appendonly", "yes"]).start()
    target = RedisServer()
    try:
        g = await make_gateway(redis_url=source.url)
        api = Api(g)
        cid, chen = await _authorised_consent(api)
        registered = Client(client_id="gate-restore-test", kind="gate", display_name="restore",
                            secret_hash=hash_secret("s3cret-for-the-restore-test"),
                            scopes=("codes:verify",), sector="cq-metro", scene="metro")
        await g.app[CORE].clients.put(registered)
        gate = await g.client_token(METRO_GATE)
        zhang = await demo_person(g)
        used = mint_codes(g.settings.keys_dir, zhang, 20)
        assert [(await _verify(api, gate, c))["decision"] for c in used] == ["allow"] * 20
        audit_before = len(await api.audit())

        # backup: an RDB snapshot of the running server, over its own protocol
        backup = tmp_path / "backup.rdb"
        subprocess.run(["redis-cli", "-p", str(source.port), "--rdb", str(backup)],
                       check=True, capture_output=True, timeout=30)
        source.stop()                                  # the old server is gone

        # restore: the RDB into a new server's dir, loaded with AOF off, then AOF on
        shutil.copy(backup, Path(target.workdir) / "dump.rdb")
        target.extra_args = ["--appendonly", "no", "--dbfilename", "dump.rdb"]
        target.start()
        r = aioredis.Redis.from_url(target.url)
        await r.config_set("appendonly", "yes")       # rewrites the AOF from the loaded data
        deadline = time.monotonic() + 20
        while True:
            info = await r.info("persistence")
            if info["aof_enabled"] == 1 and info["aof_rewrite_in_progress"] == 0 and \
                    info.get("aof_rewrite_scheduled", 0) == 0:
                break
            assert time.monotonic() < deadline, info
            await asyncio.sleep(0.1)
        await r.aclose()

        # the audit chain verifies end to end on the restored server
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update(GATEWAY_REDIS_URL=target.url, GATEWAY_KEYS_DIR=str(g.settings.keys_dir),
                   PYTHONPATH=str(REPO))
        done = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify"], env=env,
                              capture_output=True, timeout=60, cwd=tmp_path)
        assert done.returncode == 0, (done.stdout + done.stderr).decode()[-2000:]
        assert done.stdout.decode().startswith("audit chain ok: ")

        g2 = await make_gateway(redis_url=target.url, keys_dir=g.settings.keys_dir)
        api2 = Api(g2)
        assert len(await api2.audit()) == audit_before
        # the consent, still authorised, its uses counted
        rp = await g2.client_token(POLICE_RP)
        r2 = await g2.client.get(f"/v1/consents/{cid}", headers=bearer(rp))
        consent = await r2.json()
        assert r2.status == 200 and consent["status"] == "authorised", consent
        status, got = await api2.query(rp, cid)
        assert status == 200, got
        # clients and persons: the same records (the same person ids)
        assert await g2.app[CORE].clients.get(registered.client_id) == registered
        assert await demo_person(g2) == zhang
        token = await api2.resident("r-chen-jing")
        assert api2.person(token) == chen
        # used codes: still refused
        gate2 = await g2.client_token(METRO_GATE)
        assert {(await _verify(api2, gate2, c))["reason"] for c in used} == {"replayed"}
        fresh = mint_codes(g2.settings.keys_dir, zhang, 1)[0]
        assert (await _verify(api2, gate2, fresh))["decision"] == "allow"
    finally:
        source.stop()
        target.stop()
