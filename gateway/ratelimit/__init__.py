"""Rate limiting: the `RateLimiter` port, an in-process GCRA limiter, and header rendering.

The algorithm is in `gcra.py` (pure) and `gcra.lua` (the same steps, atomic in Redis; the
adapter is `gateway.adapters.redis_ratelimit.RedisRateLimiter`). Headers follow the IETF
httpapi draft "RateLimit header fields for HTTP" (draft-ietf-httpapi-ratelimit-headers)
plus RFC 9110 §10.2.3 Retry-After. See docs/rate-limits.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType
from typing import Protocol

from gateway.clock import Clock
from gateway.ratelimit.gcra import (
    Decision,
    Limit,
    decision_from_us,
    gcra,
    gcra_us,
    to_us,
)

__all__ = [
    "DEFAULT_LIMITS",
    "Decision",
    "Limit",
    "MemoryRateLimiter",
    "RateLimiter",
    "gcra",
    "gcra_lua",
    "rate_limit_headers",
]

#: Defaults per client kind (docs/rate-limits.md §Defaults); operators override per kind.
DEFAULT_LIMITS: Mapping[str, Limit] = MappingProxyType({
    "gate": Limit(rate=50, period_s=1, burst=100),        # per gate client
    "app_issue": Limit(rate=30, period_s=60, burst=10),   # ykm issuance, per resident
    "rp": Limit(rate=100, period_s=1, burst=100),         # per relying party
    "login_ip": Limit(rate=30, period_s=60, burst=10),    # login page, per client IP
    # /oauth2/token, /introspect, /revoke per client IP, before client authentication (a
    # private_key_jwt costs an ECDSA check): far above a station of gates renewing hourly
    "oauth_ip": Limit(rate=50, period_s=1, burst=200),
})


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: Limit, cost: int = 1) -> Decision:
        """Spend `cost` cells of `key`'s allowance under `limit` if they conform.

        Atomic per key: concurrent callers never get more than the limit between them.
        `cost == 0` peeks without spending. Raises ValueError if `cost > limit.burst`.
        """
        ...


class MemoryRateLimiter:
    """GCRA in one process's memory, for the sandbox and tests.

    Atomic under one asyncio event loop (`hit` never awaits between read and write); not
    shared between processes, so N workers each allow the full limit. Memory is bounded: at
    `max_keys` entries, keys whose TAT is in the past (their state equals "never seen") are
    dropped first; if every key is still live, the least recently written ones go until 90%
    of the cap is left, which forgives those subjects' debt (a deliberate fail-open under
    memory pressure, documented in docs/rate-limits.md).
    """

    def __init__(self, clock: Clock, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self._clock = clock
        self._max_keys = max_keys
        self._tat_us: dict[str, int] = {}  # insertion order = least recently written first

    def __len__(self) -> int:
        return len(self._tat_us)

    async def hit(self, key: str, limit: Limit, cost: int = 1) -> Decision:
        now_us = to_us(self._clock.now())
        d = gcra_us(self._tat_us.get(key), now_us, limit.emission_interval_us, limit.burst,
                    cost)
        if d.new_tat_us is not None:
            self._tat_us.pop(key, None)
            self._tat_us[key] = d.new_tat_us
            if len(self._tat_us) > self._max_keys:
                self._evict(now_us)
        return decision_from_us(d, limit)

    def _evict(self, now_us: int) -> None:
        for k in [k for k, tat in self._tat_us.items() if tat <= now_us]:
            del self._tat_us[k]
        target = max(1, (self._max_keys * 9) // 10)
        if len(self._tat_us) > target:
            for k in list(self._tat_us)[: len(self._tat_us) - target]:
                del self._tat_us[k]


def gcra_lua() -> str:
    """The Redis script (gcra.lua), shipped as package data."""
    return resources.files("gateway.ratelimit").joinpath("gcra.lua").read_text("utf-8")


_SF_STRING_SAFE = re.compile(r"[\x20-\x7e]*")


def _sf_string(value: str) -> str:
    """An RFC 8941 §3.3.3 sf-string: printable ASCII, with `"` and `\\` escaped."""
    if not _SF_STRING_SAFE.fullmatch(value):
        raise ValueError("policy name must be printable ASCII (RFC 8941 sf-string)")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_POLICIES: dict[tuple[str, int, float | None], tuple[str, str]] = {}


def rate_limit_headers(decision: Decision, policy_name: str) -> dict[str, str]:
    """Response header fields for one decision.

    draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy: "name";q=<quota>;w=<window>`
    with q = the burst and w = the seconds to earn a full burst back (q/w is the sustained
    rate), and `RateLimit: "name";r=<remaining>;t=<seconds until the full quota is back>`.
    When denied, RFC 9110 §10.2.3 `Retry-After` in whole seconds, rounded up, at least 1.
    Integers are RFC 8941 sf-integers (w and t rounded up: never promise too early).
    """
    key = (policy_name, decision.limit, decision.window_s)
    cached = _POLICIES.get(key)
    if cached is None:
        name = _sf_string(policy_name)
        policy = f"{name};q={decision.limit}"
        if decision.window_s is not None:
            policy += f";w={max(1, math.ceil(decision.window_s))}"
        cached = (name, policy)
        if len(_POLICIES) < 1024:  # a policy per limit kind: few
            _POLICIES[key] = cached
    name, policy = cached
    headers = {
        "RateLimit-Policy": policy,
        "RateLimit": (f"{name};r={max(0, decision.remaining)}"
                      f";t={max(0, math.ceil(decision.reset_after_s))}"),
    }
    if not decision.allowed:
        headers["Retry-After"] = str(max(1, math.ceil(decision.retry_after_s)))
    return headers
