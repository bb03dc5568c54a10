"""The gateway's error tree.

Every error knows its stable wire `code` and its HTTP `status`; one middleware renders it,
as RFC 9457 problem+json on the API and as RFC 6749 §5.2 error JSON on OAuth endpoints.
`detail` is public text and must never hold a secret or a personal datum; `debug` is for the
log only (and is itself scrubbed of secrets by whoever raises).
"""

from __future__ import annotations

from typing import ClassVar


class GatewayError(Exception):
    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str | None = None, *, debug: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.debug = debug
        self.headers = headers or {}


class InvalidRequest(GatewayError):
    code, status, title = "invalid_request", 400, "The request is not valid"


class Unauthorized(GatewayError):
    code, status, title = "unauthorized", 401, "Authentication is required"


class Forbidden(GatewayError):
    code, status, title = "forbidden", 403, "The caller may not do this"


class NotFound(GatewayError):
    code, status, title = "not_found", 404, "Not found"


class MethodNotAllowed(GatewayError):
    # The contract's stable codes have none for 405/406: they are bad requests of a kind.
    code, status, title = "invalid_request", 405, "Method not allowed"


class Conflict(GatewayError):
    code, status, title = "conflict", 409, "Conflict with the current state"


class IdentityMismatch(GatewayError):
    code, status, title = "identity_mismatch", 409, "The credential belongs to another person"


class PayloadTooLarge(GatewayError):
    code, status, title = "payload_too_large", 413, "The request body is too large"


class UnsupportedMediaType(GatewayError):
    code, status, title = "unsupported_media_type", 415, "Unsupported content type"


class NotAcceptable(GatewayError):
    code, status, title = "invalid_request", 406, "No acceptable representation"


class RateLimited(GatewayError):
    code, status, title = "rate_limited", 429, "Too many requests"

    def __init__(self, retry_after_s: int, detail: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        h = {"Retry-After": str(max(1, retry_after_s))}
        h.update(headers or {})
        super().__init__(detail, headers=h)
        self.retry_after_s = retry_after_s


class Unavailable(GatewayError):
    code, status, title = "unavailable", 503, "Temporarily unavailable"


class UpstreamUnavailable(Unavailable):
    """An upstream platform (渝快办, e-SSC platform, certificate library, …) did not answer
    in time, answered 5xx or garbage, or its circuit is open."""


class OAuthError(GatewayError):
    """RFC 6749 §5.2 / RFC 7009 / RFC 7662 errors: rendered as {"error", "error_description"}."""

    code, status, title = "invalid_request", 400, "invalid_request"

    def __init__(self, error: str, description: str | None = None, status: int = 400,
                 *, debug: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(description or error, debug=debug, headers=headers)
        self.error = error
        self.description = description
        self.http_status = status
