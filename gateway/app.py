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

from gateway.adapters.keyfiles import KeyRingFiles, load_data_master_key
from gateway.adapters.memory import MemoryClientStore, MemorySingleUse
from gateway.adapters.redis_store import (
    Coalescer,
    RedisClient,
    RedisClientStore,
    RedisSingleUse,
    connect,
)
from gateway.authz.client_auth import ClientAuthenticator
from gateway.authz.clients import DEFAULT_SCOPES, Client, hash_secret
from gateway.authz.datakeys import DataKeys
from gateway.authz.keyring import Alg, KeyRing
from gateway.authz.tokens import AccessTokens, JwtSigner
from gateway.clock import Clock, SystemClock
from gateway.ports import ClientStore, SingleUse
from gateway.services.auth import BearerAuthenticator
from gateway.services.tokens import ClientCredentialsGrant, TokenService
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


CORE = web.AppKey("core", Core)


def ensure_keys(settings: Settings, clock: Clock) -> None:
    """First run of the sandbox: generate dev keys under keys/. Production: keys must exist."""
    now = clock.now()
    for purpose, alg in (("token", TOKEN_ALG), ("code", CODE_ALG)):
        files = KeyRingFiles(settings.keys_dir, purpose)
        if settings.is_sandbox:
            files.ensure(alg, now)
        else:
            files.load()
    load_data_master_key(settings.keys_dir, create=settings.is_sandbox,
                         env_value=settings.data_key_b64)
    if settings.is_sandbox:
        demo_secrets(settings)


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
            scene=c.get("scene"), operator=c.get("operator"), created_at=now))
    return out


async def _core_ctx(app: web.Application) -> AsyncIterator[None]:
    settings: Settings = app[SETTINGS]
    clock: Clock = app[CLOCK]
    ensure_keys(settings, clock)
    token_files = KeyRingFiles(settings.keys_dir, "token")
    code_files = KeyRingFiles(settings.keys_dir, "code")
    data_keys = DataKeys(load_data_master_key(settings.keys_dir, create=settings.is_sandbox,
                                              env_value=settings.data_key_b64))
    redis: RedisClient | None = None
    coalescer: Coalescer | None = None
    if settings.redis_url:
        redis = connect(settings.redis_url, cluster=settings.redis_cluster)
        if isinstance(redis, RedisCluster):
            # learn the slot map before concurrent use (redis-py's lazy set-up races)
            await redis.initialize()
        coalescer = Coalescer(redis)
        single_use: SingleUse = RedisSingleUse(coalescer, settings.redis_prefix)
        clients: ClientStore = RedisClientStore(redis, settings.redis_prefix)
    else:
        single_use = MemorySingleUse(clock)
        clients = MemoryClientStore()
    core = Core(settings=settings, clock=clock, data_keys=data_keys,
                token_ring=RingHolder(token_files, token_files.load()),
                code_ring=RingHolder(code_files, code_files.load()),
                single_use=single_use, clients=clients, redis=redis, coalescer=coalescer)
    if redis is not None:
        core.readiness.append(("redis", redis.ping))
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
    app[oauth.CLIENT_AUTH] = ClientAuthenticator(
        clients, single_use, (settings.issuer, f"{settings.issuer}/oauth2/token"), clock.now,
        settings.client_assertion_max_ttl_s)
    tokens = TokenService()
    tokens.register(ClientCredentialsGrant(access, settings.gate_token_ttl_s,
                                           settings.access_token_ttl_s))
    app[oauth.TOKENS] = tokens
    app[oauth.TOKENS_ISSUER] = settings.issuer
    app[meta.ISSUER] = settings.issuer
    app[meta.JWKS] = lambda: core.token_ring().jwks(clock.now())
    app[meta.READINESS] = core.readiness
    app[admin.CLIENT_STORE] = clients
    app[admin.NOW] = clock.now
    admin_token = settings.admin_token or (sandbox_admin_token(settings)
                                           if settings.is_sandbox else None)
    if admin_token:
        app[admin.ADMIN_TOKEN] = admin_token
    # --- codes, trust list, scenes (issue 3; gateway/web/codes.py) ---
    from gateway.services.codes import CodeService as _CodeService
    from gateway.services.scenes import SceneCatalogue as _SceneCatalogue
    from gateway.services.trustlist import TrustList as _TrustList
    from gateway.web import codes as _codes
    app[_codes.SCENES] = _SceneCatalogue.load(settings.scenes_file or DATA_DIR / "scenes.json")
    app[_codes.CODES] = _CodeService(
        code_ring=core.code_ring, data_keys=data_keys, single_use=single_use,
        scenes=app[_codes.SCENES], trust=_TrustList(core.code_ring, core.token_ring, clock.now),
        clients=clients, clock=clock, code_ttl_s=settings.code_ttl_s,
        max_skew_s=settings.code_max_skew_s, refresh_in_s=settings.code_refresh_in_s)
    # --- end codes ---

    reloader = asyncio.ensure_future(_reload_rings(core))
    try:
        yield
    finally:
        reloader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reloader
        if coalescer is not None:
            await coalescer.aclose()
        if redis is not None:
            await redis.aclose()


async def _reload_rings(core: Core, every_s: float = 2.0) -> None:
    while True:
        await asyncio.sleep(every_s)
        for holder in (core.token_ring, core.code_ring):
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
    from gateway.services.scenes import SceneCatalogue
    from gateway.services.tokens import ResidentRef, TokenExchangeGrant
    from gateway.services.upstream import PsamAttestation, UpstreamIdentity
    from gateway.web import codes as _codes
    from gateway.web import identity as _identity

    core = app[CORE]
    settings, clock = core.settings, core.clock
    store: Any = (RedisIdentityStore(core.redis, settings.redis_prefix, core.coalescer)
                  if core.redis is not None else MemoryIdentityStore())
    service = ids.IdentityService(store, clock, core.data_keys)
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
        clock.now, settings.access_token_ttl_s))
    scenes = (app[_codes.SCENES] if _codes.SCENES in app
              else SceneCatalogue.load(settings.scenes_file or DATA_DIR / "scenes.json"))
    app[_identity.IDENTITY] = service
    app[admin.ADMIN_IDENTITY] = service
    app[_identity.LINKS] = ids.Links(service, router, core.single_use)
    app[_identity.CARD_TAPS] = ids.CardTaps(service, psam, core.single_use, regions=regions)
    app[_identity.IDENTITY_SCENES] = scenes
    app[_identity.IDENTITY_CLIENTS] = core.clients
    if _codes.CODES in app:
        codes_service = app[_codes.CODES]
        if codes_service.identity is None:
            codes_service.identity = ids.CodeIdentityAdapter(service)
        if codes_service.essc is None:
            codes_service.essc = essc
    if settings.is_sandbox:
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
    subs = build_sandbox_upstreams(residents, settings.keys_dir, settings.issuer,
                                   clock=app[CLOCK])
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
    from gateway.adapters import memory_oidc, redis_oidc
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
    service = LoginService(
        clients=core.clients, sessions=stores[0], codes=stores[1], refresh=stores[2],
        consents=stores[3], persons=lambda: app[_identity.IDENTITY], keys=core.data_keys,
        access=app[ACCESS_TOKENS], signer=app[TOKEN_SIGNER],
        alg=lambda: core.token_ring().current().alg, issuer=s.issuer, clock=clock.now,
        access_ttl_s=s.access_token_ttl_s, verify_bearer=app[AUTHENTICATOR].verify,
        require_number=s.login_require_number)
    app[_login.LOGIN] = service
    app[oauth.TOKENS].register(AuthorizationCodeGrant(service))
    app[oauth.TOKENS].register(RefreshTokenGrant(service))
    app[oauth.REVOCATION_HOOKS].append(service.revocation_hook)
    app[oauth.INTROSPECTION_HOOKS].append(service.introspection_hook)
    yield
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
    audit_log: Any = (RedisAuditLog(core.redis, settings.redis_prefix)
                      if core.redis is not None else MemoryAuditLog())
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
    try:
        yield
    finally:
        await session.close()
# --- end consents ---


SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
TOKEN_SIGNER = web.AppKey("token_signer", JwtSigner)
ACCESS_TOKENS = web.AppKey("access_tokens", AccessTokens)


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
                            settings.metrics_token)
    # --- end issue 15 ---
    app[oauth.REVOCATION_HOOKS] = []
    app[oauth.INTROSPECTION_HOOKS] = []
    app.cleanup_ctx.append(_core_ctx)
    # --- identity + sandbox (issue 4) ---
    from gateway.web import identity as _identity
    app.cleanup_ctx.append(_identity_ctx)
    _identity.add_routes(app)
    if settings.is_sandbox:
        _mount_sandbox(app, settings)
    # --- end identity + sandbox ---
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
    app.cleanup_ctx.append(_subject_index_ctx)  # after every feature it connects
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

    async def reload_scenes() -> None:
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
    app[_stats.STATS] = Statistics(memory_ops.MemoryStatsStore(), scenes)
    app[_dashboard.SESSION_KEY] = derive(load_data_master_key(
        s.keys_dir, create=False, env_value=s.data_key_b64), "dashboard-session")

    async def follow() -> None:
        while True:
            await asyncio.sleep(s.ops_poll_ms / 1000)
            try:
                if str(await scene_store.version()) != scenes.version:
                    await reload_scenes()
                    log.info("scenes.reloaded", version=scenes.version)
                await index.refresh(venue_store)
            except Exception as exc:  # noqa: BLE001 - keep serving what we have, retry
                log.warning("ops.follow_failed", error=type(exc).__name__)

    follower = asyncio.ensure_future(follow())
    try:
        yield
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
# --- end operator's view ---


async def _subject_index_ctx(app: web.Application) -> AsyncIterator[None]:
    """Connect the consent feature's subject index to every place a subject is handed out
    (code verify, card verify, ID tokens) — only for sectors with consent-capable RPs."""
    from gateway.services.subjects import SubjectLedger
    from gateway.web import codes as _codes
    from gateway.web import consents as _consents
    from gateway.web import identity as _identity
    from gateway.web import login as _login

    core = app[CORE]
    consents = app[_consents.CONSENTS]
    ledger = SubjectLedger(consents.remember_subject, core.clients.list,
                           lambda cid: bool(consents.policy.types_by_client.get(cid)),
                           core.clock.now)
    app[_codes.CODES].subject_seen = ledger.seen
    app[_identity.CARD_TAPS].subject_seen = ledger.seen
    app[_login.LOGIN].subject_seen = ledger.seen
    yield
