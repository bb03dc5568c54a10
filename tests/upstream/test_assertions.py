"""Assertion issue → verify round trips and every rejection reason, over real HTTP."""

from __future__ import annotations

import base64
import json
import secrets

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.adapters.sandbox import ESSC_ISSUER_PREFIX, YKB_ISSUER
from gateway.errors import Unauthorized, UpstreamUnavailable
from gateway.services.upstream import AssertionRejected, UpstreamIdentity

from .conftest import GATEWAY_ISSUER


async def _sandbox_assertion(served, path: str, **body) -> str:  # type: ignore[no-untyped-def]
    async with served.session.post(served.url + path, json=body) as r:
        assert r.status == 201, r.status
        return (await r.json())["assertion"]


async def test_ykb_round_trip_over_http(ykb_served, ykb, residents) -> None:
    token = await _sandbox_assertion(ykb_served, "/assertions", resident="r-zhang-wei")
    ident = await ykb.verify_assertion(token)
    zhang = residents[0]
    assert isinstance(ident, UpstreamIdentity)
    assert (ident.platform, ident.region, ident.account_id) == ("ykb", None, zhang.ykm_account)
    assert ident.citizen_id == zhang.citizen_id
    assert ident.issuer == YKB_ISSUER and ident.expires_at - ident.issued_at == 300
    assert zhang.citizen_id not in repr(ident) and zhang.citizen_id not in str(ident)


@pytest.mark.parametrize(("resident", "region"), [("r-li-na", "CQ"), ("r-li-na", "SC"),
                                                  ("r-chen-jing", "SC")])
async def test_essc_round_trip_per_region(essc_served, essc, residents, resident, region) -> None:
    token = await _sandbox_assertion(essc_served, f"/{region}/assertions", resident=resident)
    ident = await essc.verify_assertion(token)
    r = next(x for x in residents if x.id == resident)
    assert (ident.platform, ident.region) == ("essc", region)
    assert ident.account_id == r.essc_holder(region)
    assert ident.citizen_id == r.citizen_id
    assert ident.issuer == f"{ESSC_ISSUER_PREFIX}/{region}"


async def test_regions_have_their_own_keys(essc_sandbox) -> None:
    cq = essc_sandbox.assertion_keys["CQ"].key.kid
    sc = essc_sandbox.assertion_keys["SC"].key.kid
    assert cq != sc


async def test_cross_region_key_is_rejected(essc_served, essc, essc_sandbox) -> None:
    token = essc_sandbox.issue_assertion("r-li-na", "SC")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["iss"] = f"{ESSC_ISSUER_PREFIX}/CQ"
    claims["region"] = "CQ"
    forged = essc_sandbox.assertion_keys["SC"].sign(claims)
    with pytest.raises(AssertionRejected) as e:
        await essc.verify_assertion(forged)
    assert e.value.reason == "unknown_key"


async def test_unknown_resident_and_missing_credential_are_404(ykb_served, essc_served) -> None:
    async with ykb_served.session.post(ykb_served.url + "/assertions",
                                       json={"resident": "r-nobody"}) as r:
        assert r.status == 404
    async with ykb_served.session.post(ykb_served.url + "/assertions",
                                       json={"resident": "r-zhao-min"}) as r:
        assert r.status == 404  # 赵敏 has no 渝快码 account
    async with essc_served.session.post(essc_served.url + "/SC/assertions",
                                        json={"resident": "r-zhang-wei"}) as r:
        assert r.status == 404


async def test_expired_is_rejected(ykb_served, ykb, clock) -> None:
    token = await _sandbox_assertion(ykb_served, "/assertions", resident="r-zhang-wei")
    clock.advance(300 + 29)  # inside the 30 s leeway
    await ykb.verify_assertion(token)
    clock.advance(2)
    with pytest.raises(AssertionRejected) as e:
        await ykb.verify_assertion(token)
    assert e.value.reason == "expired"
    assert isinstance(e.value, Unauthorized) and e.value.status == 401


async def test_issued_in_the_future_is_not_yet_valid(ykb_sandbox, ykb, clock) -> None:
    clock.advance(120)
    token = ykb_sandbox.issue_assertion("r-zhang-wei")
    clock.advance(-120)
    with pytest.raises(AssertionRejected) as e:
        await ykb.verify_assertion(token)
    assert e.value.reason == "not_yet_valid"


async def test_wrong_audience(ykb_served, ykb) -> None:
    token = await _sandbox_assertion(ykb_served, "/assertions", resident="r-zhang-wei",
                                     audience="https://some-other-rp.example")
    with pytest.raises(AssertionRejected) as e:
        await ykb.verify_assertion(token)
    assert e.value.reason == "wrong_audience"


async def test_overlong_lifetime(ykb_served, ykb) -> None:
    token = await _sandbox_assertion(ykb_served, "/assertions", resident="r-zhang-wei",
                                     lifetime_s=86400)
    with pytest.raises(AssertionRejected) as e:
        await ykb.verify_assertion(token)
    assert e.value.reason == "lifetime_too_long"


async def test_unknown_kid(ykb_sandbox, ykb) -> None:
    token = ykb_sandbox.issue_assertion("r-zhang-wei")
    claims = jwt.decode(token, options={"verify_signature": False})
    stranger = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(claims, stranger, algorithm="ES256", headers={"kid": "deadbeef"})
    with pytest.raises(AssertionRejected) as e:
        await ykb.verify_assertion(forged)
    assert e.value.reason == "unknown_key"


async def test_right_kid_wrong_key_is_bad_signature(ykb_sandbox, ykb) -> None:
    token = ykb_sandbox.issue_assertion("r-zhang-wei")
    claims = jwt.decode(token, options={"verify_signature": False})
    stranger = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(claims, stranger, algorithm="ES256",
                        headers={"kid": ykb_sandbox.signing.key.kid})
    with pytest.raises(AssertionRejected) as e:
        await ykb.verify_assertion(forged)
    assert e.value.reason == "bad_signature"


def _b64(d: dict) -> str:  # type: ignore[type-arg]
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


async def test_tampered_payload(ykb_sandbox, ykb, residents) -> None:
    token = ykb_sandbox.issue_assertion("r-zhang-wei")
    header, _, sig = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["cid"] = residents[1].citizen_id  # swap the trust root
    with pytest.raises(AssertionRejected) as e:
        await ykb.verify_assertion(f"{header}.{_b64(claims)}.{sig}")
    assert e.value.reason == "bad_signature"


async def test_unknown_issuer(ykb_sandbox, ykb) -> None:
    token = ykb_sandbox.issue_assertion("r-zhang-wei")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["iss"] = "https://evil.example"
    forged = ykb_sandbox.signing.sign(claims)
    with pytest.raises(AssertionRejected) as e:
        await ykb.verify_assertion(forged)
    assert e.value.reason == "unknown_issuer"


@pytest.mark.parametrize("alg", ["HS256", "none"])
async def test_disallowed_algorithms(ykb_sandbox, ykb, alg) -> None:
    token = ykb_sandbox.issue_assertion("r-zhang-wei")
    claims = jwt.decode(token, options={"verify_signature": False})
    header = {"alg": alg, "kid": ykb_sandbox.signing.key.kid, "typ": "JWT"}
    forged = f"{_b64(header)}.{_b64(claims)}.{'' if alg == 'none' else _b64({'x': 1})}"
    with pytest.raises(AssertionRejected) as e:
        await ykb.verify_assertion(forged)
    assert e.value.reason == "bad_signature"


@pytest.mark.parametrize("claim", ["jti", "sub", "iat", "exp"])
async def test_missing_required_claim(ykb_sandbox, ykb, claim) -> None:
    token = ykb_sandbox.issue_assertion("r-zhang-wei")
    claims = jwt.decode(token, options={"verify_signature": False})
    del claims[claim]
    with pytest.raises(AssertionRejected) as e:
        await ykb.verify_assertion(ykb_sandbox.signing.sign(claims))
    assert e.value.reason == "missing_claim"


@pytest.mark.parametrize("garbage", ["", "a.b", "not-a-jwt", "a.b.c", "x" * 10000])
async def test_garbage_is_malformed(ykb, garbage) -> None:
    with pytest.raises(AssertionRejected) as e:
        await ykb.verify_assertion(garbage)
    assert e.value.reason == "malformed"


async def test_bad_citizen_id_claim_is_malformed(ykb_sandbox, ykb) -> None:
    token = ykb_sandbox.issue_assertion("r-zhang-wei")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["cid"] = claims["cid"][:17] + ("0" if claims["cid"][17] != "0" else "1")
    with pytest.raises(AssertionRejected) as e:
        await ykb.verify_assertion(ykb_sandbox.signing.sign(claims))
    assert e.value.reason == "malformed"


async def test_rejection_text_names_no_personal_data(ykb_sandbox, ykb, residents, clock) -> None:
    token = ykb_sandbox.issue_assertion("r-zhang-wei")
    clock.advance(3600)
    with pytest.raises(AssertionRejected) as e:
        await ykb.verify_assertion(token)
    text = f"{e.value} {e.value.detail} {e.value.debug}"
    assert residents[0].citizen_id not in text and residents[0].ykm_account not in text


async def test_jwks_refresh_on_rotation(ykb_served, ykb, ykb_sandbox, clock) -> None:
    await ykb.verify_assertion(ykb_sandbox.issue_assertion("r-zhang-wei"))
    assert ykb.jwks.fetches == 1
    async with ykb_served.session.post(ykb_served.url + "/__rotate") as r:
        new_kid = (await r.json())["kid"]
    token = ykb_sandbox.issue_assertion("r-zhang-wei")
    assert jwt.get_unverified_header(token)["kid"] == new_kid
    # Inside the minimum refresh interval an unknown kid does not trigger a fetch …
    with pytest.raises(AssertionRejected) as e:
        await ykb.verify_assertion(token)
    assert e.value.reason == "unknown_key" and ykb.jwks.fetches == 1
    # … after it, the unknown kid makes the cache refetch once, and the new key verifies.
    clock.advance(31)
    ident = await ykb.verify_assertion(token)
    assert ident.account_id and ykb.jwks.fetches == 2
    # Tokens signed by the previous key still verify (it stays published), no extra fetch.
    await ykb.verify_assertion(ykb_sandbox.issue_assertion("r-li-na"))
    assert ykb.jwks.fetches == 2


async def test_unknown_kid_flood_fetches_at_most_once_per_interval(ykb_sandbox, ykb,
                                                                   ykb_served) -> None:
    await ykb.verify_assertion(ykb_sandbox.issue_assertion("r-zhang-wei"))
    before = await ykb_served.hits()
    claims = jwt.decode(ykb_sandbox.issue_assertion("r-zhang-wei"),
                        options={"verify_signature": False})
    for _ in range(20):
        forged = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                            headers={"kid": secrets.token_hex(4)})
        with pytest.raises(AssertionRejected):
            await ykb.verify_assertion(forged)
    assert await ykb_served.hits() == before


async def test_jwks_unreachable_is_unavailable_not_rejected(ykb_served, ykb, ykb_sandbox) -> None:
    await ykb_served.fault("error")
    with pytest.raises(UpstreamUnavailable):
        await ykb.verify_assertion(ykb_sandbox.issue_assertion("r-zhang-wei"))


async def test_cached_key_survives_a_failed_refresh(ykb_served, ykb, ykb_sandbox, clock) -> None:
    await ykb.verify_assertion(ykb_sandbox.issue_assertion("r-zhang-wei"))
    clock.advance(3601)  # cache is stale …
    await ykb_served.fault("error")  # … and the issuer is down: the cached key still serves
    ident = await ykb.verify_assertion(ykb_sandbox.issue_assertion("r-zhang-wei"))
    assert ident.platform == "ykb"


async def test_lookup_account(ykb, essc, residents) -> None:
    li = residents[1]
    acct = await ykb.lookup_account(li.ykm_account)
    assert acct is not None and acct.citizen_id == li.citizen_id and acct.status == "active"
    assert li.citizen_id not in repr(acct)
    assert await ykb.lookup_account("ykm-unknown") is None
    assert await ykb.lookup_account("../../etc/passwd") is None
    sc = await essc.lookup_account(li.essc_holder("SC"), "SC")
    assert sc is not None and sc.region == "SC" and sc.citizen_id == li.citizen_id
    assert await essc.lookup_account(li.essc_holder("SC"), "CQ") is None


def test_rejected_is_unauthorized_with_safe_detail() -> None:
    e = AssertionRejected("expired")
    assert e.status == 401 and e.code == "unauthorized" and e.reason == "expired"
    assert "expired" in e.detail


async def test_gateway_issuer_is_the_audience(ykb_sandbox) -> None:
    claims = jwt.decode(ykb_sandbox.issue_assertion("r-zhang-wei"),
                        options={"verify_signature": False})
    assert claims["aud"] == GATEWAY_ISSUER


async def test_jwks_outage_is_never_unknown_key(ykb_served, ykb, ykb_sandbox, clock) -> None:
    token = ykb_sandbox.issue_assertion("r-wang-lei")
    await ykb_served.fault("error", times=3)  # one logical JWKS GET = 3 failed attempts
    with pytest.raises(UpstreamUnavailable):
        await ykb.verify_assertion(token)
    with pytest.raises(UpstreamUnavailable):  # circuit open: still 503, not a rejection
        await ykb.verify_assertion(token)
    # The issuer is back; after the breaker's cool-down (10 s, shorter than the 30 s JWKS
    # refresh throttle) the failed fetch did not count as a fetch: verification succeeds.
    clock.advance(10)
    assert (await ykb.verify_assertion(token)).account_id == "ykm-7f3a0003"
