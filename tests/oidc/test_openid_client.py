"""An independent certified client: openid-client (npm; panva's OpenID Certified RP library)
against the live gateway: PAR + DPoP code flow with PKCE (ID token validated, DPoP userinfo,
DPoP refresh, RP-initiated logout), and the device authorization grant (RFC 8628) with DPoP as
a kiosk's back end, approved once in the resident's app (scan, number matching, approve) and
once by a PSAM-attested card tap on the kiosk's reader and the holder's confirmation. Node 20
runs tests/oidc/node/interop.mjs; its dependencies come from package-lock.json (`npm ci`, run
by script/test). The test plays the browser, the resident's app and the kiosk's reader."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from gateway.settings import config_from_env
from tests.oidc.conftest import JKB, JKB_CB, OP, parse_page
from tests.oidc.test_device_grant import (
    ACTIVE_CARD,
    KIOSK,
    Kiosk,
    app_decide,
    app_scan,
)
from tests.oidc.test_flow import _sub_for
from tests.web.conftest import GatewayFactory

NODE_DIR = Path(__file__).resolve().parent / "node"
LOGGED_OUT = "http://127.0.0.1:8400/logged-out"
PAR_URN = "urn:ietf:params:oauth:request_uri:"


def _jkt(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint of the public key openid-client signs its DPoP proofs with
    (computed here, not by the gateway's code, so a wrong binding cannot agree with itself)."""
    names = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("crv", "kty", "x")
    raw = json.dumps({k: jwk[k] for k in names}, sort_keys=True, separators=(",", ":"))
    return base64.urlsafe_b64encode(hashlib.sha256(raw.encode()).digest()).rstrip(b"=").decode()


def _claims(token: object) -> dict[str, Any]:
    return dict(jwt.decode(str(token), options={"verify_signature": False}))


class Node:
    """interop.mjs as a child process: one JSON line per step on stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self) -> dict[str, Any]:
        assert self.proc.stdout and self.proc.stderr
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if not line:   # openid-client threw: its error is the failure message
            err = await asyncio.wait_for(self.proc.stderr.read(), 10)
            raise AssertionError(err.decode())
        return dict(json.loads(line))

    async def send(self, text: str) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()


@asynccontextmanager
async def _node(op: OP, client_id: str, public: bool = False, **env: str) -> AsyncIterator[Node]:
    node = shutil.which("node")
    assert node, "node 20 is needed (script/test installs it)"
    assert (NODE_DIR / "node_modules" / "openid-client").is_dir(), \
        "run `npm ci` in tests/oidc/node (script/test does)"
    proc = await asyncio.create_subprocess_exec(
        node, str(NODE_DIR / "interop.mjs"), cwd=NODE_DIR,
        env={**{k: v for k, v in os.environ.items() if k != "CLIENT_SECRET"},
             "ISSUER": op.base, "CLIENT_ID": client_id, **env,
             **({} if public else
                {"CLIENT_SECRET": op.gw.demo_secret(client_id)["client_secret"]})},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        yield Node(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def _run(op: OP, alg: str) -> dict[str, Any]:
    async with _node(op, JKB, REDIRECT_URI=JKB_CB, DPOP_ALG=alg,
                     POST_LOGOUT_URI=LOGGED_OUT) as node:
        authorize = urlsplit((await node.line())["authorize"])
        assert authorize.path == "/oauth2/authorize"
        # PAR (RFC 9126 §4): the front channel carries only client_id and the request_uri
        query = parse_qs(authorize.query)
        assert set(query) == {"client_id", "request_uri"}, query
        assert query["request_uri"][0].startswith(PAR_URN)
        r = await op.c.get(f"{authorize.path}?{authorize.query}")
        assert r.status == 200, await r.text()
        page = parse_page(await r.text())
        token = await op.resident()
        assert (await op.scan(token, page.qr))[0] == 200
        assert (await op.approve(token, page.session_id, page.number))[0] == 200
        await node.send((await op.poll(page.session_id))["redirect_to"])
        return await node.line()


async def _jkb_sub(op: OP, token: str) -> str:
    """The resident's subject at 警快办 from a login this test makes itself (Python side)."""
    req = op.auth_request(scope="openid")
    code = parse_qs(urlsplit(await op.login(req, token)).query)["code"][0]
    status, body = await op.token({"grant_type": "authorization_code", "code": code,
                                   "redirect_uri": JKB_CB, "code_verifier": req.verifier})
    assert status == 200, body
    return str(_claims(body["id_token"])["sub"])


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
async def test_openid_client_par_dpop_pkce_userinfo_refresh(op: OP, alg: str) -> None:
    out = await _run(op, alg)
    assert out["token_type"] == "dpop" and out["refreshed_token_type"] == "dpop"
    assert out["aud"] == JKB and out["nonce"]
    userinfo = out["userinfo"]
    assert isinstance(userinfo, dict) and userinfo["sub"] == out["sub"] and "name" in userinfo
    assert out["again"] == userinfo and out["refreshed_differs"] is True
    # both access tokens openid-client holds are bound to its own DPoP key (RFC 9449 §6)
    jkt = _jkt(out["dpop_jwk"])
    assert _claims(out["access_token"])["cnf"] == {"jkt": jkt}
    assert _claims(out["refreshed_access_token"])["cnf"] == {"jkt": jkt}
    # pairwise: the subject is 警快办's for this resident, not the one another sector sees
    token = await op.resident()
    assert out["sub"] == await _jkb_sub(op, token)
    assert out["sub"] != await _sub_for(op, "rp-service-hall", token)


async def test_openid_client_rp_initiated_logout(op: OP) -> None:
    """The end-session URL openid-client builds (id_token_hint, post_logout_redirect_uri,
    state) ends the grant: the browser is sent back with the state, the refresh token and
    the access token stop working."""
    out = await _run(op, "ES256")
    end = urlsplit(str(out["end_session"]))
    assert f"{end.scheme}://{end.netloc}{end.path}" == f"{op.base}/oauth2/logout"
    r = await op.c.get(f"{end.path}?{end.query}", allow_redirects=False)
    assert r.status == 302, await r.text()
    back = urlsplit(r.headers["Location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == LOGGED_OUT
    assert parse_qs(back.query)["state"] == [out["state"]]
    r = await op.c.post("/oauth2/introspect", data={"token": str(out["refresh_token"])},
                        headers={"Authorization": op.gw.basic(JKB)})
    assert (await r.json()) == {"active": False}


# -- the device authorization grant: openid-client polls while the resident decides ---------

@pytest.fixture
async def kiosk(make_gateway: GatewayFactory) -> Kiosk:
    # openid-client waits `interval` before every poll: 1 s keeps each test short
    limits = config_from_env({"GATEWAY_RATELIMIT_LOGIN_IP": "1000/1/1000"})
    return Kiosk(OP(await make_gateway(rate_limits=limits, device_poll_interval_s=1)))


async def _in_the_app(kiosk: Kiosk, started: dict[str, Any], token: str) -> None:
    """The resident's app: scan the kiosk's QR, pick the number the kiosk shows, approve."""
    op = kiosk.op
    _, auth_id, number = await kiosk.page(started)   # what the kiosk's screen shows
    qr = urlsplit(started["verification_uri_complete"])   # what the app's camera reads
    status, scanned = await app_scan(op, token, parse_qs(qr.query)["user_code"][0])
    assert status == 200, scanned
    assert scanned["device_authorization_id"] == auth_id
    assert number in scanned["number_choices"]
    status, body = await app_decide(op, token, auth_id, "approve", {"number": number})
    assert (status, body["status"]) == (200, "approved"), body


async def _by_card_tap(kiosk: Kiosk, started: dict[str, Any], token: str) -> None:
    """The kiosk's reader: a PSAM-attested tap of the resident's card, then the holder's yes
    on the kiosk's screen (the kiosk's back end holds the device code openid-client got)."""
    status, tapped = await kiosk.tap(started["device_code"], ACTIVE_CARD, "oc-kiosk-tap-1")
    assert (status, tapped.get("status")) == (200, "awaiting_confirmation"), tapped
    assert tapped["card"] == "CQ*****0025"
    status, body = await kiosk.confirm(started["device_code"], "approve")
    assert (status, body) == (200, {"status": "approved"})


Approval = Callable[[Kiosk, dict[str, Any], str], Awaitable[None]]


@pytest.mark.parametrize("approve", [_in_the_app, _by_card_tap], ids=["app", "card-tap"])
async def test_openid_client_device_grant_with_dpop(kiosk: Kiosk, approve: Approval) -> None:
    op = kiosk.op
    token = await op.resident("r-zhang-wei")   # ACTIVE_CARD is r-zhang-wei's card
    async with _node(op, KIOSK, FLOW="device", SCOPE="openid profile") as node:
        started = (await node.line())["device"]
        assert started["verification_uri"] == f"{op.base}/device"
        assert started["interval"] == 1 and started["expires_in"] == 600
        await asyncio.sleep(1.5)   # openid-client has polled once: authorization_pending
        await approve(kiosk, started, token)
        out = await node.line()
    assert "error" not in out, out
    assert out["token_type"] == "dpop" and out["refreshed_token_type"] == "dpop"
    assert set(str(out["scope"]).split()) == {"openid", "profile"}
    claims = out["claims"]
    assert claims["iss"] == op.base and claims["aud"] == KIOSK and claims["azp"] == KIOSK
    assert "nonce" not in claims
    userinfo = out["userinfo"]
    assert userinfo["sub"] == claims["sub"] and userinfo["name"] == "张*"
    assert out["again"] == userinfo and out["refreshed_differs"] is True
    jkt = _jkt(out["dpop_jwk"])
    assert _claims(out["access_token"])["cnf"] == {"jkt": jkt}
    assert _claims(out["refreshed_access_token"])["cnf"] == {"jkt": jkt}
    # pairwise: the kiosk shares its hall's sector (the same subject as the hall's code flow
    # login), and 警快办 (another sector) sees another one
    assert claims["sub"] == await _sub_for(op, "rp-service-hall", token)
    assert claims["sub"] != await _jkb_sub(op, token)


async def test_openid_client_device_grant_as_a_public_kiosk(kiosk: Kiosk) -> None:
    """A public kiosk client (auth_method none, RFC 8628 §3.1 allows it): openid-client runs
    the grant with DPoP, and the refresh token it holds is bound to its key (RFC 9449 §5):
    the same refresh token without a proof is refused."""
    op = kiosk.op
    admin = (op.gw.settings.keys_dir / "sandbox" / "admin-token").read_text().strip()
    r = await op.c.post("/admin/v1/clients", headers={"Authorization": f"Bearer {admin}"},
                        json={"client_id": "rp-kiosk-public", "kind": "rp",
                              "display_name": "公共自助终端", "auth_method": "none",
                              "sector": "cq-service-halls", "scopes": ["openid", "profile"],
                              "grant_types": ["urn:ietf:params:oauth:grant-type:device_code"]})
    assert r.status == 201, await r.text()
    token = await op.resident("r-zhang-wei")
    async with _node(op, "rp-kiosk-public", public=True, FLOW="device", SCOPE="openid",
                     DPOP_ALG="EdDSA") as node:
        await _in_the_app(kiosk, (await node.line())["device"], token)
        out = await node.line()
    assert "error" not in out, out
    assert out["token_type"] == "dpop" and out["refreshed_differs"] is True
    assert out["claims"]["aud"] == "rp-kiosk-public"
    assert out["claims"]["sub"] == await _sub_for(op, "rp-service-hall", token)
    assert _claims(out["refreshed_access_token"])["cnf"] == {"jkt": _jkt(out["dpop_jwk"])}
    r = await op.c.post("/oauth2/token", data={
        "grant_type": "refresh_token", "refresh_token": str(out["refresh_token"]),
        "client_id": "rp-kiosk-public"})
    assert r.status == 400 and (await r.json())["error"] == "invalid_grant"


async def test_openid_client_stops_polling_when_the_holder_says_no(kiosk: Kiosk) -> None:
    """RFC 8628 §3.5: after a card tap the holder refuses on the kiosk; openid-client's poll
    ends with access_denied (it does not poll on until the code expires)."""
    async with _node(kiosk.op, KIOSK, FLOW="device", SCOPE="openid") as node:
        started = (await node.line())["device"]
        status, tapped = await kiosk.tap(started["device_code"], ACTIVE_CARD, "oc-kiosk-no")
        assert status == 200, tapped
        assert (await kiosk.confirm(started["device_code"], "deny"))[0] == 200
        out = await node.line()
    assert out == {"error": "access_denied", "status": 400}
