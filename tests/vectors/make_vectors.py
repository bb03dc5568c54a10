"""Generate tests/vectors/codes.json: test vectors for docs/code-format.md §8.

TEST-ONLY KEYS. Every private key below is derived from a public label
(``SHA-256("cq-one-code test vector key: <name>")``) and is therefore known to everyone. They are
stored as raw hex (Ed25519 seed, P-256 scalar), never as PEM. No production system may trust them.

Output is deterministic (Ed25519 is deterministic, ES256 uses RFC 6979 nonces, code nonces are
fixed), so tests/codec/test_vectors.py can check that the committed file equals a fresh build.

    .venv/bin/python tests/vectors/make_vectors.py   # rewrites tests/vectors/codes.json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.codec import (
    Ed25519Signer,
    Es256Signer,
    VerificationKey,
    b45decode,
    b45encode,
    encode_essc,
    encode_ykm,
)
from tests.vectors.common import (
    IAT,
    NOT_AFTER,
    NOT_BEFORE,
    SKEW,
    scalar,
    secret,
    trust_of,
    vector,
    write,
)

OUT = Path(__file__).with_name("codes.json")


def build() -> dict[str, Any]:
    ed = Ed25519Signer.from_seed(secret("ykm-ed25519"))
    es = Es256Signer.from_scalar(scalar("ykm-es256"))
    cq = Es256Signer.from_scalar(scalar("essc-cq"), kid="cq-essc-2026a")
    sc = Es256Signer.from_scalar(scalar("essc-sc"), kid="sc-essc-2026a")
    stranger = Ed25519Signer.from_seed(secret("not-in-trust-list"))

    def key_entry(
        name: str, issuer: str, signer: Ed25519Signer | Es256Signer, trusted: bool
    ) -> dict[str, Any]:
        if isinstance(signer, Ed25519Signer):
            private = {"ed25519_seed_hex": secret(name).hex()}
        else:
            private = {"p256_scalar_hex": scalar(name).hex()}
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
    trust = trust_of(keys)

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
    vectors = [vector(name, description, code, now, trust)
               for description, name, code, now in cases]
    return {
        "description": "Code-format test vectors, see docs/code-format.md. Keys are TEST-ONLY "
        "(derived from public labels); never trust them outside tests.",
        "trust_list_note": "keys with in_trust_list=true form the trust list for every vector",
        "keys": keys,
        "vectors": vectors,
    }


def main() -> None:
    write(OUT, build())


if __name__ == "__main__":
    main()
