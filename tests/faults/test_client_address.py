"""GATEWAY_TRUSTED_PROXIES (issue 12): behind a trusted proxy the client address is the
right-most X-Forwarded-For hop that is not itself a trusted proxy; from anyone else the
header is ignored (it is the client's own claim). The per-address connection cap exempts
trusted proxies."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from gateway.settings import Settings, SettingsError
from gateway.web.edge import ConnectionGuard
from gateway.web.http import TRUSTED_PROXIES, Proxies, client_address


def _request(peer: str, xff: list[str], proxies: Proxies) -> web.Request:
    app = web.Application()
    app[TRUSTED_PROXIES] = proxies
    headers = [("X-Forwarded-For", v) for v in xff]

    class _Transport:  # aiohttp's own request factory reads the peer from its transport
        def get_extra_info(self, name: str, default: object = None) -> object:
            return (peer, 40000) if name == "peername" else default

        def is_closing(self) -> bool:
            return False

    return make_mocked_request("GET", "/", headers=CIMultiDict(headers), app=app,
                               transport=_Transport())


def test_behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client() -> None:
    proxies = Proxies(["10.0.0.0/8", "192.0.2.7"])
    r = _request("10.1.2.3", ["203.0.113.9, 198.51.100.4", "192.0.2.7"], proxies)
    assert client_address(r) == "198.51.100.4"   # the left part is the client's own claim
    assert client_address(_request("10.1.2.3", ["10.9.9.9"], proxies)) == "10.1.2.3"
    assert client_address(_request("10.1.2.3", [], proxies)) == "10.1.2.3"


def test_from_anyone_else_the_header_is_ignored() -> None:
    proxies = Proxies(["10.0.0.0/8"])
    assert client_address(_request("198.51.100.4", ["1.2.3.4"], proxies)) == "198.51.100.4"
    assert client_address(_request("198.51.100.4", ["1.2.3.4"], Proxies())) == "198.51.100.4"


def test_trusted_proxies_are_not_capped_per_address() -> None:
    guard = ConnectionGuard(max_per_ip=2, header_timeout_s=5, proxies=Proxies(["10.0.0.1"]))
    assert [guard.admit("198.51.100.4") for _ in range(3)] == [True, True, False]
    assert all(guard.admit("10.0.0.1") for _ in range(10))
    guard.release("198.51.100.4")
    assert guard.admit("198.51.100.4")


def test_the_setting_is_validated() -> None:
    s = Settings.from_env({"GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8, 2001:db8::/32,192.0.2.7"})
    assert s.trusted_proxies == ("10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32")
    with pytest.raises(SettingsError, match="GATEWAY_TRUSTED_PROXIES"):
        Settings.from_env({"GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8,not-an-ip"})
