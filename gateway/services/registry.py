"""Operator use cases on the client registry: register a client or gate, list, disable.

Shared by the `gateway clients|gates` commands and the admin API, so both validate alike
(RFC 7591 metadata rules: redirect URIs absolute, no fragments; https except loopback).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import jwt

from gateway.authz.clients import (
    AUTH_METHODS,
    DEFAULT_SCOPES,
    KIND_SCOPES,
    KINDS,
    PUBLIC_KINDS,
    Client,
    hash_secret,
    new_secret,
)
from gateway.authz.device import DEVICE_CODE_GRANT
from gateway.errors import Conflict, InvalidRequest, NotFound
from gateway.ports import ClientStore

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


def _check_redirect_uri(uri: str) -> None:
    """RFC 6749 §3.1.2 + RFC 8252 §7.3: absolute, no fragment; https unless loopback."""
    parts = urlsplit(uri)
    if not parts.scheme or not parts.netloc or parts.fragment:
        raise InvalidRequest("redirect URIs must be absolute and carry no fragment")
    if parts.scheme != "https" and not (parts.scheme == "http"
                                        and parts.hostname in LOOPBACK_HOSTS):
        raise InvalidRequest("redirect URIs must use https (http only on loopback)")


def _check_jwk(k: Any) -> None:
    """A public signing key of an algorithm client assertions may use (RFC 7517, 7518)."""
    if not isinstance(k, dict) or "d" in k:
        raise InvalidRequest("jwks must hold public keys only")
    if k.get("use", "sig") != "sig" or k.get("alg", "ES256") not in ("ES256", "EdDSA") \
            or not isinstance(k.get("kid", ""), str):
        raise InvalidRequest("each JWK is a signing key (use sig, alg ES256 or EdDSA)")
    try:
        jwt.PyJWK(k, algorithm=k.get("alg") or ("EdDSA" if k.get("kty") == "OKP" else "ES256"))
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        raise InvalidRequest("a JWK is not a valid EC P-256 or Ed25519 public key") from None


def _str_list(spec: Mapping[str, Any], name: str) -> tuple[str, ...]:
    v = spec.get(name)
    if v is None:
        return ()
    if not isinstance(v, list | tuple) or not all(isinstance(x, str) and x for x in v):
        raise InvalidRequest(f"{name} must be a list of strings")
    return tuple(v)


async def register_client(store: ClientStore, spec: Mapping[str, Any],
                          now: Callable[[], float]) -> tuple[Client, str | None]:
    """Validate and store a new client; return it and its secret (shown once) if it has one."""
    client_id = spec.get("client_id")
    if not isinstance(client_id, str) or not (3 <= len(client_id) <= 64) or \
            not all(c.isalnum() or c in "-_." for c in client_id):
        raise InvalidRequest("client_id: 3–64 characters of letters, digits, - _ .")
    kind = spec.get("kind")
    if kind not in KINDS:
        raise InvalidRequest(f"kind must be one of {', '.join(KINDS)}")
    auth_method = spec.get("auth_method", "client_secret_basic")
    if auth_method not in AUTH_METHODS:
        raise InvalidRequest(f"auth_method must be one of {', '.join(AUTH_METHODS)}")
    if auth_method == "none" and kind not in PUBLIC_KINDS:
        # RFC 6749 §2.1 / §4.4: gates (client_credentials) and apps must authenticate.
        raise InvalidRequest("auth_method none (a public client) is only for kind rp")
    name = spec.get("display_name")
    if not isinstance(name, str) or not name or len(name) > 128:
        raise InvalidRequest("display_name is required (at most 128 characters)")
    redirect_uris = _str_list(spec, "redirect_uris")
    post_logout = _str_list(spec, "post_logout_redirect_uris")
    backchannel = spec.get("backchannel_logout_uri")
    if backchannel is not None and (not isinstance(backchannel, str) or len(backchannel) > 1024
                                    or kind != "rp"):
        raise InvalidRequest("backchannel_logout_uri: an https URL (http on loopback), kind rp")
    for uri in redirect_uris + post_logout + ((backchannel,) if backchannel else ()):
        _check_redirect_uri(uri)
    raw_jwks = spec.get("jwks")
    if raw_jwks is not None and not isinstance(raw_jwks, list | tuple):
        raise InvalidRequest("jwks must be a list of public JWKs")
    jwks = tuple(raw_jwks or ())
    if auth_method == "private_key_jwt" and not jwks:
        raise InvalidRequest("private_key_jwt needs the client's public keys (jwks)")
    for k in jwks:
        _check_jwk(k)
    for name in ("scene", "operator", "sector"):
        value = spec.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > 128):
            raise InvalidRequest(f"{name} must be a string of at most 128 characters")
    if kind == "gate" and not spec.get("scene"):
        raise InvalidRequest("a gate needs its scene")
    scopes = tuple(dict.fromkeys(_str_list(spec, "scopes"))) or DEFAULT_SCOPES[kind]
    foreign = sorted(set(scopes) - KIND_SCOPES[kind])
    if foreign:   # a scope the kind has no use for is a mistake or a grab (review finding 8)
        raise InvalidRequest(f"scopes not allowed for kind {kind}: {', '.join(foreign)[:200]}; "
                             f"allowed: {', '.join(sorted(KIND_SCOPES[kind]))}")
    require_par = spec.get("require_pushed_authorization_requests", False)
    if not isinstance(require_par, bool):
        raise InvalidRequest("require_pushed_authorization_requests must be a boolean")
    if require_par and kind != "rp":
        raise InvalidRequest("require_pushed_authorization_requests is for kind rp")
    dpop_bound = spec.get("dpop_bound_access_tokens", False)
    if not isinstance(dpop_bound, bool):
        raise InvalidRequest("dpop_bound_access_tokens must be a boolean")
    grant_types = tuple(dict.fromkeys(_str_list(spec, "grant_types")))
    if any(g != DEVICE_CODE_GRANT for g in grant_types) or (grant_types and kind != "rp"):
        # RFC 8628: the one grant registered per client (kiosks and self-service terminals)
        raise InvalidRequest(f"grant_types: only {DEVICE_CODE_GRANT}, for kind rp")
    if await store.get(client_id) is not None:
        raise Conflict(f"client {client_id} exists")
    secret = new_secret() if auth_method in ("client_secret_basic", "client_secret_post") \
        else None
    try:
        client = Client(
            client_id=client_id, kind=kind, display_name=name, auth_method=auth_method,
            secret_hash=hash_secret(secret) if secret else None, jwks=jwks, scopes=scopes,
            sector=str(spec.get("sector") or ""), redirect_uris=redirect_uris,
            post_logout_redirect_uris=post_logout, backchannel_logout_uri=backchannel,
            scene=spec.get("scene"), operator=spec.get("operator"), created_at=now(),
            require_pushed_authorization_requests=require_par,
            dpop_bound_access_tokens=dpop_bound, grant_types=grant_types)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    await store.put(client)
    return client, secret


async def set_disabled(store: ClientStore, client_id: str, disabled: bool = True) -> Client:
    client = await store.get(client_id)
    if client is None:
        raise NotFound(f"no client {client_id}")
    client = replace(client, disabled=disabled)
    await store.put(client)
    return client


def public_view(client: Client) -> dict[str, Any]:
    return {k: v for k, v in client.to_dict().items() if k != "secret_hash"}


async def list_clients(store: ClientStore, kind: str | None = None) -> Sequence[Client]:
    return [c for c in await store.list() if kind is None or c.kind == kind]
