"""`gateway serve --workers 2` with Redis and PostgreSQL runs the transaction exporter in a
process of its own, at a lower CPU priority, and the workers drain nothing (docs/records.md
"The exporter process"): every verification's record reaches PostgreSQL exactly once through
it; killed, it is restarted by the supervisor and drains what the outbox held meanwhile."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from gateway.adapters.postgres_records import TABLE
from tests.redis_server import free_port
from tests.serving import children_nice, serving

GATE, SCENE = "gate-metro-l1-xiaoshizi", "metro"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT = "urn:ietf:params:oauth:token-type:jwt"


async def _call(method: str, url: str, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s, \
            s.request(method, url, **kw) as r:
        return r.status, json.loads(await r.text())


async def _until(what: Any, timeout_s: float = 45.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = await what()
        if got or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.2)


async def _metrics(base: str) -> str:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s, \
            s.get(base + "/metrics") as r:
        assert r.status == 200
        return await r.text()


def _sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


async def _scraped(base: str, n: int) -> bool:
    return _sample(await _metrics(base), "gateway_transactions_exported_total") == n


@pytest.mark.slow
async def test_serve_exports_through_its_own_lower_priority_process(
        tmp_path: Path, redis_url: str, database_url: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    run = f"xp{port}-{time.monotonic_ns()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_KEYS_DIR=str(tmp_path / "keys"), GATEWAY_REDIS_URL=redis_url,
               GATEWAY_PORT=str(port), GATEWAY_REDIS_PREFIX=f"{run}:",
               GATEWAY_DATABASE_URL=database_url, GATEWAY_RATELIMIT_ENABLED="false",
               GATEWAY_SHUTDOWN_TIMEOUT_S="3", GATEWAY_TRANSACTIONS_EXPORTER_NICE="7")
    log = tmp_path / "serve.log"
    async with serving(env, tmp_path, log) as proc:
        assert "an exporter process" in log.read_text()
        kids = await _until(lambda: asyncio.sleep(0, [n for n in children_nice(proc.pid).values()
                                                      if n == 7]))
        children = children_nice(proc.pid)
        # two workers at the supervisor's priority (and multiprocessing's resource tracker),
        # one exporter at nice 7
        nices = sorted(children.values())
        assert nices.count(7) == 1 and nices.count(0) >= 2, (children, log.read_text()[-2000:])
        assert kids
        secrets = json.loads((tmp_path / "keys/sandbox/demo-secrets.json").read_text())

        def basic(cid: str) -> dict[str, str]:
            raw = f"{cid}:{secrets[cid]['client_secret']}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

        _, g = await _call("POST", base + "/oauth2/token", headers=basic(GATE),
                           data={"grant_type": "client_credentials"})
        gate = {"Authorization": f"Bearer {g['access_token']}"}
        _, a = await _call("POST", base + "/sandbox/v1/upstream-assertions",
                           json={"resident": "r-zhang-wei", "platform": "ykb"})
        _, t = await _call("POST", base + "/oauth2/token", headers=basic("app-ykb"), data={
            "grant_type": EXCHANGE, "subject_token": a["assertion"], "subject_token_type": JWT})
        resident = {"Authorization": f"Bearer {t['access_token']}"}

        async def scan(rid: str) -> None:
            status, c = await _call("POST", base + "/v1/codes", json={}, headers=resident)
            assert status == 201, c
            status, d = await _call("POST", base + "/v1/codes/verify", headers=gate, json={
                "code": c["code"], "scene": SCENE, "request_id": rid})
            assert status == 200 and d["decision"] == "allow", d

        conn = await asyncpg.connect(database_url)
        try:
            async def stored(n: int) -> list[str] | None:
                try:
                    rows = await conn.fetch(f"SELECT request_id FROM {TABLE} "
                                            "WHERE request_id LIKE $1", f"{run}-%")
                except asyncpg.UndefinedTableError:  # nothing exported yet on this server
                    return None
                ids = [r["request_id"] for r in rows]
                return ids if len(ids) >= n else None

            for i in range(20):
                await scan(f"{run}-{i}")
            got = await _until(lambda: stored(20))
            assert got is not None and sorted(got) == sorted(f"{run}-{i}" for i in range(20))
            # /metrics (any worker) counts what the exporter process exported: its counters
            # reach the workers' scrape through the metrics directory, and it is no worker
            assert await _until(lambda: _scraped(base, 20)), await _metrics(base)
            assert _sample(await _metrics(base), "gateway_server_workers") == 2

            # the exporter killed: the gates go on, the outbox holds their records, the
            # supervisor starts a new exporter (nice 7 again) and it drains them, once each
            (exporter_pid,) = [p for p, n in children_nice(proc.pid).items() if n == 7]
            os.kill(exporter_pid, signal.SIGKILL)
            for i in range(20, 30):
                await scan(f"{run}-{i}")

            async def restarted() -> list[int]:
                return [p for p, n in children_nice(proc.pid).items()
                        if n == 7 and p != exporter_pid]

            assert await _until(restarted), log.read_text()[-2000:]
            got = await _until(lambda: stored(30))
            assert got is not None and sorted(got) == sorted(f"{run}-{i}" for i in range(30))
            # the killed exporter's count stays (its last file), the new one's adds to it
            assert await _until(lambda: _scraped(base, 30)), await _metrics(base)
            await asyncio.sleep(1.0)  # nothing arrives twice later
            again = await stored(30)
            assert again is not None and len(again) == 30
        finally:
            await conn.close()
