"""Identity endpoints (CONTRACT "Identity"): GET /v1/me, POST /v1/me/links,
DELETE /v1/me/links/{id}, POST /v1/me/cards/{id}/report-loss (resident token, scope `me`).
(POST /v1/cards/verify is the gate's: gateway/web/gate.py.)
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from gateway.authz.datakeys import SealError
from gateway.authz.tokens import AccessTokenClaims
from gateway.errors import Unauthorized
from gateway.services.identity import IdentityService, Links
from gateway.web.http import (
    no_store,
    principal,
    read_json,
    require_str,
)

__all__ = ["IDENTITY", "LINKS", "add_routes"]

IDENTITY: Final = web.AppKey("identity", IdentityService)
LINKS: Final = web.AppKey("identity_links", Links)


def _person_id(request: web.Request, claims: AccessTokenClaims) -> str:
    if not claims.sealed_person:
        raise Unauthorized("The access token names no resident")
    try:
        return request.app[IDENTITY].keys.open_person_id(claims.sealed_person, claims.client_id)
    except SealError:
        raise Unauthorized("The access token is not valid", debug="sealed person") from None


async def _me(request: web.Request) -> tuple[AccessTokenClaims, str]:
    claims = await principal(request, kinds=("resident",), scope="me")
    return claims, _person_id(request, claims)


async def get_me(request: web.Request) -> web.StreamResponse:
    claims, pid = await _me(request)
    person = await request.app[IDENTITY].require(pid)
    return no_store(web.json_response({
        "subject": claims.sub,
        "name_masked": person.attributes.get("name_masked"),
        "credentials": [c.public() for c in person.credentials]}))


async def post_link(request: web.Request) -> web.StreamResponse:
    _, pid = await _me(request)
    body = await read_json(request)
    assertion = require_str(body, "assertion", 8192)
    assert assertion is not None
    cred = await request.app[LINKS].link(pid, assertion)
    return no_store(web.json_response(cred.public(), status=201))


async def delete_link(request: web.Request) -> web.StreamResponse:
    _, pid = await _me(request)
    await request.app[IDENTITY].unlink(pid, request.match_info["id"])
    return no_store(web.Response(status=204))


async def report_loss(request: web.Request) -> web.StreamResponse:
    _, pid = await _me(request)
    cred = await request.app[IDENTITY].report_loss(pid, request.match_info["id"])
    return no_store(web.json_response(cred.public()))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/me", get_me)
    app.router.add_post("/v1/me/links", post_link)
    app.router.add_delete("/v1/me/links/{id}", delete_link)
    app.router.add_post("/v1/me/cards/{id}/report-loss", report_loss)
