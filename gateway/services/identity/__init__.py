"""One person, one record (CONTRACT "Identity model"): 渝快码 (ykm), 电子社保卡 (essc, per issuing
region) and the physical card 实体卡 (ssc_card) linked to ONE person rooted in the citizen ID
(居民身份证, 身份信任源点).

* The citizen ID is stored only as a keyed hash (`trust_root_hash`, for lookup) and AES-GCM
  ciphertext bound to the person id (`sealed_trust_root`, for upstream calls); never in clear.
* A credential's platform account id / card number is stored as a keyed hash (`ref_hash`, for
  lookup) and AES-GCM ciphertext bound to the person and credential ids (`sealed_ref`).
* Clients only ever see pairwise subject identifiers (OpenID Connect Core 1.0 §8.1).

Linking is all or nothing: the credential index entry is claimed first (atomic "first one
wins"), then the person record is updated by compare-and-set; if the update fails the claim is
released. The person record is the truth: an index entry that its person's record does not
back (a crash between the two steps) is stale and may be taken over. A credential therefore
links to one person only, whatever the concurrency.

Revocation (挂失): lost and replaced cards are kept in a revocation set with a version number;
every worker holds an in-process copy (`RevocationView`) kept fresh by pub/sub plus a version
poll, so the gate path answers `revoked` without a store round trip (docs/identity.md).

Modules: records (person, credentials, registry entries), store (the revocation view; the
store port is gateway.services.ports.IdentityStore), service (the use cases), links (linking
by upstream assertion, the assertion router), gate_view (what the gate path and code
issuance see).
"""

from __future__ import annotations

from gateway.services.identity.gate_view import GateIdentityAdapter
from gateway.services.identity.links import (
    AssertionCheck,
    AssertionRouter,
    Links,
    assertion_replay_key,
)
from gateway.services.identity.records import (
    ADULT_AGE,
    ATTRIBUTES,
    KINDS,
    STATUSES,
    Credential,
    CredentialInput,
    CredentialKind,
    CredentialStatus,
    Person,
    RegistryEntry,
    ResealReport,
    SyncReport,
    adult_on,
    credential_kind,
    mask_ref,
    new_person_id,
)
from gateway.services.identity.service import (
    IdentityService,
    PersonResolverFn,
    registry_entries,
)
from gateway.services.identity.store import IndexKind, RevocationView
from gateway.services.ports import IdentityStore

__all__ = [
    "ADULT_AGE",
    "ATTRIBUTES",
    "KINDS",
    "STATUSES",
    "AssertionCheck",
    "AssertionRouter",
    "Credential",
    "CredentialInput",
    "CredentialKind",
    "CredentialStatus",
    "GateIdentityAdapter",
    "IdentityService",
    "IdentityStore",
    "IndexKind",
    "Links",
    "Person",
    "PersonResolverFn",
    "RegistryEntry",
    "ResealReport",
    "RevocationView",
    "SyncReport",
    "adult_on",
    "assertion_replay_key",
    "credential_kind",
    "mask_ref",
    "new_person_id",
    "registry_entries",
]
