"""Fixed test-only keys and a trust list for the codec tests (module-level: Hypothesis-safe)."""

from __future__ import annotations

import hashlib

from gateway.codec import Ed25519Signer, Es256Signer, VerificationKey


def _secret(label: str) -> bytes:
    return hashlib.sha256(b"codec unit test key: " + label.encode()).digest()


YKM_ED = Ed25519Signer.from_seed(_secret("ykm-ed"))
YKM_ES = Es256Signer.from_scalar(_secret("ykm-es"))
ESSC_CQ = Es256Signer.from_scalar(_secret("essc-cq"), kid="cq-essc-2026a")
ESSC_SC = Es256Signer.from_scalar(_secret("essc-sc"), kid="sc-essc-2026a")
#: Same kid as ESSC_CQ, different key: a forged platform key.
ESSC_CQ_IMPOSTOR = Es256Signer.from_scalar(_secret("essc-cq-impostor"), kid="cq-essc-2026a")
STRANGER = Ed25519Signer.from_seed(_secret("stranger"))

TRUST: dict[tuple[str, str], VerificationKey] = {
    ("ykm", YKM_ED.kid): VerificationKey.of("ykm", YKM_ED.public_key()),
    ("ykm", YKM_ES.kid): VerificationKey.of("ykm", YKM_ES.public_key()),
    ("essc:CQ", ESSC_CQ.kid): VerificationKey.of("essc:CQ", ESSC_CQ.public_key(), ESSC_CQ.kid),
    ("essc:SC", ESSC_SC.kid): VerificationKey.of("essc:SC", ESSC_SC.public_key(), ESSC_SC.kid),
}


def lookup(issuer: str, kid: str) -> VerificationKey | None:
    return TRUST.get((issuer, kid))
