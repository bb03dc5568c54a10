"""The gate path's pipelined RESP socket (gateway/adapters/resp.py) against real redis-servers:
replies in order, errors per command, AUTH/SELECT, a Redis that dies, restarts or stops
answering. Every server here is this test's own (private port), so it may kill it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import hypothesis.strategies as st
import pytest
import redis.asyncio as aioredis
import redis.exceptions
from hypothesis import HealthCheck, given, settings

from gateway.adapters.redis_store import Coalescer, connect
from gateway.adapters.resp import RespPipe, pack_command
from tests.redis_server import RedisServer


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


def test_pack_command_is_a_resp_array_of_bulk_strings() -> None:
    assert pack_command(("SET", b"k\r\n", 5, "ü")) == (
        b"*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$1\r\n5\r\n$2\r\n\xc3\xbc\r\n")
    with pytest.raises(TypeError):
        pack_command(("SET", "k", True))
    with pytest.raises(TypeError):
        pack_command(("SET", "k", None))


async def test_replies_are_raw_resp_values_and_errors_are_per_command(redis_url: str) -> None:
    pipe = RespPipe.from_connection_kwargs(
        dict(aioredis.ConnectionPool.from_url(redis_url).connection_kwargs))
    try:
        key = f"resp:{time.monotonic_ns()}"
        got = await asyncio.gather(
            pipe.execute("SET", key, "v", "NX", "PX", 5000, "GET"),
            pipe.execute("SET", key, "w", "NX", "PX", 5000, "GET"),
            pipe.execute("EVALSHA", "0" * 40, 0),
            pipe.execute("HGET", key, "f"),           # WRONGTYPE: only this one fails
            pipe.execute("EVAL", "return {1, 'x', false}", 0),
            pipe.execute("GET", key),
            return_exceptions=True)
        assert got[0] is None and got[1] == b"v"
        assert isinstance(got[2], redis.exceptions.NoScriptError)
        assert isinstance(got[3], redis.exceptions.ResponseError)
        assert not isinstance(got[3], redis.exceptions.NoScriptError)
        assert got[4] == [1, b"x", None]
        assert got[5] == b"v"
    finally:
        await pipe.aclose()


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.binary(max_size=300), min_size=1, max_size=200))
async def test_each_concurrent_caller_gets_its_own_reply(redis_url: str,
                                                          values: list[bytes]) -> None:
    """Hundreds of commands in one tick, values of any bytes: reply i belongs to command i."""
    pipe = RespPipe.from_connection_kwargs(
        dict(aioredis.ConnectionPool.from_url(redis_url).connection_kwargs))
    try:
        base = f"resp:p:{time.monotonic_ns()}:"
        await asyncio.gather(*(pipe.execute("SET", f"{base}{i}", v, "PX", 5000)
                               for i, v in enumerate(values)))
        got = await asyncio.gather(*(pipe.execute("GET", f"{base}{i}")
                                     for i in range(len(values))))
        assert got == values
    finally:
        await pipe.aclose()


async def test_big_batches_flush_past_the_buffer_limit(redis_url: str) -> None:
    pipe = RespPipe.from_connection_kwargs(
        dict(aioredis.ConnectionPool.from_url(redis_url).connection_kwargs))
    try:
        big = os.urandom(40_000)
        key = f"resp:big:{time.monotonic_ns()}"
        futs = [pipe.execute("SET", f"{key}:{i}", big, "PX", 5000) for i in range(10)]
        assert await asyncio.gather(*futs) == [b"OK"] * 10
        assert await pipe.execute("GET", f"{key}:9") == big
    finally:
        await pipe.aclose()


async def test_auth_and_select_come_from_the_url() -> None:
    server = RedisServer(extra_args=["--requirepass", "s3cret-pw"]).start()
    try:
        good = connect(f"redis://:s3cret-pw@127.0.0.1:{server.port}/5")
        c = Coalescer(good)
        assert c.pipelined
        await c.execute("SET", "where", "db5")
        assert await good.get("where") == b"db5"            # redis-py sees it in db 5
        other = aioredis.from_url(f"redis://:s3cret-pw@127.0.0.1:{server.port}/0")
        assert await other.get("where") is None
        await other.aclose()
        await c.aclose()
        await good.aclose()

        bad = Coalescer(connect(f"redis://:wrong@127.0.0.1:{server.port}/0"))
        with pytest.raises(redis.exceptions.AuthenticationError):
            await bad.execute("GET", "where")
        await bad.aclose()
    finally:
        server.stop()


async def _recovered(pipe: RespPipe, within_s: float = 3.0) -> float:
    """Seconds until the pipe answers again (it reconnects in the background, issue 12)."""
    t0 = time.monotonic()
    while True:
        try:
            assert await pipe.execute("PING") == b"PONG"
            return time.monotonic() - t0
        except redis.exceptions.ConnectionError:
            assert time.monotonic() - t0 < within_s, "the pipe did not reconnect"
            await asyncio.sleep(0.02)


async def test_refused_connection_fails_the_command_then_recovers(own_redis: RedisServer) -> None:
    port = own_redis.port
    own_redis.stop()
    pipe = RespPipe(port=port, connect_timeout_s=1)
    try:
        with pytest.raises(redis.exceptions.ConnectionError):
            await pipe.execute("PING")
        # down: the next commands fail at once, without a connection attempt each
        t0 = time.monotonic()
        for _ in range(100):
            with pytest.raises(redis.exceptions.ConnectionError):
                await pipe.execute("PING")
        assert time.monotonic() - t0 < 0.5
        own_redis.start()
        assert await _recovered(pipe) < 1.5   # retries back off to at most 0.5 s
        assert pipe.reconnects >= 1
    finally:
        await pipe.aclose()


async def test_a_killed_redis_fails_waiting_commands_and_a_restart_is_picked_up(
        own_redis: RedisServer) -> None:
    pipe = RespPipe(port=own_redis.port, reply_timeout_s=2)
    try:
        assert await pipe.execute("SET", "k", "1") == b"OK"
        # a command Redis never answers (it is killed while blocked in it)
        blocked = pipe.execute("BLPOP", "never", 0)
        await asyncio.sleep(0.2)
        assert own_redis.proc is not None
        own_redis.proc.kill()
        own_redis.proc.wait()
        with pytest.raises(redis.exceptions.ConnectionError):
            await blocked
        own_redis.start()  # same port, empty (no persistence)
        await _recovered(pipe)
        assert await pipe.execute("GET", "k") is None
        assert await pipe.execute("SET", "k", "2") == b"OK"
    finally:
        await pipe.aclose()


async def test_a_redis_that_stops_answering_fails_within_the_reply_timeout(
        own_redis: RedisServer) -> None:
    pipe = RespPipe(port=own_redis.port, reply_timeout_s=0.15, connect_timeout_s=0.15)
    assert own_redis.proc is not None
    try:
        assert await pipe.execute("PING") == b"PONG"
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError):
            await asyncio.wait_for(pipe.execute("PING"), 5)
        # the watchdog looks every quarter of the timeout: within 1.25 x 150 ms (+ margin)
        assert time.monotonic() - t0 < 0.25
        # then down: commands fail at once while the background reconnection cannot PING
        t1 = time.monotonic()
        with pytest.raises(redis.exceptions.ConnectionError):
            await pipe.execute("PING")
        assert time.monotonic() - t1 < 0.05
        os.kill(own_redis.proc.pid, signal.SIGCONT)
        await _recovered(pipe)   # a fresh connection
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
        await pipe.aclose()


async def test_a_closed_pipe_refuses_commands(redis_url: str) -> None:
    pipe = RespPipe.from_connection_kwargs(
        dict(aioredis.ConnectionPool.from_url(redis_url).connection_kwargs))
    assert await pipe.execute("PING") == b"PONG"
    await pipe.aclose()
    with pytest.raises(redis.exceptions.ConnectionError):
        await pipe.execute("PING")


def test_tls_and_cluster_keep_redis_py() -> None:
    assert not Coalescer(connect("rediss://127.0.0.1:1/0")).pipelined
    assert Coalescer(connect("redis://127.0.0.1:1/0")).pipelined
    assert Coalescer(connect("unix:///tmp/nowhere.sock")).pipelined
