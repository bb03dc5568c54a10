"""The gate lane (gateway/web/lane.py): POST /v1/codes/verify skips the router's dispatch but
must answer exactly as the Application would — same edge (request id, security and RateLimit
headers, errors, metrics), same handler. Everything else goes to the Application."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway.app import build_app
from gateway.settings import Settings
from gateway.web import lane
from loadtests.bench import demo_secret
from loadtests.seed import basic
from tests.redis_server import free_port
from tests.web.conftest import Gateway

GATE = "gate-metro-l1-xiaoshizi"
VOLATILE = {"x-request-id", "date", "ratelimit", "content-length"}


async def _post(gw: Gateway, token: str, body: Any, **headers: str) -> Any:
    return await gw.client.post("/v1/codes/verify", json=body,
                                headers={"Authorization": f"Bearer {token}", **headers})


def _stable(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower() not in VOLATILE}


async def test_the_served_gateway_has_the_lane_in_front(gw: Gateway) -> None:
    assert gw.client.server.runner is not None
    handler = gw.client.server.runner.server.request_handler  # type: ignore[union-attr]
    assert getattr(handler, "__qualname__", "").startswith("lane_handler")


@pytest.mark.parametrize("body", [
    {"code": "YK1:JUNK", "scene": "metro", "request_id": "lane-1"},   # 200 deny
    {"code": "YK1:JUNK", "scene": "nowhere", "request_id": "lane-2"},  # 400 problem
    {"scene": "metro", "request_id": "lane-3"},                         # 400: no code
])
async def test_lane_and_application_answer_alike(gw: Gateway, body: dict[str, Any]) -> None:
    token = await gw.client_token(GATE)
    # `Expect: 100-continue` sends the request through the Application's router instead
    via_lane = await _post(gw, token, body)
    via_app = await _post(gw, token, {**body, "request_id": body["request_id"] + "b"},
                          Expect="100-continue")
    assert via_lane.status == via_app.status
    assert _stable(via_lane.headers) == _stable(via_app.headers)
    for r in (via_lane, via_app):
        assert r.headers["X-Request-Id"]
        assert "ratelimit" in {k.lower() for k in r.headers}
    a, b = await via_lane.json(), await via_app.json()
    for d in (a, b):
        d.pop("request_id", None), d.pop("verified_at", None)
    assert a == b


async def test_lane_errors_are_problems_with_the_callers_request_id(gw: Gateway) -> None:
    r = await gw.client.post("/v1/codes/verify", data=b"{}",
                             headers={"Content-Type": "application/json",
                                      "X-Request-Id": "gate-42"})
    assert r.status == 401
    assert r.headers["X-Request-Id"] == "gate-42"
    assert r.headers["Content-Type"].startswith("application/problem+json")
    assert (await r.json())["request_id"] == "gate-42"


async def test_other_methods_and_paths_go_to_the_application(gw: Gateway) -> None:
    r = await gw.client.get("/v1/codes/verify")
    assert r.status == 405 and "POST" in r.headers["Allow"]
    r = await gw.client.post("/v1/codes/verify/", json={})
    assert r.status == 404
    assert (await gw.client.get("/healthz")).status == 200


async def test_lane_requests_are_counted_under_the_route(gw: Gateway) -> None:
    token = await gw.client_token(GATE)
    await _post(gw, token, {"code": "YK1:JUNK", "scene": "metro", "request_id": "lane-m"})
    text = await (await gw.client.get("/metrics")).text()
    counted = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    key = ("gateway_http_requests_total",
           (("method", "POST"), ("route", "/v1/codes/verify"), ("status", "200")))
    assert counted.get(key, 0) >= 1


async def test_install_needs_a_set_up_runner() -> None:
    runner = web.AppRunner(web.Application())
    with pytest.raises(RuntimeError, match="setup"):
        lane.install(runner)


async def test_a_caller_hanging_up_mid_body_is_not_a_crash(tmp_path: Path,
                                                            redis_url: str) -> None:
    # As `gateway serve` runs it (aiohttp's test server cancels the handler instead)
    port = free_port()
    settings = Settings(env="sandbox", host="127.0.0.1", port=port,
                        issuer=f"http://127.0.0.1:{port}", keys_dir=tmp_path / "keys",
                        redis_url=redis_url)
    app = build_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    lane.install(runner)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            secret = demo_secret(settings.keys_dir, GATE)
            async with http.post(f"{base}/oauth2/token",
                                 headers={"Authorization": basic(GATE, secret)},
                                 data={"grant_type": "client_credentials"}) as r:
                token = (await r.json())["access_token"]
            for _ in range(3):
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(f"POST /v1/codes/verify HTTP/1.1\r\nHost: gw\r\n"
                             f"Authorization: Bearer {token}\r\n"
                             f"Content-Type: application/json\r\n"
                             f"Content-Length: 100\r\n\r\n{{\"code\":".encode())
                await writer.drain()
                await asyncio.sleep(0.05)
                writer.close()
            await asyncio.sleep(0.2)
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
    finally:
        await runner.cleanup()
    statuses = {s.labels["status"]: s.value for f in text_string_to_metric_families(text)
                for s in f.samples if s.name == "gateway_http_requests_total"
                and s.labels["route"] == "/v1/codes/verify"}
    assert statuses.get("499") == 3 and "500" not in statuses, statuses
