"""The token endpoint's grants (RFC 6749 §4.4, RFC 8693), each a class with a validate step and
a create step; the OpenID Connect grants (authorization_code, refresh_token) register the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.authz.clients import Client
from gateway.authz.datakeys import DataKeys
from gateway.authz.tokens import AccessTokens
from gateway.errors import GatewayError, OAuthError
from gateway.ports import SingleUse

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


class Grant(Protocol):
    grant_type: str

    async def __call__(self, client: Client, form: Mapping[str, str],
                       jkt: str | None = None) -> dict[str, Any]:
        """`jkt`: the DPoP key the tokens are bound to (RFC 9449), when the request had a
        valid proof."""
        ...


def _scopes(requested: str | None, allowed: tuple[str, ...],
            default: tuple[str, ...]) -> tuple[str, ...]:
    """RFC 6749 §3.3: the granted scope is the requested one if every part is allowed."""
    if requested is None or requested.strip() == "":
        return default
    asked = tuple(dict.fromkeys(requested.split()))
    if any(s not in allowed for s in asked):
        raise OAuthError("invalid_scope", "A requested scope is not allowed for this client")
    return asked


def bearer_response(token: str, ttl_s: int, scopes: tuple[str, ...] | frozenset[str],
                    jkt: str | None = None, **extra: Any) -> dict[str, Any]:
    body = {"access_token": token, "token_type": "DPoP" if jkt else "Bearer",
            "expires_in": ttl_s,
            "scope": " ".join(sorted(scopes))}
    body.update(extra)
    return body


@dataclass
class ClientCredentialsGrant:
    """RFC 6749 §4.4: gates (and relying parties) act for themselves."""

    tokens: AccessTokens
    gate_ttl_s: int
    ttl_s: int
    grant_type: str = "client_credentials"

    async def __call__(self, client: Client, form: Mapping[str, str],
                       jkt: str | None = None) -> dict[str, Any]:
        if client.kind not in ("gate", "rp") or client.is_public:
            # RFC 6749 §4.4: "MUST only be used by confidential clients"
            raise OAuthError("unauthorized_client", "This client may not use client_credentials")
        machine_scopes = tuple(s for s in client.scopes if s not in ("openid", "profile", "essc"))
        scopes = _scopes(form.get("scope"), machine_scopes, machine_scopes)
        ttl = self.gate_ttl_s if client.kind == "gate" else self.ttl_s
        token, _ = self.tokens.issue(client_id=client.client_id, kind=client.kind,
                                     sub=client.client_id, scopes=scopes, ttl_s=ttl,
                                     scene=client.scene, jkt=jkt)
        return bearer_response(token, ttl, scopes, jkt)


@dataclass(frozen=True)
class ResidentRef:
    """Who an upstream assertion names, once resolved to our one-person record."""

    person_id: str


AssertionVerifier = Callable[[str], Awaitable[Any]]
PersonResolver = Callable[[Any], Awaitable[ResidentRef]]


@dataclass
class TokenExchangeGrant:
    """RFC 8693: a resident app trades an upstream platform's assertion (渝快办 or an e-SSC
    platform) for a short-lived resident token. The assertion's `jti` is single-use."""

    tokens: AccessTokens
    keys: DataKeys
    replay: SingleUse
    verify_assertion: AssertionVerifier
    resolve_person: PersonResolver
    clock: Callable[[], float]
    ttl_s: int
    grant_type: str = TOKEN_EXCHANGE
    #: person id -> suspended? (an operator's suspension stops the exchange: finding 8)
    is_suspended: Callable[[str], Awaitable[bool]] | None = None

    async def __call__(self, client: Client, form: Mapping[str, str],
                       jkt: str | None = None) -> dict[str, Any]:
        if client.kind != "app" or client.is_public:
            raise OAuthError("unauthorized_client", "Only resident apps may exchange tokens")
        subject_token = form.get("subject_token")
        if not subject_token:
            raise OAuthError("invalid_request", "subject_token is required")
        if form.get("subject_token_type") != JWT_TOKEN_TYPE:
            raise OAuthError("invalid_request", f"subject_token_type must be {JWT_TOKEN_TYPE}")
        if form.get("actor_token"):
            raise OAuthError("invalid_request", "actor_token is not supported")
        requested_type = form.get("requested_token_type")
        if requested_type not in (None, ACCESS_TOKEN_TYPE):
            raise OAuthError("invalid_request", "Only access tokens can be requested")
        scopes = _scopes(form.get("scope"), client.scopes, client.scopes)
        try:
            identity = await self.verify_assertion(subject_token)
        except OAuthError:
            raise
        except GatewayError as exc:
            if exc.status >= 500:
                raise
            raise OAuthError("invalid_grant", "The subject token is not valid",
                             debug=getattr(exc, "reason", exc.code)) from None
        remaining = max(1.0, float(identity.expires_at) - self.clock()) + 60
        if await self.replay.claim(f"assertion:{identity.issuer}:{identity.jti}", remaining):
            raise OAuthError("invalid_grant", "The subject token was already used",
                             debug="assertion replayed")
        ref = await self.resolve_person(identity)
        if self.is_suspended is not None and await self.is_suspended(ref.person_id):
            raise OAuthError("invalid_grant", "The subject token is not valid",
                             debug="person suspended")
        sub = self.keys.pairwise_subject(client.sector, ref.person_id)
        sealed = self.keys.seal_person_id(ref.person_id, client.client_id)
        token, _ = self.tokens.issue(client_id=client.client_id, kind="resident", sub=sub,
                                     scopes=scopes, ttl_s=self.ttl_s, sealed_person=sealed,
                                     jkt=jkt)
        return bearer_response(token, self.ttl_s, scopes, jkt,
                               issued_token_type=ACCESS_TOKEN_TYPE)


class TokenService:
    """Dispatches a token request to its grant after the client has authenticated."""

    def __init__(self) -> None:
        self.grants: dict[str, Grant] = {}

    def register(self, grant: Grant) -> None:
        self.grants[grant.grant_type] = grant

    async def token(self, client: Client, form: Mapping[str, str],
                    jkt: str | None = None) -> dict[str, Any]:
        grant_type = form.get("grant_type")
        if not grant_type:
            raise OAuthError("invalid_request", "grant_type is required")
        grant = self.grants.get(grant_type)
        if grant is None:
            raise OAuthError("unsupported_grant_type", "This grant type is not supported")
        return await grant(client, form, jkt)
