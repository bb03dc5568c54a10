"""Sandbox-only endpoints (CONTRACT "Sandbox"); registered only when GATEWAY_ENV=sandbox, so in
production these paths answer 404.

GET /sandbox/v1/demo, POST /sandbox/v1/upstream-assertions, POST /sandbox/v1/card-taps.
The demo residents are fictitious (gateway/data/residents.json); their full card numbers are
shown here because testers need them for card taps — sandbox only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, Protocol

from aiohttp import web

from gateway.errors import InvalidRequest, NotFound
from gateway.services.identity import mask_ref
from gateway.services.upstream import Resident, mask_name
from gateway.timefmt import parse_rfc3339
from gateway.web.http import no_store, read_json, require_str

__all__ = ["DEMO", "ESSC", "PSAM", "RESIDENTS", "YKB", "add_routes"]



class _Ykb(Protocol):  # gateway.adapters.sandbox.YkbSandbox
    def issue_assertion(self, resident_id: str) -> str: ...


class _Essc(Protocol):  # gateway.adapters.sandbox.EsscSandbox
    def issue_assertion(self, resident_id: str, region: str) -> str: ...


class _Psam(Protocol):  # gateway.adapters.sandbox.PsamSandbox
    def terminal_mac(self, *, card_no: str, region: str, gate_client_id: str,
                     request_id: str, scanned_at: str) -> str: ...


DemoListing = Callable[[], dict[str, Any]]
RESIDENTS: Final = web.AppKey("sandbox_residents", tuple[Resident, ...])
DEMO: Final[web.AppKey[DemoListing]] = web.AppKey("sandbox_demo")
YKB: Final = web.AppKey("sandbox_ykb", _Ykb)
ESSC: Final = web.AppKey("sandbox_essc", _Essc)
PSAM: Final = web.AppKey("sandbox_psam", _Psam)


def _resident_json(r: Resident) -> dict[str, Any]:
    return {
        "id": r.id, "display_name": r.display_name, "name_masked": mask_name(r.display_name),
        "credentials": {
            "ykm": ({"account_masked": mask_ref(r.ykm_account)} if r.ykm_account else None),
            "essc": [{"region": a.region, "holder_masked": mask_ref(a.holder_id)}
                     for a in r.essc_accounts],
            "ssc_card": [{"card_no": c.card_no, "region": c.region, "status": c.status}
                         for c in r.cards],
        },
        "concession": r.concession,
    }


async def demo(request: web.Request) -> web.StreamResponse:
    body = dict(request.app[DEMO]())
    body["residents"] = [_resident_json(r) for r in request.app[RESIDENTS]]
    return no_store(web.json_response(body))


async def upstream_assertion(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    resident = require_str(body, "resident", 64)
    platform = require_str(body, "platform", 8)
    region = require_str(body, "region", 8, required=False)
    assert resident is not None
    try:
        if platform == "ykb":
            token = request.app[YKB].issue_assertion(resident)
        elif platform == "essc":
            token = request.app[ESSC].issue_assertion(resident, region or "CQ")
        else:
            raise InvalidRequest("platform must be ykb or essc")
    except LookupError:  # UnknownResident
        raise NotFound("No such demo resident or credential") from None
    return no_store(web.json_response({"assertion": token, "platform": platform,
                                       "region": region if platform == "essc" else None},
                                      status=201))


async def card_tap(request: web.Request) -> web.StreamResponse:
    body = await read_json(request)
    card_no = require_str(body, "card_no", 64)
    gate = require_str(body, "gate_client_id", 128)
    request_id = require_str(body, "request_id", 128)
    scanned_at = require_str(body, "scanned_at", 64)
    assert card_no is not None and gate is not None
    assert request_id is not None and scanned_at is not None
    if parse_rfc3339(scanned_at) is None:   # as the gate's /v1/cards/verify will require
        raise InvalidRequest("scanned_at must be an RFC 3339 date-time with an offset")
    region = require_str(body, "region", 8, required=False) or card_no[:2]
    try:
        mac = request.app[PSAM].terminal_mac(card_no=card_no, region=region,
                                             gate_client_id=gate, request_id=request_id,
                                             scanned_at=scanned_at)
    except ValueError:
        raise InvalidRequest("A tap field contains the separator '|'") from None
    return no_store(web.json_response({
        "card_no": card_no, "region": region, "gate_client_id": gate,
        "request_id": request_id, "scanned_at": scanned_at, "terminal_mac": mac}))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/sandbox/v1/demo", demo)
    app.router.add_post("/sandbox/v1/upstream-assertions", upstream_assertion)
    app.router.add_post("/sandbox/v1/card-taps", card_tap)
