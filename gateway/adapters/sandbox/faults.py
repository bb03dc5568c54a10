"""Failure knobs and hit counters for the sandbox upstream apps (tests only).

With ``admin=True`` a sandbox app gets::

    POST   /__fault  {"mode": "error"|"sleep"|"garbage"|"bad_json"|"bad_schema",
                      "delay_s": float, "times": int | null}
    DELETE /__fault
    GET    /__hits   → {"total": n, "by_route": {"GET /accounts/{account_id}": n, …}}

``error`` answers 500, ``sleep`` waits ``delay_s`` then answers normally, ``garbage`` answers
an HTML page, ``bad_json`` a truncated JSON document, ``bad_schema`` well-formed JSON of the
wrong shape. ``times`` limits the fault to the next n requests (``null``: until cleared).
Every request that reaches a platform route is counted, faulted or not, so tests can prove
that an open circuit sends nothing and that non-idempotent requests are not retried.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

__all__ = ["FAULTS_KEY", "Faults", "add_admin_routes", "faults_middleware"]

MODES: Final = frozenset({"error", "sleep", "garbage", "bad_json", "bad_schema"})
ADMIN_PREFIX: Final = "admin:"


@dataclass
class Faults:
    mode: str | None = None
    delay_s: float = 0.0
    remaining: int | None = None
    hits: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.hits.values())

    def set(self, mode: str, delay_s: float = 0.0, times: int | None = None) -> None:
        if mode not in MODES:
            raise ValueError("unknown fault mode")
        self.mode, self.delay_s, self.remaining = mode, delay_s, times

    def clear(self) -> None:
        self.mode, self.delay_s, self.remaining = None, 0.0, None

    def take(self) -> str | None:
        if self.mode is None:
            return None
        mode = self.mode
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining <= 0:
                self.clear()
        return mode


FAULTS_KEY: Final = web.AppKey("sandbox_faults", Faults)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def faults_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route
    name = route.name or ""
    faults = request.config_dict.get(FAULTS_KEY)
    if faults is None or name.startswith(ADMIN_PREFIX) or route.resource is None:
        return await handler(request)
    faults.hits[f"{request.method} {route.resource.canonical}"] += 1
    mode = faults.take()
    if mode == "error":
        return web.json_response({"error": "internal"}, status=500)
    if mode == "sleep":
        await asyncio.sleep(faults.delay_s)
    elif mode == "garbage":
        return web.Response(text="<html><body>502 Bad Gateway</body></html>",
                            content_type="text/html")
    elif mode == "bad_json":
        return web.Response(text='{"keys": [', content_type="application/json")
    elif mode == "bad_schema":
        return web.json_response({"unexpected": True})
    return await handler(request)


async def _set_fault(request: web.Request) -> web.Response:
    doc = await request.json()
    try:
        request.app[FAULTS_KEY].set(doc["mode"], float(doc.get("delay_s", 0.0)),
                                    doc.get("times"))
    except (KeyError, ValueError, TypeError):
        return web.json_response({"error": "invalid_request"}, status=400)
    return web.json_response({"ok": True})


async def _clear_fault(request: web.Request) -> web.Response:
    request.app[FAULTS_KEY].clear()
    return web.json_response({"ok": True})


async def _hits(request: web.Request) -> web.Response:
    f = request.app[FAULTS_KEY]
    return web.json_response({"total": f.total, "by_route": dict(f.hits)})


def add_admin_routes(app: web.Application) -> None:
    app.router.add_post("/__fault", _set_fault, name=ADMIN_PREFIX + "fault-set")
    app.router.add_delete("/__fault", _clear_fault, name=ADMIN_PREFIX + "fault-clear")
    app.router.add_get("/__hits", _hits, name=ADMIN_PREFIX + "hits")
