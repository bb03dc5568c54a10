"""The identity records: a person, their credentials, the registry entries that feed them,
and the pure helpers over them (docs/identity.md)."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from gateway.services.upstream import (
    UpstreamIdentity,
)
from gateway.timefmt import rfc3339_s

CredentialKind = Literal["ykm", "essc", "ssc_card"]
CredentialStatus = Literal["active", "lost", "replaced"]
KINDS: Final = ("ykm", "essc", "ssc_card")
STATUSES: Final = ("active", "lost", "replaced")
#: The attribute vocabulary a scene policy may name (data minimisation: nothing else exists).
ATTRIBUTES: Final = ("concession", "adult", "name_masked", "ssc_card_no", "essc_region")
ADULT_AGE: Final = 18


# --------------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Credential:
    """A linked credential. `ref_hash` = DataKeys.credential_ref_hash(kind, region, ref);
    the ref itself (account id / card number) only as `sealed_ref` (AES-GCM)."""

    credential_id: str
    kind: CredentialKind
    region: str | None
    ref_hash: str
    masked: str
    status: CredentialStatus
    linked_at: float
    replaced_by: str | None = None
    sealed_ref: str = field(default="", repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.credential_id, "kind": self.kind, "region": self.region,
                "ref_hash": self.ref_hash, "masked": self.masked, "status": self.status,
                "linked_at": self.linked_at, "replaced_by": self.replaced_by,
                "sealed_ref": self.sealed_ref}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Credential:
        return cls(credential_id=d["id"], kind=d["kind"], region=d.get("region"),
                   ref_hash=d["ref_hash"], masked=d["masked"], status=d["status"],
                   linked_at=float(d["linked_at"]), replaced_by=d.get("replaced_by"),
                   sealed_ref=d.get("sealed_ref", ""))

    def public(self) -> dict[str, Any]:
        """What GET /v1/me shows: masked, no hash, no ciphertext."""
        return {"id": self.credential_id, "kind": self.kind, "region": self.region,
                "masked": self.masked, "status": self.status,
                "linked_at": rfc3339_s(self.linked_at), "replaced_by": self.replaced_by}


@dataclass(frozen=True, slots=True)
class Person:
    """`person_id`: 32 hex characters (16 random bytes). `attributes` holds only the minimum
    the attribute vocabulary needs: `adult_on` (ISO date of the 18th birthday), `name_masked`,
    `concession`."""

    person_id: str
    trust_root_hash: str
    sealed_trust_root: str = field(repr=False)
    credentials: tuple[Credential, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)
    version: int = 0

    def credential(self, credential_id: str) -> Credential | None:
        return next((c for c in self.credentials if c.credential_id == credential_id), None)

    def by_ref(self, ref_hash: str) -> Credential | None:
        return next((c for c in self.credentials if c.ref_hash == ref_hash), None)

    def to_json(self) -> str:
        return json.dumps({"pid": self.person_id, "trh": self.trust_root_hash,
                           "str": self.sealed_trust_root,
                           "creds": [c.to_dict() for c in self.credentials],
                           "attrs": dict(self.attributes), "v": self.version},
                          separators=(",", ":"), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Person:
        d = json.loads(raw)
        return cls(person_id=d["pid"], trust_root_hash=d["trh"], sealed_trust_root=d["str"],
                   credentials=tuple(Credential.from_dict(c) for c in d["creds"]),
                   attributes=dict(d["attrs"]), version=int(d["v"]))



# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def new_person_id() -> str:
    return secrets.token_hex(16)


def mask_ref(ref: str) -> str:
    """Account id / card number mask: first 2 and last 2 characters (CQ*******25)."""
    if len(ref) <= 4:
        return "*" * len(ref)
    return ref[:2] + "*" * (len(ref) - 4) + ref[-2:]


def adult_on(citizen_id: str) -> str:
    """ISO date of the 18th birthday from the birth date in the citizen ID (GB 11643-1999
    §5: digits 7-14 are YYYYMMDD). 29 February births come of age on 1 March."""
    y, m, d = int(citizen_id[6:10]), int(citizen_id[10:12]), int(citizen_id[12:14])
    dt.date(y, m, d)  # ValueError on an impossible date
    try:
        return dt.date(y + ADULT_AGE, m, d).isoformat()
    except ValueError:
        return dt.date(y + ADULT_AGE, 3, 1).isoformat()


def credential_kind(ident: UpstreamIdentity) -> tuple[CredentialKind, str | None]:
    if ident.platform == "ykb":
        return "ykm", None
    return "essc", ident.region


@dataclass(frozen=True, slots=True)
class CredentialInput:
    """A credential as an upstream or the registry names it, before linking."""

    kind: CredentialKind
    region: str | None
    ref: str = field(repr=False)
    status: CredentialStatus = "active"


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """One person of an operator registry sync (same shape as gateway/data/residents.json)."""

    citizen_id: str = field(repr=False)
    display_name: str = field(repr=False)
    credentials: tuple[CredentialInput, ...]
    concession: str | None = None


@dataclass(frozen=True, slots=True)
class SyncReport:
    persons: int = 0
    created: int = 0
    linked: int = 0
    updated: int = 0
    conflicts: int = 0


@dataclass
class ResealReport:
    """What `gateway identity reseal` changed (docs/crypto-suites.md "Migration")."""

    suite: str = "intl"
    dry_run: bool = False
    persons: int = 0
    persons_changed: int = 0
    trust_roots_rehashed: int = 0
    trust_roots_resealed: int = 0
    credentials_rehashed: int = 0
    credentials_resealed: int = 0
    revocations_moved: int = 0
    already_current: int = 0
    failed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)
