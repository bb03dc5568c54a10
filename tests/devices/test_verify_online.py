"""Device-bound codes verified online through POST /v1/codes/verify (same answer shape and
reasons as YK1:), revocation, and the signed device revocation list."""

from __future__ import annotations

import base64
import json
import os
import secrets
from typing import Any

import pytest

from gateway.app import CORE
from gateway.clock import FrozenClock
from gateway.codec import Ed25519Signer, b45decode, b45encode, encode_certificate, encode_yk2
from gateway.codec.jws import verify_compact
from gateway.web.codes import CODES
from loadtests.phone import Phone, PhoneError
from tests.devices.conftest import (
    METRO_GATE,
    Gateway,
    demo_person,
    enrolled,
    resident_token,
    verify,
)


def _cert(answer: dict[str, object]) -> bytes:
    return base64.urlsafe_b64decode(str(answer["certificate"]) + "==")


async def test_phone_code_verifies_online_like_a_yk1_code(gw: Gateway) -> None:
    pid = await demo_person(gw)
    phone, _, _ = await enrolled(gw, pid)
    code = phone.make_code()
    assert code.startswith("YK2:")
    gate = await gw.client_token(METRO_GATE)
    status, first = await verify(gw, gate, code, "metro", "rid-1")
    assert status == 200
    assert (first["decision"], first["reason"], first["face"]) == ("allow", "ok", "ykm")
    assert first["subject"] == gw.app[CORE].data_keys.pairwise_subject("cq-transit", pid)
    assert first["attributes"] == {"concession": "senior"}  # sealed in the certificate
    assert set(first) == {"decision", "reason", "face", "subject", "attributes", "request_id",
                          "verified_at"}
    # the same gate retrying the same request: the first answer
    _, again = await verify(gw, gate, code, "metro", "rid-1")
    assert again == first
    # any other second use: replayed
    _, second = await verify(gw, gate, code, "metro", "rid-2")
    assert (second["decision"], second["reason"]) == ("deny", "replayed")
    # the next code (next counter) is fine
    _, nxt = await verify(gw, gate, phone.make_code(), "metro", "rid-3")
    assert nxt["decision"] == "allow"


async def test_counter_replay_is_replayed(gw: Gateway) -> None:
    phone, _, _ = await enrolled(gw)
    gate = await gw.client_token(METRO_GATE)
    code = phone.make_code()
    _, first = await verify(gw, gate, code, "metro")
    assert first["decision"] == "allow"
    # the device signs the same counter again, another timestamp: single use on (serial, counter)
    assert phone.certificate is not None
    again = encode_yk2(certificate=phone.certificate, issued_at=int(phone.clock()) - 1,
                       lifetime_s=30, counter=phone.counter, signer=phone.signer)
    assert again != code
    _, second = await verify(gw, gate, again, "metro")
    assert (second["decision"], second["reason"]) == ("deny", "replayed")


async def test_bad_codes_get_the_right_reason_never_a_500(gw: Gateway) -> None:
    phone, answer, _ = await enrolled(gw)
    gate = await gw.client_token(METRO_GATE)
    code = phone.make_code()
    now = int(phone.clock())
    # another device's key over a genuine certificate
    thief = Phone.new()
    forged = encode_yk2(certificate=_cert(answer), issued_at=now, lifetime_s=30, counter=99,
                        signer=thief.signer)
    # a certificate signed by a key the trust list does not have
    stranger = Ed25519Signer.from_seed(os.urandom(32))
    from gateway.codec import normalise_device_key, raw_public_key

    own = encode_certificate(signer=stranger, device_alg="EdDSA",
                             device_key=normalise_device_key(
                                 "EdDSA", raw_public_key(thief.signer.public_key())),
                             serial=os.urandom(12), holder=os.urandom(16), flags=0,
                             not_before=now - 10, not_after=now + 3600)
    self_made = encode_yk2(certificate=own, issued_at=now, lifetime_s=30, counter=1,
                           signer=thief.signer)
    raw = b45decode(code[4:])
    cases = {
        "bad_signature": forged,
        "unknown_issuer": self_made,
        "malformed": "YK2:" + b45encode(raw[:100]),
    }
    for reason, bad in cases.items():
        status, body = await verify(gw, gate, bad, "metro")
        assert (status, body["decision"], body["reason"]) == (200, "deny", reason), reason
    # the genuine code still works after all that
    _, ok = await verify(gw, gate, code, "metro")
    assert ok["decision"] == "allow"


async def test_certificate_window_online(make_gateway: object) -> None:
    import time

    clock = FrozenClock(float(int(time.time())))  # PyJWT checks iat/exp on real time
    gw = await make_gateway(clock=clock, device_cert_ttl_s=300)  # type: ignore[operator]
    phone, answer, token = await enrolled(gw, clock=clock.now)
    assert answer["not_after"] - answer["not_before"] == 300
    gate = await gw.client_token(METRO_GATE)
    assert phone.certificate is not None
    early = encode_yk2(certificate=phone.certificate, issued_at=int(clock.now()) - 60,
                       lifetime_s=60, counter=1, signer=phone.signer)
    _, body = await verify(gw, gate, early, "metro")
    assert body["reason"] == "not_yet_valid"  # a phone clock behind the enrolment
    clock.advance(300 + 10)  # past the certificate's not-after
    late = encode_yk2(certificate=phone.certificate, issued_at=int(clock.now()),
                      lifetime_s=30, counter=2, signer=phone.signer)
    _, body = await verify(gw, gate, late, "metro")
    assert (body["decision"], body["reason"]) == ("deny", "expired")
    # renewal gives a fresh window
    assert phone.needs_renewal()
    await phone.renew(gw.client, token)
    _, body = await verify(gw, gate, phone.make_code(), "metro")
    assert body["decision"] == "allow"


async def test_removed_device_is_revoked_at_once_and_listed(gw: Gateway) -> None:
    phone, answer, token = await enrolled(gw)
    gate = await gw.client_token(METRO_GATE)
    pending = phone.make_code()  # made before the removal, shown after it
    r = await gw.client.delete(f"/v1/me/devices/{answer['device_id']}",
                               headers={"Authorization": f"Bearer {token}"})
    assert r.status == 204
    for code in (pending, phone.make_code()):
        _, body = await verify(gw, gate, code, "metro")
        assert (body["decision"], body["reason"]) == ("deny", "revoked")
    doc = await _deny_list(gw, gate)
    assert [e["serial"] for e in doc["entries"]] == [answer["serial"]]
    # the removed key cannot come back (a stolen phone still holding the app's session)
    with pytest.raises(PhoneError, match="403"):
        await phone.enrol(gw.client, token)
    # a new key on a recovered or new phone can
    fresh, _, _ = await enrolled(gw, token=token)
    _, body = await verify(gw, gate, fresh.make_code(), "metro")
    assert body["decision"] == "allow"


async def test_another_worker_refuses_a_removed_device_within_seconds(
        make_gateway: object) -> None:
    import asyncio

    a = await make_gateway()  # type: ignore[operator]
    b = await make_gateway(keys_dir=a.settings.keys_dir)  # type: ignore[operator]
    pid = await demo_person(a)
    phone, answer, token = await enrolled(a, pid)
    gate_b = await b.client_token(METRO_GATE)
    _, body = await verify(b, gate_b, phone.make_code(), "metro")
    assert body["decision"] == "allow"
    await a.client.delete(f"/v1/me/devices/{answer['device_id']}",
                          headers={"Authorization": f"Bearer {token}"})
    code = phone.make_code()
    for _ in range(40):  # the view refreshes every second; allow a loaded machine 4 s
        _, body = await verify(b, gate_b, code, "metro", request_id=secrets.token_hex(4))
        if body["reason"] == "revoked":
            break
        # an allow here would have spent the code: make a new one for the next try
        code = phone.make_code()
        await asyncio.sleep(0.1)
    assert body["reason"] == "revoked"


async def test_suspended_person_is_revoked_online_and_on_the_list(gw: Gateway) -> None:
    from gateway.web.identity import IDENTITY

    pid = await demo_person(gw)
    phone, answer, _ = await enrolled(gw, pid)
    gate = await gw.client_token(METRO_GATE)
    await gw.app[IDENTITY].suspend(pid)
    _, body = await verify(gw, gate, phone.make_code(), "metro")
    assert body["reason"] == "revoked"
    doc = await _deny_list(gw, gate)
    assert answer["serial"] in [e["serial"] for e in doc["entries"]]


async def _deny_list(gw: Gateway, gate: str, query: str = "") -> dict[str, Any]:
    r = await gw.client.get("/v1/revocations/devices" + query,
                            headers={"Authorization": f"Bearer {gate}"})
    assert r.status == 200 and r.headers["ETag"], await r.text()
    return dict((await r.json())["deny_list"])


async def test_device_deny_list_is_signed_versioned_with_etag_and_deltas(gw: Gateway) -> None:
    """The card deny-list's shape (docs/offline.md §5), signed by the trust-list key."""
    from gateway.codec.jws import JwsKey

    gate = await gw.client_token(METRO_GATE)
    empty = await _deny_list(gw, gate)
    assert (empty["list"], empty["version"], empty["full"], empty["entries"]) == (
        "devices", 0, True, [])
    assert empty["expires_at"] - empty["issued_at"] == gw.settings.deny_list_max_age_s
    _, a, token = await enrolled(gw)
    _, b, _ = await enrolled(gw, token=token)
    for dev in (a, b):
        await gw.client.delete(f"/v1/me/devices/{dev['device_id']}",
                               headers={"Authorization": f"Bearer {token}"})
    auth = {"Authorization": f"Bearer {gate}"}
    r = await gw.client.get("/v1/revocations/devices", headers=auth)
    assert r.headers["Cache-Control"] == "private, no-cache"
    full = await r.json()
    etag = r.headers["ETag"]
    doc = full["deny_list"]
    assert [e["serial"] for e in doc["entries"]] == [a["serial"], b["serial"]]
    assert all(e["not_after"] == a["not_after"] or e["not_after"] == b["not_after"]
               for e in doc["entries"])
    # versions are ms times that grow
    assert doc["version"] >= 1_700_000_000_000
    # the JWS is the document, signed by the trust-list key gates pin (docs/offline.md §2),
    # not by a token key of /.well-known/jwks.json
    jwks = await (await gw.client.get("/.well-known/jwks.json")).json()
    header = json.loads(base64.urlsafe_b64decode(full["jws"].split(".")[0] + "=="))
    assert header["kid"] not in {k["kid"] for k in jwks["keys"]}
    anchor: JwsKey = gw.app[CODES].trust.signing_key()
    _, payload = verify_compact(full["jws"], lambda kid: anchor if kid == anchor.kid else None,
                                "device-deny-list+jwt")
    assert json.loads(payload) == doc
    r = await gw.client.get("/v1/revocations/devices", headers={**auth, "If-None-Match": etag})
    assert r.status == 304
    # a delta after a's version holds b only (a gate drops entries past not_after itself)
    first = await _deny_list(gw, gate)
    v_a = first["version"]
    _, c, _ = await enrolled(gw, token=token)
    await gw.client.delete(f"/v1/me/devices/{c['device_id']}", headers={
        "Authorization": f"Bearer {token}"})
    delta = await _deny_list(gw, gate, f"?since={v_a}")
    assert (delta["full"], delta["since"], delta["removed"]) == (False, v_a, [])
    assert [e["serial"] for e in delta["added"]] == [c["serial"]]
    # a version from the future (a gate that held a list before the store lost it): full
    assert (await _deny_list(gw, gate, "?since=99999999999999"))["full"] is True
    for bad in ("-1", "x", "1" * 20, str(2**63)):
        r = await gw.client.get(f"/v1/revocations/devices?since={bad}", headers=auth)
        assert r.status == 400 and (await r.json())["code"] == "invalid_request"
    # for gates: no token, a resident's token: refused
    assert (await gw.client.get("/v1/revocations/devices")).status == 401
    r = await gw.client.get("/v1/revocations/devices", headers={"Authorization": f"Bearer {token}"})
    assert r.status == 403
    assert json.dumps(full).find("person") == -1  # no person ids, only random serials


async def test_a_phone_with_a_wrong_clock_learns_the_offset_at_enrolment(gw: Gateway) -> None:
    """docs/devices.md "Clock rules": the certificate's not_before is the gateway's clock."""
    import time

    behind = Phone.new(clock=lambda: time.time() - 600)  # ten minutes slow
    gate = await gw.client_token(METRO_GATE)
    await behind.enrol(gw.client, resident_token(gw, await demo_person(gw)))
    assert abs(behind.clock_offset_s - 600) <= 2
    _, body = await verify(gw, gate, behind.make_code(), "metro")
    assert body["decision"] == "allow"
    # without the correction the same phone's code is refused
    behind.clock_offset_s = 0
    _, body = await verify(gw, gate, behind.make_code(), "metro")
    assert (body["decision"], body["reason"]) == ("deny", "not_yet_valid")
