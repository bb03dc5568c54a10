"""Overload shedding: past GATEWAY_MAX_INFLIGHT requests in flight in a worker, the next one is
answered at once with 503 `unavailable` + Retry-After (problem+json), probes are never shed,
and the count goes back down whatever the handlers did."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.errors import InvalidRequest
from gateway.web.http import edge_middleware
from gateway.web.ratelimit import SHEDDER, install

UNUSED_CORE = web.AppKey("unused_core", object)


async def _app(max_inflight: int) -> tuple[TestClient, asyncio.Event, web.Application]:
    release = asyncio.Event()
    app = web.Application(middlewares=[edge_middleware])
    # these paths are not the gates': their share is the whole limit here (the shares have
    # their own test in tests/faults/test_edge.py)
    install(app, UNUSED_CORE, env={"GATEWAY_MAX_INFLIGHT": str(max_inflight),
                                   "GATEWAY_MAX_INFLIGHT_OTHER": str(max_inflight),
                                   "GATEWAY_RATELIMIT_ENABLED": "false"})

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"ok": True})

    async def broken(request: web.Request) -> web.Response:
        raise InvalidRequest("no")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_post("/slow", slow)
    app.router.add_post("/broken", broken)
    app.router.add_get("/healthz", healthz)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client, release, app


async def _wait_inflight(app: web.Application, n: int) -> None:
    for _ in range(200):
        if app[SHEDDER].inflight == n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"in flight {app[SHEDDER].inflight}, expected {n}")


async def test_past_max_inflight_answers_503_at_once() -> None:
    client, release, app = await _app(2)
    try:
        held = [asyncio.ensure_future(client.post("/slow")) for _ in range(2)]
        await _wait_inflight(app, 2)
        r = await client.post("/slow", headers={"X-Request-Id": "shed-1"})
        assert r.status == 503 and r.content_type == "application/problem+json"
        body = await r.json()
        assert body["code"] == "unavailable" and body["request_id"] == "shed-1"
        assert r.headers["Retry-After"] == "1"
        assert r.headers["X-Content-Type-Options"] == "nosniff"  # still through the edge
        probe = await client.get("/healthz")
        assert probe.status == 200
        release.set()
        assert [(await h).status for h in held] == [200, 200]
        await _wait_inflight(app, 0)
        assert (await client.post("/slow")).status == 200
    finally:
        await client.close()


async def test_errors_release_their_slot() -> None:
    client, release, app = await _app(1)
    release.set()
    try:
        for _ in range(5):
            r = await client.post("/broken")
            assert r.status == 400
        await _wait_inflight(app, 0)
        assert (await client.post("/slow")).status == 200
    finally:
        await client.close()


async def test_zero_means_unlimited() -> None:
    client, release, _ = await _app(0)
    try:
        held = [asyncio.ensure_future(client.post("/slow")) for _ in range(20)]
        await asyncio.sleep(0.1)
        release.set()
        assert {(await h).status for h in held} == {200}
    finally:
        await client.close()


@pytest.mark.parametrize("n", [1, 3])
async def test_shed_count_is_exported(n: int) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from gateway.web.http import REGISTRY

    release = asyncio.Event()
    app = web.Application(middlewares=[edge_middleware])
    registry = CollectorRegistry()
    app[REGISTRY] = registry
    install(app, UNUSED_CORE, env={"GATEWAY_MAX_INFLIGHT": "1",
                                   "GATEWAY_RATELIMIT_ENABLED": "false"})

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({})

    app.router.add_post("/slow", slow)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        held = asyncio.ensure_future(client.post("/slow"))
        await _wait_inflight(app, 1)
        for _ in range(n):
            assert (await client.post("/slow")).status == 503
        assert f"gateway_shed_total {float(n)}" in generate_latest(registry).decode()
        release.set()
        assert (await held).status == 200
    finally:
        await client.close()
