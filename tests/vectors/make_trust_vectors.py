"""Generate tests/vectors/trust.json: the signed documents of docs/offline.md (trust list,
card deny-list, trust-key endorsement) with the exact bytes a verifier must accept or refuse.

TEST-ONLY KEYS: derived from public labels (``SHA-256("cq-one-code test vector key: <name>")``,
as in make_vectors.py). No production system may trust them. Deterministic (Ed25519), so
tests/offline/test_vectors.py checks that the committed file equals a fresh build.

    .venv/bin/python tests/vectors/make_trust_vectors.py   # rewrites tests/vectors/trust.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.codec import Ed25519Signer
from gateway.codec.jws import JwsKey, canonical_json, sign_compact
from gateway.codec.offline import DENY_LIST_TYP, TRUST_LIST_TYP, CardHash, endorse

if __package__ in (None, ""):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.vectors.common import IAT, secret
from tests.vectors.make_vectors import build as build_codes

OUT = Path(__file__).with_name("trust.json")
ISSUED_AT = IAT // 3600 * 3600  # 2026-09-21T14:00:00Z
SCENES = [{"id": "library", "faces": ["essc", "ssc_card", "ykm"], "essc_regions": ["CQ", "SC"]},
          {"id": "metro", "faces": ["essc", "ssc_card", "ykm"], "essc_regions": ["CQ", "SC"]},
          {"id": "pharmacy", "faces": ["essc", "ssc_card", "ykm"], "essc_regions": ["CQ"]},
          {"id": "hotel", "faces": ["essc", "ykm"], "essc_regions": ["CQ", "SC"]}]


def _jwk(signer: Ed25519Signer) -> dict[str, Any]:
    return JwsKey.of(signer.public_key()).to_jwk()


def build() -> dict[str, Any]:
    t0 = Ed25519Signer.from_seed(secret("trust-list-key-0"))
    t1 = Ed25519Signer.from_seed(secret("trust-list-key-1"))
    stranger = Ed25519Signer.from_seed(secret("trust-list-stranger"))
    codes = build_codes()
    issuers: dict[str, list[dict[str, Any]]] = {}
    for k in codes["keys"]:
        if k["in_trust_list"]:
            issuers.setdefault(k["jwk"]["iss"], []).append(k["jwk"])
    doc = {"version": ISSUED_AT, "issued_at": ISSUED_AT, "next_update": ISSUED_AT + 3600,
           "expires_at": ISSUED_AT + 86_400, "code_max_skew_s": 5,
           "issuers": [{"issuer": iss, "face": "ykm" if iss == "ykm" else "essc", "keys": keys}
                       for iss, keys in sorted(issuers.items())],
           "scenes": SCENES}
    payload = canonical_json(doc)
    jws0 = sign_compact(t0, payload, TRUST_LIST_TYP)
    endorsement = endorse(t0, JwsKey.of(t1.public_key()), ISSUED_AT)
    later = dict(doc, version=ISSUED_AT + 3600, issued_at=ISSUED_AT + 3600,
                 next_update=ISSUED_AT + 7200, expires_at=ISSUED_AT + 3600 + 86_400)
    jws1 = sign_compact(t1, canonical_json(later), TRUST_LIST_TYP)
    header, body, sig = jws0.split(".")
    flipped = body[:-1] + ("A" if body[-1] != "A" else "B")

    card_hash = CardHash(salt=secret("card-deny-salt")[:16], iterations=10_000)
    lost = card_hash.of("CQ", "CQ100000249")
    replaced = card_hash.of("CQ", "CQ100000017")
    deny_full = {"list": "cards", "version": 1790000000123, "issued_at": IAT,
                 "next_update": IAT + 60, "expires_at": IAT + 86_400,
                 "hash": card_hash.to_json(), "full": True,
                 "entries": sorted([lost, replaced])}
    deny_delta = {"list": "cards", "version": 1790000030456, "issued_at": IAT + 60,
                  "next_update": IAT + 120, "expires_at": IAT + 60 + 86_400,
                  "hash": card_hash.to_json(), "full": False, "since": 1790000000123,
                  "added": [card_hash.of("CQ", "CQ100000579")], "removed": [replaced]}
    return {
        "description": "Signed offline-gate documents (docs/offline.md). TEST-ONLY keys.",
        "trust_anchor": {"jwk": _jwk(t0),
                         "TEST_ONLY_private_key": {"ed25519_seed_hex":
                                                   secret("trust-list-key-0").hex()}},
        "vectors": [
            {"name": "trust_list_signed_by_the_anchor",
             "answer": {"trust_list": doc, "jws": jws0, "endorsements": []},
             "payload_utf8": payload.decode(),
             "expect": {"result": "ok", "version": ISSUED_AT, "expires_at": ISSUED_AT + 86_400,
                        "signer_kid": t0.kid, "verifies_code_vector": "ykm_eddsa_valid"}},
            {"name": "trust_list_signed_by_an_endorsed_key",
             "answer": {"trust_list": later, "jws": jws1, "endorsements": [endorsement]},
             "expect": {"result": "ok", "version": ISSUED_AT + 3600, "signer_kid": t1.kid,
                        "new_pin": _jwk(t1)}},
            {"name": "trust_list_endorsement_missing",
             "answer": {"trust_list": later, "jws": jws1, "endorsements": []},
             "expect": {"result": "error", "reason": "untrusted_signer"}},
            {"name": "trust_list_payload_tampered",
             "answer": {"trust_list": doc, "jws": f"{header}.{flipped}.{sig}",
                        "endorsements": []},
             "expect": {"result": "error", "reason": "bad_signature"}},
            {"name": "trust_list_signed_by_a_stranger",
             "answer": {"trust_list": doc, "jws": sign_compact(stranger, payload, TRUST_LIST_TYP),
                        "endorsements": []},
             "expect": {"result": "error", "reason": "untrusted_signer"}},
            {"name": "trust_list_with_another_typ",
             "answer": {"trust_list": doc, "jws": sign_compact(t0, payload, DENY_LIST_TYP),
                        "endorsements": []},
             "expect": {"result": "error", "reason": "bad_signature"}},
            {"name": "deny_list_full",
             "answer": {"deny_list": deny_full,
                        "jws": sign_compact(t0, canonical_json(deny_full), DENY_LIST_TYP)},
             "expect": {"result": "ok", "denied": [["CQ", "CQ100000249"], ["CQ", "CQ100000017"]],
                        "not_denied": [["CQ", "CQ100000025"]], "card_hash_CQ100000249": lost}},
            {"name": "deny_list_delta_after_full",
             "answer": {"deny_list": deny_delta,
                        "jws": sign_compact(t0, canonical_json(deny_delta), DENY_LIST_TYP)},
             "expect": {"result": "ok", "applies_to": "deny_list_full",
                        "denied": [["CQ", "CQ100000249"], ["CQ", "CQ100000579"]],
                        "not_denied": [["CQ", "CQ100000017"]]}},
        ],
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")
