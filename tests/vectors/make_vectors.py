"""Generate tests/vectors/codes.json: test vectors for docs/code-format.md §8.

TEST-ONLY KEYS. Every private key below is derived from a public label
(``SHA-256("cq-one-code test vector key: <name>")``) and is therefore known to everyone. They are
stored as raw hex (Ed25519 seed, P-256 scalar), never as PEM. No production system may trust them.

Output is deterministic (Ed25519 is deterministic, ES256 uses RFC 6979 nonces, code nonces are
fixed), so tests/codec/test_vectors.py can check that the committed file equals a fresh build.

    .venv/bin/python tests/vectors/make_vectors.py   # rewrites tests/vectors/codes.json
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from gateway.codec import (
    CodeClaims,
    CodeError,
    Ed25519Signer,
    Es256Signer,
    VerificationKey,
    b45decode,
    b45encode,
    encode_essc,
    encode_ykm,
    verify_code,
)

OUT = Path(__file__).with_name("codes.json")
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
NOT_BEFORE = 1767225600  # 2026-01-01T00:00:00Z
NOT_AFTER = 1798761600  # 2027-01-01T00:00:00Z
IAT = 1790000000  # 2026-09-21T14:13:20Z
SKEW = 5


def _secret(name: str) -> bytes:
    return hashlib.sha256(b"cq-one-code test vector key: " + name.encode()).digest()


def _scalar(name: str) -> bytes:
    d = int.from_bytes(_secret(name), "big") % P256_N
    assert d != 0
    return d.to_bytes(32, "big")


def _claims_json(c: CodeClaims) -> dict[str, Any]:
    return {
        "face": c.face,
        "issuer": c.issuer,
        "region": c.region,
        "kid": c.kid,
        "alg": c.alg,
        "holder_hex": c.holder.hex(),
        "issued_at": c.issued_at,
        "lifetime_s": c.lifetime_s,
        "expires_at": c.expires_at,
        "nonce_hex": c.nonce.hex(),
        "flags": c.flags,
    }


def build() -> dict[str, Any]:
    ed = Ed25519Signer.from_seed(_secret("ykm-ed25519"))
    es = Es256Signer.from_scalar(_scalar("ykm-es256"))
    cq = Es256Signer.from_scalar(_scalar("essc-cq"), kid="cq-essc-2026a")
    sc = Es256Signer.from_scalar(_scalar("essc-sc"), kid="sc-essc-2026a")
    stranger = Ed25519Signer.from_seed(_secret("not-in-trust-list"))

    def key_entry(
        name: str, issuer: str, signer: Ed25519Signer | Es256Signer, trusted: bool
    ) -> dict[str, Any]:
        if isinstance(signer, Ed25519Signer):
            private = {"ed25519_seed_hex": _secret(name).hex()}
        else:
            private = {"p256_scalar_hex": _scalar(name).hex()}
        vk = VerificationKey.of(issuer, signer.public_key(), signer.kid, NOT_BEFORE, NOT_AFTER)
        return {
            "name": name,
            "in_trust_list": trusted,
            "jwk": vk.to_jwk(),
            "TEST_ONLY_private_key": private,
        }

    keys = [
        key_entry("ykm-ed25519", "ykm", ed, True),
        key_entry("ykm-es256", "ykm", es, True),
        key_entry("essc-cq", "essc:CQ", cq, True),
        key_entry("essc-sc", "essc:SC", sc, True),
        key_entry("not-in-trust-list", "ykm", stranger, False),
    ]
    trust = {
        (k["jwk"]["iss"], k["jwk"]["kid"]): VerificationKey.from_jwk(k["jwk"])
        for k in keys
        if k["in_trust_list"]
    }

    holder = bytes.fromhex("00112233445566778899aabbccddeeff")
    nonce = bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaab")
    essc_holder = b"CQ-ESSC-HOLDER-0001"

    def ykm(signer: Ed25519Signer | Es256Signer, flags: int = 0) -> str:
        return encode_ykm(
            holder=holder, issued_at=IAT, lifetime_s=30, signer=signer, flags=flags, nonce=nonce
        )

    def essc(region: str, signer: Es256Signer) -> str:
        return encode_essc(
            region=region, holder=essc_holder, issued_at=IAT, lifetime_s=30, signer=signer,
            nonce=nonce,
        )

    def tamper(code: str, prefix: str, offset: int) -> str:
        raw = bytearray(b45decode(code[len(prefix) :]))
        raw[offset] ^= 0x01
        return prefix + b45encode(bytes(raw))

    ykm_ed = ykm(ed, flags=0x01)
    essc_cq = essc("CQ", cq)
    cases: list[tuple[str, str, str, int]] = [
        ("ykm EdDSA, valid", "ykm_eddsa_valid", ykm_ed, IAT + 10),
        ("ykm ES256, valid", "ykm_es256_valid", ykm(es), IAT + 10),
        ("essc Chongqing, valid", "essc_cq_valid", essc_cq, IAT + 10),
        ("essc Sichuan, valid", "essc_sc_valid", essc("SC", sc), IAT + 10),
        ("last accepted second: now = iat + lifetime + skew", "ykm_expiry_boundary_ok",
         ykm_ed, IAT + 30 + SKEW),
        ("expired: now = iat + lifetime + skew + 1", "ykm_expired", ykm_ed, IAT + 30 + SKEW + 1),
        ("essc expired", "essc_expired", essc_cq, IAT + 3600),
        ("earliest accepted: now = iat - skew", "ykm_not_yet_valid_boundary_ok", ykm_ed,
         IAT - SKEW),
        ("not yet valid: now = iat - skew - 1", "ykm_not_yet_valid", ykm_ed, IAT - SKEW - 1),
        ("holder byte 6 flipped after signing", "ykm_tampered", tamper(ykm_ed, "YK1:", 6),
         IAT + 10),
        ("essc signature byte flipped", "essc_tampered", tamper(essc_cq, "ESSC1:", -1), IAT + 10),
        ("signed by a key not in the trust list", "ykm_unknown_key", ykm(stranger), IAT + 10),
        ("Chongqing key used for a Sichuan code", "essc_wrong_region", essc("SC", cq), IAT + 10),
        ("not a code", "malformed_url", "HTTPS://EXAMPLE.COM/YK1:ABC", IAT + 10),
        ("Base45 triplet above 65535", "malformed_base45", "YK1:" + "GGW" * 52, IAT + 10),
    ]
    vectors = []
    for description, name, code, now in cases:
        try:
            claims = verify_code(code, lambda i, k: trust.get((i, k)), now, SKEW)
        except CodeError as e:
            expect: dict[str, Any] = {"result": "error", "reason": e.reason}
        else:
            expect = {"result": "ok", "claims": _claims_json(claims)}
        entry: dict[str, Any] = {
            "name": name,
            "description": description,
            "code": code,
            "now": now,
            "max_skew_s": SKEW,
            "expect": expect,
        }
        prefix = code.split(":", 1)[0] + ":"
        if prefix in ("YK1:", "ESSC1:") and expect["result"] == "ok":
            entry["binary_hex"] = b45decode(code[len(prefix) :]).hex()
        vectors.append(entry)
    return {
        "description": "Code-format test vectors, see docs/code-format.md. Keys are TEST-ONLY "
        "(derived from public labels); never trust them outside tests.",
        "trust_list_note": "keys with in_trust_list=true form the trust list for every vector",
        "keys": keys,
        "vectors": vectors,
    }


def main() -> None:
    OUT.write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
