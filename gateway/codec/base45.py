"""Base45 (RFC 9285), strict.

Encoding (RFC 9285 §4): bytes are taken two at a time, ``n = a*256 + b`` is written as three
characters ``c + d*45 + e*45*45`` (least significant first); a trailing single byte is written as
two characters. The alphabet (RFC 9285 §4.2) is exactly the QR-code alphanumeric set, so a
Base45 string is encoded by a QR symbol in alphanumeric mode (5.5 bits per character).

Decoding is strict (RFC 9285 §4.3, §6): any character outside the alphabet (including lower
case), a length of ``3k + 1``, a triplet above 65535 or a trailing pair above 255 is an error.
"""

from __future__ import annotations

import struct
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


#: character code -> Base45 value; 0xFF for every byte outside the alphabet
_VALUES: Final = bytes(_VALUE.get(chr(b), 0xFF) for b in range(256))
_STRUCT: dict[int, struct.Struct] = {}


def b45decode(text: str) -> bytes:
    """Decode strict Base45 (RFC 9285 §4.3); raise :class:`Base45Error` on any deviation.

    The gate path decodes every scanned code, so the work is done in C where it can be: one
    ``translate`` maps every character to its value (0xFF outside the alphabet), the triplets
    are summed in one comprehension, and ``struct`` packs them as big-endian 16-bit values,
    refusing any above 65535. (An earlier 65 536-entry triplet dictionary was as fast in a
    loop but missed the CPU cache under load: 15 µs per code alone, 32 µs in a busy worker.)"""
    length = len(text)
    if length % 3 == 1:
        raise Base45Error("invalid Base45 length")
    try:
        values = text.encode("ascii").translate(_VALUES)
    except UnicodeEncodeError:
        raise Base45Error("invalid Base45 character") from None
    if b"\xff" in values:
        raise Base45Error("invalid Base45 character")
    n_full = length - length % 3
    triplets = iter(values[:n_full] if n_full != length else values)  # zip(it, it, it): triplets
    words = [c + 45 * d + 2025 * e
             for c, d, e in zip(triplets, triplets, triplets, strict=False)]
    packer = _STRUCT.get(len(words))
    if packer is None:
        packer = struct.Struct(f">{len(words)}H")
        if len(_STRUCT) < 64:  # a few code lengths in practice
            _STRUCT[len(words)] = packer
    try:
        body = packer.pack(*words)
    except struct.error:
        raise Base45Error("Base45 triplet out of range") from None
    if n_full == length:
        return body
    n = values[-2] + 45 * values[-1]
    if n > 0xFF:
        raise Base45Error("Base45 pair out of range")
    return body + bytes((n,))
