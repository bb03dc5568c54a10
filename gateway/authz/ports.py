"""The OIDC provider's store ports (memory and Redis implementations; one contract suite,
tests/contract/test_oidc_stores.py, test_device_grant_store.py). Records are imported for
annotations only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.authz.device import DeviceAuthorization
    from gateway.authz.oidc import CodeRecord, Consent, Family, LoginSession

__all__ = ["CodeStore", "ConsentStore", "DeviceGrantStore", "LoginSessionStore",
           "PushedRequestStore", "RefreshStore"]


class LoginSessionStore(Protocol):
    async def create(self, session: LoginSession, ttl_s: float) -> None: ...

    async def get(self, session_id: str) -> LoginSession | None: ...

    async def transition(self, session_id: str, expect: str, to: str,
                         fields: Mapping[str, str]) -> bool:
        """Atomically: if the status is `expect`, set it to `to` plus `fields`."""
        ...


class CodeStore(Protocol):
    async def put(self, code_hash: str, record: CodeRecord, ttl_s: float) -> None: ...

    async def consume(self, code_hash: str) -> tuple[CodeRecord, bool] | None:
        """(record, first use?) atomically; None if unknown. The record stays (marked used)
        until its TTL so a replay is recognised."""
        ...


class RefreshStore(Protocol):
    async def create(self, family: Family, token_hash: str, ttl_s: float) -> bool:
        """False if the family id exists already (e.g. revoked by a code replay)."""
        ...

    async def get(self, family_id: str) -> Family | None: ...

    async def rotate(self, family_id: str, presented_hash: str, new_hash: str, now: float,
                     grace_s: float, successor: str = "") -> tuple[str, str | None]:
        """(outcome, successor): one of ROTATED, GRACE, REUSED (the family is now revoked),
        REVOKED, UNKNOWN. ROTATED spends the presented token, activates `new_hash` and keeps
        `successor` (the sealed answer that carried the new token) with the spent token;
        GRACE (the spent token again within `grace_s`) activates nothing and hands back that
        stored successor, so a retried or concurrent refresh never forks the family."""
        ...

    async def token_state(self, family_id: str, token_hash: str) -> str | None: ...

    async def revoke(self, family_id: str, ttl_s: float) -> None:
        """Revoke (or pre-revoke: a tombstone that `create` will not overwrite)."""
        ...


class ConsentStore(Protocol):
    async def remember(self, person_id: str, consent: Consent) -> None: ...

    async def get(self, person_id: str, client_id: str) -> Consent | None: ...

    async def list(self, person_id: str) -> list[Consent]: ...

    async def forget(self, person_id: str, client_id: str) -> bool: ...


class PushedRequestStore(Protocol):
    """RFC 9126 pushed authorization requests, by the digest of their request_uri."""

    async def put(self, key: str, request_json: str, ttl_s: float) -> None: ...

    async def take(self, key: str) -> str | None:
        """The stored request, removed atomically (a request_uri works once)."""
        ...


class DeviceGrantStore(Protocol):
    """Device authorizations by id, found by the digest of their device code or user code."""

    async def create(self, auth: DeviceAuthorization, device_hash: str, user_hash: str,
                     ttl_s: float) -> bool:
        """False when the user code is taken by a live authorization (draw another)."""
        ...

    async def get(self, auth_id: str) -> DeviceAuthorization | None: ...

    async def by_device_code(self, device_hash: str) -> str | None:
        """The id of the authorization this device code names."""
        ...

    async def by_user_code(self, user_hash: str) -> str | None:
        """The id of the authorization this user code names."""
        ...

    async def transition(self, auth_id: str, expect: str, to: str,
                         fields: Mapping[str, str]) -> bool:
        """Atomically: if the status is `expect`, set it to `to` plus `fields` (so an
        approved authorization is redeemed once: approved → redeemed)."""
        ...

    async def poll(self, auth_id: str, now: float,
                   step_s: int) -> tuple[DeviceAuthorization, bool] | None:
        """Atomically record a poll at `now`; True when it came sooner than the interval
        after the previous one, which then grows by `step_s` (RFC 8628 §3.5 slow_down)."""
        ...
