"""The upstream platforms, played by real aiohttp applications (docs/upstreams.md "Sandbox").

Each factory returns a ``web.Application`` that tests serve on loopback and the sandbox
gateway mounts under ``/sandbox/upstreams/<name>/``. The object behind each app
(``app[YKB_SANDBOX]``, ``app[ESSC_SANDBOX]``, ``app[CERTLIB_SANDBOX]``) can also be called in
process, e.g. by ``POST /sandbox/v1/upstream-assertions``.

Keys are generated at first run under ``<keys_dir>/sandbox-upstreams/`` and reused by every
worker. The demo residents are fictitious (gateway/data/residents.json).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import jwt
from aiohttp import web

from gateway.base64url import b64u
from gateway.clock import Clock, SystemClock
from gateway.codec import encode_essc, signer_for
from gateway.services.upstream import (
    Resident,
    compute_terminal_mac,
    is_valid_citizen_id,
)

from ..upstream.clients import certificate_payload
from .faults import FAULTS_KEY, Faults, add_admin_routes, faults_middleware
from .keys import (
    SandboxKey,
    load_or_create_ec_key,
    load_or_create_secret,
    load_or_create_sm2_key,
)

__all__ = [
    "CERTLIB_SANDBOX",
    "ESSC_ISSUER_PREFIX",
    "ESSC_SANDBOX",
    "YKB_ISSUER",
    "YKB_SANDBOX",
    "CertLibSandbox",
    "EsscSandbox",
    "PsamSandbox",
    "YkbSandbox",
    "build_sandbox_upstreams",
    "make_certlib_app",
    "make_essc_app",
    "make_ykb_app",
]

YKB_ISSUER: Final = "https://ykb.sandbox.cq.gov.cn"
ESSC_ISSUER_PREFIX: Final = "https://essc.sandbox.mohrss.gov.cn"
ASSERTION_LIFETIME_S: Final = 300
ESSC_CODE_LIFETIME_S: Final = 60


class UnknownResident(LookupError):
    """No such demo resident, or the resident holds no such credential."""


def _not_found() -> web.Response:
    return web.json_response({"error": "not_found"}, status=404)


def _bad_request() -> web.Response:
    return web.json_response({"error": "invalid_request"}, status=400)


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    try:
        doc = await request.json()
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


class _Signing:
    """ES256 assertion signing with a key that can be rotated (rotation: a test knob,
    process-local; the previous public key stays published)."""

    def __init__(self, key: SandboxKey, clock: Clock) -> None:
        self.key = key
        self.previous: list[SandboxKey] = []
        self._clock = clock

    def rotate(self) -> str:
        self.previous.insert(0, self.key)
        self.key = SandboxKey.generate(self.key.name, self._clock.now())
        return self.key.kid

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk() for k in (self.key, *self.previous)]}

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.key.private_key,  # type: ignore[arg-type]
                          algorithm="ES256",
                          headers={"kid": self.key.kid, "typ": "JWT"})


def _assertion_claims(clock: Clock, *, iss: str, aud: str, sub: str, resident: Resident,
                      lifetime_s: int) -> dict[str, Any]:
    now = int(clock.now())
    return {"iss": iss, "aud": aud, "sub": sub, "iat": now, "exp": now + lifetime_s,
            "jti": secrets.token_urlsafe(16), "cid": resident.citizen_id,
            "name": resident.display_name}


class _Base:
    def __init__(self, residents: Sequence[Resident], clock: Clock) -> None:
        self.residents = {r.id: r for r in residents}
        self.clock = clock

    def resident(self, resident_id: str) -> Resident:
        r = self.residents.get(resident_id)
        if r is None:
            raise UnknownResident("unknown resident")
        return r

    def _app(self, admin: bool) -> web.Application:
        app = web.Application(middlewares=[faults_middleware])
        app[FAULTS_KEY] = Faults()
        if admin:
            add_admin_routes(app)
        return app


def _assertion_overrides(doc: dict[str, Any], admin: bool) -> tuple[str | None, int]:
    """Admin-only test knobs on POST …/assertions: ``audience`` and ``lifetime_s``."""
    if not admin:
        return None, ASSERTION_LIFETIME_S
    aud = doc.get("audience")
    lifetime = doc.get("lifetime_s", ASSERTION_LIFETIME_S)
    if (aud is not None and not isinstance(aud, str)) or type(lifetime) is not int:
        raise ValueError("bad override")
    return aud, lifetime


# --------------------------------------------------------------------------------------------
# 渝快办
# --------------------------------------------------------------------------------------------

class YkbSandbox(_Base):
    """渝快办 identity platform: 渝快码 account assertions and account lookup."""

    def __init__(self, residents: Sequence[Resident], keys_dir: Path, gateway_issuer: str, *,
                 clock: Clock, issuer: str = YKB_ISSUER) -> None:
        super().__init__(residents, clock)
        self.issuer = issuer
        self.gateway_issuer = gateway_issuer
        self.signing = _Signing(load_or_create_ec_key(keys_dir, "ykb-assertion", clock.now()),
                                clock)
        self.accounts = {r.ykm_account: r for r in residents if r.ykm_account}

    def issue_assertion(self, resident_id: str, *, audience: str | None = None,
                        lifetime_s: int = ASSERTION_LIFETIME_S) -> str:
        r = self.resident(resident_id)
        if r.ykm_account is None:
            raise UnknownResident("resident has no 渝快码 account")
        return self.signing.sign(_assertion_claims(
            self.clock, iss=self.issuer, aud=audience or self.gateway_issuer,
            sub=r.ykm_account, resident=r, lifetime_s=lifetime_s))

    def make_app(self, *, admin: bool = False) -> web.Application:
        app = self._app(admin)
        app[YKB_SANDBOX] = self

        async def jwks(request: web.Request) -> web.Response:
            return web.json_response(self.signing.jwks())

        async def assertions(request: web.Request) -> web.Response:
            doc = await _json_object(request)
            if doc is None or not isinstance(doc.get("resident"), str):
                return _bad_request()
            try:
                aud, lifetime = _assertion_overrides(doc, admin)
                token = self.issue_assertion(doc["resident"], audience=aud, lifetime_s=lifetime)
            except UnknownResident:
                return _not_found()
            except ValueError:
                return _bad_request()
            return web.json_response({"assertion": token}, status=201)

        async def account(request: web.Request) -> web.Response:
            r = self.accounts.get(request.match_info["account_id"])
            if r is None:
                return _not_found()
            return web.json_response({"account_id": r.ykm_account, "status": "active",
                                      "display_name": r.display_name,
                                      "citizen_id": r.citizen_id})

        app.router.add_get("/.well-known/jwks.json", jwks)
        app.router.add_post("/assertions", assertions)
        app.router.add_get("/accounts/{account_id}", account)
        if admin:
            async def rotate(request: web.Request) -> web.Response:
                return web.json_response({"kid": self.signing.rotate()})
            app.router.add_post("/__rotate", rotate, name="admin:rotate")
        return app


YKB_SANDBOX: Final = web.AppKey("ykb_sandbox", YkbSandbox)


def make_ykb_app(residents: Sequence[Resident], keys_dir: Path, gateway_issuer: str, *,
                 clock: Clock | None = None, admin: bool = False) -> web.Application:
    return YkbSandbox(residents, keys_dir, gateway_issuer,
                      clock=clock or SystemClock()).make_app(admin=admin)


# --------------------------------------------------------------------------------------------
# National e-SSC platform (per region)
# --------------------------------------------------------------------------------------------

class EsscSandbox(_Base):
    """The e-SSC platform for several regions, each with its own assertion and code keys.

    Regions in ``sm2_regions`` sign their codes with SM2 (GB/T 32918.2 with SM3, ESSC1
    version 2, JWK ``crv: SM2``), as the national platform's 国密 deployment does; the others
    with ES256. Key files differ per algorithm (``essc-cq-code`` / ``essc-cq-code-sm2``)."""

    def __init__(self, residents: Sequence[Resident], keys_dir: Path, gateway_issuer: str, *,
                 clock: Clock, regions: Sequence[str] = ("CQ", "SC"),
                 issuer_prefix: str = ESSC_ISSUER_PREFIX,
                 sm2_regions: Sequence[str] = ()) -> None:
        super().__init__(residents, clock)
        self.regions = tuple(regions)
        self.gateway_issuer = gateway_issuer
        self.issuer_prefix = issuer_prefix.rstrip("/")
        now = clock.now()
        self.assertion_keys = {r: _Signing(load_or_create_ec_key(
            keys_dir, f"essc-{r.lower()}-assertion", now), clock) for r in self.regions}
        self.code_keys = {
            r: (load_or_create_sm2_key(keys_dir, f"essc-{r.lower()}-code-sm2", now)
                if r in sm2_regions else
                load_or_create_ec_key(keys_dir, f"essc-{r.lower()}-code", now))
            for r in self.regions}
        self.holders: dict[tuple[str, str], Resident] = {
            (a.region, a.holder_id): res for res in residents for a in res.essc_accounts}

    def issuer(self, region: str) -> str:
        return f"{self.issuer_prefix}/{region}"

    def _check_region(self, region: str) -> None:
        if region not in self.regions:
            raise UnknownResident("region not served")

    def issue_assertion(self, resident_id: str, region: str, *, audience: str | None = None,
                        lifetime_s: int = ASSERTION_LIFETIME_S) -> str:
        self._check_region(region)
        r = self.resident(resident_id)
        holder = r.essc_holder(region)
        if holder is None:
            raise UnknownResident("resident holds no e-SSC of this region")
        claims = _assertion_claims(self.clock, iss=self.issuer(region),
                                   aud=audience or self.gateway_issuer, sub=holder, resident=r,
                                   lifetime_s=lifetime_s)
        claims["region"] = region
        return self.assertion_keys[region].sign(claims)

    def issue_code(self, holder_id: str, region: str) -> str:
        """An ``ESSC1:`` code (docs/code-format.md) signed with the region's code key; the
        holder field is the platform's pseudonymous card-holder id, never the citizen ID."""
        self._check_region(region)
        if (region, holder_id) not in self.holders:
            raise UnknownResident("unknown holder")
        key = self.code_keys[region]
        return encode_essc(region=region, holder=holder_id.encode("ascii"),
                           issued_at=int(self.clock.now()), lifetime_s=ESSC_CODE_LIFETIME_S,
                           signer=signer_for(key.private_key, kid=key.kid))

    def code_jwks(self, region: str) -> list[dict[str, Any]]:
        self._check_region(region)
        return [self.code_keys[region].public_jwk(issuer=f"essc:{region}")]

    def make_app(self, *, admin: bool = False) -> web.Application:
        app = self._app(admin)
        app[ESSC_SANDBOX] = self

        def region_of(request: web.Request) -> str | None:
            region = request.match_info["region"]
            return region if region in self.regions else None

        async def jwks(request: web.Request) -> web.Response:
            region = region_of(request)
            if region is None:
                return _not_found()
            return web.json_response(self.assertion_keys[region].jwks())

        async def assertions(request: web.Request) -> web.Response:
            region = region_of(request)
            doc = await _json_object(request)
            if region is None:
                return _not_found()
            if doc is None or not isinstance(doc.get("resident"), str):
                return _bad_request()
            try:
                aud, lifetime = _assertion_overrides(doc, admin)
                token = self.issue_assertion(doc["resident"], region, audience=aud,
                                             lifetime_s=lifetime)
            except UnknownResident:
                return _not_found()
            except ValueError:
                return _bad_request()
            return web.json_response({"assertion": token}, status=201)

        async def codes(request: web.Request) -> web.Response:
            region = region_of(request)
            doc = await _json_object(request)
            if region is None:
                return _not_found()
            if doc is None or not isinstance(doc.get("holder"), str):
                return _bad_request()
            try:
                code = self.issue_code(doc["holder"], region)
            except UnknownResident:
                return _not_found()
            return web.json_response({"code": code, "expires_in": ESSC_CODE_LIFETIME_S},
                                     status=201)

        async def code_keys(request: web.Request) -> web.Response:
            region = region_of(request)
            if region is None:
                return _not_found()
            return web.json_response({"keys": self.code_jwks(region)})

        async def holder(request: web.Request) -> web.Response:
            region = region_of(request)
            hid = request.match_info["holder_id"]
            r = self.holders.get((region, hid)) if region else None
            if r is None:
                return _not_found()
            return web.json_response({"holder_id": hid, "status": "active",
                                      "display_name": r.display_name,
                                      "citizen_id": r.citizen_id})

        app.router.add_get("/{region}/.well-known/jwks.json", jwks)
        app.router.add_post("/{region}/assertions", assertions)
        app.router.add_post("/{region}/codes", codes)
        app.router.add_get("/{region}/code-keys", code_keys)
        app.router.add_get("/{region}/holders/{holder_id}", holder)
        if admin:
            async def rotate(request: web.Request) -> web.Response:
                region = region_of(request)
                if region is None:
                    return _not_found()
                return web.json_response({"kid": self.assertion_keys[region].rotate()})
            app.router.add_post("/{region}/__rotate", rotate, name="admin:rotate")
        return app


ESSC_SANDBOX: Final = web.AppKey("essc_sandbox", EsscSandbox)


def make_essc_app(residents: Sequence[Resident], keys_dir: Path, gateway_issuer: str, *,
                  clock: Clock | None = None, regions: Sequence[str] = ("CQ", "SC"),
                  admin: bool = False, sm2_regions: Sequence[str] = ()) -> web.Application:
    return EsscSandbox(residents, keys_dir, gateway_issuer, clock=clock or SystemClock(),
                       regions=regions, sm2_regions=sm2_regions).make_app(admin=admin)


# --------------------------------------------------------------------------------------------
# 电子证照库
# --------------------------------------------------------------------------------------------

class CertLibSandbox(_Base):
    """The certificate library: each issuing authority signs its certificates with its own key."""

    def __init__(self, residents: Sequence[Resident], keys_dir: Path, *, clock: Clock) -> None:
        super().__init__(residents, clock)
        self.by_cid = {r.citizen_id: r for r in residents}
        self.holder_secret = load_or_create_secret(keys_dir, "certlib-holder")
        issuers = sorted({c.issuer for r in residents for c in r.certificates})
        self.issuer_keys = {
            name: load_or_create_ec_key(
                keys_dir, "certissuer-" + hashlib.sha256(name.encode()).hexdigest()[:12],
                clock.now())
            for name in issuers}

    def holder_ref(self, citizen_id: str) -> str:
        """The library's opaque holder binding: HMAC of the ID number under its own secret."""
        mac = hmac.new(self.holder_secret, citizen_id.encode("ascii"), hashlib.sha256)
        return b64u(mac.digest()[:16])

    def certificates(self, citizen_id: str, types: Sequence[str]) -> list[dict[str, Any]]:
        r = self.by_cid.get(citizen_id)
        if r is None:
            return []
        out = []
        for c in r.certificates:
            if c.type not in types:
                continue
            doc: dict[str, Any] = {"type": c.type, "number": c.number, "issuer": c.issuer,
                                   "holder_ref": self.holder_ref(citizen_id),
                                   "fields": dict(c.fields), "issued_at": c.issued_at}
            key = self.issuer_keys[c.issuer]
            doc["issuer_signature"] = jwt.encode(
                certificate_payload(doc), key.private_key,  # type: ignore[arg-type]
                algorithm="ES256",
                headers={"kid": key.kid})
            out.append(doc)
        return out

    def make_app(self, *, admin: bool = False) -> web.Application:
        app = self._app(admin)
        app[CERTLIB_SANDBOX] = self

        async def jwks(request: web.Request) -> web.Response:
            return web.json_response({"keys": [k.public_jwk()
                                               for k in self.issuer_keys.values()]})

        async def query(request: web.Request) -> web.Response:
            doc = await _json_object(request)
            if (doc is None or not isinstance(doc.get("citizen_id"), str)
                    or not is_valid_citizen_id(doc["citizen_id"])
                    or not isinstance(doc.get("types"), list)
                    or not all(isinstance(t, str) for t in doc["types"])):
                return _bad_request()
            return web.json_response(
                {"certificates": self.certificates(doc["citizen_id"], doc["types"])})

        app.router.add_get("/issuers/jwks.json", jwks)
        app.router.add_post("/certificates/query", query)
        return app


CERTLIB_SANDBOX: Final = web.AppKey("certlib_sandbox", CertLibSandbox)


def make_certlib_app(residents: Sequence[Resident], keys_dir: Path, *,
                     clock: Clock | None = None, admin: bool = False) -> web.Application:
    return CertLibSandbox(residents, keys_dir, clock=clock or SystemClock()).make_app(admin=admin)


# --------------------------------------------------------------------------------------------
# PSAM (card terminals)
# --------------------------------------------------------------------------------------------

class PsamSandbox:
    """The card-management system's PSAM master key (sandbox: a 0600 file in keys_dir)."""

    def __init__(self, keys_dir: Path) -> None:
        self.master_key = load_or_create_secret(keys_dir, "psam-master")

    def __repr__(self) -> str:
        return "PsamSandbox()"

    def terminal_mac(self, *, card_no: str, region: str, gate_client_id: str, request_id: str,
                     scanned_at: str) -> str:
        """What the gate's PSAM would send for this tap (POST /sandbox/v1/card-taps)."""
        return compute_terminal_mac(self.master_key, card_no=card_no, region=region,
                                    gate_client_id=gate_client_id, request_id=request_id,
                                    scanned_at=scanned_at)


def build_sandbox_upstreams(residents: Sequence[Resident], keys_dir: Path, gateway_issuer: str,
                            *, clock: Clock | None = None,
                            sm2_regions: Sequence[str] = ()) -> dict[str, web.Application]:
    """The sub-applications to mount as ``/sandbox/upstreams/<name>`` (``ykb``, ``essc``,
    ``certlib``); admin knobs off. ``sm2_regions``: e-SSC regions that sign codes with SM2."""
    clock = clock or SystemClock()
    return {
        "ykb": make_ykb_app(residents, keys_dir, gateway_issuer, clock=clock),
        "essc": make_essc_app(residents, keys_dir, gateway_issuer, clock=clock,
                              sm2_regions=sm2_regions),
        "certlib": make_certlib_app(residents, keys_dir, clock=clock),
    }
