"""Client authentication at the token, revocation and introspection endpoints.

- `client_secret_basic` / `client_secret_post`: RFC 6749 §2.3.1 (secrets compared as digests,
  constant time).
- `private_key_jwt`: RFC 7523 §2.2 / §3 and OIDC Core §9: a JWT signed with a key the client
  registered; `iss` = `sub` = client_id, `aud` exactly our issuer identifier as a single
  string (draft-ietf-oauth-rfc7523bis, FAPI 2.0: an array or the token endpoint URL lets an
  assertion made for another server be replayed here), `exp` within a bounded lifetime,
  `jti` single use (claimed for the assertion's remaining life).
Each failure is `invalid_client` (401); the reason goes only to the log.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Mapping
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
