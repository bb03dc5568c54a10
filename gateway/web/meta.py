"""Meta endpoints: liveness, readiness, metrics, OpenAPI, OIDC discovery and JWKS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.authz.client_auth import CLIENT_ASSERTION_ALGS
from gateway.errors import InvalidRequest
from gateway.web.http import REGISTRY, REQUEST_ID, problem

ReadinessChecks = list[tuple[str, Callable[[], Awaitable[Any]]]]
READINESS: web.AppKey[ReadinessChecks] = web.AppKey("readiness_checks")
JwksProvider = Callable[[], dict[str, Any]]
JWKS: web.AppKey[JwksProvider] = web.AppKey("jwks")
#: What ID tokens may be signed with (GATEWAY_CRYPTO_SUITE=gm: ES256 only, docs/oidc.md).
ID_TOKEN_ALGS: web.AppKey[list[str]] = web.AppKey("id_token_algs")
ISSUER = web.AppKey("issuer", str)

OPENAPI_FILE = Path(__file__).resolve().parent.parent / "data" / "openapi.yaml"


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


READYZ_TIMEOUT = web.AppKey("readyz_timeout_s", float)


async def _check(check: Callable[[], Awaitable[Any]], timeout_s: float) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            await check()
    except Exception:  # noqa: BLE001 - any failure (a timeout too) means "not ready"
        return False
    return True


async def readyz(request: web.Request) -> web.Response:
    """Every check at once, each within the readiness timeout (a frozen store makes /readyz
    answer 503 in time, not hang: issue 12)."""
    checks = request.app[READINESS]
    timeout_s = request.app.get(READYZ_TIMEOUT, 0.5)
    results = await asyncio.gather(*(_check(check, timeout_s) for _, check in checks))
    failed = [name for (name, _), ok in zip(checks, results, strict=True) if not ok]
    if failed:
        return problem(503, "unavailable", "Not ready", f"Not ready: {', '.join(failed)}",
                       request[REQUEST_ID], checks={n: ("fail" if n in failed else "ok")
                                                    for n, _ in request.app[READINESS]})
    return web.json_response({"status": "ready",
                              "checks": {n: "ok" for n, _ in request.app[READINESS]}})


async def metrics(request: web.Request) -> web.Response:
    # --- issue 15: one scrape sums every worker; token-protected when configured ---
    from gateway.web import server_metrics

    server_metrics.check_token(request)
    registry = request.app.get(server_metrics.SERVER_REGISTRY)
    worker = request.query.getall("worker", [])
    if worker not in ([], ["self"]):
        raise InvalidRequest("worker takes one value: self")
    if registry is None or worker:
        registry = request.app[REGISTRY]
    # --- end issue 15 ---
    body = generate_latest(registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


OPENAPI_JSON: web.AppKey[dict[str, bytes]] = web.AppKey("openapi_json")


async def openapi(request: web.Request) -> web.Response:
    cache = request.app[OPENAPI_JSON]  # per app: the servers entry is this app's issuer
    if "doc" not in cache:
        import yaml

        doc = yaml.safe_load(OPENAPI_FILE.read_text(encoding="utf-8"))
        doc["servers"] = [{"url": request.app[ISSUER]}]
        cache["doc"] = json.dumps(doc, ensure_ascii=False).encode("utf-8")
    return web.Response(body=cache["doc"], content_type="application/json")


def discovery_document(issuer: str, id_token_algs: list[str] | None = None) -> dict[str, Any]:
    """OpenID Connect Discovery 1.0 §3 / RFC 8414."""
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/oauth2/authorize",
        "token_endpoint": f"{issuer}/oauth2/token",
        "userinfo_endpoint": f"{issuer}/oauth2/userinfo",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "revocation_endpoint": f"{issuer}/oauth2/revoke",
        "introspection_endpoint": f"{issuer}/oauth2/introspect",
        "pushed_authorization_request_endpoint": f"{issuer}/oauth2/par",   # RFC 9126 §5
        "end_session_endpoint": f"{issuer}/oauth2/logout",   # RP-Initiated Logout 1.0 §2.1
        "backchannel_logout_supported": True,            # Back-Channel Logout 1.0 §2.1
        "backchannel_logout_session_supported": True,   # logout tokens carry sid
        "require_pushed_authorization_requests": False,   # per client (RFC 9126 §6)
        "scopes_supported": ["openid", "profile", "essc", "codes:verify", "cards:verify",
                             "codes:issue", "me", "login:approve", "consents:decide",
                             "consents:request", "certificates:read"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials",
                                  "urn:ietf:params:oauth:grant-type:token-exchange"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": id_token_algs or ["EdDSA", "ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post",
                                                  "private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": list(CLIENT_ASSERTION_ALGS),
        # RFC 7009 §2.1: a public client revokes with its client_id alone; RFC 7662 §2.1:
        # introspection needs a credential, so no `none` there
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic",
                                                       "client_secret_post", "private_key_jwt",
                                                       "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic",
                                                          "client_secret_post",
                                                          "private_key_jwt"],
        # RFC 8414 §2: present because private_key_jwt is listed for these endpoints
        "revocation_endpoint_auth_signing_alg_values_supported": list(CLIENT_ASSERTION_ALGS),
        "introspection_endpoint_auth_signing_alg_values_supported":
            list(CLIENT_ASSERTION_ALGS),
        "code_challenge_methods_supported": ["S256"],
        "dpop_signing_alg_values_supported": ["ES256", "EdDSA", "Ed25519"],   # RFC 9449 §5.1
        # every claim an ID token or userinfo may carry (tests/oidc/test_discovery.py)
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "azp",
                             "at_hash", "sid", "name", "essc_card_no", "essc_region"],
        "authorization_response_iss_parameter_supported": True,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "claims_parameter_supported": False,
    }


async def openid_configuration(request: web.Request) -> web.Response:
    return web.json_response(discovery_document(request.app[ISSUER],
                                                request.app.get(ID_TOKEN_ALGS)),
                             headers={"Cache-Control": "public, max-age=300"})


async def jwks(request: web.Request) -> web.Response:
    return web.json_response(request.app[JWKS](), headers={"Cache-Control": "public, max-age=60"})


def add_routes(app: web.Application) -> None:
    app[OPENAPI_JSON] = {}
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/.well-known/openid-configuration", openid_configuration)
    app.router.add_get("/.well-known/jwks.json", jwks)
