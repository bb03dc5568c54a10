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

Modules: model (statuses, refusals, the consent record, policy, approval codes, the request),
service (the use cases, the views and the receipt); the store port is
gateway.services.ports.ConsentStore.
"""

from __future__ import annotations

from gateway.services.consents.model import (
    APPROVAL_ALPHABET,
    APPROVAL_CODE_LEN,
    AUTHORISED,
    AWAITING,
    CONSENT_ID_RE,
    EXHAUSTED,
    EXPIRED,
    FETCH_REFUSAL,
    FIELDS_BY_TYPE,
    JURISDICTION,
    PURPOSE_CODE_RE,
    RECEIPT_TYP,
    RECEIPT_VERSION,
    REJECTED,
    REVOKED,
    SANDBOX_TYPES_BY_CLIENT,
    STATUSES,
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
    person_of,
    public_reason,
    safe_id,
    with_status,
)
from gateway.services.consents.service import ConsentService
from gateway.services.ports import ConsentStore

__all__ = [
    "APPROVAL_ALPHABET",
    "APPROVAL_CODE_LEN",
    "AUTHORISED",
    "AWAITING",
    "CONSENT_ID_RE",
    "EXHAUSTED",
    "EXPIRED",
    "FETCH_REFUSAL",
    "FIELDS_BY_TYPE",
    "JURISDICTION",
    "PURPOSE_CODE_RE",
    "RECEIPT_TYP",
    "RECEIPT_VERSION",
    "REJECTED",
    "REVOKED",
    "SANDBOX_TYPES_BY_CLIENT",
    "STATUSES",
    "CitizenIds",
    "Consent",
    "ConsentPolicy",
    "ConsentRequest",
    "ConsentService",
    "ConsentStore",
    "Refusal",
    "RefusedConflict",
    "RefusedForbidden",
    "RefusedNotFound",
    "certificate_view",
    "code_digest",
    "new_approval_code",
    "normalise_approval_code",
    "person_of",
    "public_reason",
    "safe_id",
    "with_status",
]
