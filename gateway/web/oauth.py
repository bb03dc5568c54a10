"""OAuth endpoints: token (RFC 6749 §3.2), revocation (RFC 7009), introspection (RFC 7662).

Answers are RFC 6749 §5.2 error JSON, `Cache-Control: no-store`."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway.authz.client_auth import ClientAuthenticator, invalid_client
from gateway.authz.clients import Client
from gateway.authz.dpop import DpopError
from gateway.authz.tokens import AccessTokenClaims, TokenInvalid
from gateway.errors import OAuthError
from gateway.services.tokens import TokenService
from gateway.web.http import AUTHENTICATOR, DPOP, client_address, read_form
from gateway.web.ratelimit import ip_limit_now

TOKENS = web.AppKey("token_service", TokenService)
CLIENT_AUTH = web.AppKey("client_authenticator", ClientAuthenticator)


_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
#: what `web.json_response` would write, with the no-store fields (`_encoded`)
_JSON_NO_STORE = {"Content-Type": "application/json; charset=utf-8", **_NO_STORE}


def _json(body: dict[str, object], status: int = 200) -> web.Response:
    return web.json_response(body, status=status, headers=_NO_STORE)


def _encoded(body: bytes) -> web.Response:
    """A 200 of JSON encoded beforehand (`_json`'s answer, byte for byte)."""
    return web.Response(body=body, headers=_JSON_NO_STORE)


async def _ip_limit(request: web.Request) -> None:
    # before any costly client authentication
    pending = ip_limit_now(request, client_address(request), "oauth_ip")
    if pending is not None:
        await pending


async def token(request: web.Request) -> web.Response:
    await _ip_limit(request)
    form = await read_form(request)
    client = await request.app[CLIENT_AUTH].authenticate(
        request.headers.get("Authorization"), form)
    jkt, nonce = await _dpop_key(request, client)
    resp = _json(await request.app[TOKENS].token(client, form, jkt))
    if nonce is not None:
        resp.headers["DPoP-Nonce"] = nonce
    return resp


async def _dpop_key(request: web.Request, client: Client) -> tuple[str | None, str | None]:
    """RFC 9449 §5: the key the tokens are bound to (None: bearer), and the server nonce to
    hand out. A proof here must carry our current nonce (§8); the first answer is
    `use_dpop_nonce` with `DPoP-Nonce`, which certified clients retry with by themselves."""
    jkt, nonce = await dpop_proof_key(request, "/oauth2/token", require_nonce=True,
                                      bound=client.dpop_bound_access_tokens)
    if jkt is None and nonce is not None and client.dpop_bound_access_tokens:
        raise OAuthError("invalid_dpop_proof", "This client's tokens must be DPoP-bound",
                         headers={"DPoP-Nonce": nonce})
    return jkt, (nonce if jkt is not None else None)


async def dpop_proof_key(request: web.Request, path: str, *, require_nonce: bool,
                         bound: bool = True) -> tuple[str | None, str | None]:
    """The thumbprint of the request's one DPoP proof for POST `path` (None: no proof) and
    the server nonce to send back (None: DPoP is off). A bad proof is the RFC 9449 §12.2
    error, with a fresh `DPoP-Nonce`. `bound=False` (a bearer client): with no proof there is
    no nonce to compute either (issue 13)."""
    verifier = request.app.get(DPOP)
    if verifier is None:
        return None, None
    proofs = request.headers.getall("DPoP", [])
    if not proofs and not bound:
        return None, None
    nonce = verifier.nonce()
    headers = {"DPoP-Nonce": nonce}
    if len(proofs) > 1:
        raise OAuthError("invalid_dpop_proof", "Send one DPoP proof", headers=headers)
    if not proofs:
        return None, nonce
    try:
        jkt = await verifier.verify(proofs[0], method="POST", url=verifier.issuer + path,
                                    require_nonce=require_nonce)
    except DpopError as exc:
        raise OAuthError(exc.error, exc.description, headers=headers) from None
    return jkt, nonce


async def _token_request(request: web.Request) -> tuple[Client, str, str | None]:
    """RFC 7009 §2.1 / RFC 7662 §2.1: an authenticated client names a `token` (and maybe a
    `token_type_hint`)."""
    await _ip_limit(request)
    form = await read_form(request)
    client = await request.app[CLIENT_AUTH].authenticate(
        request.headers.get("Authorization"), form)
    value = form.get("token")
    if not value:
        raise OAuthError("invalid_request", "token is required")
    return client, value, form.get("token_type_hint")


async def revoke(request: web.Request) -> web.Response:
    """RFC 7009 §2.2: 200 whether or not the token was valid; only its own client may revoke."""
    client, value, hint = await _token_request(request)
    for hook in request.app.get(REVOCATION_HOOKS, []):
        if await hook(client, value, hint):
            return _json({})
    authn = request.app[AUTHENTICATOR]
    try:
        claims = await authn.verify(value)
    except TokenInvalid:
        return _json({})
    if claims.client_id == client.client_id:
        await authn.revoke(claims)
    return _json({})


async def introspect(request: web.Request) -> web.Response:
    """RFC 7662: active + metadata for the caller's own tokens (and gates' scenes)."""
    client, value, hint = await _token_request(request)
    if client.is_public:
        # RFC 7662 §2.1: the endpoint requires authorization; a public client has none
        # to give (discovery lists no `none` for introspection)
        raise invalid_client("public client at introspection")
    for hook in request.app.get(INTROSPECTION_HOOKS, []):
        answer = await hook(client, value, hint)
        if answer is not None:
            return _json(answer)
    try:
        # the signature checked once per token, the revocation read on every call
        claims = await request.app[AUTHENTICATOR].live(value)
    except TokenInvalid:
        return _json({"active": False})
    if claims.client_id != client.client_id:
        # RFC 7662 §2.2: do not disclose tokens of other clients.
        return _json({"active": False})
    answers = request.app[INTROSPECTION_ANSWERS]
    body = answers.get(claims.jti)
    if body is None:
        body = _active_body(claims, request.app[TOKENS_ISSUER])
        if len(answers) >= ANSWERS_SIZE:
            del answers[next(iter(answers))]  # oldest first
        answers[claims.jti] = body
    return _encoded(body)


def _active_body(claims: AccessTokenClaims, issuer: str) -> bytes:
    """RFC 7662 §2.2 for an active access token: fixed by its claims, so encoded once per
    token (`INTROSPECTION_ANSWERS`); whether it is still active is decided per call."""
    body: dict[str, object] = {
        "active": True, "client_id": claims.client_id, "scope": " ".join(sorted(claims.scopes)),
        "sub": claims.sub, "exp": claims.exp, "iat": claims.iat, "jti": claims.jti,
        "token_type": "Bearer", "iss": issuer, "aud": issuer,
    }
    if claims.scene:
        body["scene"] = claims.scene
    return json.dumps(body).encode()


#: (client, token, token_type_hint) -> True when the hook handled the token (RFC 7009).
RevocationHook = Callable[[Client, str, str | None], Awaitable[bool]]
#: (client, token, token_type_hint) -> the RFC 7662 answer, or None to fall through.
IntrospectionHook = Callable[[Client, str, str | None], Awaitable[dict[str, Any] | None]]
REVOCATION_HOOKS = web.AppKey("revocation_hooks", list[RevocationHook])
INTROSPECTION_HOOKS = web.AppKey("introspection_hooks", list[IntrospectionHook])
TOKENS_ISSUER = web.AppKey("tokens_issuer", str)
#: jti -> the encoded answer of an active token (`_active_body`), at most ANSWERS_SIZE
INTROSPECTION_ANSWERS = web.AppKey("introspection_answers", dict[str, bytes])
ANSWERS_SIZE = 10_000


def add_routes(app: web.Application) -> None:
    app.router.add_post("/oauth2/token", token)
    app.router.add_post("/oauth2/revoke", revoke)
    app.router.add_post("/oauth2/introspect", introspect)
    app[INTROSPECTION_ANSWERS] = {}
