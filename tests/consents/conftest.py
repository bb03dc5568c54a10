"""Consent tests drive the real gateway over HTTP on loopback, on real Redis, with the sandbox
upstreams (ykb for resident tokens, the certificate library) mounted in it."""

from __future__ import annotations

import secrets
from typing import Any

import jwt
import pytest

from gateway.app import CORE
from gateway.services.consents import ConsentService
from gateway.web.consents import CONSENTS
from tests.web.conftest import Gateway, GatewayFactory, gw, make_gateway  # noqa: F401

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
HALL_GATE = "gate-hall-shapingba"
HALL_RP = "rp-service-hall"        # sector cq-service-halls, like the hall gate
POLICE_RP = "rp-jingkuaiban"       # sector cq-police


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Api:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.c = gateway.client

    @property
    def service(self) -> ConsentService:
        return self.gw.app[CONSENTS]

    async def resident(self, resident: str, app: str = "app-ykb") -> str:
        return await self.gw.resident_token(resident, app)

    def person(self, resident_token: str) -> str:
        claims = jwt.decode(resident_token, options={"verify_signature": False})
        return self.gw.app[CORE].data_keys.open_person_id(claims["pid"], claims["client_id"])

    async def counter_subject(self, resident_token: str) -> str:
        """The hall gate verifies the resident's 渝快码 at scene service_hall: the subject."""
        r = await self.c.post("/v1/codes", json={"face": "ykm"}, headers=bearer(resident_token))
        assert r.status == 201, await r.text()
        code = (await r.json())["code"]
        gate = await self.gw.client_token(HALL_GATE)
        r = await self.c.post("/v1/codes/verify", headers=bearer(gate), json={
            "code": code, "scene": "service_hall", "request_id": secrets.token_hex(8)})
        body = await r.json()
        assert r.status == 200 and body["decision"] == "allow", body
        subject = str(body["subject"])
        # The verify itself recorded the subject in the consent feature's index (the hall's
        # sector has a consent-capable relying party); nothing is played by the test here.
        assert await self.service.store.person_for_subject("cq-service-halls", subject) \
            == self.person(resident_token)
        return subject

    async def login_subject(self, resident_token: str, sector: str) -> str:
        """What an OIDC login would hand the RP: its pairwise subject, recorded in the index."""
        pid = self.person(resident_token)
        sub = self.gw.app[CORE].data_keys.pairwise_subject(sector, pid)
        await self.service.remember_subject(sector, sub, pid)
        return sub

    async def request(self, rp_token: str, subject: str, types: list[str], *,
                      max_uses: int = 1, expires_in: int = 3600,
                      purpose: Any = None) -> tuple[int, dict[str, Any]]:
        r = await self.c.post("/v1/consents", headers=bearer(rp_token), json={
            "subject": subject, "certificate_types": types,
            "purpose": purpose or {"code": "hall.household_move", "text": "户口迁移 材料核验"},
            "expires_in": expires_in, "max_uses": max_uses})
        return r.status, await r.json()

    async def query(self, rp_token: str, consent_id: str,
                    types: list[str] | None = None) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {"consent_id": consent_id}
        if types is not None:
            body["certificate_types"] = types
        r = await self.c.post("/v1/certificates/query", headers=bearer(rp_token), json=body)
        return r.status, await r.json()

    async def me(self, method: str, path: str, token: str,
                 json: Any = None) -> tuple[int, dict[str, Any]]:
        r = await self.c.request(method, path, headers=bearer(token), json=json)
        return r.status, await r.json()

    async def audit(self) -> list[dict[str, Any]]:
        return list(await self.service.audit.log.entries(1, 10_000))


@pytest.fixture
async def api(gw: Gateway) -> Api:  # noqa: F811
    return Api(gw)
