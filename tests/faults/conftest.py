"""Faults and overload (issue 12): private redis-servers the tests kill, freeze (SIGSTOP) and
restart, and real `gateway serve` processes. Loopback only; every loop is bounded."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.redis_server import RedisServer, free_port
from tests.web.conftest import Gateway, gw, make_gateway  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parents[2]
METRO_GATE, METRO_SCENE = "gate-metro-l1-xiaoshizi", "metro"


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server this test alone owns (it may kill, freeze or restart it)."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        if server.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(server.proc.pid, signal.SIGCONT)
        server.stop()


def restart(server: RedisServer, *extra: str) -> None:
    """Start `server` again on its port (after a kill), with these extra arguments."""
    server.proc = None
    server.extra_args = list(extra)
    server.start()


def kill(server: RedisServer) -> None:
    assert server.proc is not None
    server.proc.kill()
    server.proc.wait()
    server.proc = None


#: what POST /v1/codes seals in a demo adult's codes: fare scenes read no identity record
SEALED = {"concession": None, "adult": True}


def mint_codes(keys_dir: Path, person_id: str, n: int, **kw: Any) -> list[str]:
    """`n` ykm codes as POST /v1/codes makes them (the gateway's own keys; loadtests/seed.py),
    attributes sealed in them."""
    from loadtests import seed

    kw.setdefault("attributes", SEALED)
    return seed.issue_codes(seed.GatewayKeys.load(keys_dir), n, person_id, **kw)


def basic(keys_dir: Path, client_id: str) -> str:
    creds = json.loads((keys_dir / "sandbox" / "demo-secrets.json").read_text())
    raw = f"{client_id}:{creds[client_id]['client_secret']}".encode()
    return "Basic " + base64.b64encode(raw).decode()


@dataclass
class Served:
    """A real `python -m gateway serve` (N workers) on a free loopback port."""

    base: str
    keys_dir: Path
    log: Path
    proc: subprocess.Popen[bytes]
    gate_token: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None


def serve_env(tmp_path: Path, redis_url: str | None, port: int, **env: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    out.update(GATEWAY_KEYS_DIR=str(tmp_path / "keys"), GATEWAY_PORT=str(port),
               GATEWAY_HOST="127.0.0.1", GATEWAY_LOG_FORMAT="json",
               GATEWAY_SHUTDOWN_TIMEOUT_S="2", GATEWAY_RATELIMIT_ENABLED="false",
               PYTHONPATH=str(REPO))  # this checkout's gateway, whatever is installed
    if redis_url:
        out["GATEWAY_REDIS_URL"] = redis_url
    out.update(env)
    return out


@contextlib.asynccontextmanager
async def served(tmp_path: Path, redis_url: str | None, workers: int = 1,
                 **env: str) -> AsyncIterator[Served]:
    port = free_port()
    log = tmp_path / f"serve-{port}.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve",
                                 "--workers", str(workers)],
                                env=serve_env(tmp_path, redis_url, port, **env),
                                cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT)
    s = Served(f"http://127.0.0.1:{port}", tmp_path / "keys", log, proc)
    try:
        deadline = time.monotonic() + 40
        while s.log_text().count("server.started") < workers:
            assert proc.poll() is None, s.log_text()[-3000:]
            assert time.monotonic() < deadline, s.log_text()[-3000:]
            await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as http, http.post(
                s.base + "/oauth2/token", data={"grant_type": "client_credentials"},
                headers={"Authorization": basic(s.keys_dir, METRO_GATE)}) as r:
            assert r.status == 200, await r.text()
            s.gate_token = (await r.json())["access_token"]
        yield s
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def verify_body(code: str, request_id: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"code": code, "scene": METRO_SCENE,
            "request_id": request_id or secrets.token_hex(8), **extra}
