"""As an operator would try it, on `python -m gateway serve --workers 2` and real Redis:

* `/metrics` counts every verification sent, whichever worker took it (one scrape sums both);
* an operator created by `gateway operators create` edits a scene; both workers apply it
  within 2 s (each worker's own counters show it refused codes after the edit); a viewer's
  token changes nothing; `gateway audit list` shows the edit under the operator's name.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.redis_server import free_port
from tests.serving import serving

GATE, SCENE = "gate-metro-l1-xiaoshizi", "metro"
EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT = "urn:ietf:params:oauth:token-type:jwt"


async def _call(method: str, url: str, **kw: Any) -> tuple[int, Any]:
    # a fresh connection per request: SO_REUSEPORT spreads them over the workers
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s, \
            s.request(method, url, **kw) as r:
        text = await r.text()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith((name + "{", name + " ")):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.slow
async def test_two_workers_metrics_scene_edit_and_audit(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_KEYS_DIR=str(tmp_path / "keys"), GATEWAY_REDIS_URL=redis_url,
               GATEWAY_PORT=str(port), GATEWAY_REDIS_PREFIX=f"op2w{port}:",
               GATEWAY_RATELIMIT_ENABLED="false", GATEWAY_SHUTDOWN_TIMEOUT_S="3",
               GATEWAY_METRICS_DIR=str(tmp_path / "metrics"))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60, check=False)

    log = tmp_path / "serve.log"
    async with serving(env, tmp_path, log):
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

        async def scan(rid: str) -> dict[str, Any]:
            status, c = await _call("POST", base + "/v1/codes", json={}, headers=resident)
            assert status == 201, c
            status, d = await _call("POST", base + "/v1/codes/verify", headers=gate, json={
                "code": c["code"], "scene": SCENE, "request_id": rid})
            assert status == 200, d
            return dict(d)

        # 1. /metrics counts every verify of the two-worker run
        sent = 60
        answers = [await scan(f"m-{i}") for i in range(sent)]
        assert {d["decision"] for d in answers} == {"allow"}, {d["reason"] for d in answers}
        deadline = time.monotonic() + 5
        while True:
            _, text = await _call("GET", base + "/metrics")
            counted = _sample(text, "gateway_verify_decisions_total", decision="allow",
                              face="ykm")
            if counted == sent or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert counted == sent, text
        # two workers (a worker that died and was replaced leaves its counts behind: more)
        assert _sample(text, "gateway_server_workers") >= 2, log.read_text()[-3000:]
        assert _sample(text, "gateway_verify_decisions_by_place_total", scene=SCENE,
                       district="500103", decision="allow") == sent
        selves = {}
        for _ in range(40):
            _, own = await _call("GET", base + "/metrics?worker=self")
            pid = re.search(r'gateway_worker_info\{pid="([0-9]+)"\}', own)
            assert pid is not None
            selves[pid.group(1)] = _sample(own, "gateway_verify_decisions_total",
                                           decision="allow", face="ykm")
            if len(selves) == 2:
                break
        assert len(selves) == 2 and sum(selves.values()) == sent and 0 not in selves.values()

        # 2. named operators by CLI; a viewer cannot change anything
        made = {}
        for name, role in (("alice", "admin"), ("victor", "viewer")):
            r = cli("operators", "create", name, "--role", role)
            assert r.returncode == 0, r.stderr
            made[name] = {"Authorization": f"Bearer {json.loads(r.stdout)['token']}"}
        stored = cli("operators", "list").stdout
        assert "token" not in stored.replace("token_hash", "") and "gwop_" not in stored
        status, metro = await _call("GET", base + "/admin/v1/scenes/metro",
                                    headers=made["victor"])
        assert status == 200
        edited = {**metro, "faces": ["essc", "ssc_card"]}  # 渝快码 no longer taken at metro
        status, _ = await _call("PUT", base + "/admin/v1/scenes/metro", json=edited,
                                headers=made["victor"])
        assert status == 403
        assert (await scan("still-ok"))["decision"] == "allow"

        # 3. the admin's edit: both workers apply it within 2 s
        status, body = await _call("PUT", base + "/admin/v1/scenes/metro", json=edited,
                                   headers=made["alice"])
        assert status == 200, body
        await asyncio.sleep(2.0)
        after = [await scan(f"e-{i}") for i in range(30)]
        assert {d["reason"] for d in after} == {"scene_not_permitted"}
        refused: dict[str, float] = {}
        for _ in range(40):
            _, own = await _call("GET", base + "/metrics?worker=self")
            pid = re.search(r'gateway_worker_info\{pid="([0-9]+)"\}', own)
            assert pid is not None
            refused[pid.group(1)] = _sample(own, "gateway_verify_decisions_total",
                                            reason="scene_not_permitted")
            if len(refused) == 2:
                break
        assert len(refused) == 2 and 0 not in refused.values(), refused

        # 4. the edit is in the audit log under the operator's name; the chain verifies
        listed = [json.loads(line) for line in cli("audit", "list").stdout.splitlines()]
        edits = [e for e in listed if e["action"] == "admin.scene.updated"]
        assert len(edits) == 1 and edits[0]["actor"] == "operator:alice"
        assert edits[0]["target"] == "scene:metro"
        assert any(e["action"] == "admin.operator.created" for e in listed)
        assert cli("audit", "verify").returncode == 0
