"""The two signed documents an offline gate lives on (docs/offline.md §2, §5): the trust list
(code-issuer keys, scene policy) and the card deny-list. Pure: bytes in, checked objects out,
the clock passed in.

Both are compact JWS signed by the trust-list key the gate pinned at provisioning. A document
signed by a newer key is accepted only through an unbroken chain of endorsements from the
pinned key (each new key signed by the one before it); the gate then pins the newer key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.codec import VerificationKey
from gateway.codec.jws import JwsError, JwsKey, unb64u, verify_compact
from gateway.codec.offline import DENY_LIST_TYP, TRUST_LIST_TYP, CardHash, follow_endorsements
from gateway.codec.sm2 import Sm2Unavailable

from .errors import GateError

#: The SDK logs through the standard library (no server dependencies); names only, never keys.
log = logging.getLogger("gateway_gate")

__all__ = ["DenyList", "ScenePolicy", "SignedList", "TrustList", "open_signed_list",
           "parse_deny_list", "parse_trust_list"]


def _int(doc: Mapping[str, Any], name: str) -> int:
    value = doc.get(name)
    if type(value) is not int or value < 0:
        raise GateError("document_invalid", f"the signed document's {name} is not an integer")
    return value


def _verify(envelope: Mapping[str, Any], pinned: JwsKey, typ: str) -> tuple[JwsKey, bytes]:
    """The payload of ``envelope["jws"]``, signed by the pinned key or a key the pinned key
    endorsed (through ``envelope["endorsements"]``); returns the signing key too."""
    token = envelope.get("jws")
    if not isinstance(token, str):
        raise GateError("document_invalid", "the answer carries no signed document")
    try:
        kid = json.loads(unb64u(token.split(".")[0])).get("kid")
    except (JwsError, ValueError, AttributeError, IndexError):
        raise GateError("bad_signature", "the signed document's header is unreadable") from None
    signer = pinned
    if kid != pinned.kid:
        chain = envelope.get("endorsements") or []
        if not isinstance(chain, list):
            raise GateError("bad_signature", "the endorsements are not a list")
        try:
            signer = follow_endorsements(pinned, chain, str(kid))
        except JwsError:
            raise GateError("untrusted_signer", "the document is signed by a key the pinned "
                                                "trust-list key has not endorsed") from None
    try:
        key, payload = verify_compact(token, lambda k: signer if k == signer.kid else None, typ)
    except JwsError as exc:
        raise GateError("bad_signature", f"the signed document does not verify "
                                         f"({exc.reason})") from None
    except Sm2Unavailable:
        raise GateError("unsupported_algorithm", "the document is signed with SM2 and this "
                                                 "machine has no OpenSSL 3 libcrypto") from None
    return key, payload


def _signed_payload(raw: bytes, pinned: JwsKey, typ: str, what: str) -> tuple[JwsKey, Any]:
    """The one way every signed document is opened: the answer's JSON envelope, its JWS
    verified against the pinned key (or along endorsements from it, `_verify`), and the
    signed payload's JSON — the bytes as received, never a re-encoding. ``what`` names the
    document in the errors ("trust list")."""
    try:
        envelope = json.loads(raw)
    except ValueError:
        raise GateError("document_invalid", f"the {what} is not JSON") from None
    if not isinstance(envelope, dict):
        raise GateError("document_invalid", f"the {what} is not a JSON object")
    signer, payload = _verify(envelope, pinned, typ)
    try:
        return signer, json.loads(payload)
    except ValueError:
        raise GateError("document_invalid", f"the signed {what} is not JSON") from None


@dataclass(frozen=True)
class SignedList:
    """A verified deny-list document (card or device, docs/offline.md §5): its version and
    times, and whether it is a full list or a delta from the version held."""

    doc: Mapping[str, Any]
    version: int
    issued_at: int
    next_update: int
    expires_at: int

    @property
    def full(self) -> bool:
        return self.doc.get("full") is True

    def times(self) -> dict[str, int]:
        return {"issued_at": self.issued_at, "next_update": self.next_update,
                "expires_at": self.expires_at}

    def starts_from(self, held_version: int | None) -> bool:
        """A delta that applies to the list held: ``"full": false`` and ``since`` the version
        held (else the gate asks for the full list)."""
        return (self.doc.get("full") is False and held_version is not None
                and self.doc.get("since") == held_version)


def open_signed_list(raw: bytes, pinned: JwsKey, typ: str, list_name: str,
                     what: str) -> SignedList:
    """A GET /v1/revocations/{cards,devices} answer verified (`_signed_payload`) and checked
    to be the ``list_name`` list (a card list is never taken for a device list); ``what``
    names it in the errors ("deny-list", "device deny-list")."""
    _, doc = _signed_payload(raw, pinned, typ, what)
    if not isinstance(doc, dict) or doc.get("list") != list_name:
        title = "card deny-list" if list_name == "cards" else what
        raise GateError("document_invalid", f"the signed document is not the {title}")
    return SignedList(doc, _int(doc, "version"), _int(doc, "issued_at"),
                      _int(doc, "next_update"), _int(doc, "expires_at"))


@dataclass(frozen=True)
class ScenePolicy:
    id: str
    faces: frozenset[str]
    essc_regions: frozenset[str]

    def permits(self, face: str, region: str | None) -> bool:
        """The gateway's rule (gateway.services.scenes.Scene.permits): the face is accepted
        and, for an e-SSC code, the issuing region too."""
        if face not in self.faces:
            return False
        if face == "essc":  # "*": every trusted region (a scene that settles 异地 too)
            return region is not None and (region in self.essc_regions
                                           or "*" in self.essc_regions)
        return True


@dataclass(frozen=True)
class TrustList:
    """A verified trust list."""

    version: int
    issued_at: int
    next_update: int
    expires_at: int
    code_max_skew_s: int
    keys: Mapping[tuple[str, str], VerificationKey]
    scenes: Mapping[str, ScenePolicy]
    signer_kid: str
    raw: bytes = field(repr=False)

    def lookup(self, issuer: str, kid: str) -> VerificationKey | None:
        return self.keys.get((issuer, kid))


def parse_trust_list(raw: bytes, pinned: JwsKey) -> tuple[TrustList, JwsKey]:
    """Verify a GET /v1/trust-list answer; returns the list and the key that signed it (the
    gate's new pin). Keys that do not parse are skipped, as docs/code-format.md §5 allows
    (an unknown curve must not stop the gate)."""
    signer, doc = _signed_payload(raw, pinned, TRUST_LIST_TYP, "trust list")
    if not isinstance(doc, dict) or not isinstance(doc.get("issuers"), list):
        raise GateError("document_invalid", "the signed trust list has no issuers")
    keys: dict[tuple[str, str], VerificationKey] = {}
    for issuer in doc["issuers"]:
        if not isinstance(issuer, dict) or not isinstance(issuer.get("keys"), list):
            continue
        for jwk in issuer["keys"]:
            try:
                vk = VerificationKey.from_jwk(jwk)
            except (ValueError, TypeError, AttributeError):
                # e.g. a curve this SDK does not implement: skipped, and named (docs §5)
                named = jwk if isinstance(jwk, dict) else {}
                log.warning("trust_list.key_ignored issuer=%s kid=%s kty=%s crv=%s",
                            str(issuer.get("issuer"))[:32], str(named.get("kid"))[:32],
                            str(named.get("kty"))[:16], str(named.get("crv"))[:16])
                continue
            if vk.issuer == issuer.get("issuer"):
                keys[(vk.issuer, vk.kid)] = vk
    scenes: dict[str, ScenePolicy] = {}
    for s in doc.get("scenes") or []:
        if isinstance(s, dict) and isinstance(s.get("id"), str):
            scenes[s["id"]] = ScenePolicy(
                s["id"], frozenset(str(f) for f in s.get("faces") or ()),
                frozenset(str(r) for r in s.get("essc_regions") or ()))
    skew = _int(doc, "code_max_skew_s") if "code_max_skew_s" in doc else 5
    tl = TrustList(version=_int(doc, "version"), issued_at=_int(doc, "issued_at"),
                   next_update=_int(doc, "next_update"), expires_at=_int(doc, "expires_at"),
                   code_max_skew_s=min(skew, 30), keys=keys, scenes=scenes,
                   signer_kid=signer.kid, raw=raw)
    return tl, signer


@dataclass
class DenyList:
    """The card deny-list a gate holds: the merge of a full list and the deltas after it."""

    version: int
    issued_at: int
    next_update: int
    expires_at: int
    hash: CardHash
    entries: set[str]

    def is_denied(self, region: str, card_no: str) -> bool:
        return self.hash.of(region, card_no) in self.entries

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "issued_at": self.issued_at,
                "next_update": self.next_update, "expires_at": self.expires_at,
                "hash": self.hash.to_json(), "entries": sorted(self.entries)}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> DenyList:
        return cls(version=_int(doc, "version"), issued_at=_int(doc, "issued_at"),
                   next_update=_int(doc, "next_update"), expires_at=_int(doc, "expires_at"),
                   hash=CardHash.from_json(doc["hash"]), entries=set(doc["entries"]))


def parse_deny_list(raw: bytes, pinned: JwsKey, held: DenyList | None) -> DenyList:
    """Verify a GET /v1/revocations/cards answer and merge it into ``held`` (a delta needs the
    version it starts from; a full list replaces). Refuses a document issued before the one
    held, or issued at the same time with a lower version (rollback)."""
    got = open_signed_list(raw, pinned, DENY_LIST_TYP, "cards", "deny-list")
    doc = got.doc
    try:
        hasher = CardHash.from_json(doc.get("hash") or {})
    except ValueError as exc:
        raise GateError("document_invalid", f"the deny-list's hash: {exc}") from None
    # A replayed old document is refused by its issue time; within one issue time (a minute)
    # the version must not go back. A newer document with a lower version is the gateway's
    # own current view (its list store was restored) and replaces what the gate holds.
    if held is not None and (got.issued_at, got.version) < (held.issued_at, held.version):
        raise GateError("rollback", "the deny-list is older than the one this gate holds")
    if got.full:
        entries = doc.get("entries")
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise GateError("document_invalid", "the deny-list's entries are not strings")
        return DenyList(version=got.version, hash=hasher, entries=set(entries), **got.times())
    if held is None or not got.starts_from(held.version) or hasher != held.hash:
        raise GateError("document_invalid", "a deny-list delta that does not start from the "
                                            "list this gate holds")
    added, removed = doc.get("added"), doc.get("removed")
    if not isinstance(added, list) or not isinstance(removed, list):
        raise GateError("document_invalid", "the deny-list delta is malformed")
    entries_now = (held.entries - {str(e) for e in removed}) | {str(e) for e in added}
    return DenyList(version=got.version, hash=hasher, entries=entries_now, **got.times())
