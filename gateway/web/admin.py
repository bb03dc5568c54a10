"""Operator API (`/admin/v1/*`): named operators with roles (admin | auditor | viewer), every
change audited under the operator's name (docs/operators.md).

Clients and gates (register, list, disable), person suspension, the live scene catalogue
(`GET/PUT /admin/v1/scenes/{id}`, revisions, history), the venue registry (点位) with its CSV
import, gate assignment, the audit log and the operators' own list. Statistics and the
dashboard live in gateway/web/stats.py and gateway/web/dashboard.py on the same operator
authentication. Key rotation stays a host command (`gateway keys rotate`, audited there).

A change that does not validate changes nothing and answers 400 `invalid_request` naming the
field (`field`, and `errors` for a CSV: each bad row's number and field).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from gateway.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from gateway.ports import ClientStore
from gateway.services import registry
from gateway.services.identity import IdentityService
from gateway.services.operators import Operator, OperatorAudit, Operators
from gateway.services.ports import SceneStore
from gateway.services.scenes import SceneCatalogue, SceneInvalid, validate_scene
from gateway.services.venues import CsvRefused, VenueIndex, VenueInvalid, VenueRegistry
from gateway.web.http import REQUEST_ID, problem, read_body, read_json

ADMIN_TOKEN: web.AppKey[str] = web.AppKey("admin_token")
CLIENT_STORE: web.AppKey[ClientStore] = web.AppKey("client_store")
NOW: web.AppKey[Callable[[], float]] = web.AppKey("admin_now")
ADMIN_IDENTITY: web.AppKey[IdentityService] = web.AppKey("admin_identity")
#: the audit log (gateway/services/audit.py AuditLog), set by the consents feature
AUDIT_LOG: web.AppKey[Any] = web.AppKey("audit_log")
OPERATORS: web.AppKey[Operators] = web.AppKey("operators")
SCENE_STORE: web.AppKey[SceneStore] = web.AppKey("scene_store")
ADMIN_SCENES: web.AppKey[SceneCatalogue] = web.AppKey("admin_scenes")
VENUES: web.AppKey[VenueRegistry] = web.AppKey("venues")
VENUE_INDEX: web.AppKey[VenueIndex] = web.AppKey("venue_index")
#: applies the store's catalogue on this worker at once (the others follow by polling)
SCENES_RELOAD: web.AppKey[Callable[[], Any]] = web.AppKey("scenes_reload")

MAX_CSV_BYTES = 8 * 1024 * 1024


def bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() != "bearer " or not header[7:].strip():
        raise Unauthorized("An operator token is required",
                           headers={"WWW-Authenticate": 'Bearer realm="gateway-admin"'})
    return header[7:].strip()


async def operator(request: web.Request, permission: str = "read",
                   token: str | None = None) -> Operator:
    """The operator behind the request (Bearer token, or the dashboard's session), checked
    for `permission`. A token that is no operator's, or a disabled operator's, is 403."""
    ops = request.app.get(OPERATORS)
    if ops is None:
        raise Forbidden("No operator can sign in on this server")
    try:
        op = await ops.authenticate(token if token is not None else bearer(request))
    except Unauthorized as exc:
        if "invalid_token" in exc.headers.get("WWW-Authenticate", ""):
            raise Forbidden("Not an operator") from None
        raise
    Operators.require(op, permission)
    return op


async def audit(request: web.Request, op: Operator, action: str, target: str,
                **detail: Any) -> None:
    log = request.app.get(AUDIT_LOG)
    if log is not None:
        await OperatorAudit(log, request.app[NOW]).record(op, action, target, detail=detail)


def invalid(request: web.Request, field: str, message: str,
            errors: list[dict[str, Any]] | None = None) -> web.Response:
    extra: dict[str, Any] = {"field": field}
    if errors is not None:
        extra["errors"] = errors
    return problem(400, "invalid_request", "The request is not valid", f"{field}: {message}"
                   if field else message, request[REQUEST_ID], **extra)


# ------------------------------------------------------------------ clients, gates, persons
async def list_clients(request: web.Request) -> web.Response:
    await operator(request, "read")
    kind = request.query.get("kind")
    if kind is not None and kind not in ("gate", "app", "rp"):
        raise InvalidRequest("kind must be gate, app or rp")
    clients = await registry.list_clients(request.app[CLIENT_STORE], kind)
    index = request.app.get(VENUE_INDEX)
    gates = index.gates if index is not None else {}
    out = []
    for c in clients:
        view = registry.public_view(c)
        if c.kind == "gate":
            view["venue"] = gates[c.client_id][0] if c.client_id in gates else None
        out.append(view)
    return web.json_response({"clients": out})


async def register_client(request: web.Request) -> web.Response:
    op = await operator(request, "write")
    body = await read_json(request)
    venues = request.app.get(VENUES)
    venue_id = body.pop("venue", None)
    if body.get("kind") == "gate" and venues is not None:
        # every gate belongs to a venue (点位) serving its scene: checked before anything is
        # written, so a refused gate leaves no client behind
        if not isinstance(venue_id, str):
            return invalid(request, "venue", "a gate needs the venue it stands in")
        venue = await venues.get(venue_id)
        if venue is None:
            return invalid(request, "venue", f"no venue {venue_id}")
        if venue.scene != body.get("scene"):
            return invalid(request, "venue", f"venue {venue_id} serves {venue.scene}")
    client, secret = await registry.register_client(request.app[CLIENT_STORE], body,
                                                    request.app[NOW])
    out = registry.public_view(client)
    if client.kind == "gate" and venues is not None and isinstance(venue_id, str):
        await venues.assign_gate(client.client_id, client.scene, venue_id)
        await _refresh_index(request)
        out["venue"] = venue_id
    await audit(request, op, f"{'gate' if client.kind == 'gate' else 'client'}.registered",
                f"client:{client.client_id}", kind=client.kind, venue=venue_id)
    if secret:
        out["client_secret"] = secret  # shown once; only its digest is stored
    return web.json_response(out, status=201, headers={"Cache-Control": "no-store"})


async def disable_client(request: web.Request) -> web.Response:
    op = await operator(request, "write")
    client = await registry.set_disabled(request.app[CLIENT_STORE],
                                         request.match_info["client_id"], True)
    await audit(request, op, f"{'gate' if client.kind == 'gate' else 'client'}.disabled",
                f"client:{client.client_id}")
    return web.json_response(registry.public_view(client))


async def assign_gate(request: web.Request) -> web.Response:
    """POST /admin/v1/gates/{client_id}/venue {"venue": id}: move a gate to a venue."""
    op = await operator(request, "write")
    body = await read_json(request)
    gate_id = request.match_info["client_id"]
    client = await request.app[CLIENT_STORE].get(gate_id)
    if client is None or client.kind != "gate":
        raise NotFound("No such gate")
    venue_id = body.get("venue")
    if not isinstance(venue_id, str):
        return invalid(request, "venue", "is required")
    try:
        venue = await request.app[VENUES].assign_gate(gate_id, client.scene, venue_id)
    except VenueInvalid as exc:
        return invalid(request, exc.field, exc.message)
    await _refresh_index(request)
    await audit(request, op, "gate.assigned", f"client:{gate_id}", venue=venue.id)
    return web.json_response({"client_id": gate_id, "venue": venue.id})


#: 15-digit (old) or 18-character (GB 11643) citizen ID numbers; anything else is refused
#: before it reaches the keyed hash (which works on ASCII).
CITIZEN_ID = re.compile(r"[0-9]{15}|[0-9]{17}[0-9Xx]", re.ASCII)


async def suspend_person(request: web.Request) -> web.Response:
    """Suspend (or reinstate) a person by citizen ID: all their codes and cards deny `revoked`
    on every worker within a second. The ID is looked up by its keyed hash, never stored,
    and never written to the audit log (the entry says that a person was suspended)."""
    op = await operator(request, "write")
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
    await audit(request, op, "person.suspended" if suspended else "person.reinstated", "person")
    return web.json_response({"suspended": suspended})


# ------------------------------------------------------------------ scenes
def _scene_etag(revision: int) -> str:
    return f'"{revision}"'


async def list_scenes(request: web.Request) -> web.Response:
    await operator(request, "read")
    return web.json_response(request.app[ADMIN_SCENES].to_json(),
                             dumps=lambda o: json.dumps(o, ensure_ascii=False),
                             headers={"Cache-Control": "no-store"})


async def _stored_scene(request: web.Request, scene_id: str) -> dict[str, Any] | None:
    _, scenes = await request.app[SCENE_STORE].snapshot()
    return next((s for s in scenes if s["id"] == scene_id), None)


async def get_scene(request: web.Request) -> web.Response:
    await operator(request, "read")
    scene = await _stored_scene(request, request.match_info["scene_id"])
    if scene is None:
        raise NotFound("No such scene")
    body = validate_scene(scene).to_json()
    body["revision"] = scene["revision"]
    return web.json_response(body, dumps=lambda o: json.dumps(o, ensure_ascii=False),
                             headers={"ETag": _scene_etag(scene["revision"]),
                                      "Cache-Control": "no-store"})


async def put_scene(request: web.Request) -> web.Response:
    """Create or replace one scene. `If-Match: "<revision>"` (optional) refuses a write over
    a revision the caller has not seen (412); `If-None-Match: *` refuses to replace one."""
    op = await operator(request, "write")
    scene_id = request.match_info["scene_id"]
    body = await read_json(request)
    try:
        scene = validate_scene(body, scene_id=scene_id)
    except SceneInvalid as exc:
        return invalid(request, exc.field, exc.message)
    expected: int | None = None
    if_match = request.headers.get("If-Match")
    if if_match is not None:
        try:
            expected = int(if_match.strip().strip('W/').strip('"'))
        except ValueError:
            return invalid(request, "If-Match", 'must be a revision ETag such as "3"')
    if request.headers.get("If-None-Match", "").strip() == "*":
        expected = 0
    stored_json = scene.to_json()
    stored_json.pop("revision", None)
    stored_json.pop("category", None)  # derived from categories
    result = await request.app[SCENE_STORE].put(
        stored_json, expected, {"updated_by": op.name, "updated_at": request.app[NOW]()})
    if result is None:
        return problem(412, "conflict", "The scene changed since that revision",
                       "Read the scene again and send its ETag in If-Match",
                       request[REQUEST_ID])
    version, stored = result
    await request.app[SCENES_RELOAD]()
    created = stored["revision"] == 1
    await audit(request, op, "scene.created" if created else "scene.updated",
                f"scene:{scene_id}", revision=stored["revision"], catalogue_version=version)
    out = validate_scene(stored).to_json()
    out["revision"] = stored["revision"]
    return web.json_response(out, status=201 if created else 200,
                             dumps=lambda o: json.dumps(o, ensure_ascii=False),
                             headers={"ETag": _scene_etag(stored["revision"]),
                                      "Cache-Control": "no-store"})


async def scene_versions(request: web.Request) -> web.Response:
    await operator(request, "read")
    history = await request.app[SCENE_STORE].history(request.match_info["scene_id"])
    if not history:
        raise NotFound("No such scene")
    return web.json_response({"versions": history},
                             dumps=lambda o: json.dumps(o, ensure_ascii=False))


# ------------------------------------------------------------------ venues
async def _refresh_index(request: web.Request) -> None:
    index = request.app.get(VENUE_INDEX)
    if index is not None:
        await index.refresh(request.app[VENUES].store)


async def list_venues(request: web.Request) -> web.Response:
    await operator(request, "read")
    venues = await request.app[VENUES].list(request.query.get("district"),
                                            request.query.get("scene"))
    gates = await request.app[VENUES].store.gate_venues()
    by_venue: dict[str, list[str]] = {}
    for g, v in sorted(gates.items()):
        by_venue.setdefault(v, []).append(g)
    return web.json_response(
        {"venues": [{**v.to_json(), "gates": by_venue.get(v.id, [])} for v in venues]},
        dumps=lambda o: json.dumps(o, ensure_ascii=False))


async def get_venue(request: web.Request) -> web.Response:
    await operator(request, "read")
    venue = await request.app[VENUES].get(request.match_info["venue_id"])
    if venue is None:
        raise NotFound("No such venue")
    gates = await request.app[VENUES].store.gate_venues()
    return web.json_response({**venue.to_json(),
                              "gates": sorted(g for g, v in gates.items() if v == venue.id)},
                             dumps=lambda o: json.dumps(o, ensure_ascii=False))


async def put_venue(request: web.Request) -> web.Response:
    op = await operator(request, "write")
    body = await read_json(request)
    try:
        venue, created = await request.app[VENUES].put(body, request.match_info["venue_id"])
    except VenueInvalid as exc:
        return invalid(request, exc.field, exc.message)
    await _refresh_index(request)
    await audit(request, op, "venue.created" if created else "venue.updated",
                f"venue:{venue.id}", status=venue.status)
    return web.json_response(venue.to_json(), status=201 if created else 200,
                             dumps=lambda o: json.dumps(o, ensure_ascii=False))


async def import_venues(request: web.Request) -> web.Response:
    """POST /admin/v1/venues/import (text/csv): all rows or none."""
    op = await operator(request, "write")
    if request.content_type not in ("text/csv", "application/csv"):
        return problem(415, "unsupported_media_type", "Unsupported content type",
                       "Send the venue list as text/csv", request[REQUEST_ID])
    raw = await read_body(request, MAX_CSV_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return invalid(request, "body", "the CSV must be UTF-8")
    try:
        report = await request.app[VENUES].import_csv(text)
    except CsvRefused as exc:
        first = exc.errors[0]
        return invalid(request, first.field, f"row {first.row}: {first.message}; "
                       f"{len(exc.errors)} bad row(s), nothing imported",
                       errors=[e.to_json() for e in exc.errors[:1000]])
    await _refresh_index(request)
    await audit(request, op, "venue.imported", "venues", **report.to_json())
    return web.json_response(report.to_json())


# ------------------------------------------------------------------ operators, audit
async def whoami(request: web.Request) -> web.Response:
    op = await operator(request, "read")
    return web.json_response({"name": op.name, "role": op.role})


async def list_operators(request: web.Request) -> web.Response:
    await operator(request, "write")
    return web.json_response({"operators": await request.app[OPERATORS].list()})


async def audit_entries(request: web.Request) -> web.Response:
    """GET /admin/v1/audit?from=SEQ&count=N (auditor, admin)."""
    await operator(request, "audit")
    log = request.app.get(AUDIT_LOG)
    if log is None:
        raise NotFound("No audit log on this server")
    try:
        start = int(request.query.get("from", "0"))
        count = max(1, min(int(request.query.get("count", "100")), 1000))
    except ValueError:
        raise InvalidRequest("from and count must be integers") from None
    if start <= 0:
        head, _ = await log.head()
        start = max(1, head - count + 1)
    return web.json_response({"entries": list(await log.entries(start, count))},
                             dumps=lambda o: json.dumps(o, ensure_ascii=False))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/admin/v1/persons/suspend", suspend_person)
    app.router.add_get("/admin/v1/clients", list_clients)
    app.router.add_post("/admin/v1/clients", register_client)
    app.router.add_post("/admin/v1/clients/{client_id}/disable", disable_client)
    app.router.add_post("/admin/v1/gates/{client_id}/venue", assign_gate)
    app.router.add_get("/admin/v1/scenes", list_scenes)
    app.router.add_get("/admin/v1/scenes/{scene_id}", get_scene)
    app.router.add_put("/admin/v1/scenes/{scene_id}", put_scene)
    app.router.add_get("/admin/v1/scenes/{scene_id}/versions", scene_versions)
    app.router.add_get("/admin/v1/venues", list_venues)
    app.router.add_post("/admin/v1/venues/import", import_venues)
    # `import` is the import's path, never a venue id
    app.router.add_get(r"/admin/v1/venues/{venue_id:(?!import$)[^/]+}", get_venue)
    app.router.add_put(r"/admin/v1/venues/{venue_id:(?!import$)[^/]+}", put_venue)
    app.router.add_get("/admin/v1/me", whoami)
    app.router.add_get("/admin/v1/operators", list_operators)
    app.router.add_get("/admin/v1/audit", audit_entries)
