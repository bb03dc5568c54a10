"""Operator API (admin token from configuration): register, list and disable clients/gates.

Key rotation stays a host command (`gateway keys rotate`): keys live in files on the host.
The admin token is compared in constant time; it is never logged.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable

from aiohttp import web

from gateway.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from gateway.ports import ClientStore
from gateway.services import registry
from gateway.services.identity import IdentityService
from gateway.web.http import read_json

ADMIN_TOKEN: web.AppKey[str] = web.AppKey("admin_token")
CLIENT_STORE: web.AppKey[ClientStore] = web.AppKey("client_store")
NOW: web.AppKey[Callable[[], float]] = web.AppKey("admin_now")
ADMIN_IDENTITY: web.AppKey[IdentityService] = web.AppKey("admin_identity")


def _require_admin(request: web.Request) -> None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() != "bearer ":
        raise Unauthorized("The admin token is required",
                           headers={"WWW-Authenticate": 'Bearer realm="gateway-admin"'})
    expected = request.app.get(ADMIN_TOKEN)
    if not expected or not hmac.compare_digest(header[7:].strip().encode(), expected.encode()):
        raise Forbidden("Not an operator")


require_admin = _require_admin  # for the other operator endpoints (e.g. web/transactions.py)


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




#: 15-digit (old) or 18-character (GB 11643) citizen ID numbers; anything else is refused
#: before it reaches the keyed hash (which works on ASCII).
CITIZEN_ID = re.compile(r"[0-9]{15}|[0-9]{17}[0-9Xx]", re.ASCII)


async def suspend_person(request: web.Request) -> web.Response:
    """Suspend (or reinstate) a person by citizen ID: all their codes and cards deny `revoked`
    on every worker within a second. The ID is looked up by its keyed hash, never stored."""
    _require_admin(request)
    body = await read_json(request)
    citizen_id = body.get("citizen_id")
    suspended = body.get("suspended", True)
    if not isinstance(citizen_id, str) or not CITIZEN_ID.fullmatch(citizen_id) \
            or not isinstance(suspended, bool):
        raise InvalidRequest("citizen_id (string) and suspended (boolean) are required")
    identity = request.app[ADMIN_IDENTITY]
    person = await identity.find_by_citizen_id(citizen_id)
    if person is None:
        raise NotFound("No such person")
    await identity.suspend(person.person_id, suspended)
    return web.json_response({"suspended": suspended})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/admin/v1/persons/suspend", suspend_person)
    app.router.add_get("/admin/v1/clients", list_clients)
    app.router.add_post("/admin/v1/clients", register_client)
    app.router.add_post("/admin/v1/clients/{client_id}/disable", disable_client)
