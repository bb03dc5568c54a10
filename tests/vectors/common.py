"""What the test-vector generators share (make_vectors.py, make_device_vectors.py,
tests/gm/make_gm_vectors.py): the public-label key derivation, the validity window of the
test keys, a vector judged by the codec, and writing the file.

TEST-ONLY KEYS: every private key is ``SHA-256("cq-one-code test vector key: <name>")``
(reduced for P-256), known to everyone; no production system may trust them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from gateway.codec import CodeClaims, CodeError, VerificationKey, b45decode, verify_code

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
NOT_BEFORE = 1767225600  # 2026-01-01T00:00:00Z
NOT_AFTER = 1798761600  # 2027-01-01T00:00:00Z
IAT = 1790000000  # 2026-09-21T14:13:20Z
SKEW = 5

Trust = Mapping[tuple[str, str], VerificationKey]


def secret(name: str) -> bytes:
    return hashlib.sha256(b"cq-one-code test vector key: " + name.encode()).digest()


def scalar(name: str) -> bytes:
    d = int.from_bytes(secret(name), "big") % P256_N
    assert d != 0
    return d.to_bytes(32, "big")


def claims_json(c: CodeClaims) -> dict[str, Any]:
    out: dict[str, Any] = {
        "face": c.face, "issuer": c.issuer, "region": c.region, "kid": c.kid, "alg": c.alg,
        "holder_hex": c.holder.hex(), "issued_at": c.issued_at, "lifetime_s": c.lifetime_s,
        "expires_at": c.expires_at, "nonce_hex": c.nonce.hex(), "flags": c.flags,
    }
    if c.device is not None:
        out["device"] = {"serial_hex": c.device.serial.hex(), "counter": c.device.counter,
                         "alg": c.device.alg, "key_hex": c.device.key.hex(),
                         "not_before": c.device.not_before, "not_after": c.device.not_after}
    return out


def trust_of(keys: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], VerificationKey]:
    """The trust list of a file's keys: those marked ``in_trust_list``."""
    return {(k["jwk"]["iss"], k["jwk"]["kid"]): VerificationKey.from_jwk(k["jwk"])
            for k in keys if k["in_trust_list"]}


def vector(name: str, description: str, code: str, now: int, trust: Trust,
           extra: Callable[[bytes], Mapping[str, Any]] = lambda binary: {}) -> dict[str, Any]:
    """One vector as the codec judges it at ``now``; a valid one carries its binary form
    (``binary_hex``, then ``extra(binary)``)."""
    try:
        claims = verify_code(code, lambda i, k: trust.get((i, k)), now, SKEW)
    except CodeError as e:
        expect: dict[str, Any] = {"result": "error", "reason": e.reason}
    else:
        expect = {"result": "ok", "claims": claims_json(claims)}
    entry: dict[str, Any] = {"name": name, "description": description, "code": code,
                             "now": now, "max_skew_s": SKEW, "expect": expect}
    if expect["result"] == "ok":
        binary = b45decode(code.split(":", 1)[1])
        entry["binary_hex"] = binary.hex()
        entry.update(extra(binary))
    return entry


def write(out: Path, doc: Mapping[str, Any]) -> None:
    out.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
