"""The trust list: every code issuer's verification keys, signed (GET /v1/trust-list).

Document (docs/code-format.md "Trust list")::

    {"version": int, "issued_at": int, "next_update": int,
     "issuers": [{"issuer": "ykm" | "essc:CQ" | "essc:SC" | ..., "face": "ykm" | "essc",
                  "keys": [JWK (RFC 7517/8037) + "iss", "nbf", "exp"]}]}

* ``version`` = the Unix time of the latest key event (creation, activation, retirement of a
  渝快码 code key; ``nbf`` of an e-SSC key): it grows whenever the key set changes.
* ``issued_at`` is the start of the current hour (at least ``version``), ``next_update`` one
  hour later: every worker builds the byte-identical document for the same keys and hour.
* Signed as a compact JWS (RFC 7515) with the token key ring (the keys of
  /.well-known/jwks.json), header ``{"alg", "kid", "typ": "trust-list+jwt"}``. ES256 signatures
  use deterministic nonces (RFC 6979) so the representation, and with it the strong ``ETag``
  (RFC 9110 §8.8.3), is the same on every worker.
* Gates verify codes offline from this document alone (docs/code-format.md §6).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import structlog
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from gateway.authz.keyring import KeyRing, SigningKey
from gateway.base64url import b64u
from gateway.codec import VerificationKey
from gateway.codec.sm2 import Sm2PrivateKey

log = structlog.get_logger("gateway.trustlist")

__all__ = ["PERIOD_S", "TRUST_LIST_TYP", "TrustList", "TrustListSnapshot"]

TRUST_LIST_TYP: Final = "trust-list+jwt"
#: issued_at granularity and validity of one document.
PERIOD_S: Final = 3600
_ECDSA_DET: Final = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign_compact(key: SigningKey, payload: bytes, typ: str) -> str:
    """Compact JWS (RFC 7515 §7.1): deterministic for EdDSA and ES256; SM2 (``alg: SM2``,
    gateway.authz.sm2jws) signatures carry a fresh nonce, so each worker's bytes differ."""
    header = b64u(_canonical({"alg": key.alg, "kid": key.kid, "typ": typ}))
    signing_input = f"{header}.{b64u(payload)}".encode("ascii")
    pk = key.private_key
    if isinstance(pk, ed25519.Ed25519PrivateKey):
        sig = pk.sign(signing_input)
    elif isinstance(pk, Sm2PrivateKey):
        sig = pk.sign(signing_input)
    else:
        r, s = decode_dss_signature(pk.sign(signing_input, _ECDSA_DET))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{signing_input.decode('ascii')}.{b64u(sig)}"


def _ykm_key(k: SigningKey) -> VerificationKey:
    nbf = int(k.created_at)
    exp = int(k.verify_until) if k.state == "retired" and k.verify_until is not None else None
    return VerificationKey.of("ykm", k.private_key.public_key(), kid=k.kid, not_before=nbf,
                              not_after=exp)


def _key_event(k: SigningKey) -> float:
    return max(t for t in (k.created_at, k.activated_at, k.retired_at) if t is not None)


@dataclass(frozen=True)
class TrustListSnapshot:
    document: dict[str, Any]
    jws: str
    etag: str
    body: bytes  # the JSON representation served: {"trust_list": ..., "jws": ...}


class TrustList:
    """Key lookup for verification (sync, in-process) and the signed document."""

    def __init__(self, code_ring: Callable[[], KeyRing], token_ring: Callable[[], KeyRing],
                 now: Callable[[], float]) -> None:
        self._code_ring = code_ring
        self._token_ring = token_ring
        self._now = now
        self._ykm_ring: KeyRing | None = None
        self._ykm: dict[str, VerificationKey] = {}
        self._essc: dict[tuple[str, str], VerificationKey] = {}
        self._snapshot: tuple[tuple[Any, ...], TrustListSnapshot] | None = None

    # ------------------------------------------------------------------ lookup (hot path)
    def _ykm_keys(self) -> dict[str, VerificationKey]:
        ring = self._code_ring()
        if ring is not self._ykm_ring:
            now = self._now()
            self._ykm = {k.kid: _ykm_key(k) for k in ring.published(now)}
            self._ykm_ring = ring
        return self._ykm

    def lookup(self, issuer: str, kid: str) -> VerificationKey | None:
        """The codec's KeyLookup: (issuer, kid) → key, or None (→ ``unknown_issuer``)."""
        if issuer == "ykm":
            key = self._ykm_keys().get(kid)
            if key is not None and key.not_after is not None and self._now() >= key.not_after:
                return None
            return key
        return self._essc.get((issuer, kid))

    def set_essc_keys(self, jwks: Iterable[Mapping[str, Any]]) -> int:
        """Replace the e-SSC platform code keys (from ``EsscPlatform.code_keys()``); keys
        that do not parse or name another issuer form are skipped. Returns how many were kept."""
        out: dict[tuple[str, str], VerificationKey] = {}
        for jwk in jwks:
            try:
                vk = VerificationKey.from_jwk(jwk)
            except (ValueError, TypeError):
                # e.g. a curve this gateway does not know: skipped, and said so (no key data)
                log.warning("trust_list.key_ignored", kid=str(jwk.get("kid"))[:32],
                            kty=str(jwk.get("kty"))[:16], crv=str(jwk.get("crv"))[:16],
                            iss=str(jwk.get("iss"))[:32])
                continue
            if vk.issuer.startswith("essc:"):
                out[(vk.issuer, vk.kid)] = vk
        self._essc = out
        return len(out)

    # ------------------------------------------------------------------ the document
    def snapshot(self) -> TrustListSnapshot:
        now = self._now()
        code_ring = self._code_ring()
        token_key = self._token_ring().current()
        period = int(now) // PERIOD_S * PERIOD_S
        published = tuple(k for k in code_ring.published(now))
        essc = tuple(sorted(self._essc.items()))
        cache_key = (period, tuple(k.kid + k.state for k in published), id(self._essc),
                     token_key.kid)
        if self._snapshot is not None and self._snapshot[0] == cache_key:
            return self._snapshot[1]
        version = max([int(_key_event(k)) for k in published]
                      + [vk.not_before or 0 for _, vk in essc] + [0])
        issuers: list[dict[str, Any]] = [{
            "issuer": "ykm", "face": "ykm",
            "keys": [_ykm_key(k).to_jwk() for k in sorted(published, key=lambda k: k.kid)]}]
        by_issuer: dict[str, list[dict[str, Any]]] = {}
        for (iss, _kid), vk in essc:
            by_issuer.setdefault(iss, []).append(vk.to_jwk())
        issuers += [{"issuer": iss, "face": "essc", "keys": keys}
                    for iss, keys in sorted(by_issuer.items())]
        issued_at = max(period, version)
        doc = {"version": version, "issued_at": issued_at, "next_update": period + PERIOD_S,
               "issuers": issuers}
        jws = sign_compact(token_key, _canonical(doc), TRUST_LIST_TYP)
        body = _canonical({"trust_list": doc, "jws": jws})
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        snap = TrustListSnapshot(doc, jws, etag, body)
        self._snapshot = (cache_key, snap)
        return snap
