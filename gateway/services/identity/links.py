"""Linking a credential by an upstream assertion (POST /v1/me/links), and the router that
picks the platform verifier of an assertion."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from gateway.base64url import unb64u
from gateway.errors import InvalidRequest
from gateway.services.identity.records import Credential
from gateway.services.identity.service import IdentityService
from gateway.services.upstream import (
    AssertionRejected,
    UpstreamIdentity,
)


class _Claimer(Protocol):
    async def claim(self, key: str, ttl_s: float, value: str = "1") -> str | None: ...


AssertionCheck = Callable[[str], Awaitable[UpstreamIdentity]]


def assertion_replay_key(ident: UpstreamIdentity) -> str:
    """The single-use key of an assertion: shared with the token-exchange grant, so one
    assertion serves one purpose once."""
    return f"assertion:{ident.issuer}:{ident.jti}"


class Links:
    def __init__(self, service: IdentityService, verify_assertion: AssertionCheck,
                 replay: _Claimer) -> None:
        self.service = service
        self.verify_assertion = verify_assertion
        self.replay = replay

    async def link(self, person_id: str, assertion: str) -> Credential:
        try:
            ident = await self.verify_assertion(assertion)
        except AssertionRejected as exc:
            raise InvalidRequest(f"The assertion was rejected: {exc.reason}") from None
        remaining = max(1.0, float(ident.expires_at) - self.service.clock.now()) + 60
        if await self.replay.claim(assertion_replay_key(ident), remaining):
            raise InvalidRequest("The assertion was already used")
        return await self.service.link_upstream(person_id, ident)




class _Platform(Protocol):
    async def verify_assertion(self, assertion: str) -> UpstreamIdentity: ...


class AssertionRouter:
    """Picks the platform verifier by the assertion's (unverified) `iss`: 渝快办 or the e-SSC
    platform of a region; the chosen verifier then checks everything (RFC 7523 §3)."""

    def __init__(self, by_issuer: Mapping[str, _Platform]) -> None:
        self.by_issuer = dict(by_issuer)

    async def __call__(self, assertion: str) -> UpstreamIdentity:
        if not isinstance(assertion, str) or len(assertion) > 8192:
            raise AssertionRejected("malformed")
        parts = assertion.split(".")
        try:
            if len(parts) != 3:
                raise ValueError("not a compact JWS")
            iss = json.loads(unb64u(parts[1])).get("iss")
        except (ValueError, UnicodeDecodeError, AttributeError):
            raise AssertionRejected("malformed") from None
        platform = self.by_issuer.get(iss) if isinstance(iss, str) else None
        if platform is None:
            raise AssertionRejected("unknown_issuer")
        return await platform.verify_assertion(assertion)
