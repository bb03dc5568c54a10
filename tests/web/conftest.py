"""Web tests drive the real app in-process (pytest-aiohttp), on real Redis unless a test
asks for the in-memory sandbox. `gw` gives a client plus the demo credentials."""

from __future__ import annotations

import asyncio
import base64
import json
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import build_app
from gateway.clock import Clock
from gateway.settings import Settings
from gateway.web import lane
from tests.redis_server import free_port


@dataclass
class Gateway:
    client: TestClient[Any, Any]
    app: web.Application
    settings: Settings

    @property
    def base(self) -> str:
        return self.settings.issuer

    def demo_secret(self, client_id: str) -> dict[str, Any]:
        path = self.settings.keys_dir / "sandbox" / "demo-secrets.json"
        return dict(json.loads(path.read_text())[client_id])

    def basic(self, client_id: str) -> str:
        secret = self.demo_secret(client_id)["client_secret"]
        return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()

    async def resident_token(self, resident: str = "r-zhang-wei", app: str = "app-ykb",
                             platform: str = "ykb", region: str | None = None) -> str:
        """A resident token as a resident app gets it: the sandbox upstream's assertion for a
        demo resident, exchanged at the token endpoint (RFC 8693)."""
        body: dict[str, Any] = {"resident": resident, "platform": platform}
        if region:
            body["region"] = region
        r = await self.client.post("/sandbox/v1/upstream-assertions", json=body)
        assert r.status == 201, await r.text()
        assertion = (await r.json())["assertion"]
        r = await self.client.post("/oauth2/token", data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": assertion,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt"},
            headers={"Authorization": self.basic(app)})
        assert r.status == 200, await r.text()
        return str((await r.json())["access_token"])

    async def client_token(self, client_id: str, scope: str | None = None) -> str:
        form = {"grant_type": "client_credentials"}
        if scope:
            form["scope"] = scope
        r = await self.client.post("/oauth2/token", data=form,
                                   headers={"Authorization": self.basic(client_id)})
        assert r.status == 200, await r.text()
        return str((await r.json())["access_token"])


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def make_gateway(tmp_path: Path, redis_url: str) -> AsyncIterator[GatewayFactory]:
    clients: list[TestClient[Any, Any]] = []

    async def factory(*, use_redis: bool = True, clock: Clock | None = None,
                      keys_dir: Path | None = None, **overrides: Any) -> Gateway:
        port = free_port()
        if use_redis:
            r = aioredis.Redis.from_url(redis_url)
            await r.flushdb()
            await r.aclose()
        settings = Settings(**{
            "env": "sandbox", "host": "127.0.0.1", "port": port,
            "issuer": f"http://127.0.0.1:{port}", "keys_dir": keys_dir or tmp_path / "keys",
            "redis_url": redis_url if use_redis else None,
            # behaviour tests, not fault timing: the production default (150 ms) is for a
            # frozen Redis, and a shared CI box can stall a healthy one that long; the fault
            # suite (tests/faults/) runs real workers on the default
            "redis_timeout_s": 1.0, **overrides})
        app = build_app(settings, clock)
        server = TestServer(app, host="127.0.0.1", port=port)
        client = TestClient(server)
        await client.start_server()
        assert isinstance(server.runner, web.AppRunner)
        lane.install(server.runner)  # as `gateway serve` does: the gate lane in front
        clients.append(client)
        return Gateway(client, app, settings)

    yield factory
    for c in clients:
        # bounded: a shutdown that hangs is reported, not allowed to stall the whole run
        # (pytest-timeout's thread method ends the process, every later test with it)
        closing = asyncio.ensure_future(c.close())
        done, _ = await asyncio.wait({closing}, timeout=30)
        if not done:
            closing.cancel()
            warnings.warn("the gateway's shutdown took over 30 s", stacklevel=1)
        else:
            closing.result()


@pytest.fixture
async def gw(make_gateway: GatewayFactory) -> Gateway:
    return await make_gateway()
