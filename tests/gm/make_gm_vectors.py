"""Generate tests/vectors/gm.json: SM2 code vectors for docs/code-format.md §8 ("国密").

TEST-ONLY KEYS, derived from public labels like tests/vectors/make_vectors.py. SM2 signatures
need a nonce; here ``k = SHA-256("cq-one-code sm2 nonce" || d || message) mod n`` through the
test-only reference signer (tests/gm/reference.py), so the file is reproducible. Real codes
use fresh nonces (OpenSSL); a verifier cannot tell the difference.

    .venv/bin/python -m tests.gm.make_gm_vectors   # rewrites tests/vectors/gm.json
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from gateway.codec import (
    Alg,
    VerificationKey,
    b45decode,
    b45encode,
    derive_kid,
    encode_essc,
    encode_ykm,
)
from gateway.codec.sm2 import N, Sm2PublicKey
from tests.gm import reference
from tests.vectors.common import IAT, NOT_AFTER, NOT_BEFORE, trust_of, vector, write

OUT = Path(__file__).parents[1] / "vectors" / "gm.json"
OTHER_DISTID = b"ALICE123@YAHOO.COM"  # the GB/T 32918.2 annex's example identifier


def _d(name: str) -> int:
    d = int.from_bytes(hashlib.sha256(b"cq-one-code test vector key: " + name.encode())
                       .digest(), "big") % (N - 1)
    assert d != 0
    return d


class ReferenceSm2Signer:
    """The codec's Signer protocol over the reference SM2 with derived nonces."""

    def __init__(self, name: str, kid: str | None = None, distid: bytes | None = None) -> None:
        self.d = _d(name)
        self.point = reference.public_point(self.d)
        self._kid = kid or derive_kid(Sm2PublicKey(self.point))
        self.distid = distid

    @property
    def kid(self) -> str:
        return self._kid

    @property
    def alg(self) -> Alg:
        return "SM2"

    def sign(self, data: bytes) -> bytes:
        k = int.from_bytes(hashlib.sha256(b"cq-one-code sm2 nonce" + self.d.to_bytes(32, "big")
                                          + data).digest(), "big") % (N - 1) + 1
        if self.distid is None:
            return reference.sign(self.d, data, k)
        return reference.sign(self.d, data, k, self.distid)


def build() -> dict[str, Any]:
    ykm = ReferenceSm2Signer("ykm-sm2")
    cq = ReferenceSm2Signer("essc-cq-sm2", kid="cq-essc-sm2-2026a")
    other_id = ReferenceSm2Signer("ykm-sm2", distid=OTHER_DISTID)

    def key_entry(name: str, issuer: str, s: ReferenceSm2Signer) -> dict[str, Any]:
        vk = VerificationKey.of(issuer, Sm2PublicKey(s.point), s.kid, NOT_BEFORE, NOT_AFTER)
        return {"name": name, "in_trust_list": True, "jwk": vk.to_jwk(),
                "TEST_ONLY_private_key": {"sm2_d_hex": s.d.to_bytes(32, "big").hex()}}

    keys = [key_entry("ykm-sm2", "ykm", ykm), key_entry("essc-cq-sm2", "essc:CQ", cq)]
    trust = trust_of(keys)
    holder = bytes.fromhex("00112233445566778899aabbccddeeff")
    nonce = bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaab")

    def ykm_code(signer: ReferenceSm2Signer) -> str:
        return encode_ykm(holder=holder, issued_at=IAT, lifetime_s=30, signer=signer,
                          flags=0x01, nonce=nonce)

    def with_signature(code: str, prefix: str, sig: bytes) -> str:
        raw = b45decode(code[len(prefix):])
        return prefix + b45encode(raw[:-64] + sig)

    good = ykm_code(ykm)
    n = N.to_bytes(32, "big")
    r_good = b45decode(good[4:])[-64:-32]
    cases: list[tuple[str, str, str]] = [
        ("ykm SM2, valid", "ykm_sm2_valid", good),
        ("essc Chongqing SM2 (version 2), valid", "essc_cq_sm2_valid",
         encode_essc(region="CQ", holder=b"CQ-ESSC-HOLDER-0001", issued_at=IAT, lifetime_s=30,
                     signer=cq, nonce=nonce)),
        ("signed with distinguishing identifier ALICE123@YAHOO.COM", "ykm_sm2_other_distid",
         ykm_code(other_id)),
        ("r = 0", "ykm_sm2_r_zero", with_signature(good, "YK1:", bytes(32) + r_good)),
        ("s = n (out of range)", "ykm_sm2_s_is_n", with_signature(good, "YK1:", r_good + n)),
        ("r + s = n (t = 0)", "ykm_sm2_t_zero", with_signature(
            good, "YK1:", r_good + ((N - int.from_bytes(r_good, "big")) % N).to_bytes(32, "big"))),
        ("holder byte 6 flipped after signing", "ykm_sm2_tampered",
         "YK1:" + b45encode(bytes(b ^ (1 if i == 6 else 0)
                                  for i, b in enumerate(b45decode(good[4:]))))),
    ]
    vectors = [vector(name, description, code, IAT + 10, trust)
               for description, name, code in cases]
    return {
        "description": "SM2 (国密) code-format test vectors, see docs/code-format.md. Keys are "
        "TEST-ONLY (derived from public labels); never trust them outside tests.",
        "algorithm": "SM2 with SM3 (GB/T 32918.2, GB/T 32905), distinguishing identifier "
        "1234567812345678 (GM/T 0009), signature raw r || s",
        "keys": keys,
        "vectors": vectors,
    }


def main() -> None:
    write(OUT, build())


if __name__ == "__main__":
    main()
