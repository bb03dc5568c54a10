"""The composition root: builds stores, key rings, adapters and services from Settings,
registers routes and middlewares, and owns every lifetime (aiohttp cleanup_ctx).

The only module that knows every concrete class. Nothing here runs at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Info
from redis.asyncio.cluster import RedisCluster

from gateway.adapters.keyfiles import KeyRingFiles, load_data_keys, load_data_master_key
from gateway.adapters.memory import MemoryClientStore, MemorySingleUse
from gateway.adapters.redis_store import (
    Coalescer,
    RedisClient,
    RedisClientStore,
    RedisSingleUse,
    connect,
)
from gateway.adapters.store_epoch import (
    StoreEpoch,
    persistence_problems,
    read_persistence_config,
)
from gateway.authz.client_auth import ClientAuthenticator
from gateway.authz.clients import DEFAULT_SCOPES, Client, hash_secret
from gateway.authz.datakeys import DataKeys
from gateway.authz.keyring import Alg, KeyRing
from gateway.authz.tokens import AccessTokens, JwtSigner
from gateway.clock import Clock, SystemClock
from gateway.ports import ClientStore, SingleUse
from gateway.services.auth import BearerAuthenticator
from gateway.services.records import RecordingClaims, RecordStore
from gateway.services.tokens import ClientCredentialsGrant, TokenService
from gateway.services.upstream import PsamAttestation
from gateway.settings import Settings
from gateway.web import admin, meta, oauth
from gateway.web.http import (
    AUTHENTICATOR,
    MAX_BODY,
    METRICS,
    REGISTRY,
    Metrics,
    edge_middleware,
)

log = structlog.get_logger("gateway.app")

DATA_DIR = Path(__file__).resolve().parent / "data"
TOKEN_ALG: Alg = "ES256"   # the most widely supported by OIDC client libraries
CODE_ALG: Alg = "EdDSA"    # fastest verify at the gate (libsodium), smallest signature


class RingHolder:
    """The current view of one key ring; reloaded from disk when the ring file changes, so
    `gateway keys rotate` takes effect on every worker without a restart."""

    def __init__(self, files: KeyRingFiles, ring: KeyRing) -> None:
        self.files = files
        self.ring = ring
        self._mtime = files.mtime_ns()

    def __call__(self) -> KeyRing:
        return self.ring

    def reload_if_changed(self) -> bool:
        m = self.files.mtime_ns()
        if m != self._mtime:
            self.ring = self.files.load()
            self._mtime = m
            return True
        return False


@dataclass
class Core:
    """What every feature builds on; created once per worker at start-up."""

    settings: Settings
    clock: Clock
    data_keys: DataKeys
    token_ring: RingHolder
    code_ring: RingHolder
    single_use: SingleUse
    clients: ClientStore
    redis: RedisClient | None = None
    coalescer: Coalescer | None = None
    readiness: list[tuple[str, Any]] = field(default_factory=list)
    #: the trust-list (and deny-list) signing keys, their own purpose (docs/offline.md)
    trust_ring: RingHolder | None = None
    records: Records | None = None
    #: GATEWAY_CRYPTO_SUITE=gm: the ES256 ring ID tokens are signed with (relying parties'
    #: OIDC libraries rarely do SM2); None = ID tokens come from the token ring.
    id_token_ring: RingHolder | None = None

    def rings(self) -> tuple[RingHolder, ...]:
        return tuple(r for r in (self.token_ring, self.code_ring, self.id_token_ring,
                                 self.trust_ring) if r)


CORE = web.AppKey("core", Core)
#: The key ring purpose of the gm suite's ES256 ID-token keys (docs/oidc.md "Algorithms").
ID_TOKEN_PURPOSE = "oidc"


def suite_algs(settings: Settings) -> tuple[Alg, Alg]:
    """(token, code) signing algorithms of GATEWAY_CRYPTO_SUITE: `gm` signs both with SM2."""
    return ("SM2", "SM2") if settings.crypto_suite == "gm" else (TOKEN_ALG, CODE_ALG)


def ensure_keys(settings: Settings, clock: Clock) -> None:
    """First run of the sandbox: generate dev keys under keys/. Production: keys must exist.

    The sandbox follows GATEWAY_CRYPTO_SUITE: a ring whose current key is of the other suite is
    rotated (twice: the new key is published, then signs) with the old key still verifying
    for one maximum lifetime. Production rings change only by `gateway keys rotate --alg`."""
    now = clock.now()
    token_alg, code_alg = suite_algs(settings)
    # the trust list's own key follows the code suite: EdDSA, or SM2 for the 国密 suite
    for purpose, alg in (("token", token_alg), ("code", code_alg), ("trust", code_alg)):
        files = KeyRingFiles(settings.keys_dir, purpose)
        if settings.is_sandbox:
            files.ensure(alg, now)
            max_life = (max(settings.gate_token_ttl_s, settings.access_token_ttl_s)
                        if purpose == "token" else settings.trust_list_max_age_s
                        if purpose == "trust"
                        else max(settings.code_ttl_s, settings.device_cert_ttl_s)
                        + settings.code_max_skew_s + 60)
            files.ensure_current_alg(alg, now, max_life)
        else:
            ring = files.load()
            if ring.current().alg != alg:
                log.warning("keys.suite_mismatch", purpose=purpose, current=ring.current().alg,
                            suite=settings.crypto_suite)
    if settings.crypto_suite == "gm":
        oidc_files = KeyRingFiles(settings.keys_dir, ID_TOKEN_PURPOSE)
        if settings.is_sandbox:
            oidc_files.ensure("ES256", now)
        elif not oidc_files.exists():
            log.warning("keys.no_id_token_ring", purpose=ID_TOKEN_PURPOSE,
                        hint="gateway keys generate --purpose oidc")
    load_data_keys(settings.keys_dir, settings.crypto_suite, create=settings.is_sandbox,
                   env_value=settings.data_key_b64)
    if settings.is_sandbox:
        demo_secrets(settings)
        if not settings.admin_token:  # made here, before workers fork: they raced on its file
            sandbox_admin_token(settings)


def demo_secrets(settings: Settings) -> dict[str, Any]:
    """Secrets and private keys of the sandbox's demo clients: generated at first run under
    keys/sandbox/ (0600), never in git; shown by GET /sandbox/v1/demo."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from gateway.adapters.keyfiles import read_private_pem, write_private
    from gateway.authz.keyring import derive_kid, public_jwk

    path = settings.keys_dir / "sandbox" / "demo-secrets.json"
    if path.exists():
        return dict(json.loads(read_private_pem(path)))
    demo = json.loads((settings.demo_data or DATA_DIR / "demo.json").read_text("utf-8"))
    out: dict[str, Any] = {}
    for c in demo["clients"] + demo["gates"]:
        if c.get("auth_method") == "private_key_jwt":
            pk = ec.generate_private_key(ec.SECP256R1())
            kid = derive_kid(pk)
            pem = pk.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()).decode()
            out[c["client_id"]] = {"private_key_pem": pem,
                                   "public_jwk": public_jwk(pk, kid, "ES256")}
        else:
            out[c["client_id"]] = {"client_secret": secrets.token_urlsafe(32)}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(path, json.dumps(out).encode())
    return out


def sandbox_admin_token(settings: Settings) -> str:
    """The sandbox's operator token when GATEWAY_ADMIN_TOKEN is unset: generated at first run
    under keys/sandbox/admin-token (0600)."""
    from gateway.adapters.keyfiles import read_private_pem, write_private

    path = settings.keys_dir / "sandbox" / "admin-token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(path, secrets.token_urlsafe(32).encode())
    return read_private_pem(path).decode().strip()


def demo_clients(settings: Settings, now: float) -> list[Client]:
    demo = json.loads((settings.demo_data or DATA_DIR / "demo.json").read_text("utf-8"))
    creds = demo_secrets(settings)
    out = []
    for c in demo["clients"] + demo["gates"]:
        kind = c.get("kind", "gate")
        cred = creds.get(c["client_id"], {})
        out.append(Client(
            client_id=c["client_id"], kind=kind, display_name=c["display_name"],
            auth_method=c.get("auth_method", "client_secret_basic"),
            secret_hash=hash_secret(cred["client_secret"]) if "client_secret" in cred else None,
            jwks=(cred["public_jwk"],) if "public_jwk" in cred else (),
            scopes=tuple(c.get("scopes") or DEFAULT_SCOPES[kind]),
            sector=c.get("sector", ""), redirect_uris=tuple(c.get("redirect_uris") or ()),
            post_logout_redirect_uris=tuple(c.get("post_logout_redirect_uris") or ()),
            scene=c.get("scene"), operator=c.get("operator"), created_at=now))
    return out


async def _core_ctx(app: web.Application) -> AsyncIterator[None]:
    settings: Settings = app[SETTINGS]
    clock: Clock = app[CLOCK]
    ensure_keys(settings, clock)
    token_files = KeyRingFiles(settings.keys_dir, "token")
    code_files = KeyRingFiles(settings.keys_dir, "code")
    data_keys = load_data_keys(settings.keys_dir, settings.crypto_suite,
                               create=settings.is_sandbox, env_value=settings.data_key_b64)
    redis: RedisClient | None = None
    coalescer: Coalescer | None = None
    if settings.redis_url:
        redis = connect(settings.redis_url, cluster=settings.redis_cluster,
                        timeout_s=settings.redis_timeout_s)
        if isinstance(redis, RedisCluster):
            # learn the slot map before concurrent use (redis-py's lazy set-up races)
            await redis.initialize()
        coalescer = Coalescer(redis)
        if not settings.is_sandbox:  # docs/audit.md: appendonly yes, noeviction (issue 12)
            await require_persistence(redis)
        # the store epoch: a Redis that lost its data is detected within one claim (issue 12)
        epoch = StoreEpoch(coalescer.execute, settings.redis_prefix, clock.now,
                           app.get(REGISTRY), refuse_at_start=not settings.is_sandbox)
        await epoch.start()
        single_use: SingleUse = RedisSingleUse(coalescer, settings.redis_prefix, epoch)
        clients: ClientStore = RedisClientStore(redis, settings.redis_prefix)
    else:
        single_use = MemorySingleUse(clock)
        clients = MemoryClientStore()
    core = Core(settings=settings, clock=clock, data_keys=data_keys,
                token_ring=RingHolder(token_files, token_files.load()),
                code_ring=RingHolder(code_files, code_files.load()),
                single_use=single_use, clients=clients, redis=redis, coalescer=coalescer)
    trust_files = KeyRingFiles(settings.keys_dir, "trust")
    core.trust_ring = RingHolder(trust_files, trust_files.load())
    oidc_files = KeyRingFiles(settings.keys_dir, ID_TOKEN_PURPOSE)
    if settings.crypto_suite == "gm" and oidc_files.exists():
        core.id_token_ring = RingHolder(oidc_files, oidc_files.load())
    if redis is not None:
        core.readiness.append(("redis", redis.ping))
        if not settings.is_sandbox:
            core.readiness.append(("redis_persistence", lambda: require_persistence(redis)))
        epoch.listeners.append(lambda reason: _store_lost(app))
    core.records = await open_records(core, app[METRICS_RECORDS])
    app[CORE] = core

    if settings.is_sandbox:
        for client in demo_clients(settings, clock.now()):
            existing = await clients.get(client.client_id)
            if existing is None or existing.secret_hash != client.secret_hash \
                    or existing.jwks != client.jwks:
                await clients.put(client)

    signer = JwtSigner(core.token_ring, clock.now)
    access = AccessTokens(signer, settings.issuer, clock.now)
    app[TOKEN_SIGNER] = signer
    app[ACCESS_TOKENS] = access
    app[AUTHENTICATOR] = BearerAuthenticator(access, single_use, clock.now)
    from gateway.authz.dpop import DpopVerifier  # RFC 9449 (issue 16)
    from gateway.web.http import DPOP
    app[DPOP] = DpopVerifier(single_use, core.data_keys.derive_key("dpop-nonce"), clock.now,
                             settings.issuer)
    app[oauth.CLIENT_AUTH] = ClientAuthenticator(
        clients, single_use, settings.issuer, clock.now,
        settings.client_assertion_max_ttl_s)
    tokens = TokenService()
    tokens.register(ClientCredentialsGrant(access, settings.gate_token_ttl_s,
                                           settings.access_token_ttl_s))
    app[oauth.TOKENS] = tokens
    app[oauth.TOKENS_ISSUER] = settings.issuer
    app[meta.ISSUER] = settings.issuer
    def jwks() -> dict[str, Any]:
        out = core.token_ring().jwks(clock.now())
        if core.id_token_ring is not None:
            out["keys"] = out["keys"] + core.id_token_ring().jwks(clock.now())["keys"]
        return out

    app[meta.JWKS] = jwks
    id_ring = core.id_token_ring or core.token_ring
    app[meta.ID_TOKEN_ALGS] = (["ES256"] if core.id_token_ring is not None
                               else ["EdDSA", "ES256"])
    app[ID_TOKEN_SIGNER] = signer if id_ring is core.token_ring else JwtSigner(id_ring, clock.now)
    app[meta.READINESS] = core.readiness
    app[meta.READYZ_TIMEOUT] = settings.readyz_timeout_s
    app[admin.CLIENT_STORE] = clients
    app[admin.NOW] = clock.now
    admin_token = settings.admin_token or (sandbox_admin_token(settings)
                                           if settings.is_sandbox else None)
    if admin_token:
        app[admin.ADMIN_TOKEN] = admin_token
    from gateway.services.scenes import SceneCatalogue as _SceneCatalogue
    from gateway.web import codes as _codes
    app[_codes.SCENES] = _SceneCatalogue.load(settings.scenes_file or DATA_DIR / "scenes.json")

    reloader = asyncio.ensure_future(_reload_rings(core))
    try:
        yield
    finally:
        if isinstance(single_use, RedisSingleUse) and single_use.epoch is not None:
            await single_use.epoch.stop()
        reloader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reloader
        if core.records is not None:
            await core.records.aclose()
        if coalescer is not None:
            await coalescer.aclose()
        if redis is not None:
            await redis.aclose()


async def require_persistence(redis: RedisClient) -> None:
    """Production: Redis must persist as docs/audit.md requires, read from its own CONFIG."""
    from gateway.settings import SettingsError

    try:
        problems = persistence_problems(await read_persistence_config(redis))
    except Exception as exc:  # noqa: BLE001 - CONFIG refused (renamed, ACL): cannot be shown
        raise SettingsError("GATEWAY_REDIS_URL: cannot read Redis's configuration (CONFIG GET "
                            f"appendonly, maxmemory-policy): {type(exc).__name__}") from None
    if problems:
        raise SettingsError("GATEWAY_REDIS_URL: Redis does not persist as production needs "
                            "(docs/operations.md): " + "; ".join(problems))


async def _store_lost(app: web.Application) -> None:
    """The store epoch found a loss: forget what was cached from the lost store, and in the
    sandbox put the demo clients and residents back (production: restore from a backup,
    docs/operations.md; the caches then read the restored records). Retried for a while:
    right after a restart, pooled connections fail once each (nothing is retried there)."""
    from gateway.web import gate as _gate
    from gateway.web import identity as _identity

    core = app[CORE]
    for attempt in range(50):
        if _gate.GATE in app:
            app[_gate.GATE].forget_cached_sectors()
        try:
            if core.settings.is_sandbox:
                for client in demo_clients(core.settings, core.clock.now()):
                    await core.clients.put(client)
                if _identity.IDENTITY in app:
                    from gateway.services import identity as ids

                    doc = json.loads((DATA_DIR / "residents.json").read_text("utf-8"))
                    await app[_identity.IDENTITY].sync(ids.registry_entries(doc))
            if _identity.IDENTITY in app:
                await app[_identity.IDENTITY].refresh_revocations(force=True)
        except Exception as exc:  # noqa: BLE001 - the store is still coming back: again
            if attempt == 49:
                log.warning("store.recache_failed", error=type(exc).__name__)
                return
            await asyncio.sleep(0.2)
            continue
        log.info("store.recached", sandbox_reseeded=core.settings.is_sandbox)
        return


# --- transaction records (issue 14; gateway/services/records.py, docs/records.md) ---
@dataclass
class Records:
    """The record store, the claims that append to it, and (with Redis) the outbox."""

    store: RecordStore
    claims: RecordingClaims
    outbox: Any = None  # RedisOutbox when the records go through Redis
    pool: Any = None    # the asyncpg pool behind a PostgreSQL store
    outbox_redis: Any = None  # the exporter's own Redis client (raw XRANGE replies)

    async def aclose(self) -> None:
        if self.pool is not None:
            await self.pool.close()
        if self.outbox_redis is not None:
            await self.outbox_redis.aclose()


async def open_records(core: Core, metrics: Any) -> Records:
    """No I/O to PostgreSQL here: the pool connects on first use, so a gateway starts (and
    gates pass) while PostgreSQL is down; the outbox holds the records meanwhile."""
    from gateway.adapters.memory_records import MemoryRecordingClaims, MemoryRecordStore
    from gateway.services.records import UnrecordedClaims

    s = core.settings
    store: RecordStore
    pool = None
    if s.database_url:
        from gateway.adapters.postgres_records import PostgresRecordStore, connect_pool

        pool = await connect_pool(s.database_url, min_size=0)
        store = PostgresRecordStore(pool)
    else:
        store = MemoryRecordStore()
    if not s.transactions_enabled:
        return Records(store, UnrecordedClaims(core.single_use), pool=pool)
    if core.redis is None or core.coalescer is None:
        assert isinstance(core.single_use, MemorySingleUse)
        return Records(store, MemoryRecordingClaims(core.single_use, store), pool=pool)
    from gateway.adapters.redis_records import RedisOutbox, RedisRecordingClaims

    epoch = core.single_use.epoch if isinstance(core.single_use, RedisSingleUse) else None
    claims = RedisRecordingClaims(core.coalescer, core.redis.script_load,
                                  prefix=s.redis_prefix, shards=s.transactions_outbox_shards,
                                  bound=s.transactions_outbox_max, on_full=metrics.dropped,
                                  epoch=epoch)
    await claims.load()
    assert s.redis_url is not None
    outbox_redis = connect(s.redis_url, cluster=s.redis_cluster, max_connections=2)
    if isinstance(outbox_redis, RedisCluster):
        await outbox_redis.initialize()
    outbox = RedisOutbox(outbox_redis, prefix=s.redis_prefix,
                         shards=s.transactions_outbox_shards, bound=s.transactions_outbox_max)
    return Records(store, claims, outbox=outbox, pool=pool, outbox_redis=outbox_redis)


async def _records_ctx(app: web.Application) -> AsyncIterator[None]:
    """The exporter: in every worker, working only while it holds the lock (one at a time
    across workers and hosts); on shutdown it finishes its step and lets the lock go."""
    from gateway.adapters.redis_records import RedisExporterLock
    from gateway.services.records import Exporter
    from gateway.web import transactions as _transactions

    core = app[CORE]
    records = core.records
    assert records is not None
    app[_transactions.RECORD_STORE] = records.store
    if records.outbox is None or core.redis is None:
        yield
        return
    s = core.settings
    exporter = Exporter(records.outbox, records.store,
                        RedisExporterLock(core.redis, prefix=s.redis_prefix),
                        batch_size=s.transactions_export_batch,
                        retention_s=s.transactions_retention_days * 86400.0,
                        now=core.clock.now, metrics=app[METRICS_RECORDS])
    app[EXPORTER] = exporter
    stop = asyncio.Event()
    task = asyncio.ensure_future(exporter.run(stop))
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 10)
        except TimeoutError:
            log.warning("transactions.exporter_stop_timeout")
# --- end transaction records ---


async def _reload_rings(core: Core, every_s: float = 2.0) -> None:
    while True:
        await asyncio.sleep(every_s)
        for holder in core.rings():
            try:
                if holder.reload_if_changed():
                    log.info("keys.reloaded", purpose=holder.files.purpose)
            except Exception:
                log.exception("keys.reload_failed", purpose=holder.files.purpose)


# --- identity (issue 4; gateway/services/identity.py, gateway/web/identity.py, sandbox.py) ---
async def _identity_ctx(app: web.Application) -> AsyncIterator[None]:
    """The one-person identity: store, upstream clients (one aiohttp session), the assertion
    router for token exchange and links, card taps, and (sandbox) the demo residents."""
    import aiohttp

    from gateway.adapters.memory_identity import MemoryIdentityStore
    from gateway.adapters.redis_identity import RedisIdentityStore, RevocationFollower
    from gateway.adapters.sandbox import ESSC_ISSUER_PREFIX, YKB_ISSUER, PsamSandbox
    from gateway.adapters.upstream import EsscPlatformClient, UpstreamPolicy, YkbClient
    from gateway.services import identity as ids
    from gateway.services.codes import CodeService
    from gateway.services.tokens import ResidentRef, TokenExchangeGrant
    from gateway.services.trustlist import TrustList
    from gateway.services.upstream import UpstreamIdentity
    from gateway.web import codes as _codes
    from gateway.web import identity as _identity

    core = app[CORE]
    settings, clock = core.settings, core.clock
    store: Any = (RedisIdentityStore(core.redis, settings.redis_prefix, core.coalescer)
                  if core.redis is not None else MemoryIdentityStore())
    # --- card deny-list for offline gates (issue 14; gateway/services/revocations.py) ---
    from gateway.adapters.memory_revocations import MemoryDenyListStore
    from gateway.adapters.redis_revocations import RedisDenyListStore
    from gateway.codec.offline import CardHash
    from gateway.services.revocations import RevocationLists
    from gateway.web import revocations as _revocations

    deny_store: Any = (RedisDenyListStore(core.redis, settings.redis_prefix,
                                          settings.deny_list_delta_events)
                       if core.redis is not None
                       else MemoryDenyListStore(settings.deny_list_delta_events))
    assert core.trust_ring is not None
    deny_lists = RevocationLists(
        deny_store, core.trust_ring,
        CardHash(core.data_keys.card_deny_salt, settings.card_hash_iterations), clock.now,
        max_age_s=settings.deny_list_max_age_s)
    app[_revocations.REVOCATIONS] = deny_lists
    # --- end card deny-list ---
    service = ids.IdentityService(store, clock, core.data_keys, deny_list=deny_lists)
    regions = settings.essc_regions
    policy = UpstreamPolicy(timeout_s=settings.upstream_timeout_s,
                            connect_timeout_s=min(1.0, settings.upstream_timeout_s))
    if settings.is_sandbox:
        base = settings.issuer + "/sandbox/upstreams"
        ykb_url, essc_url = base + "/ykb", base + "/essc"
        ykb_iss, essc_prefix = YKB_ISSUER, ESSC_ISSUER_PREFIX
        psam = PsamAttestation(master_key=PsamSandbox(settings.keys_dir).master_key)
    else:
        ykb_url = settings.ykb_url or "https://ykb.invalid"
        essc_url = settings.essc_url or "https://essc.invalid"
        ykb_iss = settings.ykb_issuer or YKB_ISSUER
        essc_prefix = settings.essc_issuer_prefix or ESSC_ISSUER_PREFIX
        keys_file = settings.psam_gate_keys_file  # JSON {gate_client_id: base64 K_gate}
        import base64

        gate_keys = ({g: base64.b64decode(k) for g, k in
                      json.loads(Path(keys_file).read_text("utf-8")).items()}
                     if keys_file else {})
        psam = PsamAttestation(gate_keys=gate_keys)
    session = aiohttp.ClientSession()
    ykb = YkbClient(session, ykb_url, issuer=ykb_iss, audience=settings.issuer, clock=clock,
                    policy=policy)
    essc = EsscPlatformClient(session, essc_url, regions=regions, issuer_prefix=essc_prefix,
                              audience=settings.issuer, clock=clock, policy=policy)
    router = ids.AssertionRouter({ykb.issuer: ykb, **{iss: essc for iss in essc.issuers}})

    async def resolve_person(ident: UpstreamIdentity) -> ResidentRef:
        return ResidentRef((await service.resolve_upstream(ident)).person_id)

    app[oauth.TOKENS].register(TokenExchangeGrant(
        app[ACCESS_TOKENS], core.data_keys, core.single_use, router, resolve_person,
        clock.now, settings.access_token_ttl_s, is_suspended=service.person_suspended))
    app[_identity.IDENTITY] = service
    app[admin.ADMIN_IDENTITY] = service
    app[_identity.LINKS] = ids.Links(service, router, core.single_use)
    app[PSAM] = psam
    app[_codes.CODES] = CodeService(
        code_ring=core.code_ring, data_keys=core.data_keys,
        trust=TrustList(
            core.code_ring, core.trust_ring, clock.now, scenes=lambda: app[_codes.SCENES],
            max_age_s=settings.trust_list_max_age_s, code_max_skew_s=settings.code_max_skew_s,
            endorsements=core.trust_ring.files.endorsements),
        identity=ids.GateIdentityAdapter(service), essc=essc, clock=clock,
        code_ttl_s=settings.code_ttl_s, refresh_in_s=settings.code_refresh_in_s)
    if settings.is_sandbox:
        # The sandbox's e-SSC platform is served by this server, which does not listen yet:
        # its code keys are taken in-process at start (the refresher follows over HTTP).
        from gateway.web import sandbox as _sandbox_web
        if _sandbox_web.ESSC in app:
            platform: Any = app[_sandbox_web.ESSC]  # gateway.adapters.sandbox.EsscSandbox
            app[_codes.CODES].trust.set_essc_keys(
                [k for r in settings.essc_regions for k in platform.code_jwks(r)])
        residents_doc = json.loads((DATA_DIR / "residents.json").read_text("utf-8"))
        report = await service.sync(ids.registry_entries(residents_doc))
        log.info("identity.demo_residents", persons=report.persons, created=report.created)
    follower = None
    if isinstance(store, RedisIdentityStore) and core.redis is not None:
        follower = RevocationFollower(core.redis, store, service)
        await follower.start()
    try:
        yield
    finally:
        if follower is not None:
            await follower.stop()
        await session.close()


def _mount_sandbox(app: web.Application, settings: Settings) -> None:
    """Sandbox: the upstream platforms as sub-apps under /sandbox/upstreams/<name>, and the
    /sandbox/v1/* endpoints (never registered in production: 404 there)."""
    from cryptography.hazmat.primitives import serialization
    from jwt.algorithms import ECAlgorithm

    from gateway.adapters.sandbox import (
        ESSC_SANDBOX,
        YKB_SANDBOX,
        PsamSandbox,
        build_sandbox_upstreams,
    )
    from gateway.services.upstream import load_residents
    from gateway.web import sandbox as _sandbox

    residents = load_residents()
    # 国密 suite: the Chongqing e-SSC platform signs its codes with SM2 (Sichuan stays ES256,
    # so both forms stand in one trust list).
    sm2_regions = ("CQ",) if settings.crypto_suite == "gm" else ()
    subs = build_sandbox_upstreams(residents, settings.keys_dir, settings.issuer,
                                   clock=app[CLOCK], sm2_regions=sm2_regions)
    for name, sub in subs.items():
        app.add_subapp(f"/sandbox/upstreams/{name}", sub)
    app[_sandbox.RESIDENTS] = residents
    app[_sandbox.YKB] = subs["ykb"][YKB_SANDBOX]
    app[_sandbox.ESSC] = subs["essc"][ESSC_SANDBOX]
    app[_sandbox.PSAM] = PsamSandbox(settings.keys_dir)

    def listing() -> dict[str, Any]:
        demo = json.loads((settings.demo_data or DATA_DIR / "demo.json").read_text("utf-8"))
        secrets_ = demo_secrets(settings)
        out: dict[str, Any] = {"clients": [], "gates": []}
        for group in ("clients", "gates"):
            for c in demo[group]:
                kind = c.get("kind", "gate")
                entry = {"client_id": c["client_id"], "kind": kind,
                         "display_name": c["display_name"],
                         "auth_method": c.get("auth_method", "client_secret_basic"),
                         "scopes": list(c.get("scopes") or DEFAULT_SCOPES[kind]),
                         "sector": c.get("sector"), "scene": c.get("scene")}
                if kind == "rp":   # what a newcomer needs to log in and ask for consent
                    from gateway.web import consents as _consents
                    entry["redirect_uris"] = list(c.get("redirect_uris") or ())
                    entry["post_logout_redirect_uris"] = list(
                        c.get("post_logout_redirect_uris") or ())
                    entry["certificate_types"] = sorted(
                        app[_consents.CONSENTS].policy.allowed_types(c["client_id"]))
                cred = secrets_.get(c["client_id"], {})
                if "client_secret" in cred:
                    entry["client_secret"] = cred["client_secret"]
                if "private_key_pem" in cred:
                    pk = serialization.load_pem_private_key(
                        cred["private_key_pem"].encode(), password=None)
                    jwk = json.loads(ECAlgorithm.to_jwk(pk))  # type: ignore[arg-type]
                    jwk.update(kid=cred["public_jwk"]["kid"], alg="ES256", use="sig")
                    entry["private_jwk"] = jwk
                out[group].append(entry)
        return out

    app[_sandbox.DEMO] = listing
    _sandbox.add_routes(app)
# --- end identity ---


# --- authorised login (issue 5; gateway/services/login.py, gateway/web/login.py) ---
async def _login_ctx(app: web.Application) -> AsyncIterator[None]:
    """OIDC provider: login-session, code, refresh-family and consent stores (Redis when
    configured), the authorization_code and refresh_token grants, revocation/introspection
    hooks for refresh tokens. Pairwise subjects and claims come from the identity service."""
    import aiohttp

    from gateway.adapters import memory_oidc, redis_oidc
    from gateway.adapters.backchannel import BackchannelNotifier
    from gateway.services.login import AuthorizationCodeGrant, LoginService, RefreshTokenGrant
    from gateway.web import identity as _identity
    from gateway.web import login as _login

    core = app[CORE]
    s, clock = core.settings, core.clock
    stores: tuple[Any, Any, Any, Any]
    if core.redis is not None:
        stores = (redis_oidc.RedisLoginSessionStore(core.redis, s.redis_prefix),
                  redis_oidc.RedisCodeStore(core.redis, s.redis_prefix),
                  redis_oidc.RedisRefreshStore(core.redis, s.redis_prefix),
                  redis_oidc.RedisConsentStore(core.redis, s.redis_prefix))
    else:
        stores = (memory_oidc.MemoryLoginSessionStore(clock),
                  memory_oidc.MemoryCodeStore(clock), memory_oidc.MemoryRefreshStore(clock),
                  memory_oidc.MemoryConsentStore())
    backchannel_session = aiohttp.ClientSession()   # OIDC Back-Channel Logout deliveries
    service = LoginService(
        clients=core.clients, sessions=stores[0], codes=stores[1], refresh=stores[2],
        consents=stores[3], persons=lambda: app[_identity.IDENTITY], keys=core.data_keys,
        access=app[ACCESS_TOKENS], signer=app[ID_TOKEN_SIGNER],
        alg=lambda: (core.id_token_ring or core.token_ring)().current().alg, issuer=s.issuer,
        clock=clock.now,
        access_ttl_s=s.access_token_ttl_s, verify_bearer=app[AUTHENTICATOR].verify,
        require_number=s.login_require_number,
        pushed=(redis_oidc.RedisPushedRequestStore(core.redis, s.redis_prefix)
                if core.redis is not None else memory_oidc.MemoryPushedRequestStore(clock)),
        notify_logout=BackchannelNotifier(backchannel_session, s.upstream_timeout_s))
    app[_login.LOGIN] = service
    app[oauth.TOKENS].register(AuthorizationCodeGrant(service))
    app[oauth.TOKENS].register(RefreshTokenGrant(service))
    app[oauth.REVOCATION_HOOKS].append(service.revocation_hook)
    app[oauth.INTROSPECTION_HOOKS].append(service.introspection_hook)
    try:
        yield
    finally:
        await backchannel_session.close()
# --- end authorised login ---


# --- consents + audit (issue 6; gateway/services/consents.py, gateway/web/consents.py) ---
async def _consents_ctx(app: web.Application) -> AsyncIterator[None]:
    """Consent store, audit log, certificate library client (sandbox: the mounted certlib),
    the holder's citizen ID from the identity service, the per-client type allow-list."""
    import aiohttp

    from gateway.adapters.memory_audit import MemoryAuditLog
    from gateway.adapters.memory_consent import MemoryConsentStore
    from gateway.adapters.redis_audit import RedisAuditLog
    from gateway.adapters.redis_consent import RedisConsentStore
    from gateway.adapters.upstream import CertificateLibraryClient, UpstreamPolicy
    from gateway.errors import NotFound as _NotFound
    from gateway.services.audit import AuditTrail
    from gateway.services.consents import ConsentPolicy, ConsentService
    from gateway.web import consents as _consents
    from gateway.web import identity as _identity

    core = app[CORE]
    settings, clock = core.settings, core.clock
    store: Any = (RedisConsentStore(core.redis, settings.redis_prefix, core.coalescer)
                  if core.redis is not None else MemoryConsentStore(clock))
    chain_key = core.data_keys.audit_chain_key
    audit_log: Any = (RedisAuditLog(core.redis, settings.redis_prefix, chain_key=chain_key)
                      if core.redis is not None else MemoryAuditLog(chain_key))
    policy_file = settings.consent_policy_file  # JSON {client_id: [certificate types]}
    policy = (ConsentPolicy(types_by_client={
        k: frozenset(v) for k, v in json.loads(Path(policy_file).read_text("utf-8")).items()})
        if policy_file else ConsentPolicy() if settings.is_sandbox
        else ConsentPolicy(types_by_client={}))
    certlib_url = (settings.issuer + "/sandbox/upstreams/certlib" if settings.is_sandbox
                   else settings.certlib_url or "https://certlib.invalid")
    session = aiohttp.ClientSession()
    library = CertificateLibraryClient(
        session, certlib_url, clock=clock,
        policy=UpstreamPolicy(timeout_s=settings.upstream_timeout_s,
                              connect_timeout_s=min(1.0, settings.upstream_timeout_s)))
    identity = app[_identity.IDENTITY]

    async def citizen_ids(person_id: str) -> str | None:
        try:
            return await identity.citizen_id(person_id)
        except _NotFound:
            return None

    app[admin.AUDIT_LOG] = audit_log  # operator actions chain into the same log (issue 15)
    app[_consents.CONSENTS] = ConsentService(
        store=store, audit=AuditTrail(audit_log, clock.now), library=library,
        citizen_ids=citizen_ids, data_keys=core.data_keys, signer=app[TOKEN_SIGNER],
        clients=core.clients, issuer=settings.issuer, clock=clock.now, policy=policy)
    exporter = None
    if settings.audit_checkpoint_file is not None:   # signed heads, outside Redis (issue 16)
        from gateway.adapters.redis_audit import CheckpointExporter
        exporter = CheckpointExporter(audit_log, app[TOKEN_SIGNER], settings.issuer,
                                      settings.audit_checkpoint_file,
                                      settings.audit_checkpoint_interval_s, clock.now)
        exporter.start()
    try:
        yield
    finally:
        if exporter is not None:
            await exporter.stop()
        await session.close()
# --- end consents ---


# --- device-bound codes (issue 18; gateway/services/devices.py, gateway/web/devices.py) ---
async def _devices_ctx(app: web.Application) -> AsyncIterator[None]:
    """Device store (Redis when configured), the enrolment service (code key ring signs the
    certificates; holder and fare flags sealed as in YK1:), and suspension → device
    revocations. Before the gate pipeline's context: it reads the device revocation view."""
    from gateway.adapters.memory_devices import MemoryDeviceStore
    from gateway.adapters.redis_devices import RedisDeviceStore
    from gateway.authz.datakeys import derive
    from gateway.errors import NotFound as _NotFound
    from gateway.services.codes import SEALABLE, seal_attributes
    from gateway.services.devices import DeviceService
    from gateway.web import devices as _devices
    from gateway.web import identity as _identity

    core = app[CORE]
    s = core.settings
    identity = app[_identity.IDENTITY]
    store: Any = (RedisDeviceStore(core.redis, s.redis_prefix) if core.redis is not None
                  else MemoryDeviceStore())
    master = load_data_master_key(s.keys_dir, create=s.is_sandbox, env_value=s.data_key_b64)

    async def flags_of(person_id: str) -> int:
        try:
            return seal_attributes(await identity.disclose(person_id, tuple(SEALABLE)))
        except _NotFound:
            return 0

    service = DeviceService(
        store=store, single_use=core.single_use, code_ring=core.code_ring,
        # signed like the trust list and the card deny-list: by the trust-list key gates pin
        signing_ring=core.trust_ring, list_max_age_s=s.deny_list_max_age_s,
        holder=core.data_keys.code_holder,
        challenge_key=derive(master, "device-challenge"), clock=core.clock,
        cert_ttl_s=s.device_cert_ttl_s, max_devices=s.devices_max, flags_of=flags_of,
        suspended=identity.is_person_suspended)
    app[_devices.DEVICES] = service

    async def on_suspend(person_id: str, suspended: bool) -> None:
        if suspended:
            await service.suspend(person_id)

    identity.suspension_hooks.append(on_suspend)
    yield
# --- end device-bound codes ---


SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
TOKEN_SIGNER = web.AppKey("token_signer", JwtSigner)
ID_TOKEN_SIGNER = web.AppKey("id_token_signer", JwtSigner)
PSAM = web.AppKey("psam", PsamAttestation)
ACCESS_TOKENS = web.AppKey("access_tokens", AccessTokens)
METRICS_RECORDS: web.AppKey[Any] = web.AppKey("record_metrics")
EXPORTER: web.AppKey[Any] = web.AppKey("exporter")


def build_app(settings: Settings, clock: Clock | None = None) -> web.Application:
    app = web.Application(middlewares=[edge_middleware],
                          client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[CLOCK] = clock or SystemClock()
    app[MAX_BODY] = settings.max_body_bytes
    registry = CollectorRegistry()
    app[REGISTRY] = registry
    app[METRICS] = Metrics(registry)
    # /metrics is per worker process (docs/performance.md): say which one answered
    Info("gateway_worker", "The worker process behind this /metrics answer",
         registry=registry).info({"pid": str(os.getpid())})
    # --- issue 15: /metrics sums every worker (gateway/web/server_metrics.py) ---
    from gateway.web import server_metrics as _server_metrics
    _server_metrics.install(app, settings.metrics_dir, settings.metrics_flush_ms,
                            settings.metrics_token, worker=registry)
    # --- end issue 15 ---
    app[oauth.REVOCATION_HOOKS] = []
    app[oauth.INTROSPECTION_HOOKS] = []
    app.cleanup_ctx.append(_core_ctx)
    # --- transaction records (issue 14) ---
    from gateway.web import transactions as _transactions
    app[METRICS_RECORDS] = _transactions.RecordMetrics(registry)
    app.cleanup_ctx.append(_records_ctx)
    _transactions.add_routes(app)
    # --- end transaction records ---
    # --- identity + sandbox (issue 4) ---
    from gateway.web import identity as _identity
    app.cleanup_ctx.append(_identity_ctx)
    _identity.add_routes(app)
    if settings.is_sandbox:
        _mount_sandbox(app, settings)
    # --- end identity + sandbox ---
    # --- card deny-list for offline gates (issue 14; built in _identity_ctx) ---
    from gateway.web import revocations as _revocations
    _revocations.add_routes(app)
    # --- end card deny-list ---
    # --- operator's view (issue 15; gateway/web/admin.py). Before the codes feature: its
    # e-SSC key refresher starts in the background and must not run while this awaits ---
    app.cleanup_ctx.append(_operator_ctx)
    from gateway.web import dashboard as _dashboard
    from gateway.web import stats as _stats
    _stats.add_routes(app)
    _dashboard.add_routes(app)
    # --- end operator's view ---
    # --- rate limits + overload shedding (issue 7; gateway/web/ratelimit.py) ---
    from gateway.web import ratelimit as _ratelimit
    _ratelimit.install(app, CORE)
    # --- end rate limits ---
    meta.add_routes(app)
    admin.add_routes(app)
    oauth.add_routes(app)
    # --- codes, trust list, scenes (issue 3) ---
    from gateway.web import codes as _codes
    app.cleanup_ctx.append(_codes.codes_ctx)
    _codes.add_routes(app)
    # --- end codes ---
    # --- device-bound codes (issue 18; gateway/services/devices.py, gateway/web/devices.py) ---
    from gateway.web import devices as _devices
    app.cleanup_ctx.append(_devices_ctx)
    app.cleanup_ctx.append(_devices.devices_ctx)
    _devices.add_routes(app)
    # --- end device-bound codes ---
    # --- consents + audit (issue 6) ---
    from gateway.web import consents as _consents
    app.cleanup_ctx.append(_consents_ctx)
    _consents.add_routes(app)
    # --- end consents ---
    # --- authorised login (issue 5) ---
    from gateway.web import login as _login
    app.cleanup_ctx.append(_login_ctx)
    _login.add_routes(app)
    # --- end authorised login ---
    # --- the gate decision pipeline (gateway/services/gate.py, gateway/web/gate.py) ---
    from gateway.web import gate as _gate
    from gateway.web import offline as _offline
    _gate.add_routes(app)
    _offline.add_routes(app)  # offline uploads go through the same pipeline (issue 14)
    app.cleanup_ctx.append(_gate_ctx)  # after every feature it connects
    return app


# --- operator's view (issue 15; docs/operators.md) ---
async def _operator_ctx(app: web.Application) -> AsyncIterator[None]:
    """The live scene catalogue, the venue registry and the named operators: shared stores
    (Redis, or memory in a one-process sandbox), and a poller per worker that applies a new
    catalogue or venue version within `ops_poll_ms` — one small read per store per poll."""
    from gateway.adapters import memory_ops, redis_ops
    from gateway.authz.datakeys import derive
    from gateway.services.operators import Operators
    from gateway.services.scenes import SceneCatalogue, catalogue_from_store
    from gateway.services.stats import Statistics
    from gateway.services.venues import VenueIndex, VenueRegistry
    from gateway.web import codes as _codes
    from gateway.web import dashboard as _dashboard
    from gateway.web import stats as _stats

    core = app[CORE]
    s, clock = core.settings, core.clock
    scene_store: Any
    venue_store: Any
    if core.redis is not None:
        scene_store = redis_ops.RedisSceneStore(core.redis, s.redis_prefix)
        venue_store = redis_ops.RedisVenueStore(core.redis, s.redis_prefix)
        operator_store: Any = redis_ops.RedisOperatorStore(core.redis, s.redis_prefix)
    else:
        scene_store, venue_store = memory_ops.MemorySceneStore(), memory_ops.MemoryVenueStore()
        operator_store = memory_ops.MemoryOperatorStore()
    scenes: SceneCatalogue = app[_codes.SCENES]
    # The file seeds the store; scenes the store lacks (a new release's) are added to it.
    built = [sc.to_json() for sc in scenes.all()]
    for raw in built:
        raw.pop("revision", None)
        raw.pop("category", None)
    if not await scene_store.seed(built):
        _, held = await scene_store.snapshot()
        known = {h["id"] for h in held}
        for raw in built:
            if raw["id"] not in known:
                await scene_store.put(raw, 0, {"updated_by": "seed", "updated_at": clock.now()})

    def held_catalogue() -> list[dict[str, Any]]:
        out = [sc.to_json() for sc in scenes.all()]
        for raw in out:
            raw.pop("revision", None)
            raw.pop("category", None)
        return out

    async def reload_scenes() -> None:
        if await scene_store.version() == 0:
            # the store lost its data (docs/operations.md): keep serving the catalogue held
            # here and put it back - an empty store must never empty every worker's scenes
            # (every verify answered 400 unknown scene after an empty Redis restart)
            if await scene_store.seed(held_catalogue()):
                log.warning("scenes.reseeded", scenes=len(scenes.all()))
            return
        scenes.swap(await catalogue_from_store(scene_store))

    await reload_scenes()
    if s.is_sandbox and await venue_store.version() == 0:
        demo = json.loads((DATA_DIR / "venues.json").read_text("utf-8"))
        await venue_store.put_many([{"status": "active", "address": "", **v}
                                    for v in demo["venues"]])
        for gate, venue in demo["gates"].items():
            await venue_store.assign_gate(gate, venue)
    index = VenueIndex()
    await index.refresh(venue_store)
    app[METRICS].district_of = index.district_of  # /metrics labels by district
    admin_token = app.get(admin.ADMIN_TOKEN) if s.is_sandbox else None
    app[admin.OPERATORS] = Operators(operator_store, clock.now, bootstrap_token=admin_token)
    app[admin.SCENE_STORE] = scene_store
    app[admin.ADMIN_SCENES] = scenes
    app[admin.SCENES_RELOAD] = reload_scenes
    app[admin.VENUES] = VenueRegistry(venue_store, scenes)
    app[admin.VENUE_INDEX] = index
    statistics = Statistics(memory_ops.MemoryStatsStore(), scenes)
    app[_stats.STATS] = statistics
    record_store = core.records.store if core.records is not None else None
    cursor: list[str | None] = [None]

    async def catch_up() -> None:
        """Roll up the records written since the last call (the record store's cursor)."""
        if record_store is None:
            return
        while True:
            page = await record_store.page(cursor[0], 5000)
            if not page.records:
                return
            await statistics.ingest([r for _, r in page.records], index.gates)
            cursor[0] = page.next_cursor

    app[_stats.STATS_CATCH_UP] = catch_up
    app[_dashboard.SESSION_KEY] = derive(load_data_master_key(
        s.keys_dir, create=False, env_value=s.data_key_b64), "dashboard-session")

    stopping = asyncio.Event()

    async def follow() -> None:
        # Stopped by an event, not by cancel(): a cancellation that lands inside a store
        # call can be swallowed below us, and `await follower` then waited for ever (every
        # in-process test's teardown hung until pytest-timeout killed it).
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), s.ops_poll_ms / 1000)
            if stopping.is_set():
                return
            try:
                if str(await scene_store.version()) != scenes.version:
                    await reload_scenes()
                    log.info("scenes.reloaded", version=scenes.version)
                await index.refresh(venue_store)
                await catch_up()
            except Exception as exc:  # noqa: BLE001 - keep serving what we have, retry
                log.warning("ops.follow_failed", error=type(exc).__name__)

    follower = asyncio.ensure_future(follow())
    try:
        yield
    finally:
        stopping.set()
        done, _ = await asyncio.wait({follower}, timeout=5)
        if not done:  # a store call that hangs: give up on it rather than on shutdown
            follower.cancel()
            log.warning("ops.follow_stop_timeout")
# --- end operator's view ---


async def _gate_ctx(app: web.Application) -> AsyncIterator[None]:
    """The gate decision pipeline (codes and card taps), and the consent feature's subject
    index connected to every place a subject is handed out (gate verify, ID tokens) — only for
    sectors with consent-capable RPs."""
    from gateway.services.faces import RETRY_GRACE_S, CardFace, CodeFace
    from gateway.services.gate import GatePipeline, GateSectors
    from gateway.services.identity import GateIdentityAdapter
    from gateway.services.offline import OfflineUploads
    from gateway.services.subjects import SubjectLedger
    from gateway.web import codes as _codes
    from gateway.web import consents as _consents
    from gateway.web import devices as _devices
    from gateway.web import gate as _gate
    from gateway.web import identity as _identity
    from gateway.web import login as _login
    from gateway.web import offline as _offline

    core = app[CORE]
    settings, clock = core.settings, core.clock
    records = core.records
    assert records is not None
    consents = app[_consents.CONSENTS]
    ledger = SubjectLedger(consents.remember_subject, core.clients.list,
                           lambda cid: bool(consents.policy.types_by_client.get(cid)),
                           clock.now)
    identity = GateIdentityAdapter(app[_identity.IDENTITY])
    app[_gate.GATE] = GatePipeline(
        scenes=app[_codes.SCENES], sectors=GateSectors(core.clients, clock.now),
        codes=CodeFace(lookup=app[_codes.CODES].trust.lookup, holder=core.data_keys.code_holder,
                       identity=identity, max_skew_s=settings.code_max_skew_s,
                       offline_max_s=settings.offline_max_s,
                       device_revoked=app[_devices.DEVICES].revocations.is_revoked),
        cards=CardFace(psam=app[PSAM], identity=identity, regions=settings.essc_regions,
                       max_age_s=settings.offline_max_s, max_skew_s=settings.code_max_skew_s),
        claims=records.claims, identity=identity, data_keys=core.data_keys,
        subject_seen=ledger.seen, count=app[METRICS].count, clock=clock,
        deny_ttl_s=settings.offline_max_s + settings.code_max_skew_s + RETRY_GRACE_S)
    app[_offline.OFFLINE] = OfflineUploads(app[_gate.GATE], records.claims, clock.now,
                                           offline_max_s=settings.offline_max_s)
    app[_login.LOGIN].subject_seen = ledger.seen
    yield
