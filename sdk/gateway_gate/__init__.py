"""The gate SDK of the 渝快码 ⇄ 电子社保卡 gateway: verify codes and card taps offline from the
signed trust list, card deny-list and device deny-list, journal every scan, upload the
journal when back online.

Depends only on the code format package (``gateway.codec``, shipped with this distribution)
and its libraries (cryptography, PyNaCl, msgpack); the HTTP client is the standard library's.
Read docs/offline.md for the gate's life from provisioning to upload.
"""

from __future__ import annotations

from .client import GatewayClient
from .devices import DeviceDenyList, parse_device_deny_list
from .documents import DenyList, ScenePolicy, TrustList, parse_deny_list, parse_trust_list
from .errors import GateError, Offline
from .gate import Gate, ScanResult, SyncReport, UploadReport
from .journal import Journal
from .replay import ReplayCache

__version__ = "0.1.0"

__all__ = [
    "DenyList",
    "DeviceDenyList",
    "Gate",
    "GateError",
    "GatewayClient",
    "Journal",
    "Offline",
    "ReplayCache",
    "ScanResult",
    "ScenePolicy",
    "SyncReport",
    "TrustList",
    "UploadReport",
    "parse_deny_list",
    "parse_device_deny_list",
    "parse_trust_list",
]
