"""Operator API (admin token from configuration): register, list and disable clients/gates.

Key rotation stays a host command (`gateway keys rotate`): keys live in files on the host.
The admin token is compared in constant time; it is never logged.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from aiohttp import web

from gateway.errors import Forbidden, InvalidRequest, Unauthorized
from gateway.ports import ClientStore
from gateway.services import registry
from gateway.web.http import read_json

ADMIN_TOKEN: web.AppKey[str] = web.AppKey("admin_token")
CLIENT_STORE: web.AppKey[ClientStore] = web.AppKey("client_store")
NOW: web.AppKey[Callable[[], float]] = web.AppKey("admin_now")


def _require_admin(request: web.Request) -> None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() != "bearer ":
        raise Unauthorized("The admin token is required",
                           headers={"WWW-Authenticate": 'Bearer realm="gateway-admin"'})
    expected = request.app.get(ADMIN_TOKEN)
    if not expected or not hmac.compare_digest(header[7:].strip().encode(), expected.encode()):
        raise Forbidden("Not an operator")


async def list_clients(request: web.Request) -> web.Response:
    _require_admin(request)
    kind = request.query.get("kind")
    if kind is not None and kind not in ("gate", "app", "rp"):
        raise InvalidRequest("kind must be gate, app or rp")
    clients = await registry.list_clients(request.app[CLIENT_STORE], kind)
    return web.json_response({"clients": [registry.public_view(c) for c in clients]})


async def register_client(request: web.Request) -> web.Response:
    _require_admin(request)
    body = await read_json(request)
    client, secret = await registry.register_client(request.app[CLIENT_STORE], body,
                                                    request.app[NOW])
    out = registry.public_view(client)
    if secret:
        out["client_secret"] = secret  # shown once; only its digest is stored
    return web.json_response(out, status=201, headers={"Cache-Control": "no-store"})


async def disable_client(request: web.Request) -> web.Response:
    _require_admin(request)
    client = await registry.set_disabled(request.app[CLIENT_STORE],
                                         request.match_info["client_id"], True)
    return web.json_response(registry.public_view(client))




def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/v1/clients", list_clients)
    app.router.add_post("/admin/v1/clients", register_client)
    app.router.add_post("/admin/v1/clients/{client_id}/disable", disable_client)
