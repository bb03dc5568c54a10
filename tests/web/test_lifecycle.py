"""A gateway that starts and stops without serving anything shuts down promptly (its
background followers stop even when redis-py swallows their cancellation)."""

from __future__ import annotations

import asyncio

from tests.web.conftest import Gateway, GatewayFactory


async def test_start_and_stop_without_a_request(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway()
    await asyncio.wait_for(gateway.client.close(), timeout=10)


async def test_the_next_gateway_still_serves(gw: Gateway) -> None:
    r = await gw.client.get("/healthz")
    assert r.status == 200
