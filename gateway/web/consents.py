"""Consent-based certificate lookup over HTTP (CONTRACT.md "Consent-based certificate lookup";
docs/consents.md). Handlers parse, authenticate, call one use case, render. A refusal is RFC
9457 problem+json with the contract's stable `code` and a stable `reason` extension member.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from aiohttp import web

from gateway.errors import InvalidRequest, NotFound
from gateway.services.consents import ConsentService, Refusal, person_of
from gateway.timefmt import rfc3339
from gateway.web.http import REQUEST_ID, no_store, principal, problem, read_json, require_str

CONSENTS = web.AppKey("consents", ConsentService)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _refusals(handler: Handler) -> Handler:
    @wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            resp = await handler(request)
        except Refusal as exc:
            resp = problem(exc.status, exc.code, exc.title, exc.detail, request[REQUEST_ID],
                           exc.headers, reason=exc.reason)
        return no_store(resp)
    return wrapped


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=_dumps)


def _dumps(obj: Any) -> str:
    import json

    return json.dumps(obj, ensure_ascii=False)


async def _resident(request: web.Request, scope: str) -> tuple[str, Any]:
    claims = await principal(request, kinds=("resident",), scope=scope)
    svc = request.app[CONSENTS]
    return person_of(svc.keys, claims.sealed_person, claims.client_id), claims


@_refusals
async def create_consent(request: web.Request) -> web.StreamResponse:
    claims = await principal(request, kinds=("rp",), scope="consents:request")
    body = await read_json(request)
    svc = request.app[CONSENTS]
    client = await svc.clients.get(claims.client_id)
    if client is None or client.disabled:
        raise NotFound("No such client")
    consent, code = await svc.request(client, body)
    return _json({"consent_id": consent.id, "status": consent.status, "approval_code": code,
                  "approve_by": rfc3339(consent.approve_by),
                  "expires_at": rfc3339(consent.expires_at)},
                 status=201)


@_refusals
async def get_consent(request: web.Request) -> web.StreamResponse:
    claims = await principal(request, kinds=("rp",), scope="consents:request")
    svc = request.app[CONSENTS]
    return _json(await svc.status_for_rp(claims.client_id, request.match_info["id"]))


@_refusals
async def query_certificates(request: web.Request) -> web.StreamResponse:
    claims = await principal(request, kinds=("rp",), scope="certificates:read")
    body = await read_json(request)
    consent_id = require_str(body, "consent_id", 128)
    types = body.get("certificate_types")
    if types is not None and (not isinstance(types, list) or not types or len(types) > 16
                              or not all(isinstance(t, str) and t for t in types)):
        raise InvalidRequest("certificate_types must be a non-empty list of strings")
    svc = request.app[CONSENTS]
    certs = await svc.query(claims.client_id, str(consent_id), types)
    return _json({"consent_id": consent_id, "certificates": certs})


@_refusals
async def my_consents(request: web.Request) -> web.StreamResponse:
    person, _ = await _resident(request, "me")
    return _json({"consents": await request.app[CONSENTS].list_for_person(person)})


@_refusals
async def scan(request: web.Request) -> web.StreamResponse:
    person, _ = await _resident(request, "consents:decide")
    body = await read_json(request)
    code = require_str(body, "approval_code", 32)
    return _json(await request.app[CONSENTS].scan(person, str(code)))


@_refusals
async def approve(request: web.Request) -> web.StreamResponse:
    person, claims = await _resident(request, "consents:decide")
    return _json(await request.app[CONSENTS].approve(
        person, request.match_info["id"], claims.client_id, claims.sub))


@_refusals
async def reject(request: web.Request) -> web.StreamResponse:
    person, _ = await _resident(request, "consents:decide")
    return _json(await request.app[CONSENTS].reject(person, request.match_info["id"]))


@_refusals
async def revoke(request: web.Request) -> web.StreamResponse:
    person, _ = await _resident(request, "consents:decide")
    return _json(await request.app[CONSENTS].revoke(person, request.match_info["id"]))


@_refusals
async def access_log(request: web.Request) -> web.StreamResponse:
    person, _ = await _resident(request, "me")
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise InvalidRequest("limit must be an integer") from None
    if not 1 <= limit <= 500:
        raise InvalidRequest("limit must be 1..500")
    return _json({"entries": await request.app[CONSENTS].access_log(person, limit)})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/consents", create_consent)
    r.add_get("/v1/consents/{id}", get_consent)
    r.add_post("/v1/certificates/query", query_certificates)
    r.add_get("/v1/me/consents", my_consents)
    r.add_post("/v1/me/consents/scan", scan)
    r.add_post("/v1/me/consents/{id}/approve", approve)
    r.add_post("/v1/me/consents/{id}/reject", reject)
    # `{id}` never matches `scan` (its methods would be merged into OPTIONS .../scan's Allow)
    r.add_delete("/v1/me/consents/{id:(?!scan$)[^/]+}", revoke)
    r.add_get("/v1/me/access-log", access_log)
