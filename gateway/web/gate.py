"""The gate's endpoints (CONTRACT "Codes"): POST /v1/codes/verify (a scanned 渝快码 or e-SSC
code, scope `codes:verify`) and POST /v1/cards/verify (a physical-card tap, scope
`cards:verify`). Both parse, hand the presentation to the ONE gate decision pipeline
(gateway/services/gate.py) and render its decision; nothing else.

A presentation that fails is a 200 ``deny`` with a reason; 4xx is for a bad request or a caller
not allowed (RFC 9457 problem+json via the edge middleware).
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from gateway.errors import InvalidRequest
from gateway.services.gate import CardTap, GatePipeline, GateScan
from gateway.services.trustlist import KeysBeingFetched
from gateway.timefmt import parse_rfc3339
from gateway.web.http import no_store_json, principal, read_json, require_str

__all__ = ["GATE", "add_routes"]

GATE: Final = web.AppKey("gate", GatePipeline)

#: A code string longer than this is junk (every format is far shorter); it is a `deny`,
#: never parsed. The body limit (settings.max_body_bytes) bounds it anyway.
MAX_CODE_FIELD: Final = 64 * 1024


def _scanned_at(body: dict[str, Any]) -> float | None:
    raw = body.get("scanned_at")
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw) > 64:
        raise InvalidRequest("scanned_at must be an RFC 3339 date-time")
    t = parse_rfc3339(raw)
    if t is None:
        raise InvalidRequest("scanned_at must be an RFC 3339 date-time with a time zone offset")
    return t


async def verify_code(request: web.Request) -> web.StreamResponse:
    gate = await principal(request, kinds=("gate",), scope="codes:verify")
    body = await read_json(request)
    request_id = require_str(body, "request_id", 128)
    scene = require_str(body, "scene", 64)
    assert request_id is not None and scene is not None
    code = body.get("code")
    if code is None:
        raise InvalidRequest("code is required")
    scanned_at = _scanned_at(body)
    if not isinstance(code, str) or len(code) > MAX_CODE_FIELD:
        code = ""  # any non-code value a scanner could send is malformed, not an error
    scan = GateScan(scene, request_id, code, scanned_at)
    try:
        decision = await request.app[GATE].verify(gate, scan)
    except KeysBeingFetched as fetching:  # docs/upstreams.md "Keys not fetched yet"
        if not await fetching.settled():
            raise  # 503 unavailable, Retry-After: 1
        decision = await request.app[GATE].verify(gate, scan)  # judged with the fetched keys
    return no_store_json(decision.to_json_bytes())


async def verify_card(request: web.Request) -> web.StreamResponse:
    gate = await principal(request, kinds=("gate",), scope="cards:verify")
    body = await read_json(request)
    fields: dict[str, Any] = {}
    for name, limit in (("card_no", 64), ("region", 16), ("terminal_mac", 256),
                        ("scene", 64), ("request_id", 128), ("scanned_at", 64)):
        fields[name] = require_str(body, name, limit)
    tap = CardTap(card_no=fields["card_no"], region=fields["region"],
                  terminal_mac=fields["terminal_mac"], scanned_at=fields["scanned_at"])
    decision = await request.app[GATE].verify(gate, GateScan(fields["scene"],
                                                             fields["request_id"], tap))
    return no_store_json(decision.to_json_bytes())


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/codes/verify", verify_code)
    app.router.add_post("/v1/cards/verify", verify_card)
