"""挂失 across a real 2-worker server (`python -m gateway serve --workers 2`, SO_REUSEPORT) on
real Redis: once report-loss returns, taps answer `revoked` on BOTH workers within 1 s."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.identity.conftest import JWT_TYPE, TOKEN_EXCHANGE, now_rfc3339
from tests.redis_server import free_port
from tests.serving import serving

GATE, SCENE, CARD = "gate-metro-l1-xiaoshizi", "metro", "CQ100000462"  # 赵敏, active


async def _post(url: str, **kw: Any) -> tuple[int, Any]:
    # a fresh connection per request: SO_REUSEPORT spreads them over the workers
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s, \
            s.post(url, **kw) as r:
        return r.status, await r.json(content_type=None)


async def _revoked_counter(base: str) -> tuple[str, int]:
    """(worker pid, that worker's count of revoked card taps) from one /metrics answer."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s, \
            s.get(base + "/metrics?worker=self") as r:
        text = await r.text()
    pid = re.search(r'gateway_worker_info\{pid="([0-9]+)"\} 1', text)
    assert pid is not None, "every /metrics answer names its worker"
    m = re.search(r'gateway_verify_decisions_total\{decision="deny",face="ssc_card",'
                  r'reason="revoked"\} ([0-9.]+)', text)
    return pid.group(1), int(float(m.group(1))) if m else 0


@pytest.mark.slow
async def test_loss_is_revoked_on_both_workers_within_a_second(tmp_path: Path,
                                                               redis_url: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_KEYS_DIR=str(tmp_path / "keys"), GATEWAY_REDIS_URL=redis_url,
               GATEWAY_PORT=str(port), GATEWAY_REDIS_PREFIX="idn2w:",
               GATEWAY_RATELIMIT_GATE="10000/1/10000", GATEWAY_SHUTDOWN_TIMEOUT_S="3")
    log = tmp_path / "serve.log"
    async with serving(env, tmp_path, log):
        secrets = json.loads((tmp_path / "keys/sandbox/demo-secrets.json").read_text())

        def basic(cid: str) -> str:
            raw = f"{cid}:{secrets[cid]['client_secret']}".encode()
            return "Basic " + base64.b64encode(raw).decode()

        _, g = await _post(base + "/oauth2/token", data={"grant_type": "client_credentials"},
                           headers={"Authorization": basic(GATE)})
        gate_auth = {"Authorization": f"Bearer {g['access_token']}"}

        async def tap(rid: str) -> dict[str, Any]:
            at = now_rfc3339()
            _, t = await _post(base + "/sandbox/v1/card-taps", json={
                "card_no": CARD, "gate_client_id": GATE, "request_id": rid, "scanned_at": at})
            status, d = await _post(base + "/v1/cards/verify", json={
                "card_no": CARD, "region": "CQ", "terminal_mac": t["terminal_mac"],
                "scene": SCENE, "request_id": rid, "scanned_at": at}, headers=gate_auth)
            assert status == 200, d
            return dict(d)

        before = await asyncio.gather(*(tap(f"pre-{i}") for i in range(20)))
        assert {d["decision"] for d in before} == {"allow"}

        _, a = await _post(base + "/sandbox/v1/upstream-assertions",
                           json={"resident": "r-zhao-min", "platform": "essc", "region": "CQ"})
        status, tok = await _post(base + "/oauth2/token", data={
            "grant_type": TOKEN_EXCHANGE, "subject_token": a["assertion"],
            "subject_token_type": JWT_TYPE}, headers={"Authorization": basic("app-ykb")})
        assert status == 200, tok
        me_auth = {"Authorization": f"Bearer {tok['access_token']}"}
        async with aiohttp.ClientSession() as s, s.get(base + "/v1/me", headers=me_auth) as r:
            me = await r.json()
        card = next(c for c in me["credentials"] if c["kind"] == "ssc_card")

        status, _ = await _post(base + f"/v1/me/cards/{card['id']}/report-loss",
                                headers=me_auth)
        assert status == 200
        # every tap sent once report-loss has answered (well within 1 s) is refused
        after = await asyncio.gather(*(tap(f"post-{i}") for i in range(40)))
        assert {d["reason"] for d in after} == {"revoked"}
        # both workers answered `revoked`: each worker's own counter is non-zero and the two
        # counters add up to the 40 taps
        seen: dict[str, int] = {}
        for _ in range(60):
            pid, count = await _revoked_counter(base)  # this worker alone: ?worker=self
            seen[pid] = count
            if len(seen) == 2:
                break
        assert len(seen) == 2 and sum(seen.values()) == 40 and 0 not in seen.values(), seen
