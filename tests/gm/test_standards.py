"""The standards' published examples: GB/T 32905 (SM3), GB/T 32907 (SM4), GB/T 32918 (SM2),
and the SM2 code vectors (tests/vectors/gm.json) reproduced and verified."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.codec import CodeError, VerificationKey, verify_code
from gateway.codec.sm2 import N, Sm2PrivateKey, Sm2PublicKey, sm3
from tests.gm import reference
from tests.gm.make_gm_vectors import build

# GB/T 32918.5-2017 signature example on the recommended curve (also GM/T 0003.5-2012).
D = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
K = 0x59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21
PUB = bytes.fromhex("04" "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
                    "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13")
SIG = bytes.fromhex("F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3"
                    "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA")
MSG = b"message digest"


def test_sm3_gbt32905_examples() -> None:
    assert sm3(b"abc").hex() == (
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0")
    assert sm3(b"abcd" * 16).hex() == (
        "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732")


def _sm4_ecb(key: bytes) -> Any:
    return Cipher(algorithms.SM4(key), modes.ECB()).encryptor()


def test_sm4_gbt32907_examples() -> None:
    key = bytes.fromhex("0123456789abcdeffedcba9876543210")
    enc = _sm4_ecb(key)
    assert enc.update(key).hex() == "681edf34d206965e86b3e94f536e4246"
    block = key
    for _ in range(1_000_000):  # example 2: encrypt a million times with the same key
        block = enc.update(block)
    assert block.hex() == "595298c7c6fd271f0402f804c33d3f66"


def test_sm2_gbt32918_example_key_and_signature() -> None:
    key = Sm2PrivateKey(D.to_bytes(32, "big"))
    assert key.public_key().point == PUB  # OpenSSL's d·G
    assert reference.public_point(D) == PUB
    assert reference.sign(D, MSG, K) == SIG  # the standard's k reproduces its (r, s)
    assert key.public_key().verify(SIG, MSG)
    assert not key.public_key().verify(SIG, MSG, b"ALICE123@YAHOO.COM")
    assert not key.public_key().verify(SIG, MSG + b".")


def test_gateway_signatures_pass_the_reference_verifier() -> None:
    key = Sm2PrivateKey.generate()
    for i in range(20):
        msg = b"YK1:" + bytes([i]) * 40
        sig = key.sign(msg)
        assert reference.verify(key.public_key().point, msg, sig)
        assert not reference.verify(key.public_key().point, msg, sig, b"other")


def test_signatures_are_randomised() -> None:
    key = Sm2PrivateKey.generate()
    assert key.sign(MSG) != key.sign(MSG)


def test_pem_round_trip_and_bad_keys() -> None:
    key = Sm2PrivateKey.generate()
    again = Sm2PrivateKey.from_pem(key.to_pem())
    assert again.public_key() == key.public_key()
    assert Sm2PublicKey.from_pem(key.public_key().to_pem()) == key.public_key()
    for d in (0, N - 1, N):
        with pytest.raises(ValueError):
            Sm2PrivateKey(d.to_bytes(32, "big"))
    off_curve = PUB[:-1] + bytes([PUB[-1] ^ 1])
    with pytest.raises(ValueError):
        Sm2PublicKey(off_curve)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=80))
def test_verify_never_raises_on_arbitrary_signatures(sig: bytes) -> None:
    assert Sm2PublicKey(PUB).verify(sig, MSG) is (sig == SIG)


VECTORS = Path(__file__).parents[1] / "vectors" / "gm.json"
DOC = json.loads(VECTORS.read_text(encoding="utf-8"))
TRUST = {(k["jwk"]["iss"], k["jwk"]["kid"]): VerificationKey.from_jwk(k["jwk"])
         for k in DOC["keys"] if k["in_trust_list"]}


def test_committed_gm_vectors_equal_a_fresh_build() -> None:
    assert build() == DOC


@pytest.mark.parametrize("vector", DOC["vectors"], ids=lambda v: v["name"])
def test_gm_vector(vector: dict[str, Any]) -> None:
    try:
        claims = verify_code(vector["code"], lambda i, k: TRUST.get((i, k)), vector["now"],
                             vector["max_skew_s"])
    except CodeError as e:
        assert vector["expect"] == {"result": "error", "reason": e.reason}
        return
    c = vector["expect"]["claims"]
    assert (claims.issuer, claims.kid, claims.alg) == (c["issuer"], c["kid"], "SM2")


def test_no_low_s_twin_as_in_ecdsa() -> None:
    """ECDSA's (r, n - s) twin is why ES256 tokens are normalised (authz/ecdsa.py); SM2 has
    none: t = r + s enters the verification, so the twin fails."""
    key = Sm2PrivateKey.generate()
    for _ in range(10):
        sig = key.sign(MSG)
        s = int.from_bytes(sig[32:], "big")
        twin = sig[:32] + (N - s).to_bytes(32, "big")
        assert key.public_key().verify(sig, MSG) and not key.public_key().verify(twin, MSG)
