"""The device authorization grant (RFC 8628) for kiosks and self-service terminals
(自助服务终端, seed 003 item 94: 读卡或电子社保卡扫码登录自助服务设备), on the OIDC provider's
rules: the same consent memory, pairwise subjects, ID tokens and refresh families as the
code flow (gateway.services.login).

A kiosk client (kind `rp`, registered for the grant type) asks for a device authorization
(§3.1) and shows the user code and a QR of `verification_uri_complete`; then either

* **in the app**: the resident scans the QR (or types the code), is shown the kiosk's client,
  the scopes and the claims, picks the number the kiosk shows (number matching, on by default
  as in scan-to-login) and approves or denies; or
* **by card tap**: the kiosk's reader attests a tap of the resident's physical card with its
  PSAM MAC, exactly as a gate's tap (gateway.services.faces.CardFace: MAC over card, region,
  terminal, request id and scan time; lost, replaced and suspended cards and suspended
  persons refused); the tap binds the authorization to the card's holder, the kiosk shows
  the confirmation (client, scopes, masked card) and sends the holder's yes or no.

Meanwhile the kiosk's back end polls the token endpoint (§3.4): authorization_pending,
slow_down (polled sooner than the interval: +5 s for good, §3.5), access_denied,
expired_token; once approved, the device code is redeemed once (atomic compare-and-set) and
a second redemption revokes the grant the first one started (as a replayed code does).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import structlog

from gateway.authz import device as dg
from gateway.authz import oidc
from gateway.authz.clients import Client
from gateway.authz.device import DeviceAuthorization
from gateway.authz.oidc import REFRESH_ABSOLUTE_TTL_S, Consent, Family
from gateway.authz.ports import DeviceGrantStore
from gateway.errors import Conflict, Forbidden, InvalidRequest, NotFound, OAuthError
from gateway.ports import SingleUse
from gateway.services.faces import CardFace
from gateway.services.gate import CardTap, Refused
from gateway.services.login import LoginService
from gateway.timefmt import rfc3339_s

log = structlog.get_logger("gateway.device_grant")

#: How long a record outlives its authorization, so a late poll reads expired_token, not
#: invalid_grant, and a replayed redemption is still recognised.
LATE_MARGIN_S = 600
#: A kiosk is online: its tap must be this fresh (a gate's offline allowance does not apply);
#: the composition root gives the kiosks' CardFace this window.
TAP_MAX_AGE_S = 60.0


def _mask_card(card_no: str) -> str:
    return card_no[:2] + "*" * max(0, len(card_no) - 6) + card_no[-4:]


@dataclass(frozen=True)
class Started:
    """A new device authorization and what the kiosk is answered (RFC 8628 §3.2)."""

    auth: DeviceAuthorization
    device_code: str
    user_code: str   # formatted XXXX-XXXX


class DeviceGrantService:
    def __init__(self, *, store: DeviceGrantStore, login: LoginService, cards: CardFace,
                 single_use: SingleUse, clock: Callable[[], float], issuer: str,
                 ttl_s: int = dg.DEVICE_CODE_TTL_S,
                 interval_s: int = dg.POLL_INTERVAL_S) -> None:
        self.store = store
        self.login = login
        self.cards = cards
        self.single_use = single_use
        self.now = clock
        self.issuer = issuer
        self.ttl_s = ttl_s
        self.interval_s = interval_s

    # -- the kiosk's back end: the device authorization endpoint (§3.1-§3.2) -----------------
    @staticmethod
    def may_use(client: Client) -> bool:
        return client.kind == "rp" and dg.DEVICE_CODE_GRANT in client.grant_types

    def verification_uri(self) -> str:
        return f"{self.issuer}/device"

    def verification_uri_complete(self, user_code: str) -> str:
        return f"{self.verification_uri()}?{urlencode({'user_code': user_code})}"

    def kiosk_uri(self, auth_id: str, user_code: str) -> str:
        return f"{self.issuer}/device/kiosk/{auth_id}?{urlencode({'user_code': user_code})}"

    async def authorize(self, client: Client, form: Mapping[str, str]) -> dict[str, Any]:
        if not self.may_use(client):
            raise OAuthError("unauthorized_client",
                             "This client is not registered for the device grant")
        raw = form.get("scope")
        scopes = tuple(dict.fromkeys(raw.split())) if raw and raw.strip() else ("openid",)
        # the scopes of the code flow, and the client's own (review finding 8: per kind)
        if any(s not in oidc.OIDC_SCOPES or s not in client.scopes for s in scopes):
            raise OAuthError("invalid_scope", "A requested scope is not allowed")
        now = self.now()
        for _ in range(5):   # 20^8 codes: a collision with a live one is all but impossible
            auth = DeviceAuthorization(
                id=oidc.new_id(), client_id=client.client_id, scopes=scopes,
                number=oidc.new_number(), family_id=oidc.new_id(), created_at=now,
                expires_at=now + self.ttl_s, interval=self.interval_s)
            device_code, user_code = dg.new_device_code(), dg.new_user_code()
            if await self.store.create(auth, dg.digest(device_code), dg.digest(user_code),
                                       self.ttl_s + LATE_MARGIN_S):
                break
        else:
            raise OAuthError("temporarily_unavailable", "Try again", 503)
        shown = dg.format_user_code(user_code)
        log.info("device.authorization_started", client_id=client.client_id)
        return {"device_code": device_code, "user_code": shown,
                "verification_uri": self.verification_uri(),
                "verification_uri_complete": self.verification_uri_complete(shown),
                "expires_in": self.ttl_s, "interval": self.interval_s,
                # not in RFC 8628 §3.2 (clients ignore unknown members): the kiosk's page
                "kiosk_uri": self.kiosk_uri(auth.id, shown)}

    # -- the kiosk's page -------------------------------------------------------------------
    async def for_kiosk(self, auth_id: str, user_code: str
                        ) -> tuple[DeviceAuthorization, Client | None, str]:
        """The authorization the kiosk page shows, when the user code in its URI is this
        authorization's (the page holds nothing the kiosk was not given)."""
        code = dg.normalise_user_code(user_code)
        auth = await self.store.get(auth_id) if oidc.is_id(auth_id) and code else None
        found = await self.store.by_user_code(dg.digest(code)) if code and auth else None
        if auth is None or code is None or found is None or \
                not hmac.compare_digest(found.encode(), auth.id.encode()):
            raise NotFound("No such device authorization")
        return auth, await self.login.clients.get(auth.client_id), dg.format_user_code(code)

    async def status(self, auth_id: str) -> dict[str, Any]:
        """What the kiosk page polls: the public status only (never a code or a token)."""
        auth = await self.store.get(auth_id) if oidc.is_id(auth_id) else None
        if auth is None:
            raise NotFound("No such device authorization")
        return {"status": auth.public_status(self.now()),
                "expires_at": rfc3339_s(auth.expires_at)}

    # -- the resident's app -------------------------------------------------------------------
    async def scan(self, user_code: str, person_id: str) -> dict[str, Any]:
        """The user code the app scanned (from verification_uri_complete) or the resident
        typed: binds the authorization to this resident; answers what the app shows."""
        code = dg.normalise_user_code(user_code)
        if code is None:
            raise InvalidRequest("This is not a user code (XXXX-XXXX)")
        await self._not_suspended(person_id)
        auth_id = await self.store.by_user_code(dg.digest(code))
        auth = await self.store.get(auth_id) if auth_id else None
        if auth is None:
            raise NotFound("No such device authorization")
        now = self.now()
        if auth.public_status(now) == "expired":
            raise Conflict("The device authorization has expired")
        if not await self.store.transition(auth.id, dg.PENDING, dg.SCANNED,
                                           {"person_id": person_id, "via": "app"}):
            current = await self._get(auth.id)
            if current.status != dg.SCANNED or current.person_id != person_id:
                raise Conflict("The device authorization was already taken up")
        client = await self.login.clients.get(auth.client_id)
        remembered = await self.login.consents.get(person_id, auth.client_id)
        answer: dict[str, Any] = {
            "device_authorization_id": auth.id,
            "client": {"client_id": auth.client_id,
                       "display_name": client.display_name if client else auth.client_id},
            "scopes": list(auth.scopes),
            "claims": [oidc.CLAIM_NAMES[c] for c in oidc.claims_for_scopes(auth.scopes)],
            "consent_remembered": remembered is not None
            and set(auth.scopes) <= set(remembered.scopes),
            "context": {"kind": "kiosk", "time": rfc3339_s(auth.created_at)},
            "expires_at": rfc3339_s(auth.expires_at),
        }
        if self.login.require_number:   # choices only when a pick is required
            answer["number_choices"] = oidc.number_choices(auth.number)
        return answer

    async def approve(self, auth_id: str, person_id: str, number: Any) -> dict[str, Any]:
        await self._not_suspended(person_id)
        auth = await self._scanned_by(auth_id, person_id)
        if number is None and self.login.require_number:
            raise InvalidRequest("number (the one the kiosk shows) is required")
        if isinstance(number, str) and number.isdigit():
            number = int(number)
        if number is not None and (not isinstance(number, int) or isinstance(number, bool)):
            raise InvalidRequest("number must be the number the kiosk shows")
        now = self.now()
        if number is not None and \
                not hmac.compare_digest(str(number).encode(), str(auth.number).encode()):
            # a wrong pick may be a remote-phishing attempt (RFC 8628 §5.4): spent
            await self.store.transition(auth_id, dg.SCANNED, dg.DENIED,
                                        {"decided_at": repr(now)})
            raise Forbidden("The number does not match the kiosk's; the login was cancelled")
        await self._decide(auth, dg.SCANNED, person_id, now)
        return {"device_authorization_id": auth_id, "status": dg.APPROVED}

    async def deny(self, auth_id: str, person_id: str) -> dict[str, Any]:
        await self._scanned_by(auth_id, person_id)
        if not await self.store.transition(auth_id, dg.SCANNED, dg.DENIED,
                                           {"decided_at": repr(self.now())}):
            raise Conflict("The device authorization was already decided")
        return {"device_authorization_id": auth_id, "status": dg.DENIED}

    async def _decide(self, auth: DeviceAuthorization, expect: str, person_id: str,
                      now: float) -> None:
        if not await self.store.transition(auth.id, expect, dg.APPROVED,
                                           {"decided_at": repr(now)}):
            raise Conflict("The device authorization was already decided")
        # the same consent memory as the code flow (the resident's authorisations list)
        prev = await self.login.consents.get(person_id, auth.client_id)
        scopes = tuple(dict.fromkeys((prev.scopes if prev else ()) + auth.scopes))
        await self.login.consents.remember(person_id, Consent(auth.client_id, scopes, now))
        log.info("device.approved", client_id=auth.client_id, via=auth.via or expect)

    async def _scanned_by(self, auth_id: str, person_id: str) -> DeviceAuthorization:
        auth = await self._get(auth_id)
        if auth.via != "app" or (auth.person_id is not None and auth.person_id != person_id):
            raise Forbidden("Another resident took up this device authorization")
        if auth.public_status(self.now()) == "expired":
            raise Conflict("The device authorization has expired")
        if auth.status != dg.SCANNED:
            raise Conflict("The device authorization was already decided")
        return auth

    async def _get(self, auth_id: str) -> DeviceAuthorization:
        auth = await self.store.get(auth_id) if oidc.is_id(auth_id) else None
        if auth is None:
            raise NotFound("No such device authorization")
        return auth

    async def _not_suspended(self, person_id: str) -> None:
        if await self.login.persons.person_suspended(person_id):
            raise Forbidden("This resident may not log in")

    # -- the kiosk's reader: a card tap, then the holder's confirmation ----------------------
    async def _kiosk_auth(self, client: Client, device_code: str | None) -> DeviceAuthorization:
        if not self.may_use(client):
            raise OAuthError("unauthorized_client",
                             "This client is not registered for the device grant")
        if not device_code:
            raise OAuthError("invalid_request", "device_code is required")
        auth_id = (await self.store.by_device_code(dg.digest(device_code))
                   if len(device_code) <= 128 else None)
        auth = await self.store.get(auth_id) if auth_id else None
        if auth is None or not hmac.compare_digest(auth.client_id.encode(),
                                                   client.client_id.encode()):
            raise OAuthError("invalid_grant", "The device code is not valid")
        if auth.public_status(self.now()) == "expired":
            raise OAuthError("expired_token", "The device code has expired")
        return auth

    async def card_tap(self, client: Client, device_code: str | None, tap: CardTap,
                       request_id: str) -> dict[str, Any]:
        """A PSAM-attested tap on this kiosk's reader (the MAC is keyed for this client, as a
        gate's for its client id) binds the pending authorization to the card's holder."""
        auth = await self._kiosk_auth(client, device_code)
        now = self.now()
        try:
            # the face's own window is the kiosk's (TAP_MAX_AGE_S, app.py), not a gate's
            verified = await self.cards.resolve(
                self.cards.check(tap, client.client_id, request_id, now))
        except Refused as exc:
            raise OAuthError("invalid_request", "The card tap was refused",
                             debug=f"tap {exc.reason}") from None
        # single use of the attested tap, as at a gate: per (terminal, request id)
        if await self.single_use.claim(f"device-{verified.use_key}", verified.use_ttl_s):
            raise OAuthError("invalid_request", "The card tap was refused",
                             debug="tap replayed")
        assert verified.person_id is not None
        if await self.login.persons.person_suspended(verified.person_id):
            raise OAuthError("access_denied", "This card holder may not log in",
                             debug="person suspended")
        if not await self.store.transition(auth.id, dg.PENDING, dg.TAPPED,
                                           {"person_id": verified.person_id, "via": "card",
                                            "card": _mask_card(tap.card_no)}):
            raise OAuthError("invalid_grant", "The device authorization was already taken up")
        client_name = client.display_name
        return {"status": "awaiting_confirmation",
                "client": {"client_id": client.client_id, "display_name": client_name},
                "scopes": list(auth.scopes),
                "claims": [oidc.CLAIM_NAMES[c] for c in oidc.claims_for_scopes(auth.scopes)],
                "card": _mask_card(tap.card_no), "expires_at": rfc3339_s(auth.expires_at)}

    async def card_confirm(self, client: Client, device_code: str | None,
                           decision: str | None) -> dict[str, Any]:
        """The holder's answer on the kiosk after the tap: `approve` or `deny`."""
        if decision not in ("approve", "deny"):
            raise OAuthError("invalid_request", "decision must be approve or deny")
        auth = await self._kiosk_auth(client, device_code)
        if auth.status != dg.TAPPED or auth.person_id is None:
            raise OAuthError("invalid_grant", "No card tap awaits confirmation")
        now = self.now()
        if decision == "deny":
            if not await self.store.transition(auth.id, dg.TAPPED, dg.DENIED,
                                               {"decided_at": repr(now)}):
                raise OAuthError("invalid_grant", "No card tap awaits confirmation")
            return {"status": dg.DENIED}
        if await self.login.persons.person_suspended(auth.person_id):
            raise OAuthError("access_denied", "This card holder may not log in",
                             debug="person suspended")
        try:
            await self._decide(auth, dg.TAPPED, auth.person_id, now)
        except Conflict:
            raise OAuthError("invalid_grant", "No card tap awaits confirmation") from None
        return {"status": dg.APPROVED}


@dataclass
class DeviceCodeGrant:
    """RFC 8628 §3.4-§3.5 at the token endpoint; tokens as the code flow issues them."""

    devices: DeviceGrantService
    grant_type: str = dg.DEVICE_CODE_GRANT

    async def __call__(self, client: Client, form: Mapping[str, str],
                       jkt: str | None = None) -> dict[str, Any]:
        svc, login = self.devices, self.devices.login
        if not svc.may_use(client):
            raise OAuthError("unauthorized_client",
                             "This client is not registered for the device grant")
        device_code = form.get("device_code")
        if not device_code:
            raise OAuthError("invalid_request", "device_code is required")
        auth_id = (await svc.store.by_device_code(dg.digest(device_code))
                   if len(device_code) <= 128 else None)
        auth = await svc.store.get(auth_id) if auth_id else None
        if auth is None or not hmac.compare_digest(auth.client_id.encode(),
                                                   client.client_id.encode()):
            raise OAuthError("invalid_grant", "The device code is not valid",
                             debug="unknown or other client's device code")
        now = svc.now()
        polled = await svc.store.poll(auth.id, now, dg.SLOW_DOWN_STEP_S)
        if polled is None:
            raise OAuthError("invalid_grant", "The device code is not valid")
        auth, too_soon = polled
        if auth.status == dg.REDEEMED:
            await login.refresh.revoke(auth.family_id, REFRESH_ABSOLUTE_TTL_S)
            log.warning("device.code_replayed", client_id=client.client_id)
            raise OAuthError("invalid_grant", "The device code is not valid",
                             debug="device code replayed")
        if auth.status == dg.DENIED:
            raise OAuthError("access_denied", "The resident refused the authorization")
        if now >= auth.expires_at:
            raise OAuthError("expired_token", "The device code has expired")
        if auth.status != dg.APPROVED:
            if too_soon:   # §3.5: and the interval is now 5 s longer, for good
                raise OAuthError("slow_down", "Poll less often",
                                 debug=f"interval {auth.interval} s")
            raise OAuthError("authorization_pending", "The resident has not decided yet")
        if not await svc.store.transition(auth.id, dg.APPROVED, dg.REDEEMED,
                                          {"redeemed_at": repr(now)}):
            # a concurrent redemption won: this one is the replay
            await login.refresh.revoke(auth.family_id, REFRESH_ABSOLUTE_TTL_S)
            raise OAuthError("invalid_grant", "The device code is not valid",
                             debug="device code redeemed concurrently")
        assert auth.person_id is not None
        if await login.persons.person_suspended(auth.person_id):
            raise OAuthError("invalid_grant", "The device code is not valid",
                             debug="person suspended")
        token, token_hash = oidc.new_refresh_token(auth.family_id)
        auth_time = int(auth.decided_at or now)
        fam = Family(family_id=auth.family_id, client_id=client.client_id,
                     person_id=auth.person_id, scopes=auth.scopes, auth_time=auth_time,
                     created_at=now, expires_at=now + REFRESH_ABSOLUTE_TTL_S,
                     # RFC 9449 §5: a public client's refresh tokens are bound to its key
                     jkt=jkt if jkt and client.is_public else "")
        if not await login.refresh.create(fam, token_hash, REFRESH_ABSOLUTE_TTL_S):
            raise OAuthError("invalid_grant", "The device code is not valid",
                             debug="family exists")
        log.info("device.redeemed", client_id=client.client_id, via=auth.via)
        answer = await login.issue(client, auth.person_id, auth.scopes, auth.family_id,
                                   auth_time, None, token, jkt)
        if "openid" not in auth.scopes:   # OIDC Core §3.1.3.3: an ID token only for openid
            answer.pop("id_token", None)
        return answer
