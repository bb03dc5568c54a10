"""docs/openapi.yaml is valid OpenAPI 3.1 and says what CONTRACT.md fixes: reason codes,
problem codes, the error media types, the cache and content rules of the code endpoints."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema.exceptions import ValidationError
from openapi_spec_validator import OpenAPIV31SpecValidator

from gateway import errors
from gateway.services.decision import REASONS
from tests.api.conftest import (
    HTTP_METHODS,
    SPEC_PATH,
    load_spec,
    pointer,
    resolve,
    schema_validator,
)

#: CONTRACT "Codes": reason codes (stable).
CONTRACT_REASONS = ("ok", "malformed", "unknown_issuer", "bad_signature", "expired",
                    "not_yet_valid", "replayed", "revoked", "scene_not_permitted")
#: CONTRACT "Errors": the stable problem codes.
CONTRACT_PROBLEM_CODES = ("invalid_request", "unauthorized", "forbidden", "not_found",
                          "conflict", "identity_mismatch", "payload_too_large",
                          "unsupported_media_type", "rate_limited", "unavailable")
#: CONTRACT "Endpoints": every method and path it names.
CONTRACT_OPERATIONS = {
    ("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics"), ("get", "/openapi.json"),
    ("get", "/.well-known/openid-configuration"), ("get", "/.well-known/jwks.json"),
    ("get", "/v1/trust-list"), ("get", "/v1/scenes"),
    ("post", "/oauth2/token"), ("post", "/oauth2/revoke"), ("post", "/oauth2/introspect"),
    ("post", "/v1/codes"), ("post", "/v1/codes/verify"), ("post", "/v1/cards/verify"),
    ("get", "/v1/me"), ("post", "/v1/me/links"), ("delete", "/v1/me/links/{id}"),
    ("post", "/v1/me/cards/{id}/report-loss"),
    ("get", "/oauth2/authorize"), ("post", "/v1/login-sessions/scan"),
    ("post", "/v1/login-sessions/{id}/approve"), ("post", "/v1/login-sessions/{id}/deny"),
    ("get", "/v1/login-sessions/{id}"), ("get", "/oauth2/userinfo"),
    ("post", "/oauth2/userinfo"),
    ("post", "/v1/consents"), ("get", "/v1/consents/{id}"), ("post", "/v1/certificates/query"),
    ("get", "/v1/me/consents"), ("post", "/v1/me/consents/{id}/approve"),
    ("post", "/v1/me/consents/{id}/reject"), ("delete", "/v1/me/consents/{id}"),
    ("get", "/v1/me/access-log"),
    ("get", "/sandbox/v1/demo"), ("post", "/sandbox/v1/upstream-assertions"),
    ("post", "/sandbox/v1/card-taps"),
}


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, path, op) for path, item in spec["paths"].items()
            for m, op in item.items() if m in HTTP_METHODS]


def _shape(template: str) -> str:
    """A path template with its parameter names erased: `/v1/me/links/{}`."""
    import re

    return re.sub(r"\{[^}]+\}", "{}", template)


def test_spec_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1.")
    OpenAPIV31SpecValidator(spec).validate()


def test_the_symlink_serves_the_same_file() -> None:
    served = SPEC_PATH.parents[1] / "gateway" / "data" / "openapi.yaml"
    assert served.is_symlink() and not served.readlink().is_absolute()
    assert served.resolve() == SPEC_PATH.resolve()


def test_operation_ids_unique_and_every_ref_resolves(spec: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(spec)]
    assert len(ids) == len(set(ids))

    def walk(node: Any, ptr: str) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                resolve(ptr)
            for k, v in node.items():
                walk(v, f"{ptr}/{k.replace('~', '~0').replace('/', '~1')}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{ptr}/{i}")

    walk(spec, "#")


def test_every_contract_operation_is_in_the_spec(spec: dict[str, Any]) -> None:
    documented = {(m, _shape(p)) for m, p, _ in operations(spec)}
    missing = {(m, p) for m, p in CONTRACT_OPERATIONS if (m, _shape(p)) not in documented}
    assert not missing


def test_reason_codes_are_the_contracts() -> None:
    reason = load_spec()["components"]["schemas"]["Reason"]
    assert tuple(reason["enum"]) == CONTRACT_REASONS == REASONS


def test_problem_codes_are_the_contracts_and_the_error_tree_has_each() -> None:
    codes = load_spec()["components"]["schemas"]["ProblemCode"]["enum"]
    # the contract's ten, plus the 500 answer's own code (a gateway fault, never the request's)
    assert tuple(codes) == (*CONTRACT_PROBLEM_CODES, "internal_error")
    tree = {cls.code: cls.status for cls in vars(errors).values()
            if isinstance(cls, type) and issubclass(cls, errors.GatewayError)}
    for code in CONTRACT_PROBLEM_CODES:
        assert code in tree, code
    problem = schema_validator("Problem")
    problem.validate({"type": "https://gateway.example/problems/conflict", "title": "Conflict",
                      "status": 409, "code": "conflict", "request_id": "abc"})
    for bad in ({"type": "x:y", "title": "t", "status": 409, "code": "teapot",
                 "request_id": "a"},
                {"type": "x:y", "title": "t", "status": 409, "code": "conflict"}):
        with pytest.raises(ValidationError):
            problem.validate(bad)


#: What a browser is sent to: errors are HTML pages there, never JSON.
BROWSER_PAGES = ("/oauth2/authorize", "/oauth2/logout")


def test_error_media_types_follow_the_contract(spec: dict[str, Any]) -> None:
    """RFC 9457 problem+json off /oauth2/, RFC 6749 error JSON on it (5xx problem+json
    everywhere); every protected operation documents 401, every 429 carries Retry-After."""
    for method, path, op in operations(spec):
        for status in op["responses"]:
            response, rptr = resolve(pointer("paths", path, method, "responses", status))
            content = response.get("content") or {}
            if status == "429":
                assert "Retry-After" in response.get("headers", {}), (method, path)
                headers = response["headers"]
                assert resolve(rptr + "/headers/Retry-After")[0]["required"] is True
                del headers
            if not status.startswith(("4", "5")) or path in BROWSER_PAGES:
                continue
            if path.startswith("/oauth2/") and not status.startswith("5"):
                schema = content["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/OAuthError"}, (method, path)
            else:
                assert list(content) == ["application/problem+json"], (method, path, status)
                schema = content["application/problem+json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Problem"} or \
                    schema["allOf"][0] == {"$ref": "#/components/schemas/Problem"}
        if path not in ("/healthz", "/readyz", "/metrics"):
            # overload shedding (gateway/web/ratelimit.py) may answer any other path 503
            assert "503" in op["responses"], (method, path)
        secured = op.get("security", spec.get("security", []))
        if any(req for req in secured) and {} not in secured and \
                not path.startswith("/oauth2/"):
            assert "401" in op["responses"], (method, path)


def test_codes_are_never_cached_and_come_as_json_png_or_svg(spec: dict[str, Any]) -> None:
    created, ptr = resolve(pointer("paths", "/v1/codes", "post", "responses", "201"))
    assert set(created["content"]) == {"application/json", "image/png", "image/svg+xml"}
    cache_control = resolve(ptr + "/headers/Cache-Control")[0]
    assert cache_control["required"] and cache_control["schema"] == {"const": "no-store"}
    for path in ("/v1/codes/verify", "/v1/cards/verify"):
        _, optr = resolve(pointer("paths", path, "post", "responses", "200"))
        assert resolve(optr + "/headers/Cache-Control")[0]["schema"] == {"const": "no-store"}


def test_trust_list_is_conditional(spec: dict[str, Any]) -> None:
    op = spec["paths"]["/v1/trust-list"]["get"]
    assert any(p["name"] == "If-None-Match" and p["in"] == "header" for p in op["parameters"])
    assert "304" in op["responses"] and "content" not in op["responses"]["304"]
    for status in ("200", "304"):
        assert "ETag" in op["responses"][status]["headers"]


def test_token_endpoint_documents_every_grant_and_both_client_auth_methods(
        spec: dict[str, Any]) -> None:
    op = spec["paths"]["/oauth2/token"]["post"]
    assert {next(iter(r)) for r in op["security"] if r} == {"clientSecretBasic",
                                                          "privateKeyJwt"}
    schemes = spec["components"]["securitySchemes"]
    assert schemes["clientSecretBasic"] == {**schemes["clientSecretBasic"], "type": "http",
                                            "scheme": "basic"}
    for name in ("gateToken", "residentToken", "rpToken"):
        assert schemes[name]["scheme"] == "bearer" and schemes[name]["bearerFormat"] == "JWT"
    request = schema_validator("TokenRequest")
    ok = [
        {"grant_type": "client_credentials", "scope": "codes:verify"},
        {"grant_type": "client_credentials",
         "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
         "client_assertion": "a.b.c"},
        {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
         "subject_token": "a.b.c", "subject_token_type": "urn:ietf:params:oauth:token-type:jwt"},
        {"grant_type": "authorization_code", "code": "c", "redirect_uri": "https://rp/cb",
         "code_verifier": "v" * 43, "client_id": "rp"},
        {"grant_type": "refresh_token", "refresh_token": "r"},
    ]
    for form in ok:
        request.validate(form)
    bad = [
        {"grant_type": "password"},
        {"grant_type": "authorization_code", "code": "c", "redirect_uri": "https://rp/cb"},
        {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
         "subject_token": "a.b.c", "subject_token_type": "urn:ietf:params:oauth:token-type:saml2"},
        {"grant_type": "client_credentials", "client_assertion": "a.b.c"},
    ]
    for form in bad:
        with pytest.raises(ValidationError):
            request.validate(form)


def test_verify_decision_schema_holds_the_contract_shape() -> None:
    v = schema_validator("VerifyDecision")
    allow = {"decision": "allow", "reason": "ok", "face": "ykm", "subject": "s",
             "attributes": {"concession": "senior"}, "request_id": "r",
             "verified_at": "2026-01-01T00:00:00.000Z"}
    v.validate(allow)
    deny = {**allow, "decision": "deny", "reason": "replayed", "subject": None,
            "attributes": {}}
    v.validate(deny)
    for bad in ({**allow, "reason": "expired"}, {**deny, "reason": "ok"},
                {**deny, "reason": "stale"}, {**allow, "attributes": {"citizen_id": "x"}},
                {**allow, "face": "passport"}):
        with pytest.raises(ValidationError):
            v.validate(bad)
