"""tests/vectors/codes.json: committed, reproducible, and every vector verifies as stated."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.codec import (
    CodeError,
    Ed25519Signer,
    Es256Signer,
    VerificationKey,
    b45decode,
    verify_code,
)
from tests.vectors.make_vectors import build

VECTORS = Path(__file__).parents[1] / "vectors" / "codes.json"
DOC = json.loads(VECTORS.read_text(encoding="utf-8"))
TRUST = {
    (k["jwk"]["iss"], k["jwk"]["kid"]): VerificationKey.from_jwk(k["jwk"])
    for k in DOC["keys"]
    if k["in_trust_list"]
}


def test_committed_file_equals_a_fresh_build() -> None:
    assert build() == DOC


def test_the_required_cases_are_present() -> None:
    names = {v["name"] for v in DOC["vectors"]}
    assert {"ykm_eddsa_valid", "ykm_es256_valid", "essc_cq_valid", "essc_sc_valid",
            "ykm_expired", "ykm_tampered", "ykm_unknown_key"} <= names
    reasons = {v["expect"].get("reason") for v in DOC["vectors"]}
    assert reasons >= {None, "expired", "not_yet_valid", "bad_signature", "unknown_issuer",
                       "malformed"}


@pytest.mark.parametrize("vector", DOC["vectors"], ids=lambda v: v["name"])
def test_vector(vector: dict[str, Any]) -> None:
    try:
        claims = verify_code(vector["code"], lambda i, k: TRUST.get((i, k)), vector["now"],
                             vector["max_skew_s"])
    except CodeError as e:
        assert vector["expect"] == {"result": "error", "reason": e.reason}
        return
    expect = vector["expect"]
    assert expect["result"] == "ok"
    c = expect["claims"]
    assert (claims.face, claims.issuer, claims.region, claims.kid, claims.alg) == (
        c["face"], c["issuer"], c["region"], c["kid"], c["alg"])
    assert claims.holder.hex() == c["holder_hex"] and claims.nonce.hex() == c["nonce_hex"]
    assert (claims.issued_at, claims.lifetime_s, claims.expires_at, claims.flags) == (
        c["issued_at"], c["lifetime_s"], c["expires_at"], c["flags"])
    prefix = vector["code"].split(":", 1)[0] + ":"
    assert b45decode(vector["code"][len(prefix):]).hex() == vector["binary_hex"]


@pytest.mark.parametrize("key", DOC["keys"], ids=lambda k: k["name"])
def test_listed_private_keys_match_public_jwks(key: dict[str, Any]) -> None:
    jwk = key["jwk"]
    private = key["TEST_ONLY_private_key"]
    signer: Ed25519Signer | Es256Signer
    if "ed25519_seed_hex" in private:
        signer = Ed25519Signer.from_seed(bytes.fromhex(private["ed25519_seed_hex"]))
    else:
        signer = Es256Signer.from_scalar(bytes.fromhex(private["p256_scalar_hex"]), jwk["kid"])
    assert signer.kid == jwk["kid"]
    rebuilt = VerificationKey.of(jwk["iss"], signer.public_key(), jwk["kid"], jwk.get("nbf"),
                                 jwk.get("exp"))
    assert rebuilt.to_jwk() == jwk


def test_no_pem_private_keys_in_codec_paths() -> None:
    root = Path(__file__).parents[2]
    pem = re.compile(r"BEGIN [A-Z ]*PRIVATE KEY")
    files = [p for d in ("gateway/codec", "tests/codec", "tests/vectors")
             for p in (root / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    files += [root / "gateway/qr.py", root / "docs/code-format.md"]
    assert len(files) > 10
    for path in files:
        assert not pem.search(path.read_text(encoding="utf-8")), path.name
