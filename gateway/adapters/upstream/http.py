"""A small resilient JSON-over-HTTP base shared by every upstream client.

Policy (docs/upstreams.md "Resilience"):

* one ``aiohttp.ClientSession`` owned by the caller (created at start-up, closed at shutdown);
* a per-attempt ``aiohttp.ClientTimeout`` (total and connect);
* retries with exponential back-off and full jitter, ONLY for idempotent requests
  (RFC 9110 §9.2.2: GET, or a POST the client explicitly marks idempotent, such as a query);
* a circuit breaker per upstream: closed → open after N consecutive failed attempts → after a
  cool-down, half-open with ONE trial request → closed on success, open again on failure.
  Time comes from an injected :class:`gateway.clock.Clock`;
* every failure (timeout, connection error, 5xx, 429, garbage, schema mismatch, open circuit)
  is raised as :class:`gateway.errors.UpstreamUnavailable` with a safe message: the upstream's
  name and the failure class, never a URL, a query string, an id or a body.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

import aiohttp

from gateway.clock import Clock
from gateway.errors import UpstreamUnavailable

__all__ = ["CircuitBreaker", "HttpUpstream", "SchemaError", "UpstreamPolicy", "UpstreamResponse"]

T = TypeVar("T")

BreakerState = Literal["closed", "open", "half_open"]

#: Upstream answers are small JSON documents; anything bigger is garbage.
MAX_BODY_BYTES: Final = 1 << 20


class SchemaError(ValueError):
    """An upstream JSON document does not have the shape we assume (docs/upstreams.md)."""


@dataclass(frozen=True, slots=True)
class UpstreamPolicy:
    timeout_s: float = 2.0
    connect_timeout_s: float = 1.0
    retries: int = 2                 # extra attempts for idempotent requests
    backoff_base_s: float = 0.05
    backoff_max_s: float = 1.0
    failure_threshold: int = 5       # consecutive failed attempts that open the circuit
    reset_timeout_s: float = 30.0    # open → half-open cool-down


class CircuitBreaker:
    """Closed / open / half-open breaker (M. Nygard, *Release It!*, "Circuit Breaker").

    ``acquire()`` either admits an attempt or raises UpstreamUnavailable; every admitted
    attempt must end in ``success()`` or ``failure()``.
    """

    def __init__(self, name: str, clock: Clock, *, failure_threshold: int = 5,
                 reset_timeout_s: float = 30.0) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        self.name = name
        self._clock = clock
        self._threshold = failure_threshold
        self._reset = reset_timeout_s
        self._failures = 0
        self._opened_at = 0.0
        self._state: BreakerState = "closed"
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        return self._state

    def acquire(self) -> None:
        if self._state == "closed":
            return
        if self._state == "open":
            if self._clock.now() - self._opened_at < self._reset:
                raise UpstreamUnavailable(f"The {self.name} platform is unavailable",
                                          debug=f"{self.name}: circuit open")
            self._state = "half_open"
            self._trial_in_flight = False
        # half-open: exactly one trial at a time
        if self._trial_in_flight:
            raise UpstreamUnavailable(f"The {self.name} platform is unavailable",
                                      debug=f"{self.name}: circuit half-open, trial in flight")
        self._trial_in_flight = True

    def success(self) -> None:
        self._failures = 0
        self._state = "closed"
        self._trial_in_flight = False

    def failure(self) -> None:
        self._trial_in_flight = False
        if self._state == "half_open":
            self._open()
            return
        self._failures += 1
        if self._failures >= self._threshold:
            self._open()

    def release(self) -> None:
        """An admitted attempt that says nothing about upstream health (e.g. cancelled)."""
        self._trial_in_flight = False

    def _open(self) -> None:
        self._state = "open"
        self._opened_at = self._clock.now()
        self._failures = 0


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    status: int
    body: Any


class _AttemptFailed(Exception):
    """One attempt failed in a way that counts against the upstream's health."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class HttpUpstream:
    """JSON requests to one upstream base URL with timeouts, retries and a circuit breaker.

    ``name`` appears in error text (e.g. ``"ykb"``); ``base_url`` ends without a slash.
    ``sleep`` and ``rng`` are injectable for tests of the back-off schedule.
    """

    def __init__(self, name: str, session: aiohttp.ClientSession, base_url: str, *,
                 clock: Clock, policy: UpstreamPolicy | None = None,
                 headers: Mapping[str, str] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: Callable[[], float] = random.random) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.policy = policy or UpstreamPolicy()
        self.breaker = CircuitBreaker(name, clock, failure_threshold=self.policy.failure_threshold,
                                      reset_timeout_s=self.policy.reset_timeout_s)
        self._session = session
        self._headers = dict(headers or {})
        self._sleep = sleep
        self._rng = rng
        self._timeout = aiohttp.ClientTimeout(total=self.policy.timeout_s,
                                              connect=self.policy.connect_timeout_s)

    def __repr__(self) -> str:
        return f"HttpUpstream(name={self.name!r}, breaker={self.breaker.state!r})"

    def backoff_s(self, attempt: int) -> float:
        """Full-jitter back-off before retry ``attempt`` (1-based): U(0, min(max, base·2^a))."""
        cap = min(self.policy.backoff_max_s, self.policy.backoff_base_s * (2 ** attempt))
        return float(self._rng() * cap)

    async def request(self, method: str, path: str, *, op: str,
                      json_body: Any = None, idempotent: bool | None = None,
                      accept: frozenset[int] = frozenset({200}),
                      parse: Callable[[UpstreamResponse], T]) -> T:
        """One logical request. ``path`` is appended to the base URL (ids must already be
        percent-encoded); ``op`` names the operation in errors and logs. Statuses in ``accept``
        are handed to ``parse`` (which raises :class:`SchemaError` on a shape mismatch);
        any other status, or a parse failure, is an UpstreamUnavailable."""
        method = method.upper()
        if idempotent is None:
            idempotent = method in ("GET", "HEAD")
        attempts = 1 + (self.policy.retries if idempotent else 0)
        last = "error"
        for attempt in range(attempts):
            if attempt:
                await self._sleep(self.backoff_s(attempt))
            self.breaker.acquire()
            try:
                result = await self._attempt(method, path, json_body, accept, parse)
            except _AttemptFailed as exc:
                self.breaker.failure()
                last = exc.kind
                continue
            except _ClientSideError as exc:
                # The upstream is healthy; our request was refused (a contract mismatch).
                self.breaker.success()
                raise UpstreamUnavailable(
                    f"The {self.name} platform refused the request",
                    debug=f"{self.name} {op}: HTTP {exc.status}") from None
            except BaseException:
                self.breaker.release()
                raise
            self.breaker.success()
            return result
        raise UpstreamUnavailable(f"The {self.name} platform is unavailable",
                                  debug=f"{self.name} {op}: {last} after {attempts} attempt(s)")

    async def _attempt(self, method: str, path: str, json_body: Any,
                       accept: frozenset[int], parse: Callable[[UpstreamResponse], T]) -> T:
        try:
            async with self._session.request(
                    method, self.base_url + path, json=json_body, headers=self._headers,
                    timeout=self._timeout, allow_redirects=False) as resp:
                status = resp.status
                if status >= 500 or status == 429:
                    raise _AttemptFailed(f"HTTP {status}")
                if status not in accept:
                    raise _ClientSideError(status)
                if resp.content_length is not None and resp.content_length > MAX_BODY_BYTES:
                    raise _AttemptFailed("oversized body")
                raw = await resp.content.read(MAX_BODY_BYTES + 1)
                if len(raw) > MAX_BODY_BYTES:
                    raise _AttemptFailed("oversized body")
                ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
        except TimeoutError:
            raise _AttemptFailed("timeout") from None
        except aiohttp.ClientError as exc:
            raise _AttemptFailed(type(exc).__name__) from None
        if ctype != "application/json" and not ctype.endswith("+json"):
            raise _AttemptFailed("not JSON")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise _AttemptFailed("invalid JSON") from None
        try:
            return parse(UpstreamResponse(status, body))
        except (SchemaError, KeyError, TypeError, ValueError):
            raise _AttemptFailed("schema mismatch") from None


class _ClientSideError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def expect_str(doc: Any, key: str, *, max_len: int = 4096) -> str:
    """``doc[key]`` as a non-empty string, else SchemaError."""
    if not isinstance(doc, dict):
        raise SchemaError("expected an object")
    value = doc.get(key)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise SchemaError(f"member {key!r} must be a non-empty string")
    return value


def expect_int(doc: Any, key: str) -> int:
    if not isinstance(doc, dict):
        raise SchemaError("expected an object")
    value = doc.get(key)
    if type(value) is not int:
        raise SchemaError(f"member {key!r} must be an integer")
    return value


def expect_list(doc: Any, key: str) -> list[Any]:
    if not isinstance(doc, dict):
        raise SchemaError("expected an object")
    value = doc.get(key)
    if not isinstance(value, list):
        raise SchemaError(f"member {key!r} must be an array")
    return value
