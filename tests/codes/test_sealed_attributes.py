"""Attributes sealed in a 渝快码 code's flags byte: the gate path of fare scenes reads no
identity record (issue 7), and the sealing is exactly AES-CTR (docs/code-format.md)."""

from __future__ import annotations

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from gateway.authz.datakeys import HolderCipher
from gateway.codec import decode
from gateway.services.codes import (
    CONCESSIONS,
    SEALABLE,
    open_attributes,
    seal_attributes,
)
from tests.web.conftest import Gateway

NAMES = tuple(sorted(SEALABLE))


@given(concession=st.sampled_from(CONCESSIONS), adult=st.booleans())
def test_seal_open_round_trip(concession: str | None, adult: bool) -> None:
    flags = seal_attributes({"concession": concession, "adult": adult})
    assert open_attributes(flags, NAMES) == {"concession": concession, "adult": adult}
    assert open_attributes(flags, ("concession",)) == {"concession": concession}
    assert open_attributes(flags, ("name_masked",)) is None  # not sealable: ask identity


def test_unknown_concession_is_not_sealed() -> None:
    assert seal_attributes({"concession": "mayor", "adult": True}) == 0
    assert open_attributes(0, NAMES) is None


@given(key=st.binary(min_size=32, max_size=32), nonce=st.binary(min_size=12, max_size=12),
       pid=st.binary(min_size=16, max_size=16), flags=st.integers(0, 255))
def test_keystream_is_aes_ctr(key: bytes, nonce: bytes, pid: bytes, flags: int) -> None:
    holder, sealed = HolderCipher(key).seal(pid.hex(), nonce, flags)
    ctr = Cipher(algorithms.AES(key), modes.CTR(nonce + b"\x00" * 4)).encryptor()
    expected = ctr.update(pid + bytes([flags])) + ctr.finalize()
    assert holder + bytes([sealed]) == expected
    assert HolderCipher(key).open(holder, nonce, sealed) == (pid.hex(), flags)


async def test_issued_code_seals_the_residents_attributes(gw: Gateway) -> None:
    from gateway.app import CORE

    token = await gw.resident_token("r-zhang-wei")
    r = await gw.client.post("/v1/codes", json={"face": "ykm"},
                             headers={"Authorization": f"Bearer {token}"})
    claims = decode((await r.json())["code"]).claims
    keys = gw.app[CORE].data_keys
    _, flags = HolderCipher(keys.code_holder_key).open(claims.holder, claims.nonce,
                                                       claims.flags)
    assert open_attributes(flags, NAMES) == {"concession": "senior", "adult": True}
