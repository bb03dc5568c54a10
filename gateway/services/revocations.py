"""Signed revocation lists for offline gates: the card deny-list (GET /v1/revocations/cards;
docs/offline.md §5). Device revocations (serials) are meant to stand beside it as another
list name over the same store and document shape.

* A list is a set of opaque entries (for cards: :class:`gateway.codec.offline.CardHash` of
  region and card number, never the number) with a **version** that grows at every change:
  the Unix time of the change in milliseconds, or the previous version + 1 when that is not
  larger, so it keeps growing across a store that lost its data.
* Every change is also logged (bounded: ``delta_events``), so a gate that holds version S
  gets only what changed since S (``?since=S``); when S is older than the log, or unknown,
  it gets the full list.
* The document is a compact JWS signed by the trust-list key, ``typ`` ``card-deny-list+jwt``:
  ``{"list", "version", "issued_at", "next_update", "expires_at", "hash", "full", "entries"}``
  or, as a delta, ``"full": false, "since", "added", "removed"``. ``issued_at`` is the start of
  the current minute, so every worker serves the byte-identical document (strong ``ETag``);
  ``expires_at`` bounds how long an offline gate may rely on it.
* Report-loss, replacement, unlinking and suspension reach the list in the same call
  (IdentityService → :meth:`RevocationLists.card_status`): the next GET serves the new version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from gateway.authz.keyring import KeyRing
from gateway.codec.jws import canonical_json, sign_compact
from gateway.codec.offline import DENY_LIST_TYP, CardHash
from gateway.services.ports import DenyListStore
from gateway.services.trustlist import document_signer

__all__ = ["CARDS", "DENY_PERIOD_S", "DenyListRead", "RevocationLists",
           "SignedList"]

CARDS: Final = "cards"
#: issued_at granularity and the interval to next_update.
DENY_PERIOD_S: Final = 60


@dataclass(frozen=True, slots=True)
class DenyListRead:
    """One consistent read of a list: its version and either every entry (``full``) or the
    changes after ``since`` (``added``/``removed``, each entry's last change only)."""

    version: int
    full: bool
    entries: frozenset[str] = frozenset()
    added: frozenset[str] = frozenset()
    removed: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SignedList:
    version: int
    etag: str
    body: bytes  # {"deny_list": <document>, "jws": <compact JWS>}


class RevocationLists:
    """Builds and signs the lists; records card status changes."""

    def __init__(self, store: DenyListStore, signing_ring: Callable[[], KeyRing],
                 card_hash: CardHash, now: Callable[[], float], *,
                 max_age_s: int = 86_400) -> None:
        self._store = store
        self._ring = signing_ring
        self.card_hash = card_hash
        self._now = now
        self._max_age_s = max_age_s
        self._cache: dict[tuple[str, int, int | None, int, str], SignedList] = {}

    async def card_status(self, region: str | None, card_no: str, revoked: bool) -> int:
        """A physical card is (no longer) to be refused: lost, replaced, unlinked, its holder
        suspended — or reinstated."""
        entry = self.card_hash.of(region or "", card_no)
        return await self._store.change(CARDS, entry, revoked, int(self._now() * 1000))

    async def document(self, name: str, since: int | None) -> SignedList:
        """The signed list (full, or the delta after ``since``), cached per version."""
        version = await self._store.version(name)
        issued_at = int(self._now()) // DENY_PERIOD_S * DENY_PERIOD_S
        signer_kid = self._ring().current().kid
        key = (name, version, since, issued_at, signer_kid)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        read = await self._store.read(name, since)
        doc: dict[str, Any] = {
            "list": name, "version": read.version, "issued_at": issued_at,
            "next_update": issued_at + DENY_PERIOD_S, "expires_at": issued_at + self._max_age_s,
            "hash": self.card_hash.to_json(), "full": read.full}
        if read.full:
            doc["entries"] = sorted(read.entries)
        else:
            doc.update(since=since, added=sorted(read.added), removed=sorted(read.removed))
        jws = sign_compact(document_signer(self._ring().current()), canonical_json(doc),
                           DENY_LIST_TYP)
        body = canonical_json({"deny_list": doc, "jws": jws})
        signed = SignedList(read.version, '"' + hashlib.sha256(body).hexdigest()[:32] + '"', body)
        if len(self._cache) > 256:
            self._cache.clear()
        # cached under the version read first: a change between the two reads makes the next
        # request read again rather than serve a newer list under an older key
        if read.version == version:
            self._cache[key] = signed
        return signed
