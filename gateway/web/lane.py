"""The gate lane (issue 7): `POST /v1/codes/verify` without aiohttp's per-request dispatch.

Every request through an `Application` is resolved by the router, gets a fresh match info,
and runs through a middleware chain that aiohttp wraps in a current-app fix-up layer. For the
one route that carries the morning rush (thousands of verifications a second per worker) that
dispatch is a measurable share of the request: this lane skips it and nothing else. It is a
request handler installed on the worker's low-level server *in front of* the Application:

* a `POST` to exactly `/v1/codes/verify` (without `Expect: 100-continue`) gets the route's
  prebuilt, frozen match info (the same route object, the same app) and goes straight to
  the **same** edge middleware (request id, shedding, error rendering, security and RateLimit
  headers, metrics) and the **same** handler as through the router;
* everything else — other paths, other methods (the router's 405), `Expect` — goes to the
  Application unchanged.

`install(runner)` runs after `runner.setup()` and before the site accepts connections (each
connection takes the server's handler when it opens): `gateway serve` and the tests'
gateway fixture both install it, so the suite exercises the lane.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

from gateway.web.http import edge_middleware

__all__ = ["LANE_PATH", "install"]

LANE_PATH = "/v1/codes/verify"

RequestHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def _route_info(app: web.Application, path: str, method: str) -> web.UrlMappingMatchInfo:
    """The frozen match info the router would make for (method, path) — the app's own route."""
    for route in app.router.routes():
        if route.method == method and route.resource is not None and \
                route.resource.canonical == path:
            info = web.UrlMappingMatchInfo({}, route)
            info.add_app(app)
            info.freeze()
            return info
    raise LookupError(f"no {method} route for {path}")


def lane_handler(app: web.Application, inner: RequestHandler) -> RequestHandler:
    """The server's request handler: the gate's verification through the lane, the rest to
    `inner` (the Application's own handler)."""
    info = _route_info(app, LANE_PATH, hdrs.METH_POST)
    handler = info.handler

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if request.path == LANE_PATH and request.method == hdrs.METH_POST and \
                hdrs.EXPECT not in request.headers and isinstance(request, web.Request):
            request._match_info = info  # what Application._handle sets after resolving
            return await edge_middleware(request, handler)
        return await inner(request)

    return handle


def install(runner: web.AppRunner) -> None:
    """Put the lane in front of the runner's Application (after `setup()`, before serving)."""
    server = runner.server
    if server is None:
        raise RuntimeError("install the gate lane after runner.setup()")
    server.request_handler = lane_handler(runner.app, server.request_handler)
