"""Finding 5 of issue 12: input never makes a 500. JSON nesting is bounded (400 levels) and
refused with 400 however deep; a lone surrogate (a `\\udXXX` escape with no pair) is refused
with 400 before any Redis work — the code it came with is still unused afterwards."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

from tests.codes.conftest import demo_person
from tests.faults.conftest import METRO_GATE, mint_codes
from tests.web.conftest import Gateway

MAX_JSON_DEPTH = 400   # the bound (gateway.web.http.MAX_JSON_DEPTH)
JSON_ROUTES = ("/v1/codes/verify", "/v1/cards/verify", "/v1/codes", "/v1/me/links",
               "/v1/consents", "/v1/login-sessions/scan", "/sandbox/v1/upstream-assertions",
               "/sandbox/v1/card-taps", "/admin/v1/clients")


def _nested(depth: int, inner: str = "1") -> bytes:
    return ("[" * depth + inner + "]" * depth).encode()


async def _post_raw(g: Gateway, path: str, raw: bytes, token: str | None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    r = await g.client.post(path, data=raw, headers=headers)
    return r.status, await r.json(content_type=None)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5_000, 200_000])
async def test_deep_nesting_is_a_400_on_every_json_route(gw: Gateway, depth: int) -> None:
    token = await gw.client_token(METRO_GATE)
    for path in JSON_ROUTES:
        for raw in (_nested(depth), b'{"code": ' + _nested(depth) + b"}",
                    ('{"a":' * depth + "1" + "}" * depth).encode()):
            if len(raw) > gw.settings.max_body_bytes:
                raw = raw[:gw.settings.max_body_bytes]   # still deeper than allowed, unclosed
            status, body = await _post_raw(gw, path, raw, token)
            assert status in (400, 401, 403, 404, 413), (path, status, body)
            assert status != 500


def test_depth_is_counted_outside_strings() -> None:
    from gateway.web import http

    _json_depth = http._json_depth
    assert http.MAX_JSON_DEPTH == MAX_JSON_DEPTH
    assert _json_depth(b'{"a": "[[[[[[", "b": [1, [2]]}') == 3
    assert _json_depth(b'["\\"[[[", [[]]]') == 3
    ok = json.dumps({"x": json.loads(_nested(MAX_JSON_DEPTH - 1))}).encode()
    assert _json_depth(ok) == MAX_JSON_DEPTH


async def test_depth_400_is_accepted_401_refused(gw: Gateway) -> None:
    token = await gw.client_token(METRO_GATE)
    ok = b'{"code": "x", "scene": "metro", "request_id": "r1", "deep": ' + \
        _nested(MAX_JSON_DEPTH - 1) + b"}"
    status, body = await _post_raw(gw, "/v1/codes/verify", ok, token)
    assert status == 200 and body["reason"] == "malformed", body   # parsed, then judged
    too_deep = b'{"code": "x", "scene": "metro", "request_id": "r1", "deep": ' + \
        _nested(MAX_JSON_DEPTH) + b"}"
    status, body = await _post_raw(gw, "/v1/codes/verify", too_deep, token)
    assert status == 400 and body["code"] == "invalid_request", body
    assert "400 levels" in body["detail"]


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "x\\udbff", "\\udc00y"])
async def test_a_lone_surrogate_is_a_400_before_any_redis_work(gw: Gateway, escape: str) -> None:
    token = await gw.client_token(METRO_GATE)
    code = mint_codes(gw.settings.keys_dir, await demo_person(gw), 1)[0]
    raw = b'{"code": "' + code.encode() + b'", "scene": "metro", "request_id": "' + \
        escape.encode() + b'"}'
    status, body = await _post_raw(gw, "/v1/codes/verify", raw, token)
    assert status == 400 and body["code"] == "invalid_request", body
    # nothing was claimed: the same code is still allowed once, then replayed
    rid = secrets.token_hex(8)
    for expected in ("ok", "replayed"):
        status, body = await _post_raw(gw, "/v1/codes/verify", json.dumps(
            {"code": code, "scene": "metro", "request_id": rid + expected}).encode(), token)
        assert status == 200 and body["reason"] == expected, body


async def test_a_surrogate_pair_is_text(gw: Gateway) -> None:
    token = await gw.client_token(METRO_GATE)
    raw = b'{"code": "x", "scene": "metro", "request_id": "\\ud83d\\ude87"}'   # U+1F687
    status, body = await _post_raw(gw, "/v1/codes/verify", raw, token)
    assert status == 200 and body["reason"] == "malformed", body


@pytest.mark.parametrize("path", ["/v1/codes/verify", "/v1/me/links", "/oauth2/token"])
async def test_header_bytes_that_are_not_utf8_are_not_a_500(gw: Gateway, path: str) -> None:
    """aiohttp keeps a header's invalid UTF-8 as lone surrogates (surrogateescape): a bearer
    token or a request id made of them is refused, never a crash."""
    import asyncio

    port = gw.client.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                 b"Authorization: Bearer \xff\xfe\xed\xa0\x80abc\r\nX-Request-Id: \xc3\x28\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 2\r\n"
                 b"Connection: close\r\n\r\n{}")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 401), answer[:300]
