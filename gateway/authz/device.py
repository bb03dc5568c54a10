"""The OAuth 2.0 device authorization grant (RFC 8628) without a web framework: user codes
(§6.1) and the record one device authorization keeps; its store port is
gateway.authz.ports.DeviceGrantStore (memory and Redis implementations under one contract
suite, tests/contract/test_device_grant_store.py).

A kiosk (自助服务终端) asks for a device authorization (§3.1-§3.2) and shows the user code and
a QR of `verification_uri_complete`; the resident approves in the app, or taps the physical
card on the kiosk's reader and confirms on the kiosk (docs/oidc.md "Device grant"). The kiosk's
back end polls the token endpoint with the device code (§3.4-§3.5).

User codes (§6.1): 8 characters of BCDFGHJKLMNPQRSTVWXZ (20 consonants: no vowel, so no word
is spelled; no digit, so no 0/O or 1/I confusion), shown as XXXX-XXXX: 20^8 ≈ 2^34.6
values against at most a few live ones, entered under a per-resident rate limit (§5.1).
Input is normalised (case, dashes and spaces) before it is compared, by digest only.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace

from gateway.authz.oidc import hash_fields

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LEN = 8
DEVICE_CODE_TTL_S = 600      # §3.2 expires_in: 10 minutes to walk up, scan and approve
POLL_INTERVAL_S = 5          # §3.2 interval (its default), seconds
SLOW_DOWN_STEP_S = 5         # §3.5: slow_down adds 5 s to the interval, for good

#: Statuses: pending → scanned (the app bound a resident) → approved | denied;
#: pending → tapped (a card tap bound its holder) → approved | denied; approved → redeemed.
PENDING, SCANNED, TAPPED, APPROVED, DENIED, REDEEMED = (
    "pending", "scanned", "tapped", "approved", "denied", "redeemed")


def new_user_code() -> str:
    """Eight characters of USER_CODE_ALPHABET, uniformly (secrets), unformatted."""
    return "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LEN))


def format_user_code(code: str) -> str:
    """XXXX-XXXX, as shown and as put in verification_uri_complete."""
    return f"{code[:4]}-{code[4:]}"


def normalise_user_code(entered: str) -> str | None:
    """What a resident typed or the app scanned, as the stored form; None when it cannot be a
    user code (§6.1: case-insensitive, separators ignored)."""
    if len(entered) > 32:
        return None
    code = "".join(ch for ch in entered.upper() if ch not in "- \t")
    if len(code) != USER_CODE_LEN or any(ch not in USER_CODE_ALPHABET for ch in code):
        return None
    return code


def new_device_code() -> str:
    """§3.2 device_code: 256 bits, URL-safe; only its digest is stored."""
    return secrets.token_urlsafe(32)


def digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class DeviceAuthorization:
    """One device authorization. The request data is fixed at creation; `status`,
    `person_id`, `decided_at`, `via`, `card` (masked, for the kiosk's confirmation),
    `last_poll` and `interval` move only inside the store (compare-and-set, poll)."""

    id: str                 # what the kiosk page and the app name it by (not a secret)
    client_id: str
    scopes: tuple[str, ...]
    number: int             # number matching: shown on the kiosk, picked in the app
    family_id: str          # the grant its tokens belong to (revoked on a replayed redeem)
    created_at: float
    expires_at: float
    status: str = PENDING
    person_id: str | None = field(default=None, repr=False)
    decided_at: float | None = None
    via: str | None = None          # "app" | "card"
    card: str | None = None         # the tapped card, masked (CQ****1234)
    last_poll: float | None = None
    interval: int = POLL_INTERVAL_S

    MUTABLE = ("status", "person_id", "decided_at", "via", "card", "last_poll", "interval")

    def to_fields(self) -> dict[str, str]:
        return hash_fields(asdict(self), self.MUTABLE)

    @classmethod
    def from_fields(cls, f: Mapping[str, str]) -> DeviceAuthorization:
        d = json.loads(f["d"])
        d["scopes"] = tuple(d["scopes"])
        return replace(
            cls(**d), status=f.get("status", PENDING), person_id=f.get("person_id"),
            decided_at=float(f["decided_at"]) if f.get("decided_at") else None,
            via=f.get("via"), card=f.get("card"),
            last_poll=float(f["last_poll"]) if f.get("last_poll") else None,
            interval=int(f.get("interval") or POLL_INTERVAL_S))

    def public_status(self, now: float) -> str:
        """What the kiosk page shows: pending, scanned, tapped, approved, denied, expired.
        An undecided authorization past its expiry is expired; a redeemed one approved."""
        if self.status == REDEEMED:
            return APPROVED
        if self.status in (PENDING, SCANNED, TAPPED) and now >= self.expires_at:
            return "expired"
        return self.status

