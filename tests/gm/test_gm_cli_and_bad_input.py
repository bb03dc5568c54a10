"""The key CLI with SM2 (generate, rotate next → current → retired, list; OpenSSL reads the
key files), and bad SM2 input answered `bad_signature`, never a crash: in the codec (Hypothesis
byte flips) and at POST /v1/codes/verify."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.adapters.keyfiles import KeyRingFiles
from gateway.codec import (
    CodeError,
    Es256Signer,
    Sm2Signer,
    VerificationKey,
    b45decode,
    b45encode,
    encode_essc,
    encode_ykm,
    verify_code,
)
from gateway.codec.sm2 import N
from tests.codes.conftest import METRO_GATE, demo_person, issue, resident_token, verify
from tests.web.conftest import GatewayFactory

PY = sys.executable


def _cli(args: list[str], keys_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "gateway", *args], capture_output=True, text=True,
                          timeout=120, check=False,
                          env={**os.environ, "GATEWAY_KEYS_DIR": str(keys_dir), **env})


def _states(keys_dir: Path, purpose: str) -> list[tuple[str, str]]:
    return sorted((k.alg, k.state) for k in KeyRingFiles(keys_dir, purpose).load().keys)


def test_keys_cli_generates_rotates_and_lists_sm2(tmp_path: Path) -> None:
    gm = tmp_path / "gm"
    r = _cli(["keys", "generate"], gm, GATEWAY_CRYPTO_SUITE="gm")
    assert r.returncode == 0, r.stderr
    assert _states(gm, "code") == [("SM2", "current"), ("SM2", "next")]
    assert _states(gm, "token") == [("SM2", "current"), ("SM2", "next")]
    assert _states(gm, "oidc") == [("ES256", "current"), ("ES256", "next")]
    assert (gm / "data" / "subjects.suite").read_text() == "gm"
    pem = next((gm / "code").glob("*.pem"))
    out = subprocess.run(["openssl", "pkey", "-in", str(pem), "-noout", "-text"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert "ASN1 OID: SM2" in out

    # an intl deployment moves its code ring EdDSA -> SM2 in two rotations
    intl = tmp_path / "intl"
    assert _cli(["keys", "generate"], intl).returncode == 0
    assert _states(intl, "code") == [("EdDSA", "current"), ("EdDSA", "next")]
    assert _cli(["keys", "rotate", "--purpose", "code", "--alg", "SM2"], intl).returncode == 0
    assert _states(intl, "code") == [("EdDSA", "current"), ("EdDSA", "retired"),
                                     ("SM2", "next")]
    assert _cli(["keys", "rotate", "--purpose", "code"], intl).returncode == 0
    assert _states(intl, "code") == [("EdDSA", "retired"), ("EdDSA", "retired"),
                                     ("SM2", "current"), ("SM2", "next")]
    listed = _cli(["keys", "list", "--purpose", "code"], intl)
    assert listed.returncode == 0
    assert "\tSM2\tcurrent" in listed.stdout and "\tEdDSA\tretired verifies until" in listed.stdout


SIGNER = Sm2Signer.from_scalar((12345678).to_bytes(32, "big"))
TRUST = {("ykm", SIGNER.kid): VerificationKey.of("ykm", SIGNER.public_key())}
IAT = 1_790_000_000
GOOD = encode_ykm(holder=bytes(16), issued_at=IAT, lifetime_s=30, signer=SIGNER)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 103), st.integers(1, 255))
def test_any_byte_flip_of_an_sm2_code_is_refused_with_a_reason(offset: int, mask: int) -> None:
    raw = bytearray(b45decode(GOOD[4:]))
    raw[offset] ^= mask
    try:
        verify_code("YK1:" + b45encode(bytes(raw)), lambda i, k: TRUST.get((i, k)), IAT + 1)
    except CodeError as e:
        assert e.reason in {"malformed", "unknown_issuer", "bad_signature", "expired",
                            "not_yet_valid"}
    else:  # only a flip that changes nothing signed could pass, and there is none
        raise AssertionError("a modified code verified")


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=64, max_size=64))
def test_arbitrary_signatures_are_bad_signature(sig: bytes) -> None:
    raw = b45decode(GOOD[4:])
    code = "YK1:" + b45encode(raw[:40] + sig)
    try:
        verify_code(code, lambda i, k: TRUST.get((i, k)), IAT + 1)
    except CodeError as e:
        assert e.reason == "bad_signature"
    else:
        raise AssertionError("a random signature verified")


def test_essc_version_and_key_algorithm_must_agree() -> None:
    es = Es256Signer.from_scalar((99).to_bytes(32, "big"), kid="cq-es")
    sm = Sm2Signer.from_scalar((99).to_bytes(32, "big"), kid="cq-es")  # same kid, other alg
    trust = {("essc:CQ", "cq-es"): VerificationKey.of("essc:CQ", es.public_key(), kid="cq-es")}
    code = encode_essc(region="CQ", holder=b"h", issued_at=IAT, lifetime_s=30, signer=sm)
    try:
        verify_code(code, lambda i, k: trust.get((i, k)), IAT + 1)
    except CodeError as e:
        assert e.reason == "bad_signature"
    else:
        raise AssertionError("an SM2 code verified with an ES256 key")


async def test_gateway_answers_bad_sm2_signatures_with_bad_signature(
        make_gateway: GatewayFactory) -> None:
    g = await make_gateway(crypto_suite="gm")
    code = (await (await issue(g, resident_token(g, await demo_person(g)))).json())["code"]
    raw = b45decode(code[4:])
    gate = await g.client_token(METRO_GATE)
    n = N.to_bytes(32, "big")
    r = raw[40:72]
    bad = {
        "r = 0": bytes(32) + raw[72:],
        "s = n": r + n,
        "r, s all ones": b"\xff" * 64,
        "r + s = n": r + ((N - int.from_bytes(r, "big")) % N).to_bytes(32, "big"),
        "another distinguishing identifier": _other_distid_signature(g, raw[:40]),
    }
    for what, sig in bad.items():
        status, ans = await verify(g, gate, "YK1:" + b45encode(raw[:40] + sig), "metro")
        assert (status, ans["decision"], ans["reason"]) == (200, "deny", "bad_signature"), what
    status, ans = await verify(g, gate, code, "metro")  # the untouched code still passes
    assert (status, ans["decision"]) == (200, "allow"), ans


def _other_distid_signature(g: object, body: bytes) -> bytes:
    from gateway.app import CORE

    key = g.app[CORE].code_ring().current().private_key  # type: ignore[attr-defined]
    return bytes(key.sign(b"YK1:" + body, b"ALICE123@YAHOO.COM"))


def test_an_agreed_identifier_travels_in_the_trust_list_jwk() -> None:
    """GM/T 0009 §10's default unless configured: a platform that agreed another identifier
    says so in its trust-list key (`sm2_id`); the default key refuses such a code."""
    alice = b"ALICE123@YAHOO.COM"
    signer = Sm2Signer.from_scalar((4242).to_bytes(32, "big"), kid="sc-sm2-id", distid=alice)
    code = encode_essc(region="SC", holder=b"h", issued_at=IAT, lifetime_s=30, signer=signer)
    vk = VerificationKey.of("essc:SC", signer.public_key(), kid="sc-sm2-id", sm2_id=alice)
    jwk = vk.to_jwk()
    assert jwk["sm2_id"] == "ALICE123@YAHOO.COM"
    again = VerificationKey.from_jwk(jwk)
    assert verify_code(code, lambda i, k: {("essc:SC", "sc-sm2-id"): again}.get((i, k)),
                       IAT + 1).alg == "SM2"
    plain = VerificationKey.from_jwk({k: v for k, v in jwk.items() if k != "sm2_id"})
    try:
        verify_code(code, lambda i, k: {("essc:SC", "sc-sm2-id"): plain}.get((i, k)), IAT + 1)
    except CodeError as e:
        assert e.reason == "bad_signature"
    else:
        raise AssertionError("verified with the wrong identifier")
    for bad in ("", "é", "x" * 65):
        try:
            VerificationKey.from_jwk({**jwk, "sm2_id": bad})
        except ValueError:
            continue
        raise AssertionError(f"accepted sm2_id {bad!r}")
