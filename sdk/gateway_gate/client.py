"""The gate's HTTP client (standard library only: urllib), CONTRACT "Offline gates":
a gate token by ``client_credentials`` (``client_secret_basic``, RFC 6749 §2.3.1), then
GET /v1/trust-list, GET /v1/revocations/cards, GET /v1/revocations/devices and
POST /v1/gates/offline-scans.

A connection that fails, times out or answers 5xx is :class:`Offline` (try later); any other
refusal is :class:`GateError` with the problem's ``code``.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import GateError, Offline

__all__ = ["GatewayClient", "Response"]


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes


class GatewayClient:
    def __init__(self, base_url: str, client_id: str, client_secret: str, *,
                 timeout_s: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        if not base_url.startswith(("https://", "http://")):
            raise ValueError("the gateway URL must be http(s)")
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._secret = client_secret
        self._timeout = timeout_s
        self._clock = clock
        self._token: tuple[str, float] | None = None

    def _send(self, method: str, path: str, *, body: bytes | None = None,
              headers: Mapping[str, str] | None = None) -> Response:
        req = urllib.request.Request(self.base_url + path, data=body, method=method,  # noqa: S310 - http(s) only, checked above
                                     headers=dict(headers or {}))
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:  # noqa: S310
                return Response(resp.status, dict(resp.headers.items()), resp.read())
        except urllib.error.HTTPError as exc:
            data = exc.read()
            if exc.code >= 500:
                raise Offline(f"the gateway answered {exc.code}") from None
            return Response(exc.code, dict(exc.headers.items()), data)
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            raise Offline(f"the gateway cannot be reached ({type(exc).__name__})") from None

    def token(self) -> str:
        if self._token is not None and self._token[1] > self._clock() + 30:
            return self._token[0]
        basic = base64.b64encode(
            f"{urllib.parse.quote(self.client_id, safe='')}:"
            f"{urllib.parse.quote(self._secret, safe='')}".encode()).decode()
        r = self._send("POST", "/oauth2/token",
                       body=urllib.parse.urlencode({"grant_type": "client_credentials"}).encode(),
                       headers={"Authorization": f"Basic {basic}",
                                "Content-Type": "application/x-www-form-urlencoded"})
        if r.status != 200:
            raise GateError("http_error", f"the gateway refused the gate's credentials "
                                          f"({r.status} {_error_code(r.body)})")
        doc = json.loads(r.body)
        self._token = (str(doc["access_token"]), self._clock() + float(doc.get("expires_in", 60)))
        return self._token[0]

    def _authed(self, method: str, path: str, *, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> Response:
        h = {"Authorization": f"Bearer {self.token()}", **(headers or {})}
        r = self._send(method, path, body=body, headers=h)
        if r.status == 401:  # an expired or revoked token: once more with a fresh one
            self._token = None
            h["Authorization"] = f"Bearer {self.token()}"
            r = self._send(method, path, body=body, headers=h)
        return r

    def trust_list(self, etag: str | None = None) -> Response:
        headers = {"If-None-Match": etag} if etag else {}
        return _expect(self._send("GET", "/v1/trust-list", headers=headers), (200, 304))

    def deny_list(self, since: int | None = None, etag: str | None = None) -> Response:
        headers = {"If-None-Match": etag} if etag else {}
        path = "/v1/revocations/cards" + (f"?since={since}" if since is not None else "")
        return _expect(self._authed("GET", path, headers=headers), (200, 304))

    def device_list(self, since: int | None = None, etag: str | None = None) -> Response:
        """GET /v1/revocations/devices: the device deny-list (docs/devices.md)."""
        headers = {"If-None-Match": etag} if etag else {}
        path = "/v1/revocations/devices" + (f"?since={since}" if since is not None else "")
        return _expect(self._authed("GET", path, headers=headers), (200, 304))

    def upload(self, scans: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """POST /v1/gates/offline-scans; returns the per-scan results."""
        body = json.dumps({"scans": scans}, separators=(",", ":")).encode()
        r = _expect(self._authed("POST", "/v1/gates/offline-scans", body=body,
                                 headers={"Content-Type": "application/json"}), (200,))
        results = json.loads(r.body).get("results")
        if not isinstance(results, list):
            raise GateError("http_error", "the upload answer has no results")
        return results


def _error_code(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return "-"
    return str(doc.get("code") or doc.get("error") or "-") if isinstance(doc, dict) else "-"


def _expect(r: Response, statuses: tuple[int, ...]) -> Response:
    if r.status not in statuses:
        raise GateError("http_error", f"the gateway answered {r.status} ({_error_code(r.body)})")
    return r
