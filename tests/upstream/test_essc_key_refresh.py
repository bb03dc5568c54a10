"""Start-up race (issue 13): an e-SSC code under a key this worker has not fetched yet. The
gate path answers 503 `unavailable` (KeysBeingFetched) while ONE fetch of that region's keys
runs against the sandbox platform over real HTTP, and the next scan verifies; an unknown key
id costs the platform at most one fetch per interval per issuer."""

from __future__ import annotations

import asyncio

import pytest

from gateway.authz.keyring import bootstrap
from gateway.codec import CodeError, check_signature, decode
from gateway.errors import Unavailable
from gateway.services.trustlist import EsscKeyRefresh, KeysBeingFetched, TrustList


def _trust(clock) -> TrustList:  # type: ignore[no-untyped-def]
    ring = bootstrap("code", "EdDSA", clock.now() - 10)
    return TrustList(lambda: ring, lambda: ring, clock.now)


def _refresh(trust: TrustList, essc, clock, **kw) -> EsscKeyRefresh:  # type: ignore[no-untyped-def]
    return EsscKeyRefresh(trust.lookup, essc.code_keys, trust.set_essc_keys, ("CQ", "SC"),
                          clock.now, **kw)


async def _fetches(served) -> int:  # type: ignore[no-untyped-def]
    async with served.session.get(served.url + "/__hits") as r:
        return int((await r.json())["by_route"].get("GET /{region}/code-keys", 0))


async def test_first_scan_is_unavailable_one_fetch_runs_the_next_verifies(
        essc, essc_served, residents, clock) -> None:  # type: ignore[no-untyped-def]
    trust = _trust(clock)
    refresh = _refresh(trust, essc, clock)
    code = decode(await essc.issue_code(residents[1].essc_holder("CQ"), "CQ"))
    before = await _fetches(essc_served)
    for _ in range(50):  # a burst of scans before the keys are in: single-flight
        with pytest.raises(KeysBeingFetched) as e:
            check_signature(code, refresh.lookup)
    assert isinstance(e.value, Unavailable) and e.value.status == 503
    assert e.value.headers == {"Retry-After": "1"}
    await refresh.settled()
    assert await _fetches(essc_served) == before + 1
    assert check_signature(code, refresh.lookup).region == "CQ"   # the next scan verifies
    # the other region was neither fetched nor touched
    assert trust.lookup("essc:SC", code.claims.kid) is None
    assert await _fetches(essc_served) == before + 1


async def test_unknown_key_id_costs_one_fetch_per_interval(essc, essc_served, clock) -> None:  # type: ignore[no-untyped-def]
    trust = _trust(clock)
    refresh = _refresh(trust, essc, clock, min_interval_s=10)
    before = await _fetches(essc_served)
    with pytest.raises(KeysBeingFetched):
        refresh.lookup("essc:CQ", "forged-kid")
    await refresh.settled()
    for _ in range(20):   # within the interval: unknown_issuer at once, no fetch
        assert refresh.lookup("essc:CQ", "forged-kid-2") is None
    assert await _fetches(essc_served) == before + 1
    clock.advance(10)
    with pytest.raises(KeysBeingFetched):
        refresh.lookup("essc:CQ", "forged-kid-3")
    await refresh.settled()
    assert await _fetches(essc_served) == before + 2
    # an issuer this gateway does not serve never reaches the platform
    assert refresh.lookup("essc:XX", "k") is None and refresh.lookup("ykm", "k") is None
    await asyncio.sleep(0)
    assert await _fetches(essc_served) == before + 2


async def test_a_failed_fetch_keeps_answering_unavailable_then_retries(
        essc, essc_served, residents, clock) -> None:  # type: ignore[no-untyped-def]
    trust = _trust(clock)
    refresh = _refresh(trust, essc, clock, min_interval_s=10)
    code = decode(await essc.issue_code(residents[1].essc_holder("CQ"), "CQ"))
    await essc_served.fault("error")
    with pytest.raises(KeysBeingFetched):
        check_signature(code, refresh.lookup)
    await refresh.settled()
    before = await _fetches(essc_served)
    with pytest.raises(KeysBeingFetched):  # not unknown_issuer: the keys could not be read
        check_signature(code, refresh.lookup)
    assert await _fetches(essc_served) == before     # and no new fetch inside the interval
    await essc_served.clear()
    clock.advance(10)
    with pytest.raises(KeysBeingFetched):
        check_signature(code, refresh.lookup)
    await refresh.settled()
    assert check_signature(code, refresh.lookup).region == "CQ"
    clock.advance(1)
    forged = decode(await essc.issue_code(residents[1].essc_holder("SC"), "SC"))
    with pytest.raises(KeysBeingFetched):
        check_signature(forged, refresh.lookup)
    await refresh.settled()
    with pytest.raises(CodeError) as e:   # a key the platform does not publish for CQ
        check_signature(forged, lambda iss, kid: refresh.lookup("essc:CQ", kid))
    assert e.value.reason == "unknown_issuer"
