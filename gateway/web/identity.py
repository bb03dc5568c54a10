"""Identity endpoints (CONTRACT "Identity", "Codes" for the card tap):

GET /v1/me, POST /v1/me/links, DELETE /v1/me/links/{id}, POST /v1/me/cards/{id}/report-loss
(resident token, scope `me`) and POST /v1/cards/verify (gate token, scope `cards:verify`).
"""

from __future__ import annotations

import time
from typing import Any, Final

from aiohttp import web

from gateway.authz.datakeys import SealError
from gateway.authz.tokens import AccessTokenClaims
from gateway.errors import Forbidden, InvalidRequest, Unauthorized
from gateway.ports import ClientStore
from gateway.services.identity import CardTaps, IdentityService, Links, Tap
from gateway.services.scenes import SceneCatalogue
from gateway.web.http import (
    METRICS,
    no_store,
    no_store_json,
    principal,
    read_json,
    require_str,
)

__all__ = ["CARD_TAPS", "IDENTITY", "IDENTITY_CLIENTS", "IDENTITY_SCENES", "LINKS",
           "add_routes"]

IDENTITY: Final = web.AppKey("identity", IdentityService)
LINKS: Final = web.AppKey("identity_links", Links)
CARD_TAPS: Final = web.AppKey("card_taps", CardTaps)
IDENTITY_SCENES: Final = web.AppKey("identity_scenes", SceneCatalogue)
IDENTITY_CLIENTS: Final = web.AppKey("identity_clients", ClientStore)

_SECTOR_TTL_S: Final = 30.0
_sector_cache: dict[tuple[int, str], tuple[float, str | None]] = {}


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


async def _sector(request: web.Request, client_id: str) -> str | None:
    now = time.monotonic()
    key = (id(request.app), client_id)
    hit = _sector_cache.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    client = await request.app[IDENTITY_CLIENTS].get(client_id)
    sector = client.sector if client is not None and not client.disabled else None
    _sector_cache[key] = (now + _SECTOR_TTL_S, sector)
    if len(_sector_cache) > 10_000:
        _sector_cache.clear()
    return sector


async def verify_card(request: web.Request) -> web.StreamResponse:
    gate = await principal(request, kinds=("gate",), scope="cards:verify")
    body = await read_json(request)
    fields: dict[str, Any] = {}
    for name, limit in (("card_no", 64), ("region", 16), ("terminal_mac", 256),
                        ("scene", 64), ("request_id", 128), ("scanned_at", 64)):
        fields[name] = require_str(body, name, limit)
    scene = request.app[IDENTITY_SCENES].get(fields["scene"])
    if scene is None:
        raise InvalidRequest("Unknown scene")
    if gate.scene != fields["scene"]:
        raise Forbidden("This gate is registered for another scene")
    tap = Tap(card_no=fields["card_no"], region=fields["region"],
              terminal_mac=fields["terminal_mac"], request_id=fields["request_id"],
              scanned_at=fields["scanned_at"])
    decision = await request.app[CARD_TAPS].verify(
        tap, scene, gate.client_id, await _sector(request, gate.client_id))
    metrics = request.app.get(METRICS)
    if metrics is not None:
        metrics.decision("ssc_card", decision["decision"], decision["reason"], scene.id,
                         gate.client_id)
    return no_store_json(decision)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/me", get_me)
    app.router.add_post("/v1/me/links", post_link)
    app.router.add_delete("/v1/me/links/{id}", delete_link)
    app.router.add_post("/v1/me/cards/{id}/report-loss", report_loss)
    app.router.add_post("/v1/cards/verify", verify_card)
