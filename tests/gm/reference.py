"""A plain SM2 (GB/T 32918.2) written from the standard, for tests only.

Affine arithmetic on Python integers, NOT constant time, the nonce ``k`` a parameter: it
reproduces the standard's published example exactly (its ``k`` is published) and makes the
committed SM2 test vectors reproducible. The gateway's own signer (gateway.codec.sm2, OpenSSL)
never takes ``k`` from outside. Nothing here is imported by gateway/.
"""

from __future__ import annotations

from gateway.codec.sm2 import DEFAULT_DISTID, GX, GY, A, N, P, sm3, z_a

Point = tuple[int, int] | None


def _add(p1: Point, p2: Point) -> Point:
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    (x1, y1), (x2, y2) = p1, p2
    if x1 == x2 and (y1 + y2) % P == 0:
        return None
    if p1 == p2:
        lam = (3 * x1 * x1 + A) * pow(2 * y1, -1, P) % P
    else:
        lam = (y2 - y1) * pow(x2 - x1, -1, P) % P
    x3 = (lam * lam - x1 - x2) % P
    return x3, (lam * (x1 - x3) - y1) % P


def mul(k: int, pt: Point = (GX, GY)) -> Point:
    out: Point = None
    while k:
        if k & 1:
            out = _add(out, pt)
        pt = _add(pt, pt)
        k >>= 1
    return out


def public_point(d: int) -> bytes:
    q = mul(d)
    assert q is not None
    return b"\x04" + q[0].to_bytes(32, "big") + q[1].to_bytes(32, "big")


def sign(d: int, message: bytes, k: int, distid: bytes = DEFAULT_DISTID) -> bytes:
    """GB/T 32918.2 §6.1 A1-A7 with the given nonce ``k``; raw ``r || s``."""
    e = int.from_bytes(sm3(z_a(public_point(d), distid) + message), "big")
    x1 = mul(k)
    assert x1 is not None
    r = (e + x1[0]) % N
    assert r != 0 and r + k != N
    s = pow(1 + d, -1, N) * (k - r * d) % N
    assert s != 0
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def verify(point: bytes, message: bytes, signature: bytes,
           distid: bytes = DEFAULT_DISTID) -> bool:
    """GB/T 32918.2 §7.1 B1-B7."""
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    if not (1 <= r < N and 1 <= s < N):
        return False
    e = int.from_bytes(sm3(z_a(point, distid) + message), "big")
    t = (r + s) % N
    if t == 0:
        return False
    q = (int.from_bytes(point[1:33], "big"), int.from_bytes(point[33:], "big"))
    x1 = _add(mul(s), mul(t, q))
    return x1 is not None and (e + x1[0]) % N == r
