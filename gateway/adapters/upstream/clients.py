"""HTTP clients for the upstream platforms (API shapes: docs/upstreams.md).

* :class:`YkbClient` — 渝快办 identity platform (渝快码 accounts), implements IdentityPlatform.
* :class:`EsscPlatformClient` — the national e-SSC platform, one base URL serving several
  regions (``/{region}/…``); implements IdentityPlatform and EsscPlatform.
* :class:`CertificateLibraryClient` — 电子证照库; implements CertificateLibrary and checks each
  certificate's issuer JWS against the library's published issuer keys.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import jwt
import structlog

from gateway.clock import Clock
from gateway.codec import VerificationKey
from gateway.errors import UpstreamUnavailable
from gateway.services.upstream import (
    CERTIFICATE_TYPES,
    AssertionRejected,
    Certificate,
    UpstreamAccount,
    UpstreamIdentity,
    is_valid_citizen_id,
)

from .assertions import AssertionVerifier, JwksCache
from .http import (
    HttpUpstream,
    SchemaError,
    UpstreamPolicy,
    UpstreamResponse,
    expect_int,
    expect_list,
    expect_str,
)

__all__ = ["CertificateLibraryClient", "EsscPlatformClient", "YkbClient"]

log = structlog.get_logger("gateway.upstream")

_REGION_RE: Final = re.compile(r"[A-Z]{2}")
_ACCOUNT_RE: Final = re.compile(r"[0-9A-Za-z._-]{1,64}")
MAX_CODE_LEN: Final = 512


def _seg(value: str) -> str:
    """One path segment; ids are checked against a tight alphabet before they reach a URL."""
    if not isinstance(value, str) or _ACCOUNT_RE.fullmatch(value) is None:
        raise ValueError("invalid id")
    return quote(value, safe="")


def _identity(claims: Mapping[str, Any], platform: str, region: str | None) -> UpstreamIdentity:
    cid, name = claims.get("cid"), claims.get("name")
    if not isinstance(cid, str) or not is_valid_citizen_id(cid):
        raise AssertionRejected("malformed", debug="cid claim invalid")
    if not isinstance(name, str) or not name:
        raise AssertionRejected("missing_claim", debug="name claim")
    sub = claims["sub"]
    if _ACCOUNT_RE.fullmatch(sub) is None:
        raise AssertionRejected("malformed", debug="sub claim invalid")
    return UpstreamIdentity(
        platform=platform,  # type: ignore[arg-type]
        region=region, account_id=sub, citizen_id=cid.upper(), display_name=name,
        jti=claims["jti"], issuer=claims["iss"], issued_at=claims["iat"],
        expires_at=claims["exp"])


def _account(platform: str, region: str | None, id_key: str):  # type: ignore[no-untyped-def]
    def parse(resp: UpstreamResponse) -> UpstreamAccount | None:
        if resp.status == 404:
            return None
        doc = resp.body
        status = expect_str(doc, "status")
        if status not in ("active", "suspended"):
            raise SchemaError("unknown account status")
        cid = expect_str(doc, "citizen_id")
        if not is_valid_citizen_id(cid):
            raise SchemaError("citizen_id fails the check digit")
        return UpstreamAccount(platform=platform, region=region,  # type: ignore[arg-type]
                               account_id=expect_str(doc, id_key), status=status,
                               display_name=expect_str(doc, "display_name"), citizen_id=cid)
    return parse


class YkbClient:
    """渝快办 (ykb): ``GET /.well-known/jwks.json``, ``GET /accounts/{id}``."""

    platform: Final = "ykb"

    def __init__(self, session: aiohttp.ClientSession, base_url: str, *, issuer: str,
                 audience: str, clock: Clock, policy: UpstreamPolicy | None = None,
                 jwks_min_refresh_s: float = 30.0) -> None:
        self.issuer = issuer
        self.http = HttpUpstream("ykb", session, base_url, clock=clock, policy=policy)
        self.jwks = JwksCache(self.http, "/.well-known/jwks.json", clock=clock,
                              min_refresh_interval_s=jwks_min_refresh_s)
        self._verifier = AssertionVerifier({issuer: self.jwks}, audience=audience, clock=clock)

    async def verify_assertion(self, assertion: str) -> UpstreamIdentity:
        claims = await self._verifier.verify(assertion)
        return _identity(claims, "ykb", None)

    async def lookup_account(self, account_id: str,
                             region: str | None = None) -> UpstreamAccount | None:
        if not isinstance(account_id, str) or _ACCOUNT_RE.fullmatch(account_id) is None:
            return None
        return await self.http.request(
            "GET", f"/accounts/{_seg(account_id)}", op="lookup_account",
            accept=frozenset({200, 404}), parse=_account("ykb", None, "account_id"))


class EsscPlatformClient:
    """The e-SSC platform for ``regions``; region ``R``'s assertion issuer is
    ``{issuer_prefix}/{R}`` and its API lives under ``{base_url}/{R}/``."""

    platform: Final = "essc"

    def __init__(self, session: aiohttp.ClientSession, base_url: str, *,
                 regions: Sequence[str], issuer_prefix: str, audience: str, clock: Clock,
                 policy: UpstreamPolicy | None = None, jwks_min_refresh_s: float = 30.0) -> None:
        if not regions or any(_REGION_RE.fullmatch(r) is None for r in regions):
            raise ValueError("regions must be 2-letter upper-case codes")
        self.regions = tuple(regions)
        self.http = HttpUpstream("essc", session, base_url, clock=clock, policy=policy)
        self.issuers = {f"{issuer_prefix.rstrip('/')}/{r}": r for r in self.regions}
        self.jwks = {iss: JwksCache(self.http, f"/{r}/.well-known/jwks.json", clock=clock,
                                    min_refresh_interval_s=jwks_min_refresh_s)
                     for iss, r in self.issuers.items()}
        self._verifier = AssertionVerifier(self.jwks, audience=audience, clock=clock)

    def _region(self, region: str) -> str:
        if region not in self.regions:
            raise ValueError("region not served")
        return region

    async def verify_assertion(self, assertion: str) -> UpstreamIdentity:
        claims = await self._verifier.verify(assertion)
        region = self.issuers[claims["iss"]]
        if claims.get("region", region) != region:
            raise AssertionRejected("malformed", debug="region claim differs from issuer")
        return _identity(claims, "essc", region)

    async def lookup_account(self, account_id: str,
                             region: str | None = None) -> UpstreamAccount | None:
        if region is None:
            raise ValueError("an e-SSC account lookup needs the region")
        r = self._region(region)
        if not isinstance(account_id, str) or _ACCOUNT_RE.fullmatch(account_id) is None:
            return None
        return await self.http.request(
            "GET", f"/{r}/holders/{_seg(account_id)}", op="lookup_account",
            accept=frozenset({200, 404}), parse=_account("essc", r, "holder_id"))

    async def issue_code(self, holder_account_id: str, region: str) -> str:
        r = self._region(region)
        _seg(holder_account_id)

        def parse(resp: UpstreamResponse) -> str:
            code = expect_str(resp.body, "code", max_len=MAX_CODE_LEN)
            if not code.startswith("ESSC1:"):
                raise SchemaError("not an e-SSC code")
            return code

        # Not idempotent: every call makes a new single-use code, so it is never retried.
        return await self.http.request("POST", f"/{r}/codes", op="issue_code",
                                       json_body={"holder": holder_account_id},
                                       accept=frozenset({200, 201}), parse=parse)

    async def code_keys(self, region: str | None = None) -> list[dict[str, Any]]:
        regions = self.regions if region is None else (self._region(region),)
        out: list[dict[str, Any]] = []
        for r in regions:
            def parse(resp: UpstreamResponse, r: str = r) -> list[dict[str, Any]]:
                keys = []
                for jwk in expect_list(resp.body, "keys"):
                    if not isinstance(jwk, dict):
                        raise SchemaError("a JWK must be an object")
                    try:
                        vk = VerificationKey.from_jwk(jwk)
                    except ValueError:
                        # e.g. a curve this gateway does not know: ignored and named, the
                        # region's other keys still count (docs/code-format.md §7)
                        log.warning("trust_list.key_ignored", region=r,
                                    kid=str(jwk.get("kid"))[:32], kty=str(jwk.get("kty"))[:16],
                                    crv=str(jwk.get("crv"))[:16])
                        continue
                    if vk.issuer != f"essc:{r}" or vk.alg not in ("ES256", "SM2"):
                        raise SchemaError("code key of another issuer")
                    keys.append(vk.to_jwk())
                return keys
            out.extend(await self.http.request("GET", f"/{r}/code-keys", op="code_keys",
                                               parse=parse))
        return out


class CertificateLibraryClient:
    """电子证照库: ``POST /certificates/query`` (a read, so marked idempotent and retried) and
    ``GET /issuers/jwks.json`` (the issuing authorities' keys)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, *, clock: Clock,
                 policy: UpstreamPolicy | None = None, jwks_min_refresh_s: float = 30.0) -> None:
        self.http = HttpUpstream("certificate library", session, base_url, clock=clock,
                                 policy=policy)
        self.jwks = JwksCache(self.http, "/issuers/jwks.json", clock=clock,
                              min_refresh_interval_s=jwks_min_refresh_s)

    async def fetch(self, citizen_id: str, types: Sequence[str]) -> list[Certificate]:
        if not is_valid_citizen_id(citizen_id):
            raise ValueError("invalid citizen ID")
        wanted = list(dict.fromkeys(types))
        if any(t not in CERTIFICATE_TYPES for t in wanted):
            raise ValueError("unknown certificate type")
        if not wanted:
            return []

        def parse(resp: UpstreamResponse) -> list[dict[str, Any]]:
            items = expect_list(resp.body, "certificates")
            for c in items:
                for k in ("type", "number", "issuer", "holder_ref", "issuer_signature"):
                    expect_str(c, k, max_len=16384)
                expect_int(c, "issued_at")
                if not isinstance(c.get("fields"), dict) or c["type"] not in wanted:
                    raise SchemaError("bad certificate")
            return items

        raw = await self.http.request(
            "POST", "/certificates/query", op="certificates", idempotent=True,
            json_body={"citizen_id": citizen_id, "types": wanted}, parse=parse)
        return [await self._checked(c) for c in raw]

    async def _checked(self, c: Mapping[str, Any]) -> Certificate:
        """The issuer JWS must verify and its payload must be exactly this certificate."""
        jws = c["issuer_signature"]
        bad = UpstreamUnavailable("The certificate library returned an unverifiable certificate",
                                  debug="certificate issuer signature check failed")
        try:
            kid = jwt.get_unverified_header(jws).get("kid")
        except jwt.DecodeError:
            raise bad from None
        key = await self.jwks.key(kid) if isinstance(kid, str) else None
        if key is None:
            raise bad
        try:
            payload = jwt.decode(jws, key.key, algorithms=[key.algorithm_name],
                                 options={"verify_exp": False, "verify_iat": False,
                                          "verify_nbf": False, "verify_aud": False})
        except jwt.InvalidTokenError:
            raise bad from None
        if payload != certificate_payload(c):
            raise bad
        return Certificate(type=c["type"], number=c["number"], issuer=c["issuer"],
                           fields=dict(c["fields"]), issuer_signature=jws,
                           issued_at=c["issued_at"])


def certificate_payload(c: Mapping[str, Any]) -> dict[str, Any]:
    """The JWS payload an issuing authority signs over a certificate (docs/upstreams.md).

    The holder is bound by the library's opaque `holder_ref` (a keyed hash of the citizen ID
    that only the library can compute), never by the ID number itself: the signature travels
    to relying parties intact, and must not disclose more than the certificate's fields."""
    return {"typ": c["type"], "num": c["number"], "iss": c["issuer"], "hld": c["holder_ref"],
            "fields": c["fields"], "iat": c["issued_at"]}
