"""GATEWAY_CRYPTO_SUITE=gm end to end: SM2 codes verify online and offline from the trust list
alone; OpenSSL's command line verifies a code's signature with the trust list's key (and the
gateway verifies OpenSSL's signatures); an EdDSA → SM2 rotation keeps both verifying."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from gateway.app import CORE
from gateway.codec import VerificationKey, b45decode, decode, verify_code
from gateway.codec.sm2 import Sm2PrivateKey, Sm2PublicKey
from tests.codes.conftest import (
    METRO_GATE,
    Gateway,
    demo_person,
    issue,
    resident_token,
    verify,
)
from tests.web.conftest import GatewayFactory

OPENSSL = shutil.which("openssl")
if OPENSSL is None:  # script/test installs it; a missing tool is a failure, not a skip
    raise RuntimeError("these tests need the openssl command (apt-get install openssl)")
DISTID = "distid:1234567812345678"


def _openssl(*args: str) -> subprocess.CompletedProcess[bytes]:
    assert OPENSSL is not None
    return subprocess.run([OPENSSL, *args], capture_output=True, timeout=30, check=False)


def _b64u(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _jwk_pem(jwk: dict[str, Any], tmp: Path) -> Path:
    assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("EC", "SM2", "SM2")
    pub = Sm2PublicKey(b"\x04" + _b64u(jwk["x"]) + _b64u(jwk["y"]))
    path = tmp / f"{jwk['kid']}.pub.pem"
    path.write_bytes(pub.to_pem())
    return path


def _openssl_verifies(pub_pem: Path, data: bytes, raw_sig: bytes, tmp: Path,
                      distid: str = DISTID) -> bool:
    (tmp / "data").write_bytes(data)
    (tmp / "sig.der").write_bytes(encode_dss_signature(int.from_bytes(raw_sig[:32], "big"),
                                                       int.from_bytes(raw_sig[32:], "big")))
    r = _openssl("pkeyutl", "-verify", "-pubin", "-inkey", str(pub_pem), "-rawin", "-in",
                 str(tmp / "data"), "-sigfile", str(tmp / "sig.der"), "-digest", "sm3",
                 "-pkeyopt", distid)
    return r.returncode == 0 and b"Signature Verified Successfully" in r.stdout


async def _trust_list(g: Gateway) -> dict[str, Any]:
    from gateway.web.codes import CODES

    await g.app[CODES].refresh_essc_keys()
    body = await (await g.client.get("/v1/trust-list")).json()
    return dict(body)


def _offline_keys(doc: dict[str, Any]) -> dict[tuple[str, str], VerificationKey]:
    return {(k["iss"], k["kid"]): VerificationKey.from_jwk(k)
            for i in doc["issuers"] for k in i["keys"]}


async def test_gm_gateway_issues_sm2_codes_that_verify_online_offline_and_in_openssl(
        make_gateway: GatewayFactory, tmp_path: Path) -> None:
    g = await make_gateway(crypto_suite="gm")
    core = g.app[CORE]
    assert core.code_ring().current().alg == "SM2" and core.token_ring().current().alg == "SM2"
    code = (await (await issue(g, resident_token(g, await demo_person(g)))).json())["code"]
    decoded = decode(code)
    assert decoded.claims.alg == "SM2" and code.startswith("YK1:")
    assert b45decode(code[4:])[1] == 3  # the alg byte

    # offline: the trust list alone, its JWS checked with the pinned trust-list key (SM2)
    from gateway.codec.jws import JwsKey, verify_compact
    from gateway.codec.offline import TRUST_LIST_TYP
    from gateway.web.codes import CODES

    body = await _trust_list(g)
    header = jwt.get_unverified_header(body["jws"])
    assert header["alg"] == "SM2"
    anchor = JwsKey.from_jwk(g.app[CODES].trust.signing_key().to_jwk())  # as a gate pins it
    assert (anchor.to_jwk()["kty"], anchor.to_jwk()["crv"]) == ("EC", "SM2")
    _, payload = verify_compact(body["jws"], lambda kid: anchor if kid == anchor.kid else None,
                                TRUST_LIST_TYP)
    assert json.loads(payload) == body["trust_list"]
    keys = _offline_keys(body["trust_list"])
    assert verify_code(code, lambda i, k: keys.get((i, k)), time.time()).alg == "SM2"

    # OpenSSL verifies the code's signature with the trust list's key, and only with the distid
    ykm = next(i for i in body["trust_list"]["issuers"] if i["issuer"] == "ykm")
    jwk = next(k for k in ykm["keys"] if k["kid"] == decoded.claims.kid)
    pem = _jwk_pem(jwk, tmp_path)
    assert _openssl_verifies(pem, decoded.signed, decoded.signature, tmp_path)
    assert not _openssl_verifies(pem, decoded.signed, decoded.signature, tmp_path,
                                 "distid:1234567812345679")

    # online
    gate = await g.client_token(METRO_GATE)
    status, ans = await verify(g, gate, code, "metro")
    assert (status, ans["decision"], ans["reason"]) == (200, "allow", "ok"), ans

    # the access token is an SM2 JWS too
    assert jwt.get_unverified_header(gate)["alg"] == "SM2"


async def test_gm_sandbox_essc_region_signs_with_sm2(make_gateway: GatewayFactory) -> None:
    g = await make_gateway(crypto_suite="gm")
    doc = (await _trust_list(g))["trust_list"]
    by_issuer = {i["issuer"]: i["keys"] for i in doc["issuers"]}
    assert {k["crv"] for k in by_issuer["essc:CQ"]} == {"SM2"}
    assert {k["crv"] for k in by_issuer["essc:SC"]} == {"P-256"}  # both forms in one list
    token = resident_token(g, await demo_person(g, "r-zhang-wei"))
    body = await (await issue(g, token, {"face": "essc"})).json()
    assert decode(body["code"]).claims.alg == "SM2"
    keys = _offline_keys(doc)
    assert verify_code(body["code"], lambda i, k: keys.get((i, k)), time.time()).alg == "SM2"
    status, ans = await verify(g, await g.client_token(METRO_GATE), body["code"], "metro")
    assert (status, ans["decision"], ans["face"]) == (200, "allow", "essc"), ans


async def test_rotation_from_eddsa_to_sm2_keeps_both_verifying(
        make_gateway: GatewayFactory, tmp_path: Path) -> None:
    keys_dir = tmp_path / "shared-keys"
    intl = await make_gateway(keys_dir=keys_dir, use_redis=False)
    assert intl.app[CORE].code_ring().current().alg == "EdDSA"
    old_code = (await (await issue(intl, resident_token(intl, await demo_person(intl))))
                .json())["code"]
    assert decode(old_code).claims.alg == "EdDSA"

    gm = await make_gateway(keys_dir=keys_dir, use_redis=False, crypto_suite="gm")
    ring = gm.app[CORE].code_ring()
    assert ring.current().alg == "SM2"
    assert any(k.alg == "EdDSA" and k.state == "retired" for k in ring.keys)
    new_code = (await (await issue(gm, resident_token(gm, await demo_person(gm)))).json())["code"]
    assert decode(new_code).claims.alg == "SM2"

    # through the overlap both verify: offline from one trust list, and online
    doc = (await _trust_list(gm))["trust_list"]
    keys = _offline_keys(doc)
    ykm_algs = {k["alg"] for i in doc["issuers"] if i["issuer"] == "ykm" for k in i["keys"]}
    assert {"EdDSA", "SM2"} <= ykm_algs
    for code, alg in ((old_code, "EdDSA"), (new_code, "SM2")):
        assert verify_code(code, lambda i, k: keys.get((i, k)), time.time()).alg == alg
        status, ans = await verify(gm, await gm.client_token(METRO_GATE), code, "metro")
        assert (status, ans["decision"]) == (200, "allow"), (alg, ans)


def test_token_ring_rotation_from_es256_to_sm2_keeps_both_tokens_verifying() -> None:
    from gateway.authz.keyring import bootstrap, rotate
    from gateway.authz.tokens import JwtSigner

    now = [time.time()]
    ring = [bootstrap("token", "ES256", now[0])]
    signer = JwtSigner(lambda: ring[0], lambda: now[0])
    claims = {"iss": "https://gw", "iat": int(now[0]), "exp": int(now[0]) + 600}
    old = signer.sign(claims)
    ring[0] = rotate(rotate(ring[0], now[0], 600, "SM2"), now[0], 600, "SM2")
    new = signer.sign(claims)
    assert [jwt.get_unverified_header(t)["alg"] for t in (old, new)] == ["ES256", "SM2"]
    for t in (old, new):
        assert signer.verify(t, audience=None, issuer="https://gw")["iss"] == "https://gw"
    now[0] += 601  # the retired ES256 key has left the ring's verifying set
    from gateway.authz.tokens import TokenInvalid

    with pytest.raises(TokenInvalid):
        signer.verify(old, audience=None, issuer="https://gw")


def test_openssl_signatures_verify_here_and_ours_there(tmp_path: Path) -> None:
    """Both directions against an independent SM2 (OpenSSL's command line)."""
    key_pem = tmp_path / "k.pem"
    assert _openssl("genpkey", "-algorithm", "SM2", "-out", str(key_pem)).returncode == 0
    ours = Sm2PrivateKey.from_pem(key_pem.read_bytes())  # OpenSSL's PKCS#8 read here
    pub_pem = tmp_path / "pub.pem"
    pub_pem.write_bytes(ours.public_key().to_pem())
    msg = b"YK1:" + bytes(range(40))
    (tmp_path / "m").write_bytes(msg)
    for distid, ok in ((DISTID, True), ("distid:ALICE123@YAHOO.COM", False)):
        r = _openssl("pkeyutl", "-sign", "-inkey", str(key_pem), "-rawin", "-in",
                     str(tmp_path / "m"), "-digest", "sm3", "-pkeyopt", distid)
        assert r.returncode == 0, r.stderr
        rr, ss = decode_dss_signature(r.stdout)
        raw = rr.to_bytes(32, "big") + ss.to_bytes(32, "big")
        assert ours.public_key().verify(raw, msg) is ok
        assert ours.public_key().verify(raw, msg, distid.split(":", 1)[1].encode())
    assert _openssl_verifies(pub_pem, msg, ours.sign(msg), tmp_path)
    # a key written here is read by openssl
    (tmp_path / "mine.pem").write_bytes(ours.to_pem())
    r = _openssl("pkey", "-in", str(tmp_path / "mine.pem"), "-pubout")
    assert r.returncode == 0 and Sm2PublicKey.from_pem(r.stdout) == ours.public_key()


def test_openssl_dgst_sm3_agrees(tmp_path: Path) -> None:
    from gateway.codec.sm2 import sm3

    data = bytes(range(256)) * 5
    (tmp_path / "d").write_bytes(data)
    r = _openssl("dgst", "-sm3", "-r", str(tmp_path / "d"))
    assert r.returncode == 0 and r.stdout.split()[0].decode() == sm3(data).hex()


def test_trust_list_entry_with_unknown_curve_is_ignored_and_logged(
        capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.authz.keyring import bootstrap
    from gateway.services.trustlist import TrustList

    ring = bootstrap("code", "SM2", time.time())
    tl = TrustList(lambda: ring, lambda: ring, time.time)
    good = VerificationKey.of("essc:CQ", Sm2PrivateKey.generate().public_key(), kid="cq-1")
    odd = dict(good.to_jwk(), crv="secp256k1", kid="cq-k1")
    assert tl.set_essc_keys([good.to_jwk(), odd]) == 1
    assert tl.lookup("essc:CQ", "cq-1") is not None and tl.lookup("essc:CQ", "cq-k1") is None
    out = capsys.readouterr()
    line = next(x for x in (out.out + out.err).splitlines() if "trust_list.key_ignored" in x)
    assert "cq-k1" in line and "secp256k1" in line


def test_gate_sdk_ignores_an_unknown_curve_and_names_it(caplog: pytest.LogCaptureFixture) -> None:
    """The gate SDK (sdk/gateway_gate) keeps the keys it knows, skips the rest with a log line."""
    from gateway.codec import Ed25519Signer
    from gateway.codec.jws import JwsKey, canonical_json, sign_compact
    from gateway.codec.offline import TRUST_LIST_TYP
    from gateway_gate import parse_trust_list

    anchor = Ed25519Signer.from_seed(bytes(range(32)))
    sm2 = VerificationKey.of("essc:CQ", Sm2PrivateKey.generate().public_key(), kid="cq-sm2")
    odd = dict(sm2.to_jwk(), crv="brainpoolP256r1", kid="cq-bp")
    now = int(time.time())
    doc = {"version": now, "issued_at": now, "next_update": now + 3600,
           "expires_at": now + 86400, "code_max_skew_s": 5, "scenes": [],
           "issuers": [{"issuer": "essc:CQ", "face": "essc", "keys": [sm2.to_jwk(), odd]}]}
    raw = canonical_json({"trust_list": doc,
                          "jws": sign_compact(anchor, canonical_json(doc), TRUST_LIST_TYP)})
    with caplog.at_level("WARNING", logger="gateway_gate"):
        tl, _ = parse_trust_list(raw, JwsKey.of(anchor.public_key()))
    assert tl.lookup("essc:CQ", "cq-sm2") is not None and tl.lookup("essc:CQ", "cq-bp") is None
    line = next(m for m in (r.getMessage() for r in caplog.records)
                if "trust_list.key_ignored" in m)
    assert "cq-bp" in line and "brainpoolP256r1" in line
