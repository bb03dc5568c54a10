"""Timeouts, 5xx, garbage, retries and the circuit breaker — against real HTTP servers."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.adapters.upstream import CircuitBreaker, HttpUpstream, UpstreamPolicy
from gateway.clock import FrozenClock
from gateway.errors import UpstreamUnavailable

from .conftest import POLICY


async def test_timeout_is_unavailable_fast(ykb_served, ykb, residents) -> None:
    await ykb_served.fault("sleep", delay_s=2.0)
    t0 = time.monotonic()
    with pytest.raises(UpstreamUnavailable) as e:
        await ykb.lookup_account(residents[0].ykm_account)
    elapsed = time.monotonic() - t0
    # 3 attempts x 0.3 s timeout + tiny back-off, far below the 2 s the server sleeps per hit
    assert elapsed < 1.5
    assert e.value.status == 503 and e.value.code == "unavailable"
    assert "timeout" in (e.value.debug or "")
    assert await ykb_served.hits() == 3


@pytest.mark.parametrize("mode", ["error", "garbage", "bad_json", "bad_schema"])
async def test_5xx_and_garbage_are_unavailable(ykb_served, ykb, residents, mode) -> None:
    await ykb_served.fault(mode)
    with pytest.raises(UpstreamUnavailable) as e:
        await ykb.lookup_account(residents[0].ykm_account)
    text = f"{e.value.detail} {e.value.debug}"
    assert residents[0].ykm_account not in text and "127.0.0.1" not in text
    assert residents[0].citizen_id not in text


async def test_idempotent_get_is_retried_then_succeeds(ykb_served, ykb, residents) -> None:
    await ykb_served.fault("error", times=2)
    acct = await ykb.lookup_account(residents[0].ykm_account)
    assert acct is not None
    assert await ykb_served.hits() == 3


async def test_non_idempotent_post_is_not_retried(essc_served, essc, residents) -> None:
    await essc_served.fault("error", times=1)
    with pytest.raises(UpstreamUnavailable):
        await essc.issue_code(residents[0].essc_holder("CQ"), "CQ")
    assert await essc_served.hits() == 1  # exactly one: a code-issuing POST is never repeated
    assert (await essc.issue_code(residents[0].essc_holder("CQ"), "CQ")).startswith("ESSC1:")


async def test_post_marked_idempotent_is_retried(certlib_served, certlib, residents) -> None:
    await certlib_served.fault("error", times=2)
    certs = await certlib.fetch(residents[0].citizen_id, ["driving_licence"])
    assert [c.type for c in certs] == ["driving_licence"]
    # 2 faulted query attempts + 1 good one + 1 issuer-JWKS fetch
    assert await certlib_served.hits() == 4


async def test_circuit_opens_half_opens_and_closes(ykb_served, ykb, residents, clock) -> None:
    acct = residents[0].ykm_account
    await ykb_served.fault("error")
    # One logical GET = 3 attempts = 3 consecutive failures = the threshold.
    with pytest.raises(UpstreamUnavailable):
        await ykb.lookup_account(acct)
    assert ykb.http.breaker.state == "open"
    hits = await ykb_served.hits()
    assert hits == POLICY.failure_threshold
    for _ in range(5):
        with pytest.raises(UpstreamUnavailable) as e:
            await ykb.lookup_account(acct)
        assert "circuit open" in (e.value.debug or "")
    assert await ykb_served.hits() == hits  # nothing reached the server while open

    clock.advance(POLICY.reset_timeout_s)  # cool-down over: half-open, one trial
    with pytest.raises(UpstreamUnavailable):
        await ykb.lookup_account(acct)  # trial fails → open again, no further attempts
    assert ykb.http.breaker.state == "open"
    assert await ykb_served.hits() == hits + 1

    clock.advance(POLICY.reset_timeout_s)
    await ykb_served.clear()
    assert await ykb.lookup_account(acct) is not None  # trial succeeds → closed
    assert ykb.http.breaker.state == "closed"
    assert await ykb_served.hits() == hits + 2


async def test_half_open_admits_a_single_trial(session) -> None:
    gate = asyncio.Event()
    hits = 0

    async def slow(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        await gate.wait()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/x", slow)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        clock = FrozenClock()
        up = HttpUpstream("test", session, str(server.make_url("")), clock=clock,
                          policy=UpstreamPolicy(timeout_s=2, retries=0, failure_threshold=1,
                                                reset_timeout_s=5))
        up.breaker.failure()
        assert up.breaker.state == "open"
        clock.advance(5)
        trial = asyncio.create_task(up.request("GET", "/x", op="x", parse=lambda r: r.body))
        await asyncio.sleep(0.05)
        with pytest.raises(UpstreamUnavailable):
            await up.request("GET", "/x", op="x", parse=lambda r: r.body)
        gate.set()
        assert await trial == {"ok": True}
        assert hits == 1 and up.breaker.state == "closed"
    finally:
        await server.close()


async def test_connection_refused_is_unavailable(session) -> None:
    server = TestServer(web.Application(), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url(""))
    await server.close()  # nothing listens there any more
    up = HttpUpstream("test", session, url, clock=FrozenClock(), policy=POLICY)
    with pytest.raises(UpstreamUnavailable) as e:
        await up.request("GET", "/x", op="x", parse=lambda r: r.body)
    assert "after 3 attempt(s)" in (e.value.debug or "")


async def test_4xx_is_unavailable_but_does_not_trip_the_breaker(essc_served, essc) -> None:
    for _ in range(POLICY.failure_threshold + 1):
        with pytest.raises(UpstreamUnavailable):
            await essc.issue_code("essc-unknown-holder", "CQ")  # sandbox answers 404
    assert essc.http.breaker.state == "closed"


async def test_oversized_body_is_garbage(session) -> None:
    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b'{"x":"' + b"a" * (2 << 20) + b'"}',
                            content_type="application/json")

    app = web.Application()
    app.router.add_get("/big", big)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        up = HttpUpstream("test", session, str(server.make_url("")), clock=FrozenClock(),
                          policy=UpstreamPolicy(retries=0))
        with pytest.raises(UpstreamUnavailable) as e:
            await up.request("GET", "/big", op="big", parse=lambda r: r.body)
        assert "oversized" in (e.value.debug or "")
    finally:
        await server.close()


async def test_backoff_is_exponential_with_full_jitter(session) -> None:
    up = HttpUpstream("t", session, "http://x",
                      clock=FrozenClock(), rng=lambda: 1.0,
                      policy=UpstreamPolicy(backoff_base_s=0.1, backoff_max_s=0.5))
    assert [up.backoff_s(a) for a in (1, 2, 3)] == [0.2, 0.4, 0.5]
    up_low = HttpUpstream("t", session, "http://x",
                          clock=FrozenClock(), rng=lambda: 0.25,
                          policy=UpstreamPolicy(backoff_base_s=0.1, backoff_max_s=0.5))
    assert up_low.backoff_s(1) == pytest.approx(0.05)


def test_breaker_state_machine() -> None:
    clock = FrozenClock()
    b = CircuitBreaker("t", clock, failure_threshold=2, reset_timeout_s=10)
    for outcome in (b.failure, b.success, b.failure):  # a success resets the count
        b.acquire()
        outcome()
    assert b.state == "closed"
    b.acquire()
    b.failure()
    assert b.state == "open"
    clock.advance(9.9)
    with pytest.raises(UpstreamUnavailable):
        b.acquire()
    clock.advance(0.1)
    b.acquire()
    assert b.state == "half_open"
    with pytest.raises(UpstreamUnavailable):
        b.acquire()  # only one trial
    b.success()
    assert b.state == "closed"
