"""Base45 (RFC 9285), strict.

Encoding (RFC 9285 §4): bytes are taken two at a time, ``n = a*256 + b`` is written as three
characters ``c + d*45 + e*45*45`` (least significant first); a trailing single byte is written as
two characters. The alphabet (RFC 9285 §4.2) is exactly the QR-code alphanumeric set, so a
Base45 string is encoded by a QR symbol in alphanumeric mode (5.5 bits per character).

Decoding is strict (RFC 9285 §4.3, §6): any character outside the alphabet (including lower
case), a length of ``3k + 1``, a triplet above 65535 or a trailing pair above 255 is an error.
"""

from __future__ import annotations

from typing import Final, NoReturn

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


def _triplet_table() -> dict[str, bytes]:
    """Every valid triplet → its two bytes (65 536 entries, built once). Decoding is then one
    dictionary lookup per triplet (the gate path decodes every scanned code); a character
    outside the alphabet or a triplet above 65535 is simply not a key."""
    pairs = [bytes((n >> 8, n & 0xFF)) for n in range(0x10000)]
    table: dict[str, bytes] = {}
    for n in range(0x10000):
        e, rest = divmod(n, 45 * 45)
        d, c = divmod(rest, 45)
        table[ALPHABET[c] + ALPHABET[d] + ALPHABET[e]] = pairs[n]
    return table


_TRIPLETS: Final = _triplet_table()
_SLICES: dict[int, list[slice]] = {}


def b45decode(text: str) -> bytes:
    """Decode strict Base45 (RFC 9285 §4.3); raise :class:`Base45Error` on any deviation."""
    length = len(text)
    if length % 3 == 1:
        raise Base45Error("invalid Base45 length")
    n_full = length - length % 3
    slices = _SLICES.get(n_full)
    if slices is None:
        slices = [slice(i, i + 3) for i in range(0, n_full, 3)]
        if len(_SLICES) < 64:  # a few code lengths in practice
            _SLICES[n_full] = slices
    try:
        body = b"".join(map(_TRIPLETS.__getitem__, map(text.__getitem__, slices)))
    except KeyError:
        _raise_for(text[:n_full])
    if n_full == length:
        return body
    try:
        c, d = _VALUE[text[-2]], _VALUE[text[-1]]
    except KeyError:
        raise Base45Error("invalid Base45 character") from None
    n = c + d * 45
    if n > 0xFF:
        raise Base45Error("Base45 pair out of range")
    return body + bytes((n,))


def _raise_for(text: str) -> NoReturn:
    """Name the first fault of the triplets (a character outside the alphabet, else a value
    above 65535) without echoing the input."""
    if any(ch not in _VALUE for ch in text):
        raise Base45Error("invalid Base45 character") from None
    raise Base45Error("Base45 triplet out of range") from None
