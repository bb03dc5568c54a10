"""The gate pipeline's step 2 for each face (:mod:`gateway.services.gate`): a credential
verified by its face, and the person behind it.

* :class:`CodeFace` — 渝快码 (ykm, ``YK1:``; made on the phone, ``YK2:``) and 电子社保卡 (essc,
  ``ESSC1:``) codes: the codec decodes ONCE, checks the key and signature(s) against the trust
  list, then the window (docs/code-format.md §6, §10.4). A ykm holder handle opens without I/O
  (AES-CTR, docs/code-format.md §3; a ``YK2:`` one with its certificate serial as IV); a
  ``YK2:`` certificate on the device revocation view is ``revoked``; an e-SSC code's holder
  account is looked up in the identity store (one read).
* :class:`CardFace` — physical-card taps (实体卡): the gate's PSAM MAC over the tap, its
  freshness, then the card's person (the in-process revocation view, then one store read).
  No upstream call: a slow upstream never blocks the gate path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from gateway.authz.datakeys import HolderCipher
from gateway.codec import CodeError, KeyLookup, check_signature, check_window, decode
from gateway.services.gate import CardTap, GateIdentity, Refused, UseRef, Verified
from gateway.services.ports import Psam
from gateway.services.upstream import is_valid_card_no
from gateway.timefmt import parse_rfc3339

__all__ = ["CardFace", "CodeFace"]

#: Idempotent retries are answered for this long after a code expired (the claim's TTL is the
#: code's remaining life + skew + this grace; the record is gone after that).
RETRY_GRACE_S: Final = 30


class CodeFace:
    """渝快码 and e-SSC codes (module docstring)."""

    def __init__(self, *, lookup: KeyLookup, holder: HolderCipher, identity: GateIdentity,
                 max_skew_s: int = 5, retry_grace_s: float = RETRY_GRACE_S,
                 offline_max_s: float = 900.0,
                 device_revoked: Callable[[bytes], bool] = lambda serial: False) -> None:
        """``device_revoked(serial)``: the device revocation view (docs/devices.md);
        ``offline_max_s``: how far behind now a scan may be judged (GATEWAY_OFFLINE_MAX_S)."""
        if max_skew_s < 0 or offline_max_s < 0:
            raise ValueError("max_skew_s and offline_max_s must be >= 0")
        self._device_revoked = device_revoked
        self._lookup = lookup
        self._holder = holder
        self._identity = identity
        self._skew = max_skew_s
        self._grace = retry_grace_s
        self._offline_max = offline_max_s

    def check(self, credential: Any, gate_id: str, request_id: str, now: float,
              at: float | None = None) -> Verified:
        """The code judged at `at` (when the gate scanned; default now): at most the skew
        ahead of now (``not_yet_valid``), at most the offline allowance behind it
        (``expired``), and inside the code's own window at that time."""
        try:
            decoded = decode(credential)
        except (CodeError, ValueError, TypeError, OverflowError):
            raise Refused("malformed", None) from None
        claims = decoded.claims
        face = claims.face
        try:
            check_signature(decoded, self._lookup)
            person_id: str | None = None
            sealed = 0
            if face == "ykm":  # the holder handle and flags decrypted: no I/O
                person_id, sealed = self._holder.open(claims.holder, claims.holder_iv,
                                                      claims.flags)
        except CodeError as exc:
            raise Refused(exc.reason, face) from None
        except (ValueError, TypeError, OverflowError):
            raise Refused("malformed", None) from None
        # The claim outlives the code by the skew, the offline allowance (a scan of it may
        # still arrive that late, CONTRACT "Offline gates") and the retry grace.
        ttl = claims.expires_at + self._skew + self._offline_max - now + self._grace
        when = now if at is None else at
        # the earliest it could have been used (the store epoch, issue 12): a ykm code is
        # stamped by the gateway's own clock (whole seconds; 1 s for the hosts' offsets), any
        # other issuer's clock (a platform, a phone) may run ahead by the skew
        ours = face == "ykm" and claims.device is None
        verified = Verified(face, claims.region, "code:" + claims.nonce.hex(), max(1.0, ttl),
                            UseRef(claims.issuer, claims.kid, claims.nonce),
                            person_id=person_id, sealed=sealed, lookup=claims.holder,
                            scanned_at=when,
                            usable_from=claims.issued_at - (1 if ours else self._skew))
        if when - now > self._skew:
            raise Refused("not_yet_valid", face)
        if now - when > self._offline_max:
            raise Refused("expired", face, verified)
        try:
            check_window(claims, when, self._skew)
        except CodeError as exc:
            raise Refused(exc.reason, face, verified if exc.reason == "expired" else None) \
                from None
        if claims.device is not None and self._device_revoked(claims.device.serial):
            raise Refused("revoked", face, verified)  # a removed device, a suspended person's
        return verified

    async def resolve(self, verified: Verified) -> Verified:
        """An e-SSC code's person: the identity actively linked to its holder account."""
        if verified.region is None:
            raise Refused("revoked", verified.face, verified)
        try:
            holder = bytes(verified.lookup).decode("ascii")
        except UnicodeDecodeError:
            raise Refused("revoked", verified.face, verified) from None
        person_id = await self._identity.person_by_essc(verified.region, holder)
        if person_id is None:
            raise Refused("revoked", verified.face, verified)
        return _with_person(verified, person_id, None)


class CardFace:
    """Physical-card taps (module docstring); the claim is per (gate, request id): a card is
    tapped again every day, its MAC binds the gate, the request id and the scan time."""

    def __init__(self, *, psam: Psam, identity: GateIdentity,
                 regions: Iterable[str] = ("CQ", "SC"), max_age_s: float = 900.0,
                 max_skew_s: float = 5.0, retry_ttl_s: float | None = None) -> None:
        """`max_age_s` is the offline allowance (GATEWAY_OFFLINE_MAX_S): a tap buffered by an
        offline gate is judged at its scan time. The (gate, request id) claim lives as long,
        so the same attested tap is never accepted twice within it."""
        self._psam = psam
        self._identity = identity
        self._regions = frozenset(regions)
        self._max_age = max_age_s
        self._skew = max_skew_s
        self._retry_ttl = retry_ttl_s if retry_ttl_s is not None else \
            max_age_s + max_skew_s + RETRY_GRACE_S

    def check(self, credential: Any, gate_id: str, request_id: str, now: float,
              at: float | None = None) -> Verified:
        """The tap judged at its own `scanned_at` (the MAC covers it; `at` is not used)."""
        tap: CardTap = credential
        if (tap.region not in self._regions or not is_valid_card_no(tap.card_no)
                or tap.card_no[:2] != tap.region):
            raise Refused("malformed", "ssc_card")
        t = parse_rfc3339(tap.scanned_at)
        if t is None:
            raise Refused("malformed", "ssc_card")
        if not self._psam.verify(card_no=tap.card_no, region=tap.region,
                                 gate_client_id=gate_id, request_id=request_id,
                                 scanned_at=tap.scanned_at, terminal_mac=tap.terminal_mac):
            raise Refused("bad_signature", "ssc_card")
        verified = Verified("ssc_card", tap.region, f"tap:{gate_id}|{request_id}",
                            self._retry_ttl, UseRef("ssc_card:" + tap.region, "psam",
                                                    tap.terminal_mac.encode()),
                            lookup=tap.card_no, scanned_at=t, usable_from=t - self._skew)
        if now - t > self._max_age:
            raise Refused("expired", "ssc_card", verified)
        if t - now > self._skew:
            raise Refused("not_yet_valid", "ssc_card")
        return verified

    async def resolve(self, verified: Verified) -> Verified:
        assert verified.region is not None
        got = await self._identity.card_holder(verified.region, str(verified.lookup))
        if got is None:
            raise Refused("revoked", "ssc_card", verified)
        person_id, record = got
        return _with_person(verified, person_id, record)


def _with_person(v: Verified, person_id: str, record: Any) -> Verified:
    return Verified(v.face, v.region, v.use_key, v.use_ttl_s, v.use, person_id=person_id,
                    sealed=v.sealed, record=record, lookup=v.lookup, scanned_at=v.scanned_at,
                    usable_from=v.usable_from)
