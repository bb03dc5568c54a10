"""ECDSA P-256 signatures (JWS ES256, RFC 7518 §3.4) in their low-S normal form.

An ECDSA signature (r, s) has a twin (r, n - s) that verifies just as well, so a token's
bytes are not unique to it: anything keyed by the token string (a cache, a deny-list) can be
walked around with the twin. We sign only low-S signatures (s ≤ n/2, as Bitcoin's BIP 62 and
libsecp256k1 do) and refuse high-S ones on our own tokens. Signatures made by others
(clients' `private_key_jwt` assertions, upstream assertions) are not required to be low-S —
common signers (WebCrypto, OpenSSL) do not normalise — and everything that remembers them is
keyed by their `jti`, never by their bytes.
"""

from __future__ import annotations

from gateway.base64url import b64u, unb64u

#: The order of the P-256 group (SEC 2 §2.4.2).
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_HALF_N = P256_N // 2


def is_low_s(compact_jws: str) -> bool:
    """True when the ES256 compact JWS's signature is 64 bytes with s ≤ n/2."""
    try:
        sig = unb64u(compact_jws.rsplit(".", 1)[1])
    except (IndexError, ValueError):
        return False
    return len(sig) == 64 and int.from_bytes(sig[32:], "big") <= _HALF_N


def to_low_s(compact_jws: str) -> str:
    """The same ES256 compact JWS with its signature in low-S form (s → n - s if high)."""
    head, sig_b64 = compact_jws.rsplit(".", 1)
    sig = unb64u(sig_b64)
    s = int.from_bytes(sig[32:], "big")
    if s <= _HALF_N:
        return compact_jws
    return f"{head}.{b64u(sig[:32] + (P256_N - s).to_bytes(32, 'big'))}"
