"""Client authentication at the token, revocation and introspection endpoints.

- `client_secret_basic` / `client_secret_post`: RFC 6749 §2.3.1 (secrets compared as digests,
  constant time).
- `private_key_jwt`: RFC 7523 §2.2 / §3 and OIDC Core §9: a JWT signed with a key the client
  registered; `iss` = `sub` = client_id, `aud` exactly our issuer identifier as a single
  string (draft-ietf-oauth-rfc7523bis, FAPI 2.0: an array or the token endpoint URL lets an
  assertion made for another server be replayed here), `exp` within a bounded lifetime,
  `jti` single use (claimed for the assertion's remaining life).
Each failure is `invalid_client` (401); the reason goes only to the log.

Client records are read through a `ClientCache` (per worker): the token and introspection
endpoints no longer read the record from the store on every request. A change made in this
process (the admin API writes through the cache) takes effect at once; one made elsewhere
(another worker, the `gateway clients` command) within CLIENT_VERSION_CHECK_S, the interval at
which the cache re-reads the store's version (docs/oidc.md "Client records").
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import unquote_plus

import jwt

from gateway.authz.clients import PUBLIC_KINDS, Client
from gateway.authz.tokens import check_times
from gateway.errors import OAuthError
from gateway.ports import ClientStore, SingleUse

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLIENT_ASSERTION_ALGS = ("ES256", "EdDSA")


def invalid_client(debug: str, basic: bool = False) -> OAuthError:
    headers = {"WWW-Authenticate": 'Basic realm="gateway"'} if basic else None
    return OAuthError("invalid_client", "Client authentication failed", 401, debug=debug,
                      headers=headers)


def parse_basic(authorization: str | None) -> tuple[str, str] | None:
    """RFC 6749 §2.3.1: id and secret are form-urlencoded, then Basic-encoded."""
    if not authorization or not authorization[:6].lower() == "basic ":
        return None
    try:
        raw = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise invalid_client("basic header not base64", basic=True) from None
    if ":" not in raw:
        raise invalid_client("basic header without colon", basic=True)
    cid, secret = raw.split(":", 1)
    return unquote_plus(cid), unquote_plus(secret)


#: How often (at most) a worker re-reads the client store's version: the bound on how long a
#: client disabled or given a new secret by another process keeps working in this one.
CLIENT_VERSION_CHECK_S = 1.0
#: The longest a record stays cached even when the version never changes.
CLIENT_CACHE_TTL_S = 60.0


class ClientCache:
    """The client registry (the ClientStore port) with reads cached in this worker.

    `get` answers from memory while the store's `version()` — re-read at most once every
    `check_every_s` on the injected clock, one read at a time — is the one seen when the
    record was cached, and for at most `ttl_s`. A changed version (any client put by any
    process, or a store that lost its data) drops every cached record. `put` writes through
    and drops this worker's copy at once. Unknown ids are not cached (a flood of made-up ids
    must not evict real clients). A store error is raised, never answered from the cache
    past the version check (fail closed: a disabled client must not outlive an outage)."""

    def __init__(self, store: ClientStore, clock: Callable[[], float], *,
                 check_every_s: float = CLIENT_VERSION_CHECK_S,
                 ttl_s: float = CLIENT_CACHE_TTL_S, size: int = 10_000) -> None:
        self._store = store
        self._now = clock
        self._check_every = check_every_s
        self._ttl = ttl_s
        self._size = size
        self._cache: OrderedDict[str, tuple[float, Client]] = OrderedDict()
        self._version: str | None = None
        self._checked_until = float("-inf")
        self._checking: asyncio.Future[None] | None = None
        self._generation = 0  # moves on every drop: a read that overlaps one is not cached

    async def get(self, client_id: str) -> Client | None:
        now = self._now()
        if now >= self._checked_until:
            await self._check_version()
        hit = self._cache.get(client_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        generation = self._generation
        client = await self._store.get(client_id)
        if client is not None and generation == self._generation:
            self._cache.pop(client_id, None)
            self._cache[client_id] = (now + self._ttl, client)
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return client

    async def _check_version(self) -> None:
        if self._checking is None:
            self._checking = asyncio.ensure_future(self._read_version())
            self._checking.add_done_callback(self._checked)
        await asyncio.shield(self._checking)

    def _checked(self, task: asyncio.Future[None]) -> None:
        self._checking = None
        if not task.cancelled():
            task.exception()  # each waiter re-raises it; never "never retrieved"

    async def _read_version(self) -> None:
        now = self._now()
        version = await self._store.version()
        if version != self._version:
            self.forget()
            self._version = version
        self._checked_until = now + self._check_every

    def forget(self) -> None:
        """Drop every cached record."""
        self._cache.clear()
        self._generation += 1

    async def put(self, client: Client) -> None:
        self.forget()  # before and after: a read in flight must not cache the old record
        await self._store.put(client)
        self.forget()

    async def list(self) -> Sequence[Client]:
        return await self._store.list()

    async def version(self) -> str | None:
        return await self._store.version()


class ClientAuthenticator:
    def __init__(self, clients: ClientStore, replay: SingleUse, issuer: str,
                 clock: Callable[[], float], max_assertion_ttl_s: int = 300) -> None:
        self._clients = clients
        self._replay = replay
        self._issuer = issuer
        self._now = clock
        self._max_ttl = max_assertion_ttl_s

    async def _load(self, client_id: str, basic: bool = False) -> Client:
        if not client_id or len(client_id) > 128:
            raise invalid_client("bad client_id", basic)
        client = await self._clients.get(client_id)
        if client is None or client.disabled:
            raise invalid_client("unknown or disabled client", basic)
        return client

    async def authenticate(self, authorization: str | None, form: Mapping[str, str]) -> Client:
        basic = parse_basic(authorization)
        assertion = form.get("client_assertion")
        methods = sum(x is not None for x in (basic, assertion, form.get("client_secret")))
        if methods > 1:
            raise invalid_client("more than one authentication method")
        if basic is not None:
            client = await self._load(basic[0], basic=True)
            if form.get("client_id") not in (None, basic[0]):
                raise invalid_client("client_id differs from basic credentials", basic=True)
            if client.auth_method != "client_secret_basic" or not client.check_secret(basic[1]):
                raise invalid_client("wrong secret or method", basic=True)
            return client
        if assertion is not None:
            return await self._authenticate_jwt(assertion, form)
        if form.get("client_secret") is not None:
            client = await self._load(form.get("client_id", ""))
            if client.auth_method != "client_secret_post" or \
                    not client.check_secret(form["client_secret"]):
                raise invalid_client("wrong secret or method")
            return client
        client_id = form.get("client_id")
        if client_id:
            client = await self._load(client_id)
            if client.is_public and client.kind in PUBLIC_KINDS:
                return client  # public client: PKCE carries the proof (RFC 7636)
        raise invalid_client("no client authentication", basic=True)

    async def _authenticate_jwt(self, assertion: str, form: Mapping[str, str]) -> Client:
        if form.get("client_assertion_type") != JWT_BEARER:
            raise invalid_client("wrong client_assertion_type")
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            raise invalid_client("assertion malformed") from None
        client_id = str(unverified.get("iss", ""))
        if form.get("client_id") not in (None, client_id):
            raise invalid_client("client_id differs from assertion issuer")
        client = await self._load(client_id)
        if client.auth_method != "private_key_jwt":
            raise invalid_client("client does not use private_key_jwt")
        if header.get("alg") not in CLIENT_ASSERTION_ALGS:
            raise invalid_client("assertion algorithm not allowed")
        jwk = _find_key(client.jwks, header.get("kid"), str(header.get("alg")))
        if jwk is None:
            raise invalid_client("unknown kid")
        now = self._now()
        try:
            claims = jwt.decode(
                assertion, jwk, algorithms=[str(header["alg"])], issuer=client_id,
                # exp / nbf on the injected clock, not pyjwt's wall clock
                options={"require": ["iss", "sub", "aud", "exp", "jti"], "verify_aud": False,
                         "verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
            check_times(claims, now, 5, iat=False)
        except jwt.PyJWTError as exc:
            raise invalid_client(f"assertion rejected: {type(exc).__name__}") from None
        aud = claims.get("aud")
        if not isinstance(aud, str) or not hmac.compare_digest(aud.encode(),
                                                               self._issuer.encode()):
            raise invalid_client("aud is not exactly the issuer")
        if claims.get("sub") != client_id:
            raise invalid_client("sub differs from iss")
        exp = float(claims["exp"])
        if exp - now > self._max_ttl:
            raise invalid_client("assertion lifetime too long")
        jti = str(claims["jti"])
        if not jti or len(jti) > 256:
            raise invalid_client("bad jti")
        if await self._replay.claim(f"ca:{client_id}:{jti}", exp - now + 10) is not None:
            raise invalid_client("assertion replayed")
        return client


def _find_key(jwks: tuple[dict[str, Any], ...], kid: Any, alg: str) -> Any:
    for k in jwks:
        if kid is not None and k.get("kid") != kid:
            continue
        if k.get("alg") not in (None, alg):
            continue
        try:
            return jwt.PyJWK(k, algorithm=alg).key
        except jwt.PyJWTError:
            continue
    return None
