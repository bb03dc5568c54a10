"""Base45, RFC 9285."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.codec.base45 import ALPHABET, Base45Error, b45decode, b45encode


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"AB", "BB8"),  # RFC 9285 §4.3
        (b"Hello!!", "%69 VD92EX0"),
        (b"base-45", "UJCLQE7W581"),
        (b"ietf!", "QED8WEX0"),
        (b"", ""),
        (b"\xff\xff", "FGW"),  # 65535, the largest triplet
        (b"\xff", "U5"),  # 255, the largest pair
    ],
)
def test_rfc9285_vectors(raw: bytes, text: str) -> None:
    assert b45encode(raw) == text
    assert b45decode(text) == raw


@given(st.binary(max_size=300))
def test_round_trip(raw: bytes) -> None:
    text = b45encode(raw)
    assert set(text) <= set(ALPHABET)
    assert len(text) == len(raw) // 2 * 3 + len(raw) % 2 * 2
    assert b45decode(text) == raw


@pytest.mark.parametrize(
    "text",
    [
        "GGW",  # 65536 > 65535 (RFC 9285 §4.3)
        "GG",  # 736 > 255
        "A",  # length 3k+1
        "BB8B",
        "bb8",  # lower case is not in the alphabet
        "BB#",
        "BB8\n",
        "ＢB8",  # fullwidth
        "BB\x00",
    ],
)
def test_strict_rejects(text: str) -> None:
    with pytest.raises(Base45Error):
        b45decode(text)


@given(st.text(max_size=60))
def test_any_text_decodes_or_raises_base45_error(text: str) -> None:
    try:
        raw = b45decode(text)
    except Base45Error:
        return
    else:
        assert b45encode(raw) == text  # strict: one encoding per byte string
