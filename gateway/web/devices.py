"""Device endpoints (CONTRACT "Device-bound codes", docs/devices.md):

POST /v1/devices/challenge and POST /v1/devices (resident token, scope ``codes:issue``);
GET /v1/me/devices and DELETE /v1/me/devices/{id} (resident token, scope ``me``);
GET /v1/revocations/devices (gate token, ``codes:verify``; signed by the trust-list key,
``ETag``/304, ``?since=`` deltas — the card deny-list's shape, docs/offline.md §5).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Final

import structlog
from aiohttp import web

from gateway.authz.tokens import AccessTokenClaims
from gateway.errors import InvalidRequest
from gateway.services.devices import DeviceService
from gateway.tasks import background
from gateway.web.codes import CODES
from gateway.web.http import no_store, principal, read_json, require_str

__all__ = ["DEVICES", "add_routes", "devices_ctx"]

log = structlog.get_logger("gateway.devices")

DEVICES: Final = web.AppKey("devices", DeviceService)
MAX_VERSION: Final = 2**63 - 1  # docs/openapi.yaml: the `since` parameter's maximum
REFRESH_EVERY_S: Final = 1.0


def _person(request: web.Request, claims: AccessTokenClaims) -> str:
    """The internal person id sealed in the resident token (403 when it carries none)."""
    return request.app[CODES].person_of(claims)


async def challenge(request: web.Request) -> web.StreamResponse:
    claims = await principal(request, kinds=("resident",), scope="codes:issue")
    ch = request.app[DEVICES].challenge(_person(request, claims))
    return no_store(web.json_response({"challenge": ch.challenge, "expires_at": ch.expires_at},
                                      status=201))


async def enrol(request: web.Request) -> web.StreamResponse:
    claims = await principal(request, kinds=("resident",), scope="codes:issue")
    person = _person(request, claims)
    body = await read_json(request)
    alg = require_str(body, "alg", 16)
    public_key = require_str(body, "public_key", 128)
    ch = require_str(body, "challenge", 64)
    proof = require_str(body, "proof", 128)
    assert alg is not None and public_key is not None and ch is not None and proof is not None
    enrolment = await request.app[DEVICES].enrol(person, alg, public_key, ch, proof)
    return no_store(web.json_response(enrolment.to_json(),
                                      status=200 if enrolment.renewed else 201))


async def list_devices(request: web.Request) -> web.StreamResponse:
    claims = await principal(request, kinds=("resident",), scope="me")
    devices = await request.app[DEVICES].list_devices(_person(request, claims))
    return no_store(web.json_response({"devices": devices}))


async def remove_device(request: web.Request) -> web.StreamResponse:
    claims = await principal(request, kinds=("resident",), scope="me")
    await request.app[DEVICES].remove(_person(request, claims), request.match_info["id"])
    return no_store(web.Response(status=204))


async def revocations(request: web.Request) -> web.StreamResponse:
    """The device deny-list for gates (gate token, ``codes:verify``), like the card one."""
    await principal(request, kinds=("gate",), scope="codes:verify")
    raw = request.query.get("since")
    if raw is not None and (not raw.isascii() or not raw.isdigit() or len(raw) > 19
                            or int(raw) > MAX_VERSION):
        raise InvalidRequest("since must be a version number (an integer 0 to 2^63-1)")
    body, etag, _ = await request.app[DEVICES].signed_revocations(
        None if raw is None else int(raw))
    # private: gates may cache it, shared caches may not (it is for authenticated gates)
    headers = {"ETag": etag, "Cache-Control": "private, no-cache", "Vary": "Authorization"}
    inm = request.headers.get("If-None-Match")
    if inm is not None and (inm.strip() == "*" or etag in [t.strip() for t in inm.split(",")]):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/devices/challenge", challenge)
    app.router.add_post("/v1/devices", enrol)
    app.router.add_get("/v1/me/devices", list_devices)
    app.router.add_delete("/v1/me/devices/{id}", remove_device)
    app.router.add_get("/v1/revocations/devices", revocations)


async def devices_ctx(app: web.Application) -> AsyncIterator[None]:
    """Keeps this worker's device revocation view fresh (every second): a device removed on
    another worker is refused here within about a second. Read once before serving; until a
    read succeeds every YK2: code is refused (the view fails closed)."""
    service = app[DEVICES]
    try:
        await service.refresh_revocations()
    except Exception as exc:  # noqa: BLE001 - the poll retries; the view stays closed
        log.warning("device.revocations_load_failed", error=type(exc).__name__)

    async def refresh() -> None:
        while True:
            try:
                await service.refresh_revocations()
            except Exception as exc:  # noqa: BLE001 - keep the view we have, retry
                log.warning("device.revocations_refresh_failed", error=type(exc).__name__)
            await asyncio.sleep(REFRESH_EVERY_S)

    async with background(refresh()):
        yield
