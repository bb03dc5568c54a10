"""Device enrolment: the gateway certifies a key held on the resident's phone (docs/devices.md).

The phone asks for a challenge (``POST /v1/devices/challenge``), signs it with its device key
(proof of possession) and sends the public key with the signature (``POST /v1/devices``);
the gateway answers a device certificate (docs/code-format.md §10.2) signed with its 渝快码
code key, and the phone makes ``YK2:`` codes alone from then on. Sending the same key again
before the certificate runs out renews it (same device, new serial). The private key never
leaves the phone; the gateway keeps, per device, only what it needs to list and revoke it: the
person, the algorithm, a hash of the key, and the serials and not-afters of the certificates
still in their window.

* **Challenge**: stateless, ``b64url(random 16 ‖ expires_at u32 ‖ HMAC-SHA256(key, person ‖
  random ‖ expires_at)[:16])`` — bound to the resident, short-lived, and single-use (its
  random part is claimed in the ``SingleUse`` store when it is spent).
* **Proof of possession**: the device key's signature over the ASCII text
  ``"cq-gateway device enrolment v1\\n" + challenge + "\\n" + public_key`` (the two strings
  exactly as sent), 64 bytes as in the code format.
* **Revocation**: removing a device (or suspending its person) puts its live serials on the
  device revocation log; a gate learns them from the signed list
  ``GET /v1/revocations/devices``; this worker's in-process view answers the gate path.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

import structlog

from gateway.authz.keyring import KeyRing, SigningKey
from gateway.clock import Clock
from gateway.codec import (
    DEVICE_ALGS,
    Signer,
    encode_certificate,
    normalise_device_key,
    signer_for,
)
from gateway.codec.device import DEVICE_DENY_LIST_TYP, device_alg
from gateway.codec.jws import canonical_json
from gateway.codec.jws import sign_compact as jws_sign
from gateway.errors import Conflict, Forbidden, InvalidRequest, NotFound
from gateway.ports import SingleUse
from gateway.services.ports import DeviceStore, Sealer
from gateway.services.trustlist import document_signer

__all__ = [
    "POP_CONTEXT",
    "Challenge",
    "DeviceRecord",
    "DeviceRevocationLog",
    "DeviceRevocations",
    "DeviceService",
    "DeviceStore",
    "Enrolment",
    "RevokedSerial",
    "pop_message",
]

log = structlog.get_logger("gateway.devices")

POP_CONTEXT: Final = "cq-gateway device enrolment v1"
CHALLENGE_TTL_S: Final = 120
_CHALLENGE: Final = struct.Struct(">16sI16s")
#: revoked serials stay listed this long past their certificate's not-after (clock skew).
REVOCATION_GRACE_S: Final = 60


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64u(text: str) -> bytes:
    if not text or len(text) > 512 or not all(c.isalnum() or c in "-_" for c in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def pop_message(challenge: str, public_key: str) -> bytes:
    """What the device signs to prove it holds the key (docs/devices.md "Enrolment")."""
    return f"{POP_CONTEXT}\n{challenge}\n{public_key}".encode("ascii")


@dataclass(frozen=True)
class DeviceRecord:
    """What the gateway keeps of one enrolled device (no key material beyond a hash)."""

    device_id: str
    person_id: str
    alg: str
    key_hash: str  # SHA-256 hex of the certificate-form public key
    created_at: int
    certificates: tuple[tuple[str, int], ...] = ()  # (serial hex, not_after) still valid

    def live(self, now: float) -> tuple[tuple[str, int], ...]:
        return tuple(c for c in self.certificates if c[1] + REVOCATION_GRACE_S > now)

    def to_json(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "person_id": self.person_id, "alg": self.alg,
                "key_hash": self.key_hash, "created_at": self.created_at,
                "certificates": [list(c) for c in self.certificates]}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> DeviceRecord:
        return cls(device_id=doc["device_id"], person_id=doc["person_id"], alg=doc["alg"],
                   key_hash=doc["key_hash"], created_at=int(doc["created_at"]),
                   certificates=tuple((str(s), int(n)) for s, n in doc["certificates"]))


@dataclass(frozen=True)
class RevokedSerial:
    serial: str  # hex
    not_after: int
    version: int


AddResult = Literal["added", "full", "removed", "exists"]


@dataclass(frozen=True)
class Challenge:
    challenge: str
    expires_at: int


@dataclass(frozen=True)
class Enrolment:
    device: DeviceRecord
    certificate: bytes
    serial: str
    not_before: int
    not_after: int
    renewed: bool

    def to_json(self, renew_after_fraction: float = 0.5) -> dict[str, Any]:
        life = self.not_after - self.not_before
        return {"device_id": self.device.device_id, "alg": self.device.alg,
                "certificate": _b64u(self.certificate), "serial": self.serial,
                "not_before": self.not_before, "not_after": self.not_after,
                "renew_after": self.not_before + int(life * renew_after_fraction),
                "renewed": self.renewed}


class DeviceRevocations:
    """This worker's view of the revocation log (the gate path asks it, no I/O).

    Fails closed: until the log has been read once (start-up, or the first poll that reaches
    the store), every device serial counts as revoked."""

    def __init__(self) -> None:
        self.version = 0
        self.loaded = False
        self._revoked: dict[bytes, int] = {}

    def is_revoked(self, serial: bytes) -> bool:
        return serial in self._revoked or not self.loaded

    def apply(self, version: int, entries: Sequence[RevokedSerial], now: float) -> None:
        for e in entries:
            self._revoked[bytes.fromhex(e.serial)] = e.not_after
        if len(self._revoked) > 1024:
            cut = now - REVOCATION_GRACE_S
            self._revoked = {s: n for s, n in self._revoked.items() if n > cut}
        self.version = max(self.version, version)


def _signer_of(key: SigningKey) -> Signer:
    signer = signer_for(key.private_key)  # EdDSA, ES256 or SM2 (GATEWAY_CRYPTO_SUITE=gm)
    if signer.kid != key.kid:
        raise RuntimeError("code key id derivation mismatch")
    return signer


class DeviceRevocationLog:
    """The device revocation log: the store's entries and this worker's view of them
    (``view``, asked by the gate path), written together. Built before the identity service,
    which tells it of every suspension (``on_suspension``); the device service removes
    devices and signs the list over the same log."""

    def __init__(self, store: DeviceStore, clock: Clock) -> None:
        self.store = store
        self._clock = clock
        self.view = DeviceRevocations()

    async def revoke(self, serials: Sequence[tuple[str, int]], now: float) -> None:
        if not serials:
            return
        version = await self.store.revoke_serials(serials, now)
        # the entries only: the view's version moves by the poll, which reads what other
        # workers added in between
        self.view.apply(0, [RevokedSerial(s, n, version) for s, n in serials], now)

    async def suspend(self, person_id: str) -> int:
        """A suspended person: revoke every live certificate of every device (the gateway
        refuses renewal while suspended). Returns how many serials were listed."""
        now = self._clock.now()
        serials = [c for d in await self.store.for_person(person_id) for c in d.live(now)]
        await self.revoke(serials, now)
        return len(serials)

    async def on_suspension(self, person_id: str, suspended: bool) -> None:
        """The identity service's suspension observer (a reinstated person enrols again)."""
        if suspended:
            await self.suspend(person_id)

    async def refresh(self) -> bool:
        """Pull log entries newer than this worker's view (the periodic poll)."""
        now = self._clock.now()
        view = self.view
        version, entries = await self.store.revocations(view.version, now)
        if version == view.version and not entries and view.loaded:
            return False
        view.apply(version, entries, now)
        view.loaded = True
        return True


class DeviceService:
    def __init__(self, *, revocation_log: DeviceRevocationLog, single_use: SingleUse,
                 code_ring: Callable[[], KeyRing], signing_ring: Callable[[], KeyRing],
                 holder: Sealer, challenge_key: bytes, clock: Clock, cert_ttl_s: int,
                 max_devices: int, flags_of: Callable[[str], Awaitable[int]],
                 suspended: Callable[[str], bool], list_max_age_s: int = 86_400) -> None:
        """`revocation_log` brings the device store; `signing_ring` signs the device
        deny-list (the trust-list key); `flags_of`: the fare flags a certificate seals;
        `suspended`: a suspended person is refused enrolment."""
        self._log = revocation_log
        self._store = revocation_log.store
        self._once = single_use
        self._ring = code_ring
        self._signing_ring = signing_ring
        self.list_max_age_s = list_max_age_s
        self._holder = holder
        self._mac = hmac.new(challenge_key, digestmod=hashlib.sha256)
        self._clock = clock
        self.cert_ttl_s = cert_ttl_s
        self.max_devices = max_devices
        self._flags_of = flags_of
        self._suspended = suspended
        self._signers: dict[str, Signer] = {}

    @property
    def revocations(self) -> DeviceRevocations:
        """This worker's view of the revocation log (the gate path's)."""
        return self._log.view

    # ---------------------------------------------------------------- challenge
    def _tag(self, person_id: str, rand: bytes, expires_at: int) -> bytes:
        mac = self._mac.copy()
        mac.update(person_id.encode() + b"\x00" + rand + expires_at.to_bytes(4, "big"))
        return mac.digest()[:16]

    def challenge(self, person_id: str) -> Challenge:
        expires_at = int(self._clock.now()) + CHALLENGE_TTL_S
        rand = secrets.token_bytes(16)
        raw = _CHALLENGE.pack(rand, expires_at, self._tag(person_id, rand, expires_at))
        return Challenge(_b64u(raw), expires_at)

    def _check_challenge(self, person_id: str, challenge: str) -> tuple[bytes, int]:
        try:
            raw = _unb64u(challenge)
            rand, expires_at, tag = _CHALLENGE.unpack(raw)
        except (ValueError, struct.error):
            raise InvalidRequest("challenge is not one this gateway issued") from None
        if not hmac.compare_digest(tag, self._tag(person_id, rand, expires_at)):
            raise InvalidRequest("challenge is not one this gateway issued for this resident")
        if self._clock.now() > expires_at:
            raise InvalidRequest("challenge has expired; ask for a new one")
        return rand, expires_at

    async def _spend_challenge(self, rand: bytes, expires_at: int) -> None:
        ttl = max(1.0, expires_at - self._clock.now() + 1)
        if await self._once.claim("devchal:" + rand.hex(), ttl):
            raise InvalidRequest("challenge was already used; ask for a new one")

    # ---------------------------------------------------------------- enrolment / renewal
    async def enrol(self, person_id: str, alg: str, public_key: str, challenge: str,
                    proof: str) -> Enrolment:
        """Certify a device key (new device, or renewal of an enrolled one with the same key).

        400 for an unsupported alg, a key that is not one, a challenge that is not valid, or a
        proof that does not verify; 403 for a suspended person; 409 when the person already
        has the maximum number of devices."""
        try:
            algorithm = device_alg(alg)
        except ValueError:
            supported = ", ".join(sorted(a.name for a in DEVICE_ALGS.values()))
            raise InvalidRequest(f"alg is not supported (supported: {supported})") from None
        try:
            key = normalise_device_key(alg, _unb64u(public_key))
        except ValueError:
            raise InvalidRequest(f"public_key is not a valid {alg} public key") from None
        try:
            signature = _unb64u(proof)
        except ValueError:
            raise InvalidRequest("proof is not base64url") from None
        rand, expires_at = self._check_challenge(person_id, challenge)
        if not algorithm.verifier(key)(pop_message(challenge, public_key), signature):
            # checked before the challenge is spent: a wrong proof does not burn it
            raise InvalidRequest("proof of possession does not verify",
                                 debug="device pop failed")
        await self._spend_challenge(rand, expires_at)
        if self._suspended(person_id):
            raise Forbidden("This resident's credentials are suspended")
        now = int(self._clock.now())
        key_hash = hashlib.sha256(key).hexdigest()
        existing = await self._device_with_key(person_id, key_hash)
        renewed = existing is not None
        if existing is None:
            existing = DeviceRecord(device_id="dev_" + secrets.token_hex(12),
                                    person_id=person_id, alg=alg, key_hash=key_hash,
                                    created_at=now)
            added = await self._store.add(existing, self.max_devices)
            if added == "exists":  # the same key enrolled concurrently: renew that device
                found = await self._device_with_key(person_id, key_hash)
                if found is None:
                    raise Conflict("The device changed meanwhile; retry")
                existing, renewed = found, True
            elif added == "removed":
                raise Forbidden("This device key was removed; make a new key to enrol again")
            if added == "full":
                raise Conflict(f"At most {self.max_devices} devices per resident: remove one "
                               "first (DELETE /v1/me/devices/{id})")
        serial = secrets.token_bytes(12)
        not_after = now + self.cert_ttl_s
        flags = await self._flags_of(person_id)
        holder, sealed_flags = self._holder.seal(person_id, serial, flags)
        certificate = encode_certificate(
            signer=self._signer(), device_alg=alg, device_key=key, serial=serial,
            holder=holder, flags=sealed_flags, not_before=now, not_after=not_after)
        record = await self._store.add_certificate(person_id, existing.device_id, serial.hex(),
                                                   not_after, now)
        if record is None:  # removed between the two steps: no certificate for it
            raise NotFound("The device was removed")
        log.info("device.certified", device=record.device_id, alg=alg, renewed=renewed)
        return Enrolment(record, certificate, serial.hex(), now, not_after, renewed)

    async def _device_with_key(self, person_id: str, key_hash: str) -> DeviceRecord | None:
        return next((d for d in await self._store.for_person(person_id)
                     if hmac.compare_digest(d.key_hash, key_hash)), None)

    def _signer(self) -> Signer:
        key = self._ring().current()
        signer = self._signers.get(key.kid)
        if signer is None:
            signer = _signer_of(key)
            self._signers = {key.kid: signer}
        return signer

    # ---------------------------------------------------------------- listing / removal
    async def list_devices(self, person_id: str) -> list[dict[str, Any]]:
        now = self._clock.now()
        out = []
        for d in sorted(await self._store.for_person(person_id), key=lambda d: d.created_at):
            live = d.live(now)
            out.append({"device_id": d.device_id, "alg": d.alg,
                        "key_fingerprint": d.key_hash[:16], "created_at": d.created_at,
                        "certified_until": max((n for _, n in live), default=None)})
        return out

    async def remove(self, person_id: str, device_id: str) -> None:
        """Lost phone: the device goes, and every certificate of it still in its window is
        revoked (online at once on this worker, within a second on the others; offline once
        the gates have synced the device revocation list)."""
        records = {d.device_id: d for d in await self._store.for_person(person_id)}
        record = records.get(device_id)
        if record is None:
            raise NotFound("No such device")
        now = self._clock.now()
        # revoke first: a crash between the two steps leaves a listed device whose
        # certificates are already refused (fail closed), and a retry finishes the job
        await self._log.revoke(record.live(now), now)
        await self._store.remove(person_id, device_id)
        log.info("device.removed", device=device_id)

    async def suspend(self, person_id: str) -> int:
        """A suspended person: every live certificate of every device revoked."""
        return await self._log.suspend(person_id)

    async def refresh_revocations(self) -> bool:
        """Pull log entries newer than this worker's view (the periodic poll)."""
        return await self._log.refresh()

    async def revocation_document(self, since: int | None = None) -> dict[str, Any]:
        """The device deny-list (docs/devices.md "For gate vendors"), in the card deny-list's
        shape (docs/offline.md §5): ``{"list": "devices", "version", "issued_at",
        "next_update", "expires_at", "full": true, "entries"}`` or, after ``since``, the delta
        ``"full": false, "since", "added", "removed"``. Entries are ``{"serial", "not_after"}``:
        a gate drops one itself once its ``not_after`` has passed, so ``removed`` stays empty.
        ``issued_at`` is the start of the current minute: every worker builds the same bytes
        for the same log (one ``ETag``)."""
        now = self._clock.now()
        version = (await self._store.revocations(1 << 62, now))[0]
        full = since is None or since > version
        version, entries = await self._store.revocations(0 if full else since or 0, now)
        issued_at = int(now) // 60 * 60
        doc: dict[str, Any] = {"list": "devices", "version": version, "issued_at": issued_at,
                               "next_update": issued_at + 60,
                               "expires_at": issued_at + self.list_max_age_s, "full": full}
        listed = [{"serial": e.serial, "not_after": e.not_after}
                  for e in sorted(entries, key=_log_order)]
        if full:
            doc["entries"] = listed
        else:
            doc.update(since=since, added=listed, removed=[])
        return doc

    async def signed_revocations(self, since: int | None = None) -> tuple[bytes, str, int]:
        """``(body, ETag, version)``: ``{"deny_list": doc, "jws": compact JWS}`` signed with the
        trust-list key (the key offline gates pin), ``typ: device-deny-list+jwt``."""
        doc = await self.revocation_document(since)
        payload = canonical_json(doc)
        jws = jws_sign(document_signer(self._signing_ring().current()), payload,
                       DEVICE_DENY_LIST_TYP)
        body = canonical_json({"deny_list": doc, "jws": jws})
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        return body, etag, int(doc["version"])


def _log_order(e: RevokedSerial) -> tuple[int, str]:
    return e.version, e.serial


def record_with(record: DeviceRecord, serial: str, not_after: int, now: float) -> DeviceRecord:
    """``record`` plus a certificate, without those past their window (store helper)."""
    return replace(record, certificates=(*record.live(now), (serial, not_after)))
