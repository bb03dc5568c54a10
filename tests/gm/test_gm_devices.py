"""Device-bound codes under the 国密 suite: an SM2 device key (device algorithm 3) enrolled at a
gateway whose code key is SM2 (certificate algorithm 3), the phone's YK2: codes verified online
and offline from the trust list alone."""

from __future__ import annotations

import base64
import time

from gateway.codec import VerificationKey, b45decode, normalise_device_key, verify_code
from gateway.codec.sm2 import Sm2PrivateKey, compress_point, decompress_point
from loadtests.phone import Phone
from tests.codes.conftest import METRO_GATE, demo_person, resident_token, verify
from tests.web.conftest import GatewayFactory


def test_point_compression_round_trip_and_refusals() -> None:
    for _ in range(20):
        point = Sm2PrivateKey.generate().public_key().point
        c = compress_point(point)
        assert len(c) == 33 and decompress_point(c) == point
        assert normalise_device_key("SM2", point) == normalise_device_key("SM2", c) == c
    bad = bytearray(compress_point(Sm2PrivateKey.generate().public_key().point))
    for _ in range(1, 40):  # some x are not on the curve: refused, not guessed
        bad[-1] = (bad[-1] + 1) % 256
        try:
            decompress_point(bytes(bad))
        except ValueError:
            break
    else:
        raise AssertionError("no x off the curve found")


async def test_sm2_phone_at_a_gm_gateway(make_gateway: GatewayFactory) -> None:
    g = await make_gateway(crypto_suite="gm")
    pid = await demo_person(g)
    phone = Phone.new("SM2")
    answer = await phone.enrol(g.client, resident_token(g, pid))
    cert = base64.urlsafe_b64decode(str(answer["certificate"]) + "==")
    assert (cert[1], cert[6]) == (3, 3)  # certificate signed with SM2, device key SM2
    code = phone.make_code()
    assert b45decode(code[4:])[6] == 3
    status, ans = await verify(g, await g.client_token(METRO_GATE), code, "metro")
    assert (status, ans["decision"], ans["reason"]) == (200, "allow", "ok"), ans
    body = await (await g.client.get("/v1/trust-list")).json()
    keys = {(k["iss"], k["kid"]): VerificationKey.from_jwk(k)
            for i in body["trust_list"]["issuers"] for k in i["keys"]}
    claims = verify_code(phone.make_code(), lambda i, k: keys.get((i, k)), time.time())
    assert claims.face == "ykm"
