"""`gateway` — the operator's command: serve, keys, clients, gates, audit, identity,
transactions.

`gateway serve --workers N` runs N processes sharing one port (SO_REUSEPORT), each on uvloop;
SIGTERM/SIGINT stop accepting, drain in-flight requests for up to GATEWAY_SHUTDOWN_TIMEOUT_S,
then exit. Every command reads the same GATEWAY_* settings as the server.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway.adapters.keyfiles import KeyFileError
from gateway.settings import Settings, SettingsError
from gateway.timefmt import rfc3339_s


def _settings(args: argparse.Namespace) -> Settings:
    s = Settings.from_env()
    over: dict[str, Any] = {}
    if getattr(args, "workers", None):
        over["workers"] = args.workers
    if getattr(args, "port", None) is not None:
        over["port"] = args.port
    if getattr(args, "host", None):
        over["host"] = args.host
    return replace(s, **over) if over else s


# ---------------------------------------------------------------- serve
async def _serve_worker(settings: Settings) -> None:
    import structlog
    from aiohttp import web

    from gateway.app import build_app
    from gateway.web import lane
    from gateway.web.edge import edge_runner

    log = structlog.get_logger("gateway.serve")
    app = build_app(settings)
    # the edge (issue 12): header/body/keep-alive timeouts, per-address connection caps, our
    # answer to malformed requests
    runner = edge_runner(app, settings, access_log=None, handle_signals=False,
                         shutdown_timeout=settings.shutdown_timeout_s)
    await runner.setup()
    lane.install(runner)  # the gate's verification skips the router's dispatch (issue 7)
    site = web.TCPSite(runner, settings.host, settings.port, reuse_port=True, backlog=2048)
    await site.start()
    # Everything built at start-up lives as long as the worker: move it out of the cyclic
    # collector's sight, so full collections under load scan only what requests create.
    gc.collect()
    gc.freeze()
    # A request allocates a few hundred objects; the default gen-0 threshold (700) ran a
    # collection every couple of requests. 100 000 runs one every few hundred requests
    # (a few MB of young objects at most): worker CPU per allowed verification -7 % in two
    # interleaved A/B pairs (367 -> 341 and 488 -> 451 µs; the box's spread is wider than that
    # between pairs, not within one).
    gc.set_threshold(100_000, 50, 1000)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("server.started", host=settings.host, port=settings.port, env=settings.env,
             stores="redis" if settings.redis_url else "memory")
    await stop.wait()
    log.info("server.draining", timeout_s=settings.shutdown_timeout_s)
    await runner.cleanup()
    log.info("server.stopped")


def _worker_main(settings: Settings) -> None:
    import uvloop

    from gateway.logs import configure

    configure(settings.log_format, settings.log_level)
    uvloop.run(_serve_worker(settings))


async def _serve_exporter(settings: Settings) -> None:
    """The exporter process beside the workers (docs/records.md "The exporter process"): the
    same app, started without a listening socket, so its records capability runs the
    exporter (and nothing serves HTTP here)."""
    import structlog
    from aiohttp import web

    from gateway.app import build_app

    log = structlog.get_logger("gateway.serve")
    runner = web.AppRunner(build_app(settings), handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("exporter.started", nice=settings.transactions_exporter_nice)
    await stop.wait()
    await runner.cleanup()
    log.info("exporter.stopped")


def _exporter_main(settings: Settings) -> None:
    import os

    import uvloop

    from gateway.logs import configure

    # first, so that every thread the process makes inherits it: at peak the verifying
    # workers get the CPU and the outbox absorbs the records; the exporter drains after
    os.nice(settings.transactions_exporter_nice)
    configure(settings.log_format, settings.log_level)
    uvloop.run(_serve_exporter(settings))


def _own_exporter(settings: Settings) -> bool:
    """Whether `serve` runs the exporter in a process of its own: several workers, a Redis
    outbox and a PostgreSQL store (the memory store lives inside a worker, so it keeps its
    exporter there)."""
    return (settings.workers > 1 and bool(settings.redis_url) and bool(settings.database_url)
            and settings.transactions_enabled and settings.transactions_exporter_process)


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.app import ensure_keys
    from gateway.clock import SystemClock
    from gateway.logs import configure

    settings = _settings(args)
    if settings.workers > 1 and not settings.redis_url:
        print("gateway: several workers need GATEWAY_REDIS_URL: in-memory stores live inside "
              "one process, so single use would not hold across workers", file=sys.stderr)
        return 2
    configure(settings.log_format, settings.log_level)
    # before forking: one process creates dev keys; local checks (keys) before the network's
    ensure_keys(settings, SystemClock())
    if not settings.is_sandbox and settings.redis_url:
        problem = _persistence_problem(settings)   # issue 12: refuse, before any worker
        if problem:
            print(f"gateway: {problem}", file=sys.stderr)
            return 2
    if settings.workers > 1:  # issue 15: the workers' metric snapshots, summed per scrape
        import tempfile
        from pathlib import Path

        from gateway.web.server_metrics import clear_snapshots

        if settings.metrics_dir is None:
            settings = replace(settings, metrics_dir=Path(
                tempfile.mkdtemp(prefix="gateway-metrics-")))
        assert settings.metrics_dir is not None
        clear_snapshots(settings.metrics_dir)
    print(f"gateway: serving {settings.env} on http://{settings.host}:{settings.port} "
          f"({settings.workers} worker{'s' if settings.workers > 1 else ''}, "
          f"stores: {'redis' if settings.redis_url else 'memory'}"
          f"{', an exporter process' if _own_exporter(settings) else ''})",
          file=sys.stderr, flush=True)
    if settings.workers == 1:
        _worker_main(settings)
        return 0
    return _supervise(settings)


def _persistence_problem(settings: Settings) -> str | None:
    """Why this Redis may not serve production (docs/operations.md), or None."""
    from gateway.adapters.redis_store import connect
    from gateway.app import require_persistence

    async def check() -> str | None:
        assert settings.redis_url is not None
        redis = connect(settings.redis_url, cluster=settings.redis_cluster,
                        timeout_s=max(1.0, settings.redis_timeout_s))
        try:
            await require_persistence(redis)
        except SettingsError as exc:
            return str(exc)
        finally:
            await redis.aclose()
        return None

    return asyncio.run(check())


def _supervise(settings: Settings) -> int:
    """Start N workers (and the exporter process, when it has one); restart one that dies; on
    SIGTERM/SIGINT pass it on and wait."""
    ctx = multiprocessing.get_context("spawn")
    procs: list[Any] = []
    stopping = False
    exporter = _own_exporter(settings)
    worker_settings = replace(settings, exporter_here=not exporter)
    # it answers no HTTP: no request-counter snapshot, but its records counters (exported,
    # export failures) go to the metrics directory, summed by whichever worker is scraped
    exporter_settings = replace(settings, exporter_here=True, serves_http=False)

    def start_one(role: str = "worker") -> Any:
        target, s = (_exporter_main, exporter_settings) if role == "exporter" else \
            (_worker_main, worker_settings)
        p = ctx.Process(target=target, args=(s,), daemon=False, name=role)
        p.start()
        return p

    def on_signal(signum: int, _: Any) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: the worker drains, then exits

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    procs.extend(start_one() for _ in range(settings.workers))
    if exporter:
        procs.append(start_one("exporter"))
    while True:
        time.sleep(0.2)
        if stopping:
            deadline = time.monotonic() + settings.shutdown_timeout_s + 5
            for p in procs:
                p.join(max(0.0, deadline - time.monotonic()))
                if p.is_alive():
                    p.kill()
            return 0
        for i, p in enumerate(procs):
            if not p.is_alive():
                print(f"gateway: {p.name} {p.pid} exited with {p.exitcode}; restarting",
                      file=sys.stderr, flush=True)
                time.sleep(0.5)
                procs[i] = start_one(p.name)


# ---------------------------------------------------------------- keys
def cmd_keys(args: argparse.Namespace) -> int:
    from gateway.adapters.keyfiles import (
        KeyRingFiles,
        load_data_master_key,
        record_subject_suite,
    )

    settings = _settings(args)
    # "oidc": the gm suite's ES256 ID-token ring (docs/oidc.md "Algorithms"); "trust": the
    # trust-list key (docs/offline.md)
    everything = ["token", "code", "trust"] + (
        ["oidc"] if settings.crypto_suite == "gm"
        or KeyRingFiles(settings.keys_dir, "oidc").exists() else [])
    purposes = everything if args.purpose == "all" else [args.purpose]
    now = time.time()
    if args.keys_cmd == "trust-anchor":
        return _trust_anchor(settings)
    if args.keys_cmd == "generate":
        fresh = not any(KeyRingFiles(settings.keys_dir, p).exists() for p in ("token", "code"))
        for p in purposes:
            files = KeyRingFiles(settings.keys_dir, p)
            if files.exists() and not args.force:
                print(f"{p}: ring exists at {files.dir} (use `gateway keys rotate`)")
                continue
            from gateway.app import suite_algs
            from gateway.authz.keyring import Alg, bootstrap

            token_alg, code_alg = suite_algs(settings)
            alg: Alg = args.alg or {"token": token_alg, "code": code_alg,
                                    "trust": code_alg}.get(p, "ES256")
            with files._locked():
                files.save(bootstrap(p, alg, now))
            print(f"{p}: generated a new {alg} ring in {files.dir}")
        load_data_master_key(settings.keys_dir, create=True)
        if fresh:  # a new deployment: pairwise subjects in its suite, for good
            record_subject_suite(settings.keys_dir, settings.crypto_suite)
        return 0
    if args.keys_cmd == "rotate":
        for p in purposes:
            # A retired key must verify everything it signed: the longest lifetime it issues.
            max_life = args.max_lifetime_s or (
                max(settings.gate_token_ttl_s, settings.access_token_ttl_s, 86400 * 30)
                if p in ("token", "oidc") else settings.trust_list_max_age_s if p == "trust"
                else settings.code_ttl_s + settings.code_max_skew_s + 60)
            if p == "code" and not args.max_lifetime_s:  # it signed device certificates too
                max_life = max(max_life, settings.device_cert_ttl_s + settings.code_max_skew_s
                               + 60)
            ring = KeyRingFiles(settings.keys_dir, p).rotate(now, max_life, args.alg)
            print(f"{p}: current key is now {ring.current().kid}")
            asyncio.run(_host_audit(settings, "keys.rotated", f"keys:{p}",
                                    kid=ring.current().kid))
        return 0
    for p in purposes:
        files = KeyRingFiles(settings.keys_dir, p)
        if not files.exists():
            print(f"{p}: no ring")
            continue
        for k in files.load().keys:
            until = ""
            if k.verify_until:
                stamp = rfc3339_s(k.verify_until)
                until = f" verifies until {stamp}"
            print(f"{p}\t{k.kid}\t{k.alg}\t{k.state}{until}")
    return 0


def _trust_anchor(settings: Settings) -> int:
    """The trust-list key a gate pins (docs/offline.md §2): the current key's public JWK, to be
    carried to gates out of band (provisioning image, vendor portal, a signed config file)."""
    import json

    from gateway.adapters.keyfiles import KeyRingFiles
    from gateway.services.trustlist import trust_anchor_jwk

    print(json.dumps(trust_anchor_jwk(KeyRingFiles(settings.keys_dir, "trust").load()),
                     sort_keys=True))
    return 0


# ---------------------------------------------------------------- clients / gates
async def _client_store(settings: Settings) -> Any:
    from gateway.adapters.redis_store import RedisClientStore, connect

    if not settings.redis_url:
        raise SettingsError("client registration needs GATEWAY_REDIS_URL (the sandbox's "
                            "in-memory stores live inside the server process)")
    redis = connect(settings.redis_url)
    return redis, RedisClientStore(redis, settings.redis_prefix)


async def _clients(args: argparse.Namespace, kind_filter: str | None) -> int:
    from gateway.errors import GatewayError
    from gateway.services import registry

    settings = _settings(args)
    if args.sub != "list":
        _audit_ready(settings)
    redis, store = await _client_store(settings)
    try:
        if args.sub == "list":
            for c in await registry.list_clients(store, kind_filter):
                if kind_filter is None and c.kind == "gate":
                    continue
                print(json.dumps(registry.public_view(c), ensure_ascii=False))
            return 0
        if args.sub == "disable":
            await registry.set_disabled(store, args.client_id, True)
            await _host_audit(settings, "client.disabled", f"client:{args.client_id}")
            print(f"disabled {args.client_id}")
            return 0
        spec: dict[str, Any] = {
            "client_id": args.client_id, "kind": kind_filter or args.kind,
            "display_name": args.name, "auth_method": args.auth_method,
            "scopes": args.scope or [], "sector": args.sector,
            "redirect_uris": getattr(args, "redirect_uri", None) or [],
            "scene": getattr(args, "scene", None), "operator": getattr(args, "operator", None)}
        if kind_filter is None:   # the relying-party metadata of issue 16 (kind rp)
            spec.update({
                "grant_types": args.grant_type or [],
                "post_logout_redirect_uris": args.post_logout_redirect_uri or [],
                "backchannel_logout_uri": args.backchannel_logout_uri,
                "require_pushed_authorization_requests": args.require_par,
                "dpop_bound_access_tokens": args.dpop_bound})
        if args.auth_method == "private_key_jwt":
            if not args.jwks_file:
                print("--jwks-file is required with private_key_jwt", file=sys.stderr)
                return 2
            with open(args.jwks_file, encoding="utf-8") as f:
                spec["jwks"] = json.load(f)["keys"]
        venues = None
        if kind_filter == "gate":  # every gate belongs to a venue serving its scene
            from gateway.adapters.redis_ops import RedisVenueStore
            from gateway.services.scenes import SceneCatalogue
            from gateway.services.venues import VenueRegistry

            # the catalogue only validates new venues; assigning reads the venue's scene
            venues = VenueRegistry(RedisVenueStore(redis, settings.redis_prefix),
                                   SceneCatalogue(()))
            venue = await venues.get(args.venue)
            if venue is None or venue.scene != args.scene:
                print(f"gateway: no venue {args.venue} serving scene {args.scene}",
                      file=sys.stderr)
                return 1
        client, secret = await registry.register_client(store, spec, time.time)
        if venues is not None:
            await venues.assign_gate(client.client_id, client.scene, args.venue)
        await _host_audit(settings, f"{'gate' if client.kind == 'gate' else 'client'}"
                          ".registered", f"client:{client.client_id}",
                          venue=getattr(args, "venue", None))
        out = {"client_id": client.client_id, "kind": client.kind, "sector": client.sector}
        if secret:
            out["client_secret"] = secret  # shown once; only its digest is stored
        print(json.dumps(out, ensure_ascii=False))
        return 0
    except GatewayError as exc:
        print(f"gateway: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()


def cmd_clients(args: argparse.Namespace) -> int:
    return asyncio.run(_clients(args, None))


def cmd_gates(args: argparse.Namespace) -> int:
    return asyncio.run(_clients(args, "gate"))


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway", description=(
        "渝快码 ⇄ 电子社保卡 gateway. Settings come from GATEWAY_* environment variables "
        "(docs/configuration.md)."))
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the gateway (uvloop; --workers processes share the port)")
    s.add_argument("--workers", type=int, help="worker processes (GATEWAY_WORKERS)")
    s.add_argument("--port", type=int, help="port (GATEWAY_PORT)")
    s.add_argument("--host", help="address (GATEWAY_HOST)")
    s.set_defaults(func=cmd_serve)

    k = sub.add_parser("keys", help="generate, rotate or list signing keys")
    k.add_argument("keys_cmd", choices=["generate", "rotate", "list", "trust-anchor"],
                   help="trust-anchor: print the trust-list key gates pin (docs/offline.md)")
    k.add_argument("--purpose", choices=["token", "code", "trust", "oidc", "all"], default="all",
                   help="oidc: the ES256 ID-token ring of GATEWAY_CRYPTO_SUITE=gm; trust: the "
                        "trust-list key")
    k.add_argument("--alg", choices=["EdDSA", "ES256", "SM2"],
                   help="generate: the ring's algorithm (default: GATEWAY_CRYPTO_SUITE's); "
                        "rotate: the new next key's (SM2 for the 国密 suite)")
    k.add_argument("--max-lifetime-s", type=int,
                   help="rotate: how long the retired key keeps verifying")
    k.add_argument("--force", action="store_true", help="generate: replace an existing ring")
    k.set_defaults(func=cmd_keys)

    for name, kind in (("clients", None), ("gates", "gate")):
        c = sub.add_parser(name, help=f"register, list or disable {name} (needs Redis)")
        csub = c.add_subparsers(dest="sub", required=True)
        reg = csub.add_parser("register")
        reg.add_argument("client_id")
        reg.add_argument("--name", required=True)
        if kind is None:
            reg.add_argument("--kind", choices=["app", "rp"], required=True)
            reg.add_argument("--redirect-uri", action="append")
            reg.add_argument("--grant-type", action="append", metavar="URN",
                             help="a grant beyond the kind's own (repeatable); today only "
                                  "urn:ietf:params:oauth:grant-type:device_code (RFC 8628, "
                                  "kiosks and self-service terminals; kind rp)")
            reg.add_argument("--post-logout-redirect-uri", action="append",
                             help="RP-Initiated Logout: where the browser may be sent back")
            reg.add_argument("--backchannel-logout-uri",
                             help="Back-Channel Logout: where the logout token is POSTed")
            reg.add_argument("--require-par", action="store_true",
                             help="require_pushed_authorization_requests (RFC 9126 §6)")
            reg.add_argument("--dpop-bound", action="store_true",
                             help="dpop_bound_access_tokens: no bearer tokens (RFC 9449 §5.2)")
        else:
            reg.add_argument("--scene", required=True)
            reg.add_argument("--operator", required=True)
            reg.add_argument("--venue", required=True, help="the venue (点位) it stands in")
        reg.add_argument("--auth-method", default="client_secret_basic",
                         choices=["client_secret_basic", "client_secret_post",
                                  "private_key_jwt", "none"])
        reg.add_argument("--jwks-file")
        reg.add_argument("--scope", action="append")
        reg.add_argument("--sector")
        csub.add_parser("list")
        dis = csub.add_parser("disable")
        dis.add_argument("client_id")
        c.set_defaults(func=cmd_clients if kind is None else cmd_gates)
    _extra_commands(sub)
    _operator_commands(sub)
    return p


def _extra_commands(sub: Any) -> None:
    """Commands of the identity and audit features (registered here, implemented there)."""
    a = sub.add_parser("audit", help="verify, read or checkpoint the hash-chained audit log")
    a.add_argument("audit_cmd", choices=["verify", "list", "checkpoint"])
    a.add_argument("--checkpoint", type=Path, default=None, metavar="FILE",
                   help="verify: also check the chain against the signed checkpoints in FILE")
    a.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="checkpoint: append the signed head to FILE (default: print it)")
    a.add_argument("--from", dest="from_seq", type=int, default=0,
                   help="list: first seq (default: the last --count entries)")
    a.add_argument("--count", type=int, default=100, help="list: how many entries (max 10000)")
    a.set_defaults(func=cmd_audit)
    i = sub.add_parser("identity", help="operator registry sync from an upstream export; "
                                        "reseal personal data into GATEWAY_CRYPTO_SUITE")
    i.add_argument("identity_cmd", choices=["sync", "reseal"])
    i.add_argument("path", nargs="?",
                   help="sync: JSON file of persons and credentials (docs/identity.md)")
    i.add_argument("--dry-run", action="store_true",
                   help="reseal: report what would change, change nothing")
    i.set_defaults(func=cmd_identity)
    t = sub.add_parser("transactions", help="export or prune the transaction records "
                                            "(PostgreSQL, GATEWAY_DATABASE_URL)")
    t.add_argument("transactions_cmd", choices=["export", "prune"])
    t.add_argument("--after", help="export: the cursor of the last record already read")
    t.set_defaults(func=cmd_transactions)


# ---------------------------------------------------------------- operators, venues (issue 15)
def _operator_commands(sub: Any) -> None:
    o = sub.add_parser("operators", help="named operators: create (token shown once), "
                                         "disable, enable, list (needs Redis)")
    osub = o.add_subparsers(dest="sub", required=True)
    c = osub.add_parser("create")
    c.add_argument("name")
    c.add_argument("--role", required=True, choices=["admin", "auditor", "viewer"])
    for name in ("disable", "enable"):
        osub.add_parser(name).add_argument("name")
    osub.add_parser("list")
    o.set_defaults(func=cmd_operators)
    v = sub.add_parser("venues", help="the venue registry (点位): import a CSV, list (needs Redis)")
    vsub = v.add_subparsers(dest="sub", required=True)
    vsub.add_parser("import").add_argument("path", help="CSV: id,name,scene,district,"
                                                        "operator,status,address")
    ls = vsub.add_parser("list")
    ls.add_argument("--district")
    ls.add_argument("--scene")
    v.set_defaults(func=cmd_venues)
    st = sub.add_parser("stats", help="the statistics' daily roll-ups (PostgreSQL): rebuild "
                                      "them from the transaction records")
    stsub = st.add_subparsers(dest="sub", required=True)
    rb = stsub.add_parser("rebuild", help="recompute the roll-ups of --from .. --to from the "
                                          "records (after a bug), one transaction per day; "
                                          "audited")
    rb.add_argument("--from", dest="from_day", required=True, metavar="DAY",
                    help="the first day to recompute (YYYY-MM-DD, UTC)")
    rb.add_argument("--to", dest="to_day", metavar="DAY",
                    help="the last day to recompute (YYYY-MM-DD, UTC, inclusive; default: "
                         "the last day anything is stored)")
    st.set_defaults(func=cmd_stats)


def _host_actor() -> Any:
    """The operator a host command acts as in the audit log: `host:<login name>`."""
    import getpass

    from gateway.services.operators import Operator

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return Operator(name=f"host:{user}", role="admin")


def _audit_ready(settings: Settings) -> None:
    """A host command that changes something is audited: check the audit chain's key is at
    hand BEFORE changing anything (KeyFileError otherwise: exit 2, nothing done)."""
    if settings.redis_url:
        from gateway.adapters.redis_audit import _chain_key

        _chain_key(settings)


async def _host_audit(settings: Settings, action: str, target: str, outcome: str = "ok", /,
                      **detail: Any) -> None:
    """Append a host command's action to the audit log (when there is a durable one)."""
    if not settings.redis_url:
        return
    from gateway.adapters.redis_audit import RedisAuditLog, _chain_key
    from gateway.adapters.redis_store import connect
    from gateway.services.operators import OperatorAudit

    redis = connect(settings.redis_url, cluster=settings.redis_cluster)
    log = RedisAuditLog(redis, settings.redis_prefix, chain_key=_chain_key(settings))
    try:
        await OperatorAudit(log, time.time).record(
            _host_actor(), action, target, outcome, detail=detail)
    finally:
        await redis.aclose()


async def _operators(args: argparse.Namespace) -> int:
    from gateway.adapters.redis_ops import RedisOperatorStore
    from gateway.errors import GatewayError
    from gateway.services.operators import Operators

    settings = _settings(args)
    if args.sub != "list":
        _audit_ready(settings)
    redis, _ = await _client_store(settings)
    ops = Operators(RedisOperatorStore(redis, settings.redis_prefix), time.time)
    try:
        if args.sub == "list":
            for o in await ops.list():
                print(json.dumps(o, ensure_ascii=False))
            return 0
        if args.sub == "create":
            op, token = await ops.create(args.name, args.role)
            await _host_audit(settings, "operator.created", f"operator:{op.name}", role=op.role)
            print(json.dumps({"name": op.name, "role": op.role, "token": token}))
            print("gateway: the token is shown once; only its SHA-256 is stored",
                  file=sys.stderr)
            return 0
        op = await ops.set_disabled(args.name, args.sub == "disable")
        await _host_audit(settings, f"operator.{args.sub}d", f"operator:{op.name}")
        print(f"{args.sub}d {op.name}")
        return 0
    except GatewayError as exc:
        print(f"gateway: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()


def cmd_operators(args: argparse.Namespace) -> int:
    return asyncio.run(_operators(args))


async def _venues(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gateway.adapters.redis_ops import RedisSceneStore, RedisVenueStore
    from gateway.services.scenes import SceneCatalogue, catalogue_from_store
    from gateway.services.venues import CsvRefused, VenueRegistry

    settings = _settings(args)
    if args.sub != "list":
        _audit_ready(settings)
    redis, _ = await _client_store(settings)
    try:
        scene_store = RedisSceneStore(redis, settings.redis_prefix)
        scenes = (await catalogue_from_store(scene_store) if await scene_store.version()
                  else SceneCatalogue.load(settings.scenes_file))
        registry = VenueRegistry(RedisVenueStore(redis, settings.redis_prefix), scenes)
        if args.sub == "list":
            for v in await registry.list(args.district, args.scene):
                print(json.dumps(v.to_json(), ensure_ascii=False))
            return 0
        try:
            report = await registry.import_csv(Path(args.path).read_text("utf-8-sig"))
        except CsvRefused as exc:
            for e in exc.errors:
                print(f"{args.path}:{e.row}: {e.field}: {e.message}", file=sys.stderr)
            print(f"gateway: {len(exc.errors)} bad row(s); nothing imported", file=sys.stderr)
            return 1
        except (OSError, UnicodeDecodeError) as exc:
            print(f"gateway: cannot read {args.path}: {type(exc).__name__}", file=sys.stderr)
            return 1
        await _host_audit(settings, "venue.imported", "venues", **report.to_json())
        print(json.dumps(report.to_json()))
        return 0
    finally:
        await redis.aclose()


def cmd_venues(args: argparse.Namespace) -> int:
    return asyncio.run(_venues(args))


async def _stats(args: argparse.Namespace) -> int:
    """`gateway stats rebuild --from DAY [--to DAY]` (docs/stats.md): one transaction per day
    under the record store's writer lock — the exporter waits one day's recount at a time (its
    outbox holds the records meanwhile), the dashboard sees a day's old figures or its new
    ones."""
    from datetime import date

    import asyncpg

    from gateway.adapters.postgres_records import connect_pool
    from gateway.adapters.postgres_stats import PostgresStatsStore, RebuildRefused
    from gateway.adapters.redis_ops import RedisVenueStore
    from gateway.services.venues import VenueIndex

    settings = _settings(args)
    if not settings.database_url:
        print("gateway: GATEWAY_DATABASE_URL is not set (the sandbox's in-memory roll-ups "
              "are rebuilt from its records whenever it starts)", file=sys.stderr)
        return 2
    try:
        day = date.fromisoformat(args.from_day).isoformat()
    except ValueError:
        print("gateway: --from must be an ISO date (YYYY-MM-DD)", file=sys.stderr)
        return 2
    last: str | None = None
    if args.to_day is not None:
        try:
            last = date.fromisoformat(args.to_day).isoformat()
        except ValueError:
            print("gateway: --to must be an ISO date (YYYY-MM-DD)", file=sys.stderr)
            return 2
        if last < day:
            print("gateway: --to is before --from", file=sys.stderr)
            return 2
    _audit_ready(settings)
    index = VenueIndex()
    if settings.redis_url:  # the gates' venues and districts, as the exporter sees them
        redis, _ = await _client_store(settings)
        try:
            await index.refresh(RedisVenueStore(redis, settings.redis_prefix))
        finally:
            await redis.aclose()
    days: list[str] = []
    try:
        pool = await connect_pool(settings.database_url, max_size=1)
        try:
            started = time.monotonic()

            def done(d: str, n: int, r: int) -> None:  # each day is committed on its own
                days.append(d)
                print(json.dumps({"day": d, "records": n, "rows": r}), file=sys.stderr,
                      flush=True)

            stats = PostgresStatsStore(pool)
            read, rows = await stats.rebuild(day, index.gates, last, progress=done)
        finally:
            await pool.close()
    except RebuildRefused as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"gateway: PostgreSQL is not reachable ({type(exc).__name__})", file=sys.stderr)
        if days:  # the days before the fault are committed, recounted: say so, audit them
            print(f"gateway: days {day} .. {days[-1]} were rebuilt; run again from the day "
                  "after", file=sys.stderr)
            await _host_audit(settings, "stats.rebuilt", f"stats:from:{day}", "partial",
                              to=days[-1], days=len(days))
        return 1
    to = days[-1] if days else day
    await _host_audit(settings, "stats.rebuilt", f"stats:from:{day}", to=to, days=len(days),
                      records=read, rows=rows)
    print(json.dumps({"from": day, "to": to, "days": len(days), "records": read,
                      "rows": rows, "seconds": round(time.monotonic() - started, 3)}))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    return asyncio.run(_stats(args))


def cmd_audit(args: argparse.Namespace) -> int:
    from gateway.adapters.redis_audit import (
        audit_checkpoint_main,
        audit_list_main,
        audit_verify_main,
    )

    if args.audit_cmd == "list":
        return int(audit_list_main(_settings(args), args.from_seq, args.count))
    if args.audit_cmd == "checkpoint":
        return int(audit_checkpoint_main(_settings(args), args.out))
    return int(audit_verify_main(_settings(args), args.checkpoint))


def cmd_transactions(args: argparse.Namespace) -> int:
    from gateway.adapters.postgres_records import export_main, prune_main

    s = _settings(args)
    if args.transactions_cmd == "prune":
        return prune_main(s.database_url, s.transactions_retention_days)
    return export_main(s.database_url, args.after)


def cmd_identity(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gateway.adapters.redis_identity import reseal_store, sync_registry

    if args.identity_cmd == "reseal":
        # docs/crypto-suites.md "Migration": one JSON line saying what changed
        print(json.dumps(reseal_store(_settings(args), dry_run=args.dry_run).to_dict()))
        return 0
    if not args.path:
        print("identity sync needs PATH", file=sys.stderr)
        return 2
    processed = sync_registry(_settings(args), Path(args.path))
    print(f"identity: {processed} persons upserted")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cmd != "serve":  # serve configures from its settings; commands log to stderr
        from gateway.logs import configure

        configure("console", "info")
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except KeyFileError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
