"""Who spends which allowance (docs/rate-limits.md): the per-caller rate-limit policy, one
limiter hit per authenticated request, beside the other policies (scenes, consents).

| token kind | subject (Redis key `rl:{…}`) | limit kind |
|---|---|---|
| gate       | `gate:<client_id>`                     | `gate` |
| rp, app, … | `client:<client_id>`                   | `rp` (or the kind's own, if set) |
| resident   | `res:<HMAC of the pairwise sub>`       | `resident` |
| resident, scope `codes:issue` | `issue:<HMAC of the pairwise sub>` | `app_issue` |
| (before auth) login page | `ip:<address>`                | `login_ip` |
| (before auth) token, introspection, revocation | `ip:oauth_ip:<address>` | `oauth_ip` |
| resident entering a device grant's user code | `ucode:<HMAC of the pairwise sub>` | `user_code` |

The resident subject is a keyed hash under `DataKeys.ratelimit_subject_key` (its own HKDF
label): the pairwise subject never appears in Redis.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Final

from gateway.authz.tokens import AccessTokenClaims
from gateway.ratelimit import Limit

__all__ = ["ISSUE_SCOPE", "caller_subject", "ip_subject", "user_code_subject"]

ISSUE_SCOPE: Final = "codes:issue"


def caller_subject(claims: AccessTokenClaims, scope: str | None, hkey: bytes,
                   limits: Mapping[str, Limit]) -> tuple[str, str]:
    """(limit kind, subject) for one authenticated call; see the module's table."""
    if claims.kind == "gate":
        return "gate", f"gate:{claims.client_id}"
    if claims.kind == "resident":
        h = hmac.new(hkey, claims.sub.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
        if scope == ISSUE_SCOPE:
            return "app_issue", f"issue:{h}"
        return "resident", f"res:{h}"
    kind = claims.kind if claims.kind in limits else "rp"
    return kind, f"client:{claims.client_id}"


def ip_subject(kind: str, address: str) -> str:
    """`ip:<address>` under `login_ip` (login pages), `ip:<kind>:<address>` under another
    kind (`oauth_ip`: token, introspection, revocation): each kind its own allowance."""
    return f"ip:{address}" if kind == "login_ip" else f"ip:{kind}:{address}"


def user_code_subject(claims: AccessTokenClaims, hkey: bytes) -> str:
    """RFC 8628 §5.1: user-code entries per resident, beside the resident's general limit
    (the app's back end calls from one address for all its residents: per IP says nothing)."""
    h = hmac.new(hkey, claims.sub.encode("utf-8"), hashlib.sha256).hexdigest()[:32]
    return f"ucode:{h}"
