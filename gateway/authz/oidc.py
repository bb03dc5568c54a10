"""OpenID Connect provider logic without a web framework: authorization request validation
(RFC 6749 §4.1.1, OIDC Core §3.1.2.1, RFC 7636, RFC 9700 §2.1), the records the login flow
keeps (login sessions, authorization codes, refresh families, remembered consents; their
store ports are in gateway/authz/ports.py), ID token claims (OIDC Core §2, §3.1.3.6
at_hash), scope → claim mapping (data minimisation) and the login context shown to the
resident (RFC 8628 §5.4).

Two phases of authorization-request validation (RFC 6749 §4.1.2.1): `client_and_redirect`
errors are NEVER redirected (an HTML page, 400); every later error is redirected to the now
validated redirect URI with `state` and `iss` (RFC 9207).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from gateway.authz.clients import Client
from gateway.authz.pkce import S256, is_valid_challenge
from gateway.authz.ports import (
    CodeStore as CodeStore,
)
from gateway.authz.ports import (
    ConsentStore as ConsentStore,
)
from gateway.authz.ports import (
    LoginSessionStore as LoginSessionStore,
)
from gateway.authz.ports import (
    PushedRequestStore as PushedRequestStore,
)
from gateway.authz.ports import (
    RefreshStore as RefreshStore,
)
from gateway.base64url import b64u

LOGIN_SESSION_TTL_S = 180        # ≤ 3 minutes (issue 5)
CODE_TTL_S = 60                  # RFC 6749 §4.1.2: ≤ 10 min recommended; we keep 60 s
CODE_RECORD_TTL_S = 600          # a used code is remembered this long to detect replays
REFRESH_ABSOLUTE_TTL_S = 7 * 86400
REFRESH_GRACE_S = 2.0
ID_TOKEN_TTL_S = 600
RP_USER_KIND = "rp_user"         # access tokens a relying party holds for a resident
#: The ID token's JWS `typ`, named explicitly (RFC 8725 §3.11): access tokens are `at+jwt`,
#: consent receipts `consent-receipt+jwt`; OIDC Core names none for ID tokens, and "JWT" is
#: what every certified RP library accepts.
ID_TOKEN_TYP = "JWT"

#: The parameters of OIDC Core §3.1.2.1 + RFC 7636 + RFC 8707; anything else is refused.
KNOWN_PARAMS = frozenset({
    "response_type", "client_id", "redirect_uri", "scope", "state", "nonce",
    "code_challenge", "code_challenge_method", "response_mode", "prompt", "max_age",
    "display", "ui_locales", "claims_locales", "login_hint", "id_token_hint", "acr_values",
    "claims", "request", "request_uri", "registration",
    "dpop_jkt",   # RFC 9449 §10: bind the code to this DPoP key
})
#: RFC 9126 §2.2: the `request_uri` a pushed authorization request is answered with.
PAR_URN_PREFIX = "urn:ietf:params:oauth:request_uri:"
PAR_TTL_S = 60                   # RFC 9126 §2.2: "a short lifetime"; used once
#: Client authentication parameters of the PAR request (RFC 9126 §2.1), not the request's own.
CLIENT_AUTH_PARAMS = frozenset({"client_secret", "client_assertion", "client_assertion_type"})
MAX_PARAM_LEN = 512
MAX_REDIRECT_URI_LEN = 2048
MAX_QUERY_LEN = 4096
OIDC_SCOPES = ("openid", "profile", "essc")
#: Scope → identity claims disclosed (OIDC Core §5.4), the smallest set that serves the scope.
SCOPE_CLAIMS: Mapping[str, tuple[str, ...]] = {
    "openid": (), "profile": ("name_masked",), "essc": ("ssc_card_no", "essc_region"),
}
#: Identity-service claim name → userinfo claim name.
CLAIM_NAMES: Mapping[str, str] = {
    "name_masked": "name", "ssc_card_no": "essc_card_no", "essc_region": "essc_region",
}
_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")


class AuthorizeError(Exception):
    """An authorization-request error (RFC 6749 §4.1.2.1). `redirect` is False while the
    client or redirect URI is not yet validated: the error must then not leave our origin."""

    def __init__(self, error: str, description: str, *, redirect: bool) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.redirect = redirect


def hash_fields(record: Mapping[str, Any], mutable: Sequence[str]) -> dict[str, str]:
    """A record as the fields of a Redis hash: what never changes as one JSON field ``d``,
    each field in `mutable` (changed later by a compare-and-set) as its own, when set."""
    out = {"d": json.dumps({k: v for k, v in record.items() if k not in mutable})}
    for k in mutable:
        if record[k] is not None:
            out[k] = str(record[k])
    return out

@dataclass(frozen=True)
class AuthorizationRequest:
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    nonce: str | None
    code_challenge: str
    #: RFC 9449 §10: the code is redeemed only with a DPoP proof by the key of this
    #: RFC 7638 thumbprint (from `dpop_jkt`, or a pushed request's DPoP proof, §10.1).
    dpop_jkt: str | None = None


#: An RFC 7638 SHA-256 thumbprint, base64url without padding (RFC 9449 §10).
_JKT = re.compile(r"[A-Za-z0-9_-]{43}")


def _single(params: Mapping[str, Sequence[str]], name: str, *, redirect: bool,
            max_len: int = MAX_PARAM_LEN) -> str | None:
    values = params.get(name)
    if not values:
        return None
    if len(values) > 1:   # RFC 6749 §3.1: parameters MUST NOT be included more than once
        raise AuthorizeError("invalid_request", f"{name} is repeated", redirect=redirect)
    value = values[0]
    if len(value) > max_len:
        raise AuthorizeError("invalid_request", f"{name} is too long", redirect=redirect)
    if value == "":
        return None
    return value


def client_and_redirect(params: Mapping[str, Sequence[str]],
                        client: Client | None) -> tuple[Client, str]:
    """Phase 1: the client exists, is an RP, and names a registered redirect URI exactly
    (RFC 9700 §2.1: exact string match; no pattern, no default when unsent)."""
    client_id = _single(params, "client_id", redirect=False, max_len=128)
    redirect_uri = _single(params, "redirect_uri", redirect=False, max_len=MAX_REDIRECT_URI_LEN)
    if client_id is None:
        raise AuthorizeError("invalid_request", "client_id is required", redirect=False)
    if client is None or client.disabled or client.kind != "rp":
        raise AuthorizeError("invalid_client", "Unknown client", redirect=False)
    if redirect_uri is None:
        raise AuthorizeError("invalid_request", "redirect_uri is required", redirect=False)
    if redirect_uri not in client.redirect_uris:
        raise AuthorizeError("invalid_request", "redirect_uri is not registered for this client",
                             redirect=False)
    return client, redirect_uri


def authorization_request(params: Mapping[str, Sequence[str]], client: Client,
                          redirect_uri: str, query_len: int, *,
                          pushed: bool = False) -> AuthorizationRequest:
    """Phase 2 (errors are redirected): response type, scope, PKCE, unsupported features.
    `pushed`: the parameters came by a pushed authorization request (RFC 9126)."""
    if client.require_pushed_authorization_requests and not pushed:
        raise AuthorizeError("invalid_request",
                             "This client must push its authorization requests (RFC 9126)",
                             redirect=True)
    if query_len > MAX_QUERY_LEN:
        raise AuthorizeError("invalid_request", "The request is too large", redirect=True)
    unknown = sorted(set(params) - KNOWN_PARAMS)
    if unknown:
        raise AuthorizeError("invalid_request", "Unknown parameter", redirect=True)
    for name in params:
        _single(params, name, redirect=True)
    if params.get("request"):
        raise AuthorizeError("request_not_supported", "request objects are not supported",
                             redirect=True)
    if params.get("request_uri"):   # a PAR request_uri was resolved before this point
        raise AuthorizeError("request_uri_not_supported", "request_uri is not supported",
                             redirect=True)
    if params.get("registration"):
        raise AuthorizeError("registration_not_supported", "registration is not supported",
                             redirect=True)
    response_type = _single(params, "response_type", redirect=True)
    if response_type is None:
        raise AuthorizeError("invalid_request", "response_type is required", redirect=True)
    if response_type != "code":
        raise AuthorizeError("unsupported_response_type", "Only the code flow is supported",
                             redirect=True)
    mode = _single(params, "response_mode", redirect=True)
    if mode not in (None, "query"):
        raise AuthorizeError("invalid_request", "Only response_mode=query is supported",
                             redirect=True)
    scope = _single(params, "scope", redirect=True)
    scopes = tuple(dict.fromkeys((scope or "").split()))
    if "openid" not in scopes:
        raise AuthorizeError("invalid_scope", "The openid scope is required", redirect=True)
    if any(s not in OIDC_SCOPES or s not in client.scopes for s in scopes):
        raise AuthorizeError("invalid_scope", "A requested scope is not allowed", redirect=True)
    method = _single(params, "code_challenge_method", redirect=True)
    challenge = _single(params, "code_challenge", redirect=True)
    if challenge is None:
        raise AuthorizeError("invalid_request", "code_challenge is required (PKCE)",
                             redirect=True)
    if method != S256:
        raise AuthorizeError("invalid_request", "code_challenge_method must be S256",
                             redirect=True)
    if not is_valid_challenge(challenge):
        raise AuthorizeError("invalid_request", "code_challenge is malformed", redirect=True)
    if _single(params, "prompt", redirect=True) == "none":
        # OIDC Core §3.1.2.6: every login here needs the resident's scan.
        raise AuthorizeError("login_required", "The resident must scan to log in",
                             redirect=True)
    max_age = _single(params, "max_age", redirect=True)
    if max_age is not None and not max_age.isdigit():
        raise AuthorizeError("invalid_request", "max_age must be a non-negative integer",
                             redirect=True)
    dpop_jkt = _single(params, "dpop_jkt", redirect=True)
    if dpop_jkt is not None and not _JKT.fullmatch(dpop_jkt):
        raise AuthorizeError("invalid_request",
                             "dpop_jkt must be a JWK SHA-256 thumbprint (RFC 9449 §10)",
                             redirect=True)
    return AuthorizationRequest(
        client_id=client.client_id, redirect_uri=redirect_uri, scopes=scopes,
        state=_single(params, "state", redirect=True),
        nonce=_single(params, "nonce", redirect=True), code_challenge=challenge,
        dpop_jkt=dpop_jkt)


def new_id() -> str:
    return secrets.token_urlsafe(18)


def is_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_scan_secret() -> str:
    """QR-alphanumeric (ISO/IEC 18004 alphanumeric mode: upper case A-Z and 2-7), 160 bits."""
    return base64.b32encode(secrets.token_bytes(20)).decode("ascii").rstrip("=")


QR_PREFIX = "YKLOGIN:"


def qr_payload(session_id_b32: str, scan_secret: str) -> str:
    return f"{QR_PREFIX}{session_id_b32}.{scan_secret}"


def session_id_to_qr(session_id: str) -> str:
    return base64.b32encode(session_id.encode("ascii")).decode("ascii").rstrip("=")


def parse_qr(qr: str) -> tuple[str, str] | None:
    """(session id, scan secret) from what the resident app scanned, or None."""
    if not qr.startswith(QR_PREFIX) or len(qr) > 200:
        return None
    body = qr[len(QR_PREFIX):]
    if body.count(".") != 1:
        return None
    sid_b32, secret = body.split(".")
    try:
        sid = base64.b32decode(sid_b32 + "=" * (-len(sid_b32) % 8)).decode("ascii")
    except (ValueError, UnicodeDecodeError):
        return None
    if not is_id(sid) or not re.fullmatch(r"[A-Z2-7]{32}", secret):
        return None
    return sid, secret


def number_choices(number: int, count: int = 3) -> list[int]:
    """The right two-digit number among decoys, shuffled (number matching, RFC 8628 §5.4)."""
    choices = {number}
    while len(choices) < count:
        choices.add(10 + secrets.randbelow(90))
    out = list(choices)
    secrets.SystemRandom().shuffle(out)
    return out


def new_number() -> int:
    return 10 + secrets.randbelow(90)


_BROWSERS = (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"),
             ("MicroMessenger/", "WeChat"), ("HeadlessChrome/", "Chrome (headless)"),
             ("Chrome/", "Chrome"), ("Chromium/", "Chromium"), ("Safari/", "Safari"))
_SYSTEMS = (("Windows NT", "Windows"), ("Android", "Android"), ("iPhone", "iOS"),
            ("iPad", "iPadOS"), ("Mac OS X", "macOS"), ("CrOS", "ChromeOS"), ("Linux", "Linux"))


def describe_browser(user_agent: str | None) -> str:
    """A short human label such as "Chrome 120 on Windows" (no fingerprinting detail)."""
    ua = (user_agent or "")[:512]
    name = "Unknown browser"
    for token, label in _BROWSERS:
        i = ua.find(token)
        if i >= 0:
            m = re.match(r"(\d+)", ua[i + len(token):])
            name = f"{label} {m.group(1)}" if m else label
            break
    system = next((label for token, label in _SYSTEMS if token in ua), None)
    return f"{name} on {system}" if system else name


def describe_place(ip: str | None) -> str:
    """An IP-derived label for the resident (sandbox: no geolocation database)."""
    try:
        addr = ipaddress.ip_address((ip or "").split("%")[0])
    except ValueError:
        return "unknown network"
    if addr.is_loopback:
        return f"{addr} (loopback)"
    if addr.is_private:
        return f"{addr} (private network)"
    return str(addr)


@dataclass(frozen=True)
class LoginSession:
    """One scan-to-login attempt. Immutable request data plus the mutable state fields
    (`status`, `person_id`, `redirect_to`, `scanned_at`, `decided_at`) that move only by
    compare-and-set in the store."""

    id: str
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    nonce: str | None
    code_challenge: str
    scan_secret_hash: str
    binding_hash: str
    number: int
    created_at: float
    expires_at: float
    browser: str
    place: str
    status: str = "pending"
    person_id: str | None = field(default=None, repr=False)
    redirect_to: str | None = field(default=None, repr=False)
    scanned_at: float | None = None
    decided_at: float | None = None
    dpop_jkt: str | None = None   # RFC 9449 §10, carried to the code (immutable)

    MUTABLE = ("status", "person_id", "redirect_to", "scanned_at", "decided_at")

    def to_fields(self) -> dict[str, str]:
        return hash_fields(asdict(self), self.MUTABLE)

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> LoginSession:
        d = json.loads(fields["d"])
        d["scopes"] = tuple(d["scopes"])
        s = cls(**d)
        return replace(
            s, status=fields.get("status", "pending"), person_id=fields.get("person_id"),
            redirect_to=fields.get("redirect_to"),
            scanned_at=float(fields["scanned_at"]) if fields.get("scanned_at") else None,
            decided_at=float(fields["decided_at"]) if fields.get("decided_at") else None)

    def public_status(self, now: float) -> str:
        if self.status == "done":
            return "approved"
        if self.status in ("pending", "scanned", "approved") and now >= self.expires_at:
            return "expired"
        return self.status


@dataclass(frozen=True)
class CodeRecord:
    """What an authorization code is bound to (RFC 6749 §4.1.3, RFC 7636 §4.4)."""

    client_id: str
    redirect_uri: str
    code_challenge: str
    person_id: str = field(repr=False)
    scopes: tuple[str, ...]
    nonce: str | None
    auth_time: int
    family_id: str
    expires_at: float
    #: RFC 9449 §10: the token request's DPoP proof must be by this key (None: unbound).
    dpop_jkt: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> CodeRecord:
        d = json.loads(raw)
        d["scopes"] = tuple(d["scopes"])
        return cls(**d)


@dataclass(frozen=True)
class Family:
    """A refresh-token family: one grant, rotated on every use (RFC 9700 §2.2.2)."""

    family_id: str
    client_id: str
    person_id: str = field(repr=False)
    scopes: tuple[str, ...]
    auth_time: int
    created_at: float
    expires_at: float
    revoked: bool = False
    jkt: str = ""   # a public client's refresh tokens are bound to this DPoP key (RFC 9449 §5)

    def to_fields(self) -> dict[str, str]:
        return {"client_id": self.client_id, "person_id": self.person_id,
                "scopes": " ".join(self.scopes), "auth_time": str(self.auth_time),
                "created_at": repr(self.created_at), "expires_at": repr(self.expires_at),
                "revoked": "1" if self.revoked else "0", "jkt": self.jkt}

    @classmethod
    def from_fields(cls, family_id: str, f: Mapping[str, str]) -> Family:
        return cls(family_id=family_id, client_id=f["client_id"], person_id=f["person_id"],
                   scopes=tuple(f["scopes"].split()), auth_time=int(f["auth_time"]),
                   created_at=float(f["created_at"]), expires_at=float(f["expires_at"]),
                   revoked=f.get("revoked") == "1", jkt=f.get("jkt", ""))


@dataclass(frozen=True)
class Consent:
    """A remembered consent: this resident let this client have these scopes."""

    client_id: str
    scopes: tuple[str, ...]
    granted_at: float

    def to_json(self) -> str:
        return json.dumps({"client_id": self.client_id, "scopes": list(self.scopes),
                           "granted_at": self.granted_at})

    @classmethod
    def from_json(cls, raw: str) -> Consent:
        d = json.loads(raw)
        return cls(str(d["client_id"]), tuple(d["scopes"]), float(d["granted_at"]))


# Rotation outcomes of RefreshStore.rotate
ROTATED, GRACE, REUSED, REVOKED, UNKNOWN = "rotated", "grace", "reused", "revoked", "unknown"


def new_request_uri() -> str:
    return PAR_URN_PREFIX + secrets.token_urlsafe(32)


def par_params(form: Mapping[str, str]) -> dict[str, list[str]]:
    """The authorization request inside a PAR body: everything but client authentication."""
    return {k: [v] for k, v in form.items() if k not in CLIENT_AUTH_PARAMS}


def bind_pushed_key(params: dict[str, list[str]], proof_jkt: str | None) -> bool:
    """RFC 9449 §10.1: a DPoP proof on the PAR request binds the code as `dpop_jkt` would;
    with both, they must name the same key. False when they differ (the request is refused)."""
    if proof_jkt is None:
        return True
    given = params.get("dpop_jkt")
    if given is not None and given != [proof_jkt]:
        return False
    params["dpop_jkt"] = [proof_jkt]
    return True


def split_refresh_token(token: str) -> tuple[str, str] | None:
    """`<family id>.<secret>`; a JWT (two dots) is never mistaken for one."""
    if token.count(".") != 1 or len(token) > 200:
        return None
    fam, secret = token.split(".")
    if not is_id(fam) or not re.fullmatch(r"[A-Za-z0-9_-]{32,64}", secret):
        return None
    return fam, secret


def new_refresh_token(family_id: str) -> tuple[str, str]:
    """(token, its hash)."""
    secret = secrets.token_urlsafe(32)
    return f"{family_id}.{secret}", digest(secret)


def left_hash(value: str, alg: str) -> str:
    """OIDC Core §3.1.3.6 at_hash: left half of the hash used by the JWS alg (SHA-256 for
    ES256; SHA-512 for EdDSA/Ed25519; SM3 for SM2), base64url."""
    if alg == "SM2":
        from gateway.codec.sm2 import sm3

        d = sm3(value.encode("ascii"))
    else:
        h = hashlib.sha512 if alg == "EdDSA" else hashlib.sha256
        d = h(value.encode("ascii")).digest()
    return b64u(d[: len(d) // 2])


def id_token_claims(*, issuer: str, sub: str, client_id: str, now: int, auth_time: int,
                    nonce: str | None, access_token: str, alg: str,
                    ttl_s: int = ID_TOKEN_TTL_S, sid: str | None = None) -> dict[str, Any]:
    """OIDC Core §2: iss, sub, aud, exp, iat, auth_time, nonce, azp, at_hash; `sid` (the
    grant, OIDC Back-Channel Logout §2.1) names what RP-initiated logout ends."""
    claims: dict[str, Any] = {"iss": issuer, "sub": sub, "aud": client_id, "azp": client_id,
                              "iat": now, "exp": now + ttl_s, "auth_time": auth_time,
                              "at_hash": left_hash(access_token, alg)}
    if sid is not None:
        claims["sid"] = sid
    if nonce is not None:
        claims["nonce"] = nonce
    return claims


#: OIDC Back-Channel Logout 1.0 §2.4: the logout token's event and JWS type (§2.4, RFC 8725).
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_TYP = "logout+jwt"
LOGOUT_TOKEN_TTL_S = 120


def logout_token_claims(*, issuer: str, client_id: str, sub: str, sid: str,
                        now: int) -> dict[str, Any]:
    """§2.4: iss, aud, iat, exp, jti, sub, sid, events; never a nonce."""
    return {"iss": issuer, "aud": client_id, "iat": now, "exp": now + LOGOUT_TOKEN_TTL_S,
            "jti": secrets.token_urlsafe(16), "sub": sub, "sid": sid,
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}}}


def claims_for_scopes(scopes: Sequence[str]) -> list[str]:
    out: list[str] = []
    for s in scopes:
        out.extend(SCOPE_CLAIMS.get(s, ()))
    return out
