"""In-memory OIDC stores (login sessions, authorization codes, refresh families, consents)
for the sandbox and tests. Atomic under one event loop: no method awaits between its read
and its write. They pass the contract suite in tests/contract/test_oidc_stores.py."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.authz.oidc import (
    GRACE,
    REUSED,
    REVOKED,
    ROTATED,
    UNKNOWN,
    CodeRecord,
    Consent,
    Family,
    LoginSession,
)
from gateway.clock import Clock


class _Expiring:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._items: dict[str, tuple[float, dict[str, str]]] = {}

    def get(self, key: str) -> dict[str, str] | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= self._clock.now():
            del self._items[key]
            return None
        return item[1]

    def set(self, key: str, value: dict[str, str], ttl_s: float) -> None:
        now = self._clock.now()
        if len(self._items) > 10_000:
            for k in [k for k, (exp, _) in self._items.items() if exp <= now]:
                del self._items[k]
        self._items[key] = (now + max(ttl_s, 0.001), value)

    def delete(self, key: str) -> bool:
        return self._items.pop(key, None) is not None

    def transition(self, key: str, expect: str, to: str, fields: Mapping[str, str]) -> bool:
        """If the record's status is `expect`, set it to `to` plus `fields` (the memory side
        of redis_oidc.TRANSITION: no await between the read and the write)."""
        f = self.get(key)
        if f is None or f.get("status", "pending") != expect:
            return False
        f.update(fields)
        f["status"] = to
        return True


class MemoryLoginSessionStore:
    def __init__(self, clock: Clock) -> None:
        self._s = _Expiring(clock)

    async def create(self, session: LoginSession, ttl_s: float) -> None:
        self._s.set(session.id, session.to_fields(), ttl_s)

    async def get(self, session_id: str) -> LoginSession | None:
        f = self._s.get(session_id)
        return None if f is None else LoginSession.from_fields(f)

    async def transition(self, session_id: str, expect: str, to: str,
                         fields: Mapping[str, str]) -> bool:
        return self._s.transition(session_id, expect, to, fields)


class MemoryCodeStore:
    def __init__(self, clock: Clock) -> None:
        self._s = _Expiring(clock)

    async def put(self, code_hash: str, record: CodeRecord, ttl_s: float) -> None:
        self._s.set(code_hash, {"d": record.to_json()}, ttl_s)

    async def consume(self, code_hash: str) -> tuple[CodeRecord, bool] | None:
        f = self._s.get(code_hash)
        if f is None:
            return None
        first = "used" not in f
        f["used"] = "1"
        return CodeRecord.from_json(f["d"]), first


class MemoryRefreshStore:
    def __init__(self, clock: Clock) -> None:
        self._f = _Expiring(clock)
        self._t = _Expiring(clock)

    def _ttl(self, fam: dict[str, str]) -> float:
        return max(1.0, float(fam["expires_at"]) - self._f._clock.now())

    async def create(self, family: Family, token_hash: str, ttl_s: float) -> bool:
        if self._f.get(family.family_id) is not None:
            return False
        self._f.set(family.family_id, family.to_fields(), ttl_s)
        self._t.set(f"{family.family_id}:{token_hash}", {"state": "active"}, ttl_s)
        return True

    async def get(self, family_id: str) -> Family | None:
        f = self._f.get(family_id)
        if f is None or "client_id" not in f:
            return None
        return Family.from_fields(family_id, f)

    async def rotate(self, family_id: str, presented_hash: str, new_hash: str, now: float,
                     grace_s: float, successor: str = "") -> tuple[str, str | None]:
        fam = self._f.get(family_id)
        if fam is None or "client_id" not in fam:
            return UNKNOWN, None
        if fam.get("revoked") == "1":
            return REVOKED, None
        tok = self._t.get(f"{family_id}:{presented_hash}")
        if tok is None:
            return UNKNOWN, None
        ttl = self._ttl(fam)
        if tok["state"] == "active":
            tok["state"], tok["spent_at"], tok["next"] = "spent", repr(now), successor
            self._t.set(f"{family_id}:{new_hash}", {"state": "active"}, ttl)
            return ROTATED, None
        if now - float(tok["spent_at"]) < grace_s:
            return GRACE, tok.get("next") or None
        fam["revoked"] = "1"
        tok.pop("next", None)
        return REUSED, None

    async def token_state(self, family_id: str, token_hash: str) -> str | None:
        tok = self._t.get(f"{family_id}:{token_hash}")
        return None if tok is None else tok["state"]

    async def revoke(self, family_id: str, ttl_s: float) -> None:
        fam = self._f.get(family_id)
        if fam is None:
            self._f.set(family_id, {"revoked": "1"}, ttl_s)
        else:
            fam["revoked"] = "1"


class MemoryConsentStore:
    def __init__(self) -> None:
        self._c: dict[str, dict[str, Consent]] = {}

    async def remember(self, person_id: str, consent: Consent) -> None:
        self._c.setdefault(person_id, {})[consent.client_id] = consent

    async def get(self, person_id: str, client_id: str) -> Consent | None:
        return self._c.get(person_id, {}).get(client_id)

    async def list(self, person_id: str) -> list[Consent]:
        return sorted(self._c.get(person_id, {}).values(), key=lambda c: c.client_id)

    async def forget(self, person_id: str, client_id: str) -> bool:
        return self._c.get(person_id, {}).pop(client_id, None) is not None


class MemoryPushedRequestStore:
    def __init__(self, clock: Clock) -> None:
        self._s = _Expiring(clock)

    async def put(self, key: str, request_json: str, ttl_s: float) -> None:
        self._s.set(key, {"d": request_json}, ttl_s)

    async def take(self, key: str) -> str | None:
        f = self._s.get(key)
        if f is None:
            return None
        self._s.delete(key)
        return f["d"]
