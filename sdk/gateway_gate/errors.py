"""The SDK's one error type: a stable ``code`` for programs, a sentence for people."""

from __future__ import annotations

__all__ = ["GateError", "Offline"]


class GateError(Exception):
    """Something the gate cannot do safely; it fails closed (no allow) and says why.

    Codes: ``not_provisioned``, ``no_trust_list``, ``trust_list_expired``, ``no_deny_list``,
    ``deny_list_expired``, ``unknown_scene``, ``bad_signature``, ``untrusted_signer``,
    ``rollback``, ``document_invalid``, ``replay_cache_full``, ``unsupported_algorithm``,
    ``http_error``, ``offline``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Offline(GateError):
    """The gateway cannot be reached (connection refused, timeout, 5xx): try again later."""

    def __init__(self, message: str) -> None:
        super().__init__("offline", message)
