"""Sandbox implementations of the upstream platforms: real aiohttp apps (docs/upstreams.md)."""

from .faults import FAULTS_KEY, Faults
from .keys import SandboxKey, load_or_create_ec_key, load_or_create_secret
from .platforms import (
    CERTLIB_SANDBOX,
    ESSC_ISSUER_PREFIX,
    ESSC_SANDBOX,
    YKB_ISSUER,
    YKB_SANDBOX,
    CertLibSandbox,
    EsscSandbox,
    PsamSandbox,
    UnknownResident,
    YkbSandbox,
    build_sandbox_upstreams,
    make_certlib_app,
    make_essc_app,
    make_ykb_app,
)

__all__ = [
    "CERTLIB_SANDBOX",
    "ESSC_ISSUER_PREFIX",
    "ESSC_SANDBOX",
    "FAULTS_KEY",
    "YKB_ISSUER",
    "YKB_SANDBOX",
    "CertLibSandbox",
    "EsscSandbox",
    "Faults",
    "PsamSandbox",
    "SandboxKey",
    "UnknownResident",
    "YkbSandbox",
    "build_sandbox_upstreams",
    "load_or_create_ec_key",
    "load_or_create_secret",
    "make_certlib_app",
    "make_essc_app",
    "make_ykb_app",
]
