"""A real card deny-list for tests that build an IdentityService by hand: RevocationLists over
the in-memory deny-list store (the identity service tells it of every card refusal)."""

from __future__ import annotations

import os
from collections.abc import Callable

from gateway.adapters.memory_revocations import MemoryDenyListStore
from gateway.authz.keyring import bootstrap
from gateway.codec.offline import CardHash
from gateway.services.revocations import RevocationLists


def memory_deny_list(now: Callable[[], float]) -> RevocationLists:
    ring = bootstrap("trust", "EdDSA", now())
    return RevocationLists(MemoryDenyListStore(1000), lambda: ring,
                           CardHash(os.urandom(16), 1000), now)
