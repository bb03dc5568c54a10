"""Base45 (RFC 9285), strict.

Encoding (RFC 9285 §4): bytes are taken two at a time, ``n = a*256 + b`` is written as three
characters ``c + d*45 + e*45*45`` (least significant first); a trailing single byte is written as
two characters. The alphabet (RFC 9285 §4.2) is exactly the QR-code alphanumeric set, so a
Base45 string is encoded by a QR symbol in alphanumeric mode (5.5 bits per character).

Decoding is strict (RFC 9285 §4.3, §6): any character outside the alphabet (including lower
case), a length of ``3k + 1``, a triplet above 65535 or a trailing pair above 255 is an error.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ALPHABET", "Base45Error", "b45decode", "b45encode"]

ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_VALUE: Final[dict[str, int]] = {c: i for i, c in enumerate(ALPHABET)}


class Base45Error(ValueError):
    """The input is not strict RFC 9285 Base45. The message never echoes the input."""


def b45encode(data: bytes) -> str:
    """Encode ``data`` as Base45 (RFC 9285 §4)."""
    out: list[str] = []
    append = out.append
    n_full = len(data) - len(data) % 2
    for i in range(0, n_full, 2):
        n = (data[i] << 8) | data[i + 1]
        e, rest = divmod(n, 45 * 45)
        d, c = divmod(rest, 45)
        append(ALPHABET[c])
        append(ALPHABET[d])
        append(ALPHABET[e])
    if n_full != len(data):
        d, c = divmod(data[-1], 45)
        append(ALPHABET[c])
        append(ALPHABET[d])
    return "".join(out)


def b45decode(text: str) -> bytes:
    """Decode strict Base45 (RFC 9285 §4.3); raise :class:`Base45Error` on any deviation."""
    length = len(text)
    if length % 3 == 1:
        raise Base45Error("invalid Base45 length")
    value = _VALUE
    try:
        vals = [value[ch] for ch in text]
    except KeyError:
        raise Base45Error("invalid Base45 character") from None
    out = bytearray()
    n_full = length - length % 3
    for i in range(0, n_full, 3):
        n = vals[i] + vals[i + 1] * 45 + vals[i + 2] * 2025
        if n > 0xFFFF:
            raise Base45Error("Base45 triplet out of range")
        out.append(n >> 8)
        out.append(n & 0xFF)
    if n_full != length:
        n = vals[-2] + vals[-1] * 45
        if n > 0xFF:
            raise Base45Error("Base45 pair out of range")
        out.append(n)
    return bytes(out)
