"""The audit log in Redis: one STREAM, appended by a Lua compare-and-append so the chain
never forks across workers (docs/audit.md).

Keys (one `{audit}` hash tag, so the script's keys live in one Cluster slot):

* `<prefix>{audit}:log`   — the stream; entry id `<seq>-1`, one field `e` = canonical JSON
* `<prefix>{audit}:head`  — "seq hash" of the last entry (what the next entry must follow)
* `<prefix>{audit}:by:<subject>` — list of seqs about one holder (the resident's access log)

Redis Lua has no HMAC-SHA256, so the worker computes the entry (and its keyed hash) over the
head it read, and the script appends only if the head is still that one; otherwise it answers
the new head and the worker re-chains and retries. Exactly one writer wins each seq.

Also here: the operator commands `gateway audit verify [--checkpoint FILE]`, `audit list`
and `audit checkpoint [--out FILE]`, and the file that keeps signed checkpoints outside Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from gateway.adapters.redis_store import RedisClient, connect, text
from gateway.services.audit import (
    GENESIS,
    CheckpointInvalid,
    canonical_json,
    chain_entry,
    make_checkpoint,
    read_checkpoints,
    verify_log,
)

log = structlog.get_logger("gateway.audit")

APPEND_LUA = """
local head = redis.call('GET', KEYS[2])
local cur = head or ('0 ' .. ARGV[4])
if cur ~= ARGV[1] then return {0, cur} end
redis.call('XADD', KEYS[1], ARGV[2] .. '-1', 'e', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2] .. ' ' .. ARGV[5])
if #KEYS >= 3 then
  redis.call('RPUSH', KEYS[3], ARGV[2])
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[7]), -1)
end
return {1, ARGV[2]}
"""


class AuditAppendFailed(RuntimeError):
    """The head kept moving under us for too long (pathological contention)."""



class RedisAuditLog:
    def __init__(self, redis: RedisClient, prefix: str = "gw:", *, chain_key: bytes,
                 per_subject_max: int = 1000, max_attempts: int = 200) -> None:
        self.chain_key = chain_key
        self._r = redis
        base = f"{prefix}{{audit}}:"
        self.stream_key = base + "log"
        self.head_key = base + "head"
        self._by = base + "by:"
        self._per_subject_max = per_subject_max
        self._max_attempts = max_attempts
        self._script = redis.register_script(APPEND_LUA)

    async def head(self) -> tuple[int, str]:
        raw = await self._r.get(self.head_key)
        if raw is None:
            return 0, GENESIS
        seq, h = text(raw).split(" ", 1)
        return int(seq), h

    async def append(self, event: Mapping[str, Any], ts: float) -> dict[str, Any]:
        seq, prev = await self.head()
        subject = event.get("subject") or ""
        for attempt in range(self._max_attempts):
            entry = chain_entry(event, seq + 1, ts, prev, self.chain_key)
            ok, cur = await self._script(
                keys=[self.stream_key, self.head_key, *([self._by + subject] if subject else [])],
                args=[f"{seq} {prev}", str(seq + 1), canonical_json(entry).decode("utf-8"),
                      GENESIS, entry["hash"], subject, str(self._per_subject_max)])
            if int(ok) == 1:
                return entry
            s, prev = text(cur).split(" ", 1)
            seq = int(s)
            if attempt > 3:
                await asyncio.sleep(random.uniform(0, 0.002))  # noqa: S311 - jitter only
        raise AuditAppendFailed("audit head contention")

    @staticmethod
    def _decode(fields: Any) -> dict[str, Any]:
        raw = fields.get(b"e", fields.get("e"))
        return dict(json.loads(text(raw)))

    async def entries(self, start_seq: int = 1, count: int = 1000) -> Sequence[dict[str, Any]]:
        rows = await self._r.xrange(self.stream_key, min=f"{max(1, start_seq)}-0", max="+",
                                    count=count)
        return [self._decode(f) for _, f in rows or ()]

    async def for_subject(self, subject: str, limit: int = 100) -> Sequence[dict[str, Any]]:
        seqs = await self._r.lrange(self._by + subject, -limit, -1)
        out: list[dict[str, Any]] = []
        for s in reversed(seqs):
            rows = await self._r.xrange(self.stream_key, min=f"{text(s)}-1",
                                        max=f"{text(s)}-1", count=1)
            out.extend(self._decode(f) for _, f in rows or ())
        return out

    async def ping(self) -> None:
        await self._r.ping()


def append_checkpoint(path: Path, checkpoint: str) -> None:
    """One line per checkpoint, appended with O_APPEND (a line is far below PIPE_BUF, so
    workers appending at once never interleave) and fsynced: it must outlive Redis."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, checkpoint.encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


class CheckpointExporter:
    """Every `interval_s`, while the head moved, sign it and append it to the checkpoint file
    (GATEWAY_AUDIT_CHECKPOINT_FILE): the anchor `gateway audit verify --checkpoint` uses."""

    def __init__(self, log: Any, signer: Any, issuer: str, path: Path, interval_s: float,
                 clock: Any) -> None:
        self._log, self._signer, self._issuer = log, signer, issuer
        self._path, self._interval, self._now = path, interval_s, clock
        self._last_seq = 0
        self._task: asyncio.Task[None] | None = None

    async def export_once(self) -> bool:
        got = await make_checkpoint(self._log, self._signer, self._issuer, self._now())
        if got is None or got[0] == self._last_seq:
            return False
        await asyncio.to_thread(append_checkpoint, self._path, got[1])
        self._last_seq = got[0]
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.export_once()
            except (OSError, ConnectionError, TimeoutError) as exc:
                log.warning("audit.checkpoint_failed", error=type(exc).__name__)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):   # a last one on the way out, best effort
            await self.export_once()


def _chain_key(settings: Any) -> bytes:
    from gateway.adapters.keyfiles import load_data_master_key
    from gateway.authz.datakeys import DataKeys

    master = load_data_master_key(settings.keys_dir, create=False,
                                  env_value=settings.data_key_b64)
    return DataKeys(master).audit_chain_key


def _token_ring(settings: Any) -> Any:
    from gateway.adapters.keyfiles import KeyRingFiles

    return KeyRingFiles(settings.keys_dir, "token").load()


async def _verify(settings: Any, checkpoint_file: Path | None) -> int:
    checkpoints = []
    if checkpoint_file is not None:
        try:
            lines = checkpoint_file.read_text("ascii").splitlines()
            checkpoints = read_checkpoints(lines, _token_ring(settings), settings.issuer)
        except (OSError, UnicodeDecodeError) as exc:
            print(f"audit checkpoints unreadable: {type(exc).__name__}")
            return 1
        except CheckpointInvalid as exc:
            print(f"audit checkpoint INVALID: {checkpoint_file.name} {exc}")
            return 1
        if not checkpoints:
            print(f"audit checkpoints: {checkpoint_file.name} holds none")
            return 1
    r = connect(settings.redis_url, cluster=settings.redis_cluster)
    try:
        ok, broken, checked = await verify_log(
            RedisAuditLog(r, settings.redis_prefix, chain_key=_chain_key(settings)),
            checkpoints=checkpoints)
    finally:
        await r.aclose()
    anchored = f", {len(checkpoints)} checkpoints held" if checkpoints else ""
    if ok:
        print(f"audit chain ok: {checked} entries{anchored}")
        return 0
    print(f"audit chain BROKEN at seq {broken} ({checked} entries verified before it)")
    return 1


async def _list(redis_url: str, prefix: str, cluster: bool, start: int, count: int,
                chain_key: bytes) -> int:
    r = connect(redis_url, cluster=cluster)
    try:
        log = RedisAuditLog(r, prefix, chain_key=chain_key)
        if start <= 0:  # the last `count` entries
            head_seq, _ = await log.head()
            start = max(1, head_seq - count + 1)
        for entry in await log.entries(start, count):
            print(json.dumps(entry, ensure_ascii=False, sort_keys=True))
    finally:
        await r.aclose()
    return 0


def audit_list_main(settings: Any, start: int = 0, count: int = 100) -> int:
    """`gateway audit list`: entries as JSON lines (the last `count`, or from seq `start`).
    The entries hold no personal data (subjects are keyed hashes); exit 2 without Redis."""
    if not settings.redis_url:
        print("no GATEWAY_REDIS_URL: the audit log is in memory only (sandbox); nothing to list")
        return 2
    return asyncio.run(_list(settings.redis_url, settings.redis_prefix, settings.redis_cluster,
                             start, max(1, min(count, 10_000)), b""))


def audit_verify_main(settings: Any, checkpoint_file: Path | None = None) -> int:
    """`gateway audit verify [--checkpoint FILE]`: check the whole chain (keyed hashes) and
    its head, and — given a file of signed checkpoints — that the chain still holds each of
    them; print the first broken link. Exit 0 = intact, 1 = broken (or a checkpoint that
    does not verify), 2 = nothing durable to verify (no Redis configured)."""
    if not settings.redis_url:
        print("no GATEWAY_REDIS_URL: the audit log is in memory only (sandbox); nothing to verify")
        return 2
    return asyncio.run(_verify(settings, checkpoint_file))


async def _checkpoint(settings: Any, out: Path | None) -> int:
    import time

    from gateway.authz.tokens import JwtSigner

    ring = _token_ring(settings)
    signer = JwtSigner(lambda: ring, time.time)
    r = connect(settings.redis_url, cluster=settings.redis_cluster)
    try:
        got = await make_checkpoint(RedisAuditLog(r, settings.redis_prefix, chain_key=b""),
                                    signer, settings.issuer, time.time())
    finally:
        await r.aclose()
    if got is None:
        print("audit log empty: no checkpoint")
        return 1
    if out is None:
        print(got[1])
    else:
        append_checkpoint(out, got[1])
        print(f"audit checkpoint at seq {got[0]} appended to {out.name}")
    return 0


def audit_checkpoint_main(settings: Any, out: Path | None = None) -> int:
    """`gateway audit checkpoint [--out FILE]`: sign the current head (token key ring) and
    append it to FILE (or print it) — keep that file away from Redis (WORM storage)."""
    if not settings.redis_url:
        print("no GATEWAY_REDIS_URL: the audit log is in memory only (sandbox)")
        return 2
    return asyncio.run(_checkpoint(settings, out))
