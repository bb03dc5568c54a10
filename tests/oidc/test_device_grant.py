"""The device authorization grant (RFC 8628) through the real app on a real loopback port and
real Redis: a kiosk client asks, the resident approves in the app (number matching) or taps
the physical card on the kiosk's reader (PSAM MAC, as at a gate) and confirms; the kiosk's
back end polls the token endpoint. Time-dependent rules (slow_down, expiry) on an injected
clock."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from gateway.clock import FrozenClock
from gateway.settings import config_from_env
from gateway.timefmt import rfc3339_s
from tests.oidc.conftest import JKB, JKB_CB, OP
from tests.oidc.test_flow import _sub_for
from tests.web.conftest import GatewayFactory

KIOSK = "rp-kiosk-spb"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
RESIDENTS = Path(__file__).resolve().parents[2] / "gateway" / "data" / "residents.json"
ACTIVE_CARD, REPLACED_CARD = "CQ100000025", "CQ100000017"   # r-zhang-wei's
LOST_CARD = "CQ100000249"                                     # r-liu-yang's


@dataclass
class Kiosk:
    """The kiosk's back end (client-authenticated) and what its screen shows."""

    op: OP
    client_id: str = KIOSK

    def auth(self) -> dict[str, str]:
        return {"Authorization": self.op.gw.basic(self.client_id)}

    async def start(self, scope: str | None = "openid profile") -> dict[str, Any]:
        form = {} if scope is None else {"scope": scope}
        r = await self.op.c.post("/oauth2/device_authorization", data=form,
                                 headers=self.auth())
        assert r.status == 200, await r.text()
        assert r.headers["Cache-Control"] == "no-store"
        return dict(await r.json())

    async def token(self, device_code: str) -> tuple[int, dict[str, Any]]:
        r = await self.op.c.post("/oauth2/token", data={
            "grant_type": DEVICE_CODE, "device_code": device_code}, headers=self.auth())
        return r.status, dict(await r.json())

    async def page(self, started: dict[str, Any]) -> tuple[str, str, int]:
        """(html, authorization id, number) of the kiosk page."""
        uri = started["kiosk_uri"]
        r = await self.op.c.get(uri[len(self.op.base):])
        assert r.status == 200, await r.text()
        text = await r.text()
        auth_id = re.search(r'data-authorization="([^"]+)"', text)
        number = re.search(r'id="number">(\d+)<', text)
        assert auth_id and number
        return text, auth_id.group(1), int(number.group(1))

    async def status(self, auth_id: str) -> str:
        r = await self.op.c.get(f"/v1/device-authorizations/{auth_id}")
        assert r.status == 200
        return str((await r.json())["status"])

    async def tap(self, device_code: str, card_no: str, request_id: str,
                  scanned_at: str | None = None, mac: str | None = None
                  ) -> tuple[int, dict[str, Any]]:
        scanned_at = scanned_at or rfc3339_s(time.time())
        if mac is None:   # what the kiosk reader's PSAM computes
            r = await self.op.c.post("/sandbox/v1/card-taps", json={
                "card_no": card_no, "gate_client_id": self.client_id,
                "request_id": request_id, "scanned_at": scanned_at})
            assert r.status == 200, await r.text()
            mac = (await r.json())["terminal_mac"]
        r = await self.op.c.post("/oauth2/device/card-tap", data={
            "device_code": device_code, "card_no": card_no, "region": card_no[:2],
            "terminal_mac": mac, "request_id": request_id, "scanned_at": scanned_at},
            headers=self.auth())
        return r.status, dict(await r.json())

    async def confirm(self, device_code: str, decision: str) -> tuple[int, dict[str, Any]]:
        r = await self.op.c.post("/oauth2/device/card-confirm", data={
            "device_code": device_code, "decision": decision}, headers=self.auth())
        return r.status, dict(await r.json())


async def app_scan(op: OP, token: str, user_code: str) -> tuple[int, dict[str, Any]]:
    r = await op.c.post("/v1/device-authorizations/scan", json={"user_code": user_code},
                        headers={"Authorization": f"Bearer {token}"})
    return r.status, dict(await r.json())


async def app_decide(op: OP, token: str, auth_id: str, verb: str,
                     body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    r = await op.c.post(f"/v1/device-authorizations/{auth_id}/{verb}", json=body or {},
                        headers={"Authorization": f"Bearer {token}"})
    return r.status, dict(await r.json())


def _citizen_id(resident: str) -> str:
    rows = json.loads(RESIDENTS.read_text("utf-8"))["residents"]
    return str(next(r["citizen_id"] for r in rows if r["id"] == resident))


async def _suspend(op: OP, resident: str, suspended: bool = True) -> None:
    admin = (op.gw.settings.keys_dir / "sandbox" / "admin-token").read_text().strip()
    r = await op.c.post("/admin/v1/persons/suspend",
                        json={"citizen_id": _citizen_id(resident), "suspended": suspended},
                        headers={"Authorization": f"Bearer {admin}"})
    assert r.status == 200, await r.text()


async def _verified_claims(op: OP, id_token: str) -> dict[str, Any]:
    jwks = await (await op.c.get("/.well-known/jwks.json")).json()
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(id_token)["kid"]]
    return dict(jwt.decode(id_token, key.key, algorithms=["ES256", "EdDSA"], audience=KIOSK,
                           issuer=op.base))


@pytest.fixture
async def kiosk(op: OP) -> Kiosk:
    return Kiosk(op)


@pytest.fixture
async def timed(make_gateway: GatewayFactory) -> tuple[Kiosk, FrozenClock]:
    clock = FrozenClock(time.time())   # pyjwt checks iat against the real time
    limits = config_from_env({"GATEWAY_RATELIMIT_LOGIN_IP": "1000/1/1000"})
    # resident tokens outlive the device codes here (the clock moves 10 minutes)
    return Kiosk(OP(await make_gateway(clock=clock, rate_limits=limits,
                                       access_token_ttl_s=3600))), clock


async def test_discovery_advertises_the_working_device_grant(kiosk: Kiosk) -> None:
    conf = await (await kiosk.op.c.get("/.well-known/openid-configuration")).json()
    assert conf["device_authorization_endpoint"] == \
        f"{kiosk.op.base}/oauth2/device_authorization"
    assert DEVICE_CODE in conf["grant_types_supported"]


async def test_app_approval_with_number_matching_gives_code_flow_tokens(kiosk: Kiosk) -> None:
    op = kiosk.op
    started = await kiosk.start("openid profile essc")
    assert re.fullmatch(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}",
                        started["user_code"])
    assert started["verification_uri"] == f"{op.base}/device"
    assert started["verification_uri_complete"] == \
        f"{op.base}/device?user_code={started['user_code']}"
    assert started["expires_in"] == 600 and started["interval"] == 5
    status, body = await kiosk.token(started["device_code"])
    assert (status, body["error"]) == (400, "authorization_pending")

    html, auth_id, number = await kiosk.page(started)
    assert started["user_code"] in html and "沙坪坝区政务服务中心" in html
    assert started["device_code"] not in html     # nothing secret reaches the page
    assert "data:image/svg+xml;base64," in html
    token = await op.resident("r-zhang-wei")
    # typed, in lower case and without the dash: the same code (RFC 8628 §6.1)
    status, scanned = await app_scan(op, token, started["user_code"].lower().replace("-", ""))
    assert status == 200, scanned
    assert scanned["device_authorization_id"] == auth_id
    assert scanned["client"]["display_name"] == "沙坪坝区政务服务中心 3号自助终端"
    assert scanned["scopes"] == ["openid", "profile", "essc"]
    assert set(scanned["claims"]) == {"name", "essc_card_no", "essc_region"}
    assert number in scanned["number_choices"] and len(scanned["number_choices"]) == 3
    assert await kiosk.status(auth_id) == "scanned"
    status, body = await app_decide(op, token, auth_id, "approve")   # no number: refused
    assert status == 400 and body["code"] == "invalid_request"
    status, body = await app_decide(op, token, auth_id, "approve", {"number": number})
    assert status == 200 and body["status"] == "approved"
    assert await kiosk.status(auth_id) == "approved"

    status, tokens = await kiosk.token(started["device_code"])
    assert status == 200, tokens
    assert tokens["token_type"] == "Bearer" and tokens["refresh_token"]
    claims = await _verified_claims(op, tokens["id_token"])
    assert claims["azp"] == KIOSK and "nonce" not in claims and claims["sid"]
    r = await op.c.get("/oauth2/userinfo",
                       headers={"Authorization": f"Bearer {tokens['access_token']}"})
    info = await r.json()
    assert r.status == 200 and info["sub"] == claims["sub"] and info["name"] == "张*"
    # the remembered consent, as after a code-flow login
    r = await op.c.get("/v1/me/authorisations", headers={"Authorization": f"Bearer {token}"})
    assert KIOSK in {a["client_id"] for a in (await r.json())["authorisations"]}
    status, refreshed = await op.token({"grant_type": "refresh_token",
                                        "refresh_token": tokens["refresh_token"]}, KIOSK)
    assert status == 200, refreshed

    # single use: a second redemption fails and revokes what the first one issued
    status, body = await kiosk.token(started["device_code"])
    assert (status, body["error"]) == (400, "invalid_grant")
    r = await op.c.post("/oauth2/introspect", data={"token": refreshed["refresh_token"]},
                        headers=kiosk.auth())
    assert (await r.json()) == {"active": False}
    r = await op.c.get("/oauth2/userinfo",
                       headers={"Authorization": f"Bearer {refreshed['access_token']}"})
    assert r.status == 401


async def test_pairwise_subject_is_the_sectors_as_in_the_code_flow(kiosk: Kiosk) -> None:
    """The kiosk shares its hall's sector: the same resident is the same subject there, and
    another subject at 警快办 (another sector)."""
    op = kiosk.op
    token = await op.resident("r-li-na")
    subs = []
    for _ in range(2):
        started = await kiosk.start("openid")
        _, auth_id, number = await kiosk.page(started)
        assert (await app_scan(op, token, started["user_code"]))[0] == 200
        assert (await app_decide(op, token, auth_id, "approve", {"number": number}))[0] == 200
        status, tokens = await kiosk.token(started["device_code"])
        assert status == 200 and set(tokens["scope"].split()) == {"openid"}
        subs.append((await _verified_claims(op, tokens["id_token"]))["sub"])
    assert subs[0] == subs[1]
    # the hall's own code flow (the same sector) sees the same subject; 警快办 another
    assert await _sub_for(op, "rp-service-hall", token) == subs[0]
    req = op.auth_request(scope="openid")
    code = parse_qs(urlsplit(await op.login(req, token)).query)["code"][0]
    status, body = await op.token({"grant_type": "authorization_code", "code": code,
                                   "redirect_uri": JKB_CB, "code_verifier": req.verifier})
    assert status == 200, body
    assert jwt.decode(body["id_token"], options={"verify_signature": False})["sub"] != subs[0]


async def test_no_openid_scope_means_no_id_token(kiosk: Kiosk) -> None:
    op = kiosk.op
    started = await kiosk.start("profile")
    _, auth_id, number = await kiosk.page(started)
    token = await op.resident("r-li-na")
    assert (await app_scan(op, token, started["user_code"]))[0] == 200
    assert (await app_decide(op, token, auth_id, "approve", {"number": number}))[0] == 200
    status, tokens = await kiosk.token(started["device_code"])
    assert status == 200 and "id_token" not in tokens and tokens["scope"] == "profile"


async def test_slow_down_adds_five_seconds_for_good(timed: tuple[Kiosk, FrozenClock]) -> None:
    kiosk, clock = timed
    started = await kiosk.start()
    dc = started["device_code"]
    assert (await kiosk.token(dc))[1]["error"] == "authorization_pending"
    clock.advance(1)
    assert (await kiosk.token(dc))[1]["error"] == "slow_down"          # interval now 10
    clock.advance(6)
    assert (await kiosk.token(dc))[1]["error"] == "slow_down"          # 6 < 10: now 15
    clock.advance(15)
    assert (await kiosk.token(dc))[1]["error"] == "authorization_pending"
    clock.advance(10)   # the old 5 s pace is still too fast
    assert (await kiosk.token(dc))[1]["error"] == "slow_down"


async def test_expiry_on_the_injected_clock(timed: tuple[Kiosk, FrozenClock]) -> None:
    kiosk, clock = timed
    op = kiosk.op
    started = await kiosk.start()
    _, auth_id, _ = await kiosk.page(started)
    token = await op.resident("r-li-na")
    clock.advance(600)
    assert await kiosk.status(auth_id) == "expired"
    status, body = await kiosk.token(started["device_code"])
    assert (status, body["error"]) == (400, "expired_token")
    status, body = await app_scan(op, token, started["user_code"])
    assert status == 409 and body["code"] == "conflict"
    status, body = await kiosk.tap(started["device_code"], ACTIVE_CARD, "late-1",
                                   scanned_at=rfc3339_s(clock.now()))
    assert (status, body["error"]) == (400, "expired_token")


async def test_expired_after_approval_is_expired(timed: tuple[Kiosk, FrozenClock]) -> None:
    kiosk, clock = timed
    op = kiosk.op
    started = await kiosk.start()
    _, auth_id, number = await kiosk.page(started)
    token = await op.resident("r-li-na")
    assert (await app_scan(op, token, started["user_code"]))[0] == 200
    assert (await app_decide(op, token, auth_id, "approve", {"number": number}))[0] == 200
    clock.advance(601)
    assert (await kiosk.token(started["device_code"]))[1]["error"] == "expired_token"


async def test_denial_and_a_wrong_number_end_in_access_denied(kiosk: Kiosk) -> None:
    op = kiosk.op
    token = await op.resident("r-li-na")
    started = await kiosk.start()
    _, auth_id, number = await kiosk.page(started)
    assert (await app_scan(op, token, started["user_code"]))[0] == 200
    status, body = await app_decide(op, token, auth_id, "deny")
    assert status == 200 and body["status"] == "denied"
    assert await kiosk.status(auth_id) == "denied"
    status, body = await kiosk.token(started["device_code"])
    assert (status, body["error"]) == (400, "access_denied")
    status, body = await app_decide(op, token, auth_id, "approve", {"number": number})
    assert status == 409

    started = await kiosk.start()
    _, auth_id, number = await kiosk.page(started)
    _, scanned = await app_scan(op, token, started["user_code"])
    wrong = next(n for n in scanned["number_choices"] if n != number)
    status, body = await app_decide(op, token, auth_id, "approve", {"number": wrong})
    assert status == 403 and body["code"] == "forbidden"
    assert (await kiosk.token(started["device_code"]))[1]["error"] == "access_denied"


async def test_another_resident_cannot_take_over_a_scanned_code(kiosk: Kiosk) -> None:
    op = kiosk.op
    first, second = await op.resident("r-li-na"), await op.resident("r-wang-lei")
    started = await kiosk.start()
    _, auth_id, number = await kiosk.page(started)
    assert (await app_scan(op, first, started["user_code"]))[0] == 200
    status, body = await app_scan(op, second, started["user_code"])
    assert status == 409
    status, body = await app_decide(op, second, auth_id, "approve", {"number": number})
    assert status == 403 and body["code"] == "forbidden"


async def test_bad_user_codes(kiosk: Kiosk) -> None:
    op = kiosk.op
    token = await op.resident("r-li-na")
    # five entries: the resident's user_code burst (every entry spends, malformed or not)
    for bad in ("AAAA-AAAA", "BCDF-GHJK-L", "<script>", "x" * 33):
        status, body = await app_scan(op, token, bad)
        assert status == 400 and body["code"] == "invalid_request", (bad, body)
        assert "Traceback" not in json.dumps(body)
    status, body = await app_scan(op, token, "BCDF-GHJK")   # well-formed, nobody's
    assert status == 404 and body["code"] == "not_found"
    r = await op.c.get("/device/kiosk/" + "A" * 24 + "?user_code=BCDF-GHJK")
    assert r.status == 404
    started = await kiosk.start()
    _, auth_id, _ = await kiosk.page(started)
    r = await op.c.get(f"/device/kiosk/{auth_id}?user_code=BCDF-GHJK")   # not its code
    assert r.status == 404 or started["user_code"] == "BCDF-GHJK"


async def test_user_code_entry_is_rate_limited_per_resident(kiosk: Kiosk) -> None:
    op = kiosk.op
    token = await op.resident("r-li-na")
    answers = [(await app_scan(op, token, "BCDF-GHJK"))[0] for _ in range(6)]
    assert answers[:5] == [404] * 5 and answers[5] == 429
    r = await op.c.post("/v1/device-authorizations/scan", json={"user_code": "BCDF-GHJK"},
                        headers={"Authorization": f"Bearer {token}"})
    assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
    assert (await r.json())["code"] == "rate_limited"
    # another resident has an allowance of their own
    assert (await app_scan(op, await op.resident("r-wang-lei"), "BCDF-GHJK"))[0] == 404


async def test_clients_not_registered_for_the_grant_are_refused(kiosk: Kiosk) -> None:
    op = kiosk.op
    r = await op.c.post("/oauth2/device_authorization", data={"scope": "openid"},
                        headers={"Authorization": op.gw.basic(JKB)})
    assert r.status == 400 and (await r.json())["error"] == "unauthorized_client"
    started = await kiosk.start()
    status, body = await op.token({"grant_type": DEVICE_CODE,
                                   "device_code": started["device_code"]}, JKB)
    assert (status, body["error"]) == (400, "unauthorized_client")
    r = await op.c.post("/oauth2/device_authorization", data={"scope": "openid"})
    assert r.status == 401 and (await r.json())["error"] == "invalid_client"
    r = await op.c.post("/oauth2/device_authorization", data={"scope": "openid consents:request"},
                        headers=kiosk.auth())
    assert r.status == 400 and (await r.json())["error"] == "invalid_scope"
    status, body = await kiosk.token("not-a-device-code")
    assert (status, body["error"]) == (400, "invalid_grant")
    r = await op.c.post("/oauth2/token", data={"grant_type": DEVICE_CODE}, headers=kiosk.auth())
    assert r.status == 400 and (await r.json())["error"] == "invalid_request"


async def test_card_tap_then_the_holders_confirmation(kiosk: Kiosk) -> None:
    op = kiosk.op
    started = await kiosk.start("openid profile")
    _, auth_id, _ = await kiosk.page(started)
    dc = started["device_code"]
    status, tapped = await kiosk.tap(dc, ACTIVE_CARD, "kiosk-tap-1")
    assert status == 200, tapped
    assert tapped["status"] == "awaiting_confirmation"
    assert tapped["card"] == "CQ*****0025" and ACTIVE_CARD not in json.dumps(tapped)
    assert tapped["client"]["client_id"] == KIOSK and tapped["scopes"] == ["openid", "profile"]
    assert await kiosk.status(auth_id) == "tapped"
    assert (await kiosk.token(dc))[1]["error"] == "authorization_pending"
    status, body = await kiosk.confirm(dc, "approve")
    assert status == 200 and body == {"status": "approved"}
    status, tokens = await kiosk.token(dc)
    assert status == 200, tokens
    card_sub = (await _verified_claims(op, tokens["id_token"]))["sub"]

    # the same person approving in the app is the same pairwise subject
    token = await op.resident("r-zhang-wei")
    started = await kiosk.start("openid")
    _, auth_id, number = await kiosk.page(started)
    assert (await app_scan(op, token, started["user_code"]))[0] == 200
    assert (await app_decide(op, token, auth_id, "approve", {"number": number}))[0] == 200
    status, tokens = await kiosk.token(started["device_code"])
    assert (await _verified_claims(op, tokens["id_token"]))["sub"] == card_sub


async def test_card_taps_refused(kiosk: Kiosk) -> None:
    op = kiosk.op
    await op.resident("r-zhang-wei")
    started = await kiosk.start()
    dc = started["device_code"]
    for card, rid in ((REPLACED_CARD, "r-replaced"), (LOST_CARD, "r-lost")):
        status, body = await kiosk.tap(dc, card, rid)
        assert (status, body["error"]) == (400, "invalid_request"), card
        assert card not in json.dumps(body)
    status, body = await kiosk.tap(dc, ACTIVE_CARD, "r-badmac", mac="A" * 44)
    assert (status, body["error"]) == (400, "invalid_request")
    stale = rfc3339_s(time.time() - 120)   # a kiosk is online: a 2-minute-old tap is stale
    status, body = await kiosk.tap(dc, ACTIVE_CARD, "r-stale", scanned_at=stale)
    assert (status, body["error"]) == (400, "invalid_request")
    # a tap attested for another terminal does not pass on this one
    r = await op.c.post("/sandbox/v1/card-taps", json={
        "card_no": ACTIVE_CARD, "gate_client_id": "gate-metro-l1-xiaoshizi",
        "request_id": "r-other", "scanned_at": rfc3339_s(time.time())})
    other = await r.json()
    status, body = await kiosk.tap(dc, ACTIVE_CARD, "r-other", scanned_at=other["scanned_at"],
                                   mac=other["terminal_mac"])
    assert (status, body["error"]) == (400, "invalid_request")
    # none of that touched the authorization: a good tap still binds it, once
    assert (await kiosk.tap(dc, ACTIVE_CARD, "r-good"))[0] == 200
    status, body = await kiosk.tap(dc, ACTIVE_CARD, "r-good-2")
    assert (status, body["error"]) == (400, "invalid_grant")
    # the same attested tap replayed on a fresh authorization is refused
    again = await kiosk.start()
    r = await op.c.post("/sandbox/v1/card-taps", json={
        "card_no": ACTIVE_CARD, "gate_client_id": KIOSK, "request_id": "r-once",
        "scanned_at": rfc3339_s(time.time())})
    once = await r.json()
    assert (await kiosk.tap(again["device_code"], ACTIVE_CARD, "r-once",
                            scanned_at=once["scanned_at"], mac=once["terminal_mac"]))[0] == 200
    third = await kiosk.start()
    status, body = await kiosk.tap(third["device_code"], ACTIVE_CARD, "r-once",
                                   scanned_at=once["scanned_at"], mac=once["terminal_mac"])
    assert (status, body["error"]) == (400, "invalid_request")
    # the holder says no on the kiosk
    status, body = await kiosk.confirm(dc, "deny")
    assert status == 200 and body == {"status": "denied"}
    assert (await kiosk.token(dc))[1]["error"] == "access_denied"
    status, body = await kiosk.confirm(again["device_code"], "maybe")
    assert (status, body["error"]) == (400, "invalid_request")
    status, body = await kiosk.confirm(third["device_code"], "approve")   # nothing tapped
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_suspended_person_cannot_approve_either_way(kiosk: Kiosk) -> None:
    op = kiosk.op
    token = await op.resident("r-zhang-wei")
    started = await kiosk.start()
    _, auth_id, number = await kiosk.page(started)
    assert (await app_scan(op, token, started["user_code"]))[0] == 200
    tapped = await kiosk.start()
    assert (await kiosk.tap(tapped["device_code"], ACTIVE_CARD, "s-1"))[0] == 200
    await _suspend(op, "r-zhang-wei")
    status, body = await app_decide(op, token, auth_id, "approve", {"number": number})
    assert status == 403 and body["code"] == "forbidden"
    status, body = await kiosk.confirm(tapped["device_code"], "approve")
    assert (status, body["error"]) == (400, "access_denied")
    fresh = await kiosk.start()
    status, body = await kiosk.tap(fresh["device_code"], ACTIVE_CARD, "s-2")
    assert (status, body["error"]) == (400, "access_denied")
    status, body = await app_scan(op, token, fresh["user_code"])
    assert status == 403


async def test_suspension_after_approval_stops_the_redemption(kiosk: Kiosk) -> None:
    op = kiosk.op
    token = await op.resident("r-zhang-wei")
    started = await kiosk.start()
    _, auth_id, number = await kiosk.page(started)
    assert (await app_scan(op, token, started["user_code"]))[0] == 200
    assert (await app_decide(op, token, auth_id, "approve", {"number": number}))[0] == 200
    await _suspend(op, "r-zhang-wei")
    status, body = await kiosk.token(started["device_code"])
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_the_verification_page_sends_the_resident_to_the_app(kiosk: Kiosk) -> None:
    r = await kiosk.op.c.get("/device?user_code=bcdf-ghjk")
    text = await r.text()
    assert r.status == 200 and "BCDF-GHJK" in text and "app" in text
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    r = await kiosk.op.c.get("/device?user_code=%3Cscript%3E")
    assert r.status == 200 and "<script>" not in await r.text()


async def _cli(op: OP, *args: str) -> tuple[int, str, str]:
    """`gateway ...` as an operator runs it, on the live gateway's Redis and key directory."""
    s = op.gw.settings
    assert s.redis_url
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"GATEWAY_REDIS_URL": s.redis_url, "GATEWAY_REDIS_PREFIX": s.redis_prefix,
                "GATEWAY_KEYS_DIR": str(s.keys_dir)})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_kiosk_registered_by_the_cli_can_use_the_grant(kiosk: Kiosk) -> None:
    """`gateway clients register --grant-type urn:...:device_code` makes a kiosk client the
    live gateway serves the device grant (without the flag the same client is refused);
    other grant types are refused before anything is written."""
    op = kiosk.op
    kiosk_args = ("--kind", "rp", "--name", "自助终端 CLI", "--sector", "cq-service-halls",
                  "--scope", "openid", "--scope", "profile")

    async def device_authorization(client_id: str, secret: str) -> tuple[int, dict[str, Any]]:
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        r = await op.c.post("/oauth2/device_authorization", data={"scope": "openid"},
                            headers={"Authorization": f"Basic {basic}"})
        return r.status, dict(await r.json())

    rc, out, err = await _cli(op, "clients", "register", "kiosk-cli-1", *kiosk_args,
                              "--grant-type", DEVICE_CODE)
    assert rc == 0, err
    secret = json.loads(out)["client_secret"]
    status, started = await device_authorization("kiosk-cli-1", secret)
    assert status == 200, started
    assert re.fullmatch(r"[A-Z]{4}-[A-Z]{4}", started["user_code"])
    basic = base64.b64encode(f"kiosk-cli-1:{secret}".encode()).decode()
    r = await op.c.post("/oauth2/token", data={"grant_type": DEVICE_CODE,
                                               "device_code": started["device_code"]},
                        headers={"Authorization": f"Basic {basic}"})
    assert (r.status, (await r.json())["error"]) == (400, "authorization_pending")

    rc, out, err = await _cli(op, "clients", "register", "kiosk-cli-2", *kiosk_args)
    assert rc == 0, err
    status, body = await device_authorization("kiosk-cli-2", json.loads(out)["client_secret"])
    assert (status, body["error"]) == (400, "unauthorized_client")

    for bad in ("authorization_code", "urn:ietf:params:oauth:grant-type:token-exchange"):
        rc, out, err = await _cli(op, "clients", "register", "kiosk-cli-3", *kiosk_args,
                                  "--grant-type", bad)
        assert rc == 1 and "grant_types" in err and "Traceback" not in err, err
    rc, out, err = await _cli(op, "clients", "register", "app-cli-1", "--kind", "app",
                              "--name", "x", "--grant-type", DEVICE_CODE)
    assert rc == 1 and "kind rp" in err, err
    rc, listed, err = await _cli(op, "clients", "list")
    assert rc == 0, err
    rows = {c["client_id"]: c for c in map(json.loads, listed.splitlines())}
    assert "kiosk-cli-3" not in rows and "app-cli-1" not in rows
    assert rows["kiosk-cli-1"]["grant_types"] == [DEVICE_CODE]
    assert rows["kiosk-cli-2"]["grant_types"] == []


async def test_the_cli_registers_par_dpop_and_logout_metadata(kiosk: Kiosk) -> None:
    op = kiosk.op
    rc, _, err = await _cli(
        op, "clients", "register", "rp-cli-fapi", "--kind", "rp", "--name", "FAPI RP",
        "--redirect-uri", "https://rp.example/cb", "--require-par", "--dpop-bound",
        "--post-logout-redirect-uri", "https://rp.example/bye",
        "--backchannel-logout-uri", "https://rp.example/bcl")
    assert rc == 0, err
    # the live gateway applies it: a front-channel request of this client is refused
    req = op.auth_request(client_id="rp-cli-fapi", redirect_uri="https://rp.example/cb")
    r = await op.c.get(req.url, allow_redirects=False)
    assert r.status == 302
    assert parse_qs(urlsplit(r.headers["Location"]).query)["error"] == ["invalid_request"]
    rc, listed, err = await _cli(op, "clients", "list")
    row = next(c for c in map(json.loads, listed.splitlines()) if c["client_id"] == "rp-cli-fapi")
    assert row["require_pushed_authorization_requests"] is True
    assert row["dpop_bound_access_tokens"] is True
    assert row["post_logout_redirect_uris"] == ["https://rp.example/bye"]
    assert row["backchannel_logout_uri"] == "https://rp.example/bcl"


async def test_number_matching_follows_the_login_setting(make_gateway: GatewayFactory) -> None:
    """GATEWAY_LOGIN_REQUIRE_NUMBER=false turns number matching off for the device grant as for
    scan-to-login: no choices in the scan answer, an approval without a number passes; a number
    sent is still checked, and a wrong one still cancels."""
    limits = config_from_env({"GATEWAY_RATELIMIT_LOGIN_IP": "1000/1/1000"})
    kiosk = Kiosk(OP(await make_gateway(rate_limits=limits, login_require_number=False)))
    op = kiosk.op
    token = await op.resident("r-li-na")
    started = await kiosk.start("openid")
    _, auth_id, number = await kiosk.page(started)
    status, scanned = await app_scan(op, token, started["user_code"])
    assert status == 200 and "number_choices" not in scanned
    status, body = await app_decide(op, token, auth_id, "approve")
    assert (status, body["status"]) == (200, "approved")
    status, tokens = await kiosk.token(started["device_code"])
    assert status == 200, tokens
    started = await kiosk.start("openid")
    _, auth_id, number = await kiosk.page(started)
    assert (await app_scan(op, token, started["user_code"]))[0] == 200
    status, body = await app_decide(op, token, auth_id, "approve", {"number": (number + 1) % 100})
    assert status == 403 and body["code"] == "forbidden"
