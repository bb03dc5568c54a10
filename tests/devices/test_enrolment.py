"""Device enrolment through the real app on real Redis (docs/devices.md "Enrolment"):
challenge, proof of possession, certificate, renewal, listing, removal, the maximum."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from gateway.app import CORE
from gateway.codec import parse_certificate
from gateway.services.codes import HolderCipher
from loadtests.phone import Phone, PhoneError
from tests.devices.conftest import Gateway, demo_person, enrolled, resident_token


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _challenge(gw: Gateway, token: str) -> str:
    r = await gw.client.post("/v1/devices/challenge", headers=_auth(token))
    assert r.status == 201, await r.text()
    assert r.headers["Cache-Control"] == "no-store"
    return str((await r.json())["challenge"])


async def _post(gw: Gateway, token: str, body: dict[str, Any]) -> tuple[int, Any]:
    r = await gw.client.post("/v1/devices", json=body, headers=_auth(token))
    return r.status, await r.json()


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
async def test_enrol_answers_a_certificate_for_the_key(gw: Gateway, alg: str) -> None:
    pid = await demo_person(gw)
    _, answer, _ = await enrolled(gw, pid, alg)
    assert answer["renewed"] is False and answer["device_id"].startswith("dev_")
    cert = parse_certificate(base64.urlsafe_b64decode(answer["certificate"] + "=="))
    assert cert.device_alg == alg and cert.serial.hex() == answer["serial"]
    assert cert.kid == gw.app[CORE].code_ring().current().kid
    assert cert.not_after - cert.not_before == 86400
    assert answer["not_before"] < answer["renew_after"] < answer["not_after"]
    # the holder handle is the person, sealed as in YK1: with the serial as IV
    holder = HolderCipher(gw.app[CORE].data_keys.code_holder_key)
    assert holder.open(cert.holder, cert.serial, cert.flags)[0] == pid


async def test_same_key_again_renews_the_same_device(gw: Gateway) -> None:
    phone, first, token = await enrolled(gw)
    second = await phone.renew(gw.client, token)
    assert second["renewed"] is True and second["device_id"] == first["device_id"]
    assert second["serial"] != first["serial"]
    r = await gw.client.get("/v1/me/devices", headers=_auth(token))
    devices = (await r.json())["devices"]
    assert [d["device_id"] for d in devices] == [first["device_id"]]
    assert devices[0]["alg"] == "EdDSA" and len(devices[0]["key_fingerprint"]) == 16
    assert devices[0]["certified_until"] == second["not_after"]
    assert set(devices[0]) == {"device_id", "alg", "key_fingerprint", "created_at",
                               "certified_until"}


async def test_at_most_the_configured_devices_per_person(make_gateway: Any) -> None:
    gw = await make_gateway(devices_max=2)
    pid = await demo_person(gw)
    token = resident_token(gw, pid)
    await enrolled(gw, pid, token=token)
    await enrolled(gw, pid, token=token)
    phone = Phone.new()
    with pytest.raises(PhoneError, match="409 conflict"):
        await phone.enrol(gw.client, token)
    # concurrent enrolments cannot get past the maximum either
    other = resident_token(gw, "ab" * 16)
    results = await asyncio.gather(*(Phone.new().enrol(gw.client, other) for _ in range(6)),
                                   return_exceptions=True)
    assert sum(not isinstance(x, BaseException) for x in results) == 2


async def test_remove_device(gw: Gateway) -> None:
    _, answer, token = await enrolled(gw)
    r = await gw.client.delete(f"/v1/me/devices/{answer['device_id']}", headers=_auth(token))
    assert r.status == 204
    r = await gw.client.delete(f"/v1/me/devices/{answer['device_id']}", headers=_auth(token))
    assert r.status == 404 and (await r.json())["code"] == "not_found"
    r = await gw.client.get("/v1/me/devices", headers=_auth(token))
    assert (await r.json())["devices"] == []


async def test_another_residents_device_cannot_be_removed(gw: Gateway) -> None:
    _, answer, _ = await enrolled(gw)
    stranger = resident_token(gw, "cd" * 16)
    r = await gw.client.delete(f"/v1/me/devices/{answer['device_id']}", headers=_auth(stranger))
    assert r.status == 404


# --- bad input: 400 with a stable code, nothing half-written -----------------------------

async def test_proof_that_does_not_verify_is_400_and_stores_nothing(gw: Gateway) -> None:
    token = resident_token(gw, await demo_person(gw))
    phone, other = Phone.new(), Phone.new()
    ch = await _challenge(gw, token)
    status, body = await _post(gw, token, {"alg": "EdDSA", "public_key": phone.public_key,
                                           "challenge": ch, "proof": other.proof(ch)})
    assert (status, body["code"]) == (400, "invalid_request")
    assert "proof of possession" in body["detail"]
    r = await gw.client.get("/v1/me/devices", headers=_auth(token))
    assert (await r.json())["devices"] == []
    # the wrong proof did not burn the challenge: the right one still works
    status, _ = await _post(gw, token, {"alg": "EdDSA", "public_key": phone.public_key,
                                        "challenge": ch, "proof": phone.proof(ch)})
    assert status == 201


async def test_proof_over_another_key_or_challenge_is_400(gw: Gateway) -> None:
    token = resident_token(gw, await demo_person(gw))
    phone, other = Phone.new(), Phone.new()
    ch = await _challenge(gw, token)
    ch2 = await _challenge(gw, token)
    for body in ({"alg": "EdDSA", "public_key": other.public_key, "challenge": ch,
                  "proof": phone.proof(ch)},
                 {"alg": "EdDSA", "public_key": phone.public_key, "challenge": ch,
                  "proof": phone.proof(ch2)}):
        status, answer = await _post(gw, token, body)
        assert (status, answer["code"]) == (400, "invalid_request")


@pytest.mark.parametrize("alg", ["RS256", "ES384", "SM3", "none", "eddsa", "HS256"])
async def test_unsupported_alg_is_400(gw: Gateway, alg: str) -> None:
    token = resident_token(gw, await demo_person(gw))
    phone = Phone.new()
    ch = await _challenge(gw, token)
    status, body = await _post(gw, token, {"alg": alg, "public_key": phone.public_key,
                                           "challenge": ch, "proof": phone.proof(ch)})
    assert (status, body["code"]) == (400, "invalid_request")
    assert "alg is not supported" in body["detail"]


async def test_challenge_is_single_use_and_bound_to_the_resident(gw: Gateway) -> None:
    token = resident_token(gw, await demo_person(gw))
    phone = Phone.new()
    ch = await _challenge(gw, token)
    body = {"alg": "EdDSA", "public_key": phone.public_key, "challenge": ch,
            "proof": phone.proof(ch)}
    assert (await _post(gw, token, body))[0] == 201
    status, answer = await _post(gw, token, body)
    assert status == 400 and "already used" in answer["detail"]
    # another resident cannot spend a challenge issued to this one
    other = resident_token(gw, "ef" * 16)
    ch = await _challenge(gw, token)
    status, answer = await _post(gw, other, {"alg": "EdDSA", "public_key": phone.public_key,
                                             "challenge": ch, "proof": phone.proof(ch)})
    assert status == 400 and "not one this gateway issued" in answer["detail"]


async def test_concurrent_spends_of_one_challenge_certify_once(gw: Gateway) -> None:
    token = resident_token(gw, await demo_person(gw))
    ch = await _challenge(gw, token)
    phones = [Phone.new() for _ in range(8)]
    results = await asyncio.gather(*(_post(gw, token, {
        "alg": "EdDSA", "public_key": p.public_key, "challenge": ch, "proof": p.proof(ch)})
        for p in phones))
    assert sorted(s for s, _ in results) == [201] + [400] * 7


@pytest.mark.parametrize("body", [
    {}, {"alg": "EdDSA"}, {"alg": "EdDSA", "public_key": "!!", "challenge": "x", "proof": "y"},
    {"alg": "EdDSA", "public_key": "AAAA", "challenge": "x", "proof": "y"},
    {"alg": "ES256", "public_key": "BAAA" * 22, "challenge": "x", "proof": "y"},
    {"alg": 1, "public_key": "AAAA", "challenge": "x", "proof": "y"},
])
async def test_malformed_enrolment_is_400(gw: Gateway, body: dict[str, Any]) -> None:
    token = resident_token(gw, await demo_person(gw))
    status, answer = await _post(gw, token, body)
    assert (status, answer["code"]) == (400, "invalid_request")


async def test_gate_and_anonymous_callers_are_refused(gw: Gateway) -> None:
    from tests.devices.conftest import METRO_GATE

    gate = await gw.client_token(METRO_GATE)
    r = await gw.client.post("/v1/devices/challenge", headers=_auth(gate))
    assert r.status == 403
    r = await gw.client.post("/v1/devices/challenge")
    assert r.status == 401
    r = await gw.client.get("/v1/me/devices")
    assert r.status == 401
    token = resident_token(gw, await demo_person(gw), scopes=("me",))
    r = await gw.client.post("/v1/devices/challenge", headers=_auth(token))
    assert r.status == 403  # needs codes:issue


async def test_suspended_person_cannot_enrol(gw: Gateway) -> None:
    from gateway.web.identity import IDENTITY

    pid = await demo_person(gw)
    await gw.app[IDENTITY].suspend(pid)
    with pytest.raises(PhoneError, match="403"):
        await enrolled(gw, pid)


async def test_concurrent_enrolments_of_one_key_make_one_device(gw: Gateway) -> None:
    token = resident_token(gw, await demo_person(gw))
    phone = Phone.new()
    answers = await asyncio.gather(*(phone.enrol(gw.client, token) for _ in range(5)))
    assert len({a["device_id"] for a in answers}) == 1
    assert sorted(a["renewed"] for a in answers) == [False] + [True] * 4
    r = await gw.client.get("/v1/me/devices", headers=_auth(token))
    assert len((await r.json())["devices"]) == 1
