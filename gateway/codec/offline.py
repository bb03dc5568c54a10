"""What the gateway and an offline gate share beyond the code format (docs/offline.md):
the signed documents' types, trust-key endorsements and the card deny-list's hash.

Pure: no I/O, the clock passed in. The gateway signs with these; the gate SDK
(``gateway_gate``) verifies with them; a vendor reimplements them from docs/offline.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .jws import JwsError, JwsKey, b64u, canonical_json, sign_compact, unb64u, verify_compact
from .keys import Signer

__all__ = [
    "CARD_HASH_ALG",
    "DENY_LIST_TYP",
    "ENDORSEMENT_TYP",
    "TRUST_LIST_TYP",
    "CardHash",
    "endorse",
    "follow_endorsements",
]

TRUST_LIST_TYP: Final = "trust-list+jwt"
DENY_LIST_TYP: Final = "card-deny-list+jwt"
ENDORSEMENT_TYP: Final = "trust-key+jwt"
CARD_HASH_ALG: Final = "PBKDF2-HMAC-SHA256"
#: A chain of endorsements longer than this is refused (a gate offline through 32 rotations
#: is re-provisioned by hand).
MAX_CHAIN: Final = 32


# ------------------------------------------------------------------ trust-key endorsements
def endorse(old: Signer, new: JwsKey, issued_at: int) -> str:
    """The old trust-list key's statement that ``new`` succeeds it (docs/offline.md §2):
    a compact JWS, ``typ`` ``trust-key+jwt``, payload ``{"prev_kid", "key", "iat"}``."""
    payload = {"prev_kid": old.kid, "key": new.to_jwk(), "iat": int(issued_at)}
    return sign_compact(old, canonical_json(payload), ENDORSEMENT_TYP)


def follow_endorsements(pinned: JwsKey, chain: list[str], target_kid: str) -> JwsKey:
    """From the pinned key, walk the endorsements (each signed by the key before it) to the
    key ``target_kid``. Returns that key; raises ``JwsError("untrusted_signer")`` when no
    unbroken chain from the pinned key reaches it."""
    key = pinned
    by_prev: dict[str, list[str]] = {}
    for token in chain[: MAX_CHAIN * 4]:
        if not isinstance(token, str):
            continue
        try:  # routing only: the signature is checked below, before anything is believed
            prev = json.loads(unb64u(token.split(".")[1]))["prev_kid"]
        except (JwsError, ValueError, KeyError, TypeError, IndexError):
            continue
        if isinstance(prev, str):
            by_prev.setdefault(prev, []).append(token)
    seen = {key.kid}
    for _ in range(MAX_CHAIN):
        if key.kid == target_kid:
            return key
        nxt: JwsKey | None = None
        for token in by_prev.get(key.kid, []):
            current = key
            try:
                _, raw = verify_compact(token, _only(current), ENDORSEMENT_TYP)
                doc = json.loads(raw)
                if not isinstance(doc, dict) or doc.get("prev_kid") != current.kid:
                    continue
                candidate = JwsKey.from_jwk(doc["key"])
            except (JwsError, ValueError, KeyError, TypeError):
                continue
            if candidate.kid in seen:
                continue
            # prefer the endorsed key that leads to the target, else any (the newest wins later)
            if nxt is None or candidate.kid == target_kid:
                nxt = candidate
        if nxt is None:
            break
        seen.add(nxt.kid)
        key = nxt
    raise JwsError("untrusted_signer")


def _only(key: JwsKey) -> Callable[[str], JwsKey | None]:
    return lambda kid: key if kid == key.kid else None


# ------------------------------------------------------------------ the card deny-list hash
@dataclass(frozen=True, slots=True)
class CardHash:
    """How the deny-list hides card numbers: ``PBKDF2-HMAC-SHA256(password = region ":"
    card_no, salt, iterations, 16 bytes)``, written as 32 lower-case hex digits.

    The salt is the deployment's own (so lists of two deployments cannot be joined) and the
    iterations make each guess cost (docs/offline.md §5 says what that does and does not hide).
    """

    salt: bytes
    iterations: int
    length: int = 16

    def __post_init__(self) -> None:
        if not 16 <= len(self.salt) <= 64 or not 1 <= self.iterations <= 10_000_000 \
                or self.length != 16:
            raise ValueError("unusable card hash parameters")

    def of(self, region: str, card_no: str) -> str:
        password = f"{region}:{card_no}".encode()
        return hashlib.pbkdf2_hmac("sha256", password, self.salt, self.iterations,
                                   self.length).hex()

    def to_json(self) -> dict[str, Any]:
        return {"alg": CARD_HASH_ALG, "salt": b64u(self.salt), "iterations": self.iterations,
                "length": self.length}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> CardHash:
        if not isinstance(doc, Mapping) or doc.get("alg") != CARD_HASH_ALG:
            raise ValueError("unknown card hash algorithm")
        salt, iterations, length = doc.get("salt"), doc.get("iterations"), doc.get("length")
        if not isinstance(salt, str) or type(iterations) is not int or type(length) is not int:
            raise ValueError("card hash parameters mistyped")
        try:
            raw = unb64u(salt)
        except JwsError:
            raise ValueError("card hash salt is not base64url") from None
        return cls(raw, iterations, length)
