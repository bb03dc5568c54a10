"""OIDC tests drive the real gateway on a real loopback port and real Redis: the relying
party is Authlib's client, the browser is httpx (or headless Chromium), the resident app
is a resident token from the real sandbox token exchange (RFC 8693)."""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest

from gateway.authz.pkce import s256
from gateway.settings import config_from_env
from loadtests.flows import read_qr_png
from tests.web.conftest import Gateway, GatewayFactory, make_gateway  # noqa: F401

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
JKB = "rp-jingkuaiban"
JKB_CB = "http://127.0.0.1:8400/callback"


def read_qr(data: bytes) -> str:
    """Decode the page's PNG the way a phone camera would (zxing-cpp)."""
    found = read_qr_png(data)
    assert len(found) == 1
    return found[0]


@dataclass
class Page:
    session_id: str
    qr: str
    number: int
    html: str


@dataclass
class AuthRequest:
    url: str
    verifier: str
    state: str
    nonce: str


class OP:
    """The OpenID provider under test, with the resident app's and the browser's moves."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.c = gw.client
        self.base = gw.base

    async def resident(self, resident: str = "r-zhang-wei", app: str = "app-ykb") -> str:
        return await self.gw.resident_token(resident, app)

    def auth_request(self, client_id: str = JKB, redirect_uri: str = JKB_CB,
                     scope: str = "openid profile essc", **extra: str) -> AuthRequest:
        verifier = secrets.token_urlsafe(48)
        state, nonce = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        params = {"response_type": "code", "client_id": client_id,
                  "redirect_uri": redirect_uri, "scope": scope, "state": state,
                  "nonce": nonce, "code_challenge": s256(verifier),
                  "code_challenge_method": "S256", **extra}
        params = {k: v for k, v in params.items() if v != ""}
        return AuthRequest(f"/oauth2/authorize?{urlencode(params)}", verifier, state, nonce)

    async def open_page(self, url: str, cookies: Any = None) -> Page:
        r = await self.c.get(url, allow_redirects=False)
        assert r.status == 200, await r.text()
        return parse_page(await r.text())

    async def scan(self, token: str, qr: str) -> tuple[int, dict[str, Any]]:
        r = await self.c.post("/v1/login-sessions/scan", json={"qr": qr},
                              headers={"Authorization": f"Bearer {token}"})
        return r.status, await r.json()

    async def approve(self, token: str, sid: str, number: Any) -> tuple[int, dict[str, Any]]:
        r = await self.c.post(f"/v1/login-sessions/{sid}/approve", json={"number": number},
                              headers={"Authorization": f"Bearer {token}"})
        return r.status, await r.json()

    async def deny(self, token: str, sid: str) -> tuple[int, dict[str, Any]]:
        r = await self.c.post(f"/v1/login-sessions/{sid}/deny",
                              headers={"Authorization": f"Bearer {token}"})
        return r.status, await r.json()

    async def poll(self, sid: str) -> dict[str, Any]:
        r = await self.c.get(f"/v1/login-sessions/{sid}")
        assert r.status == 200, await r.text()
        return dict(await r.json())

    async def login(self, req: AuthRequest, token: str) -> str:
        """The whole scan-to-login dance; returns redirect_to."""
        page = await self.open_page(req.url)
        status, body = await self.scan(token, page.qr)
        assert status == 200, body
        status, body = await self.approve(token, page.session_id, page.number)
        assert status == 200, body
        polled = await self.poll(page.session_id)
        assert polled["status"] == "approved"
        return str(polled["redirect_to"])

    async def token(self, form: dict[str, str], client_id: str = JKB) -> tuple[int, Any]:
        r = await self.c.post("/oauth2/token", data=form,
                              headers={"Authorization": self.gw.basic(client_id)})
        return r.status, await r.json()


def parse_page(html: str) -> Page:
    sid = re.search(r'data-session="([^"]+)"', html)
    number = re.search(r'id="number">(\d+)<', html)
    img = re.search(r'src="data:image/png;base64,([^"]+)"', html)
    assert sid and number and img
    return Page(sid.group(1), read_qr(base64.b64decode(img.group(1))), int(number.group(1)),
                html)


@pytest.fixture
async def op(make_gateway: GatewayFactory,  # noqa: F811
             monkeypatch: pytest.MonkeyPatch) -> OP:
    # Many authorize requests from one address: the login_ip limit has its own test.
    limits = config_from_env({"GATEWAY_RATELIMIT_LOGIN_IP": "1000/1/1000"})
    return OP(await make_gateway(rate_limits=limits))
