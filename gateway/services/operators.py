"""Named operators (运维人员) with roles, and the audit of their actions.

Seed 004 (六 完善安全保障体系) asks for internal control over staff operations; this is it:
every operator has a name, a role and a token of their own, and every admin action is
appended to the hash-chained audit log (docs/audit.md) under the operator's name.

Roles (docs/operators.md):

* `viewer`  — reads the catalogue, venues, statistics and the dashboard; changes nothing;
* `auditor` — a viewer who also reads the audit log and takes exports (each export audited);
* `admin`   — everything: clients, gates, venues, scenes, suspension, key rotation.

Tokens are 256 random bits shown once at creation (`gateway operators create`); only their
SHA-256 is stored — a fast hash is right for a high-entropy secret (as for client secrets),
and lookup is by that digest, so no comparison of the secret itself ever happens. The sandbox's
shared admin token (keys/sandbox/admin-token) is accepted as the operator `sandbox-bootstrap`
with role admin — only in the sandbox.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from gateway.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthorized
from gateway.services.ports import OperatorStore

Role = Literal["admin", "auditor", "viewer"]
ROLES: Final[tuple[Role, ...]] = ("admin", "auditor", "viewer")
#: What each role may do; an action not listed for a role is refused (403).
PERMISSIONS: Final[Mapping[str, frozenset[str]]] = {
    "viewer": frozenset({"read"}),
    "auditor": frozenset({"read", "audit", "export"}),
    "admin": frozenset({"read", "audit", "export", "write"}),
}
TOKEN_PREFIX: Final = "gwop_"
BOOTSTRAP_NAME: Final = "sandbox-bootstrap"
_NAME = re.compile(r"^[a-z][a-z0-9._-]{1,47}$")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Operator:
    name: str
    role: Role
    disabled: bool = False

    def may(self, permission: str) -> bool:
        return not self.disabled and permission in PERMISSIONS[self.role]


class AuditAppend(Protocol):
    """The audit log's append (gateway/services/audit.py AuditLog.append)."""

    async def append(self, event: Mapping[str, Any], ts: float) -> dict[str, Any]: ...


class Operators:
    """Create, disable and authenticate operators."""

    def __init__(self, store: OperatorStore, now: Callable[[], float],
                 bootstrap_token: str | None = None) -> None:
        self.store = store
        self._now = now
        self._bootstrap_hash = hash_token(bootstrap_token) if bootstrap_token else None

    async def create(self, name: str, role: str) -> tuple[Operator, str]:
        """A new operator and its token (shown once)."""
        if not _NAME.match(name) or name == BOOTSTRAP_NAME:
            raise InvalidRequest("name must be 2-48 characters of a-z, 0-9, '.', '_' or '-'")
        if role not in ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(ROLES)}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        record = {"name": name, "role": role, "token_hash": hash_token(token),
                  "disabled": False, "created_at": self._now()}
        if not await self.store.create(record):
            raise Conflict(f"operator {name} exists")
        return Operator(name, role), token

    async def set_disabled(self, name: str, disabled: bool = True) -> Operator:
        record = await self.store.get(name)
        if record is None:
            raise NotFound(f"no operator {name}")
        record["disabled"] = disabled
        record["updated_at"] = self._now()
        await self.store.update(record)
        return Operator(record["name"], record["role"], disabled)

    async def list(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in o.items() if k != "token_hash"}
                for o in sorted(await self.store.list(), key=lambda o: o["name"])]

    async def authenticate(self, token: str) -> Operator:
        """The operator this token belongs to; Unauthorized for an unknown or disabled one."""
        if not token or len(token) > 512:
            raise Unauthorized("An operator token is required",
                               headers={"WWW-Authenticate": 'Bearer realm="gateway-admin"'})
        digest = hash_token(token)
        if self._bootstrap_hash is not None and secrets.compare_digest(digest,
                                                                        self._bootstrap_hash):
            return Operator(BOOTSTRAP_NAME, "admin")
        record = await self.store.by_token_hash(digest)
        if record is None or record.get("disabled") \
                or not secrets.compare_digest(str(record.get("token_hash")), digest):
            raise Unauthorized("Not an operator token",
                               headers={"WWW-Authenticate":
                                        'Bearer realm="gateway-admin", error="invalid_token"'})
        return Operator(record["name"], record["role"])

    # -- dashboard sessions: a signed cookie naming the operator and the token it signed in
    # with; every request re-reads the operator, so disabling one ends its sessions at once
    def open_session(self, op: Operator, token: str, key: bytes, ttl_s: int) -> str:
        body = json.dumps({"n": op.name, "t": hash_token(token)[:32],
                           "e": int(self._now()) + ttl_s}, separators=(",", ":")).encode()
        mac = hmac.new(key, body, hashlib.sha256).digest()
        return _b64(body) + "." + _b64(mac)

    async def from_session(self, cookie: str, key: bytes) -> Operator:
        try:
            body_b64, mac_b64 = cookie.split(".", 1)
            body = _unb64(body_b64)
            mac = _unb64(mac_b64)
        except (ValueError, binascii.Error):
            raise Unauthorized("Sign in again") from None
        if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
            raise Unauthorized("Sign in again")
        claims = json.loads(body)
        if int(claims["e"]) < self._now():
            raise Unauthorized("The session has expired: sign in again")
        if claims["n"] == BOOTSTRAP_NAME and self._bootstrap_hash is not None:
            if hmac.compare_digest(claims["t"], self._bootstrap_hash[:32]):
                return Operator(BOOTSTRAP_NAME, "admin")
            raise Unauthorized("Sign in again")
        record = await self.store.get(str(claims["n"]))
        if record is None or record.get("disabled") or not hmac.compare_digest(
                str(record.get("token_hash", ""))[:32], str(claims["t"])):
            raise Unauthorized("Sign in again")
        return Operator(record["name"], record["role"])

    @staticmethod
    def require(op: Operator, permission: str) -> None:
        if not op.may(permission):
            raise Forbidden(f"The role {op.role} may not do this")


class OperatorAudit:
    """Appends admin actions to the hash-chained audit log with the operator's name.

    Entry members are those of the consent entries (docs/audit.md) — `actor` is
    `operator:<name>`, `action` an `admin.*` name — plus `target` (what was changed, e.g.
    `scene:hotel`) and `detail` (a short, personal-data-free summary)."""

    def __init__(self, log: AuditAppend, now: Callable[[], float]) -> None:
        self._log = log
        self._now = now

    async def record(self, op: Operator, action: str, target: str, outcome: str = "ok",
                     detail: Mapping[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"actor": f"operator:{op.name}", "action": f"admin.{action}",
                "outcome": outcome, "consent_id": None, "subject": None, "types": [],
                "purpose": None, "reason": None, "role": op.role, "target": target,
                "detail": dict(detail or {})}
        return await self._log.append(body, self._now())

