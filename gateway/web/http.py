"""Shared HTTP plumbing: request ids, error rendering, strict JSON bodies, bearer principals,
security headers and metrics.

Errors: RFC 9457 `application/problem+json` with a stable `code` and the request id, except on
OAuth endpoints (RFC 6749 §5.2 JSON). Nothing from an exception's text reaches the client unless
the exception is one of ours and was written to be shown.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import itertools
import json
import re
import secrets
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import structlog
from aiohttp import web
from multidict import CIMultiDict, istr
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gateway.authz.dpop import DpopError, DpopVerifier
from gateway.authz.tokens import AccessTokenClaims, TokenInvalid
from gateway.errors import (
    Forbidden,
    GatewayError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    OAuthError,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from gateway.logs import REQUEST_ID as LOG_REQUEST_ID
from gateway.services.auth import BearerAuthenticator
from gateway.services.decision import VerifyDecision
from gateway.services.gate import LineBudget
from gateway.web.ratelimit import (  # issue 7: per-caller limits and overload shedding
    NEVER_SHED,
    RL_HEADERS,
    SHEDDER,
    limit_now,
    shed_response,
)

log = structlog.get_logger("gateway.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REQUEST_ID = web.RequestKey("request_id", str)
OAUTH_PATH_PREFIX = "/oauth2/"
PROBLEM = "application/problem+json"

AUTHENTICATOR = web.AppKey("authenticator", BearerAuthenticator)
REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
MAX_BODY = web.AppKey("max_body_bytes", int)

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"
#: The Server field names the product, not its stack and versions (aiohttp's default is
#: "Python/3.11 aiohttp/3.x": a free fingerprint for anyone scanning for known flaws).
SERVER_NAME = "cq-gateway"


def problem(status: int, code: str, title: str, detail: str | None, request_id: str,
            headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    body: dict[str, Any] = {"type": f"https://gateway.example/problems/{code}", "title": title,
                            "status": status, "code": code, "request_id": request_id}
    if detail and detail != title:
        body["detail"] = detail
    body.update(extra)
    # An error is about one request: never cached (and POST /v1/codes is "always no-store")
    return web.Response(status=status, text=json.dumps(body, ensure_ascii=False),
                        content_type=PROBLEM,
                        headers={"Cache-Control": "no-store", **(headers or {})})


def oauth_error(exc: OAuthError) -> web.Response:
    body: dict[str, Any] = {"error": exc.error}
    if exc.description:
        body["error_description"] = exc.description
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache", **exc.headers}
    return web.json_response(body, status=exc.http_status, headers=headers)


def bearer_challenge(exc: GatewayError) -> web.Response:
    """RFC 6750 §3 on a Bearer-protected OAuth resource (userinfo): the challenge is in
    WWW-Authenticate — with no credentials at all it carries no error code (§3.1) — and the
    body is always the JSON error, so a client never meets an empty 401 (issue 16, finding 9;
    tests/oidc/test_findings.py)."""
    challenge = exc.headers.get("WWW-Authenticate", "")
    headers = {"Cache-Control": "no-store", **exc.headers}
    description = ("The access token is not valid" if 'error="invalid_token"' in challenge
                   else "A bearer access token is required")
    return web.json_response({"error": "invalid_token", "error_description": description},
                             status=401, headers=headers)


LATENCY_BUCKETS = (.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5)
_BUCKET_LABELS: tuple[str, ...] = tuple(
    floatToGoString(b) for b in (*LATENCY_BUCKETS, float("inf")))  # type: ignore[no-untyped-call]
#: Any other method is counted as "other" (a method is any token: labels must stay bounded).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics(Collector):
    """Request and decision counters, exported in the Prometheus format at scrape time.

    The hot path only bumps plain integers (no lock, no label lookup: a worker is one
    thread); `collect()` builds the families when /metrics is read. prometheus-client's own
    Counter/Histogram cost ~10 µs per request on the gate path (a mutex per value), measured.
    Names, labels and buckets are those of the Counter/Histogram this replaces."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self._requests: dict[tuple[str, str, int], list[Any]] = {}  # -> [count, route entry]
        self._latency: dict[str, list[float]] = {}  # route -> bucket counts..., +Inf, sum
        self._decisions: dict[tuple[str, str, str], int] = {}
        #: (scene, gate, face, decision, reason) -> count; exported per scene and district
        #: (gate -> district at scrape time: bounded labels, never the gate or the venue)
        self._places: dict[tuple[str, str, str, str, str], int] = {}
        #: gate client id -> district code (set by the venue feature; "unassigned" otherwise)
        self.district_of: Callable[[str], str] = _unassigned
        if registry is not None:
            registry.register(self)

    def decision(self, face: str, decision: str, reason: str, scene: str | None = None,
                 gate: str | None = None) -> None:
        key = (face, decision, reason)
        self._decisions[key] = self._decisions.get(key, 0) + 1
        if scene is not None:
            place = (scene, gate or "", face, decision, reason)
            self._places[place] = self._places.get(place, 0) + 1

    def count(self, d: VerifyDecision) -> None:
        """The gate pipeline's counter (services.gate.DecisionCounter)."""
        face = d.face or "none"
        key = (face, d.decision, d.reason)
        self._decisions[key] = self._decisions.get(key, 0) + 1
        if d.scene is not None:  # per scene and (at scrape time) district: issue 15
            place = (d.scene, d.gate or "", face, d.decision, d.reason)
            self._places[place] = self._places.get(place, 0) + 1

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        entry = self._requests.get(key)
        if entry is None and method not in _METHODS:
            key = (route, "other", status)
            entry = self._requests.get(key)
        if entry is None:
            hist = self._latency.get(route)
            if hist is None:
                hist = self._latency[route] = [0.0] * (len(LATENCY_BUCKETS) + 2)
            entry = self._requests[key] = [0, hist]
        entry[0] += 1
        hist = entry[1]
        hist[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        hist[-1] += seconds

    def state(self) -> dict[str, Any]:
        """This worker's counters as plain JSON (what a whole-server scrape sums)."""
        return {
            "requests": [[r, m, st, e[0]] for (r, m, st), e in list(self._requests.items())],
            "latency": {r: list(h) for r, h in list(self._latency.items())},
            "decisions": [[*k, n] for k, n in list(self._decisions.items())],
            "places": [[*k, n] for k, n in list(self._places.items())],
        }

    def collect(self) -> Iterator[Metric]:
        return families(self.state(), self.district_of)


def _unassigned(gate: str) -> str:
    return "unassigned"


def merge_states(states: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum several workers' `Metrics.state()` into one."""
    requests: dict[tuple[str, str, int], float] = {}
    latency: dict[str, list[float]] = {}
    decisions: dict[tuple[str, ...], float] = {}
    places: dict[tuple[str, ...], float] = {}
    for st in states:
        for r, m, status, n in st.get("requests", ()):
            requests[(r, m, int(status))] = requests.get((r, m, int(status)), 0) + n
        for r, hist in st.get("latency", {}).items():
            mine = latency.setdefault(r, [0.0] * len(hist))
            for i, v in enumerate(hist[:len(mine)]):
                mine[i] += v
        for *k, n in st.get("decisions", ()):
            decisions[tuple(k)] = decisions.get(tuple(k), 0) + n
        for *k, n in st.get("places", ()):
            places[tuple(k)] = places.get(tuple(k), 0) + n
    return {"requests": [[*k, n] for k, n in requests.items()], "latency": latency,
            "decisions": [[*k, n] for k, n in decisions.items()],
            "places": [[*k, n] for k, n in places.items()]}


def families(state: dict[str, Any], district_of: Callable[[str], str]) -> Iterator[Metric]:
    """The Prometheus families of one worker's (or the summed) state."""
    requests = CounterMetricFamily("gateway_http_requests", "HTTP requests",
                                   labels=["route", "method", "status"])
    for route, method, status, count in state["requests"]:
        requests.add_metric([route, method, str(status)], count)
    yield requests
    latency = HistogramMetricFamily("gateway_http_request_seconds", "HTTP request latency",
                                    labels=["route"])
    for route, hist in state["latency"].items():
        cumulative, buckets = 0.0, []
        for bound, n in zip(_BUCKET_LABELS, hist[:-1], strict=True):
            cumulative += n
            buckets.append((bound, cumulative))
        latency.add_metric([route], buckets, sum_value=hist[-1])
    yield latency
    decisions = CounterMetricFamily("gateway_verify_decisions", "Verify decisions",
                                    labels=["face", "decision", "reason"])
    for face, decision, reason, count in state["decisions"]:
        decisions.add_metric([face, decision, reason], count)
    yield decisions
    by_place: dict[tuple[str, str, str, str, str], float] = {}
    for scene, gate, face, decision, reason, count in state["places"]:
        key = (scene, district_of(gate), face, decision, reason)
        by_place[key] = by_place.get(key, 0) + count
    places = CounterMetricFamily(
        "gateway_verify_decisions_by_place",
        "Verify decisions per scene and district (区县 code; the gate's venue decides)",
        labels=["scene", "district", "face", "decision", "reason"])
    for labels, count in by_place.items():
        places.add_metric(list(labels), count)
    yield places


METRICS = web.AppKey("metrics", Metrics)


_ROUTE_NAMES: dict[object, str] = {}  # route -> its label (routes are fixed at start-up)


def _route_name(request: web.Request) -> str:
    route = getattr(request.match_info, "route", None)
    name = _ROUTE_NAMES.get(route)
    if name is not None:
        return name
    resource = getattr(route, "resource", None)
    canonical = getattr(resource, "canonical", None)
    name = str(canonical) if canonical else "unmatched"
    if resource is not None and len(_ROUTE_NAMES) < 1024:  # not the per-error system routes
        _ROUTE_NAMES[route] = name
    return name


# Request ids need to be unique, not secret: a per-process random prefix and a counter (an
# os.urandom call per request was 2 % of the gate path's CPU).
_RID_PREFIX = secrets.token_hex(4)
_rid_counter = itertools.count(1)


def _next_request_id() -> str:
    return f"{_RID_PREFIX}{next(_rid_counter):08x}"


next_request_id = _next_request_id


def finish_edge_headers(resp: web.StreamResponse, rid: str) -> None:
    """The request id and the edge's security and Server headers, where not set already."""
    headers = resp.headers
    if _X_REQUEST_ID not in headers:
        headers[_X_REQUEST_ID] = rid
    for k, v in _EDGE_HEADERS:
        if k not in headers:
            headers[k] = v


class Proxies:
    """The trusted proxies' networks (GATEWAY_TRUSTED_PROXIES)."""

    def __init__(self, networks: Iterable[str] = ()) -> None:
        self.networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in networks)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str | None) -> bool:
        if not self.networks or not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in n for n in self.networks)


TRUSTED_PROXIES = web.AppKey("trusted_proxies", Proxies)


def client_address(request: web.BaseRequest) -> str:
    """The client's address: the TCP peer, or behind trusted proxies the right-most address
    of X-Forwarded-For that is not itself a trusted proxy (what is left of it is the client's
    own claim, and can be forged)."""
    peer = request.remote or "unknown"
    proxies = request.app.get(TRUSTED_PROXIES) if isinstance(request, web.Request) else None
    if not proxies or not proxies.trusts(peer):
        return peer
    hops = ",".join(request.headers.getall("X-Forwarded-For", ())).split(",")
    for hop in reversed(hops):
        hop = hop.strip()
        if hop and not proxies.trusts(hop):
            return hop
    return peer


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, overload shedding, error rendering, security and RateLimit headers,
    metrics: the one place errors turn into answers (one middleware: each layer is a coroutine
    per request on the gate path)."""
    rid = request.headers.get(_X_REQUEST_ID, "")
    if not (0 < len(rid) <= 64 and rid.replace("-", "").replace("_", "").isalnum()):
        rid = _next_request_id()
    request[REQUEST_ID] = rid
    started = time.perf_counter()
    app = request.app
    resp: web.StreamResponse | None = None
    if not request.content.is_eof():
        # --- issue 12: a body still arriving is waited for *before* the request counts as
        # in flight, within the body timeout (a stalled body held a slot for ever) ---
        resp = await _await_body(request, rid)
    shedder = app.get(SHEDDER)
    if resp is not None:
        pass
    elif shedder is not None and shedder.max_inflight and request.path not in NEVER_SHED \
            and not shedder.admit(request.path):
        # No log line: under overload a line per shed request would add to the load.
        resp = shed_response(shedder, rid)
    else:
        token = LOG_REQUEST_ID.set(rid)
        try:
            resp = await handler(request)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an answer, here only
            resp = _error_answer(request, exc, rid)
        finally:
            LOG_REQUEST_ID.reset(token)
            if shedder is not None and shedder.max_inflight and request.path not in NEVER_SHED:
                shedder.release(request.path)
    headers = resp.headers
    if _X_REQUEST_ID not in headers:
        headers[_X_REQUEST_ID] = rid
    for k, v in _EDGE_HEADERS:
        if k not in headers:
            headers[k] = v
    rl = request.get(RL_HEADERS)
    if rl:
        for k, v in rl.items():
            if k not in headers:
                headers[k] = v
    metrics = app.get(METRICS)
    if metrics is not None:
        metrics.observe(_route_name(request), request.method, resp.status,
                        time.perf_counter() - started)
    return resp


BODY_TIMEOUT = web.AppKey("body_timeout_s", float)
#: Paths whose bodies may be larger than GATEWAY_MAX_BODY_BYTES (path → bytes), e.g. the
#: offline gates' uploads; their handlers pass the same limit to read_json.
ROUTE_BODY_LIMITS: web.AppKey[dict[str, int]] = web.AppKey("route_body_limits")
#: bodies up to this are awaited whole at the edge (aiohttp's reader buffers 2 × 64 KiB before
#: it pauses the socket); a longer or chunked one is read, with the same timeout, by read_body
_AWAIT_BODY_MAX = 64 * 1024


async def _await_body(request: web.Request, rid: str) -> web.StreamResponse | None:
    """Wait (without consuming it) for a body of known length to arrive whole; None when it
    did, else the answer: 408 when it did not come within the body timeout, 413 when longer
    than allowed, 499 when the caller hung up."""
    length = request.content_length
    limit = request.app.get(MAX_BODY, _AWAIT_BODY_MAX)
    routes = request.app.get(ROUTE_BODY_LIMITS)
    if routes:
        limit = routes.get(request.path, limit)
    if length is None:
        return None  # chunked: read_body reads it, with the same timeout
    if length > limit:
        return _error_answer(request, PayloadTooLarge(
            f"The body may be at most {limit} bytes"), rid)
    if length > _AWAIT_BODY_MAX:
        return None
    try:
        async with asyncio.timeout(request.app.get(BODY_TIMEOUT, DEFAULT_BODY_TIMEOUT_S)):
            await request.content.wait_eof()
    except TimeoutError:
        resp = _error_answer(request, RequestTimeout(), rid)
        resp.force_close()
        return resp
    except (ConnectionError, OSError):
        return web.Response(status=CLIENT_CLOSED_REQUEST)
    return None


DEFAULT_BODY_TIMEOUT_S = 5.0


class RequestTimeout(InvalidRequest):
    status = 408
    title = "The request body did not arrive in time"


# Header names as multidict `istr`: their case-folded identity is computed once, not on
# every lookup and insertion (as aiohttp's own `hdrs` constants are).
_X_REQUEST_ID = istr("X-Request-Id")
_EDGE_HEADERS: tuple[tuple[istr, str], ...] = tuple(
    (istr(k), v) for k, v in (*SECURITY_HEADERS.items(), ("Content-Security-Policy", API_CSP),
                              ("Server", SERVER_NAME)))


def _error_answer(request: web.Request, exc: Exception, rid: str) -> web.StreamResponse:
    """The answer for an exception a handler raised (called inside the `except` block, so
    `log.exception` has the traceback)."""
    if isinstance(exc, ConnectionResetError) and _client_gone(request):
        # The caller hung up mid-request (a gate's timeout, a load generator stopping): not
        # our failure, and there is nobody to answer. 499 as nginx counts it, for metrics.
        log.info("request.aborted", path=request.path, error=type(exc).__name__)
        return web.Response(status=CLIENT_CLOSED_REQUEST)
    is_oauth = request.path.startswith(OAUTH_PATH_PREFIX)
    if isinstance(exc, web.HTTPException):
        err = _from_aiohttp(exc)
        if "Allow" in exc.headers:  # RFC 9110 §15.5.6: a 405 names the allowed methods
            err.headers["Allow"] = exc.headers["Allow"]
        exc = err
    if isinstance(exc, OAuthError):
        if is_oauth:
            log.info("oauth.error", error=exc.error, reason=exc.debug, path=request.path)
            return oauth_error(exc)
        return problem(exc.http_status, exc.error, exc.error, exc.description, rid, exc.headers)
    if isinstance(exc, GatewayError):
        if exc.status >= 500:
            log.warning("request.failed", error_code=exc.code, reason=exc.debug,
                        path=request.path)
        if is_oauth and exc.status == 401 and \
                exc.headers.get("WWW-Authenticate", "").startswith("Bearer"):
            return bearer_challenge(exc)
        if is_oauth and exc.status < 500:
            return oauth_error(OAuthError("invalid_request", exc.detail, exc.status,
                                          headers=exc.headers))
        return problem(exc.status, exc.code, exc.title, exc.detail, rid, exc.headers)
    if isinstance(exc, request.config_dict.get(STORE_FAULTS, ())):
        return _store_unavailable(request, exc, rid, is_oauth)
    if isinstance(exc, UnicodeError | RecursionError):
        # a string that cannot be encoded (a lone surrogate, e.g. from a header's bytes), or
        # nesting past the interpreter's limit: the input's fault, never a 500
        if is_oauth:
            return oauth_error(OAuthError("invalid_request", "The request is not valid"))
        return problem(400, "invalid_request", InvalidRequest.title,
                       "The request holds text that cannot be processed", rid)
    log.exception("request.crashed", path=request.path)
    return problem(500, "internal_error", "Internal error", None, rid)


# --- issue 12: a store fault is 503 `unavailable` (CONTRACT "Faults"), never a 500 ---
#: The exceptions that mean "a store is unavailable" (the adapters' STORE_FAULTS, set by the
#: composition root: the web layer never imports a store driver).
STORE_FAULTS: web.AppKey[tuple[type[BaseException], ...]] = web.AppKey("store_faults")
#: one line per second per fault kind and worker (with the count left out), like deny lines
_FAULT_LINES = LineBudget(per_second=1)


def _store_unavailable(request: web.Request, exc: BaseException, rid: str,
                       is_oauth: bool) -> web.Response:
    suppressed = _FAULT_LINES.take(type(exc).__name__, time.time())
    if suppressed is not None:
        log.warning("store.unavailable", error=type(exc).__name__, path=request.path,
                    suppressed=suppressed)
    headers = {"Retry-After": "1"}
    if is_oauth:
        return oauth_error(OAuthError("temporarily_unavailable",
                                      "The service is temporarily unavailable", 503,
                                      headers=headers))
    return problem(503, "unavailable", "Temporarily unavailable",
                   "A store is unavailable; retry shortly", rid, headers)


CLIENT_CLOSED_REQUEST = 499


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _from_aiohttp(exc: web.HTTPException) -> GatewayError:
    if isinstance(exc, web.HTTPNotFound):
        return NotFound()
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowed()
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge()
    if exc.status >= 500:
        return GatewayError()
    err = InvalidRequest()
    err.status = exc.status  # type: ignore[misc]
    return err


async def read_body(request: web.Request, limit: int | None = None) -> bytes:
    """The body, refused with 413 past the limit (checked before and while reading)."""
    app_limit = request.app[MAX_BODY]
    limit = limit or app_limit
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"The body may be at most {limit} bytes")
    if limit == app_limit:
        # the app's client_max_size is this same limit (build_app): aiohttp's buffered read
        # enforces it while reading
        if request.content.is_eof():
            # all there already (the edge awaited it, _await_body): nothing to time out, and
            # an asyncio.timeout costs a timer and a task check (≈ 6 µs on this box, issue 13)
            try:
                return await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise PayloadTooLarge(f"The body may be at most {limit} bytes") from None
        try:
            async with asyncio.timeout(request.app.get(BODY_TIMEOUT, DEFAULT_BODY_TIMEOUT_S)):
                return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(f"The body may be at most {limit} bytes") from None
        except TimeoutError:
            raise RequestTimeout() from None
    chunks = []
    size = 0
    try:
        async with asyncio.timeout(request.app.get(BODY_TIMEOUT, DEFAULT_BODY_TIMEOUT_S)):
            async for chunk in request.content.iter_chunked(65536):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"The body may be at most {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout() from None
    return b"".join(chunks)


async def read_json(request: web.Request, limit: int | None = None) -> dict[str, Any]:
    """A JSON object body, strictly: content type, size, UTF-8, an object at the top, nesting
    at most MAX_JSON_DEPTH deep, every string encodable (no lone surrogate from a `\\udXXX`
    escape: it would fail later, in a store's encoder, as a 500)."""
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise UnsupportedMediaType("Send the body as application/json")
    raw = await read_body(request, limit)
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and _json_depth(raw) > MAX_JSON_DEPTH:
        raise InvalidRequest(f"The body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidRequest("The body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object")
    if _SURROGATE_ESCAPE.search(raw) is not None and not _encodable(data):
        raise InvalidRequest("The body holds a lone surrogate (\\ud800-\\udfff), which is not "
                             "text")
    return data


#: deepest nesting of arrays and objects a JSON body may have (issue 12)
MAX_JSON_DEPTH = 400
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


_NOT_STRUCTURAL = bytes(b for b in range(256) if b not in b'"[]{}')


def _json_depth(raw: bytes) -> int:
    """The deepest nesting of `raw`, outside strings (called only when it could pass the
    limit: fewer brackets than that cannot nest deeper).

    Only quotes and brackets decide nesting once the escapes are gone: escaped backslashes
    are dropped first, then escaped quotes (left to right, as a reader pairs them), then every
    byte but quotes and brackets — all in C (a 150 KB offline upload walked byte by byte cost
    ~3 % of its CPU); the walk sees only the few bytes left."""
    depth = deepest = 0
    in_string = False
    structural = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURAL)
    for b in structural:
        if b == 0x22:
            in_string = not in_string
        elif in_string:
            continue
        elif b in (0x5B, 0x7B):
            depth += 1
            if depth > deepest:
                deepest = depth
        elif b in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _encodable(value: Any) -> bool:
    """Every string (keys included) in a parsed JSON value encodes as UTF-8."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return True


async def read_form(request: web.Request, limit: int | None = None) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (OAuth endpoints, RFC 6749 §3.2).

    Repeated parameters are an error (RFC 6749 §3.1: parameters must not be included more
    than once)."""
    from urllib.parse import parse_qsl

    if request.content_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "Send the body as application/x-www-form-urlencoded")
    raw = await read_body(request, limit)
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                          max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "The form body is malformed") from None
    form: dict[str, str] = {}
    for k, v in pairs:
        if k in form:
            raise OAuthError("invalid_request", f"Parameter {k} is repeated")
        form[k] = v
    return form


def require_str(body: dict[str, Any], name: str, max_len: int = 512,
                required: bool = True) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"{name} is required")
        return None
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise InvalidRequest(f"{name} must be a non-empty string of at most {max_len} characters")
    return value


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() != "bearer " or not header[7:].strip():
        raise Unauthorized("A Bearer access token is required",
                           headers={"WWW-Authenticate": 'Bearer realm="gateway"'})
    return header[7:].strip()


DPOP = web.AppKey("dpop_verifier", DpopVerifier)
DPOP_CHALLENGE = 'DPoP realm="gateway", algs="ES256 EdDSA Ed25519"'


class DpopBindingError(Unauthorized):
    """RFC 9449 §7: a DPoP-bound token without a good proof, or a proof with a bearer token.
    `error` is the RFC 6750 / 9449 code for the WWW-Authenticate challenge."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate":
                                          f'{DPOP_CHALLENGE}, error="{error}"'})
        self.error = error


def presented_token(request: web.Request) -> tuple[str, bool]:
    """(access token, presented with the DPoP scheme?) from `Authorization`."""
    header = request.headers.get("Authorization", "")
    if header[:5].lower() == "dpop " and header[5:].strip():
        return header[5:].strip(), True
    return bearer_token(request), False


async def check_dpop_binding(request: web.Request, token: str, dpop_scheme: bool,
                             claims: AccessTokenClaims) -> None:
    """RFC 9449 §7: a token with `cnf.jkt` is used only with the DPoP scheme and a proof by
    that key over this request and token; the DPoP scheme is for bound tokens only."""
    if claims.jkt is None and not dpop_scheme:
        return
    if claims.jkt is None or not dpop_scheme:
        raise DpopBindingError("invalid_token", "This token must be presented with the "
                               + ("DPoP scheme and a proof" if claims.jkt else "Bearer scheme"))
    proofs = request.headers.getall("DPoP", [])
    verifier = request.app.get(DPOP)
    if len(proofs) != 1 or verifier is None:
        raise DpopBindingError("invalid_dpop_proof", "Exactly one DPoP proof is required")
    try:
        jkt = await verifier.verify(proofs[0], method=request.method,
                                    url=verifier.issuer + request.path, access_token=token)
    except DpopError as exc:
        raise DpopBindingError(exc.error, exc.description) from None
    if not hmac.compare_digest(jkt.encode(), claims.jkt.encode()):
        raise DpopBindingError("invalid_token", "The token is bound to another key")


async def principal(request: web.Request, *, kinds: tuple[str, ...],
                    scope: str | None = None) -> AccessTokenClaims:
    """The verified access token of the caller; 401 if none or invalid (or a DPoP-bound one
    without its proof), 403 if the token is of another kind of client or lacks the scope."""
    token, dpop_scheme = presented_token(request)
    authenticator = request.app[AUTHENTICATOR]
    try:
        claims = authenticator.cached(token) or await authenticator.verify(token)
    except TokenInvalid as exc:
        raise Unauthorized("The access token is not valid", debug=exc.reason,
                           headers={"WWW-Authenticate":
                                    'Bearer realm="gateway", error="invalid_token"'}) from None
    if claims.jkt is not None or dpop_scheme:
        await check_dpop_binding(request, token, dpop_scheme, claims)
    if claims.kind not in kinds:
        raise Forbidden("This token's client may not call this endpoint")
    if scope is not None and not claims.has_scope(scope):
        raise Forbidden(f"The token lacks the {scope} scope",
                        headers={"WWW-Authenticate":
                                 f'Bearer realm="gateway", error="insufficient_scope", '
                                 f'scope="{scope}"'})
    # --- rate limit per caller, after authentication (issue 7; gateway/web/ratelimit.py) ---
    pending = limit_now(request, claims, scope)
    if pending is not None:
        await pending
    # --- end rate limit ---
    return claims


_NO_STORE_JSON = CIMultiDict([(istr("Content-Type"), "application/json; charset=utf-8"),
                              (istr("Cache-Control"), "no-store"), (istr("Pragma"), "no-cache"),
                              *_EDGE_HEADERS])


def no_store_json(data: Any) -> web.Response:
    """A 200 JSON answer that must not be cached (a gate's decision), its static headers
    copied from one prebuilt map: `no_store(web.json_response(...))` plus the edge headers
    set one by one cost 23.5 µs, this 10 µs (measured; the gate path answers with it).
    `data` is a JSON value, or its encoding already (bytes)."""
    body = data if isinstance(data, bytes) else json.dumps(data).encode("utf-8")
    return web.Response(body=body, headers=_NO_STORE_JSON)


def no_store(resp: web.StreamResponse) -> web.StreamResponse:
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Pragma"] = "no-cache"
    return resp
