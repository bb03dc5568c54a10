"""e-SSC codes verify offline against the platform's code keys; certificates carry issuer JWS."""

from __future__ import annotations

import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.adapters.upstream import certificate_payload
from gateway.codec import CodeError, VerificationKey, verify_code
from gateway.errors import UpstreamUnavailable
from gateway.services.upstream import Certificate


async def test_issued_essc_code_verifies_with_published_code_keys(essc, residents, clock) -> None:
    li = residents[1]
    keys = [VerificationKey.from_jwk(j) for j in await essc.code_keys()]
    assert {k.issuer for k in keys} == {"essc:CQ", "essc:SC"}
    trust = {(k.issuer, k.kid): k for k in keys}
    for region in ("CQ", "SC"):
        code = await essc.issue_code(li.essc_holder(region), region)
        claims = verify_code(code, lambda iss, kid: trust.get((iss, kid)), clock.now())
        assert claims.region == region and claims.holder == li.essc_holder(region).encode()
        assert li.citizen_id.encode() not in code.encode()


async def test_code_keys_have_validity_windows_and_no_private_part(essc, clock) -> None:
    for jwk in await essc.code_keys("CQ"):
        assert jwk["iss"] == "essc:CQ" and jwk["alg"] == "ES256" and "d" not in jwk
        assert jwk["nbf"] <= clock.now() < jwk["exp"]


async def test_code_of_one_region_does_not_verify_with_the_other(essc, residents, clock) -> None:
    li = residents[1]
    sc_keys = [VerificationKey.from_jwk(j) for j in await essc.code_keys("SC")]
    code = await essc.issue_code(li.essc_holder("CQ"), "CQ")
    with pytest.raises(CodeError) as e:
        verify_code(code, lambda iss, kid: next(
            (k for k in sc_keys if k.kid == kid and k.issuer == iss), None), clock.now())
    assert e.value.reason == "unknown_issuer"


async def test_code_keys_schema_mismatch_is_unavailable(essc_served, essc) -> None:
    await essc_served.fault("bad_schema")
    with pytest.raises(UpstreamUnavailable):
        await essc.code_keys("CQ")


async def test_certificates_fetched_and_issuer_signed(certlib, certlib_sandbox, residents) -> None:
    zhang = residents[0]
    certs = await certlib.fetch(zhang.citizen_id, ["driving_licence", "household_register",
                                                   "degree"])
    assert sorted(c.type for c in certs) == ["driving_licence", "household_register"]
    for c in certs:
        assert isinstance(c, Certificate)
        key = certlib_sandbox.issuer_keys[c.issuer].private_key.public_key()
        payload = jwt.decode(c.issuer_signature, key, algorithms=["ES256"])
        assert payload["num"] == c.number and payload["hld"]
        # the signature travels to relying parties: it must not carry the ID number
        assert zhang.citizen_id not in json.dumps(payload)
    assert await certlib.fetch(zhang.citizen_id, []) == []


async def test_certificate_with_forged_signature_is_refused(certlib, certlib_sandbox,
                                                            residents, monkeypatch) -> None:
    zhang = residents[0]
    genuine = certlib_sandbox.certificates

    def forged(cid, types):  # type: ignore[no-untyped-def]
        out = genuine(cid, types)
        for c in out:
            c["fields"] = {**c["fields"], "class": "A1"}  # upgraded licence, old signature
        return out

    monkeypatch.setattr(certlib_sandbox, "certificates", forged)
    with pytest.raises(UpstreamUnavailable) as e:
        await certlib.fetch(zhang.citizen_id, ["driving_licence"])
    assert zhang.citizen_id not in f"{e.value.detail} {e.value.debug}"


async def test_certificate_signed_by_a_stranger_is_refused(certlib, certlib_sandbox, residents,
                                                           monkeypatch) -> None:
    zhang = residents[0]
    genuine = certlib_sandbox.certificates

    def resigned(cid, types):  # type: ignore[no-untyped-def]
        out = genuine(cid, types)
        for c in out:
            kid = jwt.get_unverified_header(c["issuer_signature"])["kid"]
            c["issuer_signature"] = jwt.encode(
                certificate_payload(c), ec.generate_private_key(ec.SECP256R1()),
                algorithm="ES256", headers={"kid": kid})
        return out

    monkeypatch.setattr(certlib_sandbox, "certificates", resigned)
    with pytest.raises(UpstreamUnavailable):
        await certlib.fetch(zhang.citizen_id, ["driving_licence"])


async def test_certificate_fetch_validates_arguments(certlib, residents) -> None:
    with pytest.raises(ValueError):
        await certlib.fetch("500106195803129990", ["degree"])  # wrong check digit
    with pytest.raises(ValueError):
        await certlib.fetch(residents[0].citizen_id, ["tax_records"])


async def test_unknown_person_has_no_certificates(certlib) -> None:
    assert await certlib.fetch("110101200001019998", ["degree"]) == []
