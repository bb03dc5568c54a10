"""The identity store port (memory and Redis implementations; one contract suite,
tests/contract/test_identity_store.py) and the in-process revocation view."""

from __future__ import annotations

from typing import Literal, Protocol

from gateway.services.identity.records import Person

IndexKind = Literal["trust_root", "credential"]


class IdentityStore(Protocol):
    """Person records plus two unique indexes (trust-root hash → person, credential ref hash →
    person) and the card revocation set. Every method touches ONE key (or keys sharing one
    hash tag), so the Redis implementation is Cluster-safe."""

    async def get(self, person_id: str) -> Person | None: ...

    async def create(self, person: Person) -> bool:
        """Store a new record; False if the person id exists already."""
        ...

    async def delete(self, person_id: str) -> None:
        """Drop a record no index points at (the loser of a creation race)."""
        ...

    async def replace(self, old: Person, new: Person) -> bool:
        """Compare-and-set on the version: store `new` (version old.version + 1) only if the
        stored record is still at `old.version`."""
        ...

    async def lookup(self, index: IndexKind, key: str) -> str | None: ...

    async def claim(self, index: IndexKind, key: str, person_id: str,
                    replacing: str | None = None) -> str | None:
        """Atomically point `key` at `person_id` if it is free (or currently points at
        `replacing`). Returns None on success, else the person id it points at."""
        ...

    async def release(self, index: IndexKind, key: str, person_id: str) -> None:
        """Remove `key` only if it points at `person_id`."""
        ...

    async def set_revoked(self, ref_hash: str, revoked: bool) -> int:
        """Add/remove a card from the revocation set, bump and return the version, and
        notify every worker."""
        ...

    async def revocations(self) -> tuple[int, frozenset[str]]: ...

    async def revocation_version(self) -> int: ...

    async def ping(self) -> None: ...


class RevocationView:
    """The in-process copy of the revocation set the gate path consults (no round trip).

    Kept fresh by `apply` (a pub/sub message) and `load` (a full reload when the polled
    version moved): a lost message is repaired by the next poll."""

    def __init__(self) -> None:
        self.version = -1
        self._revoked: frozenset[str] = frozenset()
        self._pending_add: set[str] = set()
        self._pending_remove: set[str] = set()

    def is_revoked(self, ref_hash: str) -> bool:
        if ref_hash in self._pending_remove:
            return False
        return ref_hash in self._revoked or ref_hash in self._pending_add

    def apply(self, ref_hash: str, revoked: bool) -> None:
        if revoked:
            self._pending_add.add(ref_hash)
            self._pending_remove.discard(ref_hash)
        else:
            self._pending_remove.add(ref_hash)
            self._pending_add.discard(ref_hash)

    def load(self, version: int, revoked: frozenset[str]) -> None:
        self.version = version
        self._revoked = revoked
        self._pending_add.clear()
        self._pending_remove.clear()

    def __len__(self) -> int:
        return len((self._revoked | self._pending_add) - self._pending_remove)
