"""The consent use cases: the subject index, the relying party's requests and fetches, the
resident's decisions, the views and the signed receipt (module docstring of
gateway.services.consents)."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.authz.clients import Client
from gateway.authz.datakeys import DataKeys
from gateway.authz.tokens import JwtSigner, TokenInvalid
from gateway.ports import ClientStore
from gateway.services.audit import AUDIT_SECTOR, AuditEvent, AuditTrail
from gateway.services.consents.model import (
    AUTHORISED,
    AWAITING,
    CONSENT_ID_RE,
    FETCH_REFUSAL,
    FIELDS_BY_TYPE,
    JURISDICTION,
    RECEIPT_TYP,
    RECEIPT_VERSION,
    REJECTED,
    REVOKED,
    CitizenIds,
    Consent,
    ConsentPolicy,
    ConsentRequest,
    Refusal,
    RefusedConflict,
    RefusedForbidden,
    RefusedNotFound,
    certificate_view,
    code_digest,
    new_approval_code,
    normalise_approval_code,
    public_reason,
    safe_id,
)
from gateway.services.ports import ConsentStore
from gateway.services.upstream import CertificateLibrary
from gateway.timefmt import rfc3339


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
            actor=actor, action=action, outcome="refused", consent_id=safe_id(consent_id),
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
        await self.store.create(consent, code_digest(code), self.policy.retain_s)
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
                RefusedForbidden(public_reason(state),
                                 FETCH_REFUSAL.get(state, "Consent not usable")),
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
        consent_id = await self.store.approval_code(code_digest(code)) if code else None
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
        if not await self.store.spend_approval_code(code_digest(code), consent.id):
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
                RefusedConflict(public_reason(before or "unknown_consent"),
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
