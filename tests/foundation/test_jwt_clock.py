"""JWT time claims are checked on the injected clock, like everything else (issue 13): a token
issued at a frozen time verifies at that time and expires when that clock says so, whatever
the wall clock reads (pyjwt's own exp / nbf / iat checks read the wall clock)."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.adapters.memory import MemoryClientStore, MemorySingleUse
from gateway.authz.client_auth import JWT_BEARER, ClientAuthenticator
from gateway.authz.clients import Client
from gateway.authz.keyring import bootstrap, derive_kid, public_jwk
from gateway.authz.tokens import AccessTokens, JwtSigner, TokenInvalid, check_times
from gateway.clock import FrozenClock
from gateway.errors import OAuthError

ISSUER = "https://gw.example"
FAR = time.time() + 10 * 365 * 86400  # ten years from the wall clock's now


@pytest.mark.parametrize("start", [FAR, 1_000_000_000.0], ids=["future", "2001"])
def test_access_token_lifetime_follows_the_injected_clock(start: float) -> None:
    clock = FrozenClock(start)
    ring = bootstrap("token", "ES256", clock.now())
    tokens = AccessTokens(JwtSigner(lambda: ring, clock.now), ISSUER, clock.now)
    token, _ = tokens.issue(client_id="gate-1", kind="gate", sub="gate-1",
                            scopes=("codes:verify",), ttl_s=60)
    assert tokens.verify(token).client_id == "gate-1"
    clock.advance(59)
    assert tokens.verify(token).client_id == "gate-1"
    clock.advance(1)
    with pytest.raises(TokenInvalid) as caught:
        tokens.verify(token)
    assert caught.value.reason == "expired"


def test_time_claims_rules() -> None:
    check_times({"exp": 100, "nbf": 90, "iat": 90}, 95)
    for claims, now in (({"exp": 100}, 100), ({"exp": 100}, 200)):
        with pytest.raises(jwt.ExpiredSignatureError):
            check_times(claims, now)
    check_times({"exp": 100}, 104, leeway_s=5)
    for claims in ({"nbf": 120}, {"iat": 120}):
        with pytest.raises(jwt.ImmatureSignatureError):
            check_times(claims, 100)
    check_times({"iat": 120}, 100, iat=False)
    with pytest.raises(jwt.DecodeError):
        check_times({"exp": "soon"}, 100)


async def test_client_assertion_lifetime_follows_the_injected_clock() -> None:
    clock = FrozenClock(FAR)
    pk = ec.generate_private_key(ec.SECP256R1())
    kid = derive_kid(pk)
    clients = MemoryClientStore()
    await clients.put(Client(client_id="rp-1", kind="rp", display_name="RP",
                             auth_method="private_key_jwt",
                             jwks=(public_jwk(pk, kid, "ES256"),),
                             redirect_uris=("https://rp.example/cb",)))
    auth = ClientAuthenticator(clients, MemorySingleUse(clock), ISSUER, clock.now)

    def assertion(jti: str, lifetime_s: int = 60) -> dict[str, str]:
        now = int(clock.now())
        body: dict[str, Any] = {"iss": "rp-1", "sub": "rp-1", "aud": ISSUER, "jti": jti,
                                "iat": now, "exp": now + lifetime_s}
        signed = jwt.encode(body, pk, algorithm="ES256", headers={"kid": kid})
        return {"client_assertion_type": JWT_BEARER, "client_assertion": signed}

    assert (await auth.authenticate(None, assertion("a"))).client_id == "rp-1"
    late = assertion("b")
    clock.advance(66)  # past exp + the 5 s leeway
    with pytest.raises(OAuthError):
        await auth.authenticate(None, late)
