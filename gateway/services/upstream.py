"""Ports to the upstream platforms the gateway joins (see docs/upstreams.md).

* 渝快办 (ykb) identity platform: issues the 渝快码 (ykm) account assertions residents bring to
  the token-exchange grant (RFC 8693) and to ``POST /v1/me/links``.
* The national e-SSC platform (电子社保卡), one issuer per province (``CQ`` Chongqing, ``SC``
  Sichuan, …): card-holder assertions, e-SSC codes in the platform's own format, and the
  platform's code-verification keys for the gateway's trust list.
* The electronic-certificate library (电子证照库): certificates by citizen ID, each signed by
  its issuing authority (a compact JWS, RFC 7515).
* PSAM attestation of physical-card taps (实体卡): a pure MAC check on the hot path.

This module is pure: dataclasses, Protocols and the PSAM MAC functions. The HTTP clients live in
``gateway.adapters.upstream``, the sandbox platforms in ``gateway.adapters.sandbox``.
The citizen ID number is the trust root (身份信任源点) and personal data: every ``__repr__``
here masks it, and no error text carries it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal, Protocol, runtime_checkable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.base64url import b64u
from gateway.errors import Unauthorized

__all__ = [
    "CERTIFICATE_TYPES",
    "AssertionRejected",
    "Certificate",
    "CertificateLibrary",
    "EsscAccount",
    "EsscPlatform",
    "IdentityPlatform",
    "PsamAttestation",
    "Resident",
    "ResidentCertificate",
    "SscCard",
    "UpstreamAccount",
    "UpstreamIdentity",
    "citizen_id_check_char",
    "compute_terminal_mac",
    "compute_terminal_mac_with_gate_key",
    "derive_gate_key",
    "is_valid_card_no",
    "is_valid_citizen_id",
    "load_residents",
    "mask_citizen_id",
    "mask_name",
    "ssc_card_check_digit",
    "verify_terminal_mac",
]

Platform = Literal["ykb", "essc"]

#: Certificate types the 电子证照库 serves (渝府办发〔2021〕130号: certificates with the holder's
#: authorisation).
CERTIFICATE_TYPES: Final = frozenset(
    {"driving_licence", "household_register", "degree", "resident_id", "qualification"})


# --------------------------------------------------------------------------------------------
# Citizen ID (GB 11643-1999) and social-security card number
# --------------------------------------------------------------------------------------------

_GB11643_WEIGHTS: Final = tuple(pow(2, 17 - i, 11) for i in range(17))
_GB11643_CHECK: Final = "10X98765432"


def citizen_id_check_char(first17: str) -> str:
    """GB 11643-1999 §6.3 check character (ISO 7064 MOD 11-2) over the first 17 digits."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("expected 17 ASCII digits")
    total = sum(int(d) * w for d, w in zip(first17, _GB11643_WEIGHTS, strict=True))
    return _GB11643_CHECK[total % 11]


def is_valid_citizen_id(cid: str) -> bool:
    """18-character 居民身份证号码 with a correct GB 11643-1999 check character."""
    if not isinstance(cid, str) or len(cid) != 18 or not cid.isascii():
        return False
    body, check = cid[:17], cid[17].upper()
    if not body.isdigit():
        return False
    return hmac.compare_digest(citizen_id_check_char(body), check)


def _card_digits(body: str) -> str:
    # Letters become their two-digit value A=10 … Z=35 (as in ISO 13616 / IBAN).
    return "".join(str(int(c, 36)) for c in body)


def ssc_card_check_digit(body: str) -> str:
    """Check digit of our social-security card number (docs/upstreams.md "Card numbers").

    ``body`` is the 2-letter issuing region plus an 8-digit serial; the check digit is Luhn
    (ISO/IEC 7812-1 Annex B) over the body with letters replaced by A=10 … Z=35.
    """
    if (len(body) != 10 or not body.isascii() or not body[:2].isalpha()
            or not body[:2].isupper() or not body[2:].isdigit()):
        raise ValueError("expected 2 upper-case letters and 8 digits")
    digits = _card_digits(body)
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d)
        if i % 2 == 0:  # the digit next to the (future) check digit is doubled
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return str((10 - total % 10) % 10)


def is_valid_card_no(card_no: str) -> bool:
    if not isinstance(card_no, str) or len(card_no) != 11:
        return False
    try:
        return hmac.compare_digest(ssc_card_check_digit(card_no[:10]), card_no[10])
    except ValueError:
        return False


def mask_citizen_id(cid: str) -> str:
    """``50**************1X``-style mask: enough to tell records apart in a debugger, no more."""
    if len(cid) < 5:
        return "*" * len(cid)
    return cid[:2] + "*" * (len(cid) - 4) + cid[-2:]


def mask_name(name: str) -> str:
    """Chinese convention: keep the surname, mask the given name (张伟 → 张*)."""
    if len(name) <= 1:
        return "*"
    return name[0] + "*" * (len(name) - 1)


# --------------------------------------------------------------------------------------------
# Identity platforms (渝快办, e-SSC)
# --------------------------------------------------------------------------------------------

AssertionRejectReason = Literal[
    "malformed", "unknown_issuer", "unknown_key", "bad_signature", "expired", "not_yet_valid",
    "wrong_audience", "missing_claim", "lifetime_too_long"]


class AssertionRejected(Unauthorized):
    """An upstream assertion JWT the gateway will not accept (RFC 7523 §3 processing rules).

    ``reason`` is one of :data:`AssertionRejectReason`; the public ``detail`` names only the
    reason, never a claim value.
    """

    def __init__(self, reason: AssertionRejectReason, *, debug: str | None = None) -> None:
        super().__init__(f"The upstream assertion was rejected: {reason}", debug=debug)
        self.reason: AssertionRejectReason = reason


@dataclass(frozen=True, slots=True)
class UpstreamIdentity:
    """Who an upstream assertion says the person is.

    ``account_id`` is the platform's own id (渝快码 account / e-SSC card-holder id);
    ``citizen_id`` is the trust root and is masked in ``repr``.
    """

    platform: Platform
    region: str | None
    account_id: str
    citizen_id: str = field(repr=False)
    display_name: str
    jti: str
    issuer: str
    issued_at: int
    expires_at: int

    def __repr__(self) -> str:
        return (f"UpstreamIdentity(platform={self.platform!r}, region={self.region!r}, "
                f"account_id={self.account_id!r}, citizen_id={mask_citizen_id(self.citizen_id)!r}"
                f", display_name={self.display_name!r}, jti={self.jti!r}, "
                f"issuer={self.issuer!r}, expires_at={self.expires_at!r})")

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class UpstreamAccount:
    """An account as the platform reports it on lookup (``status`` ``active|suspended``)."""

    platform: Platform
    region: str | None
    account_id: str
    status: str
    display_name: str
    citizen_id: str = field(repr=False)

    def __repr__(self) -> str:
        return (f"UpstreamAccount(platform={self.platform!r}, region={self.region!r}, "
                f"account_id={self.account_id!r}, status={self.status!r}, "
                f"display_name={self.display_name!r}, "
                f"citizen_id={mask_citizen_id(self.citizen_id)!r})")

    __str__ = __repr__


@runtime_checkable
class IdentityPlatform(Protocol):
    """渝快办 or an e-SSC platform as an identity provider."""

    platform: Platform

    async def verify_assertion(self, assertion: str) -> UpstreamIdentity:
        """Verify signature, issuer, audience and lifetime; raise :class:`AssertionRejected`.

        Raises ``gateway.errors.UpstreamUnavailable`` when the keys cannot be fetched. Replay of
        ``jti`` is the caller's check (it holds the store).
        """
        ...

    async def lookup_account(self, account_id: str,
                             region: str | None = None) -> UpstreamAccount | None:
        """The account, or ``None`` when the platform does not know it."""
        ...


@runtime_checkable
class EsscPlatform(Protocol):
    """The national e-SSC platform: codes in its own format and their verification keys."""

    async def issue_code(self, holder_account_id: str, region: str) -> str:
        """A fresh e-SSC code for the holder (not idempotent: never retried)."""
        ...

    async def code_keys(self, region: str | None = None) -> list[dict[str, Any]]:
        """Code-verification JWKs (RFC 7517) with ``iss``, ``nbf``, ``exp`` validity members;
        all regions when ``region`` is ``None``."""
        ...


# --------------------------------------------------------------------------------------------
# Electronic-certificate library (电子证照库)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Certificate:
    """One electronic certificate. ``issuer_signature`` is a compact JWS (RFC 7515) by the
    issuing authority whose payload is the certificate itself (see docs/upstreams.md)."""

    type: str
    number: str
    issuer: str
    fields: Mapping[str, Any]
    issuer_signature: str = field(repr=False)
    issued_at: int


@runtime_checkable
class CertificateLibrary(Protocol):
    async def fetch(self, citizen_id: str, types: Sequence[str]) -> list[Certificate]:
        """The holder's certificates of the given types (those the library has)."""
        ...


# --------------------------------------------------------------------------------------------
# PSAM attestation of card taps (实体卡)
# --------------------------------------------------------------------------------------------

_PSAM_SEP: Final = "|"


def derive_gate_key(master_key: bytes, gate_client_id: str) -> bytes:
    """K_gate = HKDF-SHA256(master_key, salt=none, info="psam:" || gate_client_id), 32 bytes
    (RFC 5869). In production the master key stays with the card-management system (卡管系统);
    the gateway is provisioned only with each gate's derived verification key."""
    if len(master_key) < 16:
        raise ValueError("PSAM master key too short")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"psam:" + gate_client_id.encode("utf-8")).derive(master_key)


def _mac_input(card_no: str, region: str, gate_client_id: str, request_id: str,
               scanned_at: str) -> bytes:
    parts = (card_no, region, gate_client_id, request_id, scanned_at)
    if any(_PSAM_SEP in p for p in parts):
        # The separator inside a field would make two different taps MAC the same bytes.
        raise ValueError("a tap field contains the separator")
    return _PSAM_SEP.join(parts).encode("utf-8")


def compute_terminal_mac_with_gate_key(gate_key: bytes, *, card_no: str, region: str,
                                       gate_client_id: str, request_id: str,
                                       scanned_at: str) -> str:
    """terminal_mac = base64url(HMAC-SHA256(K_gate, card_no|region|gate_client_id|request_id|
    scanned_at)) without padding (RFC 2104, RFC 4648 §5)."""
    mac = hmac.new(gate_key, _mac_input(card_no, region, gate_client_id, request_id, scanned_at),
                   hashlib.sha256).digest()
    return b64u(mac)


def compute_terminal_mac(master_key: bytes, *, card_no: str, region: str, gate_client_id: str,
                         request_id: str, scanned_at: str) -> str:
    """What the gate's PSAM computes (it holds K_gate, derived from the master key)."""
    return compute_terminal_mac_with_gate_key(
        derive_gate_key(master_key, gate_client_id), card_no=card_no, region=region,
        gate_client_id=gate_client_id, request_id=request_id, scanned_at=scanned_at)


def verify_terminal_mac(gate_key: bytes, *, card_no: str, region: str, gate_client_id: str,
                        request_id: str, scanned_at: str, terminal_mac: str) -> bool:
    """Constant-time check of a tap's ``terminal_mac`` with the gate's verification key."""
    if not isinstance(terminal_mac, str) or not terminal_mac.isascii():
        return False
    try:
        expected = compute_terminal_mac_with_gate_key(
            gate_key, card_no=card_no, region=region, gate_client_id=gate_client_id,
            request_id=request_id, scanned_at=scanned_at)
    except ValueError:
        return False
    return hmac.compare_digest(expected.encode("ascii"), terminal_mac.encode("ascii"))


class PsamAttestation:
    """Verifier over per-gate keys: either provisioned K_gate values, or (sandbox) derived from
    the master key on first use. Pure and I/O free; derived keys are cached."""

    def __init__(self, *, master_key: bytes | None = None,
                 gate_keys: Mapping[str, bytes] | None = None) -> None:
        if master_key is None and gate_keys is None:
            raise ValueError("give a master key or gate keys")
        self._master = master_key
        self._keys: dict[str, bytes] = dict(gate_keys or {})

    def __repr__(self) -> str:
        return f"PsamAttestation(gates={len(self._keys)})"

    def gate_key(self, gate_client_id: str) -> bytes | None:
        key = self._keys.get(gate_client_id)
        if key is None and self._master is not None:
            key = self._keys[gate_client_id] = derive_gate_key(self._master, gate_client_id)
        return key

    def verify(self, *, card_no: str, region: str, gate_client_id: str, request_id: str,
               scanned_at: str, terminal_mac: str) -> bool:
        key = self.gate_key(gate_client_id)
        if key is None:
            return False
        return verify_terminal_mac(key, card_no=card_no, region=region,
                                   gate_client_id=gate_client_id, request_id=request_id,
                                   scanned_at=scanned_at, terminal_mac=terminal_mac)


# --------------------------------------------------------------------------------------------
# Demo residents (gateway/data/residents.json): sandbox seed data, fictitious people
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class EsscAccount:
    region: str
    holder_id: str


@dataclass(frozen=True, slots=True)
class SscCard:
    card_no: str
    region: str
    status: Literal["active", "lost", "replaced"]


@dataclass(frozen=True, slots=True)
class ResidentCertificate:
    """A certificate the sandbox 电子证照库 holds for a resident (signed when served)."""

    type: str
    number: str
    issuer: str
    issued_at: int
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Resident:
    id: str
    display_name: str
    citizen_id: str = field(repr=False)
    ykm_account: str | None
    essc_accounts: tuple[EsscAccount, ...]
    cards: tuple[SscCard, ...]
    concession: str | None
    certificates: tuple[ResidentCertificate, ...] = field(repr=False)

    def __repr__(self) -> str:
        return (f"Resident(id={self.id!r}, display_name={self.display_name!r}, "
                f"citizen_id={mask_citizen_id(self.citizen_id)!r}, "
                f"ykm_account={self.ykm_account!r}, essc_accounts={self.essc_accounts!r}, "
                f"cards={self.cards!r}, concession={self.concession!r})")

    def essc_holder(self, region: str) -> str | None:
        return next((a.holder_id for a in self.essc_accounts if a.region == region), None)


def _resident(raw: Mapping[str, Any]) -> Resident:
    cid = raw["citizen_id"]
    if not is_valid_citizen_id(cid):
        raise ValueError(f"resident {raw['id']}: citizen ID fails the GB 11643 check")
    cards = tuple(SscCard(c["card_no"], c["region"], c["status"]) for c in raw.get("cards", ()))
    for c in cards:
        if not is_valid_card_no(c.card_no) or c.status not in ("active", "lost", "replaced"):
            raise ValueError(f"resident {raw['id']}: bad card entry")
    certs = tuple(ResidentCertificate(c["type"], c["number"], c["issuer"], int(c["issued_at"]),
                                      dict(c["fields"])) for c in raw.get("certificates", ()))
    if any(c.type not in CERTIFICATE_TYPES for c in certs):
        raise ValueError(f"resident {raw['id']}: unknown certificate type")
    return Resident(
        id=raw["id"], display_name=raw["display_name"], citizen_id=cid,
        ykm_account=raw.get("ykm_account"),
        essc_accounts=tuple(EsscAccount(a["region"], a["holder_id"])
                            for a in raw.get("essc_accounts", ())),
        cards=cards, concession=raw.get("concession"), certificates=certs)


def load_residents(path: Path | None = None) -> tuple[Resident, ...]:
    """Load and validate the demo residents (default: the packaged gateway/data/residents.json)."""
    if path is None:
        text = resources.files("gateway").joinpath("data/residents.json").read_text("utf-8")
    else:
        text = path.read_text(encoding="utf-8")
    doc = json.loads(text)
    residents = tuple(_resident(r) for r in doc["residents"])
    if len({r.id for r in residents}) != len(residents):
        raise ValueError("duplicate resident id")
    return residents
