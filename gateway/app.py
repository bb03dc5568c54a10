"""The composition root: builds stores, key rings, adapters and services from Settings,
registers routes and middlewares, and owns every lifetime (aiohttp cleanup_ctx).

The only module that knows every concrete class. Nothing here runs at import time. It is laid
out by capability, each built once, complete, from what the ones before it built
(`_gateway_ctx` builds them in this order, but records — which needs only the foundation —
right after the foundation):

    foundation   keys (rings reloaded on rotation, data keys), Redis, every store typed by
                 its port (`Stores`: mypy checks each adapter against its port)
    tokens       the per-caller rate limits, client registry and authentication, the token
                 endpoint and its grants, the bearer check, discovery / JWKS, the operator API
    upstreams    one HTTP session: 渝快办, the e-SSC platforms, the certificate library, PSAM
    identity     one person per resident: links, token exchange, revocation follower
    codes        issuing codes, the trust list, the scene catalogue
    consents     consent store, audit trail, the subject ledger
    login        the OIDC provider (authorization_code, refresh_token) and the device
                 authorization grant (RFC 8628, kiosks)
    devices      device-bound YK2: codes: enrolment, certificates, the revocation list
    records      transaction records: the store (PostgreSQL or memory), the claims that append
                 to it, the Redis outbox and its exporter
    gate         the gate decision pipeline (codes and card taps)
    operators    the operator's view: live scene catalogue, venues, named operators,
                 statistics from the record store, the dashboard
    sandbox      demo data (parsed once), the upstream sandboxes, /sandbox/v1/*
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import structlog
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from prometheus_client import CollectorRegistry, Info
from redis.asyncio.cluster import RedisCluster

from gateway.adapters import (
    memory_device_grants,
    memory_oidc,
    memory_ops,
    redis_device_grants,
    redis_oidc,
    redis_ops,
)
from gateway.adapters.backchannel import BackchannelNotifier
from gateway.adapters.keyfiles import (
    KeyRingFiles,
    load_data_keys,
    read_private_pem,
    write_private,
)
from gateway.adapters.memory import MemoryClientStore, MemorySingleUse
from gateway.adapters.memory_audit import MemoryAuditLog
from gateway.adapters.memory_consent import MemoryConsentStore
from gateway.adapters.memory_devices import MemoryDeviceStore
from gateway.adapters.memory_identity import MemoryIdentityStore
from gateway.adapters.memory_records import (
    MemoryLiveCounters,
    MemoryRecordingClaims,
    MemoryRecordStore,
)
from gateway.adapters.memory_revocations import MemoryDenyListStore
from gateway.adapters.postgres_records import PostgresRecordStore, connect_pool
from gateway.adapters.postgres_stats import ExporterRollups, PostgresStatsStore
from gateway.adapters.redis_audit import CheckpointExporter, RedisAuditLog
from gateway.adapters.redis_consent import RedisConsentStore
from gateway.adapters.redis_devices import RedisDeviceStore
from gateway.adapters.redis_identity import RedisIdentityStore, RevocationFollower
from gateway.adapters.redis_ratelimit import RedisRateLimiter
from gateway.adapters.redis_records import (
    RedisExporterLock,
    RedisLiveCounters,
    RedisOutbox,
    RedisRecordingClaims,
)
from gateway.adapters.redis_revocations import RedisDenyListStore
from gateway.adapters.redis_store import (
    STORE_FAULTS,
    Coalescer,
    RedisClient,
    RedisClientStore,
    RedisSingleUse,
    connect,
)
from gateway.adapters.sandbox import (
    ESSC_ISSUER_PREFIX,
    ESSC_SANDBOX,
    YKB_ISSUER,
    YKB_SANDBOX,
    PsamSandbox,
    build_sandbox_upstreams,
)
from gateway.adapters.store_epoch import (
    StoreEpoch,
    persistence_problems,
    read_persistence_config,
)
from gateway.adapters.upstream import (
    CertificateLibraryClient,
    EsscPlatformClient,
    UpstreamPolicy,
    YkbClient,
)
from gateway.authz import ports as oidc_ports
from gateway.authz.client_auth import ClientAuthenticator, ClientCache
from gateway.authz.clients import DEFAULT_SCOPES, Client, hash_secret
from gateway.authz.datakeys import DataKeys
from gateway.authz.dpop import DpopVerifier
from gateway.authz.keyring import Alg, KeyRing, derive_kid, public_jwk
from gateway.authz.tokens import AccessTokens, JwtSigner
from gateway.clock import Clock, SystemClock
from gateway.codec.offline import CardHash
from gateway.errors import NotFound
from gateway.ports import ClientStore, SingleUse
from gateway.ratelimit import MemoryRateLimiter, RateLimiter
from gateway.ratelimit.leasing import LeasingRateLimiter
from gateway.services.audit import AuditTrail
from gateway.services.auth import BearerAuthenticator
from gateway.services.codes import SEALABLE, CodeService, seal_attributes
from gateway.services.consents import ConsentPolicy, ConsentService
from gateway.services.device_grant import TAP_MAX_AGE_S, DeviceCodeGrant, DeviceGrantService
from gateway.services.devices import DeviceRevocationLog, DeviceService
from gateway.services.faces import RETRY_GRACE_S, CardFace, CodeFace
from gateway.services.gate import GatePipeline, GateSectors
from gateway.services.identity import (
    AssertionRouter,
    GateIdentityAdapter,
    IdentityService,
    Links,
    registry_entries,
)
from gateway.services.login import AuthorizationCodeGrant, LoginService, RefreshTokenGrant
from gateway.services.offline import OfflineUploads
from gateway.services.operators import Operators
from gateway.services.ports import (
    AuditLog,
    ConsentStore,
    DenyListStore,
    DeviceStore,
    IdentityStore,
    LiveCounters,
    OperatorStore,
    Psam,
    RecordingClaims,
    RecordStore,
    SceneStore,
    StatsStore,
    SuspensionObserver,
    VenueStore,
)
from gateway.services.records import Exporter, UnrecordedClaims
from gateway.services.revocations import RevocationLists
from gateway.services.scenes import SceneCatalogue, catalogue_from_store
from gateway.services.stats import Statistics
from gateway.services.subjects import SubjectLedger
from gateway.services.tokens import (
    ClientCredentialsGrant,
    ResidentRef,
    TokenExchangeGrant,
    TokenService,
)
from gateway.services.trustlist import EsscKeyRefresh, TrustList
from gateway.services.upstream import PsamAttestation, UpstreamIdentity, load_residents
from gateway.services.venues import VenueIndex, VenueRegistry
from gateway.settings import Settings, SettingsError
from gateway.tasks import background
from gateway.web import admin, meta, oauth
from gateway.web import codes as codes_web
from gateway.web import consents as consents_web
from gateway.web import dashboard as dashboard_web
from gateway.web import device as device_web
from gateway.web import devices as devices_web
from gateway.web import gate as gate_web
from gateway.web import http as http_web
from gateway.web import identity as identity_web
from gateway.web import login as login_web
from gateway.web import offline as offline_web
from gateway.web import ratelimit as ratelimit_web
from gateway.web import revocations as revocations_web
from gateway.web import sandbox as sandbox_web
from gateway.web import server_metrics as server_metrics_web
from gateway.web import stats as stats_web
from gateway.web import transactions as transactions_web
from gateway.web.http import (
    AUTHENTICATOR,
    DPOP,
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


# ============================================================================ foundation
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


@dataclass(frozen=True)
class Stores:
    """Every store the services use, each typed by its port: an adapter that drifts from its
    port fails `mypy gateway` here. Memory without Redis (the sandbox), Redis with it."""

    single_use: SingleUse
    clients: ClientStore
    identity: IdentityStore
    login_sessions: oidc_ports.LoginSessionStore
    login_codes: oidc_ports.CodeStore
    refresh_families: oidc_ports.RefreshStore
    remembered_grants: oidc_ports.ConsentStore
    pushed_requests: oidc_ports.PushedRequestStore
    device_grants: oidc_ports.DeviceGrantStore
    consents: ConsentStore
    audit_log: AuditLog
    devices: DeviceStore
    deny_list: DenyListStore
    #: the operator's view (docs/operators.md): the live scene catalogue, the venue
    #: registry, the named operators — shared by every worker
    scenes: SceneStore
    venues: VenueStore
    operators: OperatorStore


def build_stores(settings: Settings, clock: Clock, data_keys: DataKeys,
                 redis: RedisClient | None, coalescer: Coalescer | None,
                 epoch: StoreEpoch | None = None) -> Stores:
    """The one place that chooses memory or Redis."""
    chain_key = data_keys.audit_chain_key
    if redis is None or coalescer is None:
        return Stores(
            single_use=MemorySingleUse(clock), clients=MemoryClientStore(),
            identity=MemoryIdentityStore(),
            login_sessions=memory_oidc.MemoryLoginSessionStore(clock),
            login_codes=memory_oidc.MemoryCodeStore(clock),
            refresh_families=memory_oidc.MemoryRefreshStore(clock),
            remembered_grants=memory_oidc.MemoryConsentStore(),
            pushed_requests=memory_oidc.MemoryPushedRequestStore(clock),
            device_grants=memory_device_grants.MemoryDeviceGrantStore(clock),
            consents=MemoryConsentStore(clock), audit_log=MemoryAuditLog(chain_key),
            devices=MemoryDeviceStore(),
            deny_list=MemoryDenyListStore(settings.deny_list_delta_events),
            scenes=memory_ops.MemorySceneStore(), venues=memory_ops.MemoryVenueStore(),
            operators=memory_ops.MemoryOperatorStore())
    prefix = settings.redis_prefix
    return Stores(
        single_use=RedisSingleUse(coalescer, prefix, epoch),
        clients=RedisClientStore(redis, prefix, coalescer),
        identity=RedisIdentityStore(redis, prefix, coalescer),
        login_sessions=redis_oidc.RedisLoginSessionStore(redis, prefix),
        login_codes=redis_oidc.RedisCodeStore(redis, prefix),
        refresh_families=redis_oidc.RedisRefreshStore(redis, prefix),
        remembered_grants=redis_oidc.RedisConsentStore(redis, prefix),
        pushed_requests=redis_oidc.RedisPushedRequestStore(redis, prefix),
        device_grants=redis_device_grants.RedisDeviceGrantStore(redis, prefix),
        consents=RedisConsentStore(redis, prefix, coalescer),
        audit_log=RedisAuditLog(redis, prefix, chain_key=chain_key),
        devices=RedisDeviceStore(redis, prefix),
        deny_list=RedisDenyListStore(redis, prefix, settings.deny_list_delta_events),
        scenes=redis_ops.RedisSceneStore(redis, prefix),
        venues=redis_ops.RedisVenueStore(redis, prefix),
        operators=redis_ops.RedisOperatorStore(redis, prefix))


@dataclass
class Core:
    """What every capability builds on; created once per worker at start-up."""

    settings: Settings
    clock: Clock
    data_keys: DataKeys
    token_ring: RingHolder
    code_ring: RingHolder
    #: the trust-list (and deny-list, device certificate) signing keys (docs/offline.md)
    trust_ring: RingHolder
    stores: Stores
    scenes: SceneCatalogue
    redis: RedisClient | None = None
    coalescer: Coalescer | None = None
    readiness: list[tuple[str, Callable[[], Awaitable[Any]]]] = field(default_factory=list)
    #: GATEWAY_CRYPTO_SUITE=gm: the ES256 ring ID tokens are signed with (relying parties'
    #: OIDC libraries rarely do SM2); None = ID tokens come from the token ring.
    id_token_ring: RingHolder | None = None
    #: the store epoch (Redis): a Redis that lost its data is detected within one claim
    epoch: StoreEpoch | None = None

    def rings(self) -> tuple[RingHolder, ...]:
        return tuple(r for r in (self.token_ring, self.code_ring, self.id_token_ring,
                                 self.trust_ring) if r)

    @property
    def single_use(self) -> SingleUse:
        return self.stores.single_use

    @property
    def clients(self) -> ClientStore:
        return self.stores.clients


CORE = web.AppKey("core", Core)
SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
TOKEN_SIGNER = web.AppKey("token_signer", JwtSigner)
ACCESS_TOKENS = web.AppKey("access_tokens", AccessTokens)
ID_TOKEN_SIGNER = web.AppKey("id_token_signer", JwtSigner)
#: The key ring purpose of the gm suite's ES256 ID-token keys (docs/oidc.md "Algorithms").
ID_TOKEN_PURPOSE = "oidc"


def suite_algs(settings: Settings) -> tuple[Alg, Alg]:
    """(token, code) signing algorithms of GATEWAY_CRYPTO_SUITE: `gm` signs both with SM2."""
    return ("SM2", "SM2") if settings.crypto_suite == "gm" else (TOKEN_ALG, CODE_ALG)
EXPORTER = web.AppKey("exporter", Exporter)


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


async def require_persistence(redis: RedisClient) -> None:
    """Production: Redis must persist as docs/audit.md requires, read from its own CONFIG."""
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
    core = app[CORE]
    for attempt in range(50):
        if gate_web.GATE in app:
            app[gate_web.GATE].forget_cached_sectors()
        try:
            if core.settings.is_sandbox and DEMO_DATA in app:
                for client in app[DEMO_DATA].clients(core.clock.now()):
                    await core.clients.put(client)
                if identity_web.IDENTITY in app:
                    doc = json.loads((DATA_DIR / "residents.json").read_text("utf-8"))
                    await app[identity_web.IDENTITY].sync(registry_entries(doc))
            if identity_web.IDENTITY in app:
                await app[identity_web.IDENTITY].refresh_revocations(force=True)
        except Exception as exc:  # noqa: BLE001 - the store is still coming back: again
            if attempt == 49:
                log.warning("store.recache_failed", error=type(exc).__name__)
                return
            await asyncio.sleep(0.2)
            continue
        log.info("store.recached", sandbox_reseeded=core.settings.is_sandbox)
        return


@contextlib.asynccontextmanager
async def _foundation(app: web.Application) -> AsyncIterator[Core]:
    settings, clock = app[SETTINGS], app[CLOCK]
    ensure_keys(settings, clock)
    token_files = KeyRingFiles(settings.keys_dir, "token")
    code_files = KeyRingFiles(settings.keys_dir, "code")
    trust_files = KeyRingFiles(settings.keys_dir, "trust")
    data_keys = load_data_keys(settings.keys_dir, settings.crypto_suite,
                               create=settings.is_sandbox, env_value=settings.data_key_b64)
    redis: RedisClient | None = None
    coalescer: Coalescer | None = None
    epoch: StoreEpoch | None = None
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
                           app.get(REGISTRY), refuse_at_start=not settings.is_sandbox,
                           listeners=[lambda reason: _store_lost(app)])
        await epoch.start()
    oidc_files = KeyRingFiles(settings.keys_dir, ID_TOKEN_PURPOSE)
    readiness: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
    if redis is not None:
        readiness.append(("redis", redis.ping))
        if not settings.is_sandbox:
            readiness.append(("redis_persistence", lambda: require_persistence(redis)))
    core = Core(settings=settings, clock=clock, data_keys=data_keys,
                token_ring=RingHolder(token_files, token_files.load()),
                code_ring=RingHolder(code_files, code_files.load()),
                trust_ring=RingHolder(trust_files, trust_files.load()),
                stores=build_stores(settings, clock, data_keys, redis, coalescer, epoch),
                scenes=SceneCatalogue.load(settings.scenes_file or DATA_DIR / "scenes.json"),
                redis=redis, coalescer=coalescer, epoch=epoch, readiness=readiness,
                id_token_ring=(RingHolder(oidc_files, oidc_files.load())
                               if settings.crypto_suite == "gm" and oidc_files.exists()
                               else None))
    try:
        async with background(_reload_rings(core)):  # rotated key rings, every 2 s
            yield core
    finally:
        if epoch is not None:
            await epoch.stop()
        if coalescer is not None:
            await coalescer.aclose()
        if redis is not None:
            await redis.aclose()


async def _reload_rings(core: Core, every_s: float = 2.0) -> None:
    while True:
        await asyncio.sleep(every_s)
        for holder in core.rings():
            try:
                if holder.reload_if_changed():
                    log.info("keys.reloaded", purpose=holder.files.purpose)
            except Exception:
                log.exception("keys.reload_failed", purpose=holder.files.purpose)


async def _rate_limits(app: web.Application, core: Core) -> None:
    """The per-caller limiter: in memory without Redis (one process); with Redis the GCRA
    script through the Coalescer, gate and rp limits spent a lease of cells at a time."""
    config = core.settings.rate_limits
    if not config.enabled:
        return
    limiter: RateLimiter
    if core.redis is not None and core.coalescer is not None:
        shared = RedisRateLimiter(core.redis, core.settings.redis_prefix + "rl:",
                                  commands=core.coalescer)
        await shared.load()
        limiter = LeasingRateLimiter(shared) if config.lease else shared
    else:
        limiter = MemoryRateLimiter(core.clock)
    app[ratelimit_web.CALLER_LIMITS] = ratelimit_web.CallerLimits(
        limiter, config, core.data_keys.ratelimit_subject_key,
        take=limiter.take if isinstance(limiter, LeasingRateLimiter) else None)


# ============================================================================ tokens
@dataclass(frozen=True)
class Tokens:
    signer: JwtSigner
    id_signer: JwtSigner   # ID tokens (gm suite: the ES256 ring; else the token ring's signer)
    id_alg: Callable[[], str]
    access: AccessTokens
    bearer: BearerAuthenticator
    grants: TokenService


async def _tokens(app: web.Application, core: Core, demo: DemoData | None) -> Tokens:
    """Clients (the sandbox's demo clients registered), client authentication, the token
    endpoint with the client_credentials grant, the bearer check, discovery and JWKS, the
    operator API."""
    settings, clock, clients = core.settings, core.clock, core.clients
    if demo is not None:
        for client in demo.clients(clock.now()):
            existing = await clients.get(client.client_id)
            if existing is None or existing.secret_hash != client.secret_hash \
                    or existing.jwks != client.jwks:
                await clients.put(client)
    signer = JwtSigner(core.token_ring, clock.now)
    access = AccessTokens(signer, settings.issuer, clock.now)
    bearer = BearerAuthenticator(access, core.single_use, clock.now)
    grants = TokenService()
    grants.register(ClientCredentialsGrant(access, settings.gate_token_ttl_s,
                                           settings.access_token_ttl_s))
    app[TOKEN_SIGNER] = signer
    app[ACCESS_TOKENS] = access
    app[AUTHENTICATOR] = bearer
    app[DPOP] = DpopVerifier(core.single_use, core.data_keys.derive_key("dpop-nonce"), clock.now,
                             settings.issuer)   # RFC 9449
    # client authentication reads records through a per-worker cache; the admin API writes
    # through it, so a change made here is seen at once (gateway/authz/client_auth.py)
    # the version is confirmed on every request (concurrent requests share one read): a lost or
    # frozen Redis fails token requests closed at once (tests/faults), and a client disabled
    # anywhere stops at once; what is cached is the record's parsing, not the store's word
    client_cache = ClientCache(clients, clock.now, check_every_s=0.0)
    app[oauth.CLIENT_AUTH] = ClientAuthenticator(
        client_cache, core.single_use, settings.issuer, clock.now,
        settings.client_assertion_max_ttl_s)
    app[oauth.TOKENS] = grants
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
    id_signer = signer if id_ring is core.token_ring else JwtSigner(id_ring, clock.now)
    app[ID_TOKEN_SIGNER] = id_signer
    app[meta.READINESS] = core.readiness
    app[meta.READYZ_TIMEOUT] = settings.readyz_timeout_s
    app[admin.CLIENT_STORE] = client_cache
    app[admin.NOW] = clock.now
    admin_token = settings.admin_token or (sandbox_admin_token(settings)
                                           if settings.is_sandbox else None)
    if admin_token:
        app[admin.ADMIN_TOKEN] = admin_token
    return Tokens(signer, id_signer, lambda: id_ring().current().alg, access, bearer, grants)


# ============================================================================ upstreams
@dataclass(frozen=True)
class Upstreams:
    ykb: YkbClient
    essc: EsscPlatformClient
    certificates: CertificateLibraryClient
    psam: Psam
    #: the one HTTP session (closed on shutdown); also carries back-channel logout deliveries
    session: aiohttp.ClientSession


@contextlib.asynccontextmanager
async def _upstreams(core: Core) -> AsyncIterator[Upstreams]:
    """The platforms behind the gateway, over one HTTP session (sandbox: the mounted
    upstream sandboxes, real HTTP on the gateway's own port)."""
    settings, clock = core.settings, core.clock
    policy = UpstreamPolicy(timeout_s=settings.upstream_timeout_s,
                            connect_timeout_s=min(1.0, settings.upstream_timeout_s))
    if settings.is_sandbox:
        base = settings.issuer + "/sandbox/upstreams"
        ykb_url, essc_url, certlib_url = base + "/ykb", base + "/essc", base + "/certlib"
        ykb_iss, essc_prefix = YKB_ISSUER, ESSC_ISSUER_PREFIX
        psam = PsamAttestation(master_key=PsamSandbox(settings.keys_dir).master_key)
    else:
        ykb_url = settings.ykb_url or "https://ykb.invalid"
        essc_url = settings.essc_url or "https://essc.invalid"
        certlib_url = settings.certlib_url or "https://certlib.invalid"
        ykb_iss = settings.ykb_issuer or YKB_ISSUER
        essc_prefix = settings.essc_issuer_prefix or ESSC_ISSUER_PREFIX
        keys_file = settings.psam_gate_keys_file  # JSON {gate_client_id: base64 K_gate}
        gate_keys = ({g: base64.b64decode(k) for g, k in
                      json.loads(Path(keys_file).read_text("utf-8")).items()}
                     if keys_file else {})
        psam = PsamAttestation(gate_keys=gate_keys)
    session = aiohttp.ClientSession()
    try:
        yield Upstreams(
            ykb=YkbClient(session, ykb_url, issuer=ykb_iss, audience=settings.issuer,
                          clock=clock, policy=policy),
            essc=EsscPlatformClient(session, essc_url, regions=settings.essc_regions,
                                    issuer_prefix=essc_prefix, audience=settings.issuer,
                                    clock=clock, policy=policy),
            certificates=CertificateLibraryClient(session, certlib_url, clock=clock,
                                                  policy=policy),
            psam=psam, session=session)
    finally:
        await session.close()


# ============================================================================ identity
@contextlib.asynccontextmanager
async def _identity(app: web.Application, core: Core, tokens: Tokens, upstreams: Upstreams, *,
                    on_suspension: Sequence[SuspensionObserver]
                    ) -> AsyncIterator[IdentityService]:
    """The one-person identity: the service over its store (telling the card deny-list and
    `on_suspension` of refusals), the assertion router for token exchange and links,
    (sandbox) the demo residents, and the revocation follower."""
    settings, clock = core.settings, core.clock
    store = core.stores.identity
    # the card deny-list for offline gates (docs/offline.md §5), told of every card refusal
    deny_lists = RevocationLists(
        core.stores.deny_list, core.trust_ring,
        CardHash(core.data_keys.card_deny_salt, settings.card_hash_iterations), clock.now,
        max_age_s=settings.deny_list_max_age_s)
    app[revocations_web.REVOCATIONS] = deny_lists
    service = IdentityService(store, clock, core.data_keys, deny_list=deny_lists,
                              on_suspension=on_suspension)
    ykb, essc = upstreams.ykb, upstreams.essc
    router = AssertionRouter({ykb.issuer: ykb, **{iss: essc for iss in essc.issuers}})

    async def resolve_person(ident: UpstreamIdentity) -> ResidentRef:
        return ResidentRef((await service.resolve_upstream(ident)).person_id)

    tokens.grants.register(TokenExchangeGrant(
        tokens.access, core.data_keys, core.single_use, router, resolve_person,
        clock.now, settings.access_token_ttl_s, is_suspended=service.person_suspended))
    app[identity_web.IDENTITY] = service
    app[admin.ADMIN_IDENTITY] = service
    app[identity_web.LINKS] = Links(service, router, core.single_use)
    if settings.is_sandbox:
        residents_doc = json.loads((DATA_DIR / "residents.json").read_text("utf-8"))
        report = await service.sync(registry_entries(residents_doc))
        log.info("identity.demo_residents", persons=report.persons, created=report.created)
    follower = None
    if isinstance(store, RedisIdentityStore) and core.redis is not None:
        follower = RevocationFollower(core.redis, store, service)
        await follower.start()
    try:
        yield service
    finally:
        if follower is not None:
            await follower.stop()


# ============================================================================ codes
def _codes(app: web.Application, core: Core, identity: IdentityService,
           upstreams: Upstreams) -> CodeService:
    """Issuing 渝快码 / e-SSC codes, the trust list, the scene catalogue."""
    settings = core.settings
    service = CodeService(
        code_ring=core.code_ring, data_keys=core.data_keys,
        trust=TrustList(
            core.code_ring, core.trust_ring, core.clock.now, scenes=lambda: core.scenes,
            max_age_s=settings.trust_list_max_age_s, code_max_skew_s=settings.code_max_skew_s,
            endorsements=core.trust_ring.files.endorsements),
        identity=GateIdentityAdapter(identity), essc=upstreams.essc, clock=core.clock,
        code_ttl_s=settings.code_ttl_s, refresh_in_s=settings.code_refresh_in_s)
    app[codes_web.CODES] = service
    app[codes_web.SCENES] = core.scenes
    if settings.is_sandbox and sandbox_web.ESSC in app:
        # The sandbox's e-SSC platform is served by this server, which does not listen yet:
        # its code keys are taken in-process at start (the refresher follows over HTTP).
        platform: Any = app[sandbox_web.ESSC]  # gateway.adapters.sandbox.EsscSandbox
        service.trust.set_essc_keys(
            [k for r in settings.essc_regions for k in platform.code_jwks(r)])
    return service


# ============================================================================ consents
def _consent_policy(settings: Settings) -> ConsentPolicy:
    policy_file = settings.consent_policy_file  # JSON {client_id: [certificate types]}
    if policy_file:
        doc = json.loads(Path(policy_file).read_text("utf-8"))
        return ConsentPolicy(types_by_client={k: frozenset(v) for k, v in doc.items()})
    return ConsentPolicy() if settings.is_sandbox else ConsentPolicy(types_by_client={})


@contextlib.asynccontextmanager
async def _consents(app: web.Application, core: Core, tokens: Tokens,
                    identity: IdentityService,
                    upstreams: Upstreams) -> AsyncIterator[tuple[ConsentService, SubjectLedger]]:
    """Consent store, audit trail (its signed checkpoints written outside Redis when
    configured), the certificate library, the holder's citizen ID from the identity service,
    the per-client type allow-list; and the subject ledger every place that hands out a
    subject (gate verify, ID tokens) reports to — only for sectors with consent-capable
    relying parties."""
    settings, clock = core.settings, core.clock

    async def citizen_ids(person_id: str) -> str | None:
        try:
            return await identity.citizen_id(person_id)
        except NotFound:
            return None

    app[admin.AUDIT_LOG] = core.stores.audit_log  # operator actions chain into the same log
    service = ConsentService(
        store=core.stores.consents, audit=AuditTrail(core.stores.audit_log, clock.now),
        library=upstreams.certificates, citizen_ids=citizen_ids, data_keys=core.data_keys,
        signer=tokens.signer, clients=core.clients, issuer=settings.issuer, clock=clock.now,
        policy=_consent_policy(settings))
    app[consents_web.CONSENTS] = service
    ledger = SubjectLedger(service.remember_subject, core.clients.list,
                           lambda cid: bool(service.policy.types_by_client.get(cid)),
                           clock.now)
    checkpoints = None
    if settings.audit_checkpoint_file is not None:   # signed heads, outside Redis
        checkpoints = CheckpointExporter(core.stores.audit_log, tokens.signer, settings.issuer,
                                         settings.audit_checkpoint_file,
                                         settings.audit_checkpoint_interval_s, clock.now)
        checkpoints.start()
    try:
        yield service, ledger
    finally:
        if checkpoints is not None:
            await checkpoints.stop()


# ============================================================================ login
def _login(app: web.Application, core: Core, tokens: Tokens, identity: IdentityService,
           ledger: SubjectLedger, upstreams: Upstreams) -> LoginService:
    """The OIDC provider: login sessions, codes, refresh families and remembered grants; the
    authorization_code and refresh_token grants; revocation/introspection of refresh tokens;
    OIDC Back-Channel Logout deliveries over the upstreams' HTTP session. Pairwise subjects
    and claims come from the identity service."""
    s, stores = core.settings, core.stores
    service = LoginService(
        clients=core.clients, sessions=stores.login_sessions, codes=stores.login_codes,
        refresh=stores.refresh_families, consents=stores.remembered_grants, persons=identity,
        subject_seen=ledger.seen, keys=core.data_keys, access=tokens.access,
        signer=tokens.id_signer, alg=tokens.id_alg, issuer=s.issuer,
        clock=core.clock.now, access_ttl_s=s.access_token_ttl_s,
        verify_bearer=tokens.bearer.verify, require_number=s.login_require_number,
        pushed=stores.pushed_requests,
        notify_logout=BackchannelNotifier(upstreams.session, s.upstream_timeout_s))
    app[login_web.LOGIN] = service
    tokens.grants.register(AuthorizationCodeGrant(service))
    tokens.grants.register(RefreshTokenGrant(service))
    app[oauth.REVOCATION_HOOKS].append(service.revocation_hook)
    app[oauth.INTROSPECTION_HOOKS].append(service.introspection_hook)
    # RFC 8628 for kiosks: approved in the app, or by a card tap on the kiosk's reader,
    # checked by the gates' card face with the kiosk's own (online) window
    devices = DeviceGrantService(
        store=stores.device_grants, login=service,
        cards=CardFace(psam=upstreams.psam, identity=GateIdentityAdapter(identity),
                       regions=s.essc_regions, max_age_s=TAP_MAX_AGE_S,
                       max_skew_s=s.code_max_skew_s),
        single_use=core.single_use, clock=core.clock.now, issuer=s.issuer,
        ttl_s=s.device_code_ttl_s, interval_s=s.device_poll_interval_s)
    app[device_web.DEVICE_GRANT] = devices
    tokens.grants.register(DeviceCodeGrant(devices))
    app[meta.DEVICE_AUTHORIZATION] = True   # discovery advertises it once it is built
    return service


# ============================================================================ devices
def _devices(app: web.Application, core: Core, identity: IdentityService,
             revocation_log: DeviceRevocationLog) -> DeviceService:
    """Device-bound YK2: codes: the enrolment service (the code key ring signs the
    certificates; holder and fare flags sealed as in YK1:) over the revocation log the
    identity service puts a suspended person's devices on."""
    s = core.settings

    async def flags_of(person_id: str) -> int:
        try:
            return seal_attributes(await identity.disclose(person_id, tuple(SEALABLE)))
        except NotFound:
            return 0

    service = DeviceService(
        revocation_log=revocation_log, single_use=core.single_use, code_ring=core.code_ring,
        # signed like the trust list and the card deny-list: by the trust-list key gates pin
        signing_ring=core.trust_ring, list_max_age_s=s.deny_list_max_age_s,
        holder=core.data_keys.code_holder,
        challenge_key=core.data_keys.derive_key("device-challenge"), clock=core.clock,
        cert_ttl_s=s.device_cert_ttl_s, max_devices=s.devices_max, flags_of=flags_of,
        suspended=identity.is_person_suspended)
    app[devices_web.DEVICES] = service
    return service


# ============================================================================ records
@dataclass(frozen=True)
class Records:
    """Transaction records: the store, the claims that append to it (with the single-use
    claim, in one round trip), and with Redis the outbox the exporter drains."""

    store: RecordStore
    claims: RecordingClaims
    outbox: RedisOutbox | None = None
    #: the daily roll-ups the exporter keeps in its write (PostgreSQL); None: the sandbox's
    #: in-memory roll-ups follow the record store instead
    stats: StatsStore | None = None
    #: gate → (venue, district, scene), shared by the roll-ups, /metrics and the admin API
    venues: VenueIndex = field(default_factory=VenueIndex)
    #: the live view's counters (GATEWAY_STATS_LIVE), counted with each record
    live: LiveCounters | None = None


#: the transaction records, once the records capability is built (operators, tests)
RECORDS = web.AppKey("records", Records)


@contextlib.asynccontextmanager
async def _records(app: web.Application, core: Core) -> AsyncIterator[Records]:
    """No I/O to PostgreSQL here: the pool connects on first use, so a gateway starts (and
    gates pass) while PostgreSQL is down; the outbox holds the records meanwhile. The
    exporter runs in every worker, working only while it holds the lock (one at a time
    across workers and hosts); on shutdown it finishes its step and lets the lock go."""
    s = core.settings
    metrics = app[transactions_web.RECORD_METRICS]
    async with contextlib.AsyncExitStack() as stack:
        store: RecordStore
        stats: PostgresStatsStore | None = None
        index = VenueIndex()
        if s.database_url:
            pool = await connect_pool(s.database_url, min_size=0)
            stack.push_async_callback(pool.close)
            stats = PostgresStatsStore(pool)

            async def places() -> Mapping[str, tuple[str, str, str]]:
                await index.refresh(core.stores.venues)  # one version read when unchanged
                return index.gates

            store = PostgresRecordStore(pool, ExporterRollups(stats, places))
        else:
            store = MemoryRecordStore()
        app[transactions_web.RECORD_STORE] = store
        if not s.transactions_enabled:
            yield Records(store, UnrecordedClaims(core.single_use), stats=stats, venues=index)
            return
        if core.redis is None or core.coalescer is None:
            single_use = core.single_use
            assert isinstance(single_use, MemorySingleUse)
            memory_live = MemoryLiveCounters() if s.stats_live else None
            yield Records(store, MemoryRecordingClaims(single_use, store, memory_live),
                          stats=stats, venues=index, live=memory_live)
            return
        claims = RedisRecordingClaims(core.coalescer, core.redis.script_load,
                                      prefix=s.redis_prefix, shards=s.transactions_outbox_shards,
                                      bound=s.transactions_outbox_max, on_full=metrics.dropped,
                                      epoch=core.epoch, live=s.stats_live)
        await claims.load()
        assert s.redis_url is not None
        # the exporter's own client: raw XRANGE replies, never queued behind the gate path
        outbox_redis = connect(s.redis_url, cluster=s.redis_cluster, max_connections=2)
        stack.push_async_callback(outbox_redis.aclose)
        if isinstance(outbox_redis, RedisCluster):
            await outbox_redis.initialize()
        outbox = RedisOutbox(outbox_redis, prefix=s.redis_prefix,
                             shards=s.transactions_outbox_shards,
                             bound=s.transactions_outbox_max)
        stop = asyncio.Event()
        if s.exporter_here:
            exporter = Exporter(outbox, store,
                                RedisExporterLock(core.redis, prefix=s.redis_prefix),
                                batch_size=s.transactions_export_batch,
                                # only where no gate waits on this loop: a lingered batch
                                # is one long step (thousands of records decoded and summed)
                                linger_s=0.0 if s.serves_http else s.transactions_export_linger_s,
                                retention_s=s.transactions_retention_days * 86400.0,
                                now=core.clock.now, metrics=metrics)
            app[EXPORTER] = exporter
            task = asyncio.ensure_future(exporter.run(stop))
        else:  # `gateway serve` runs the exporter in its own process (docs/records.md)
            task = asyncio.ensure_future(_watch_outbox(outbox, metrics, stop))
        try:
            live = (RedisLiveCounters(core.redis, prefix=s.redis_prefix,
                                      shards=s.transactions_outbox_shards)
                    if s.stats_live else None)
            yield Records(store, claims, outbox, stats=stats, venues=index, live=live)
        finally:
            stop.set()
            done, _ = await asyncio.wait({task}, timeout=10)
            if not done:  # never wait for ever on shutdown (wait_for waits out the cancel)
                task.cancel()
                log.warning("transactions.exporter_stop_timeout")


OUTBOX_WATCH_S: Final = 2.0


async def _watch_outbox(outbox: RedisOutbox, metrics: transactions_web.RecordMetrics,
                        stop: asyncio.Event) -> None:
    """A worker beside an exporter process: the outbox's length for this worker's /metrics
    (one XLEN per shard every OUTBOX_WATCH_S), as the exporter would have reported it."""
    while not stop.is_set():
        try:
            metrics.outbox_length(await outbox.length(), outbox.bound)
        except Exception as exc:  # noqa: BLE001 - Redis down: the gauge keeps its last value
            log.debug("transactions.outbox_watch_failed", error=type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), OUTBOX_WATCH_S)


# ============================================================================ gate
def _gate(app: web.Application, core: Core, identity: IdentityService, codes: CodeService,
          devices: DeviceService, upstreams: Upstreams, ledger: SubjectLedger,
          records: Records) -> GatePipeline:
    """The gate decision pipeline for 渝快码, e-SSC codes and card taps (each decision's
    transaction record appended with its single-use claim), and the offline gates' uploads
    re-verified through it."""
    s = core.settings
    gate_identity = GateIdentityAdapter(identity)
    # e-SSC keys not fetched yet (start-up, a new platform key): fetched on the first miss
    essc_keys = EsscKeyRefresh(codes.trust.lookup, upstreams.essc.code_keys,
                               codes.trust.set_essc_keys, s.essc_regions, core.clock.now,
                               min_interval_s=s.essc_keys_refresh_min_s,
                               wait_s=s.essc_keys_wait_s)
    app[codes_web.ESSC_KEY_REFRESH] = essc_keys
    pipeline = GatePipeline(
        scenes=core.scenes, sectors=GateSectors(core.clients, core.clock.now),
        codes=CodeFace(lookup=essc_keys.lookup, holder=core.data_keys.code_holder,
                       identity=gate_identity, max_skew_s=s.code_max_skew_s,
                       offline_max_s=s.offline_max_s,
                       device_revoked=devices.revocations.is_revoked),
        cards=CardFace(psam=upstreams.psam, identity=gate_identity, regions=s.essc_regions,
                       max_age_s=s.offline_max_s, max_skew_s=s.code_max_skew_s),
        claims=records.claims, identity=gate_identity, data_keys=core.data_keys,
        subject_seen=ledger.seen, count=app[METRICS].count, clock=core.clock,
        deny_ttl_s=s.offline_max_s + s.code_max_skew_s + RETRY_GRACE_S)
    app[gate_web.GATE] = pipeline
    app[offline_web.OFFLINE] = OfflineUploads(pipeline, records.claims, core.clock.now,
                                              offline_max_s=s.offline_max_s)
    return pipeline


# ============================================================================ operators
@contextlib.asynccontextmanager
async def _operators(app: web.Application, core: Core, records: Records) -> AsyncIterator[None]:
    """The operator's view (docs/operators.md): the live scene catalogue, the venue registry
    and the named operators over shared stores (Redis, or memory in a one-process sandbox);
    statistics rolled up from the record store; and a follower per worker that applies a new
    catalogue or venue version within `ops_poll_ms` — one small read per store per poll."""
    s, clock = core.settings, core.clock
    scene_store, venue_store = core.stores.scenes, core.stores.venues
    scenes = core.scenes

    def held_catalogue() -> list[dict[str, Any]]:
        """The catalogue this worker holds, as a store seeds it (no revision, no category)."""
        out = [sc.to_json() for sc in scenes.all()]
        for raw in out:
            raw.pop("revision", None)
            raw.pop("category", None)
        return out

    # The file seeds the store; scenes the store lacks (a new release's) are added to it.
    built = held_catalogue()
    if not await scene_store.seed(built):
        _, held = await scene_store.snapshot()
        known = {h["id"] for h in held}
        for raw in built:
            if raw["id"] not in known:
                await scene_store.put(raw, 0, {"updated_by": "seed", "updated_at": clock.now()})

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
    index = records.venues
    await index.refresh(venue_store)
    app[METRICS].district_of = index.district_of  # /metrics labels by district
    admin_token = app.get(admin.ADMIN_TOKEN) if s.is_sandbox else None
    app[admin.OPERATORS] = Operators(core.stores.operators, clock.now,
                                     bootstrap_token=admin_token)
    app[admin.SCENE_STORE] = scene_store
    app[admin.ADMIN_SCENES] = scenes
    app[admin.SCENES_RELOAD] = reload_scenes
    app[admin.VENUES] = VenueRegistry(venue_store, scenes)
    app[admin.VENUE_INDEX] = index
    stats_store: StatsStore = (records.stats if records.stats is not None
                               else memory_ops.MemoryStatsStore())
    statistics = Statistics(stats_store, scenes)
    app[stats_web.STATS] = statistics
    cursor: list[str | None] = [None]

    async def catch_up() -> None:
        """Roll up the records written since the last call (the record store's cursor) —
        the sandbox's in-memory roll-ups; with PostgreSQL the exporter keeps them."""
        if records.stats is not None:
            return
        while True:
            page = await records.store.page(cursor[0], 5000)
            if not page.records:
                return
            await statistics.ingest([r for _, r in page.records], index.gates)
            cursor[0] = page.next_cursor

    app[stats_web.STATS_CATCH_UP] = catch_up
    if records.live is not None:
        app[stats_web.LIVE] = records.live
    app[dashboard_web.SESSION_KEY] = core.data_keys.derive_key("dashboard-session")

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


async def _gateway_ctx(app: web.Application) -> AsyncIterator[None]:
    """Every capability, in dependency order; torn down in reverse."""
    async with contextlib.AsyncExitStack() as stack:
        core = await stack.enter_async_context(_foundation(app))
        app[CORE] = core
        demo = DemoData.load(core.settings) if core.settings.is_sandbox else None
        if demo is not None:
            app[DEMO_DATA] = demo
        records = await stack.enter_async_context(_records(app, core))
        app[RECORDS] = records
        await _rate_limits(app, core)
        tokens = await _tokens(app, core, demo)
        upstreams = await stack.enter_async_context(_upstreams(core))
        # built before the identity service, which tells it of every suspension
        device_log = DeviceRevocationLog(core.stores.devices, core.clock)
        identity = await stack.enter_async_context(
            _identity(app, core, tokens, upstreams, on_suspension=[device_log.on_suspension]))
        codes = _codes(app, core, identity, upstreams)
        _, ledger = await stack.enter_async_context(
            _consents(app, core, tokens, identity, upstreams))
        _login(app, core, tokens, identity, ledger, upstreams)
        devices = _devices(app, core, identity, device_log)
        _gate(app, core, identity, codes, devices, upstreams, ledger, records)
        # the operator's view: started here, before the codes' e-SSC key refresher
        # (codes_web.codes_ctx) starts in the background — it must not run while this awaits
        await stack.enter_async_context(_operators(app, core, records))
        yield


def build_app(settings: Settings, clock: Clock | None = None) -> web.Application:
    app = web.Application(middlewares=[edge_middleware],
                          client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[CLOCK] = clock or SystemClock()
    app[MAX_BODY] = settings.max_body_bytes
    app[http_web.STORE_FAULTS] = STORE_FAULTS   # answered 503 by the edge
    registry = CollectorRegistry()
    app[REGISTRY] = registry
    app[METRICS] = Metrics(registry)
    # /metrics is per worker process (docs/performance.md): say which one answered
    Info("gateway_worker", "The worker process behind this /metrics answer",
         registry=registry).info({"pid": str(os.getpid())})
    # /metrics sums every worker's request counters and every process's records counters
    # (the exporter process's too: gateway/web/server_metrics.py)
    records_metrics = transactions_web.RecordMetrics(registry, settings.metrics_dir)
    app[transactions_web.RECORD_METRICS] = records_metrics
    server_metrics_web.install(app, settings.metrics_dir, settings.metrics_flush_ms,
                               settings.metrics_token, worker=registry,
                               counters=records_metrics.counters,
                               serves_http=settings.serves_http)
    app[oauth.REVOCATION_HOOKS] = []
    app[oauth.INTROSPECTION_HOOKS] = []
    app.cleanup_ctx.append(_gateway_ctx)
    ratelimit_web.install_shedder(app, settings.rate_limits, registry)
    app.cleanup_ctx.append(devices_web.devices_ctx)   # device revocations kept fresh
    # e-SSC keys kept fresh; last, so that its first fetch (sandbox: from this very server)
    # is not made while a later context is still starting and nothing listens yet
    app.cleanup_ctx.append(codes_web.codes_ctx)
    for routes in (transactions_web.add_routes, identity_web.add_routes, meta.add_routes,
                   admin.add_routes, oauth.add_routes, codes_web.add_routes,
                   devices_web.add_routes, consents_web.add_routes, login_web.add_routes,
                   device_web.add_routes,
                   gate_web.add_routes, offline_web.add_routes, revocations_web.add_routes,
                   stats_web.add_routes, dashboard_web.add_routes):
        routes(app)
    if settings.is_sandbox:
        _mount_sandbox(app, settings)
    return app


# ============================================================================ sandbox
@dataclass(frozen=True)
class DemoData:
    """The sandbox's demo clients and gates (gateway/data/demo.json or GATEWAY_DEMO_DATA),
    parsed once, with their generated secrets."""

    groups: Mapping[str, list[dict[str, Any]]]   # "clients", "gates"
    secrets: Mapping[str, dict[str, Any]]

    @classmethod
    def load(cls, settings: Settings) -> DemoData:
        doc = _demo_doc(settings)
        return cls({g: list(doc[g]) for g in ("clients", "gates")},
                   demo_secrets(settings, doc))

    def entries(self) -> list[dict[str, Any]]:
        return self.groups["clients"] + self.groups["gates"]

    def clients(self, now: float) -> list[Client]:
        out = []
        for c in self.entries():
            kind = c.get("kind", "gate")
            cred = self.secrets.get(c["client_id"], {})
            out.append(Client(
                client_id=c["client_id"], kind=kind, display_name=c["display_name"],
                auth_method=c.get("auth_method", "client_secret_basic"),
                secret_hash=(hash_secret(cred["client_secret"]) if "client_secret" in cred
                             else None),
                jwks=(cred["public_jwk"],) if "public_jwk" in cred else (),
                scopes=tuple(c.get("scopes") or DEFAULT_SCOPES[kind]),
                sector=c.get("sector", ""), redirect_uris=tuple(c.get("redirect_uris") or ()),
                post_logout_redirect_uris=tuple(c.get("post_logout_redirect_uris") or ()),
                scene=c.get("scene"), operator=c.get("operator"), created_at=now,
                grant_types=tuple(c.get("grant_types") or ())))
        return out

    def listing(self, allowed_types: Callable[[str], frozenset[str]]) -> dict[str, Any]:
        """GET /sandbox/v1/demo: every demo client with its credentials."""
        out: dict[str, Any] = {"clients": [], "gates": []}
        for group in ("clients", "gates"):
            for c in self.groups[group]:
                kind = c.get("kind", "gate")
                entry = {"client_id": c["client_id"], "kind": kind,
                         "display_name": c["display_name"],
                         "auth_method": c.get("auth_method", "client_secret_basic"),
                         "scopes": list(c.get("scopes") or DEFAULT_SCOPES[kind]),
                         "sector": c.get("sector"), "scene": c.get("scene")}
                if kind == "rp":   # what a newcomer needs to log in and ask for consent
                    entry["redirect_uris"] = list(c.get("redirect_uris") or ())
                    entry["post_logout_redirect_uris"] = list(
                        c.get("post_logout_redirect_uris") or ())
                    entry["certificate_types"] = sorted(allowed_types(c["client_id"]))
                    entry["grant_types"] = list(c.get("grant_types") or ())
                cred = self.secrets.get(c["client_id"], {})
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


DEMO_DATA = web.AppKey("demo_data", DemoData)


def _demo_doc(settings: Settings) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        (settings.demo_data or DATA_DIR / "demo.json").read_text("utf-8"))
    return doc


def demo_secrets(settings: Settings, doc: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Secrets and private keys of the sandbox's demo clients: generated at first run under
    keys/sandbox/ (0600), never in git; shown by GET /sandbox/v1/demo."""
    path = settings.keys_dir / "sandbox" / "demo-secrets.json"
    demo = doc if doc is not None else _demo_doc(settings)
    out: dict[str, Any] = dict(json.loads(read_private_pem(path))) if path.exists() else {}
    missing = [c for c in list(demo["clients"]) + list(demo["gates"])
               if c["client_id"] not in out]
    if not missing:
        return out
    for c in missing:   # a demo client added since the file was written gets its own too
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
    path = settings.keys_dir / "sandbox" / "admin-token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(path, secrets.token_urlsafe(32).encode())
    return read_private_pem(path).decode().strip()


def _mount_sandbox(app: web.Application, settings: Settings) -> None:
    """Sandbox: the upstream platforms as sub-apps under /sandbox/upstreams/<name>, and the
    /sandbox/v1/* endpoints (never registered in production: 404 there)."""
    residents = load_residents()
    # 国密 suite: the Chongqing e-SSC platform signs its codes with SM2 (Sichuan stays ES256,
    # so both forms stand in one trust list).
    sm2_regions = ("CQ",) if settings.crypto_suite == "gm" else ()
    subs = build_sandbox_upstreams(residents, settings.keys_dir, settings.issuer,
                                   clock=app[CLOCK], sm2_regions=sm2_regions)
    for name, sub in subs.items():
        app.add_subapp(f"/sandbox/upstreams/{name}", sub)
    app[sandbox_web.RESIDENTS] = residents
    app[sandbox_web.YKB] = subs["ykb"][YKB_SANDBOX]
    app[sandbox_web.ESSC] = subs["essc"][ESSC_SANDBOX]
    app[sandbox_web.PSAM] = PsamSandbox(settings.keys_dir)

    def listing() -> dict[str, Any]:
        return app[DEMO_DATA].listing(app[consents_web.CONSENTS].policy.allowed_types)

    app[sandbox_web.DEMO] = listing
    sandbox_web.add_routes(app)
