"""RFC 8628 §6.1 user codes and the device authorization record, pure (Hypothesis)."""

from __future__ import annotations

import math
import string

from hypothesis import given
from hypothesis import strategies as st

from gateway.authz import device as dg
from gateway.authz.device import DeviceAuthorization

codes = st.text(alphabet=dg.USER_CODE_ALPHABET, min_size=8, max_size=8)


def test_alphabet_is_unambiguous_and_entropy_is_enough() -> None:
    assert len(set(dg.USER_CODE_ALPHABET)) == 20
    assert not set(dg.USER_CODE_ALPHABET) & set("AEIOUY0123456789")   # no words, no 0/O 1/I
    assert math.log2(20 ** dg.USER_CODE_LEN) > 34


def test_new_codes_use_the_alphabet_and_differ() -> None:
    drawn = {dg.new_user_code() for _ in range(500)}
    assert len(drawn) == 500
    assert all(len(c) == 8 and set(c) <= set(dg.USER_CODE_ALPHABET) for c in drawn)


@given(codes, st.sampled_from(["upper", "lower", "spaced"]))
def test_formatted_or_typed_loosely_the_code_is_the_same(code: str, style: str) -> None:
    shown = dg.format_user_code(code)
    assert shown[4] == "-" and shown.replace("-", "") == code
    typed = {"upper": shown, "lower": shown.lower(), "spaced": f" {code[:4]} {code[4:]} "}[style]
    assert dg.normalise_user_code(typed) == code


@given(st.text(max_size=40))
def test_anything_else_is_not_a_user_code(text: str) -> None:
    got = dg.normalise_user_code(text)
    if got is not None:
        assert len(got) == 8 and set(got) <= set(dg.USER_CODE_ALPHABET)
        assert len(text) <= 32


@given(codes, st.integers(0, 7), st.sampled_from(sorted(set(string.ascii_uppercase
                                                            + string.digits)
                                                        - set(dg.USER_CODE_ALPHABET))))
def test_a_foreign_character_anywhere_is_refused(code: str, i: int, ch: str) -> None:
    assert dg.normalise_user_code(code[:i] + ch + code[i + 1:]) is None


def test_record_round_trips_and_reads_its_status() -> None:
    a = DeviceAuthorization(id="A" * 24, client_id="k", scopes=("openid",), number=7,
                            family_id="F" * 24, created_at=10.0, expires_at=610.0)
    got = DeviceAuthorization.from_fields({**a.to_fields(), "status": dg.TAPPED,
                                           "person_id": "p", "via": "card"})
    assert got.status == dg.TAPPED and got.person_id == "p" and got.interval == 5
    assert got.public_status(609.9) == dg.TAPPED and got.public_status(610.0) == "expired"
    redeemed = DeviceAuthorization.from_fields({**a.to_fields(), "status": dg.REDEEMED})
    assert redeemed.public_status(10_000.0) == dg.APPROVED
    assert DeviceAuthorization.from_fields(a.to_fields()) == a
