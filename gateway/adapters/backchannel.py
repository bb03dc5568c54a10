"""OIDC Back-Channel Logout 1.0 §2.5 delivery: POST `logout_token` (form-encoded) to the RP's
`backchannel_logout_uri` with a short timeout and no redirects; the RP answers 200 (or 204).
Nothing is retried: a failure is logged (`logout.backchannel_failed`, status or error class,
never the token) and the logout stands."""

from __future__ import annotations

import aiohttp
import structlog

log = structlog.get_logger("gateway.logout")


class BackchannelNotifier:
    def __init__(self, session: aiohttp.ClientSession, timeout_s: float = 2.0) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def __call__(self, uri: str, logout_token: str) -> None:
        try:
            async with self._session.post(uri, data={"logout_token": logout_token},
                                          timeout=self._timeout, allow_redirects=False,
                                          headers={"Cache-Control": "no-store"}) as resp:
                await resp.read()
                if resp.status not in (200, 204):
                    log.warning("logout.backchannel_failed", status=resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("logout.backchannel_failed", error=type(exc).__name__)
