"""Authorised login over HTTP: the authorization endpoint's scan-to-login page, the login
session API the page and the resident app use, userinfo, and the resident's remembered
authorisations. The logic is in gateway.services.login; docs/oidc.md describes the flow.

The page: no external assets; inline CSS and JS allowed only by a per-response CSP nonce;
`frame-ancestors 'none'`; the QR PNG as a data: URI; the browser bound to its login session
by an HttpOnly SameSite=Lax cookie scoped to the session's poll path.
"""

from __future__ import annotations

import base64
import html
import secrets
from typing import Any

from aiohttp import web

from gateway.authz import oidc
from gateway.authz.oidc import AuthorizeError
from gateway.authz.tokens import TokenInvalid
from gateway.errors import GatewayError, InvalidRequest, OAuthError, RateLimited
from gateway.qr import render_png
from gateway.services.login import LoginService, add_query
from gateway.web.http import (
    AUTHENTICATOR,
    DpopBindingError,
    check_dpop_binding,
    client_address,
    no_store,
    presented_token,
    principal,
    read_form,
    read_json,
    require_str,
)
from gateway.web.oauth import CLIENT_AUTH, dpop_proof_key
from gateway.web.ratelimit import enforce_ip_limit

LOGIN = web.AppKey("login_service", LoginService)
COOKIE = "gw_login"


def _csp(nonce: str) -> str:
    return (f"default-src 'none'; img-src data:; style-src 'nonce-{nonce}'; "
            f"script-src 'nonce-{nonce}'; connect-src 'self'; base-uri 'none'; "
            "form-action 'none'; frame-ancestors 'none'")


def _page(status: int, title: str, body: str, nonce: str, script: str = "",
          headers: dict[str, str] | None = None) -> web.Response:
    doc = f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{html.escape(title)}</title>
<style nonce="{nonce}">
body{{font-family:system-ui,sans-serif;background:#f4f6f8;margin:0;display:flex;
justify-content:center;align-items:center;min-height:100vh;color:#1c2630}}
main{{background:#fff;border-radius:12px;box-shadow:0 2px 12px #0002;padding:2em;
max-width:26em;text-align:center}}
h1{{font-size:1.3em}} .number{{font-size:2.4em;font-weight:700;letter-spacing:.1em}}
img{{image-rendering:pixelated;width:240px;height:240px}} .status{{color:#555}}
</style></head><body>{body}{script}</body></html>"""
    resp = web.Response(status=status, text=doc, content_type="text/html", charset="utf-8",
                        headers=headers)
    resp.headers["Content-Security-Policy"] = _csp(nonce)
    resp.headers["X-Frame-Options"] = "DENY"
    no_store(resp)
    return resp


def _error_page(status: int, message: str, headers: dict[str, str] | None = None
                ) -> web.Response:
    nonce = secrets.token_urlsafe(16)
    body = (f"<main><h1>登录请求无效 · Login request refused</h1>"
            f"<p>{html.escape(message)}</p></main>")
    return _page(status, "Login request refused", body, nonce, headers=headers)


async def authorize(request: web.Request) -> web.StreamResponse:
    """OIDC Core §3.1.2 / RFC 6749 §4.1.1: validate, then show the scan-to-login page."""
    try:   # per client IP, the `login_ip` limit (GATEWAY_RATELIMIT_LOGIN_IP)
        await enforce_ip_limit(request, client_address(request), "login_ip")
    except RateLimited as exc:
        return _error_page(429, "Too many login attempts from this address; try again later.",
                           exc.headers)
    login = request.app[LOGIN]
    params: dict[str, list[str]] = {k: request.query.getall(k) for k in request.query.keys()}
    client_ids = params.get("client_id") or []
    client = None
    if len(client_ids) == 1 and 0 < len(client_ids[0]) <= 128:
        client = await login.clients.get(client_ids[0])
    pushed = False
    request_uris = params.get("request_uri") or []
    if len(request_uris) == 1 and request_uris[0].startswith(oidc.PAR_URN_PREFIX):
        # RFC 9126 §4: the pushed request replaces the query; it must be the client's own
        stored = (await login.take_pushed(client_ids[0], request_uris[0])
                  if client is not None and len(client_ids) == 1 else None)
        if stored is None:
            return _error_page(400, "The request_uri is unknown, expired or already used")
        params, pushed = stored, True
    try:
        client, redirect_uri = oidc.client_and_redirect(params, client)
    except AuthorizeError as exc:   # never redirected (RFC 6749 §4.1.2.1)
        return _error_page(400, exc.description)
    try:
        req = oidc.authorization_request(params, client, redirect_uri,
                                         0 if pushed else len(request.query_string),
                                         pushed=pushed)
    except AuthorizeError as exc:
        states = params.get("state") or []
        state = states[0] if len(states) == 1 and len(states[0]) <= oidc.MAX_PARAM_LEN else None
        location = add_query(redirect_uri, {"error": exc.error,
                                            "error_description": exc.description,
                                            "state": state, "iss": login.issuer})
        return no_store(web.Response(status=302, headers={"Location": location}))
    started = await login.start(req, request.headers.get("User-Agent"), request.remote)
    s = started.session
    png = base64.b64encode(render_png(started.qr)).decode("ascii")
    nonce = secrets.token_urlsafe(16)
    body = f"""<main data-session="{html.escape(s.id)}">
<h1>扫码登录 {html.escape(client.display_name)}</h1>
<p>请使用 渝快办 / 重庆人社 app 扫码，并在 app 中选择下面的数字。<br>
Scan with the 渝快办 or 重庆人社 app, then pick this number in the app.</p>
<img id="qr" alt="login QR code" src="data:image/png;base64,{png}">
<p>核对数字 · Number to match</p><p class="number" id="number">{s.number:02d}</p>
<p class="status" id="status" role="status">等待扫码 · Waiting for the scan</p>
<p class="status">本二维码 {int(s.expires_at - s.created_at) // 60} 分钟内有效、仅可使用一次。</p>
</main>"""
    script = f"""<script nonce="{nonce}">
(function () {{
  var sid = document.querySelector("main").dataset.session;
  var labels = {{pending: "等待扫码 · Waiting for the scan",
    scanned: "已扫码，请在 app 中确认 · Scanned: confirm in the app",
    approved: "已确认，正在跳转 · Approved, redirecting",
    denied: "已拒绝 · Login refused", expired: "二维码已过期，请刷新 · Expired, reload"}};
  var el = document.getElementById("status");
  function poll() {{
    fetch("/v1/login-sessions/" + encodeURIComponent(sid),
          {{credentials: "same-origin", cache: "no-store"}})
      .then(function (r) {{ return r.ok ? r.json() : null; }})
      .then(function (b) {{
        if (b) {{
          el.textContent = labels[b.status] || b.status;
          if (b.status === "approved" && b.redirect_to) {{
            window.location.replace(b.redirect_to); return; }}
          if (b.status === "denied" || b.status === "expired") {{
            document.getElementById("qr").style.opacity = "0.2"; return; }}
        }}
        setTimeout(poll, 1000);
      }}, function () {{ setTimeout(poll, 2000); }});
  }}
  poll();
}})();
</script>"""
    resp = _page(200, f"Log in to {client.display_name}", body, nonce, script)
    resp.set_cookie(COOKIE, started.binding, path=f"/v1/login-sessions/{s.id}",
                    max_age=int(s.expires_at - s.created_at), httponly=True, samesite="Lax",
                    secure=login.issuer.startswith("https://"))
    return resp


async def par(request: web.Request) -> web.StreamResponse:
    """RFC 9126 §2: a client pushes its authorization request, authenticated as at the token
    endpoint, and gets a one-time `request_uri` for /oauth2/authorize (201)."""
    # before any costly client authentication
    await enforce_ip_limit(request, client_address(request), "oauth_ip")
    form = await read_form(request)
    client = await request.app[CLIENT_AUTH].authenticate(
        request.headers.get("Authorization"), form)
    # RFC 9449 §10.1: a DPoP proof here binds the code to its key. No server nonce is asked
    # for (§8 leaves it to the server): the binding is checked again, with a nonce, when the
    # code is redeemed; one is handed out for that request.
    jkt, nonce = await dpop_proof_key(request, "/oauth2/par", require_nonce=False)
    body = await request.app[LOGIN].push(client, form, jkt)
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if jkt is not None and nonce is not None:
        headers["DPoP-Nonce"] = nonce
    return web.json_response(body, status=201, headers=headers)


#: RP-Initiated Logout parameters and their longest accepted values (docs/openapi.yaml).
LOGOUT_LIMITS = {"id_token_hint": 2048, "client_id": 128, "post_logout_redirect_uri": 1024,
                 "state": 256, "ui_locales": 64}


async def end_session(request: web.Request) -> web.StreamResponse:
    """OpenID Connect RP-Initiated Logout 1.0 §2: GET (query) or POST (form)."""
    try:
        await enforce_ip_limit(request, client_address(request), "login_ip")
    except RateLimited as exc:
        return _error_page(429, "Too many requests from this address; try again later.",
                           exc.headers)
    if request.method == "POST":
        try:   # a browser page: every answer is HTML, a bad body too
            params = dict(await read_form(request)) if request.can_read_body else {}
        except (GatewayError, web.HTTPException):   # not a form, too large: a bad request
            return _error_page(400, "The logout request is not valid")
    else:
        if any(len(request.query.getall(k)) > 1 for k in request.query.keys()):
            return _error_page(400, "A parameter is repeated")
        params = dict(request.query)
    if any(len(params.get(k) or "") > n for k, n in LOGOUT_LIMITS.items()) \
            or any(len(v) > 256 for k, v in params.items() if k not in LOGOUT_LIMITS):
        return _error_page(400, "A parameter is too long")
    try:
        target = await request.app[LOGIN].end_session(params)
    except InvalidRequest as exc:   # never redirected to an unchecked URI
        return _error_page(400, exc.detail or "The logout request is not valid")
    if target is not None:
        return no_store(web.Response(status=302, headers={"Location": target}))
    nonce = secrets.token_urlsafe(16)
    body = ("<main><h1>已退出登录 · Logged out</h1>"
            "<p>您已退出该应用的登录。You are logged out of the application.</p></main>")
    return _page(200, "Logged out", body, nonce)


async def poll(request: web.Request) -> web.StreamResponse:
    body = await request.app[LOGIN].poll(request.match_info["id"], request.cookies.get(COOKIE))
    return no_store(web.json_response(body))


async def _resident(request: web.Request, scope: str) -> str:
    claims = await principal(request, kinds=("resident",), scope=scope)
    if claims.sealed_person is None:
        raise InvalidRequest("The resident token carries no person")
    return request.app[LOGIN].keys.open_person_id(claims.sealed_person, claims.client_id)


async def scan(request: web.Request) -> web.StreamResponse:
    person = await _resident(request, "login:approve")
    qr = require_str(await read_json(request), "qr", max_len=200)
    assert qr is not None
    return no_store(web.json_response(await request.app[LOGIN].scan(qr, person)))


async def approve(request: web.Request) -> web.StreamResponse:
    person = await _resident(request, "login:approve")
    # CONTRACT: approve has no body; an app doing number matching sends {"number": n}
    body: dict[str, Any] = await read_json(request) if request.can_read_body else {}
    return no_store(web.json_response(await request.app[LOGIN].approve(
        request.match_info["id"], person, body.get("number"))))


async def deny(request: web.Request) -> web.StreamResponse:
    person = await _resident(request, "login:approve")
    return no_store(web.json_response(await request.app[LOGIN].deny(
        request.match_info["id"], person)))


async def authorisations(request: web.Request) -> web.StreamResponse:
    person = await _resident(request, "me")
    items = await request.app[LOGIN].authorisations(person)
    return no_store(web.json_response({"authorisations": items}))


async def forget(request: web.Request) -> web.StreamResponse:
    person = await _resident(request, "me")
    await request.app[LOGIN].forget(person, request.match_info["client_id"])
    return no_store(web.Response(status=204))


async def userinfo(request: web.Request) -> web.StreamResponse:
    token, dpop_scheme = presented_token(request)
    try:   # RFC 9449 §7: a bound token only with its proof (the service checks the rest)
        bound = await request.app[AUTHENTICATOR].verify(token)
    except TokenInvalid:
        bound = None
    if bound is not None and (bound.jkt is not None or dpop_scheme):
        try:
            await check_dpop_binding(request, token, dpop_scheme, bound)
        except DpopBindingError as exc:
            raise OAuthError(exc.error, exc.detail or "DPoP proof required", 401,
                             headers=exc.headers) from None
    claims = await request.app[LOGIN].userinfo(token)
    return no_store(web.json_response(claims))


#: `{id}` never matches the literal `scan`, so the router does not merge the methods of the
#: two resources (OPTIONS /v1/login-sessions/scan answered `Allow: GET,HEAD,POST`).
SESSION_ID = "{id:(?!scan$)[^/]+}"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/oauth2/authorize", authorize)
    app.router.add_post("/oauth2/par", par)
    app.router.add_get("/oauth2/logout", end_session)
    app.router.add_post("/oauth2/logout", end_session)
    app.router.add_get("/oauth2/userinfo", userinfo)
    app.router.add_post("/oauth2/userinfo", userinfo)
    app.router.add_post("/v1/login-sessions/scan", scan)
    app.router.add_get(f"/v1/login-sessions/{SESSION_ID}", poll)
    app.router.add_post("/v1/login-sessions/{id}/approve", approve)
    app.router.add_post("/v1/login-sessions/{id}/deny", deny)
    app.router.add_get("/v1/me/authorisations", authorisations)
    app.router.add_delete("/v1/me/authorisations/{client_id}", forget)
