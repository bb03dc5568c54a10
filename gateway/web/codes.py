"""Code endpoints (CONTRACT "Codes", "Meta"): POST /v1/codes, GET /v1/trust-list,
GET /v1/scenes. (POST /v1/codes/verify is the gate's: gateway/web/gate.py.)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Final

import structlog
from aiohttp import web

from gateway.errors import InvalidRequest, NotAcceptable
from gateway.qr import render_png, render_svg
from gateway.services.codes import CodeService
from gateway.services.scenes import SceneCatalogue
from gateway.services.trustlist import EsscKeyRefresh
from gateway.tasks import background
from gateway.web.http import no_store, principal, read_json, require_str

__all__ = ["CODES", "SCENES", "add_routes", "codes_ctx"]

log = structlog.get_logger("gateway.codes")

CODES: Final = web.AppKey("codes", CodeService)
#: the gate path's e-SSC refresh on an unknown key id (docs/upstreams.md)
ESSC_KEY_REFRESH: Final = web.AppKey("essc_key_refresh", EsscKeyRefresh)
#: set once the periodic refresher has read the platform's keys the first time
ESSC_KEYS_FETCHED: Final = web.AppKey("essc_keys_fetched", asyncio.Event)
SCENES: Final = web.AppKey("scenes", SceneCatalogue)

TRUST_LIST_MAX_AGE_S: Final = 300
SCENES_MAX_AGE_S: Final = 300


_OFFERED = ("application/json", "image/png", "image/svg+xml")  # in order of preference


def _accept(request: web.Request) -> str:
    """The answer's media type by RFC 9110 §12.5.1 content negotiation: the offered type with
    the highest q-value (q=0 means "not this"), ties broken by our preference (JSON first);
    wildcards match. No Accept header means JSON."""
    accept = request.headers.get("Accept", "").strip()
    if not accept:
        return "application/json"
    # per offered type: the q of the most specific range that matches it (RFC 9110 §12.5.1:
    # "text/html" beats "text/*" beats "*/*", whatever their order)
    q_of: dict[str, tuple[int, float]] = {}
    for part in accept.split(",")[:32]:
        media, *params = [x.strip() for x in part.split(";")]
        media = media.lower()
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(1.0, max(0.0, float(value)))
                except ValueError:
                    q = 0.0
        for offered in _OFFERED:
            specificity = (2 if media == offered else
                           1 if media == offered.split("/")[0] + "/*" else
                           0 if media == "*/*" else -1)
            if specificity >= 0 and specificity >= q_of.get(offered, (-1, 0.0))[0]:
                q_of[offered] = (specificity, q)
    ranked = [(q, -rank, offered) for rank, offered in enumerate(_OFFERED)
              if (q := q_of.get(offered, (0, 0.0))[1]) > 0]
    if not ranked:
        raise NotAcceptable("Ask for application/json, image/png or image/svg+xml")
    return max(ranked)[2]


async def issue(request: web.Request) -> web.StreamResponse:
    claims = await principal(request, kinds=("resident",), scope="codes:issue")
    service = request.app[CODES]
    person_id = service.person_of(claims)
    face = "ykm"
    region: str | None = None
    if request.can_read_body:
        body = await read_json(request)
        face = require_str(body, "face", 16, required=False) or "ykm"
        region = require_str(body, "region", 8, required=False)
        if face not in ("ykm", "essc"):
            raise InvalidRequest("face must be ykm or essc")
    kind = _accept(request)
    issued = await service.issue_code(person_id, face, claims.client_id, region)
    if kind == "image/png":
        resp = web.Response(status=201, body=render_png(issued.code), content_type="image/png")
    elif kind == "image/svg+xml":
        resp = web.Response(status=201, body=render_svg(issued.code),
                            content_type="image/svg+xml")
    else:
        resp = web.json_response(issued.to_json(), status=201)
    resp.headers["Vary"] = "Accept"
    no_store(resp)
    return resp


async def trust_list(request: web.Request) -> web.StreamResponse:
    snap = request.app[CODES].trust.snapshot()
    headers = {"ETag": snap.etag,
               "Cache-Control": f"public, max-age={TRUST_LIST_MAX_AGE_S}"}
    inm = request.headers.get("If-None-Match")
    if inm is not None and (inm.strip() == "*" or snap.etag in
                            [t.strip() for t in inm.split(",")]):
        return web.Response(status=304, headers=headers)
    return web.Response(body=snap.body, content_type="application/json", headers=headers)


async def scenes(request: web.Request) -> web.StreamResponse:
    body = json.dumps(request.app[SCENES].to_json(), ensure_ascii=False)
    return web.Response(text=body, content_type="application/json",
                        headers={"Cache-Control": f"public, max-age={SCENES_MAX_AGE_S}"})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/codes", issue)
    app.router.add_get("/v1/trust-list", trust_list)
    app.router.add_get("/v1/scenes", scenes)


ESSC_KEYS_REFRESH_S: Final = 60.0
ESSC_KEYS_RETRY_S: Final = 1.0


async def codes_ctx(app: web.Application) -> AsyncIterator[None]:
    """Keeps the trust list's e-SSC platform keys fresh (start-up, then every minute); a
    failed fetch keeps the keys already held (the platform publishes keys ahead of use).
    Until the first fetch succeeds it is retried every second, not every minute: e-SSC
    codes are `unknown_issuer` meanwhile."""
    service = app[CODES]
    first = app[ESSC_KEYS_FETCHED] = asyncio.Event()

    async def refresh() -> None:
        fetched = False
        while True:
            try:
                n = await service.refresh_essc_keys()
                fetched = True
                first.set()
                log.debug("trust_list.essc_keys", keys=n)
            except Exception as exc:  # noqa: BLE001 - keep the keys we have, retry later
                log.warning("trust_list.essc_keys_failed", error=type(exc).__name__)
            await asyncio.sleep(ESSC_KEYS_REFRESH_S if fetched else ESSC_KEYS_RETRY_S)

    try:
        async with background(refresh()):
            yield
    finally:
        if ESSC_KEY_REFRESH in app:
            await app[ESSC_KEY_REFRESH].close()
