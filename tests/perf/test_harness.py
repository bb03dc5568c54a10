"""The load-test harness works (functional checks only, never timings): seeding makes codes the
gateway's codec accepts or rejects as intended, wrk's result line parses, the reference servers
answer, the Lua scripts run under wrk, the locust file imports and its helpers are right."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import ensure_keys
from gateway.clock import SystemClock
from gateway.codec import CodeError, verify_code
from gateway.services.trustlist import TrustList
from gateway.settings import Settings
from loadtests import bench, seed, servers


@pytest.fixture
def keys(tmp_path: Path) -> seed.GatewayKeys:
    ensure_keys(Settings(env="sandbox", keys_dir=tmp_path / "keys"), SystemClock())
    return seed.GatewayKeys.load(tmp_path / "keys")


def _trust(keys: seed.GatewayKeys) -> TrustList:
    return TrustList(lambda: keys.code_ring, lambda: keys.token_ring, time.time)


def test_seeded_codes_verify_once_each_with_the_gateway_keys(keys: seed.GatewayKeys) -> None:
    pid = seed.new_person_id()
    codes = seed.issue_codes(keys, 50, pid)
    assert len(set(codes)) == 50
    trust = _trust(keys)
    nonces = set()
    for c in codes:
        claims = verify_code(c, trust.lookup, time.time())
        nonces.add(claims.nonce)
        from gateway.services.codes import open_holder_handle

        assert open_holder_handle(keys.data_keys.code_holder_key, claims.holder,
                                  claims.nonce) == pid
    assert len(nonces) == 50  # each code is its own single-use claim


def test_bad_signature_and_junk_codes_fail_as_intended(keys: seed.GatewayKeys) -> None:
    trust = _trust(keys)
    for c in seed.bad_signature_codes(keys, 5, seed.new_person_id()):
        with pytest.raises(CodeError) as e:
            verify_code(c, trust.lookup, time.time())
        assert e.value.reason == "bad_signature"
    for c in seed.junk_codes(20):
        with pytest.raises(CodeError) as e:
            verify_code(c, trust.lookup, time.time())
        assert e.value.reason == "malformed"
        assert '"' not in c and "\\" not in c  # safe inside the Lua-built JSON


def test_minted_resident_token_verifies_as_the_gateway_would(keys: seed.GatewayKeys) -> None:
    from gateway.authz.tokens import AccessTokens, JwtSigner

    pid = seed.new_person_id()
    token = seed.mint_resident_token(keys, "http://127.0.0.1:1", pid)
    ring = keys.token_ring
    claims = AccessTokens(JwtSigner(lambda: ring, time.time), "http://127.0.0.1:1",
                          time.time).verify(token)
    assert claims.kind == "resident" and claims.has_scope("codes:issue")
    assert claims.sealed_person is not None
    assert keys.data_keys.open_person_id(claims.sealed_person, claims.client_id) == pid


WRK_OUT = """Running 1s test @ http://127.0.0.1:1
WRKJSON {"requests":1000,"duration_us":2000000,"p50_us":1500,"p90_us":2500,"p99_us":9000,\
"max_us":12000,"mean_us":1700.5,"s2":990,"s4":0,"s429":10,"s5":0,"expected":980,"other":20,\
"wrapped":3,"err_connect":0,"err_read":0,"err_write":0,"err_status":10,"err_timeout":0}
"""


def test_wrk_result_line_parses() -> None:
    r = bench.parse_wrk("x", WRK_OUT)
    assert r.requests == 1000 and r.rps == 500.0 and r.expected_rps == 490.0
    assert (r.p50_ms, r.p99_ms) == (1.5, 9.0)
    assert r.status == {"2xx": 990, "4xx": 0, "429": 10, "5xx": 0}
    assert r.socket_errors == {"status": 10} and r.wrapped == 3
    with pytest.raises(RuntimeError, match="no result"):
        bench.parse_wrk("x", "garbage")


def test_report_prints_pass_and_miss(capsys: pytest.CaptureFixture[str]) -> None:
    r = bench.parse_wrk("noop", WRK_OUT)
    report = {"workers": 2, "connections": 64, "duration_s": 1, "wrk_threads": 1,
              "loadavg_before": 0.5, "machine": {"cpus": 2, "cpu": "x"},
              "results": {"noop": bench.asdict(r)},
              "targets": [bench.asdict(bench.Target("a", 1.0, ">= 2", False)),
                          bench.asdict(bench.Target("b", 3.0, ">= 2", True))]}
    bench.print_report(report)
    out = capsys.readouterr().out
    assert "MISS  a" in out and "PASS  b" in out and "noop" in out


async def test_reference_noop_server_answers() -> None:
    client = TestClient(TestServer(servers.noop_app()))
    await client.start_server()
    try:
        r = await client.post("/noop", data=b'{"code":"x"}')
        assert r.status == 200 and (await r.json()) == {"ok": True}
    finally:
        await client.close()


async def test_reference_bare_server_allows_once_then_replays(
        keys: seed.GatewayKeys, tmp_path: Path, redis_url: str) -> None:
    client = TestClient(TestServer(servers.bare_app(tmp_path / "keys", redis_url)))
    await client.start_server()
    try:
        code = seed.issue_codes(keys, 1, seed.new_person_id())[0]
        answers = []
        for _ in range(2):
            r = await client.post("/verify", json={"code": code, "scene": "metro",
                                                   "request_id": "r"})
            answers.append((await r.json())["reason"])
        r = await client.post("/verify", json={"code": "junk", "scene": "metro"})
        answers.append((await r.json())["reason"])
        assert answers == ["ok", "replayed", "malformed"]
    finally:
        await client.close()


async def test_wrk_lua_scripts_feed_one_code_per_request(tmp_path: Path) -> None:
    """Run the real wrk with verify.lua against a recording server for one second."""
    from aiohttp import web

    seen: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        seen.append(body)
        assert request.headers["Authorization"] == "Bearer T"
        return web.json_response({"decision": "allow", "reason": "ok"})

    app = web.Application()
    app.router.add_post("/v1/codes/verify", record)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        codes = seed.write_lines(tmp_path / "codes.txt", [f"C{i}" for i in range(100000)])
        import asyncio

        wrk = bench.ensure_wrk()
        r = await asyncio.get_running_loop().run_in_executor(None, lambda: bench.run_wrk(
            wrk, "t", str(client.make_url("")).rstrip("/"), "verify.lua",
            {"WRK_PATH": "/v1/codes/verify", "WRK_AUTH": "Bearer T", "WRK_SCENE": "bus",
             "WRK_CODES": str(codes), "WRK_EXPECT": '"allow"'},
            threads=1, connections=2, duration_s=1))
    finally:
        await client.close()
    assert r.requests > 0 and r.expected == r.requests and r.status["2xx"] == r.requests
    assert len({b["request_id"] for b in seen}) == len(seen)   # never an idempotent retry
    assert len({b["code"] for b in seen}) == len(seen)         # each code once
    assert {b["scene"] for b in seen} == {"bus"}


def test_locust_helpers_work() -> None:
    from loadtests import flows

    verifier, challenge = flows.pkce_pair()
    assert 43 <= len(verifier) <= 128   # RFC 7636 §4.1
    digest = hashlib.sha256(verifier.encode()).digest()
    assert challenge == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    with pytest.raises(ValueError, match="scan-to-login"):
        flows.parse_login_page("<html></html>")


def test_locustfile_imports_with_its_user_classes() -> None:
    """In a child process: importing locust monkey-patches sockets with gevent."""
    import subprocess
    import sys

    code = ("import loadtests.locustfile as l; "
            "print(sorted(c.__name__ for c in (l.GateUser, l.ResidentUser, l.LoginUser, "
            "l.ConsentUser) if issubclass(c, l.FastHttpUser)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=False, cwd=Path(bench.ROOT))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "['ConsentUser', 'GateUser', 'LoginUser', 'ResidentUser']" in r.stdout


def test_login_page_parser_reads_the_qr_back() -> None:
    from gateway.qr import render_png
    from loadtests import flows

    png = base64.b64encode(render_png("YKLOGIN:ABCDEFGH.0123456789ABCDEF")).decode()
    html = (f'<main data-session="s-1"><img id="qr" src="data:image/png;base64,{png}">'
            f'<p class="number" id="number">07</p></main>')
    assert flows.parse_login_page(html) == ("s-1", "YKLOGIN:ABCDEFGH.0123456789ABCDEF", 7)


def test_bench_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        bench.main(["--help"])
    assert e.value.code == 0
    assert "--workers" in capsys.readouterr().out
