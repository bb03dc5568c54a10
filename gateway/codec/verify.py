"""Offline verification of a scanned code (docs/code-format.md §6).

Order (each step's failure is final): decode → ``malformed``; key lookup by (issuer, kid), key
valid at ``issued_at`` → ``unknown_issuer``; signature → ``bad_signature``;
``issued_at > now + skew`` → ``not_yet_valid``; ``now > issued_at + lifetime + skew`` →
``expired``. Single use (``replayed``) is the caller's job: it needs state.

A device-bound ``YK2:`` code is a chain (§10.4): the trust-list key must have been valid when it
signed the certificate (its not-before), the issuer's signature over the certificate and then
the device's signature over the code must verify (``bad_signature``), the certificate must be
valid at the code's timestamp and at ``now`` (``not_yet_valid`` / ``expired``), then the
code's own window as above.
"""

from __future__ import annotations

from collections.abc import Callable

from .claims import CodeClaims, DecodedCode
from .errors import CodeError
from .keys import VerificationKey
from .registry import decode

__all__ = ["DEFAULT_MAX_SKEW_S", "KeyLookup", "check_signature", "check_window", "verify_code"]

KeyLookup = Callable[[str, str], VerificationKey | None]
DEFAULT_MAX_SKEW_S = 5


def check_signature(decoded: DecodedCode, lookup_key: KeyLookup) -> CodeClaims:
    """The claims of a decoded code whose key is trusted and whose signature holds; raises
    :class:`CodeError` ``unknown_issuer`` or ``bad_signature``. The validity window is
    :func:`check_window`'s job (a caller that answers retries of an expired code needs the
    claims of a correctly signed one: docs/code-format.md §6)."""
    claims = decoded.claims
    device = decoded.device
    key = lookup_key(claims.issuer, claims.kid)
    if (
        key is None
        or key.issuer != claims.issuer
        or key.kid != claims.kid
        or not key.valid_at(claims.issued_at if device is None else device.signed_at)
    ):
        raise CodeError("unknown_issuer")
    if key.alg != claims.alg or not key.verify(decoded.signed, decoded.signature):
        raise CodeError("bad_signature")
    if device is not None and not device.verify():  # YK2: the device key over the code
        raise CodeError("bad_signature")
    return claims


def check_window(claims: CodeClaims, now: float, max_skew_s: int = DEFAULT_MAX_SKEW_S) -> None:
    """Raise :class:`CodeError` ``not_yet_valid`` / ``expired`` unless ``now`` (Unix seconds)
    is inside the code's validity window widened by ``max_skew_s`` (for ``YK2:``, inside its
    device certificate's window too, at the code's timestamp and at ``now``)."""
    window = claims.device
    if window is not None:
        nbf, naf = window.not_before - max_skew_s, window.not_after + max_skew_s
        if now < nbf or claims.issued_at < nbf:
            raise CodeError("not_yet_valid")
        if now > naf or claims.issued_at > naf:
            raise CodeError("expired")
    if claims.issued_at > now + max_skew_s:
        raise CodeError("not_yet_valid")
    if now > claims.issued_at + claims.lifetime_s + max_skew_s:
        raise CodeError("expired")


def verify_code(
    code: str,
    lookup_key: KeyLookup,
    now: float,
    max_skew_s: int = DEFAULT_MAX_SKEW_S,
) -> CodeClaims:
    """Verify ``code`` at time ``now`` (Unix seconds) and return its claims.

    ``lookup_key(issuer, kid)`` returns the trust-list key or ``None``. Raises
    :class:`CodeError` with the reason of the first failed check.
    """
    if max_skew_s < 0:
        raise ValueError("max_skew_s must be >= 0")
    claims = check_signature(decode(code), lookup_key)
    check_window(claims, now, max_skew_s)
    return claims
