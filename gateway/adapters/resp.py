"""A pipelined RESP connection for the gate path (issue 7): one socket per worker, commands
queued during a loop tick written in ONE send, replies matched in order by hiredis's C parser.

Why not redis-py here: per command, redis-py's pipeline costs tens of µs of Python (command
packing, a pooled connection checked out and back, response callbacks, a retry wrapper) for a
`SET … NX PX … GET` that Redis itself answers in about 1 µs. At peak the verify path sends one
command per request, so that client cost was one of the largest blocks of the worker's CPU
(docs/performance.md). This protocol does only what the hot path needs:

* ``execute(*args)`` packs the command, appends it to the tick's buffer and returns a future;
  the buffer is flushed once per loop tick (or at 64 KiB), so N concurrent requests cost one
  ``send`` and one ``recv``;
* replies are parsed by ``hiredis.Reader`` and resolve the waiting futures first in, first
  out (Redis answers a connection's commands in order); an error reply fails only its own
  future, as the matching ``redis.exceptions`` class (e.g. ``NoScriptError``);
* nothing is retried: a command whose connection dies before its reply may or may not have
  run (a ``SET NX`` may have claimed), so its caller gets ``redis.exceptions.ConnectionError``
  and answers 503;
* a reply that does not come within ``reply_timeout_s`` aborts the connection (every waiting
  command fails) instead of letting gates hang: the watchdog looks every quarter of it, so a
  frozen Redis (SIGSTOP) fails its commands within 1.25 × the timeout (issue 12: 150 ms by
  default, 503 within 250 ms);
* after a lost or failed connection the pipe is *down*: commands fail at once (no caller waits
  for a connect timeout) while a background task reconnects (50 ms, doubling to 500 ms);
* ``AUTH`` and ``SELECT`` from the URL, then ``PING``, are sent first on every new connection
  (the PING proves Redis answers: a frozen one still completes the TCP handshake).

Replies are raw RESP2 values: bulk strings as ``bytes``, status replies as ``bytes`` (``b"OK"``),
integers, lists and ``None`` — the same values redis-py returns for the commands the gate path
sends (GET, SET … GET, HGET, EVALSHA).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Final, cast

import hiredis
import redis.exceptions

__all__ = ["RespPipe", "pack_command"]

FLUSH_AT_BYTES: Final = 64 * 1024

_ERRORS: Final[tuple[tuple[str, type[redis.exceptions.RedisError]], ...]] = (
    ("NOSCRIPT", redis.exceptions.NoScriptError),
    ("LOADING", redis.exceptions.BusyLoadingError),
    ("READONLY", redis.exceptions.ReadOnlyError),
    ("NOAUTH", redis.exceptions.AuthenticationError),
    ("WRONGPASS", redis.exceptions.AuthenticationError),
    ("NOPERM", redis.exceptions.NoPermissionError),
    ("OOM", redis.exceptions.OutOfMemoryError),
)


def _error(message: str) -> redis.exceptions.RedisError:
    for prefix, cls in _ERRORS:
        if message.startswith(prefix):
            return cls(message)
    return redis.exceptions.ResponseError(message)


def _connect_error(exc: BaseException) -> redis.exceptions.RedisError:
    if isinstance(exc, redis.exceptions.RedisError):
        return exc
    return redis.exceptions.ConnectionError(f"Cannot connect to Redis: {type(exc).__name__}")


class _ReplyError(Exception):
    """What hiredis makes of an error reply (then mapped by `_error`)."""


def _arg(a: Any) -> bytes:
    if isinstance(a, bytes):
        return a
    if isinstance(a, str):
        return a.encode("utf-8")
    if isinstance(a, bool):
        raise TypeError("a bool is not a Redis argument")
    if isinstance(a, int):
        return b"%d" % a
    if isinstance(a, float):
        return repr(a).encode("ascii")
    if isinstance(a, memoryview | bytearray):
        return bytes(a)
    raise TypeError(f"cannot send {type(a).__name__} to Redis")


def pack_command(args: tuple[Any, ...]) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        t = type(a)  # the gate path sends str and int: those first, without isinstance chains
        if t is str:
            b = a.encode("utf-8")
        elif t is int:
            b = b"%d" % a
        else:
            b = _arg(a)
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


class _Protocol(asyncio.Protocol):
    def __init__(self, pipe: RespPipe) -> None:
        self._pipe = pipe
        self._reader = hiredis.Reader(replyError=_ReplyError)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._pipe._waiting
        pipe = self._pipe
        pipe._progress = pipe._loop.time() if pipe._loop is not None else 0.0
        try:
            while True:
                reply = reader.gets()
                if reply is False:
                    return
                if not waiting:
                    raise hiredis.ProtocolError("a reply nobody asked for")
                fut = waiting.popleft()
                if fut.done():
                    continue
                if isinstance(reply, _ReplyError):
                    fut.set_exception(_error(str(reply)))
                else:
                    fut.set_result(reply)
        except hiredis.ProtocolError as exc:
            pipe._lost(redis.exceptions.ConnectionError(f"Redis protocol error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._pipe._proto is not self:  # already given up on (timeout, close, bad hello)
            return
        self._pipe._lost(redis.exceptions.ConnectionError(
            "Connection to Redis lost" if exc is None else f"Connection to Redis lost: {exc}"))


class RespPipe:
    """One pipelined connection to one Redis node (TCP or a unix socket). Not for Cluster:
    `gateway.adapters.redis_store.Coalescer` keeps redis-py for that."""

    #: background reconnection: first retry after this, doubling up to RETRY_MAX_S
    RETRY_MIN_S: Final = 0.05
    RETRY_MAX_S: Final = 0.5

    def __init__(self, *, host: str = "127.0.0.1", port: int = 6379, path: str | None = None,
                 db: int = 0, username: str | None = None, password: str | None = None,
                 connect_timeout_s: float = 5.0, reply_timeout_s: float = 5.0) -> None:
        self._host, self._port, self._path = host, port, path
        self._connect_timeout = connect_timeout_s
        self._reply_timeout = reply_timeout_s
        self._hello: list[bytes] = []
        if password is not None:
            auth = ("AUTH", username, password) if username else ("AUTH", password)
            self._hello.append(pack_command(auth))
        if db:
            self._hello.append(pack_command(("SELECT", db)))
        self._loop: asyncio.AbstractEventLoop | None = None  # bound on first use
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._out_futs: list[asyncio.Future[Any]] = []
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._flush_scheduled = False
        self._progress = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._watch_due = 0.0
        self._late_passes = 0
        self._closed = False
        self._down = False  # a connection failed: commands fail at once until _revive is in
        self._reviver: asyncio.Task[None] | None = None
        self.reconnects = 0
        self._hello.append(pack_command(("PING",)))

    @classmethod
    def from_connection_kwargs(cls, kw: dict[str, Any]) -> RespPipe:
        """From a redis-py pool's `connection_kwargs` (the same URL, parsed by redis-py)."""
        timeout = kw.get("socket_timeout") or 5.0
        return cls(host=kw.get("host", "127.0.0.1"), port=int(kw.get("port", 6379)),
                   path=kw.get("path"), db=int(kw.get("db") or 0),
                   username=kw.get("username"), password=kw.get("password"),
                   # one connection per worker, no burst of them: the reply timeout bounds
                   # its connect as well (the pool's own connect timeout is longer)
                   connect_timeout_s=min(kw.get("socket_connect_timeout") or 5.0,
                                         float(timeout)),
                   reply_timeout_s=float(timeout))

    # ------------------------------------------------------------ commands

    def execute(self, *args: Any) -> asyncio.Future[Any]:
        """Queue one command; its future resolves to the reply (or fails with its error)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if self._closed:
            fut.set_exception(redis.exceptions.ConnectionError("The Redis pipe is closed"))
            return fut
        if self._down:  # answered at once: the caller's 503 does not wait for a timeout
            fut.set_exception(redis.exceptions.ConnectionError(
                "Redis is unreachable (reconnecting in the background)"))
            return fut
        data = pack_command(args)
        self._out.append(data)
        self._out_futs.append(fut)
        self._out_bytes += len(data)
        if self._proto is None:
            if self._connecting is None:
                self._connecting = loop.create_task(self._connect())
        elif self._out_bytes >= FLUSH_AT_BYTES:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return fut

    def _flush(self) -> None:
        self._flush_scheduled = False
        proto = self._proto
        if proto is None or proto.transport is None or not self._out:
            return
        if not self._waiting:
            self._progress = self._loop.time()  # type: ignore[union-attr]
        self._waiting.extend(self._out_futs)
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out, self._out_futs, self._out_bytes = [], [], 0
        proto.transport.write(data)
        if self._watchdog is None:
            self._arm_watchdog()

    def _watch(self) -> None:
        """Abort the connection when replies are owed and none came for reply_timeout_s.

        Not when this watchdog itself runs late: then the worker's own loop was busy (a long
        callback, a starved CPU), replies may be waiting unread in the socket (uvloop runs
        due timers before it polls I/O), and Redis gets another look, once the loop is back."""
        self._watchdog = None
        if not self._waiting or self._proto is None:
            return
        loop = self._loop
        assert loop is not None
        now = loop.time()
        late = now - self._watch_due > self._reply_timeout / 4 and self._late_passes < 3
        self._late_passes = self._late_passes + 1 if late else 0
        if not late and now - self._progress > self._reply_timeout:
            self._lost(redis.exceptions.TimeoutError("Redis did not answer in time"))
            return
        self._arm_watchdog()

    def _arm_watchdog(self) -> None:
        loop = self._loop
        assert loop is not None
        self._watch_due = loop.time() + self._reply_timeout / 4
        self._watchdog = loop.call_at(self._watch_due, self._watch)

    # ------------------------------------------------------------ connection

    async def _connect(self) -> None:
        """The first connection: the commands queued meanwhile go out once it is up."""
        try:
            await self._open()
        except asyncio.CancelledError:
            self._fail_queued(redis.exceptions.ConnectionError("Redis connection cancelled"))
            raise
        except (OSError, TimeoutError, redis.exceptions.RedisError) as exc:
            self._fail_queued(_connect_error(exc))
            self._go_down()
            return
        finally:
            self._connecting = None
        self._flush()

    async def _open(self) -> None:
        """Connect, send the hello (AUTH, SELECT, PING) and wait for its replies, all within
        the timeouts; the PING proves Redis answers (a frozen Redis still completes the TCP
        handshake from its listen backlog). Raises on any failure, connection aborted."""
        loop = self._loop
        assert loop is not None
        if self._path is not None:
            coro = loop.create_unix_connection(lambda: _Protocol(self), self._path)
        else:
            coro = loop.create_connection(lambda: _Protocol(self), self._host, self._port)
        async with asyncio.timeout(self._connect_timeout):
            _, proto = await coro
        hello = [loop.create_future() for _ in self._hello]
        self._waiting.extend(hello)
        self._progress = loop.time()
        assert proto.transport is not None
        proto.transport.write(b"".join(self._hello))
        self._proto = proto  # replies to the hello arrive through it
        try:
            async with asyncio.timeout(self._reply_timeout):
                for f in hello:
                    await f
        except BaseException as exc:
            err = exc if isinstance(exc, redis.exceptions.RedisError) else \
                redis.exceptions.TimeoutError("Redis did not answer the hello in time")
            if self._proto is proto:
                self._lost(err, reconnect=False)
            raise

    def _go_down(self) -> None:
        """Redis is unreachable: fail commands at once and reconnect in the background."""
        if self._closed:
            return
        self._down = True
        if self._reviver is None and self._loop is not None:
            self._reviver = self._loop.create_task(self._revive())

    async def _revive(self) -> None:
        delay = self.RETRY_MIN_S
        try:
            while not self._closed:
                await asyncio.sleep(delay)
                try:
                    await self._open()
                except (OSError, TimeoutError, redis.exceptions.RedisError):
                    delay = min(delay * 2, self.RETRY_MAX_S)
                    continue
                self._down = False
                self.reconnects += 1
                return
        finally:
            self._reviver = None

    def _fail_queued(self, exc: Exception) -> None:
        futs, self._out_futs = self._out_futs, []
        self._out, self._out_bytes = [], 0
        for f in futs:
            if not f.done():
                f.set_exception(exc)

    def _lost(self, exc: Exception, *, reconnect: bool = True) -> None:
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None and \
                not proto.transport.is_closing():
            proto.transport.abort()
        waiting, self._waiting = self._waiting, deque()
        for f in waiting:
            if not f.done():
                f.set_exception(exc)
        if self._connecting is None:
            self._fail_queued(exc)
        if reconnect and (proto is not None or waiting):
            self._go_down()

    async def ping(self) -> None:
        if await self.execute("PING") != b"PONG":
            raise redis.exceptions.ResponseError("unexpected PING reply")

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._reviver is not None:
            self._reviver.cancel()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._lost(redis.exceptions.ConnectionError("The Redis pipe is closed"))
