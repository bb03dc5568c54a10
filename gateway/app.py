"""The composition root: builds stores, key rings, adapters and services from Settings,
registers routes and middlewares, and owns every lifetime (aiohttp cleanup_ctx).

The only module that knows every concrete class. Nothing here runs at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

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
from gateway.web import meta, oauth
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
                         env_value=_env("GATEWAY_DATA_KEY"))
    if settings.is_sandbox:
        demo_secrets(settings)


def _env(name: str) -> str | None:
    import os

    return os.environ.get(name) or None


def demo_secrets(settings: Settings) -> dict[str, Any]:
    """Secrets and private keys of the sandbox's demo clients: generated at first run under
    keys/sandbox/ (0600), never in git; shown by GET /sandbox/v1/demo."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from gateway.adapters.keyfiles import _write_private, read_private_pem
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
    _write_private(path, json.dumps(out).encode())
    return out


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
                                              env_value=_env("GATEWAY_DATA_KEY")))
    redis: RedisClient | None = None
    coalescer: Coalescer | None = None
    if settings.redis_url:
        redis = connect(settings.redis_url, cluster=_env("GATEWAY_REDIS_CLUSTER") == "true")
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
    # --- codes, trust list, scenes (issue 3; gateway/web/codes.py) ---
    from gateway.services.codes import CodeService as _CodeService
    from gateway.services.scenes import SceneCatalogue as _SceneCatalogue
    from gateway.services.trustlist import TrustList as _TrustList
    from gateway.web import codes as _codes
    app[_codes.SCENES] = _SceneCatalogue.load(DATA_DIR / "scenes.json")
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
            except Exception:  # noqa: BLE001 - keep serving with the ring we have
                log.exception("keys.reload_failed", purpose=holder.files.purpose)


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
    app[oauth.REVOCATION_HOOKS] = []
    app[oauth.INTROSPECTION_HOOKS] = []
    app.cleanup_ctx.append(_core_ctx)
    # --- rate limits + overload shedding (issue 7; gateway/web/ratelimit.py) ---
    from gateway.web import ratelimit as _ratelimit
    _ratelimit.install(app, CORE)
    # --- end rate limits ---
    meta.add_routes(app)
    oauth.add_routes(app)
    # --- codes, trust list, scenes (issue 3) ---
    from gateway.web import codes as _codes
    app.cleanup_ctx.append(_codes.codes_ctx)
    _codes.add_routes(app)
    # --- end codes ---
    return app
