"""The trust list: every code issuer's verification keys and the scene policy, signed
(GET /v1/trust-list; docs/code-format.md §6, docs/offline.md §2).

Document::

    {"version": int, "issued_at": int, "next_update": int, "expires_at": int,
     "code_max_skew_s": int,
     "issuers": [{"issuer": "ykm" | "essc:CQ" | ..., "face": "ykm" | "essc",
                  "keys": [JWK (RFC 7517/8037) + "iss", "nbf", "exp"]}],
     "scenes": [{"id", "faces": [...], "essc_regions": [...]}]}

* ``version`` = the later of the current hour's start and the latest key event (a 渝快码 code
  key's creation, activation or retirement; an e-SSC key's ``nbf``): it never goes back, so a
  gate refuses a document whose version is below the one it holds (rollback).
* ``issued_at`` = ``max(hour start, version)``; ``next_update`` one hour after the hour start;
  ``expires_at`` = hour start + ``max_age_s``: after it an offline gate fails closed.
* Signed as a compact JWS (RFC 7515) by the **trust-list key** (key ring purpose ``trust``, its
  own keys, never the token keys), header ``{"alg", "kid", "typ": "trust-list+jwt"}``, over the
  payload bytes exactly as served. Gates pin a trust-list key out of band; a new key reaches
  them through an endorsement signed by the key before it (``endorsements`` in the answer).
* Deterministic (Ed25519, RFC 6979 ES256): every worker builds the byte-identical answer for
  the same keys and hour, so the strong ``ETag`` (RFC 9110 §8.8.3) is the same on every worker.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog

from gateway.authz.keyring import KeyRing, SigningKey
from gateway.codec import (
    Ed25519Signer,
    Es256Signer,
    KeyLookup,
    Signer,
    Sm2Signer,
    VerificationKey,
)
from gateway.codec import jws as _jws
from gateway.codec.jws import JwsKey, canonical_json
from gateway.codec.offline import TRUST_LIST_TYP, endorse
from gateway.codec.sm2 import Sm2PrivateKey
from gateway.errors import Unavailable
from gateway.services.scenes import SceneCatalogue

log = structlog.get_logger("gateway.trustlist")

__all__ = ["DEFAULT_MAX_AGE_S", "PERIOD_S", "TRUST_LIST_TYP", "EsscKeyRefresh", "KeysBeingFetched",
           "TrustList", "TrustListSnapshot", "document_signer", "ring_endorsements", "sign_compact",
           "trust_anchor_jwk"]

#: issued_at granularity and the interval to next_update.
PERIOD_S: Final = 3600
#: How long after issued_at an offline gate may still verify with a document (settings:
#: GATEWAY_TRUST_LIST_MAX_AGE_S).
DEFAULT_MAX_AGE_S: Final = 86_400


def document_signer(key: SigningKey) -> Signer:
    """The codec signer for a key-ring key: the one place a ring key becomes a JWS signer
    (another algorithm, e.g. SM2, adds its signer here)."""
    pk = key.private_key
    signer: Signer
    if isinstance(pk, Sm2PrivateKey):  # SM2 nonces are fresh: each worker's bytes differ
        signer = Sm2Signer(pk, kid=key.kid)
    elif key.alg == "EdDSA":
        signer = Ed25519Signer(pk)  # type: ignore[arg-type]
    else:
        signer = Es256Signer(pk, kid=key.kid)  # type: ignore[arg-type]
    if signer.kid != key.kid:
        raise RuntimeError("trust key id derivation mismatch")
    return signer


def sign_compact(key: SigningKey, payload: bytes, typ: str) -> str:
    """Compact JWS (RFC 7515 §7.1) by a key-ring key (through :func:`document_signer`):
    deterministic for EdDSA and ES256; SM2 (``alg: SM2``) signatures carry a fresh nonce."""
    return _jws.sign_compact(document_signer(key), payload, typ)


def _jws_key(key: SigningKey) -> JwsKey:
    return JwsKey.of(key.private_key.public_key())


_STATE_ORDER: Final = {"retired": 0, "current": 1, "next": 2}


def trust_anchor_jwk(ring: KeyRing) -> dict[str, Any]:
    """The public JWK of the trust ring's current key: what a gate is provisioned with."""
    return _jws_key(ring.current()).to_jwk()


def ring_endorsements(ring: KeyRing) -> list[str]:
    """Each key of the ring endorsed by the key before it (creation order; ``next`` after
    ``current``): the pre-published next key is endorsed before it ever signs."""
    keys = sorted(ring.keys, key=lambda k: (k.created_at, _STATE_ORDER[k.state], k.kid))
    return [endorse(document_signer(old), _jws_key(new), int(new.created_at))
            for old, new in itertools.pairwise(keys)]


def _ykm_key(k: SigningKey) -> VerificationKey:
    nbf = int(k.created_at)
    exp = int(k.verify_until) if k.state == "retired" and k.verify_until is not None else None
    return VerificationKey.of("ykm", k.private_key.public_key(), kid=k.kid, not_before=nbf,
                              not_after=exp)


def _key_event(k: SigningKey) -> float:
    return max(t for t in (k.created_at, k.activated_at, k.retired_at) if t is not None)


@dataclass(frozen=True)
class TrustListSnapshot:
    document: dict[str, Any]
    jws: str
    etag: str
    #: the JSON served: {"trust_list": ..., "jws": ..., "endorsements": [...]}
    body: bytes


class TrustList:
    """Key lookup for verification (sync, in-process) and the signed document.

    ``signing_ring`` is the trust-list key ring (purpose ``trust``); ``scenes`` the live scene
    catalogue, whose policy (faces, e-SSC regions) is signed into the document so an offline
    gate answers ``scene_not_permitted`` exactly as the gateway does; ``endorsements`` the
    persisted endorsements of keys that have left the ring (docs/offline.md §2).
    """

    def __init__(self, code_ring: Callable[[], KeyRing], signing_ring: Callable[[], KeyRing],
                 now: Callable[[], float], *,
                 scenes: Callable[[], SceneCatalogue | None] = lambda: None,
                 max_age_s: int = DEFAULT_MAX_AGE_S, code_max_skew_s: int = 5,
                 endorsements: Callable[[], Sequence[str]] = lambda: ()) -> None:
        if max_age_s < PERIOD_S:
            raise ValueError("the trust list's max age must be at least its update period")
        self._code_ring = code_ring
        self._signing_ring = signing_ring
        self._now = now
        self._scenes = scenes
        self._max_age_s = max_age_s
        self._skew = code_max_skew_s
        self._endorsements = endorsements
        self._ykm_ring: KeyRing | None = None
        self._ykm: dict[str, VerificationKey] = {}
        self._essc: dict[tuple[str, str], VerificationKey] = {}
        self._snapshot: tuple[tuple[Any, ...], TrustListSnapshot] | None = None
    # ------------------------------------------------------------------ lookup (hot path)
    def _ykm_keys(self) -> dict[str, VerificationKey]:
        ring = self._code_ring()
        if ring is not self._ykm_ring:
            now = self._now()
            self._ykm = {k.kid: _ykm_key(k) for k in ring.published(now)}
            self._ykm_ring = ring
        return self._ykm

    def lookup(self, issuer: str, kid: str) -> VerificationKey | None:
        """The codec's KeyLookup: (issuer, kid) → key, or None (→ ``unknown_issuer``)."""
        if issuer == "ykm":
            key = self._ykm_keys().get(kid)
            if key is not None and key.not_after is not None and self._now() >= key.not_after:
                return None
            return key
        return self._essc.get((issuer, kid))

    def set_essc_keys(self, jwks: Iterable[Mapping[str, Any]],
                      issuer: str | None = None) -> int:
        """Replace the e-SSC platform code keys (from ``EsscPlatform.code_keys()``); keys
        that do not parse or name another issuer form are skipped. Returns how many were kept.
        With ``issuer``: only that issuer's keys are replaced (one region's fetch), keys of
        any other issuer in ``jwks`` are skipped."""
        out: dict[tuple[str, str], VerificationKey] = (
            {} if issuer is None else {k: v for k, v in self._essc.items() if k[0] != issuer})
        for jwk in jwks:
            try:
                vk = VerificationKey.from_jwk(jwk)
            except (ValueError, TypeError):
                # e.g. a curve this gateway does not know: skipped, and said so (no key data)
                log.warning("trust_list.key_ignored", kid=str(jwk.get("kid"))[:32],
                            kty=str(jwk.get("kty"))[:16], crv=str(jwk.get("crv"))[:16],
                            iss=str(jwk.get("iss"))[:32])
                continue
            if vk.issuer.startswith("essc:") and issuer in (None, vk.issuer):
                out[(vk.issuer, vk.kid)] = vk
        self._essc = out  # a new dict: the document's cache key sees the change
        return len(out) if issuer is None else sum(1 for k in out if k[0] == issuer)

    # ------------------------------------------------------------------ the document
    def signing_key(self) -> JwsKey:
        """The trust-list key signing now (what `gateway keys trust-anchor` prints)."""
        return _jws_key(self._signing_ring().current())

    def snapshot(self) -> TrustListSnapshot:
        now = self._now()
        code_ring = self._code_ring()
        signing_ring = self._signing_ring()
        signing_key = signing_ring.current()
        catalogue = self._scenes()
        period = int(now) // PERIOD_S * PERIOD_S
        published = tuple(k for k in code_ring.published(now))
        essc = tuple(sorted(self._essc.items()))
        # the persisted endorsements change only with the signing ring: read on rebuild
        cache_key = (period, tuple(k.kid + k.state for k in published), id(self._essc),
                     tuple(k.kid + k.state for k in signing_ring.keys), id(catalogue))
        if self._snapshot is not None and self._snapshot[0] == cache_key:
            return self._snapshot[1]
        persisted = tuple(self._endorsements())
        version = max([int(_key_event(k)) for k in published]
                      + [vk.not_before or 0 for _, vk in essc] + [period])
        issuers: list[dict[str, Any]] = [{
            "issuer": "ykm", "face": "ykm",
            "keys": [_ykm_key(k).to_jwk() for k in sorted(published, key=lambda k: k.kid)]}]
        by_issuer: dict[str, list[dict[str, Any]]] = {}
        for (iss, _kid), vk in essc:
            by_issuer.setdefault(iss, []).append(vk.to_jwk())
        issuers += [{"issuer": iss, "face": "essc", "keys": keys}
                    for iss, keys in sorted(by_issuer.items())]
        issued_at = max(period, version)
        doc: dict[str, Any] = {
            "version": version, "issued_at": issued_at, "next_update": period + PERIOD_S,
            "expires_at": period + self._max_age_s, "code_max_skew_s": self._skew,
            "issuers": issuers,
            "scenes": [] if catalogue is None else _scene_policies(catalogue.all())}
        jws = sign_compact(signing_key, canonical_json(doc), TRUST_LIST_TYP)
        chain = list(dict.fromkeys([*persisted, *ring_endorsements(signing_ring)]))
        body = canonical_json({"trust_list": doc, "jws": jws, "endorsements": chain})
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        snap = TrustListSnapshot(doc, jws, etag, body)
        self._snapshot = (cache_key, snap)
        return snap


def _scene_policies(scenes: Iterable[Any]) -> list[dict[str, Any]]:
    """What a gate needs of each scene to answer scene_not_permitted (Scene.permits)."""
    return [{"id": s.id, "faces": sorted(s.faces), "essc_regions": sorted(s.essc_regions)}
            for s in sorted(scenes, key=lambda s: s.id)]



class KeysBeingFetched(Unavailable):
    """An e-SSC code under a key this worker has not fetched yet: 503 ``unavailable`` with
    ``Retry-After: 1``, never ``unknown_issuer`` for a code that may well be genuine. The
    verify handler may wait a bounded time for the fetch (``settled``) and judge the scan
    again; nothing was claimed or recorded for it."""

    def __init__(self, detail: str, *, fetch: asyncio.Future[None] | None,
                 wait_s: float) -> None:
        super().__init__(detail, headers={"Retry-After": "1"})
        self._fetch = fetch
        self._wait_s = wait_s

    async def settled(self) -> bool:
        """True once the fetch has finished within the bound (then judge the scan again);
        False when there is none to wait for or it outlasted the bound (it goes on)."""
        if self._fetch is None or self._wait_s <= 0:
            return False
        done, _ = await asyncio.wait({self._fetch}, timeout=self._wait_s)
        return bool(done)


class EsscKeyRefresh:
    """Refresh on an unknown key id (docs/upstreams.md "Keys not fetched yet"): the trust
    list's lookup for the gate path, which on a miss for a configured e-SSC issuer
    (``essc:<region>``) starts ONE fetch of that region's code keys — single-flight, at most
    once per ``min_interval_s`` per issuer — and answers :class:`KeysBeingFetched` to the
    scan that started it and to every scan of that issuer while it runs (the verify handler
    waits for it up to ``wait_s`` and judges the scan again). A miss inside the
    interval after a fetch is ``unknown_issuer`` at once (a forged or foreign key id costs
    the platform at most one fetch per interval) — unless that fetch failed: then it is
    :class:`KeysBeingFetched` too, as the gateway cannot judge the code. The gate path never
    waits on the platform.
    """

    def __init__(self, lookup: KeyLookup, fetch: Callable[[str], Awaitable[Sequence[
                 Mapping[str, Any]]]], store: Callable[[Sequence[Mapping[str, Any]], str], int],
                 regions: Iterable[str], now: Callable[[], float], *,
                 min_interval_s: float = 10.0, wait_s: float = 0.5) -> None:
        """``lookup``: the trust list's; ``fetch(region)``: the platform's code keys of one
        region (``EsscPlatform.code_keys``); ``store(jwks, issuer)``: into the trust list
        (``TrustList.set_essc_keys``)."""
        self._lookup = lookup
        self._fetch = fetch
        self._store = store
        self._regions = {f"essc:{r}": r for r in regions}
        self._now = now
        self._min_interval_s = min_interval_s
        self._wait_s = wait_s
        self._last: dict[str, float] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._failed: set[str] = set()

    def lookup(self, issuer: str, kid: str) -> VerificationKey | None:
        key = self._lookup(issuer, kid)
        if key is None and issuer in self._regions:
            self._missed(issuer)
        return key

    def _missed(self, issuer: str) -> None:
        if issuer not in self._running:
            now = self._now()
            last = self._last.get(issuer)
            if last is not None and now - last < self._min_interval_s:
                if issuer not in self._failed:
                    return  # fetched lately: the key id is unknown to the platform too
                raise KeysBeingFetched("The e-SSC platform's code keys could not be fetched; "
                                       "retry", fetch=None, wait_s=0)
            self._last[issuer] = now
            self._running[issuer] = asyncio.ensure_future(self._refresh(issuer))
        raise KeysBeingFetched("The e-SSC platform's code keys are being fetched; retry",
                               fetch=self._running[issuer], wait_s=self._wait_s)

    async def _refresh(self, issuer: str) -> None:
        try:
            kept = self._store(await self._fetch(self._regions[issuer]), issuer)
            self._failed.discard(issuer)
            log.info("trust_list.essc_keys_on_demand", issuer=issuer, keys=kept)
        except Exception as exc:  # noqa: BLE001 - tried again after the interval
            self._failed.add(issuer)
            log.warning("trust_list.essc_keys_on_demand_failed", issuer=issuer,
                        error=type(exc).__name__)
        finally:
            del self._running[issuer]

    async def settled(self) -> None:
        """Every fetch under way finished (tests; shutdown)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._running.values()):
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
