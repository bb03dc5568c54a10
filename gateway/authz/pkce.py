"""PKCE (RFC 7636) with the S256 method only: `plain` is refused (RFC 9700 §2.1.1).

The verifier is 43-128 characters of the unreserved set (RFC 7636 §4.1); the challenge is
BASE64URL(SHA-256(ASCII(verifier))) without padding (§4.2), i.e. exactly 43 characters.
The comparison is made on the digests' text in constant time (hmac.compare_digest).
"""

from __future__ import annotations

import hashlib
import hmac
import re

from gateway.base64url import b64u

S256 = "S256"
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")


def is_valid_verifier(verifier: str) -> bool:
    """RFC 7636 §4.1: 43-128 characters from ALPHA / DIGIT / "-" / "." / "_" / "~"."""
    return _VERIFIER.fullmatch(verifier) is not None


def is_valid_challenge(challenge: str) -> bool:
    """An S256 challenge is the unpadded base64url text of 32 bytes: 43 characters."""
    return _CHALLENGE.fullmatch(challenge) is not None


def s256(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return b64u(digest)


def verify_s256(verifier: str | None, challenge: str) -> bool:
    """RFC 7636 §4.6: the verifier must be well formed and hash to the stored challenge."""
    if verifier is None or not is_valid_verifier(verifier):
        return False
    return hmac.compare_digest(s256(verifier).encode("ascii"), challenge.encode("ascii"))
