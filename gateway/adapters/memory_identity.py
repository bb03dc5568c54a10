"""In-memory identity store (one process; sandbox without Redis and unit tests). Passes the
same contract suite as the Redis store (tests/contract/test_identity_store.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from gateway.services.identity import IndexKind, Person


class MemoryIdentityStore:
    def __init__(self) -> None:
        self._persons: dict[str, str] = {}  # serialised, so callers never share mutable state
        self._index: dict[tuple[str, str], str] = {}
        self._revoked: set[str] = set()
        self._version = 0

    async def get(self, person_id: str) -> Person | None:
        raw = self._persons.get(person_id)
        return None if raw is None else Person.from_json(raw)

    async def create(self, person: Person) -> bool:
        if person.person_id in self._persons:
            return False
        self._persons[person.person_id] = person.to_json()
        return True

    async def delete(self, person_id: str) -> None:
        self._persons.pop(person_id, None)

    async def replace(self, old: Person, new: Person) -> bool:
        raw = self._persons.get(old.person_id)
        if raw is None or Person.from_json(raw).version != old.version \
                or new.version != old.version + 1 or new.person_id != old.person_id:
            return False
        self._persons[old.person_id] = new.to_json()
        return True

    async def lookup(self, index: IndexKind, key: str) -> str | None:
        return self._index.get((index, key))

    async def claim(self, index: IndexKind, key: str, person_id: str,
                    replacing: str | None = None) -> str | None:
        cur = self._index.get((index, key))
        if cur is None or cur == person_id or (replacing is not None and cur == replacing):
            self._index[(index, key)] = person_id
            return None
        return cur

    async def release(self, index: IndexKind, key: str, person_id: str) -> None:
        if self._index.get((index, key)) == person_id:
            del self._index[(index, key)]

    async def set_revoked(self, ref_hash: str, revoked: bool) -> int:
        before = ref_hash in self._revoked
        if revoked:
            self._revoked.add(ref_hash)
        else:
            self._revoked.discard(ref_hash)
        if before != revoked:
            self._version += 1
        return self._version

    async def revocations(self) -> tuple[int, frozenset[str]]:
        return self._version, frozenset(self._revoked)

    async def revocation_version(self) -> int:
        return self._version

    async def ping(self) -> None:
        return None

    async def person_ids(self) -> AsyncIterator[str]:
        for pid in list(self._persons):
            yield pid
