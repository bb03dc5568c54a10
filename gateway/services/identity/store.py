"""The in-process revocation view, and the store's index kinds (the store port itself is
gateway.services.ports.IdentityStore; one contract suite, tests/contract/test_identity_store.py)."""

from __future__ import annotations

from typing import Literal

IndexKind = Literal["trust_root", "credential"]




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
