"""tests/vectors/device_codes.json: committed, reproducible, and every vector verifies as
stated (docs/code-format.md §10.6)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.codec import (
    CodeError,
    Ed25519Signer,
    Es256Signer,
    VerificationKey,
    b45decode,
    normalise_device_key,
    parse_certificate,
    raw_public_key,
    verify_code,
)
from tests.vectors.make_device_vectors import build

DOC = json.loads((Path(__file__).parents[1] / "vectors" / "device_codes.json").read_text("utf-8"))
TRUST = {(k["jwk"]["iss"], k["jwk"]["kid"]): VerificationKey.from_jwk(k["jwk"])
         for k in DOC["keys"] if k["in_trust_list"]}


def test_committed_file_equals_a_fresh_build() -> None:
    assert build() == DOC


def test_the_required_cases_are_present() -> None:
    reasons = {v["name"]: v["expect"].get("reason", "ok") for v in DOC["vectors"]}
    assert reasons["yk2_eddsa_eddsa_valid"] == reasons["yk2_es256_es256_valid"] == "ok"
    assert reasons["yk2_unknown_issuer"] == "unknown_issuer"
    assert reasons["yk2_other_device_key"] == "bad_signature"
    assert reasons["yk2_truncated"] == "malformed"
    assert reasons["yk2_certificate_expired"] == "expired"
    assert reasons["yk2_certificate_not_yet_valid"] == "not_yet_valid"


@pytest.mark.parametrize("vector", DOC["vectors"], ids=lambda v: v["name"])
def test_vector(vector: dict[str, Any]) -> None:
    try:
        claims = verify_code(vector["code"], lambda i, k: TRUST.get((i, k)), vector["now"],
                             vector["max_skew_s"])
    except CodeError as e:
        assert vector["expect"] == {"result": "error", "reason": e.reason}
        return
    c = vector["expect"]["claims"]
    assert claims.device is not None
    assert (claims.kid, claims.alg, claims.holder.hex(), claims.nonce.hex(), claims.flags) == (
        c["kid"], c["alg"], c["holder_hex"], c["nonce_hex"], c["flags"])
    d = c["device"]
    assert (claims.device.serial.hex(), claims.device.counter, claims.device.alg,
            claims.device.key.hex()) == (d["serial_hex"], d["counter"], d["alg"], d["key_hex"])
    binary = b45decode(vector["code"][4:])
    assert binary.hex() == vector["binary_hex"]
    assert parse_certificate(bytes.fromhex(vector["certificate_hex"])).serial.hex() == \
        d["serial_hex"]


@pytest.mark.parametrize("key", [k for k in DOC["keys"] if k["role"] == "device"],
                         ids=lambda k: k["name"])
def test_device_private_keys_match_their_certificate_form(key: dict[str, Any]) -> None:
    private = key["TEST_ONLY_private_key"]
    signer: Ed25519Signer | Es256Signer
    if "ed25519_seed_hex" in private:
        signer = Ed25519Signer.from_seed(bytes.fromhex(private["ed25519_seed_hex"]))
    else:
        signer = Es256Signer.from_scalar(bytes.fromhex(private["p256_scalar_hex"]))
    assert signer.alg == key["alg"]
    assert normalise_device_key(signer.alg, raw_public_key(signer.public_key())).hex() == \
        key["certificate_key_hex"]
