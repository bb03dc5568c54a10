"""Real HTTP clients for the upstream platforms (docs/upstreams.md)."""

from .assertions import ALLOWED_ALGS, AssertionVerifier, JwksCache
from .clients import (
    CertificateLibraryClient,
    EsscPlatformClient,
    YkbClient,
    certificate_payload,
)
from .http import CircuitBreaker, HttpUpstream, SchemaError, UpstreamPolicy, UpstreamResponse

__all__ = [
    "ALLOWED_ALGS",
    "AssertionVerifier",
    "CertificateLibraryClient",
    "CircuitBreaker",
    "EsscPlatformClient",
    "HttpUpstream",
    "JwksCache",
    "SchemaError",
    "UpstreamPolicy",
    "UpstreamResponse",
    "YkbClient",
    "certificate_payload",
]
