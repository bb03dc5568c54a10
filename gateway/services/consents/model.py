"""The consent artefact: its statuses and bounds, the refusals, the record, the policy of
which relying party may request which types, approval codes and the request (docs/consents.md)."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar, Final

from gateway.authz.datakeys import DataKeys
from gateway.base64url import b64u
from gateway.errors import Conflict, Forbidden, GatewayError, InvalidRequest, NotFound
from gateway.services.upstream import CERTIFICATE_TYPES, Certificate

AWAITING: Final = "awaiting_authorisation"
AUTHORISED: Final = "authorised"
REJECTED: Final = "rejected"
REVOKED: Final = "revoked"
EXPIRED: Final = "expired"
EXHAUSTED: Final = "exhausted"
STATUSES: Final = (AWAITING, AUTHORISED, REJECTED, REVOKED, EXPIRED, EXHAUSTED)

RECEIPT_TYP: Final = "consent-receipt+jwt"
RECEIPT_VERSION: Final = "KI-CR-v1.1.0"
JURISDICTION: Final = "CN-CQ"

#: What each certificate type may carry (data minimisation). The issuer's signature covers the
#: whole certificate, so fields cannot be stripped without breaking it: a certificate carrying
#: anything beyond its type's list is withheld (and the withholding audited), never trimmed.
FIELDS_BY_TYPE: Final[Mapping[str, frozenset[str]]] = {
    "resident_id": frozenset({"name", "valid_until"}),
    "household_register": frozenset({"name", "household_head", "address"}),
    "driving_licence": frozenset({"name", "class", "valid_until"}),
    "degree": frozenset({"name", "degree", "major"}),
    "qualification": frozenset({"name", "title"}),
}
assert set(FIELDS_BY_TYPE) == set(CERTIFICATE_TYPES)

#: Sandbox allow-list: which certificate types each demo relying party may ask for.
SANDBOX_TYPES_BY_CLIENT: Final[Mapping[str, frozenset[str]]] = {
    "rp-service-hall": frozenset(CERTIFICATE_TYPES),
    "rp-jingkuaiban": frozenset({"driving_licence", "resident_id", "household_register"}),
}

CONSENT_ID_RE: Final = re.compile(r"^cns_[A-Za-z0-9_-]{22}$")
PURPOSE_CODE_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
APPROVAL_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32 (QR alnum)
APPROVAL_CODE_LEN: Final = 10   # 50 bits, single use, lives ≤ the approval window



# ------------------------------------------------------------------------------------------
# Refusals: an HTTP error with a stable `reason` (RFC 9457 extension member), always audited
# ------------------------------------------------------------------------------------------

class Refusal(GatewayError):
    """Mixin-style base: `reason` is the stable machine-readable cause."""

    reason: str = "refused"

    def __init__(self, reason: str, detail: str | None = None, *,
                 audit_reason: str | None = None) -> None:
        """`reason` is shown to the caller; `audit_reason` (default: the same) is what the
        audit log records — e.g. another client's consent is `unknown_consent` to the caller
        (no existence oracle) and `wrong_client` in the log."""
        super().__init__(detail)
        self.reason = reason
        self.audit_reason = audit_reason or reason


class RefusedNotFound(Refusal, NotFound):
    code, status, title = "not_found", 404, "Not found"


class RefusedForbidden(Refusal, Forbidden):
    code, status, title = "forbidden", 403, "The caller may not do this"


class RefusedConflict(Refusal, Conflict):
    code, status, title = "conflict", 409, "Conflict with the current state"


FETCH_REFUSAL: Final[Mapping[str, str]] = {
    AWAITING: "The consent has not been authorised by its holder",
    REJECTED: "The consent was rejected by its holder",
    REVOKED: "The consent was revoked by its holder",
    EXPIRED: "The consent has expired",
    EXHAUSTED: "The consent has no uses left",
}



# ------------------------------------------------------------------------------------------
# The consent artefact and its store
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Consent:
    id: str
    client_id: str
    sector: str
    subject: str                    # the RP's pairwise subject for the holder
    person_id: str = field(repr=False)
    types: tuple[str, ...]
    purpose_code: str
    purpose_text: str
    created_at: float
    approve_by: float
    expires_at: float
    max_uses: int
    uses: int = 0
    status: str = AWAITING
    decided_at: float | None = None
    revoked_at: float | None = None

    def effective_status(self, now: float) -> str:
        if self.status == AWAITING and now >= self.approve_by:
            return EXPIRED
        if self.status == AUTHORISED and now >= self.expires_at:
            return EXPIRED
        return self.status

    def to_record(self) -> dict[str, Any]:
        d = asdict(self)
        d["types"] = list(self.types)
        return d

    @classmethod
    def from_record(cls, d: Mapping[str, Any]) -> Consent:
        return cls(
            id=str(d["id"]), client_id=str(d["client_id"]), sector=str(d["sector"]),
            subject=str(d["subject"]), person_id=str(d["person_id"]),
            types=tuple(d["types"]), purpose_code=str(d["purpose_code"]),
            purpose_text=str(d["purpose_text"]), created_at=float(d["created_at"]),
            approve_by=float(d["approve_by"]), expires_at=float(d["expires_at"]),
            max_uses=int(d["max_uses"]), uses=int(d.get("uses") or 0),
            status=str(d.get("status") or AWAITING),
            decided_at=float(d["decided_at"]) if d.get("decided_at") not in (None, "") else None,
            revoked_at=float(d["revoked_at"]) if d.get("revoked_at") not in (None, "") else None)



@dataclass(frozen=True)
class ConsentPolicy:
    """Which types each relying party may request (keyed by client_id; an rp not listed may
    request none), and the bounds on lifetime, uses and the approval window."""

    types_by_client: Mapping[str, frozenset[str]] = field(
        default_factory=lambda: dict(SANDBOX_TYPES_BY_CLIENT))
    max_lifetime_s: int = 365 * 86400
    min_lifetime_s: int = 60
    max_uses_cap: int = 1000
    approval_window_s: int = 600
    retain_s: int = 180 * 86400          # records kept after expiry, for the holder's list
    subject_index_ttl_s: int = 30 * 86400

    def __post_init__(self) -> None:
        for client_id, types in self.types_by_client.items():
            unknown = set(types) - CERTIFICATE_TYPES
            if unknown:
                raise ValueError(f"consent policy for {client_id}: unknown certificate types "
                                 + ", ".join(sorted(unknown)))

    def allowed_types(self, client_id: str) -> frozenset[str]:
        return self.types_by_client.get(client_id, frozenset())


CitizenIds = Callable[[str], Awaitable[str | None]]


def code_digest(code: str) -> str:
    return hashlib.sha256(b"consent-approval\x00" + code.encode("ascii")).hexdigest()


def new_approval_code() -> str:
    return "".join(secrets.choice(APPROVAL_ALPHABET) for _ in range(APPROVAL_CODE_LEN))


def normalise_approval_code(raw: str) -> str | None:
    """Upper-case, drop separators, map Crockford look-alikes (O→0, I/L→1)."""
    s = raw.strip().upper().replace("-", "").replace(" ", "")
    s = s.translate(str.maketrans("OIL", "011"))
    if len(s) != APPROVAL_CODE_LEN or any(c not in APPROVAL_ALPHABET for c in s):
        return None
    return s


@dataclass(frozen=True)
class ConsentRequest:
    subject: str
    types: tuple[str, ...]
    purpose_code: str
    purpose_text: str
    expires_in: int
    max_uses: int

    PURPOSE_TEXT_MAX: ClassVar[int] = 200

    @classmethod
    def parse(cls, body: Mapping[str, Any], policy: ConsentPolicy) -> ConsentRequest:
        subject = body.get("subject")
        if not isinstance(subject, str) or not 1 <= len(subject) <= 128:
            raise InvalidRequest("subject must be a non-empty string")
        raw_types = body.get("certificate_types")
        if (not isinstance(raw_types, list) or not raw_types or len(raw_types) > 16
                or not all(isinstance(t, str) for t in raw_types)):
            raise InvalidRequest("certificate_types must be a non-empty list of strings")
        types = tuple(dict.fromkeys(raw_types))
        if any(t not in CERTIFICATE_TYPES for t in types):
            raise InvalidRequest("certificate_types holds an unknown type; known: "
                                 + ", ".join(sorted(CERTIFICATE_TYPES)))
        purpose = body.get("purpose")
        code: Any
        text: Any
        if isinstance(purpose, str):
            code, text = "general", purpose
        elif isinstance(purpose, dict):
            code, text = purpose.get("code"), purpose.get("text")
        else:
            raise InvalidRequest("purpose must be {\"code\", \"text\"}")
        if not isinstance(code, str) or not PURPOSE_CODE_RE.match(code):
            raise InvalidRequest("purpose.code must match [a-z0-9][a-z0-9_.-]{0,63}")
        if not isinstance(text, str) or not 1 <= len(text) <= cls.PURPOSE_TEXT_MAX:
            raise InvalidRequest(f"purpose.text must be 1..{cls.PURPOSE_TEXT_MAX} characters")
        expires_in = _integral(body.get("expires_in", 86400))
        if (not isinstance(expires_in, int) or isinstance(expires_in, bool)
                or not policy.min_lifetime_s <= expires_in <= policy.max_lifetime_s):
            raise InvalidRequest(f"expires_in must be an integer number of seconds, "
                                 f"{policy.min_lifetime_s}..{policy.max_lifetime_s}")
        max_uses = _integral(body.get("max_uses", 1))
        if (not isinstance(max_uses, int) or isinstance(max_uses, bool)
                or not 1 <= max_uses <= policy.max_uses_cap):
            raise InvalidRequest(f"max_uses must be an integer, 1..{policy.max_uses_cap}")
        return cls(subject, types, code, text, expires_in, max_uses)


def _integral(value: Any) -> Any:
    """JSON has numbers, not integers: 330.0 is the integer 330 (JSON Schema 2020-12 §6.1.1
    agrees), anything else is left for the caller to refuse."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value




def certificate_view(c: Certificate) -> dict[str, Any]:
    """A certificate as the RP receives it: the issuer's compact JWS untouched."""
    return {"type": c.type, "number": c.number, "issuer": c.issuer, "issued_at": c.issued_at,
            "fields": dict(c.fields), "issuer_signature": c.issuer_signature}


def public_reason(status: str) -> str:
    return {AWAITING: "not_authorised"}.get(status, status)


def safe_id(value: str | None) -> str | None:
    """A caller-supplied id as it may enter the audit log: ours, or a digest of the junk."""
    if value is None or CONSENT_ID_RE.match(value):
        return value
    return "forged:" + b64u(hashlib.sha256(value.encode("utf-8", "replace")).digest()[:9])


def with_status(consent: Consent, status: str, now: float) -> Consent:
    """The record after a transition (used by the in-memory store)."""
    if status in (AUTHORISED, REJECTED):
        return replace(consent, status=status, decided_at=now)
    if status == REVOKED:
        return replace(consent, status=status, revoked_at=now)
    return replace(consent, status=status)


def person_of(keys: DataKeys, sealed_person: str | None, client_id: str) -> str:
    """The internal person id inside a resident token (sealed to the app's client id)."""
    from gateway.authz.datakeys import SealError
    from gateway.errors import Unauthorized

    if not sealed_person:
        raise Unauthorized("A resident token is required")
    try:
        return keys.open_person_id(sealed_person, client_id)
    except SealError:
        raise Unauthorized("The access token is not valid", debug="pid seal") from None
