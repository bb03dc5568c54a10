"""MemoryRateLimiter's bounded memory, and the RateLimit header fields."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.clock import FrozenClock
from gateway.ratelimit import DEFAULT_LIMITS, Decision, Limit, MemoryRateLimiter, rate_limit_headers

PER_S = Limit(rate=10, period_s=1, burst=2)   # a TAT at most 0.2 s ahead


async def test_expired_keys_are_dropped_first_at_the_cap() -> None:
    clock = FrozenClock()
    limiter = MemoryRateLimiter(clock, max_keys=10)
    for i in range(10):
        await limiter.hit(f"ip:{i}", PER_S)
    assert len(limiter) == 10
    clock.advance(1)                                 # every TAT is now in the past
    await limiter.hit("ip:new", PER_S)
    assert len(limiter) == 1


async def test_live_keys_beyond_the_cap_evict_the_least_recently_written() -> None:
    clock = FrozenClock()
    limiter = MemoryRateLimiter(clock, max_keys=10)
    for i in range(10):
        await limiter.hit(f"ip:{i}", PER_S, cost=2)  # every key exhausted, all live
    await limiter.hit("ip:0", PER_S, cost=0)         # a peek is not a write
    await limiter.hit("ip:new", PER_S)
    assert len(limiter) == 9
    assert (await limiter.hit("ip:0", PER_S)).allowed     # evicted: its debt was forgiven
    assert not (await limiter.hit("ip:9", PER_S)).allowed  # recent: still limited


@given(keys=st.lists(st.integers(0, 200), max_size=300),
       gaps=st.lists(st.integers(0, 300_000), max_size=300))
async def test_memory_never_exceeds_the_cap(keys: list[int], gaps: list[int]) -> None:
    clock = FrozenClock()
    limiter = MemoryRateLimiter(clock, max_keys=25)
    for key, gap in zip(keys, gaps, strict=False):
        clock.advance(gap / 1_000_000)
        await limiter.hit(str(key), PER_S)
        assert len(limiter) <= 25


def test_headers_when_allowed() -> None:
    d = Decision(allowed=True, limit=100, remaining=97, retry_after_s=0, reset_after_s=0.06,
                 window_s=2.0)
    assert rate_limit_headers(d, "gate") == {
        "RateLimit-Policy": '"gate";q=100;w=2',
        "RateLimit": '"gate";r=97;t=1',
    }


def test_headers_when_denied_carry_retry_after_in_whole_seconds_at_least_one() -> None:
    d = Decision(allowed=False, limit=10, remaining=0, retry_after_s=0.0004,
                 reset_after_s=19.9, window_s=20.0)
    assert rate_limit_headers(d, "app_issue") == {
        "RateLimit-Policy": '"app_issue";q=10;w=20',
        "RateLimit": '"app_issue";r=0;t=20',
        "Retry-After": "1",
    }
    later = Decision(allowed=False, limit=10, remaining=0, retry_after_s=2.1, reset_after_s=20,
                     window_s=20.0)
    assert rate_limit_headers(later, "x")["Retry-After"] == "3"


def test_window_is_omitted_when_unknown_and_names_are_sf_strings() -> None:
    d = Decision(allowed=True, limit=5, remaining=5, retry_after_s=0, reset_after_s=0)
    assert rate_limit_headers(d, 'a"b\\c')["RateLimit-Policy"] == '"a\\"b\\\\c";q=5'
    with pytest.raises(ValueError):
        rate_limit_headers(d, "渝快码")
    with pytest.raises(ValueError):
        rate_limit_headers(d, "line\nbreak")


async def test_headers_for_the_gate_default_after_one_hit() -> None:
    limiter = MemoryRateLimiter(FrozenClock())
    d = await limiter.hit("gate:abc", DEFAULT_LIMITS["gate"])
    assert rate_limit_headers(d, "gate") == {
        "RateLimit-Policy": '"gate";q=100;w=2',
        "RateLimit": '"gate";r=99;t=1',
    }


def test_defaults_are_the_documented_ones() -> None:
    assert DEFAULT_LIMITS["gate"] == Limit(rate=50, period_s=1, burst=100)
    assert DEFAULT_LIMITS["app_issue"] == Limit(rate=30, period_s=60, burst=10)
    assert DEFAULT_LIMITS["rp"] == Limit(rate=100, period_s=1, burst=100)
    assert DEFAULT_LIMITS["login_ip"] == Limit(rate=30, period_s=60, burst=10)
