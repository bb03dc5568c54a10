"""Under GATEWAY_CRYPTO_SUITE=gm relying parties keep ES256: discovery offers it for ID tokens,
an unmodified standard client (Authlib + pyjwt, which know no SM2) completes the login and
verifies its ID token from the JWKS, while access tokens and consent receipts are SM2 JWS."""

from __future__ import annotations

import jwt
import pytest
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client

from gateway.app import CORE, TOKEN_SIGNER
from gateway.authz.sm2jws import Sm2JwsAlgorithm
from tests.oidc.conftest import JKB, JKB_CB, OP
from tests.oidc.test_flow import _browser_login, _id_token_claims
from tests.web.conftest import GatewayFactory


@pytest.fixture
async def gm_op(make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch) -> OP:
    monkeypatch.setenv("GATEWAY_RATELIMIT_LOGIN_IP", "1000/1/1000")
    return OP(await make_gateway(crypto_suite="gm"))


async def test_discovery_jwks_and_id_tokens_keep_es256(gm_op: OP) -> None:
    conf = await (await gm_op.c.get("/.well-known/openid-configuration")).json()
    assert conf["id_token_signing_alg_values_supported"] == ["ES256"]
    jwks = await (await gm_op.c.get("/.well-known/jwks.json")).json()
    assert {(k["kty"], k["crv"]) for k in jwks["keys"]} >= {("EC", "SM2"), ("EC", "P-256")}
    assert len(jwt.PyJWKSet.from_dict(jwks).keys) >= 1  # a standard library skips SM2 keys

    secret = gm_op.gw.demo_secret(JKB)["client_secret"]
    token = await gm_op.resident("r-zhang-wei")
    assert jwt.get_unverified_header(token)["alg"] == "SM2"  # resident access token
    rp = AsyncOAuth2Client(client_id=JKB, client_secret=secret, scope="openid profile",
                           redirect_uri=JKB_CB, code_challenge_method="S256")
    verifier, nonce = generate_token(48), generate_token(16)
    url, state = rp.create_authorization_url(f"{gm_op.base}/oauth2/authorize",
                                             code_verifier=verifier, nonce=nonce)
    redirect_to = await _browser_login(gm_op, url, token)
    tok = await rp.fetch_token(f"{gm_op.base}/oauth2/token", authorization_response=redirect_to,
                               code_verifier=verifier, state=state)
    assert jwt.get_unverified_header(tok["id_token"])["alg"] == "ES256"
    claims = await _id_token_claims(gm_op.base, tok["id_token"], JKB)
    assert claims["nonce"] == nonce
    # the RP's access token is SM2, and the gateway accepts it
    assert jwt.get_unverified_header(tok["access_token"])["alg"] == "SM2"
    r = await rp.get(f"{gm_op.base}/oauth2/userinfo")
    assert r.status_code == 200 and r.json()["sub"] == claims["sub"]


async def test_signed_jws_of_the_gm_suite_verify_with_the_jwks_sm2_key(gm_op: OP) -> None:
    signer = gm_op.gw.app[TOKEN_SIGNER]
    receipt = signer.sign({"iss": gm_op.base, "jti": "x"}, typ="consent-receipt+jwt")
    header = jwt.get_unverified_header(receipt)
    assert header["alg"] == "SM2"
    jwks = await (await gm_op.c.get("/.well-known/jwks.json")).json()
    key = next(k for k in jwks["keys"] if k["kid"] == header["kid"])
    assert jwt.decode(receipt, Sm2JwsAlgorithm.from_jwk(key), algorithms=["SM2"],
                      options={"verify_aud": False})["jti"] == "x"
    assert gm_op.gw.app[CORE].id_token_ring is not None


async def test_consent_receipt_is_sm2_signed_under_gm(make_gateway: GatewayFactory) -> None:
    """A consent authorised at a gm gateway: its receipt (GET /v1/consents/{id}) is an SM2 JWS
    that verifies with the JWKS's SM2 key, and only untouched."""
    from tests.consents.conftest import POLICE_RP, Api, bearer
    from tests.consents.test_app_flow_and_refusals import _authorised

    api = Api(await make_gateway(crypto_suite="gm"))
    _, rp, cid = await _authorised(api)
    r = await api.c.get(f"/v1/consents/{cid}", headers=bearer(rp))
    receipt = (await r.json())["consent_receipt"]
    header = jwt.get_unverified_header(receipt)
    assert header["alg"] == "SM2"
    jwks = await (await api.c.get("/.well-known/jwks.json")).json()
    key = Sm2JwsAlgorithm.from_jwk(next(k for k in jwks["keys"] if k["kid"] == header["kid"]))
    claims = jwt.decode(receipt, key, algorithms=["SM2"])
    assert (claims["consent_id"], claims["recipient"]) == (cid, POLICE_RP)
    head, payload, sig = receipt.split(".")
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(f"{head}.{payload}.{sig[:-4]}AAAA", key, algorithms=["SM2"])
    assert api.service.verify_receipt(receipt, POLICE_RP)["consent_id"] == cid
