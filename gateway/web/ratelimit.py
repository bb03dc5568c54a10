"""Rate limits and overload shedding at the HTTP edge (docs/rate-limits.md,
docs/performance.md): the web side only — applying a limiter's decision to a request and
shedding past the in-flight caps.

* **Per caller, after authentication**: `principal()` (gateway/web/http.py) calls `limit_now`
  once the bearer token is verified — one limiter hit per request; which allowance a caller
  spends is `gateway.services.ratelimits.caller_subject`. Per-IP limits before
  authentication (login pages, the token endpoint): `enforce_ip_limit`.
* **Limits and caps** are settings (`Settings.rate_limits`, from GATEWAY_RATELIMIT_<KIND>,
  GATEWAY_RATELIMIT_ENABLED / _LEASE, GATEWAY_MAX_INFLIGHT / _OTHER; docs/configuration.md).
* **Limiter**: built by the composition root — `MemoryRateLimiter` without Redis; with Redis
  `gateway.adapters.redis_ratelimit.RedisRateLimiter` (the GCRA script by EVALSHA through the
  Coalescer), for gate and rp limits behind `gateway.ratelimit.leasing.LeasingRateLimiter`.
* **Answer**: 429 problem+json `rate_limited` with `Retry-After` and the RateLimit header
  fields (draft-ietf-httpapi-ratelimit-headers); allowed answers carry the RateLimit fields too.
* **Overload**: at most `max_inflight` requests (default 256, 0 = unlimited) run at once
  per worker, of which requests outside the gates' paths at most `max_inflight_other`
  (default a quarter; issue 12), and a request counts only once its body has arrived; beyond
  that a request is answered at once with 503 `unavailable` and `Retry-After: 1`, so latency
  stays bounded instead of growing with the queue. Probes (/healthz, /readyz, /metrics) are
  never shed.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from gateway.authz.tokens import AccessTokenClaims
from gateway.errors import RateLimited
from gateway.ratelimit import Limit, RateLimiter, rate_limit_headers
from gateway.ratelimit.gcra import Decision
from gateway.services.ratelimits import caller_subject, ip_subject, user_code_subject
from gateway.settings import RateLimitConfig

RL_HEADERS = web.RequestKey("rate_limit_headers", dict)


# ---------------------------------------------------------------- per-caller limits

@dataclass
class CallerLimits:
    """What a limiter hit needs, in one app entry (one lookup per request on the gate path
    instead of four). `take` spends a leased cell without awaiting (LeasingRateLimiter)."""

    limiter: RateLimiter
    config: RateLimitConfig
    subject_key: bytes
    take: Callable[[str, Limit], Decision | None] | None = None


CALLER_LIMITS = web.AppKey("caller_limits", CallerLimits)


def _apply(request: web.Request, decision: Decision, kind: str) -> None:
    headers = rate_limit_headers(decision, kind)
    if not decision.allowed:
        raise RateLimited(int(headers["Retry-After"]),
                          "Too many requests from this caller; retry after the indicated time",
                          headers=headers)
    request[RL_HEADERS] = headers


async def _spend(request: web.Request, lim: CallerLimits, kind: str, subject: str) -> None:
    _apply(request, await lim.limiter.hit(subject, lim.config.limits[kind]), kind)


def _hit_now(request: web.Request, lim: CallerLimits, kind: str,
             subject: str) -> Awaitable[None] | None:
    """One hit decided at once from this worker's leased cell (None: nothing to await), else
    the awaitable that asks the shared limiter."""
    if lim.take is not None:
        decision = lim.take(subject, lim.config.limits[kind])
        if decision is not None:
            _apply(request, decision, kind)
            return None
    return _spend(request, lim, kind, subject)


async def enforce_ip_limit(request: web.Request, address: str, kind: str) -> None:
    """Per client IP (`services.ratelimits.ip_subject`), before authentication; `address` is
    the client's (`web.http.client_address`: behind trusted proxies, X-Forwarded-For)."""
    pending = ip_limit_now(request, address, kind)
    if pending is not None:
        await pending


def ip_limit_now(request: web.Request, address: str, kind: str) -> Awaitable[None] | None:
    """`enforce_ip_limit` decided at once from a leased cell when this worker holds one (None
    returned: nothing to await; the OAuth endpoints skip a coroutine per request this way),
    else the awaitable that asks the shared limiter."""
    lim = request.app.get(CALLER_LIMITS)
    if lim is None:
        return None
    return _hit_now(request, lim, kind, ip_subject(kind, address))


async def enforce_user_code_limit(request: web.Request, claims: AccessTokenClaims) -> None:
    """One `user_code` hit for a resident entering a device grant's user code."""
    lim = request.app.get(CALLER_LIMITS)
    if lim is None:
        return
    await _spend(request, lim, "user_code", user_code_subject(claims, lim.subject_key))


def limit_now(request: web.Request, claims: AccessTokenClaims,
              scope: str | None = None) -> Awaitable[None] | None:
    """One limiter hit for an authenticated caller. With a leased cell in this worker it is
    decided at once and None is returned; otherwise the awaitable that asks the shared limiter
    is (the gate path skips a coroutine per request this way). Raises RateLimited (429) when
    over; a no-op when the app has no limiter (rate limits disabled or not installed)."""
    lim = request.app.get(CALLER_LIMITS)
    if lim is None:
        return None
    kind, subject = caller_subject(claims, scope, lim.subject_key, lim.config.limits)
    return _hit_now(request, lim, kind, subject)


async def enforce_rate_limit(request: web.Request, claims: AccessTokenClaims,
                             scope: str | None = None) -> None:
    """`limit_now`, awaited."""
    pending = limit_now(request, claims, scope)
    if pending is not None:
        await pending


# ---------------------------------------------------------------- overload shedding

NEVER_SHED = frozenset({"/healthz", "/readyz", "/metrics"})
#: The gates' paths (issue 12): every other request — most of them unauthenticated until
#: their handler has looked — counts against its own smaller share of `max_inflight`, so no
#: mix of them can take the gates' capacity.
GATE_PATHS = frozenset({"/v1/codes/verify", "/v1/cards/verify", "/v1/gates/offline-scans"})


class LoadShedder:
    """Counts the requests in flight in this worker; past `max_inflight`, answers 503. The
    requests outside GATE_PATHS have a share of their own, `max_other` (a quarter by default),
    within the same total."""

    def __init__(self, max_inflight: int, registry: CollectorRegistry | None,
                 max_other: int | None = None) -> None:
        self.max_inflight = max_inflight
        self.max_other = max(1, max_inflight // 4) if max_other is None else max_other
        self.inflight = 0
        self.other_inflight = 0
        self.shed = (Counter("gateway_shed_total", "Requests shed (503) at max in-flight",
                             registry=registry) if registry is not None else None)

    def admit(self, path: str) -> bool:
        """Count one request in, or False (shed it) when its share is full."""
        if self.inflight >= self.max_inflight:
            return False
        if path not in GATE_PATHS:
            if self.other_inflight >= self.max_other:
                return False
            self.other_inflight += 1
        self.inflight += 1
        return True

    def release(self, path: str) -> None:
        self.inflight -= 1
        if path not in GATE_PATHS:
            self.other_inflight -= 1


SHEDDER = web.AppKey("load_shedder", LoadShedder)


def install_shedder(app: web.Application, config: RateLimitConfig,
                    registry: CollectorRegistry | None = None) -> LoadShedder:
    """The load shedder the edge middleware counts requests in flight against."""
    shedder = app[SHEDDER] = LoadShedder(config.max_inflight, registry, config.max_other)
    return shedder


def shed_response(shedder: LoadShedder, rid: str) -> web.Response:
    """503 `unavailable` for a request past max in-flight (the edge middleware, which counts
    requests in flight, answers with it; gateway/web/http.py)."""
    if shedder.shed is not None:
        shedder.shed.inc()
    body = {"type": "https://gateway.example/problems/unavailable",
            "title": "Temporarily unavailable", "status": 503, "code": "unavailable",
            "detail": "The gateway is at capacity; retry shortly", "request_id": rid}
    return web.Response(status=503, text=json.dumps(body), content_type="application/problem+json",
                        headers={"Retry-After": "1", "Cache-Control": "no-store"})
