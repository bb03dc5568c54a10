"""Generate tests/vectors/device_codes.json: device certificates and ``YK2:`` codes
(docs/code-format.md §10.6).

TEST-ONLY KEYS, derived from public labels exactly as in make_vectors.py (the issuer keys are
the same ``ykm-ed25519`` / ``ykm-es256`` / ``not-in-trust-list`` keys as codes.json); the device
keys are labelled ``device-*``. Deterministic (Ed25519, RFC 6979 ES256, fixed serials), so
tests/codec/test_device_vectors.py checks that the committed file equals a fresh build.

    .venv/bin/python -m tests.vectors.make_device_vectors   # rewrites device_codes.json
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
    encode_certificate,
    encode_yk2,
    normalise_device_key,
    raw_public_key,
)
from tests.vectors.common import (
    NOT_AFTER,
    NOT_BEFORE,
    SKEW,
    scalar,
    secret,
    trust_of,
    vector,
    write,
)

OUT = Path(__file__).with_name("device_codes.json")
CERT_NBF = 1790000000  # 2026-09-21T14:13:20Z, the enrolment
CERT_NAF = CERT_NBF + 86400
IAT = CERT_NBF + 3600  # the code, an hour after enrolment
Signer = Ed25519Signer | Es256Signer


def _key(name: str, signer: Signer, issuer: str | None, trusted: bool) -> dict[str, Any]:
    if isinstance(signer, Ed25519Signer):
        private = {"ed25519_seed_hex": secret(name).hex()}
    else:
        private = {"p256_scalar_hex": scalar(name).hex()}
    entry: dict[str, Any] = {"name": name, "role": "issuer" if issuer else "device",
                             "in_trust_list": trusted}
    if issuer is not None:
        entry["jwk"] = VerificationKey.of(issuer, signer.public_key(), signer.kid, NOT_BEFORE,
                                          NOT_AFTER).to_jwk()
    else:
        entry["alg"] = signer.alg
        entry["certificate_key_hex"] = _device_key(signer).hex()
    entry["TEST_ONLY_private_key"] = private
    return entry


def _device_key(signer: Signer) -> bytes:
    return normalise_device_key(signer.alg, raw_public_key(signer.public_key()))


def build() -> dict[str, Any]:
    ed = Ed25519Signer.from_seed(secret("ykm-ed25519"))
    es = Es256Signer.from_scalar(scalar("ykm-es256"))
    stranger = Ed25519Signer.from_seed(secret("not-in-trust-list"))
    dev_ed = Ed25519Signer.from_seed(secret("device-ed25519"))
    dev_es = Es256Signer.from_scalar(scalar("device-es256"))
    dev_other = Ed25519Signer.from_seed(secret("device-other"))
    keys = [_key("ykm-ed25519", ed, "ykm", True), _key("ykm-es256", es, "ykm", True),
            _key("not-in-trust-list", stranger, "ykm", False),
            _key("device-ed25519", dev_ed, None, False),
            _key("device-es256", dev_es, None, False),
            _key("device-other", dev_other, None, False)]
    trust = trust_of(keys)
    serial = bytes.fromhex("b0b1b2b3b4b5b6b7b8b9babb")
    holder = bytes.fromhex("00112233445566778899aabbccddeeff")

    def cert(issuer: Signer, device: Signer, nbf: int = CERT_NBF, naf: int = CERT_NAF) -> bytes:
        return encode_certificate(signer=issuer, device_alg=device.alg,
                                  device_key=_device_key(device), serial=serial, holder=holder,
                                  flags=0x81, not_before=nbf, not_after=naf)

    def yk2(certificate: bytes, device: Signer, iat: int = IAT, counter: int = 7) -> str:
        return encode_yk2(certificate=certificate, issued_at=iat, lifetime_s=30,
                          counter=counter, signer=device)

    def flip(code: str, offset: int) -> str:
        raw = bytearray(b45decode(code[4:]))
        raw[offset] ^= 0x01
        return "YK2:" + b45encode(bytes(raw))

    cert_ed = cert(ed, dev_ed)
    valid_ed = yk2(cert_ed, dev_ed)
    cert_es = cert(es, dev_es)
    cases: list[tuple[str, str, str, int]] = [
        ("EdDSA certificate, EdDSA device key, valid", "yk2_eddsa_eddsa_valid", valid_ed,
         IAT + 10),
        ("ES256 certificate, ES256 device key, valid", "yk2_es256_es256_valid",
         yk2(cert_es, dev_es), IAT + 10),
        ("EdDSA certificate, ES256 device key, valid", "yk2_eddsa_es256_valid",
         yk2(cert(ed, dev_es), dev_es), IAT + 10),
        ("last accepted second: now = iat + lifetime + skew", "yk2_expiry_boundary_ok",
         valid_ed, IAT + 30 + SKEW),
        ("expired code: now = iat + lifetime + skew + 1", "yk2_expired", valid_ed,
         IAT + 30 + SKEW + 1),
        ("code from the future: now = iat - skew - 1", "yk2_not_yet_valid", valid_ed,
         IAT - SKEW - 1),
        ("certificate past its not-after (code made after it)", "yk2_certificate_expired",
         yk2(cert_ed, dev_ed, iat=CERT_NAF + SKEW + 1), CERT_NAF + SKEW + 2),
        ("certificate not yet valid (phone clock behind the enrolment)",
         "yk2_certificate_not_yet_valid", yk2(cert_ed, dev_ed, iat=CERT_NBF - SKEW - 1),
         CERT_NBF - SKEW - 1),
        ("certificate signed by a key not in the trust list", "yk2_unknown_issuer",
         yk2(cert(stranger, dev_ed), dev_ed), IAT + 10),
        ("code signed by another device's key", "yk2_other_device_key",
         yk2(cert_ed, dev_other), IAT + 10),
        ("certificate holder byte flipped after signing", "yk2_certificate_tampered",
         flip(valid_ed, 40), IAT + 10),
        ("counter byte flipped after signing", "yk2_counter_tampered", flip(valid_ed, 140 + 8),
         IAT + 10),
        ("certificate cut after 100 bytes", "yk2_truncated",
         "YK2:" + b45encode(b45decode(valid_ed[4:])[:100]), IAT + 10),
        ("unknown device algorithm byte", "yk2_unknown_device_alg", flip(valid_ed, 6), IAT + 10),
    ]
    vectors = [vector(name, description, code, now, trust, lambda binary: {
        "certificate_hex": binary[:len(binary) - 73].hex()})
        for description, name, code, now in cases]
    return {
        "description": "Device certificate and YK2: test vectors, see docs/code-format.md §10. "
        "Keys are TEST-ONLY (derived from public labels); never trust them outside tests.",
        "trust_list_note": "issuer keys with in_trust_list=true form the trust list",
        "keys": keys,
        "vectors": vectors,
    }


def main() -> None:
    write(OUT, build())


if __name__ == "__main__":
    main()
