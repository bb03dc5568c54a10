"""POST /v1/gates/offline-scans (CONTRACT "Offline gates"): an offline gate uploads its
journal; the use case is gateway/services/offline.py. Gate token, scope `codes:verify`.

The body may be larger than the app's default limit (1,000 scans): up to `MAX_BODY_BYTES`;
more scans than 1,000, or a larger body, is 413 `payload_too_large`.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from gateway.errors import InvalidRequest
from gateway.services.offline import OfflineUploads, results_body
from gateway.web.http import ROUTE_BODY_LIMITS, no_store_json, principal, read_json

__all__ = ["OFFLINE", "add_routes"]

OFFLINE: Final = web.AppKey("offline_uploads", OfflineUploads)
#: 1,000 scans of at most ~1.5 KiB each (code ≤ 1 KiB, request id, time, decision)
MAX_BODY_BYTES: Final = 2 * 1024 * 1024


async def upload(request: web.Request) -> web.StreamResponse:
    gate = await principal(request, kinds=("gate",), scope="codes:verify")
    body = await read_json(request, limit=MAX_BODY_BYTES)
    if "scans" not in body:
        raise InvalidRequest("scans is required")
    results = await request.app[OFFLINE].upload(gate, body["scans"])
    return no_store_json(results_body(results))


PATH: Final = "/v1/gates/offline-scans"


def add_routes(app: web.Application) -> None:
    app.router.add_post(PATH, upload)
    limits = app.get(ROUTE_BODY_LIMITS)
    if limits is None:
        limits = app[ROUTE_BODY_LIMITS] = {}
    limits[PATH] = MAX_BODY_BYTES
