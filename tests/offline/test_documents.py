"""The trust model, pure (gateway side signs, SDK side verifies): pinned key, endorsements on
rotation, versions that never go back, tampering, an unendorsed key, scene policy parity."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.authz.keyring import KeyRing, bootstrap, rotate
from gateway.codec.jws import JwsKey
from gateway.services.scenes import FACES, SceneCatalogue
from gateway.services.trustlist import PERIOD_S, TrustList, ring_endorsements, trust_anchor_jwk
from gateway_gate import GateError, parse_trust_list

T0 = 1_790_000_000 // PERIOD_S * PERIOD_S


class Rings:
    def __init__(self) -> None:
        self.code = bootstrap("code", "EdDSA", T0 - 10)
        self.trust = bootstrap("trust", "EdDSA", T0 - 10)
        self.now = float(T0)
        self.persisted: list[str] = []

    def trust_list(self, **kw: Any) -> TrustList:
        return TrustList(lambda: self.code, lambda: self.trust, lambda: self.now,
                         scenes=SceneCatalogue.load, endorsements=lambda: self.persisted, **kw)


def pin(ring: KeyRing) -> JwsKey:
    return JwsKey.from_jwk(trust_anchor_jwk(ring))


def test_signed_by_the_pinned_key_with_scenes_and_times() -> None:
    r = Rings()
    snap = r.trust_list(max_age_s=7200).snapshot()
    tl, signer = parse_trust_list(snap.body, pin(r.trust))
    assert signer.kid == r.trust.current().kid
    assert tl.version == T0 and tl.issued_at == T0 and tl.next_update == T0 + PERIOD_S
    assert tl.expires_at == T0 + 7200 and tl.code_max_skew_s == 5
    assert {k for (_, k) in tl.keys} == {k.kid for k in r.code.keys}
    assert tl.scenes["metro"].permits("ssc_card", None)


def test_tampered_or_foreign_lists_are_refused() -> None:
    r = Rings()
    body = json.loads(r.trust_list().snapshot().body)
    header, payload, sig = body["jws"].split(".")
    # one character of the payload changed
    flipped = payload[:10] + ("A" if payload[10] != "A" else "B") + payload[11:]
    bad_sig = sig[:20] + ("A" if sig[20] != "A" else "B") + sig[21:]
    for bad in (f"{header}.{flipped}.{sig}", f"{header}.{payload}.{bad_sig}",
                f"{header}.{payload}", "x.y.z"):
        with pytest.raises(GateError) as e:
            parse_trust_list(json.dumps({**body, "jws": bad}).encode(), pin(r.trust))
        assert e.value.code == "bad_signature"
    # the clear copy is not what is believed: changing it changes nothing
    body2 = dict(body, trust_list={"version": 9**9})
    tl, _ = parse_trust_list(json.dumps(body2).encode(), pin(r.trust))
    assert tl.version == T0
    # signed by a key the gate never pinned and nobody endorsed
    other = Rings()
    with pytest.raises(GateError) as e:
        parse_trust_list(other.trust_list().snapshot().body, pin(r.trust))
    assert e.value.code == "untrusted_signer"
    # alg "none" / a header with extra members

    def b64(d: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    kid = r.trust.current().kid
    for hdr in ({"alg": "none", "kid": kid, "typ": "trust-list+jwt"},
                {"alg": "EdDSA", "kid": kid, "typ": "trust-list+jwt", "jku": "http://x"},
                {"alg": "EdDSA", "kid": kid, "typ": "card-deny-list+jwt"}):
        with pytest.raises(GateError):
            parse_trust_list(json.dumps({**body, "jws": f"{b64(hdr)}.{payload}.{sig}"})
                             .encode(), pin(r.trust))


def test_rotation_follows_endorsements_and_the_gate_repins() -> None:
    r = Rings()
    first = pin(r.trust)
    # three rotations while a gate slept; the ring forgets the retired keys (max life 1 s)
    for _ in range(3):
        r.now += 10
        r.trust = rotate(r.trust, r.now, 1)
        r.persisted = list(dict.fromkeys([*r.persisted, *ring_endorsements(r.trust)]))
    r.now += 10
    r.trust = rotate(r.trust, r.now, 1)  # drops the keys retired 10 s ago
    r.persisted = list(dict.fromkeys([*r.persisted, *ring_endorsements(r.trust)]))
    assert first.kid not in {k.kid for k in r.trust.keys}
    snap = r.trust_list().snapshot()
    _, signer = parse_trust_list(snap.body, first)
    assert signer.kid == r.trust.current().kid != first.kid
    # without the endorsements of the keys that left the ring, the chain is broken
    body = json.loads(snap.body)
    body["endorsements"] = body["endorsements"][-2:]
    with pytest.raises(GateError) as e:
        parse_trust_list(json.dumps(body).encode(), first)
    assert e.value.code == "untrusted_signer"


def test_versions_grow_with_key_events_and_hours(tmp_path: Path) -> None:
    r = Rings()
    v1 = parse_trust_list(r.trust_list().snapshot().body, pin(r.trust))[0]
    r.now += 60
    r.code = rotate(r.code, r.now, 95)
    v2 = parse_trust_list(r.trust_list().snapshot().body, pin(r.trust))[0]
    assert v2.version == int(r.now) > v1.version
    r.now += PERIOD_S
    v3 = parse_trust_list(r.trust_list().snapshot().body, pin(r.trust))[0]
    assert v3.version > v2.version and v3.expires_at > v2.expires_at


def test_scene_policy_offline_equals_online() -> None:
    """scene_not_permitted is the same offline and online: every scene x face x region."""
    r = Rings()
    tl, _ = parse_trust_list(r.trust_list().snapshot().body, pin(r.trust))
    catalogue = SceneCatalogue.load()
    assert set(tl.scenes) == {s.id for s in catalogue.all()}
    for scene in catalogue.all():
        for face in FACES:
            for region in (None, "CQ", "SC", "GD"):
                assert tl.scenes[scene.id].permits(face, region) == scene.permits(face, region)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=3), st.integers(min_value=0, max_value=10_000))
def test_any_byte_change_in_the_signed_payload_is_refused(junk: bytes, where: int) -> None:
    r = RINGS
    body = json.loads(BODY)
    header, payload, sig = body["jws"].split(".")
    raw = bytearray(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    i = where % len(raw)
    raw[i:i + len(junk)] = bytes((b ^ 0x01) | 0x01 for b in junk)[: len(raw) - i]
    p2 = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    if p2 == payload:
        return
    with pytest.raises(GateError):
        parse_trust_list(json.dumps({**body, "jws": f"{header}.{p2}.{sig}"}).encode(),
                         pin(r.trust))


RINGS = Rings()
BODY = RINGS.trust_list().snapshot().body
