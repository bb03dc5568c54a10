"""The connection edge (issue 12): what happens to a TCP connection before and around its
requests, so that no stranger can hold the gates' worker with connections alone.

aiohttp's own server has an idle keep-alive timer but no header or body read timeout, no
per-address connection cap, and answers a malformed request itself: a text/plain 400 that
echoes the parser's message (the offending header line, a bearer token with it), with
``Server: Python/3.x aiohttp/3.x``, logged through the stdlib logger outside the redacting
JSON one. `EdgeRunner` is an `AppRunner` whose connections are `EdgeProtocol`s:

* **header timeout** (`GATEWAY_HEADER_TIMEOUT_MS`): a request's header block must be complete
  within it, counted from the connection's start or the first byte after the previous
  request (a slowloris client trickling header bytes is cut off);
* **idle keep-alive** (`GATEWAY_KEEPALIVE_TIMEOUT_S`): aiohttp's own timer, with a short
  default instead of its hour;
* **body timeout** (`GATEWAY_BODY_TIMEOUT_MS`): the edge middleware waits for a body before
  the request counts as in flight (gateway/web/http.py `_await_body`);
* **connections per client address** (`GATEWAY_MAX_CONNECTIONS_PER_IP`, per worker): past the
  cap a new connection is closed at once; connections from `GATEWAY_TRUSTED_PROXIES` are not
  counted (they carry many clients; `client_address` reads X-Forwarded-For behind them);
* **protocol errors** (a malformed request line or header, a bad chunk): answered with the
  gateway's problem+json and edge headers, logged as ``http.protocol_error`` with the error's
  class only — never the parser's message, which quotes the request's bytes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server
from prometheus_client import CollectorRegistry, Counter

from gateway.web.http import (
    BODY_TIMEOUT,
    TRUSTED_PROXIES,
    Proxies,
    finish_edge_headers,
    next_request_id,
    problem,
)

__all__ = ["ConnectionGuard", "EdgeRunner", "edge_runner"]

log = structlog.get_logger("gateway.edge")

class ConnectionGuard:
    """Per worker: open connections per client address, the timeouts, the counters."""

    def __init__(self, *, max_per_ip: int, header_timeout_s: float, proxies: Proxies,
                 registry: CollectorRegistry | None = None) -> None:
        self.max_per_ip = max_per_ip
        self.header_timeout_s = header_timeout_s
        self.proxies = proxies
        self.open: dict[str, int] = {}
        self.refused = self.timeouts = self.protocol_errors = None
        if registry is not None:
            self.refused = Counter("gateway_edge_connections_refused",
                                   "Connections closed at once: their address is at its cap",
                                   registry=registry)
            self.timeouts = Counter("gateway_edge_header_timeouts",
                                    "Connections closed: a header block did not arrive in time",
                                    registry=registry)
            self.protocol_errors = Counter("gateway_edge_protocol_errors",
                                           "Malformed requests answered by the edge",
                                           registry=registry)

    def admit(self, address: str) -> bool:
        if self.max_per_ip <= 0 or self.proxies.trusts(address):
            return True
        n = self.open.get(address, 0)
        if n >= self.max_per_ip:
            if self.refused is not None:
                self.refused.inc()
            return False
        self.open[address] = n + 1
        return True

    def release(self, address: str) -> None:
        n = self.open.get(address, 0) - 1
        if n > 0:
            self.open[address] = n
        else:
            self.open.pop(address, None)


CONNECTION_GUARD = web.AppKey("connection_guard", ConnectionGuard)


class EdgeProtocol(RequestHandler):
    """aiohttp's connection handler with the header timeout, the per-address cap and our own
    answer to protocol errors."""

    def __init__(self, manager: Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._address: str | None = None  # counted against the cap while set
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple | list) and peer else "unix"
        if not self._guard.admit(address):
            self.force_close()
            transport.close()
            return
        self._address = address
        self._arm_header_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._address is not None:
            self._guard.release(self._address)
            self._address = None
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # bytes arriving while the handler waits for a message start a header block
        idle = self._waiter is not None and not self._waiter.done()
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
        elif idle and self._header_timer is None and data:
            self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        self._header_count = self._request_count
        self._header_timer = self._loop.call_later(self._guard.header_timeout_s,
                                                   self._header_timeout)

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self._request_count == self._header_count and not self._force_close:
            if self._guard.timeouts is not None:
                self._guard.timeouts.inc()
            self.force_close()

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse or handle, as ours: problem+json,
        our headers, one redacted log line (the class of the error, never its message)."""
        if self._guard.protocol_errors is not None and status < 500:
            self._guard.protocol_errors.inc()
        log.info("http.protocol_error", status=status,
                 error=type(exc).__name__ if exc is not None else None)
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had begun: no error answer can follow")
        rid = next_request_id()
        if status >= 500:
            resp = problem(status, "internal_error", "Internal error", None, rid)
        else:
            resp = problem(status, "invalid_request", "The request is not valid",
                           "The request is not well-formed HTTP", rid)
        finish_edge_headers(resp, rid)
        resp.force_close()
        return resp

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        log.warning("http.connection_error",
                    error=type(exc).__name__ if isinstance(exc, BaseException) else None)


class EdgeServer(Server):
    def __init__(self, *args: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def __call__(self) -> RequestHandler:
        return EdgeProtocol(self, loop=self._loop, guard=self.guard, **self._kwargs)


class EdgeRunner(web.AppRunner):
    """An AppRunner whose server speaks through `EdgeProtocol` (gateway serve, the tests'
    real-server fixtures)."""

    def __init__(self, app: web.Application, *, guard: ConnectionGuard,
                 body_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._guard = guard
        app[CONNECTION_GUARD] = guard
        app[BODY_TIMEOUT] = body_timeout_s
        app[TRUSTED_PROXIES] = guard.proxies

    async def _make_server(self) -> Server:
        plain = await super()._make_server()
        # the same handler, request factory and keyword arguments, our protocol
        server = EdgeServer(plain.request_handler, request_factory=plain.request_factory,
                            handler_cancellation=plain.handler_cancellation,
                            loop=asyncio.get_running_loop(), guard=self._guard,
                            **plain._kwargs)
        return server


def edge_runner(app: web.Application, settings: Any, **kwargs: Any) -> EdgeRunner:
    """The runner `gateway serve` uses, configured from Settings."""
    from gateway.web.http import REGISTRY

    guard = ConnectionGuard(max_per_ip=settings.max_connections_per_ip,
                            header_timeout_s=settings.header_timeout_s,
                            proxies=Proxies(settings.trusted_proxies),
                            registry=app.get(REGISTRY))
    # lingering: after answering a request whose body was not read whole (a 408, a 413),
    # aiohttp reads and drops the rest for this long before closing (its default, 10 s, let a
    # stalled body hold its connection 10 s past the body timeout)
    return EdgeRunner(app, guard=guard, body_timeout_s=settings.body_timeout_s,
                      keepalive_timeout=settings.keepalive_timeout_s, lingering_time=0.5,
                      **kwargs)
