"""The codec's single error type.

``reason`` is one of the stable reason codes of the contract (CONTRACT.md "Codes"):
``malformed``, ``unknown_issuer``, ``bad_signature``, ``expired``, ``not_yet_valid``. The
message is the reason only: it never echoes the code string, a key or a holder handle.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = ["REASONS", "CodeError", "Reason"]

Reason = Literal["malformed", "unknown_issuer", "bad_signature", "expired", "not_yet_valid"]
REASONS: Final[frozenset[str]] = frozenset(get_args(Reason))


class CodeError(Exception):
    """A code could not be decoded, encoded or verified; ``reason`` says why."""

    reason: Reason

    def __init__(self, reason: Reason) -> None:
        if reason not in REASONS:
            raise ValueError("unknown reason")
        super().__init__(reason)
        self.reason = reason
