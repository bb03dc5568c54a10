"""GET /v1/revocations/cards (CONTRACT "Offline gates"): the signed card deny-list for offline
gates, full or as a delta (``?since=VERSION``), with a strong ``ETag`` and 304.

Gate token with scope ``cards:verify``: the list is for gates (docs/offline.md §5 says why it
is not public although it holds only hashes).
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from gateway.errors import InvalidRequest
from gateway.services.revocations import CARDS, RevocationLists
from gateway.web.http import principal

__all__ = ["REVOCATIONS", "add_routes"]

REVOCATIONS: Final = web.AppKey("revocations", RevocationLists)
_MAX_SINCE: Final = 2**63 - 1  # docs/openapi.yaml: int64


def _since(request: web.Request) -> int | None:
    raw = request.query.get("since")
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) > _MAX_SINCE:
        raise InvalidRequest("since must be a version number (an integer 0 to 2^63-1)")
    return int(raw)


async def card_deny_list(request: web.Request) -> web.StreamResponse:
    await principal(request, kinds=("gate",), scope="cards:verify")
    signed = await request.app[REVOCATIONS].document(CARDS, _since(request))
    # private: gates may cache it, shared caches may not (it is for authenticated gates)
    headers = {"ETag": signed.etag, "Cache-Control": "private, no-cache",
               "Vary": "Authorization"}
    inm = request.headers.get("If-None-Match")
    if inm is not None and (inm.strip() == "*" or signed.etag in
                            [t.strip() for t in inm.split(",")]):
        return web.Response(status=304, headers=headers)
    return web.Response(body=signed.body, content_type="application/json", headers=headers)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/revocations/cards", card_deny_list)
