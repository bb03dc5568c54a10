"""Reference servers for the benchmark (loadtests/bench.py), run like the gateway: N worker
processes sharing one port (SO_REUSEPORT), each on uvloop, no access log.

* ``noop``  — aiohttp POST that reads the body and answers a small JSON: the ceiling of the
  HTTP stack on this machine (the baseline every ratio is against).
* ``bare``  — the "decode + verify + SET NX" handler the issue asks for as the verify path's
  reference: parse the JSON body, verify the code with the codec (Ed25519 on libsodium through
  the gateway's trust list), claim its nonce with one ``SET … NX PX`` coalesced per loop tick
  (gateway.adapters.redis_store.Coalescer), answer allow/deny. No auth, no policy, no metrics.

    python -m loadtests.servers noop --port 8101 --workers 2
    python -m loadtests.servers bare --port 8102 --workers 2 --keys-dir keys \
        --redis redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import signal
from pathlib import Path
from typing import Any

from aiohttp import web


def noop_app() -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b'{"ok":true}', content_type="application/json")

    app = web.Application()
    app.router.add_post("/noop", handler)
    return app


def bare_app(keys_dir: Path, redis_url: str) -> web.Application:
    from gateway.adapters.keyfiles import KeyRingFiles
    from gateway.adapters.redis_store import Coalescer, connect
    from gateway.clock import SystemClock
    from gateway.codec import CodeError, verify_code
    from gateway.services.trustlist import TrustList

    clock = SystemClock()
    code_ring = KeyRingFiles(keys_dir, "code").load()
    token_ring = KeyRingFiles(keys_dir, "token").load()
    trust = TrustList(lambda: code_ring, lambda: token_ring, clock.now)
    state: dict[str, Any] = {}

    async def ctx(app: web.Application) -> Any:
        redis = connect(redis_url)
        state["c"] = Coalescer(redis)
        yield
        await state["c"].aclose()
        await redis.aclose()

    async def handler(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        now = clock.now()
        try:
            claims = verify_code(body["code"], trust.lookup, now, 5)
        except CodeError as exc:
            return web.json_response({"decision": "deny", "reason": exc.reason})
        prev = await state["c"].execute("SET", b"bare:" + claims.nonce, b"1", "NX", "PX",
                                        90_000, "GET", get=True)
        if prev is not None:
            return web.json_response({"decision": "deny", "reason": "replayed"})
        return web.json_response({"decision": "allow", "reason": "ok",
                                  "request_id": body.get("request_id")})

    app = web.Application()
    app.cleanup_ctx.append(ctx)
    app.router.add_post("/verify", handler)
    return app


async def _serve(kind: str, host: str, port: int, keys_dir: str, redis_url: str) -> None:
    app = noop_app() if kind == "noop" else bare_app(Path(keys_dir), redis_url)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=True, backlog=2048)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def _worker(kind: str, host: str, port: int, keys_dir: str, redis_url: str) -> None:
    import uvloop

    uvloop.run(_serve(kind, host, port, keys_dir, redis_url))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.servers")
    p.add_argument("kind", choices=["noop", "bare"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--keys-dir", default="keys")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    a = p.parse_args(argv)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(a.kind, a.host, a.port, a.keys_dir, a.redis))
             for _ in range(a.workers)]
    for proc in procs:
        proc.start()

    def stop(_sig: int, _frame: object) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for proc in procs:
        proc.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
