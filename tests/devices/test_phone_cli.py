"""The reference phone's command line against a real server process (`python -m gateway serve
--workers 2`, real Redis), as an app developer would try it (docs/devices.md): enrol online,
the gateway stopped, codes made with no network, the gateway back, the codes verify once each."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.redis_server import free_port
from tests.serving import serving_sync

ROOT = Path(__file__).resolve().parents[2]
GATE = "gate-metro-l1-xiaoshizi"


@contextmanager
def _server(tmp: Path, redis_url: str, port: int, run: int) -> Iterator[None]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_KEYS_DIR=str(tmp / "keys"), GATEWAY_REDIS_URL=redis_url,
               GATEWAY_PORT=str(port), GATEWAY_REDIS_PREFIX="phonecli:",
               GATEWAY_SHUTDOWN_TIMEOUT_S="3")
    log = tmp / f"serve-{run}.log"
    with serving_sync(env, tmp, log):
        yield


def _phone(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run([sys.executable, "-m", "loadtests.phone", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


async def _verify(url: str, keys_dir: Path, code: str) -> dict[str, Any]:
    secrets_doc = json.loads((keys_dir / "sandbox/demo-secrets.json").read_text())
    basic = base64.b64encode(f"{GATE}:{secrets_doc[GATE]['client_secret']}".encode()).decode()
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/oauth2/token", data={"grant_type": "client_credentials"},
                          headers={"Authorization": f"Basic {basic}"}) as r:
            token = (await r.json())["access_token"]
        async with s.post(url + "/v1/codes/verify", json={
                "code": code, "scene": "metro", "request_id": secrets.token_hex(8)},
                headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 200
            return dict(await r.json())


@pytest.mark.slow
async def test_enrol_stop_make_codes_offline_then_verify(tmp_path: Path, redis_url: str) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    state = tmp_path / "phone.json"
    with _server(tmp_path, redis_url, port, 1):
        r = await asyncio.to_thread(_phone, "enrol", "--base", base, "--state", str(state),
                                    "--alg", "ES256")
        assert r.returncode == 0, r.stderr[-2000:]
        enrolled = json.loads(r.stdout)
        assert enrolled["renewed"] is False and enrolled["device_id"].startswith("dev_")
    # the key lives in a file only its owner can read (a keystore stands in for it)
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    # the gateway is stopped: the phone makes codes alone
    codes = []
    for _ in range(3):
        r = await asyncio.to_thread(_phone, "code", "--state", str(state))
        assert r.returncode == 0, r.stderr[-2000:]
        codes.append(r.stdout.strip())
    assert len(set(codes)) == 3 and all(c.startswith("YK2:") for c in codes)
    assert json.loads(state.read_text())["counter"] == 3
    with _server(tmp_path, redis_url, port, 2):
        keys = tmp_path / "keys"
        for code in codes:
            assert (await _verify(base, keys, code))["decision"] == "allow"
        again = await _verify(base, keys, codes[0])
        assert (again["decision"], again["reason"]) == ("deny", "replayed")
        # renewal: the same key, the same device, a new certificate
        r = await asyncio.to_thread(_phone, "renew", "--base", base, "--state", str(state))
        assert r.returncode == 0, r.stderr[-2000:]
        renewed = json.loads(r.stdout)
        assert renewed["renewed"] is True and renewed["device_id"] == enrolled["device_id"]
        assert renewed["serial"] != enrolled["serial"]
