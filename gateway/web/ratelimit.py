"""Rate limits and overload shedding at the HTTP edge (issue 7; docs/rate-limits.md,
docs/performance.md).

* **Per caller, after authentication**: `principal()` (gateway/web/http.py) calls
  `enforce_rate_limit` once the bearer token is verified — one limiter hit per request:

  | token kind | subject (Redis key `rl:{…}`) | limit kind |
  |---|---|---|
  | gate       | `gate:<client_id>`                     | `gate` |
  | rp, app, … | `client:<client_id>`                   | `rp` (or the kind's own, if set) |
  | resident   | `res:<HMAC of the pairwise sub>`       | `resident` |
  | resident, scope `codes:issue` | `issue:<HMAC of the pairwise sub>` | `app_issue` |

  The resident subject is a keyed hash (docs/rate-limits.md "Personal data"): the pairwise
  subject never appears in Redis. Per-IP limits for login pages: `enforce_ip_limit`.
* **Limits** default to `gateway.ratelimit.DEFAULT_LIMITS` plus `resident` (below); each kind
  is overridable with `GATEWAY_RATELIMIT_<KIND>="rate/period_s/burst"` (e.g. `50/1/100`);
  `GATEWAY_RATELIMIT_ENABLED=false` turns the per-caller limits off (e.g. behind an upstream
  limiter). Bad values fail at start-up with a message naming the variable.
* **Limiter**: `MemoryRateLimiter` without Redis (sandbox: one process); with Redis,
  `CoalescedRedisRateLimiter` runs the same GCRA script (gcra.lua) by EVALSHA through the
  `Coalescer`, so the hit rides in the one pipeline per loop tick with every other in-flight
  request's commands instead of costing its own redis-py round trip; for gate and rp limits
  (burst >= 20) each worker leases cells k at a time (`LeasingRateLimiter`, never over-admits;
  `GATEWAY_RATELIMIT_LEASE=false` turns it off).
* **Answer**: 429 problem+json `rate_limited` with `Retry-After` and the RateLimit header
  fields (draft-ietf-httpapi-ratelimit-headers); allowed answers carry the RateLimit fields too.
* **Overload**: at most `GATEWAY_MAX_INFLIGHT` requests (default 256, 0 = unlimited) run at once
  per worker, of which requests outside the gates' paths at most `GATEWAY_MAX_INFLIGHT_OTHER`
  (default a quarter; issue 12), and a request counts only once its body has arrived; beyond
  that a request is answered at once with 503 `unavailable` and `Retry-After: 1`, so latency
  stays bounded instead of growing with the queue. Probes (/healthz, /readyz, /metrics) are
  never shed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import redis.exceptions
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from gateway.authz.tokens import AccessTokenClaims
from gateway.clock import Clock
from gateway.errors import RateLimited
from gateway.ratelimit import (
    DEFAULT_LIMITS,
    Limit,
    MemoryRateLimiter,
    RateLimiter,
    gcra_lua,
    rate_limit_headers,
)
from gateway.ratelimit.gcra import Decision, check_cost, decision_from_reply, redis_key
from gateway.settings import SettingsError

ENV_PREFIX = "GATEWAY_RATELIMIT_"
ISSUE_SCOPE = "codes:issue"

#: DEFAULT_LIMITS plus the general per-resident limit (this module's choice: a resident app
#: refreshes a code every ~20 s and polls a login or consent now and then; 10/s sustained,
#: 20 at once is far above any honest use and far below a scripted abuse).
LIMIT_DEFAULTS: Mapping[str, Limit] = MappingProxyType({
    **DEFAULT_LIMITS,
    "resident": Limit(rate=10, period_s=1, burst=20),
})

RL_HEADERS = web.RequestKey("rate_limit_headers", dict)


# ---------------------------------------------------------------- configuration

def parse_limit(name: str, raw: str) -> Limit:
    """`rate/period_s/burst` → Limit, e.g. `50/1/100` (50 per second, 100 at once) or
    `30/60/10` (30 per minute, 10 at once). `name` is the variable, for the message."""
    parts = raw.strip().split("/")
    if len(parts) != 3:
        raise SettingsError(
            f"{name} must be 'rate/period_s/burst' (e.g. '50/1/100'), got {raw!r}")
    try:
        rate, period_s, burst = int(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise SettingsError(
            f"{name}: rate and burst must be integers and period_s a number of seconds, "
            f"got {raw!r}") from None
    try:
        return Limit(rate=rate, period_s=period_s, burst=burst)
    except ValueError as exc:
        raise SettingsError(f"{name}: {exc}") from None


@dataclass(frozen=True)
class RateLimitConfig:
    enabled: bool = True
    limits: Mapping[str, Limit] = field(default_factory=lambda: dict(LIMIT_DEFAULTS))
    max_inflight: int = 256
    lease: bool = True
    #: in-flight share of the requests outside the gates' paths (None: a quarter)
    max_other: int | None = None


def config_from_env(env: Mapping[str, str] | None = None) -> RateLimitConfig:
    """Read GATEWAY_RATELIMIT_<KIND>, GATEWAY_RATELIMIT_ENABLED, GATEWAY_RATELIMIT_LEASE and
    GATEWAY_MAX_INFLIGHT.

    An unknown kind is an error (a typo would otherwise silently keep the default)."""
    e = os.environ if env is None else env
    limits = dict(LIMIT_DEFAULTS)
    flags = {"enabled": True, "lease": True}
    for name, raw in e.items():
        if not name.startswith(ENV_PREFIX) or raw == "":
            continue
        kind = name[len(ENV_PREFIX):].lower()
        if kind in ("enabled", "lease"):
            if raw.lower() in ("1", "true", "yes", "on"):
                flags[kind] = True
            elif raw.lower() in ("0", "false", "no", "off"):
                flags[kind] = False
            else:
                raise SettingsError(f"{name} must be true or false, got {raw!r}")
            continue
        if kind not in LIMIT_DEFAULTS:
            known = ", ".join(ENV_PREFIX + k.upper() for k in LIMIT_DEFAULTS)
            raise SettingsError(f"{name} names no rate-limit kind; known: {known}")
        limits[kind] = parse_limit(name, raw)
    raw_inflight = e.get("GATEWAY_MAX_INFLIGHT", "")
    max_inflight = 256
    if raw_inflight != "":
        try:
            max_inflight = int(raw_inflight)
        except ValueError:
            raise SettingsError(
                f"GATEWAY_MAX_INFLIGHT must be an integer, got {raw_inflight!r}") from None
        if not 0 <= max_inflight <= 1_000_000:
            raise SettingsError("GATEWAY_MAX_INFLIGHT must be between 0 (off) and 1000000")
    max_other: int | None = None
    raw_other = e.get("GATEWAY_MAX_INFLIGHT_OTHER", "")
    if raw_other != "":
        try:
            max_other = int(raw_other)
        except ValueError:
            raise SettingsError(
                f"GATEWAY_MAX_INFLIGHT_OTHER must be an integer, got {raw_other!r}") from None
        if not 1 <= max_other <= max(1, max_inflight) and max_inflight:
            raise SettingsError("GATEWAY_MAX_INFLIGHT_OTHER must be between 1 and "
                                "GATEWAY_MAX_INFLIGHT")
    return RateLimitConfig(enabled=flags["enabled"], limits=limits, max_inflight=max_inflight,
                           lease=flags["lease"], max_other=max_other)




# ---------------------------------------------------------------- the Redis limiter

class CommandQueue(Protocol):
    """What the limiter needs of `gateway.adapters.redis_store.Coalescer`."""

    def execute(self, *args: Any, **options: Any) -> Awaitable[Any]: ...


class CoalescedRedisRateLimiter:
    """GCRA in Redis (gateway/ratelimit/gcra.lua, same script and keys as
    `gateway.adapters.redis_ratelimit.RedisRateLimiter`) sent by EVALSHA through the
    Coalescer: one pipeline per loop tick for all in-flight requests.

    `load()` (SCRIPT LOAD) runs at start-up; on NOSCRIPT (failover, SCRIPT FLUSH) the script
    is loaded again and the hit retried once. Time is Redis TIME (one clock for all workers).
    """

    def __init__(self, commands: CommandQueue, script_load: Callable[[str], Awaitable[Any]],
                 prefix: str = "rl:") -> None:
        self._commands = commands
        self._script_load = script_load
        self._prefix = prefix
        self._script = gcra_lua()
        self._sha = hashlib.sha1(self._script.encode("utf-8")).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1

    async def load(self) -> None:
        await self._script_load(self._script)

    def key_for(self, key: str) -> str:
        return redis_key(self._prefix, key)

    async def hit(self, key: str, limit: Limit, cost: int = 1) -> Decision:
        check_cost(cost, limit.burst)
        args = ("EVALSHA", self._sha, 1, self.key_for(key), limit.emission_interval_us,
                limit.burst, cost)
        try:
            reply = await self._commands.execute(*args)
        except redis.exceptions.NoScriptError:
            await self.load()
            reply = await self._commands.execute(*args)
        return decision_from_reply(reply, limit)


class LeasingRateLimiter:
    """Takes cells from a shared limiter a lease at a time and spends them locally (issue 7:
    one Redis script per request was ≈ 60–120 µs of worker CPU and ≈ 25 µs of Redis CPU).

    For a limit with burst b ≥ 20, one hit of cost n is sent to the shared limiter and the n
    cells are spent by the next requests of the same subject in this worker, for at most
    `lease_s`. It never admits more than the shared limiter would: every leased cell was
    counted there when leased, and a lease's cells are spent only within its own `lease_s`
    (a lease only ever *under*-admits, by the unspent cells of a lease that expires). When a
    lease does not conform, the waiting requests fall back to exact cost-1 hits, so the
    boundary stays exact. Small bursts (b < 20: resident, issuance, login pages) are never
    leased. `remaining` in the answer counts the shared limiter's figure at lease time plus
    this worker's unspent cells.

    **Sizing and refilling.** The first lease is k = min(10, b // 10) cells. A busy subject's
    next lease is sized to what this worker spent since the last refill, scaled to a quarter
    of `lease_s` (so it grows at most 2× per refill), between k and b // 10 (at most 1000),
    and is asked for *before* the
    current one runs out (when a quarter of it is left): requests keep spending the current
    lease while the next one is on its way, so a steady stream never waits on Redis (they
    used to queue behind each refill: one suspended future per request, measured). Leases
    are kept in order, each with its own expiry.

    **Waiting.** With no cell in hand, requests of one subject wait in a FIFO queue behind
    one refill in flight (a newcomer never takes a cell while others wait: an unfair queue
    starved some requests, p90 215 ms behind a p50 of 7 ms, measured).
    """

    def __init__(self, inner: RateLimiter, lease_s: float = 0.5, max_lease: int = 10,
                 max_keys: int = 10_000, max_cells: int = 1000) -> None:
        self._inner = inner
        self._lease_s = lease_s
        self._max_lease = max_lease
        self._max_keys = max_keys
        self._max_cells = max_cells
        # subject -> its leases in order: [cells left, valid until (monotonic),
        #                                  shared remaining, reset_after_s, size]
        self._leases: dict[str, deque[list[float]]] = {}
        # subject -> [cells spent since `since`, since (monotonic)]: the next lease's size
        self._spent: dict[str, list[float]] = {}
        self._queues: dict[str, deque[asyncio.Future[Decision]]] = {}
        self._refilling: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def lease_size(self, limit: Limit) -> int:
        """The first lease's size (1: this limit is not leased)."""
        return max(1, min(self._max_lease, limit.burst // 10))

    def take(self, key: str, limit: Limit) -> Decision | None:
        """A cell from this worker's leases, without waiting; None when there is none to spend
        now (no lease, spent or expired, or requests already waiting for the next one)."""
        leases = self._leases.get(key)
        if leases is None or key in self._queues:
            return None
        now = time.monotonic()
        while leases:
            lease = leases[0]
            if lease[0] >= 1 and lease[1] > now:
                lease[0] -= 1
                spent = self._spent.get(key)
                if spent is not None:
                    spent[0] += 1
                if len(leases) == 1 and lease[0] * 4 < lease[4] and key not in self._refilling:
                    self._start_refill(key, limit)   # the next lease, before this one runs out
                return self._leased(limit, lease, leases)
            leases.popleft()
        del self._leases[key]
        return None

    async def hit(self, key: str, limit: Limit, cost: int = 1) -> Decision:
        if cost != 1 or self.lease_size(limit) < 2:
            return await self._inner.hit(key, limit, cost)
        decision = self.take(key, limit)
        if decision is not None:
            return decision
        # FIFO behind the lease in flight: a newcomer never takes a cell from a waiter.
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
        fut: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        queue.append(fut)
        if key not in self._refilling:
            self._start_refill(key, limit)
        return await fut

    def _start_refill(self, key: str, limit: Limit) -> None:
        self._refilling.add(key)
        task = asyncio.ensure_future(self._refill(key, limit))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _next_size(self, key: str, limit: Limit, now: float, waiting: int) -> int:
        """Cells for the next lease: what this worker spent since the last refill (waiters
        served included), scaled to a quarter of `lease_s` (at most doubled: a lease spent
        faster grows 2× per refill), plus the requests waiting, between the first lease's
        size and b // 10 (≤ max_cells)."""
        k = self.lease_size(limit)
        spent = self._spent.get(key)
        want = waiting
        if spent is not None:
            window = self._lease_s / 4
            want += int(2 * spent[0] * min(1.0, window / max(now - spent[1], 1e-9)))
        if len(self._spent) >= self._max_keys and key not in self._spent:
            self._spent.clear()
        self._spent[key] = [0.0, now]
        return max(k, min(want, limit.burst // 10, self._max_cells))

    def _leased(self, limit: Limit, lease: list[float], leases: deque[list[float]]) -> Decision:
        cells = lease[0] if len(leases) == 1 else sum(x[0] for x in leases)
        return Decision(allowed=True, limit=limit.burst, remaining=int(lease[2] + cells),
                        retry_after_s=0.0, reset_after_s=lease[3], window_s=limit.window_s)

    async def _refill(self, key: str, limit: Limit) -> None:
        """Lease the next cells and serve the waiters in order; when a lease does not conform,
        fall back to exact cost-1 hits, one per waiter."""
        try:
            while True:
                queue = self._queues.get(key)
                now = time.monotonic()
                size = self._next_size(key, limit, now, len(queue) if queue else 0)
                d = await self._inner.hit(key, limit, size)
                queue = self._queues.get(key)
                if not d.allowed:
                    if not queue:
                        return   # a refill ahead of need was refused: leases run dry
                    fut = queue.popleft()
                    exact = await self._inner.hit(key, limit, 1)
                    if not fut.done():
                        fut.set_result(exact)
                    if not queue:
                        self._queues.pop(key, None)
                        return
                    continue
                if len(self._leases) >= self._max_keys and key not in self._leases:
                    self._prune(now)
                lease = [float(size), now + self._lease_s, d.remaining, d.reset_after_s,
                         float(size)]
                leases = self._leases.get(key)
                if leases is None:
                    leases = self._leases[key] = deque()
                leases.append(lease)
                spent = self._spent.get(key)
                while queue and lease[0] >= 1:
                    fut = queue.popleft()
                    if not fut.done():
                        lease[0] -= 1
                        if spent is not None:
                            spent[0] += 1   # waiters served count in the rate, too
                        fut.set_result(self._leased(limit, lease, leases))
                if not queue:
                    self._queues.pop(key, None)
                    return
        except BaseException as exc:
            queue = self._queues.pop(key, None)
            while queue:
                fut = queue.popleft()
                if not fut.done():
                    fut.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._refilling.discard(key)

    def _prune(self, now: float) -> None:
        for k in [k for k, v in self._leases.items()
                  if all(x[1] <= now or x[0] < 1 for x in v)]:
            del self._leases[k]
        if len(self._leases) >= self._max_keys:
            self._leases.clear()   # drops unspent cells: under-admits, never over-admits


# ---------------------------------------------------------------- per-caller limits

def subject_key(master: bytes) -> bytes:
    """The key for hashing resident subjects (HMAC as a PRF over a fixed label)."""
    return hmac.new(master, b"cq-gateway/ratelimit-subject", hashlib.sha256).digest()


def caller_subject(claims: AccessTokenClaims, scope: str | None, hkey: bytes,
                   limits: Mapping[str, Limit]) -> tuple[str, str]:
    """(limit kind, subject) for one authenticated call; see the module's table."""
    if claims.kind == "gate":
        return "gate", f"gate:{claims.client_id}"
    if claims.kind == "resident":
        h = hmac.new(hkey, claims.sub.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
        if scope == ISSUE_SCOPE:
            return "app_issue", f"issue:{h}"
        return "resident", f"res:{h}"
    kind = claims.kind if claims.kind in limits else "rp"
    return kind, f"client:{claims.client_id}"


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
    if lim.take is not None:
        decision = lim.take(subject, lim.config.limits[kind])
        if decision is not None:
            _apply(request, decision, kind)
            return None
    return _spend(request, lim, kind, subject)


async def enforce_rate_limit(request: web.Request, claims: AccessTokenClaims,
                             scope: str | None = None) -> None:
    """`limit_now`, awaited."""
    pending = limit_now(request, claims, scope)
    if pending is not None:
        await pending


async def enforce_ip_limit(request: web.Request, kind: str = "login_ip") -> None:
    """Per client IP: `ip:<remote address>` under the `login_ip` limit (login pages), or
    `ip:<kind>:<address>` under another kind (`oauth_ip`: token, introspection, revocation),
    so each kind has its own allowance."""
    lim = request.app.get(CALLER_LIMITS)
    if lim is None:
        return
    from gateway.web.http import client_address  # behind trusted proxies: X-Forwarded-For

    addr = client_address(request)
    await _spend(request, lim, kind, f"ip:{addr}" if kind == "login_ip" else f"ip:{kind}:{addr}")


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


# ---------------------------------------------------------------- wiring

def install(app: web.Application, core_key: web.AppKey[Any],
            env: Mapping[str, str] | None = None) -> RateLimitConfig:
    """Install the load shedder (the edge middleware counts requests in flight against it)
    and a cleanup context that builds the limiter from the app's Core once it exists. Reads
    the configuration now, so a bad GATEWAY_RATELIMIT_* fails at start-up."""
    from gateway.web.http import REGISTRY

    config = config_from_env(env)
    app[SHEDDER] = LoadShedder(config.max_inflight, app.get(REGISTRY), config.max_other)

    async def ctx(app: web.Application) -> Any:
        if config.enabled:
            core = app[core_key]
            limiter: RateLimiter
            if core.redis is not None and core.coalescer is not None:
                redis_limiter = CoalescedRedisRateLimiter(
                    core.coalescer, core.redis.script_load,
                    prefix=core.settings.redis_prefix + "rl:")
                await redis_limiter.load()
                limiter = LeasingRateLimiter(redis_limiter) if config.lease else redis_limiter
            else:
                clock: Clock = core.clock
                limiter = MemoryRateLimiter(clock)
            app[CALLER_LIMITS] = CallerLimits(
                limiter, config, subject_key(core.data_keys.code_holder_key),
                take=limiter.take if isinstance(limiter, LeasingRateLimiter) else None)
        yield

    app.cleanup_ctx.append(ctx)
    return config
