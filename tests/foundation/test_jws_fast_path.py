"""The JWS fast path of JwtSigner.sign (issue 13: precomputed header segment, no pyjwt per
call) writes exactly pyjwt's bytes for header and payload, a signature pyjwt verifies, and
ES256 signatures in low-S form only."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.authz.ecdsa import P256_N, is_low_s
from gateway.authz.keyring import bootstrap
from gateway.authz.tokens import JwtSigner, jws_header_segment
from gateway.base64url import unb64u
from gateway.clock import FrozenClock

CLAIM_NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.text(max_size=40)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(CLAIM_NAMES, inner, max_size=4),
    max_leaves=12)
#: pyjwt refuses a non-string `iss`; every signer of ours passes a string one
CLAIMS = st.builds(lambda d, iss: {**d, **({"iss": iss} if iss is not None else {})},
                   st.dictionaries(CLAIM_NAMES.filter(lambda n: n != "iss"), VALUES,
                                   max_size=8), st.none() | st.text(max_size=30))


@pytest.fixture(scope="module", params=["ES256", "EdDSA"])
def ring_and_signer(request: pytest.FixtureRequest) -> tuple[Any, JwtSigner]:
    clock = FrozenClock()
    ring = bootstrap("token", request.param, clock.now())
    return ring, JwtSigner(lambda: ring, clock.now)


@settings(max_examples=60, deadline=None)
@given(claims=CLAIMS, typ=st.sampled_from(["at+jwt", "JWT", "logout+jwt"]))
def test_same_bytes_as_pyjwt_and_verifiable(ring_and_signer: tuple[Any, JwtSigner],
                                            claims: dict[str, Any], typ: str) -> None:
    ring, signer = ring_and_signer
    key = ring.current()
    ours = signer.sign(claims, typ=typ)
    theirs = jwt.encode(claims, key.private_key, algorithm=key.alg,
                        headers={"kid": key.kid, "typ": typ})
    assert ours.split(".")[:2] == theirs.split(".")[:2]
    decoded = jwt.decode(ours, key.private_key.public_key(), algorithms=[key.alg],
                         options={"verify_signature": True, "verify_exp": False,
                                  "verify_iat": False, "verify_nbf": False,
                                  "verify_aud": False, "verify_iss": False})
    assert decoded == json.loads(json.dumps(claims))
    assert jwt.get_unverified_header(ours) == {"alg": key.alg, "kid": key.kid, "typ": typ}
    if key.alg == "ES256":
        assert is_low_s(ours)


def test_es256_signatures_are_low_s_every_time() -> None:
    clock = FrozenClock()
    ring = bootstrap("token", "ES256", clock.now())
    signer = JwtSigner(lambda: ring, clock.now)
    highs = 0
    for i in range(200):  # about half of raw ECDSA signatures are high-S
        sig = unb64u(signer.sign({"i": i}).rsplit(".", 1)[1])
        assert len(sig) == 64
        highs += int.from_bytes(sig[32:], "big") > P256_N // 2
    assert highs == 0


def test_header_segment_is_pyjwts() -> None:
    seg = jws_header_segment("ES256", "k-1", "at+jwt")
    assert json.loads(unb64u(seg)) == {"alg": "ES256", "kid": "k-1", "typ": "at+jwt"}
    assert unb64u(seg) == b'{"alg":"ES256","kid":"k-1","typ":"at+jwt"}'
