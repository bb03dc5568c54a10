"""Authorised login (OpenID Connect Core 1.0) with scan-to-login confirmed in the resident's app.

Flow: the browser's authorization request opens a single-use login session (≤ 3 min) shown as
a QR code and a two-digit number; the resident app scans (`scan`), is shown the client, the
scopes and the requesting browser's context, picks the matching number and approves; the page
(bound to its session by an HttpOnly cookie) polls and is sent to the client's redirect URI
with a one-time code (≤ 60 s, bound to client, redirect URI and PKCE S256). Token grants:
`authorization_code` (a replayed code revokes the grant it issued, RFC 9700 §4.5.3 / RFC 6749
§4.1.2) and `refresh_token` (rotation; reuse of a spent token revokes the family after a short
grace period for concurrent refreshes, RFC 9700 §4.14.2; absolute lifetime).
"""

from __future__ import annotations

import hmac
import inspect
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog

from gateway.authz import oidc
from gateway.authz.clients import Client
from gateway.authz.datakeys import DataKeys
from gateway.authz.oidc import (
    CODE_RECORD_TTL_S,
    CODE_TTL_S,
    GRACE,
    LOGIN_SESSION_TTL_S,
    REFRESH_ABSOLUTE_TTL_S,
    REFRESH_GRACE_S,
    REUSED,
    ROTATED,
    RP_USER_KIND,
    AuthorizationRequest,
    CodeRecord,
    CodeStore,
    Consent,
    ConsentStore,
    Family,
    LoginSession,
    LoginSessionStore,
    PushedRequestStore,
    RefreshStore,
)
from gateway.authz.pkce import verify_s256
from gateway.authz.tokens import AccessTokenClaims, AccessTokens, JwtSigner, TokenInvalid
from gateway.errors import Conflict, Forbidden, InvalidRequest, NotFound, OAuthError
from gateway.ports import ClientStore
from gateway.services.ports import PersonClaims
from gateway.services.subjects import SubjectSeen
from gateway.services.tokens import bearer_response
from gateway.timefmt import rfc3339_s

log = structlog.get_logger("gateway.login")


def add_query(uri: str, params: Mapping[str, str | None]) -> str:
    """Append parameters to a redirect URI, keeping its own query (RFC 6749 §3.1.2)."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _redirect_context(session_id: str) -> str:
    return f"login-redirect:{session_id}"


@dataclass(frozen=True)
class Started:
    session: LoginSession
    qr: str            # what the QR code encodes
    binding: str       # the browser's cookie value (only its hash is stored)


class LoginService:
    def __init__(self, *, clients: ClientStore, sessions: LoginSessionStore, codes: CodeStore,
                 refresh: RefreshStore, consents: ConsentStore,
                 persons: PersonClaims, subject_seen: SubjectSeen, keys: DataKeys,
                 access: AccessTokens,
                 signer: JwtSigner, alg: Callable[[], str], issuer: str,
                 clock: Callable[[], float], access_ttl_s: int,
                 verify_bearer: Callable[[str], Awaitable[AccessTokenClaims]],
                 pushed: PushedRequestStore,
                 notify_logout: Callable[[str, str], Awaitable[None]],
                 session_ttl_s: int = LOGIN_SESSION_TTL_S, require_number: bool = True) -> None:
        self.require_number = require_number
        self.pushed = pushed
        #: (backchannel_logout_uri, logout token) -> delivered (OIDC Back-Channel Logout)
        self.notify_logout = notify_logout
        self.clients = clients
        self.sessions = sessions
        self.codes = codes
        self.refresh = refresh
        self.consents = consents
        self.persons = persons
        self.subject_seen = subject_seen  # the consent feature's subject index
        self.keys = keys
        self.access = access
        self.signer = signer
        self.alg = alg
        self.issuer = issuer
        self.now = clock
        self.access_ttl_s = access_ttl_s
        self.verify_bearer = verify_bearer
        self.session_ttl_s = session_ttl_s

    # -- the browser side ---------------------------------------------------------------------
    async def start(self, req: AuthorizationRequest, user_agent: str | None,
                    ip: str | None) -> Started:
        now = self.now()
        sid = oidc.new_id()
        scan_secret = oidc.new_scan_secret()
        binding = secrets.token_urlsafe(32)
        session = LoginSession(
            id=sid, client_id=req.client_id, redirect_uri=req.redirect_uri, scopes=req.scopes,
            state=req.state, nonce=req.nonce, code_challenge=req.code_challenge,
            scan_secret_hash=oidc.digest(scan_secret), binding_hash=oidc.digest(binding),
            number=oidc.new_number(), created_at=now, expires_at=now + self.session_ttl_s,
            browser=oidc.describe_browser(user_agent), place=oidc.describe_place(ip),
            dpop_jkt=req.dpop_jkt)
        # The record outlives the session by a minute so a late poll reads "expired", not 404.
        await self.sessions.create(session, self.session_ttl_s + 60)
        return Started(session, oidc.qr_payload(oidc.session_id_to_qr(sid), scan_secret),
                       binding)

    async def poll(self, session_id: str, binding: str | None) -> dict[str, Any]:
        """Status for anyone holding the id; `redirect_to` only for the bound browser."""
        s = await self._session(session_id)
        now = self.now()
        status = s.public_status(now)
        body: dict[str, Any] = {"status": status, "expires_at": rfc3339_s(s.expires_at)}
        bound = binding is not None and hmac.compare_digest(
            oidc.digest(binding).encode(), s.binding_hash.encode())
        if status != "approved" or not bound:
            return body
        if s.status == "approved":
            await self._complete(s)
            s = await self._session(session_id)
        if s.status == "done" and s.redirect_to:
            body["redirect_to"] = self.keys.open_record(s.redirect_to,
                                                        _redirect_context(s.id))
        return body

    async def _complete(self, s: LoginSession) -> None:
        """Mint the code when the bound browser collects it (the code's 60 s start now)."""
        assert s.person_id is not None
        code = secrets.token_urlsafe(32)
        record = CodeRecord(
            client_id=s.client_id, redirect_uri=s.redirect_uri, code_challenge=s.code_challenge,
            person_id=s.person_id, scopes=s.scopes, nonce=s.nonce,
            auth_time=int(s.decided_at or self.now()), family_id=oidc.new_id(),
            expires_at=self.now() + CODE_TTL_S, dpop_jkt=s.dpop_jkt)
        await self.codes.put(oidc.digest(code), record, CODE_RECORD_TTL_S)
        redirect_to = add_query(s.redirect_uri, {"code": code, "state": s.state,
                                                 "iss": self.issuer})
        # sealed at rest: the stored session never holds a usable code (review finding 8)
        sealed = self.keys.seal_record(redirect_to, _redirect_context(s.id))
        await self.sessions.transition(s.id, "approved", "done", {"redirect_to": sealed})

    async def _session(self, session_id: str) -> LoginSession:
        s = await self.sessions.get(session_id) if oidc.is_id(session_id) else None
        if s is None:
            raise NotFound("No such login session")
        return s

    # -- RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) ---------------------------
    async def end_session(self, params: Mapping[str, str]) -> str | None:
        """§2-§3: with `id_token_hint` (one of our ID tokens, expired up to the grant's life),
        end the grant it names (`sid`: the refresh family, and with it the access tokens);
        `post_logout_redirect_uri` must be registered for the client exactly. The redirect
        (with `state`) or None for the logged-out page. InvalidRequest for a bad request."""
        hint, client_id = params.get("id_token_hint"), params.get("client_id")
        claims: dict[str, Any] | None = None
        if hint:
            try:
                claims = self.signer.verify(hint, audience=None, issuer=self.issuer,
                                            typ=oidc.ID_TOKEN_TYP.lower(),
                                            leeway_s=REFRESH_ABSOLUTE_TTL_S,
                                            require=("iss", "sub", "aud", "iat"))
            except TokenInvalid:
                raise InvalidRequest("id_token_hint is not an ID token of ours") from None
            aud = claims.get("aud")
            auds = aud if isinstance(aud, list) else [aud]
            if client_id is None and len(auds) == 1 and isinstance(auds[0], str):
                client_id = auds[0]
            if client_id not in auds:
                raise InvalidRequest("id_token_hint was issued to another client")
        client = await self.clients.get(client_id) if client_id and len(client_id) <= 128 \
            else None
        target = params.get("post_logout_redirect_uri")
        if target is not None and (client is None
                                   or target not in client.post_logout_redirect_uris):
            raise InvalidRequest("post_logout_redirect_uri is not registered for this client")
        sid = claims.get("sid") if claims else None
        if isinstance(sid, str) and client is not None:
            fam = await self.refresh.get(sid)
            if fam is not None and fam.client_id == client.client_id:
                await self.refresh.revoke(sid, REFRESH_ABSOLUTE_TTL_S)
                log.info("logout.rp_initiated", client_id=client.client_id)
                await self._backchannel(client, fam, sid)
        if target is None:
            return None
        return add_query(target, {"state": params.get("state")})

    async def _backchannel(self, client: Client, fam: Family, sid: str) -> None:
        """OIDC Back-Channel Logout 1.0 §2.5: tell the RP's back end, server to server, with a
        logout token signed like ID tokens (`typ: logout+jwt`). Delivery failures are logged
        by the notifier; the logout itself has happened."""
        if not client.backchannel_logout_uri:
            return
        sub = await self._subject(client.sector, fam.person_id)
        token = self.signer.sign(oidc.logout_token_claims(
            issuer=self.issuer, client_id=client.client_id, sub=sub, sid=sid,
            now=int(self.now())), typ=oidc.LOGOUT_TOKEN_TYP)
        await self.notify_logout(client.backchannel_logout_uri, token)

    # -- pushed authorization requests (RFC 9126) -----------------------------------------------
    async def push(self, client: Client, form: Mapping[str, str],
                   proof_jkt: str | None = None) -> dict[str, Any]:
        """RFC 9126 §2: validate the request as /authorize would (errors are answered here as
        400 JSON, never redirected) and keep it for PAR_TTL_S under a fresh request_uri.
        `proof_jkt`: the key of the request's DPoP proof, which binds the code (RFC 9449
        §10.1) as `dpop_jkt` does."""
        if client.kind != "rp":
            raise OAuthError("unauthorized_client", "This client may not push requests")
        params = oidc.par_params(form)
        if not oidc.bind_pushed_key(params, proof_jkt):
            raise OAuthError("invalid_dpop_proof",
                             "dpop_jkt is not the thumbprint of the DPoP proof's key")
        if params.get("request_uri"):   # §2.1: MUST NOT be sent in a pushed request
            raise OAuthError("invalid_request", "request_uri is not allowed here")
        if params.setdefault("client_id", [client.client_id]) != [client.client_id]:
            raise OAuthError("invalid_request", "client_id differs from the authenticated client")
        try:
            _, redirect_uri = oidc.client_and_redirect(params, client)
            oidc.authorization_request(params, client, redirect_uri,
                                       len(urlencode(form)), pushed=True)
        except oidc.AuthorizeError as exc:
            error = "invalid_request" if exc.error == "invalid_client" else exc.error
            raise OAuthError(error, exc.description) from None
        request_uri = oidc.new_request_uri()
        await self.pushed.put(oidc.digest(request_uri), json.dumps(params), oidc.PAR_TTL_S)
        return {"request_uri": request_uri, "expires_in": oidc.PAR_TTL_S}

    async def take_pushed(self, client_id: str, request_uri: str
                          ) -> dict[str, list[str]] | None:
        """The pushed request named by `request_uri` for `client_id`, used up; None when it is
        unknown, expired, spent or another client's (RFC 9126 §4)."""
        if not request_uri.startswith(oidc.PAR_URN_PREFIX) \
                or len(request_uri) > 200:
            return None
        raw = await self.pushed.take(oidc.digest(request_uri))
        if raw is None:
            return None
        params: dict[str, list[str]] = json.loads(raw)
        if params.get("client_id") != [client_id]:
            return None
        return params

    # -- the resident app side ------------------------------------------------------------------
    async def scan(self, qr: str, person_id: str) -> dict[str, Any]:
        parsed = oidc.parse_qr(qr)
        if parsed is None:
            if qr.startswith(oidc.QR_PREFIX):   # ours in form, but no session's
                raise NotFound("No such login session")
            raise InvalidRequest("This is not a login QR code")
        sid, secret = parsed
        await self._not_suspended(person_id)
        s = await self.sessions.get(sid)
        if s is None or not hmac.compare_digest(oidc.digest(secret).encode(),
                                                s.scan_secret_hash.encode()):
            raise NotFound("No such login session")
        now = self.now()
        if s.public_status(now) == "expired":
            raise Conflict("The login session has expired")
        if not await self.sessions.transition(sid, "pending", "scanned",
                                              {"person_id": person_id,
                                               "scanned_at": repr(now)}):
            current = await self._session(sid)
            if current.status != "scanned" or current.person_id != person_id:
                raise Conflict("The login session was already scanned")
        client = await self.clients.get(s.client_id)
        remembered = await self.consents.get(person_id, s.client_id)
        answer: dict[str, Any] = {
            "login_session_id": sid,
            "client": {"client_id": s.client_id,
                       "display_name": client.display_name if client else s.client_id},
            "scopes": list(s.scopes),
            "claims": [oidc.CLAIM_NAMES[c] for c in oidc.claims_for_scopes(s.scopes)],
            "consent_remembered": remembered is not None
            and set(s.scopes) <= set(remembered.scopes),
            "context": {"browser": s.browser, "place": s.place,
                        "time": rfc3339_s(s.created_at)},
            "expires_at": rfc3339_s(s.expires_at),
        }
        if self.require_number:   # choices only when a pick is required (review finding 1)
            answer["number_choices"] = oidc.number_choices(s.number)
        return answer

    async def _scanned_by(self, session_id: str, person_id: str) -> LoginSession:
        s = await self._session(session_id)
        if s.person_id is not None and s.person_id != person_id:
            raise Forbidden("Another resident scanned this login session")
        if s.public_status(self.now()) == "expired":
            raise Conflict("The login session has expired")
        if s.status == "pending":
            raise Conflict("Scan the login session first")
        if s.status != "scanned":
            raise Conflict("The login session was already decided")
        return s

    async def _not_suspended(self, person_id: str) -> None:
        if await self.persons.person_suspended(person_id):
            raise Forbidden("This resident may not log in")

    async def approve(self, session_id: str, person_id: str, number: Any) -> dict[str, Any]:
        await self._not_suspended(person_id)
        s = await self._scanned_by(session_id, person_id)
        if number is None and self.require_number:
            raise InvalidRequest("number (the one shown in the browser) is required")
        if isinstance(number, str) and number.isdigit():
            number = int(number)
        if number is not None and (not isinstance(number, int) or isinstance(number, bool)):
            raise InvalidRequest("number must be the number shown in the browser")
        now = self.now()
        if number is not None and \
                not hmac.compare_digest(str(number).encode(), str(s.number).encode()):
            # A wrong pick may be a hijack attempt: the session is spent (RFC 8628 §5.4).
            await self.sessions.transition(session_id, "scanned", "denied",
                                           {"decided_at": repr(now)})
            raise Forbidden("The number does not match the browser's; the login was cancelled")
        if not await self.sessions.transition(session_id, "scanned", "approved",
                                              {"decided_at": repr(now)}):
            raise Conflict("The login session was already decided")
        prev = await self.consents.get(person_id, s.client_id)
        scopes = tuple(dict.fromkeys((prev.scopes if prev else ()) + s.scopes))
        await self.consents.remember(person_id, Consent(s.client_id, scopes, now))
        log.info("login.approved", client_id=s.client_id)
        return {"login_session_id": session_id, "status": "approved"}

    async def deny(self, session_id: str, person_id: str) -> dict[str, Any]:
        await self._scanned_by(session_id, person_id)
        if not await self.sessions.transition(session_id, "scanned", "denied",
                                              {"decided_at": repr(self.now())}):
            raise Conflict("The login session was already decided")
        return {"login_session_id": session_id, "status": "denied"}

    # -- remembered consent -----------------------------------------------------------------------
    async def authorisations(self, person_id: str) -> list[dict[str, Any]]:
        out = []
        for c in await self.consents.list(person_id):
            client = await self.clients.get(c.client_id)
            out.append({"client_id": c.client_id,
                        "display_name": client.display_name if client else c.client_id,
                        "scopes": list(c.scopes), "granted_at": rfc3339_s(c.granted_at)})
        return out

    async def forget(self, person_id: str, client_id: str) -> None:
        """Revoking the consent ends the client's refresh families at their next use and
        its access tokens at userinfo (both check the consent)."""
        if not await self.consents.forget(person_id, client_id):
            raise NotFound("No authorisation for this client")

    # -- tokens -----------------------------------------------------------------------------------
    async def _subject(self, sector: str, person_id: str) -> str:
        got = self.persons.subject_for(sector, person_id)
        subject = str(await got) if inspect.isawaitable(got) else str(got)
        await self.subject_seen(sector, subject, person_id)
        return subject

    async def issue(self, client: Client, person_id: str, scopes: tuple[str, ...],
                    family_id: str, auth_time: int, nonce: str | None,
                    refresh_token: str, jkt: str | None = None) -> dict[str, Any]:
        sub = await self._subject(client.sector, person_id)
        sealed = self.keys.seal_person_id(person_id, client.client_id)
        at, _ = self.access.issue(client_id=client.client_id, kind=RP_USER_KIND, sub=sub,
                                  scopes=scopes, ttl_s=self.access_ttl_s,
                                  sealed_person=sealed, sid=family_id, jkt=jkt)
        id_token = self.signer.sign(oidc.id_token_claims(
            issuer=self.issuer, sub=sub, client_id=client.client_id, now=int(self.now()),
            auth_time=auth_time, nonce=nonce, access_token=at, alg=self.alg(), sid=family_id),
            typ=oidc.ID_TOKEN_TYP)
        return bearer_response(at, self.access_ttl_s, scopes, jkt, refresh_token=refresh_token,
                               id_token=id_token)

    async def live_family(self, family_id: str | None, client_id: str) -> Family | None:
        if not family_id:
            return None
        fam = await self.refresh.get(family_id)
        if fam is None or fam.revoked or fam.client_id != client_id \
                or self.now() >= fam.expires_at:
            return None
        if await self.consents.get(fam.person_id, client_id) is None:
            return None
        if await self.persons.person_suspended(fam.person_id):
            return None
        return fam

    async def userinfo(self, token: str) -> dict[str, Any]:
        """OIDC Core §5.3 over RFC 6750: claims by scope only (data minimisation)."""
        def invalid(debug: str) -> OAuthError:
            challenge = 'Bearer realm="gateway", error="invalid_token"'
            return OAuthError("invalid_token", "The access token is not valid", 401,
                              debug=debug, headers={"WWW-Authenticate": challenge})
        try:
            claims = await self.verify_bearer(token)
        except TokenInvalid as exc:
            raise invalid(exc.reason) from None
        if claims.kind != RP_USER_KIND or claims.sealed_person is None:
            raise invalid("not an rp_user token")
        if not claims.has_scope("openid"):
            raise OAuthError("insufficient_scope", "The token lacks the openid scope", 403,
                             headers={"WWW-Authenticate": 'Bearer realm="gateway", '
                                      'error="insufficient_scope", scope="openid"'})
        if await self.live_family(claims.sid, claims.client_id) is None:
            raise invalid("grant revoked")
        person_id = self.keys.open_person_id(claims.sealed_person, claims.client_id)
        out: dict[str, Any] = {"sub": claims.sub}
        names = oidc.claims_for_scopes(sorted(claims.scopes))
        if names:
            got = self.persons.disclose(person_id, names)
            values = await got if inspect.isawaitable(got) else got
            for name in names:
                if values.get(name) is not None:
                    out[oidc.CLAIM_NAMES[name]] = values[name]
        return out

    async def revocation_hook(self, client: Client, token: str, hint: str | None) -> bool:
        """RFC 7009 for refresh tokens: revoking one ends its whole family (and thereby the
        family's access tokens, §2.1). True when the token was one of ours in form."""
        parsed = oidc.split_refresh_token(token)
        if parsed is None:
            return False
        fam = await self.refresh.get(parsed[0])
        if fam is not None and fam.client_id == client.client_id and \
                await self.refresh.token_state(parsed[0], oidc.digest(parsed[1])) is not None:
            await self.refresh.revoke(parsed[0], REFRESH_ABSOLUTE_TTL_S)
            log.info("refresh.revoked", client_id=client.client_id)
        return True

    async def introspection_hook(self, client: Client, token: str,
                                 hint: str | None) -> dict[str, Any] | None:
        """RFC 7662 for refresh tokens, and the grant check for rp_user access tokens."""
        parsed = oidc.split_refresh_token(token)
        if parsed is not None:
            fam = await self.live_family(parsed[0], client.client_id)
            state = await self.refresh.token_state(parsed[0], oidc.digest(parsed[1]))
            if fam is None or state != "active":
                return {"active": False}
            return {"active": True, "client_id": fam.client_id, "token_type": "refresh_token",
                    "scope": " ".join(sorted(fam.scopes)), "iss": self.issuer,
                    "sub": await self._subject(client.sector, fam.person_id),
                    "exp": int(fam.expires_at), "iat": int(fam.created_at),
                    "auth_time": fam.auth_time}
        try:
            claims = await self.verify_bearer(token)
        except TokenInvalid:
            return None
        if claims.kind == RP_USER_KIND and (
                claims.client_id != client.client_id
                or await self.live_family(claims.sid, claims.client_id) is None):
            return {"active": False}
        return None


@dataclass
class AuthorizationCodeGrant:
    """RFC 6749 §4.1.3 + RFC 7636 §4.6: single use; bound to client, redirect URI, PKCE."""

    login: LoginService
    grant_type: str = "authorization_code"

    async def __call__(self, client: Client, form: Mapping[str, str],
                       jkt: str | None = None) -> dict[str, Any]:
        if client.kind != "rp":
            raise OAuthError("unauthorized_client", "This client may not use authorization_code")
        code = form.get("code")
        if not code:
            raise OAuthError("invalid_request", "code is required")
        got = await self.login.codes.consume(oidc.digest(code)) if len(code) <= 256 else None
        if got is None:
            raise OAuthError("invalid_grant", "The code is not valid", debug="unknown code")
        rec, first = got
        if not first:
            await self.login.refresh.revoke(rec.family_id, REFRESH_ABSOLUTE_TTL_S)
            log.warning("code.replayed", client_id=client.client_id)
            raise OAuthError("invalid_grant", "The code is not valid", debug="code replayed")
        if self.login.now() >= rec.expires_at:
            raise OAuthError("invalid_grant", "The code is not valid", debug="code expired")
        if not hmac.compare_digest(rec.client_id.encode(), client.client_id.encode()):
            raise OAuthError("invalid_grant", "The code is not valid", debug="other client")
        if form.get("redirect_uri") != rec.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the request")
        if not verify_s256(form.get("code_verifier"), rec.code_challenge):
            raise OAuthError("invalid_grant", "The code_verifier does not match")
        if rec.dpop_jkt is not None and not (
                jkt is not None and hmac.compare_digest(rec.dpop_jkt.encode(), jkt.encode())):
            # RFC 9449 §10: the code was bound to a DPoP key at the authorization request
            raise OAuthError("invalid_grant", "The code is bound to another DPoP key",
                             debug="dpop_jkt mismatch")
        if await self.login.persons.person_suspended(rec.person_id):
            raise OAuthError("invalid_grant", "The code is not valid", debug="person suspended")
        now = self.login.now()
        token, token_hash = oidc.new_refresh_token(rec.family_id)
        fam = Family(family_id=rec.family_id, client_id=client.client_id,
                     person_id=rec.person_id, scopes=rec.scopes, auth_time=rec.auth_time,
                     created_at=now, expires_at=now + REFRESH_ABSOLUTE_TTL_S,
                     # RFC 9449 §5: a public client's refresh tokens are bound to its key
                     jkt=jkt if jkt and client.is_public else "")
        if not await self.login.refresh.create(fam, token_hash, REFRESH_ABSOLUTE_TTL_S):
            raise OAuthError("invalid_grant", "The code is not valid", debug="family exists")
        return await self.login.issue(client, rec.person_id, rec.scopes, rec.family_id,
                                      rec.auth_time, rec.nonce, token, jkt)


@dataclass
class RefreshTokenGrant:
    """RFC 6749 §6 with rotation (RFC 9700 §4.14.2): each refresh token works once; a spent
    one presented again within `grace_s` gets the very answer its first use got (the same
    successor pair: one live branch), after it revokes the whole family."""

    login: LoginService
    grace_s: float = REFRESH_GRACE_S
    grant_type: str = "refresh_token"

    async def __call__(self, client: Client, form: Mapping[str, str],
                       jkt: str | None = None) -> dict[str, Any]:
        if client.kind != "rp":
            raise OAuthError("unauthorized_client", "This client may not use refresh_token")
        presented = form.get("refresh_token")
        if not presented:
            raise OAuthError("invalid_request", "refresh_token is required")
        parsed = oidc.split_refresh_token(presented)
        if parsed is None:
            raise OAuthError("invalid_grant", "The refresh token is not valid")
        family_id, secret = parsed
        fam = await self.login.refresh.get(family_id)
        now = self.login.now()
        if fam is None or fam.client_id != client.client_id or now >= fam.expires_at:
            raise OAuthError("invalid_grant", "The refresh token is not valid",
                             debug="unknown, other client's or expired family")
        if fam.jkt and not (jkt and hmac.compare_digest(fam.jkt.encode(), jkt.encode())):
            raise OAuthError("invalid_grant", "The refresh token is bound to another DPoP key",
                             debug="dpop key mismatch")
        scopes = fam.scopes
        if form.get("scope"):
            asked = tuple(dict.fromkeys(form["scope"].split()))
            if not set(asked) <= set(fam.scopes):
                raise OAuthError("invalid_scope", "The scope exceeds the original grant")
            scopes = asked
        if await self.login.consents.get(fam.person_id, client.client_id) is None:
            await self.login.refresh.revoke(family_id, REFRESH_ABSOLUTE_TTL_S)
            raise OAuthError("invalid_grant", "The authorisation was withdrawn")
        if await self.login.persons.person_suspended(fam.person_id):
            raise OAuthError("invalid_grant", "The refresh token is not valid",
                             debug="person suspended")
        # The answer is made first and kept (sealed) with the spent token, so a retry within
        # the grace window gets this same pair instead of a second live branch (finding 2).
        token, token_hash = oidc.new_refresh_token(family_id)
        answer = await self.login.issue(client, fam.person_id, scopes, family_id,
                                        fam.auth_time, None, token, jkt)
        presented_hash = oidc.digest(secret)
        context = f"refresh-successor:{family_id}:{presented_hash}"
        sealed = self.login.keys.seal_record(json.dumps(answer), context)
        outcome, kept = await self.login.refresh.rotate(family_id, presented_hash, token_hash,
                                                        now, self.grace_s, sealed)
        if outcome == ROTATED:
            return answer
        if outcome == GRACE and kept is not None:
            log.info("refresh.grace", client_id=client.client_id)
            return dict(json.loads(self.login.keys.open_record(kept, context)))
        if outcome == REUSED:
            log.warning("refresh.reused", client_id=client.client_id)
        raise OAuthError("invalid_grant", "The refresh token is not valid", debug=outcome)
