"""The transaction outbox in Redis (docs/records.md): claims that append their record in the
same round trip, the exporter's reader, and the exporter's lock.

Keys (prefix ``gw:``; ``N`` = GATEWAY_TRANSACTIONS_OUTBOX_SHARDS; shard ``k`` = CRC-32 of the
claim's key, UTF-8, mod N — a key always lands on one shard, whoever claims it):

* ``gw:tx:outbox:{gw:tx:k}`` — a Stream; one entry per record, field ``r`` = the msgpack record.
* ``gw:once:{gw:tx:k}:<key>`` — the single-use claims that decide a record (a code's nonce,
  a (gate, request id) pair). They share the stream's hash tag, so the one script that claims
  and appends touches one Cluster slot; N streams spread the appends over N slots.
* ``gw:tx:exporter`` — the exporter lock (SET NX PX, renewed by its holder).
* ``gw:tx:live:{gw:tx:k}:m:<unix minute>`` — the live view's counters (GATEWAY_STATS_LIVE,
  docs/stats.md): hashes of ``scene␟gate␟face␟reason`` → decisions, one HINCRBY by the same
  script when its claim wins, kept 25 hours; "today" is the sum of today's minutes, read by
  one script per shard. Same hash tag: still one slot, still one round trip.

The claims of one event-loop tick go as one script call per shard (``CLAIM_AND_APPEND`` for a
lone claim, ``CLAIM_AND_APPEND_MANY`` for several): per claim ``SET key value NX PX ttl GET``
and, only when that claimed, ``XADD`` —
unless the stream already holds its bound (XLEN, O(1)): then the decision stands, the record
is dropped, and the adapter counts it (gateway_transactions_dropped_total) and logs an alarm.
An explicit bound rather than ``XADD MAXLEN ~``: trimming would silently delete the oldest
records, the very ones not yet exported.

The exporter reads the oldest entries (XRANGE), writes them to the record store, and only then
deletes them (XTRIM MINID just past the last one written): a crash in between re-delivers.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Final

import redis.exceptions
import structlog

from gateway.adapters.redis_store import Coalescer, RedisClient
from gateway.adapters.store_epoch import StoreEpoch
from gateway.ports import HISTORY_LOST
from gateway.services.records import Batch, Claim, TransactionRecord
from gateway.services.stats import LiveCounts, live_field

__all__ = ["RedisExporterLock", "RedisLiveCounters", "RedisOutbox", "RedisRecordingClaims",
           "claim_key", "live_key", "live_prefix", "outbox_keys"]

log = structlog.get_logger("gateway.records")

#: The live view's minute hashes are kept 25 hours: "today" (UTC) is the sum of today's
#: minutes (docs/stats.md "The live view"), so each must outlive the day it was counted in.
LIVE_MINUTE_TTL_MS: Final = 25 * 3600 * 1000

#: KEYS = the claim, the shard's stream, and (live counters on) the shard's hash of this
#: minute; ARGV = value, TTL in ms, the shard's bound, the record, and (live on) its field.
#: One HINCRBY per decision (PEXPIRE only when it created the field).
CLAIM_AND_APPEND: Final = """
local prev = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2], 'GET')
if prev then return {1, prev} end
if KEYS[3] and redis.call('HINCRBY', KEYS[3], ARGV[5], 1) == 1 then
  redis.call('PEXPIRE', KEYS[3], LIVE_MINUTE_TTL_MS)
end
if redis.call('XLEN', KEYS[2]) >= tonumber(ARGV[3]) then return {0, 0} end
redis.call('XADD', KEYS[2], '*', 'r', ARGV[4])
return {0, 1}
""".replace("LIVE_MINUTE_TTL_MS", str(LIVE_MINUTE_TTL_MS))
_SHA: Final = hashlib.sha1(CLAIM_AND_APPEND.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1

#: The bulk form (an offline upload: docs/records.md "Offline uploads"): every claim of one
#: outbox shard in ONE call. KEYS = stream, live minute hash (unused when ARGV[2] is '0'),
#: then the claims' keys; ARGV = bound, live, then per claim: value, TTL in ms, record, live
#: field. Per claim the reply is the first claimer's
#: value, 1 (claimed, record appended) or 0 (claimed, outbox full: record dropped). The live
#: counters get one HINCRBY per distinct field, not one per claim.
CLAIM_AND_APPEND_MANY: Final = """
local bound, live = tonumber(ARGV[1]), ARGV[2] == '1'
local len = redis.call('XLEN', KEYS[1])
local out, counts = {}, {}
for i = 3, #KEYS do
  local a = 4 * (i - 3) + 3
  local prev = redis.call('SET', KEYS[i], ARGV[a], 'NX', 'PX', ARGV[a + 1], 'GET')
  if prev then
    out[#out + 1] = prev
  else
    if live then counts[ARGV[a + 3]] = (counts[ARGV[a + 3]] or 0) + 1 end
    if len >= bound then
      out[#out + 1] = 0
    else
      redis.call('XADD', KEYS[1], '*', 'r', ARGV[a + 2])
      len = len + 1
      out[#out + 1] = 1
    end
  end
end
for f, n in pairs(counts) do
  if redis.call('HINCRBY', KEYS[2], f, n) == n then
    redis.call('PEXPIRE', KEYS[2], LIVE_MINUTE_TTL_MS)
  end
end
return out
""".replace("LIVE_MINUTE_TTL_MS", str(LIVE_MINUTE_TTL_MS))
_SHA_MANY: Final = hashlib.sha1(CLAIM_AND_APPEND_MANY.encode()).hexdigest()  # noqa: S324
#: `remember` in bulk, one call per shard: KEYS = the keys; ARGV = TTL in ms, then the values.
_REMEMBER_MANY: Final = """
for i = 1, #KEYS do redis.call('SET', KEYS[i], ARGV[i + 1], 'NX', 'PX', ARGV[1]) end
return #KEYS
"""
_SHA_REMEMBER: Final = hashlib.sha1(_REMEMBER_MANY.encode()).hexdigest()  # noqa: S324

_RENEW: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _tag(prefix: str, shard: int) -> str:
    return f"{{{prefix}tx:{shard}}}"


def outbox_keys(prefix: str, shards: int) -> list[str]:
    return [f"{prefix}tx:outbox:{_tag(prefix, k)}" for k in range(shards)]


def _shard(key: str, shards: int) -> int:
    """The outbox shard of a claim: derived from its key, so a retry of the same use (under
    another scan time, say) meets the first claim whoever makes it."""
    return zlib.crc32(key.encode()) % shards if shards > 1 else 0


def live_prefix(prefix: str, shard: int) -> str:
    """A shard's live minute hashes are this followed by the Unix minute."""
    return f"{prefix}tx:live:{_tag(prefix, shard)}:m:"


def live_key(prefix: str, shard: int, minute: int) -> str:
    """The live counters' hash of one shard and one Unix minute."""
    return f"{live_prefix(prefix, shard)}{minute}"


def claim_key(prefix: str, shards: int, key: str) -> str:
    """The Redis key of a recording claim (for operators' tooling and tests)."""
    return f"{prefix}once:{_tag(prefix, _shard(key, shards))}:{key}"


class RedisRecordingClaims:
    """`gateway.services.records.RecordingClaims` on Redis, through the Coalescer: the claim
    and its record are one EVALSHA in the same pipeline as everything else of the loop tick."""

    def __init__(self, coalescer: Coalescer, script_load: Callable[[str], Any], *,
                 prefix: str = "gw:", shards: int = 4, bound: int = 2_000_000,
                 on_full: Callable[[], None] | None = None,
                 epoch: StoreEpoch | None = None, live: bool = True) -> None:
        self._c = coalescer
        self._live = live
        self.epoch = epoch
        self._script_load = script_load
        self._prefix = prefix
        self._shards = shards
        self._per_shard = max(1, bound // shards)
        self._on_full = on_full
        self._streams = outbox_keys(prefix, shards)
        self._claims = [f"{prefix}once:{_tag(prefix, k)}:" for k in range(shards)]
        self._live_prefixes = [live_prefix(prefix, k) for k in range(shards)]
        #: (Unix minute, that minute's live hash per shard): built once a minute
        self._minute_keys: tuple[int, list[str]] = (-1, [])
        self._full_logged = 0.0
        #: this loop tick's claims by shard, sent together by `_send_tick`
        self._tick: dict[int, list[tuple[Claim, asyncio.Future[Any]]]] = {}
        self._resending: set[asyncio.Task[None]] = set()

    def _live_key(self, k: int, t: float) -> str:
        minute = int(t // 60)
        held, keys = self._minute_keys
        if held != minute:
            keys = [p + str(minute) for p in self._live_prefixes]
            self._minute_keys = (minute, keys)
        return keys[k]

    async def load(self) -> None:
        await self._script_load(CLAIM_AND_APPEND)
        await self._script_load(CLAIM_AND_APPEND_MANY)
        await self._script_load(_REMEMBER_MANY)

    async def claim(self, key: str, ttl_s: float, value: str, record: TransactionRecord, *,
                    used_since: float | None = None) -> str | None:
        """With a store epoch (issue 12) as `RedisSingleUse.claim`: refused without touching
        Redis when the item may predate a detected loss; the tick's epoch check queued first.
        (The tick that *detects* a loss has already run its scripts: an allow record of it
        may stand beside the `replayed` deny the gate is told — docs/records.md.)

        The claims of one event-loop tick go to Redis together, ONE script call per outbox
        shard (`CLAIM_AND_APPEND_MANY` for two or more, `CLAIM_AND_APPEND` for one): at peak a
        worker resumes a dozen verifications per tick, and Lua's own cost per call (~3 µs of
        Redis, more than the SET) is paid once per shard instead of once per claim. Same
        round trip, same atomicity per claim, same answers."""
        epoch = self.epoch
        intact: Any = None
        if epoch is not None:
            if epoch.refuses(used_since):
                return HISTORY_LOST
            intact = epoch.guard()  # queued before the scripts: Redis runs it first
        reply = await self._enqueue(Claim(key, ttl_s, value, record, used_since))
        if epoch is not None and (not await intact or epoch.refuses(used_since)):
            return HISTORY_LOST
        return self._answer(reply)

    def _enqueue(self, claim: Claim) -> asyncio.Future[Any]:
        """Queue a claim for this tick's call of its shard; the future resolves to its reply:
        bytes, the first claimer's value; 1, claimed; 0, claimed but the outbox was full."""
        loop = asyncio.get_running_loop()
        got: asyncio.Future[Any] = loop.create_future()
        if not self._tick:
            loop.call_soon(self._send_tick)
        self._tick.setdefault(_shard(claim.key, self._shards), []).append((claim, got))
        return got

    def _answer(self, reply: Any) -> str | None:
        """A claim's reply as `claim` answers: the first use's value, or None (claimed)."""
        if isinstance(reply, bytes):
            return reply.decode()
        if isinstance(reply, str):
            return reply
        if reply == 0:
            self._full()
        return None

    def _send_tick(self) -> None:
        """This tick's claims, one script call per shard, queued in the Coalescer now (its
        pipeline goes out at the end of the tick)."""
        tick, self._tick = self._tick, {}
        for k, items in tick.items():
            items = [(c, f) for c, f in items if not f.done()]  # a cancelled caller's: unsent
            if not items:
                continue
            futs = [f for _, f in items]
            try:
                args = self._one_args(k, items[0][0]) if len(items) == 1 else \
                    self._many_args(k, [c for c, _ in items], items[0][0].record.verified_at)
            except Exception as exc:  # noqa: BLE001 - each caller gets it, none waits for ever
                for f in futs:
                    f.set_exception(exc)
                continue
            self._c.execute(*args).add_done_callback(
                lambda r, a=args, fs=futs: self._sent(a, fs, r))  # type: ignore[misc]

    def _one_args(self, k: int, c: Claim) -> list[Any]:
        record = c.record
        if self._live:
            return ["EVALSHA", _SHA, 3, self._claims[k] + c.key, self._streams[k],
                    self._live_key(k, record.verified_at), c.value, max(1, int(c.ttl_s * 1000)),
                    self._per_shard, record.to_wire(), live_field(record)]
        return ["EVALSHA", _SHA, 2, self._claims[k] + c.key, self._streams[k], c.value,
                max(1, int(c.ttl_s * 1000)), self._per_shard, record.to_wire()]

    def _sent(self, args: list[Any], futs: list[asyncio.Future[Any]],
              reply: asyncio.Future[Any], retried: bool = False) -> None:
        """One shard's script answered: each claim's reply to its caller (a NOSCRIPT reloads
        the scripts and sends the call again, once)."""
        if reply.cancelled():
            for f in futs:
                if not f.done():
                    f.cancel()
            return
        exc = reply.exception()
        if isinstance(exc, redis.exceptions.NoScriptError) and not retried:
            task = asyncio.ensure_future(self._resend(args, futs))
            self._resending.add(task)
            task.add_done_callback(self._resending.discard)
            return
        if exc is not None:
            for f in futs:
                if not f.done():
                    f.set_exception(exc)
            return
        got = reply.result()
        if args[1] == _SHA:  # {1, first value} or {0, 0 | 1}
            values = [got[1]]
        else:  # per claim: the first claimer's value, 1 or 0
            values = list(got)
        for f, v in zip(futs, values, strict=True):
            if not f.done():
                f.set_result(v)

    async def _resend(self, args: list[Any], futs: list[asyncio.Future[Any]]) -> None:
        try:
            await self.load()
        except Exception as exc:  # noqa: BLE001 - handed to every caller of this call
            for f in futs:
                if not f.done():
                    f.set_exception(exc)
            return
        self._c.execute(*args).add_done_callback(
            lambda r: self._sent(args, futs, r, retried=True))

    async def claim_many(self, claims: Sequence[Claim]) -> list[str | None]:
        """Every claim queued in this loop tick, so they go as one call per outbox shard (its
        keys share the shard's hash tag: one Cluster slot each) — one pipeline, one round
        trip, with whatever else of the tick claims. Any call's fault raises (the upload
        answers 503; what was claimed is answered `confirmed` when the same upload is sent
        again: same gate, same request id)."""
        out: list[str | None] = [None] * len(claims)
        if not claims:
            return out
        epoch = self.epoch
        intact: Any = None
        if epoch is not None:
            intact = epoch.guard()  # queued before the scripts: Redis runs it first
        queued: list[tuple[int, asyncio.Future[Any]]] = []
        for i, c in enumerate(claims):
            if epoch is not None and epoch.refuses(c.used_since):
                out[i] = HISTORY_LOST
            else:
                queued.append((i, self._enqueue(c)))
        replies = await asyncio.gather(*(f for _, f in queued))
        if epoch is not None and not await intact:
            return [HISTORY_LOST] * len(claims)
        for (i, _), reply in zip(queued, replies, strict=True):
            out[i] = self._answer(reply)  # (a dropped record is counted either way)
            if epoch is not None and epoch.refuses(claims[i].used_since):
                out[i] = HISTORY_LOST
        return out

    def _many_args(self, k: int, claims: list[Claim], t: float) -> list[Any]:
        prefix = self._claims[k]
        args: list[Any] = ["EVALSHA", _SHA_MANY, 2 + len(claims), self._streams[k],
                           self._live_key(k, t)]
        args.extend(prefix + c.key for c in claims)
        args.extend((self._per_shard, "1" if self._live else "0"))
        live = self._live
        for c in claims:
            args.extend((c.value, max(1, int(c.ttl_s * 1000)), c.record.to_wire(),
                         live_field(c.record) if live else ""))
        return args

    async def remember_many(self, ttl_s: float, items: Sequence[tuple[str, str]]) -> None:
        by_shard: dict[int, list[tuple[str, str]]] = {}
        for key, value in items:
            by_shard.setdefault(_shard(key, self._shards), []).append((key, value))
        ttl = max(1, int(ttl_s * 1000))
        calls = [["EVALSHA", _SHA_REMEMBER, len(kv), *(self._claims[k] + key for key, _ in kv),
                  ttl, *(value for _, value in kv)] for k, kv in by_shard.items()]
        replies = await asyncio.gather(*(self._c.execute(*a) for a in calls),
                                       return_exceptions=True)
        for args, reply in zip(calls, replies, strict=True):
            if isinstance(reply, redis.exceptions.NoScriptError):
                await self.load()
                await self._c.execute(*args)
            elif isinstance(reply, BaseException):
                raise reply

    def _full(self) -> None:
        if self._on_full is not None:
            self._on_full()
        now = time.monotonic()
        if now - self._full_logged >= 1.0:  # an alarm, not a line per scan
            self._full_logged = now
            log.error("transactions.outbox_full", bound=self._per_shard * self._shards)

    async def peek(self, key: str) -> str | None:
        raw = await self._c.execute("GET", self._claims[_shard(key, self._shards)] + key)
        return raw.decode() if isinstance(raw, bytes) else raw

    async def remember(self, key: str, ttl_s: float, value: str) -> None:
        await self._c.execute("SET", self._claims[_shard(key, self._shards)] + key, value,
                              "NX", "PX", max(1, int(ttl_s * 1000)))


def _after(entry_id: bytes) -> str:
    """The smallest stream id greater than `entry_id` (for XTRIM MINID: strictly after)."""
    ms, _, seq = entry_id.decode().partition("-")
    return f"{ms}-{int(seq) + 1}"


def _raw(response: Any, **options: Any) -> Any:
    return response


class RedisOutbox:
    """The exporter's side: the oldest entries of every shard, deleted once stored.

    `redis` must be a client of its own: its XRANGE replies are left as hiredis parsed them
    (nested lists) instead of redis-py's per-entry dicts — 5× less CPU per record read
    (measured), the exporter's largest cost after PostgreSQL itself."""

    def __init__(self, redis: RedisClient, *, prefix: str = "gw:", shards: int = 4,
                 bound: int = 2_000_000) -> None:
        self._r = redis
        redis.set_response_callback("XRANGE", _raw)
        self._streams = outbox_keys(prefix, shards)
        self._bound = max(1, bound // shards) * shards

    @property
    def bound(self) -> int:
        return self._bound

    async def take(self, max_records: int, after: Batch | None = None) -> Batch | None:
        per = max(1, -(-max_records // len(self._streams)))
        records: list[TransactionRecord] = []
        start: dict[str, bytes] = after.position if after is not None else {}
        last: dict[str, bytes] = dict(start)
        bad = 0
        taken = False
        for stream in self._streams:  # one command each: a Cluster routes them to their slots
            lo = b"(" + start[stream] if stream in start else "-"
            entries: list[Any] = await self._r.execute_command(
                "XRANGE", stream, lo, "+", "COUNT", per) or []
            for _, fields in entries:  # [id, [b"r", record]]
                try:
                    if len(fields) != 2 or fields[0] != b"r":
                        raise ValueError("no record field")
                    records.append(TransactionRecord.from_wire(fields[1]))
                except (ValueError, TypeError, KeyError):
                    bad += 1
            if entries:
                taken = True
                last[stream] = entries[-1][0]
        if not taken:
            return None
        done = {k: v for k, v in last.items() if start.get(k) != v}

        async def ack() -> None:
            for stream, entry_id in done.items():
                await self._r.xtrim(stream, minid=_after(entry_id), approximate=False)

        return Batch(records, ack, bad, position=last)

    async def length(self) -> int:
        total = 0
        for stream in self._streams:
            total += int(await self._r.xlen(stream))
        return total


#: The live view's read of one shard, which also folds the minutes that can no longer change
#: (two minutes old: a decision's script runs within its Redis timeout of its minute) into
#: the day's running sum, so each minute is summed once a day, not on every read.
#: KEYS = the day's sum, its watermark (the last minute folded), then the shard's minute
#: hashes from minute ARGV[1] to now, one a minute; ARGV = that first minute, today's first
#: minute, the last minute that may be folded, how many of the last minutes are wanted one
#: by one, the most minutes one call folds. Reply: {today as field, n, …; then each wanted
#: minute's HGETALL}, or {} when minutes are left to fold: call again (each call blocks Redis
#: for at most that many minutes' fields — the first read of a day no one has watched).
LIVE_READ: Final = """
local lo, first, upto, wanted = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4])
local mark = tonumber(redis.call('GET', KEYS[2]) or (first - 1))
local more = false
if upto > mark + tonumber(ARGV[5]) then upto, more = mark + tonumber(ARGV[5]), true end
if upto > mark then
  for m = math.max(mark + 1, first), upto do
    local h = redis.call('HGETALL', KEYS[m - lo + 3])
    for j = 1, #h, 2 do redis.call('HINCRBY', KEYS[1], h[j], h[j + 1]) end
  end
  redis.call('SET', KEYS[2], upto, 'PX', LIVE_MINUTE_TTL_MS)
  redis.call('PEXPIRE', KEYS[1], LIVE_MINUTE_TTL_MS)
  mark = upto
end
if more then return {} end
local sum, order = {}, {}
local function add(h)
  for j = 1, #h, 2 do
    local f = h[j]
    if not sum[f] then order[#order + 1] = f; sum[f] = 0 end
    sum[f] = sum[f] + tonumber(h[j + 1])
  end
end
add(redis.call('HGETALL', KEYS[1]))
local out = {{}}
for i = 3, #KEYS do
  local m = lo + i - 3
  if m > mark and m >= first then
    local h = redis.call('HGETALL', KEYS[i])
    add(h)
    if i > #KEYS - wanted then out[#out + 1] = h end
  elseif i > #KEYS - wanted then
    out[#out + 1] = redis.call('HGETALL', KEYS[i])
  end
end
for _, f in ipairs(order) do
  out[1][#out[1] + 1] = f
  out[1][#out[1] + 1] = sum[f]
end
return out
""".replace("LIVE_MINUTE_TTL_MS", str(LIVE_MINUTE_TTL_MS))
#: the most minutes one read call folds (see LIVE_READ)
LIVE_FOLD_MAX: Final = 30
_SHA_READ: Final = hashlib.sha1(LIVE_READ.encode()).hexdigest()  # noqa: S324


class RedisLiveCounters:
    """The live view's reader: "today" is the day's folded sum plus today's minutes not yet
    folded, and the last minutes are read one by one — one script call per shard, all in one
    pipeline (each call's keys share the shard's hash tag: one Cluster slot)."""

    def __init__(self, redis: RedisClient, *, prefix: str = "gw:", shards: int = 4) -> None:
        self._r = redis
        self._prefixes = [live_prefix(prefix, k) for k in range(shards)]

    async def read(self, now: float, minutes: int) -> LiveCounts:
        minute, day = int(now // 60), int(now // 86400)
        first_today = day * 1440
        lo = min(first_today, minute - minutes + 1)
        span = range(lo, minute + 1)
        wanted = list(range(minute - minutes + 1, minute + 1))
        calls = []
        for p in self._prefixes:
            base = p[:-3]  # "…:m:" → "…"
            calls.append([f"{base}:t:{day}", f"{base}:tw:{day}", *(p + str(m) for m in span)])
        args = (lo, first_today, minute - 2, minutes, LIVE_FOLD_MAX)
        replies: list[Any] = [[] for _ in calls]
        for _ in range(1440 // LIVE_FOLD_MAX + 3):  # bounded: each call folds up to the max
            todo = [i for i, reply in enumerate(replies) if not reply]
            if not todo:
                break
            try:
                got = await self._pipeline([calls[i] for i in todo], args)
            except redis.exceptions.NoScriptError:  # a new or restarted Redis: load it
                await self._r.script_load(LIVE_READ)
                continue
            for i, reply in zip(todo, got, strict=True):
                replies[i] = reply
        if any(not reply for reply in replies):
            raise RuntimeError("the live view's fold did not finish")  # unreachable in bounds
        today: dict[str, int] = {}
        per_minute: dict[int, dict[str, int]] = {m: {} for m in wanted}
        for reply in replies:
            _add(today, reply[0])
            for m, h in zip(wanted, reply[1:], strict=True):
                _add(per_minute[m], h)
        return LiveCounts(day, today, per_minute)

    async def _pipeline(self, calls: list[list[str]], args: tuple[int, ...]) -> list[Any]:
        pipe = self._r.pipeline(transaction=False)
        for keys in calls:
            pipe.execute_command("EVALSHA", _SHA_READ, len(keys), *keys, *args)
        return list(await pipe.execute())


def _add(into: dict[str, int], flat: Any) -> None:
    """Adds a flat [field, n, field, n, …] reply."""
    items = list(flat or ())
    for f, n in zip(items[::2], items[1::2], strict=True):
        name = f.decode() if isinstance(f, bytes) else str(f)
        into[name] = into.get(name, 0) + int(n)


class RedisExporterLock:
    """One exporter at a time: ``SET key token NX PX ttl``, renewed by compare-and-expire."""

    def __init__(self, redis: RedisClient, *, prefix: str = "gw:", ttl_s: float = 15.0) -> None:
        self._r = redis
        self._key = f"{prefix}tx:exporter"
        self._token = secrets.token_hex(16)
        self._ttl_ms = int(ttl_s * 1000)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    async def acquire(self) -> bool:
        return bool(await self._r.set(self._key, self._token, nx=True, px=self._ttl_ms))

    async def renew(self) -> bool:
        return bool(await self._renew(keys=[self._key], args=[self._token, self._ttl_ms]))

    async def release(self) -> None:
        await self._release(keys=[self._key], args=[self._token])
