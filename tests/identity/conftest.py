"""Identity tests drive the real gateway over real HTTP on loopback (the sandbox upstream apps
mounted in it) on real Redis."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest

from tests.web.conftest import Gateway, GatewayFactory, gw, make_gateway  # noqa: F401

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"


def now_rfc3339(offset_s: float = 0.0) -> str:
    t = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset_s)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Api:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.c = gateway.client

    async def assertion(self, resident: str, platform: str, region: str | None = None) -> str:
        body: dict[str, Any] = {"resident": resident, "platform": platform}
        if region:
            body["region"] = region
        r = await self.c.post("/sandbox/v1/upstream-assertions", json=body)
        assert r.status == 201, await r.text()
        return str((await r.json())["assertion"])

    async def exchange(self, assertion: str, app: str = "app-ykb") -> tuple[int, dict[str, Any]]:
        r = await self.c.post("/oauth2/token", data={
            "grant_type": TOKEN_EXCHANGE, "subject_token": assertion,
            "subject_token_type": JWT_TYPE}, headers={"Authorization": self.gw.basic(app)})
        return r.status, await r.json()

    async def resident_token(self, resident: str, platform: str = "ykb",
                             region: str | None = None, app: str = "app-ykb") -> str:
        status, body = await self.exchange(await self.assertion(resident, platform, region), app)
        assert status == 200, body
        return str(body["access_token"])

    async def tap(self, card_no: str, gate: str, scene: str, *, request_id: str,
                  scanned_at: str | None = None, token: str | None = None,
                  region: str | None = None, mac: str | None = None) -> dict[str, Any]:
        scanned_at = scanned_at or now_rfc3339()
        region = region or card_no[:2]
        if mac is None:
            r = await self.c.post("/sandbox/v1/card-taps", json={
                "card_no": card_no, "gate_client_id": gate, "request_id": request_id,
                "scanned_at": scanned_at, "region": region})
            assert r.status == 200, await r.text()
            mac = (await r.json())["terminal_mac"]
        token = token or await self.gw.client_token(gate)
        r = await self.c.post("/v1/cards/verify", json={
            "card_no": card_no, "region": region, "terminal_mac": mac, "scene": scene,
            "request_id": request_id, "scanned_at": scanned_at},
            headers={"Authorization": f"Bearer {token}"})
        assert r.status == 200, await r.text()
        return dict(await r.json())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def forge(mac: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4)))
    raw[0] ^= 1
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


@pytest.fixture
async def api(gw: Gateway) -> Api:  # noqa: F811
    return Api(gw)
