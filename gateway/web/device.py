"""The device authorization grant (RFC 8628) over HTTP: the device authorization endpoint,
the kiosk's page, the verification page, the resident app's approval API and the kiosk
reader's card tap with its confirmation. The logic is in gateway.services.device_grant;
docs/oidc.md "Device grant" describes the flow.

The pages: no external assets; inline CSS and JS allowed only by a per-response CSP nonce;
`frame-ancestors 'none'`; the QR as an SVG data: URI. The kiosk page shows the user code, the
QR of verification_uri_complete and the number to match, and polls only the public status —
no device code, no token ever reaches it.
"""

from __future__ import annotations

import base64
import html
import secrets
from typing import Any

from aiohttp import web

from gateway.authz import device as dg
from gateway.errors import InvalidRequest, OAuthError
from gateway.qr import render_svg
from gateway.services.device_grant import DeviceGrantService
from gateway.services.gate import CardTap
from gateway.web.http import (
    client_address,
    no_store,
    principal,
    read_form,
    read_json,
    require_str,
)
from gateway.web.login import LOGIN, _page
from gateway.web.oauth import CLIENT_AUTH
from gateway.web.ratelimit import enforce_ip_limit, enforce_user_code_limit

DEVICE_GRANT = web.AppKey("device_grant_service", DeviceGrantService)


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status,
                             headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


async def _client_form(request: web.Request) -> tuple[Any, dict[str, str]]:
    """An authenticated client and its form, as at the token endpoint (per-IP limit first,
    before any costly client authentication)."""
    await enforce_ip_limit(request, client_address(request), "oauth_ip")
    form = await read_form(request)
    client = await request.app[CLIENT_AUTH].authenticate(
        request.headers.get("Authorization"), form)
    return client, form


async def device_authorization(request: web.Request) -> web.StreamResponse:
    """RFC 8628 §3.1-§3.2."""
    client, form = await _client_form(request)
    return _json(await request.app[DEVICE_GRANT].authorize(client, form))


#: the card tap's form fields and their longest accepted values (as /v1/cards/verify)
TAP_FIELDS = (("card_no", 64), ("region", 16), ("terminal_mac", 256), ("request_id", 128),
              ("scanned_at", 64))


async def card_tap(request: web.Request) -> web.StreamResponse:
    """The kiosk's reader: a PSAM-attested tap binds the device authorization to the card's
    holder; the answer is what the kiosk shows the holder to confirm."""
    client, form = await _client_form(request)
    values: dict[str, str] = {}
    for name, limit in TAP_FIELDS:
        value = form.get(name)
        if not value or len(value) > limit:
            raise OAuthError("invalid_request", f"{name} is required (at most {limit})")
        values[name] = value
    tap = CardTap(card_no=values["card_no"], region=values["region"],
                  terminal_mac=values["terminal_mac"], scanned_at=values["scanned_at"])
    return _json(await request.app[DEVICE_GRANT].card_tap(
        client, form.get("device_code"), tap, values["request_id"]))


async def card_confirm(request: web.Request) -> web.StreamResponse:
    """The holder's answer on the kiosk after the tap (`decision`: approve | deny)."""
    client, form = await _client_form(request)
    return _json(await request.app[DEVICE_GRANT].card_confirm(
        client, form.get("device_code"), form.get("decision")))


# -- pages ------------------------------------------------------------------------------------
async def kiosk_page(request: web.Request) -> web.StreamResponse:
    """What the kiosk's screen shows: the user code, the QR of verification_uri_complete,
    the number to match, the status."""
    svc = request.app[DEVICE_GRANT]
    user_codes = request.query.getall("user_code", [])
    if len(user_codes) != 1:
        raise InvalidRequest("user_code is required, once")
    auth, client, user_code = await svc.for_kiosk(request.match_info["id"], user_codes[0])
    name = client.display_name if client else auth.client_id
    svg = base64.b64encode(render_svg(svc.verification_uri_complete(user_code), uri=True)).decode()
    minutes = max(1, int(auth.expires_at - auth.created_at) // 60)
    nonce = secrets.token_urlsafe(16)
    body = f"""<main data-authorization="{html.escape(auth.id)}">
<h1>登录 {html.escape(name)}</h1>
<p>请使用 渝快办 / 重庆人社 app 扫码，并在 app 中选择下面的数字；或在读卡器上刷社保卡。<br>
Scan with the 渝快办 or 重庆人社 app and pick this number in the app, or tap your social
security card on the reader.</p>
<img id="qr" alt="device login QR code" src="data:image/svg+xml;base64,{svg}">
<p>用户码 · User code</p><p class="number" id="user-code">{html.escape(user_code)}</p>
<p>核对数字 · Number to match</p><p class="number" id="number">{auth.number:02d}</p>
<p class="status" id="status" role="status">等待确认 · Waiting for approval</p>
<p class="status">{minutes} 分钟内有效 · valid for {minutes} min ·
{html.escape(svc.verification_uri())}</p>
</main>"""
    script = f"""<script nonce="{nonce}">
(function () {{
  var id = document.querySelector("main").dataset.authorization;
  var labels = {{pending: "等待确认 · Waiting for approval",
    scanned: "已扫码，请在 app 中确认 · Scanned: confirm in the app",
    tapped: "已刷卡，请在终端上确认 · Card tapped: confirm on the terminal",
    approved: "已确认，正在登录 · Approved, logging in",
    denied: "已拒绝 · Login refused", expired: "已过期，请重新开始 · Expired, start again"}};
  var el = document.getElementById("status");
  function poll() {{
    fetch("/v1/device-authorizations/" + encodeURIComponent(id),
          {{credentials: "omit", cache: "no-store"}})
      .then(function (r) {{ return r.ok ? r.json() : null; }})
      .then(function (b) {{
        if (b) {{
          el.textContent = labels[b.status] || b.status;
          el.dataset.status = b.status;
          if (b.status === "approved" || b.status === "denied" || b.status === "expired") {{
            document.getElementById("qr").style.opacity = "0.2"; return; }}
        }}
        setTimeout(poll, 1000);
      }}, function () {{ setTimeout(poll, 2000); }});
  }}
  poll();
}})();
</script>"""
    return _page(200, f"Log in to {name}", body, nonce, script)


async def verification_page(request: web.Request) -> web.StreamResponse:
    """RFC 8628 §3.3 verification_uri: a resident who opened it in a browser is told to use
    the app (approval happens there, behind the resident's login)."""
    entered = request.query.getall("user_code", [])
    if len(entered) > 1 or any(len(v) > 64 for v in entered):
        raise InvalidRequest("user_code is sent at most once, at most 64 characters")
    code = dg.normalise_user_code(entered[0]) if entered else None
    shown = (f'<p>用户码 · User code</p><p class="number" id="user-code">'
             f'{html.escape(dg.format_user_code(code))}</p>') if code else ""
    nonce = secrets.token_urlsafe(16)
    body = f"""<main><h1>自助终端登录 · Log in on a kiosk</h1>
<p>请打开 渝快办 或 重庆人社 app，点击“扫一扫”扫描终端屏幕上的二维码，或输入终端上显示的用户码。<br>
Open the 渝快办 or 重庆人社 app, tap “Scan” and scan the QR code on the kiosk's screen,
or enter the user code it shows.</p>{shown}</main>"""
    return _page(200, "Log in on a kiosk", body, nonce)


# -- the kiosk page's status and the resident app -----------------------------------------
async def status(request: web.Request) -> web.StreamResponse:
    return no_store(web.json_response(
        await request.app[DEVICE_GRANT].status(request.match_info["id"])))


async def _resident(request: web.Request) -> str:
    claims = await principal(request, kinds=("resident",), scope="login:approve")
    if claims.sealed_person is None:
        raise InvalidRequest("The resident token carries no person")
    return request.app[LOGIN].keys.open_person_id(claims.sealed_person, claims.client_id)


async def scan(request: web.Request) -> web.StreamResponse:
    """The user code the app read from the kiosk's QR (verification_uri_complete) or the
    resident typed; each entry spends the resident's `user_code` allowance (RFC 8628 §5.1)."""
    claims = await principal(request, kinds=("resident",), scope="login:approve")
    await enforce_user_code_limit(request, claims)
    if claims.sealed_person is None:
        raise InvalidRequest("The resident token carries no person")
    person = request.app[LOGIN].keys.open_person_id(claims.sealed_person, claims.client_id)
    user_code = require_str(await read_json(request), "user_code", max_len=32)
    assert user_code is not None
    return no_store(web.json_response(await request.app[DEVICE_GRANT].scan(user_code,
                                                                           person)))


async def approve(request: web.Request) -> web.StreamResponse:
    person = await _resident(request)
    body: dict[str, Any] = await read_json(request) if request.can_read_body else {}
    return no_store(web.json_response(await request.app[DEVICE_GRANT].approve(
        request.match_info["id"], person, body.get("number"))))


async def deny(request: web.Request) -> web.StreamResponse:
    person = await _resident(request)
    return no_store(web.json_response(await request.app[DEVICE_GRANT].deny(
        request.match_info["id"], person)))


#: `{id}` never matches the literal `scan` (as for login sessions: one resource per path)
AUTH_ID = "{id:(?!scan$)[^/]+}"


def add_routes(app: web.Application) -> None:
    """Registered only when the device grant is built (app.py `_login`)."""
    app.router.add_post("/oauth2/device_authorization", device_authorization)
    app.router.add_post("/oauth2/device/card-tap", card_tap)
    app.router.add_post("/oauth2/device/card-confirm", card_confirm)
    app.router.add_get("/device", verification_page)
    app.router.add_get("/device/kiosk/{id}", kiosk_page)
    app.router.add_post("/v1/device-authorizations/scan", scan)
    app.router.add_get(f"/v1/device-authorizations/{AUTH_ID}", status)
    app.router.add_post("/v1/device-authorizations/{id}/approve", approve)
    app.router.add_post("/v1/device-authorizations/{id}/deny", deny)
