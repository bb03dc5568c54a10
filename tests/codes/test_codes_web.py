"""POST /v1/codes and POST /v1/codes/verify through the real app on real Redis."""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.clock import FrozenClock
from gateway.codec import b45decode, b45encode, decode
from gateway.services.codes import holder_handle, open_holder_handle
from tests.codes.conftest import (
    BUS_GATE,
    DOOR_GATE,
    LIBRARY_GATE,
    METRO_GATE,
    PHARMACY_GATE,
    SCENIC_GATE,
    Gateway,
    demo_person,
    extra_gate,
    issue,
    new_person_id,
    read_png,
    resident_token,
    verify,
)


async def _code(gw: Gateway, pid: str | None = None) -> str:
    r = await issue(gw, resident_token(gw, pid or await demo_person(gw)))
    return str((await r.json())["code"])


async def test_png_decoded_by_zxing_verifies_allow_then_replayed(gw: Gateway) -> None:
    pid = await demo_person(gw)
    r = await issue(gw, resident_token(gw, pid), accept="image/png")
    assert r.content_type == "image/png"
    [code] = read_png(await r.read())
    assert code.startswith("YK1:")
    gate = await gw.client_token(METRO_GATE)
    status, first = await verify(gw, gate, code, "metro", "rid-1")
    assert status == 200
    assert first["decision"] == "allow" and first["reason"] == "ok"
    assert first["face"] == "ykm" and first["request_id"] == "rid-1"
    assert first["subject"] == gw.app[__import__("gateway.app").app.CORE].data_keys \
        .pairwise_subject("cq-transit", pid)
    status, second = await verify(gw, gate, code, "metro", "rid-2")
    assert (status, second["decision"], second["reason"]) == (200, "deny", "replayed")
    assert second["subject"] is None and second["attributes"] == {}


async def test_same_request_id_retry_returns_the_first_answer(gw: Gateway) -> None:
    code = await _code(gw)
    gate = await gw.client_token(METRO_GATE)
    _, first = await verify(gw, gate, code, "metro", "retry-me")
    await asyncio.sleep(0.01)
    _, again = await verify(gw, gate, code, "metro", "retry-me")
    assert again == first and first["decision"] == "allow"
    # the same request id from ANOTHER gate is a replay, not a retry
    other = await extra_gate(gw, "gate-metro-l1-xiaoshizi-2", "metro", "cq-transit")
    _, theirs = await verify(gw, other, code, "metro", "retry-me")
    assert theirs["reason"] == "replayed"


async def test_json_answer_shape_and_svg(gw: Gateway) -> None:
    token = resident_token(gw, new_person_id())
    body = await (await issue(gw, token)).json()
    assert set(body) == {"code", "face", "issued_at", "expires_at", "refresh_in"}
    assert body["face"] == "ykm" and 0 < body["refresh_in"] <= 30
    assert body["issued_at"].endswith("Z") and body["expires_at"] > body["issued_at"]
    svg = await issue(gw, token, accept="image/svg+xml")
    assert svg.content_type == "image/svg+xml" and b"<svg" in await svg.read()


async def test_codes_carry_no_personal_data_and_are_unlinkable(gw: Gateway) -> None:
    pid = new_person_id()
    a, b = await _code(gw, pid), await _code(gw, pid)
    ca, cb = decode(a).claims, decode(b).claims
    assert ca.holder != cb.holder and ca.nonce != cb.nonce
    assert bytes.fromhex(pid) not in b45decode(a[4:])


@given(pid=st.binary(min_size=16, max_size=16), nonce=st.binary(min_size=12, max_size=12),
       key=st.binary(min_size=32, max_size=32))
def test_holder_handle_round_trip(pid: bytes, nonce: bytes, key: bytes) -> None:
    handle = holder_handle(key, pid.hex(), nonce)
    assert len(handle) == 16
    assert open_holder_handle(key, handle, nonce) == pid.hex()


async def test_flipped_bit_is_bad_signature(gw: Gateway) -> None:
    code = await _code(gw)
    raw = bytearray(b45decode(code[4:]))
    raw[30] ^= 0x01  # inside issued_at..nonce: still well-formed, signature no longer matches
    tampered = "YK1:" + b45encode(bytes(raw))
    gate = await gw.client_token(METRO_GATE)
    _, ans = await verify(gw, gate, tampered, "metro")
    assert (ans["decision"], ans["reason"]) == ("deny", "bad_signature")
    # and the genuine code was not consumed by the forgery
    _, ok = await verify(gw, gate, code, "metro")
    assert ok["decision"] == "allow"


async def test_unknown_kid_is_unknown_issuer(gw: Gateway) -> None:
    code = await _code(gw)
    raw = bytearray(b45decode(code[4:]))
    raw[2:6] = bytes(a ^ 0xFF for a in raw[2:6])
    gate = await gw.client_token(METRO_GATE)
    _, ans = await verify(gw, gate, "YK1:" + b45encode(bytes(raw)), "metro")
    assert ans["reason"] == "unknown_issuer" and ans["face"] == "ykm"


async def test_expired_and_not_yet_valid_with_frozen_clock(make_gateway) -> None:  # type: ignore[no-untyped-def]
    clock = FrozenClock(float(int(time.time())))  # PyJWT checks iat/exp on real time
    start = clock.t
    gw = await make_gateway(clock=clock)
    code = await _code(gw)
    gate = await gw.client_token(METRO_GATE)
    clock.advance(30 + 5 + 1)  # lifetime + skew + 1 s
    _, ans = await verify(gw, gate, code, "metro")
    assert ans["reason"] == "expired"
    clock.t = start - 60
    _, early = await verify(gw, gate, code, "metro")
    assert early["reason"] == "not_yet_valid"


async def test_retry_just_after_expiry_still_gets_first_answer(make_gateway) -> None:  # type: ignore[no-untyped-def]
    clock = FrozenClock(float(int(time.time())))  # PyJWT checks iat/exp on real time
    gw = await make_gateway(clock=clock)
    code = await _code(gw)
    gate = await gw.client_token(METRO_GATE)
    _, first = await verify(gw, gate, code, "metro", "late-retry")
    clock.advance(40)
    _, again = await verify(gw, gate, code, "metro", "late-retry")
    assert again == first
    _, other = await verify(gw, gate, code, "metro", "another")
    assert other["reason"] == "expired"


async def test_ttl_of_the_claim_matches_remaining_life(redis_client, gw: Gateway) -> None:  # type: ignore[no-untyped-def]
    code = await _code(gw)
    gate = await gw.client_token(METRO_GATE)
    await verify(gw, gate, code, "metro")
    from gateway.adapters.redis_records import claim_key

    nonce = decode(code).claims.nonce
    s = gw.settings
    key = claim_key(s.redis_prefix, s.transactions_outbox_shards, f"code:{nonce.hex()}")
    ttl = await redis_client.pttl(key)
    # the code's remaining life + skew + the offline allowance (a buffered scan of it may
    # still arrive) + the retry grace
    assert (30 + s.offline_max_s) * 1000 <= ttl <= (30 + 5 + s.offline_max_s + 30) * 1000


async def test_scene_attributes_and_pairwise_subjects(gw: Gateway) -> None:
    pid = await demo_person(gw)
    subjects = {}
    for gate_id, scene in ((METRO_GATE, "metro"), (BUS_GATE, "bus"),
                           (LIBRARY_GATE, "library"), (DOOR_GATE, "community_door"),
                           (SCENIC_GATE, "scenic_spot")):
        gate = await gw.client_token(gate_id)
        _, ans = await verify(gw, gate, await _code(gw, pid), scene)
        assert ans["decision"] == "allow", ans
        scene_def = gw.app[__import__("gateway.web.codes").web.codes.SCENES].get(scene)
        assert set(ans["attributes"]) <= set(scene_def.attributes)
        subjects[gate_id] = ans["subject"]
    # only the scene's attributes, with the demo resident's values
    gate = await gw.client_token(SCENIC_GATE)
    _, scenic = await verify(gw, gate, await _code(gw, pid), "scenic_spot")
    assert scenic["attributes"] == {"concession": "senior"}
    # same sector (cq-transit: metro and bus) → same subject; other sectors → different
    assert subjects[METRO_GATE] == subjects[BUS_GATE]
    assert subjects[LIBRARY_GATE] == subjects[SCENIC_GATE]  # both cq-culture-tourism
    assert len({subjects[METRO_GATE], subjects[LIBRARY_GATE], subjects[DOOR_GATE]}) == 3
    # door scenes disclose nothing at all
    gate = await gw.client_token(DOOR_GATE)
    _, door = await verify(gw, gate, await _code(gw, pid), "community_door")
    assert door["attributes"] == {}
    # another person at the same gate gets another subject
    _, other = await verify(gw, gate, await _code(gw, await demo_person(gw, "r-li-na")),
                            "community_door")
    assert other["subject"] != door["subject"]


JUNK = [
    "", " ", "hello", "https://example.com/?code=YK1:ABC", "YK1:", "YK1:" + "A" * 156,
    "ESSC1:", "ESSC1:%%%%", "WIFI:S:cafe;T:WPA;P:pass;;", "YK2:" + "0" * 156,
    "\x00\x01\x02", "渝快码", "YK1:" + "::::" * 39, "X" * 10_000, "yk1:abc",
]


async def test_junk_codes_are_malformed_never_errors(gw: Gateway) -> None:
    gate = await gw.client_token(METRO_GATE)
    real = await _code(gw)
    cases = [*JUNK, real[:-1], real[:100], real + "A", real.lower(), real[:4] + real[5:],
             12345, None.__class__.__name__, ["YK1:"], {"a": 1}, True, 1.5]
    for junk in cases:
        status, ans = await verify(gw, gate, junk, "metro")
        assert status == 200, (junk, ans)
        assert (ans["decision"], ans["reason"]) == ("deny", "malformed"), junk


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300))
async def test_any_text_is_a_deny_not_an_error(gw: Gateway, text: str) -> None:
    gate = await gw.client_token(METRO_GATE)
    status, ans = await verify(gw, gate, text, "metro")
    assert status == 200 and ans["decision"] == "deny"


async def test_bad_requests(gw: Gateway) -> None:
    gate = await gw.client_token(METRO_GATE)
    auth = {"Authorization": f"Bearer {gate}"}
    code = await _code(gw)
    r = await gw.client.post("/v1/codes/verify", json={"code": code, "scene": "metro"},
                             headers=auth)
    assert r.status == 400 and (await r.json())["code"] == "invalid_request"
    r = await gw.client.post("/v1/codes/verify",
                             json={"code": code, "scene": "moon_base", "request_id": "x"},
                             headers=auth)
    assert r.status == 400
    r = await gw.client.post("/v1/codes/verify", data=b"not json",
                             headers={**auth, "Content-Type": "application/json"})
    assert r.status == 400
    r = await gw.client.post("/v1/codes/verify", data=b"[1,2]",
                             headers={**auth, "Content-Type": "application/json"})
    assert r.status == 400
    r = await gw.client.post("/v1/codes/verify", json={"code": code, "request_id": "x"},
                             headers=auth)
    assert r.status == 400
    # a scene the gate is not registered for: 403
    r = await gw.client.post("/v1/codes/verify",
                             json={"code": code, "scene": "library", "request_id": "x"},
                             headers=auth)
    assert r.status == 403 and (await r.json())["code"] == "forbidden"
    # body over the limit: 413
    r = await gw.client.post("/v1/codes/verify",
                             json={"code": "A" * 20_000, "scene": "metro", "request_id": "x"},
                             headers=auth)
    assert r.status == 413
    # the code was never consumed by any of these
    _, ok = await verify(gw, gate, code, "metro")
    assert ok["decision"] == "allow"


async def test_wrong_token_kinds_are_refused(gw: Gateway) -> None:
    resident = resident_token(gw, new_person_id())
    code = await _code(gw)
    r = await gw.client.post("/v1/codes/verify",
                             json={"code": code, "scene": "metro", "request_id": "x"},
                             headers={"Authorization": f"Bearer {resident}"})
    assert r.status == 403
    rp = await gw.client_token("rp-service-hall")
    r = await gw.client.post("/v1/codes/verify",
                             json={"code": code, "scene": "metro", "request_id": "x"},
                             headers={"Authorization": f"Bearer {rp}"})
    assert r.status == 403
    r = await gw.client.post("/v1/codes/verify",
                             json={"code": code, "scene": "metro", "request_id": "x"})
    assert r.status == 401
    gate = await gw.client_token(METRO_GATE)
    r = await gw.client.post("/v1/codes", json={}, headers={"Authorization": f"Bearer {gate}"})
    assert r.status == 403
    r = await gw.client.post("/v1/codes", json={"face": "passport"},
                             headers={"Authorization": f"Bearer {resident}"})
    assert r.status == 400


async def test_essc_code_from_the_platform_verifies_at_the_gate(gw: Gateway) -> None:
    """互通互认: an e-SSC code (issued by the sandbox e-SSC platform) passes where ykm does."""
    token = resident_token(gw, await demo_person(gw, "r-zhang-wei"))
    body = await (await issue(gw, token, {"face": "essc"})).json()
    assert body["face"] == "essc" and body["code"].startswith("ESSC1:")
    gate = await gw.client_token(METRO_GATE)
    status, ans = await verify(gw, gate, body["code"], "metro")
    assert (status, ans["decision"], ans["face"]) == (200, "allow", "essc"), ans
    assert ans["subject"] == (await verify(gw, gate, await _code(gw), "metro"))[1]["subject"]
    _, again = await verify(gw, gate, body["code"], "metro")
    assert again["reason"] == "replayed"


async def test_other_provinces_essc_settles_at_a_pharmacy(gw: Gateway) -> None:
    """A Sichuan e-SSC code at a pharmacy: 异地 settlement (seed 003 item 55) is allowed.
    (A region a scene does not list is scene_not_permitted: tests/operator/test_scenes_live.py.)"""
    from cryptography.hazmat.primitives.asymmetric import ec

    from gateway.codec import Es256Signer, encode_essc

    token = resident_token(gw, await demo_person(gw, "r-li-na"))
    body = await (await issue(gw, token, {"face": "essc", "region": "SC"})).json()
    gate = await gw.client_token(PHARMACY_GATE)
    _, ans = await verify(gw, gate, body["code"], "pharmacy")
    assert (ans["decision"], ans["reason"], ans["face"]) == ("allow", "ok", "essc")
    # an e-SSC key the trust list does not hold
    now = int(time.time())
    other = Es256Signer(ec.generate_private_key(ec.SECP256R1()), kid="sc-test-2")
    code2 = encode_essc(region="SC", holder=b"x", issued_at=now, lifetime_s=30, signer=other)
    _, ans2 = await verify(gw, gate, code2, "pharmacy")
    assert ans2["reason"] == "unknown_issuer"


async def test_concurrent_verifications_in_one_process_exactly_one_allow(gw: Gateway) -> None:
    code = await _code(gw)
    gate = await gw.client_token(METRO_GATE)
    answers = await asyncio.gather(*(verify(gw, gate, code, "metro", f"c-{i}")
                                     for i in range(100)))
    decisions = [a[1]["reason"] for a in answers]
    assert decisions.count("ok") == 1 and decisions.count("replayed") == 99


@pytest.mark.parametrize("accept", ["text/html", "image/gif"])
async def test_unacceptable_media_type(gw: Gateway, accept: str) -> None:
    token = resident_token(gw, new_person_id())
    r = await gw.client.post("/v1/codes", json={},
                             headers={"Authorization": f"Bearer {token}", "Accept": accept})
    assert r.status == 406
    assert (await r.json())["code"] == "invalid_request"  # one of the contract's stable codes


@pytest.mark.parametrize(("accept", "expected"), [
    ("image/png;q=0.5, application/json", "application/json"),
    ("application/json;q=0, image/png", "image/png"),
    ("image/*", "image/png"),
    ("image/svg+xml, image/png;q=0.9", "image/svg+xml"),
    ("text/html, */*;q=0.1", "application/json"),
    ("image/*;q=0.2, image/svg+xml;q=0, application/json;q=0.1", "image/png"),
    ("IMAGE/PNG", "image/png"),
])
async def test_accept_is_negotiated_by_q_values(gw: Gateway, accept: str, expected: str) -> None:
    """RFC 9110 §12.5.1: the highest q wins, q=0 refuses a type, the most specific range
    gives a type its q; ties go to JSON."""
    token = resident_token(gw, new_person_id())
    r = await issue(gw, token, accept=accept)
    assert r.headers["Content-Type"].split(";")[0] == expected


async def test_an_accept_refusing_every_offered_type_is_406(gw: Gateway) -> None:
    token = resident_token(gw, new_person_id())
    r = await gw.client.post("/v1/codes", json={}, headers={
        "Authorization": f"Bearer {token}",
        "Accept": "application/json;q=0, image/*;q=0"})
    assert r.status == 406
    assert r.headers["Cache-Control"] == "no-store"  # CONTRACT: POST /v1/codes, always


def test_secrets_module_is_used_for_request_ids() -> None:
    assert len(secrets.token_hex(8)) == 16
