"""base64url without padding (RFC 4648 §5; RFC 7515 §2 "Base64url Encoding"): the one home for
it outside the codec (which a gate vendor may lift out whole, so it keeps its own)."""

from __future__ import annotations

import base64

__all__ = ["b64u", "unb64u"]


def b64u(data: bytes) -> str:
    """``data`` in base64url, padding stripped."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64u(text: str) -> bytes:
    """The bytes of unpadded (or padded) base64url ``text``; ``binascii.Error`` (a
    ``ValueError``) when it is not base64url."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
