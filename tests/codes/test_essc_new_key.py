"""Issue 13's start-up race at the gate: the e-SSC platform signs with a key this worker has
not fetched (a worker just started, or the platform just published it). The verify answers
`allow` in the same request: the miss starts one fetch of the region's keys from the platform
(the sandbox's, over HTTP on loopback), the handler waits for it (bounded) and judges the scan
again; a key the platform does not publish is still `unknown_issuer` (docs/upstreams.md)."""

from __future__ import annotations

import asyncio
import time

from gateway.adapters.sandbox.keys import load_or_create_ec_key
from gateway.web import codes as codes_web
from gateway.web import sandbox as sandbox_web
from tests.codes.conftest import PHARMACY_GATE, Gateway, demo_person, issue, resident_token, verify


async def test_a_code_under_a_new_platform_key_verifies_in_the_same_request(
        gw: Gateway, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric import ec

    from gateway.codec import Es256Signer, encode_essc

    # the worker's periodic refresher has read the platform's keys: from now on only the
    # gate path's refresh on an unknown key id can bring the new one within a minute
    await asyncio.wait_for(gw.app[codes_web.ESSC_KEYS_FETCHED].wait(), 30)
    platform = gw.app[sandbox_web.ESSC]
    old = platform.code_keys["SC"]
    platform.code_keys["SC"] = load_or_create_ec_key(tmp_path, "essc-sc-code-next", time.time())
    assert platform.code_keys["SC"].kid != old.kid
    token = resident_token(gw, await demo_person(gw, "r-li-na"))
    body = await (await issue(gw, token, {"face": "essc", "region": "SC"})).json()
    gate = await gw.client_token(PHARMACY_GATE)
    status, ans = await verify(gw, gate, body["code"], "pharmacy")
    assert (status, ans["decision"], ans["reason"], ans["face"]) == (200, "allow", "ok", "essc")
    # the old key is gone from the region's keys: only SC was fetched again, CQ kept its own
    trust = gw.app[codes_web.CODES].trust
    assert trust.lookup("essc:SC", old.kid) is None
    assert trust.lookup("essc:CQ", platform.code_keys["CQ"].kid) is not None
    # a key id the platform does not publish, right after that fetch: unknown_issuer at once
    other = Es256Signer(ec.generate_private_key(ec.SECP256R1()), kid="sc-test-3")
    forged = encode_essc(region="SC", holder=b"x", issued_at=int(time.time()), lifetime_s=30,
                         signer=other)
    status, ans = await verify(gw, gate, forged, "pharmacy")
    assert (status, ans["reason"]) == (200, "unknown_issuer")
