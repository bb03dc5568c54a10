"""The store epoch (issue 12): a Redis that lost its data is detected, not trusted.

Single use lives in Redis. A Redis that comes back without its data — restarted without
persistence, failed over to an empty replica, restored from an old snapshot, flushed — would
accept every code and card tap used before the loss again (measured on c831f2c: 600 of 600
codes allowed twice after `kill -9` and an empty restart). So every worker keeps a **store
clock** in one key, ``<prefix>epoch``: an integer ``epoch_id · 2³² + counter``.

* With every batch of single-use claims (once per event-loop tick, queued *before* the claims
  on the same connection, so Redis runs it first) and once a second, a worker sends
  ``INCR <prefix>epoch`` and checks the answer against what it saw last:
  - ``epoch_id`` 0: the key was missing — the store is empty or was wiped;
  - another ``epoch_id``: another worker found a loss and started a new epoch, or the store
    was restored from a snapshot of another epoch;
  - the same ``epoch_id`` with a counter not above the last one this worker saw: the store
    went back in time (a restored snapshot).
  Anything else is history intact.
* On a loss (within one claim of it): the worker starts a new epoch (a missing key or a store
  that went back; it adopts one another worker started), logs ``store.epoch_lost`` (error),
  counts it in ``gateway_store_epoch_losses_total``, and from then refuses every claim whose
  item could have been used at or before the moment of detection: the caller passes
  ``used_since`` (a code's issued_at − skew, a tap's scanned_at − skew), and the claim answers
  `HISTORY_LOST` (treated as already used: a code is ``replayed``) without touching Redis.
  So the gateway fails closed for at most a code's life + skew (taps: their maximum age) —
  items that cannot have been seen before the loss are judged normally at once: it resumes
  by itself. The claims of the batch that found the loss answer `HISTORY_LOST` too.
* In production, a gateway starting on an empty store starts an epoch and refuses what could
  predate it (nothing on a fresh deployment; after a lost store, what the gateway before it
  could have seen); the sandbox starts an epoch without refusing (tests and demos begin on
  an empty store).

`persistence_problems` reads Redis's own configuration (CONFIG GET): docs/audit.md requires
``appendonly yes`` and ``maxmemory-policy noeviction`` (an evicted claim is a lost claim);
production refuses to start otherwise, and /readyz fails.

Redis Cluster: the epoch key lives on one node; a loss of another node alone is not seen
(docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable, Sequence
from typing import Any, Final

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from gateway.ports import HISTORY_LOST

__all__ = ["HISTORY_LOST", "StoreEpoch", "persistence_problems"]

log = structlog.get_logger("gateway.store")

#: value = epoch_id · 2⁴⁰ + counter: a signed 64-bit Redis integer (ids below 2²²), and a
#: counter that 10,000 ticks a second would take three thousand years to fill
EPOCH_SPAN: Final = 1 << 40
EPOCH_IDS: Final = 1 << 22
#: another epoch seen this soon after this worker started one: another worker found the same
#: empty store at the same moment (start-up, or the same loss) and its SET won; adopted
ADOPT_GRACE_S: Final = 2.0
TICK_S: Final = 1.0


class StoreEpoch:
    def __init__(self, execute: Callable[..., asyncio.Future[Any]], prefix: str,
                 now: Callable[[], float], registry: CollectorRegistry | None = None, *,
                 refuse_at_start: bool = True,
                 listeners: Sequence[Callable[[str], Any]] = ()) -> None:
        """`listeners`: called with the reason when a loss is found (the composition root
        re-caches what it read from the lost store)."""
        self._execute = execute
        self._refuse_at_start = refuse_at_start
        self._key = prefix + "epoch"
        self._now = now
        self.epoch_id = 0      # 0: not started
        self.counter = 0       # the highest counter this worker saw in its epoch
        #: claims of items that could have been used at or before this (epoch seconds) are
        #: refused: the store cannot vouch for their history
        self.refuse_until_used_since = 0.0
        self.losses = 0
        self._created_at = float("-inf")
        self.listeners: tuple[Callable[[str], Any], ...] = tuple(listeners)
        self._verdict: asyncio.Future[bool] | None = None
        self._task: asyncio.Task[None] | None = None
        self._losses = self._refusing = None
        if registry is not None:
            self._losses = Counter("gateway_store_epoch_losses",
                                   "Store data losses detected (the store epoch changed)",
                                   ["reason"], registry=registry)
            self._refusing = Gauge("gateway_store_refusing_before_seconds",
                                   "Items usable at or before this Unix time are refused "
                                   "(the store lost their history)", registry=registry)

    # ---------------------------------------------------------------- life

    async def start(self) -> None:
        """The first INCR (a store without the key starts an epoch), then the ticker."""
        self._observe(await self._execute("INCR", self._key), starting=True)
        self._task = asyncio.ensure_future(self._tick())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _tick(self) -> None:
        """Once a second: an idle worker notices a loss too (and its counter keeps up)."""
        while True:
            await asyncio.sleep(TICK_S)
            with contextlib.suppress(Exception):  # a store fault: the gate path answers 503
                # shielded: cancelling the ticker (stop) must not cancel the verdict that this
                # tick's claims share
                await asyncio.shield(self.guard())

    # ---------------------------------------------------------------- the gate path

    def refuses(self, used_since: float | None) -> bool:
        """True when an item usable since `used_since` may have been used in lost history."""
        return used_since is not None and used_since <= self.refuse_until_used_since

    def guard(self) -> asyncio.Future[bool]:
        """True when the store's history is intact: one INCR per loop tick, shared by the
        claims of that tick, which are queued after it (call this *before* claiming)."""
        verdict = self._verdict
        if verdict is None:
            loop = asyncio.get_running_loop()
            verdict = self._verdict = loop.create_future()
            verdict.add_done_callback(_retrieved)
            self._execute("INCR", self._key).add_done_callback(
                lambda f, v=verdict: self._judge(v, f))  # type: ignore[misc]
            loop.call_soon(self._end_tick)
        return verdict

    def _end_tick(self) -> None:
        self._verdict = None

    def _judge(self, verdict: asyncio.Future[bool], incr: asyncio.Future[Any]) -> None:
        if verdict.done():
            return
        if incr.cancelled():
            verdict.cancel()
            return
        exc = incr.exception()
        if exc is not None:
            verdict.set_exception(exc)
            return
        verdict.set_result(self._observe(incr.result()))

    # ---------------------------------------------------------------- judging

    def _observe(self, value: Any, starting: bool = False) -> bool:
        epoch_id, counter = divmod(int(value), EPOCH_SPAN)
        if epoch_id == 0:
            if starting and not self._refuse_at_start:  # the sandbox: a fresh store is normal
                self._new_epoch()
                log.info("store.epoch_started", epoch=f"{self.epoch_id:08x}")
                return True
            self._lost("missing", new_epoch=True, starting=starting)
            return False
        if starting:
            self.epoch_id, self.counter = epoch_id, counter
            log.info("store.epoch", epoch=f"{epoch_id:08x}", counter=counter)
            return True
        if epoch_id != self.epoch_id:
            if self._now() - self._created_at < ADOPT_GRACE_S:
                self.epoch_id, self.counter = epoch_id, counter
                log.info("store.epoch_adopted", epoch=f"{epoch_id:08x}")
                return True
            self._lost("replaced", new_epoch=False, adopt=(epoch_id, counter))
            return False
        if counter <= self.counter:
            self._lost("went_back", new_epoch=True)
            return False
        self.counter = counter
        return True

    def _new_epoch(self) -> None:
        self.epoch_id = secrets.randbelow(EPOCH_IDS - 1) + 1
        self.counter = 1
        self._created_at = self._now()
        # plain SET: a worker that finds the same loss at the same moment may overwrite it;
        # each then sees the other's epoch as `replaced` and adopts it (a few more ms of
        # refusal, never fewer)
        self._execute("SET", self._key, self.epoch_id * EPOCH_SPAN + 1).add_done_callback(
            _retrieved)

    def _lost(self, reason: str, *, new_epoch: bool, adopt: tuple[int, int] | None = None,
              starting: bool = False) -> None:
        now = self._now()
        self.refuse_until_used_since = max(self.refuse_until_used_since, now)
        self.losses += 1
        previous = self.epoch_id
        if new_epoch:
            self._new_epoch()
        elif adopt is not None:
            self.epoch_id, self.counter = adopt
        if self._losses is not None:
            self._losses.labels(reason).inc()
        if self._refusing is not None:
            self._refusing.set(self.refuse_until_used_since)
        # at start-up an empty store is also what a first deployment looks like: a warning
        (log.warning if starting else log.error)(
            "store.epoch_lost", reason=reason, previous=f"{previous:08x}",
            epoch=f"{self.epoch_id:08x}", refusing_used_before=round(now, 3))
        for listener in self.listeners:
            try:
                result = listener(reason)
                if asyncio.iscoroutine(result):
                    asyncio.ensure_future(result).add_done_callback(_listener_done)
            except Exception:
                log.exception("store.epoch_listener_failed")


def _listener_done(f: asyncio.Future[Any]) -> None:
    if not f.cancelled() and f.exception() is not None:
        log.warning("store.epoch_listener_failed", error=type(f.exception()).__name__)


def _retrieved(f: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (nobody may await it: no 'never retrieved')."""
    if not f.cancelled():
        f.exception()


REQUIRED_CONFIG: Final = {"appendonly": "yes", "maxmemory-policy": "noeviction"}


def persistence_problems(config: dict[str, str]) -> list[str]:
    """What in Redis's CONFIG (lower-cased names) breaks docs/audit.md's persistence rule."""
    problems = []
    for name, wanted in REQUIRED_CONFIG.items():
        got = config.get(name)
        if got != wanted:
            problems.append(f"{name} is {got!r}, must be {wanted!r}")
    return problems


async def read_persistence_config(redis: Any) -> dict[str, str]:
    """CONFIG GET of the settings `persistence_problems` checks (raises when CONFIG is
    refused, e.g. renamed away by a managed service: then persistence cannot be shown)."""
    out: dict[str, str] = {}
    for name in REQUIRED_CONFIG:
        got = await redis.config_get(name)
        for k, v in got.items():
            key = k.decode() if isinstance(k, bytes) else str(k)
            out[key.lower()] = v.decode() if isinstance(v, bytes) else str(v)
    return out
