"""Upstream sandboxes served over real HTTP on loopback, and the real clients pointed at them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.adapters.sandbox import (
    CERTLIB_SANDBOX,
    ESSC_ISSUER_PREFIX,
    ESSC_SANDBOX,
    YKB_ISSUER,
    YKB_SANDBOX,
    CertLibSandbox,
    EsscSandbox,
    YkbSandbox,
    make_certlib_app,
    make_essc_app,
    make_ykb_app,
)
from gateway.adapters.upstream import (
    CertificateLibraryClient,
    EsscPlatformClient,
    UpstreamPolicy,
    YkbClient,
)
from gateway.clock import FrozenClock
from gateway.services.upstream import Resident, load_residents

GATEWAY_ISSUER = "https://gateway.sandbox.test"
POLICY = UpstreamPolicy(timeout_s=0.3, connect_timeout_s=0.3, retries=2, backoff_base_s=0.001,
                        backoff_max_s=0.005, failure_threshold=3, reset_timeout_s=10.0)


@dataclass
class Served:
    server: TestServer
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    async def fault(self, mode: str, *, delay_s: float = 0.0, times: int | None = None) -> None:
        async with self.session.post(self.url + "/__fault", json={
                "mode": mode, "delay_s": delay_s, "times": times}) as r:
            assert r.status == 200

    async def clear(self) -> None:
        async with self.session.delete(self.url + "/__fault") as r:
            assert r.status == 200

    async def hits(self) -> int:
        async with self.session.get(self.url + "/__hits") as r:
            return int((await r.json())["total"])


@pytest.fixture
def residents() -> tuple[Resident, ...]:
    return load_residents()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(1_800_000_000.0)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _serve(app, session) -> AsyncIterator[Served]:  # type: ignore[no-untyped-def]
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield Served(server, session)
    finally:
        await server.close()


@pytest.fixture
async def ykb_served(residents, tmp_path: Path, clock, session) -> AsyncIterator[Served]:
    async for s in _serve(make_ykb_app(residents, tmp_path, GATEWAY_ISSUER, clock=clock,
                                       admin=True), session):
        yield s


@pytest.fixture
async def essc_served(residents, tmp_path: Path, clock, session) -> AsyncIterator[Served]:
    async for s in _serve(make_essc_app(residents, tmp_path, GATEWAY_ISSUER, clock=clock,
                                        admin=True), session):
        yield s


@pytest.fixture
async def certlib_served(residents, tmp_path: Path, clock, session) -> AsyncIterator[Served]:
    async for s in _serve(make_certlib_app(residents, tmp_path, clock=clock, admin=True),
                          session):
        yield s


@pytest.fixture
def ykb_sandbox(ykb_served: Served) -> YkbSandbox:
    return ykb_served.server.app[YKB_SANDBOX]


@pytest.fixture
def essc_sandbox(essc_served: Served) -> EsscSandbox:
    return essc_served.server.app[ESSC_SANDBOX]


@pytest.fixture
def certlib_sandbox(certlib_served: Served) -> CertLibSandbox:
    return certlib_served.server.app[CERTLIB_SANDBOX]


@pytest.fixture
def ykb(ykb_served: Served, clock) -> YkbClient:
    return YkbClient(ykb_served.session, ykb_served.url, issuer=YKB_ISSUER,
                     audience=GATEWAY_ISSUER, clock=clock, policy=POLICY)


@pytest.fixture
def essc(essc_served: Served, clock) -> EsscPlatformClient:
    return EsscPlatformClient(essc_served.session, essc_served.url, regions=("CQ", "SC"),
                              issuer_prefix=ESSC_ISSUER_PREFIX, audience=GATEWAY_ISSUER,
                              clock=clock, policy=POLICY)


@pytest.fixture
def certlib(certlib_served: Served, clock) -> CertificateLibraryClient:
    return CertificateLibraryClient(certlib_served.session, certlib_served.url, clock=clock,
                                    policy=POLICY)
