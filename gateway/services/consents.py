"""Consent-based certificate lookup (电子证照, with the holder's authorisation) — docs/consents.md.

Modelled on India's Account Aggregator consent artefact (typed data, purpose, lifetime, fetch
count, revocable), Singpass Myinfo (holder approves in the app), UK Open Banking consents
(status machine awaiting_authorisation → authorised | rejected → revoked | expired) and Kantara
Consent Receipts v1.1 (the signed receipt's claims).

Status machine (stored status; `expired` is also derived from the clock at every read)::

    awaiting_authorisation ──approve──▶ authorised ──revoke──▶ revoked
            │  └─reject─▶ rejected         │ └─last use──▶ exhausted
            └─ approval window passes ─▶ expired ◀── lifetime passes

Every check that depends on state (status, lifetime, uses left) runs inside the store's one
atomic operation on the consent's record — never on a cached copy — so a revocation is
effective at once on every worker, and two concurrent fetches cannot both take the last use.
The citizen ID (trust root) is fetched from the identity port only for the library call and
never written to a log, an audit entry or an answer.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar, Final, Protocol

from gateway.authz.clients import Client
from gateway.authz.datakeys import DataKeys
from gateway.authz.tokens import JwtSigner, TokenInvalid
from gateway.base64url import b64u
from gateway.errors import Conflict, Forbidden, GatewayError, InvalidRequest, NotFound
from gateway.ports import ClientStore
from gateway.services.audit import AUDIT_SECTOR, AuditEvent, AuditTrail
from gateway.services.upstream import CERTIFICATE_TYPES, Certificate, CertificateLibrary
from gateway.timefmt import rfc3339

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


_FETCH_REFUSAL: Final[Mapping[str, str]] = {
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


class ConsentStore(Protocol):
    """Consents, approval codes and the subject index. `transition` and `take_use` are atomic
    on one consent (one Redis key, one Lua script): they read the status, lifetime and uses
    they decide on in the same step that changes them."""

    async def create(self, consent: Consent, approval_digest: str, retain_s: float) -> None: ...

    async def get(self, consent_id: str) -> Consent | None: ...

    async def for_person(self, person_id: str) -> Sequence[Consent]: ...

    async def transition(self, consent_id: str, allowed_from: Sequence[str], to: str,
                         now: float) -> tuple[bool, str | None]:
        """Move to `to` if the effective status is in `allowed_from`. Returns (moved, the
        effective status before the call, None if no such consent)."""
        ...

    async def take_use(self, consent_id: str, now: float) -> tuple[bool, str | None, int]:
        """Count one use if authorised, unexpired and uses are left (the last use turns the
        status to exhausted). Returns (taken, effective status before, uses after)."""
        ...

    async def refund_use(self, consent_id: str) -> None:
        """Give back a use taken for a fetch the library then failed."""
        ...

    async def approval_code(self, digest: str) -> str | None:
        """The consent id an approval code stands for (None: unknown, used or expired)."""
        ...

    async def spend_approval_code(self, digest: str, consent_id: str) -> bool:
        """Delete the code if it still stands for this consent (single use)."""
        ...

    async def remember_subject(self, sector: str, subject: str, person_id: str,
                               ttl_s: float) -> None: ...

    async def person_for_subject(self, sector: str, subject: str) -> str | None: ...


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


def _digest(code: str) -> str:
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


# ------------------------------------------------------------------------------------------
# The use cases
# ------------------------------------------------------------------------------------------

class ConsentService:
    def __init__(self, *, store: ConsentStore, audit: AuditTrail, library: CertificateLibrary,
                 citizen_ids: CitizenIds, data_keys: DataKeys, signer: JwtSigner,
                 clients: ClientStore, issuer: str, clock: Callable[[], float],
                 policy: ConsentPolicy | None = None) -> None:
        self.store = store
        self.audit = audit
        self.library = library
        self.citizen_ids = citizen_ids
        self.keys = data_keys
        self.signer = signer
        self.clients = clients
        self.issuer = issuer
        self.now = clock
        self.policy = policy or ConsentPolicy()

    # --- the subject index (what other features must call) -------------------------------

    async def remember_subject(self, sector: str, subject: str, person_id: str) -> None:
        """Record that `subject` was handed out for `person_id` in `sector`. Pairwise subjects
        are one-way (HMAC), so a relying party can ask for a consent only on a subject the
        gateway recorded here: the codes feature calls it when a verify returns a subject, the
        login feature when it issues an ID token. Refreshes the entry's TTL."""
        await self.store.remember_subject(sector, subject, person_id,
                                          self.policy.subject_index_ttl_s)

    def audit_subject(self, person_id: str) -> str:
        return self.keys.pairwise_subject(AUDIT_SECTOR, person_id)

    async def _refuse(self, exc: Refusal, *, actor: str, action: str = "consent.refused",
                      consent: Consent | None = None, consent_id: str | None = None,
                      person_id: str | None = None, types: Sequence[str] = (),
                      purpose: str | None = None) -> Refusal:
        if consent is not None:
            consent_id, person_id = consent.id, consent.person_id
            types = types or consent.types
            purpose = purpose or consent.purpose_code
        await self.audit.record(AuditEvent(
            actor=actor, action=action, outcome="refused", consent_id=_safe_id(consent_id),
            subject=self.audit_subject(person_id) if person_id else None,
            types=tuple(types), purpose=purpose, reason=exc.audit_reason))
        return exc

    async def _ok(self, actor: str, action: str, consent: Consent,
                  types: Sequence[str] | None = None) -> None:
        await self.audit.record(AuditEvent(
            actor=actor, action=action, outcome="ok", consent_id=consent.id,
            subject=self.audit_subject(consent.person_id),
            types=tuple(consent.types if types is None else types),
            purpose=consent.purpose_code))

    def _resident_actor(self, person_id: str) -> str:
        return "resident:" + self.audit_subject(person_id)

    # --- relying party -------------------------------------------------------------------

    async def request(self, client: Client, body: Mapping[str, Any]) -> tuple[Consent, str]:
        req = ConsentRequest.parse(body, self.policy)
        actor = "rp:" + client.client_id
        purpose = req.purpose_code
        not_allowed = [t for t in req.types if t not in self.policy.allowed_types(client.client_id)]
        person_id = await self.store.person_for_subject(client.sector, req.subject)
        if person_id is None or not hmac.compare_digest(
                self.keys.pairwise_subject(client.sector, person_id), req.subject):
            raise await self._refuse(
                RefusedNotFound("unknown_subject", "No such subject is known to this client"),
                actor=actor, types=req.types, purpose=purpose)
        if not_allowed:
            raise await self._refuse(
                RefusedForbidden("type_not_allowed",
                                 "This client may not request: " + ", ".join(not_allowed)),
                actor=actor, person_id=person_id, types=req.types, purpose=purpose)
        now = self.now()
        code = new_approval_code()
        consent = Consent(
            id="cns_" + secrets.token_urlsafe(16), client_id=client.client_id,
            sector=client.sector, subject=req.subject, person_id=person_id, types=req.types,
            purpose_code=req.purpose_code, purpose_text=req.purpose_text, created_at=now,
            approve_by=now + min(self.policy.approval_window_s, req.expires_in),
            expires_at=now + req.expires_in, max_uses=req.max_uses)
        await self.store.create(consent, _digest(code), self.policy.retain_s)
        await self._ok(actor, "consent.requested", consent)
        return consent, code

    async def _rp_consent(self, client_id: str, consent_id: str, *,
                          types: Sequence[str] = ()) -> Consent:
        actor = "rp:" + client_id
        consent = await self.store.get(consent_id) if CONSENT_ID_RE.match(consent_id) else None
        if consent is None:
            raise await self._refuse(RefusedNotFound("unknown_consent", "No such consent"),
                                     actor=actor, consent_id=consent_id, types=types)
        if not hmac.compare_digest(consent.client_id, client_id):
            # Another client's consent: indistinguishable from a missing one.
            raise await self._refuse(RefusedNotFound("unknown_consent", "No such consent",
                                                     audit_reason="wrong_client"),
                                     actor=actor, consent=consent, types=types)
        return consent

    async def status_for_rp(self, client_id: str, consent_id: str) -> dict[str, Any]:
        consent = await self._rp_consent(client_id, consent_id)
        now = self.now()
        view = self.rp_view(consent, now)
        if view["status"] == AUTHORISED:
            client = await self.clients.get(client_id)
            view["consent_receipt"] = self.receipt(
                consent, audience=client_id, subject=consent.subject,
                controller=client.display_name if client else client_id)
        return view

    async def query(self, client_id: str, consent_id: str,
                    types: Sequence[str] | None) -> list[dict[str, Any]]:
        """POST /v1/certificates/query: every check on every fetch, one use counted."""
        actor = "rp:" + client_id
        consent = await self._rp_consent(client_id, consent_id, types=types or ())
        wanted = tuple(dict.fromkeys(types)) if types else consent.types
        extra = [t for t in wanted if t not in consent.types]
        if extra:
            raise await self._refuse(
                RefusedForbidden("type_not_consented",
                                 "The consent does not cover: " + ", ".join(extra)),
                actor=actor, consent=consent, types=wanted)
        if not hmac.compare_digest(
                self.keys.pairwise_subject(consent.sector, consent.person_id), consent.subject):
            raise await self._refuse(RefusedForbidden("wrong_subject", "Consent not usable"),
                                     actor=actor, consent=consent, types=wanted)
        taken, before, _ = await self.store.take_use(consent.id, self.now())
        if not taken:
            state = before or "unknown_consent"
            raise await self._refuse(
                RefusedForbidden(_reason(state), _FETCH_REFUSAL.get(state, "Consent not usable")),
                actor=actor, consent=consent, types=wanted)
        try:
            citizen_id = await self.citizen_ids(consent.person_id)
            if citizen_id is None:
                raise await self._refuse(RefusedNotFound("unknown_holder", "Holder unknown"),
                                         actor=actor, consent=consent, types=wanted)
            certs = await self.library.fetch(citizen_id, list(wanted))
            del citizen_id
        except BaseException:
            await self.store.refund_use(consent.id)
            raise
        out, withheld = [], []
        for c in certs:
            if c.type in wanted and set(c.fields) <= FIELDS_BY_TYPE.get(c.type, frozenset()):
                out.append(certificate_view(c))
            else:
                withheld.append(c.type)
        if withheld:
            await self._refuse(RefusedForbidden("fields_not_allowed"), actor=actor,
                               consent=consent, types=withheld)
        await self._ok(actor, "consent.fetched", consent, [c["type"] for c in out])
        return out

    # --- resident -------------------------------------------------------------------------

    async def _own(self, person_id: str, consent_id: str) -> Consent:
        actor = self._resident_actor(person_id)
        consent = await self.store.get(consent_id) if CONSENT_ID_RE.match(consent_id) else None
        if consent is None:
            raise await self._refuse(RefusedNotFound("unknown_consent", "No such consent"),
                                     actor=actor, consent_id=consent_id, person_id=person_id)
        if not hmac.compare_digest(consent.person_id, person_id):
            # Someone else's consent: refused as if missing; audited against the ACTOR's
            # subject (the holder's log must not learn who tried).
            raise await self._refuse(RefusedNotFound("unknown_consent", "No such consent",
                                                     audit_reason="not_holder"),
                                     actor=actor, consent_id=consent.id, person_id=person_id,
                                     types=consent.types, purpose=consent.purpose_code)
        return consent

    async def scan(self, person_id: str, raw_code: str) -> dict[str, Any]:
        """The holder scanned the approval code at the counter: the consent to show."""
        actor = self._resident_actor(person_id)
        code = normalise_approval_code(raw_code)
        consent_id = await self.store.approval_code(_digest(code)) if code else None
        if consent_id is None or code is None:
            raise await self._refuse(
                RefusedNotFound("bad_approval_code", "The approval code is unknown or used"),
                actor=actor, person_id=person_id)
        consent = await self.store.get(consent_id)
        if consent is None or not hmac.compare_digest(consent.person_id, person_id):
            # Someone else's code: the same answer as an unknown one, and the code stays
            # usable by its holder; the log records the attempt against the scanner.
            raise await self._refuse(
                RefusedNotFound("bad_approval_code", "The approval code is unknown or used",
                                audit_reason="not_holder" if consent else None),
                actor=actor, consent_id=consent_id, person_id=person_id,
                types=consent.types if consent else (),
                purpose=consent.purpose_code if consent else None)
        if consent.effective_status(self.now()) != AWAITING:
            raise await self._refuse(
                RefusedConflict("already_decided", "The consent is no longer awaiting a decision"),
                actor=actor, consent=consent)
        if not await self.store.spend_approval_code(_digest(code), consent.id):
            raise await self._refuse(
                RefusedNotFound("bad_approval_code", "The approval code is unknown or used"),
                actor=actor, consent=consent)
        await self._ok(actor, "consent.scanned", consent)
        return await self.resident_view(consent)

    async def _decide(self, person_id: str, consent_id: str, allowed: Sequence[str], to: str,
                      action: str) -> Consent:
        consent = await self._own(person_id, consent_id)
        actor = self._resident_actor(person_id)
        moved, before = await self.store.transition(consent.id, allowed, to, self.now())
        if not moved:
            raise await self._refuse(
                RefusedConflict(_reason(before or "unknown_consent"),
                                f"The consent is {before}, it cannot become {to}"),
                actor=actor, consent=consent)
        await self._ok(actor, action, consent)
        fresh = await self.store.get(consent.id)
        return fresh or consent

    async def approve(self, person_id: str, consent_id: str,
                      app_client_id: str, app_subject: str) -> dict[str, Any]:
        consent = await self._decide(person_id, consent_id, (AWAITING,), AUTHORISED,
                                     "consent.authorised")
        view = await self.resident_view(consent)
        view["consent_receipt"] = self.receipt(consent, audience=app_client_id,
                                               subject=app_subject,
                                               controller=view["client"]["display_name"])
        return view

    async def reject(self, person_id: str, consent_id: str) -> dict[str, Any]:
        return await self.resident_view(await self._decide(
            person_id, consent_id, (AWAITING,), REJECTED, "consent.rejected"))

    async def revoke(self, person_id: str, consent_id: str) -> dict[str, Any]:
        return await self.resident_view(await self._decide(
            person_id, consent_id, (AWAITING, AUTHORISED), REVOKED, "consent.revoked"))

    async def list_for_person(self, person_id: str) -> list[dict[str, Any]]:
        consents = sorted(await self.store.for_person(person_id),
                          key=lambda c: c.created_at, reverse=True)
        return [await self.resident_view(c) for c in consents]

    async def access_log(self, person_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The holder's part of the audit log: who did what with which certificate types."""
        rows = await self.audit.for_subject(self.audit_subject(person_id), limit)
        names: dict[str, str] = {}
        texts: dict[str, str | None] = {}  # consent id -> the purpose in words (CONTRACT:
        out = []                           # the log shows "for what purpose")
        own_actor = self._resident_actor(person_id)
        for e in rows:
            actor = str(e.get("actor") or "")
            if actor.startswith("rp:"):
                cid = actor[3:]
                if cid not in names:
                    c = await self.clients.get(cid)
                    names[cid] = c.display_name if c else cid
                who = {"kind": "rp", "client_id": cid, "display_name": names[cid]}
            elif actor == own_actor:
                who = {"kind": "you"}
            else:
                who = {"kind": "other"}
            consent_id = e.get("consent_id")
            if isinstance(consent_id, str) and consent_id not in texts:
                consent = (await self.store.get(consent_id)
                           if CONSENT_ID_RE.match(consent_id) else None)
                texts[consent_id] = consent.purpose_text if consent else None
            out.append({"at": e["ts"], "seq": e["seq"], "action": e["action"], "by": who,
                        "consent_id": consent_id, "certificate_types": e.get("types"),
                        "purpose": e.get("purpose"),
                        "purpose_text": texts.get(consent_id) if consent_id else None,
                        "outcome": e.get("outcome"), "reason": e.get("reason")})
        return out

    # --- views and the receipt ------------------------------------------------------------

    def rp_view(self, consent: Consent, now: float) -> dict[str, Any]:
        return {"consent_id": consent.id, "status": consent.effective_status(now),
                "subject": consent.subject, "certificate_types": list(consent.types),
                "purpose": {"code": consent.purpose_code, "text": consent.purpose_text},
                "created_at": rfc3339(consent.created_at),
                "expires_at": rfc3339(consent.expires_at),
                "max_uses": consent.max_uses, "uses": consent.uses}

    async def resident_view(self, consent: Consent) -> dict[str, Any]:
        view = self.rp_view(consent, self.now())
        del view["subject"]  # the RP's subject means nothing to the holder
        client = await self.clients.get(consent.client_id)
        view["client"] = {"client_id": consent.client_id,
                          "display_name": client.display_name if client else consent.client_id}
        return view

    def receipt(self, consent: Consent, *, audience: str, subject: str,
                controller: str) -> str:
        """A Kantara-style consent receipt (Consent Receipt Specification v1.1) as a compact
        JWS signed with the token key ring (`typ` consent-receipt+jwt): verifiable offline
        from /.well-known/jwks.json. `recipient` is the party it was issued to and
        `piiPrincipalId` its subject. It carries no `aud` and no `sub` (RFC 8725 §3.11-3.12):
        signed by the same key as ID tokens, with the RP's client id as `aud` and the real
        pairwise subject as `sub` it would pass an RP's ID-token check (review finding 4)."""
        now = int(self.now())
        granted = int(consent.decided_at or now)
        claims: dict[str, Any] = {
            "iss": self.issuer, "recipient": audience, "iat": now,
            "exp": int(consent.expires_at), "jti": consent.id,
            "version": RECEIPT_VERSION, "jurisdiction": JURISDICTION,
            "consentReceiptID": consent.id, "consentTimestamp": granted,
            "collectionMethod": "holder approval in a resident app",
            "piiPrincipalId": subject,
            "piiControllers": [{"piiController": controller, "client_id": consent.client_id}],
            "services": [{"service": "electronic certificate lookup (电子证照)", "purposes": [{
                "purpose": consent.purpose_text, "purposeCategory": [consent.purpose_code],
                "consentType": "EXPLICIT", "piiCategory": list(consent.types),
                "primaryPurpose": True, "termination": rfc3339(consent.expires_at),
                "thirdPartyDisclosure": False}]}],
            "sensitive": True,
            "consent_id": consent.id, "client_id": consent.client_id,
            "certificate_types": list(consent.types),
            "purpose": {"code": consent.purpose_code, "text": consent.purpose_text},
            "granted_at": granted, "expires_at": int(consent.expires_at),
            "max_uses": consent.max_uses,
        }
        return self.signer.sign(claims, typ=RECEIPT_TYP)

    def verify_receipt(self, token: str, audience: str) -> dict[str, Any]:
        """What a party does offline with the JWKS; raises TokenInvalid when tampered."""
        claims = self.signer.verify(token, audience=None, issuer=self.issuer, typ=RECEIPT_TYP,
                                    require=("exp", "iat", "iss", "jti"))
        if "aud" in claims or "sub" in claims or claims.get("recipient") != audience:
            raise TokenInvalid("not a receipt for this party")
        return claims


def certificate_view(c: Certificate) -> dict[str, Any]:
    """A certificate as the RP receives it: the issuer's compact JWS untouched."""
    return {"type": c.type, "number": c.number, "issuer": c.issuer, "issued_at": c.issued_at,
            "fields": dict(c.fields), "issuer_signature": c.issuer_signature}


def _reason(status: str) -> str:
    return {AWAITING: "not_authorised"}.get(status, status)


def _safe_id(value: str | None) -> str | None:
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
