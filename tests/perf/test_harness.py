"""The load-test harness works (functional checks only, never timings): seeding makes codes the
gateway's codec accepts or rejects as intended, wrk's result line parses, the reference servers
answer, the Lua scripts run under wrk, the locust file imports and its helpers are right, the
server CPU accounting reads /proc right (own time, live descendants, reaped children), and the
interleaved rounds reduce to per-field medians."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict
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
              "results": {"noop": asdict(r)},
              "targets": [asdict(bench.Target("a", 1.0, ">= 2", False)),
                          asdict(bench.Target("b", 3.0, ">= 2", True))]}
    bench.print_report(report)
    out = capsys.readouterr().out
    assert "MISS  a" in out and "PASS  b" in out and "noop" in out
    assert "srv us/req" in out and "redis us/req" in out  # unmeasured CPU prints as "-"
    assert "rounds" not in out and "info" not in out       # an old report still prints


def _result(name: str, rps: float, p99: float, srv: float | None, requests: int,
            wrapped: int = 0) -> bench.Result:
    r = bench.parse_wrk(name, WRK_OUT)
    r.rps = r.expected_rps = rps
    r.p99_ms, r.server_cpu_us_per_req, r.redis_cpu_us_per_req = p99, srv, 20.0
    r.requests, r.wrapped = requests, wrapped
    return r


def test_rounds_reduce_to_per_field_medians() -> None:
    rounds = [_result("v#1", 3000.0, 40.0, 500.0, 30000),
              _result("v#2", 1000.0, 90.0, None, 10000, wrapped=7),
              _result("v#3", 2000.0, 10.0, 300.0, 20001)]
    rounds[1].socket_errors = {"timeout": 4}
    m = bench.median_result("verify_allow", rounds)
    assert m.name == "verify_allow" and m.note == "median of 3 rounds"
    assert (m.rps, m.expected_rps, m.p99_ms) == (2000.0, 2000.0, 40.0)  # each field on its own
    assert m.requests == 20001 and isinstance(m.requests, int)
    assert m.server_cpu_us_per_req == 400.0   # an unmeasured round is left out
    assert m.redis_cpu_us_per_req == 20.0 and m.wrapped == 0
    assert m.status == {"2xx": 990, "4xx": 0, "429": 10, "5xx": 0}
    assert m.socket_errors == {"status": 10}  # "timeout" in one round of three: median 0
    assert m.ratio_to_baseline is None        # computed by run() against the baseline
    # an even number of rounds: the mean of the middle two; ints stay ints
    two = bench.median_result("b", rounds[:2])
    assert two.rps == 2000.0 and two.requests == 20000 and two.wrapped == 4
    assert two.server_cpu_us_per_req == 500.0
    with pytest.raises(ValueError):
        bench.median_result("x", [])


def test_code_files_are_sized_from_the_rounds_seen() -> None:
    assert bench.codes_for_run(140000, 10, []) == 140000        # first round: the cap
    assert bench.codes_for_run(140000, 10, [2000.0, 2500.4]) == 50008  # 2x the best seen
    assert bench.codes_for_run(140000, 10, [9000.0]) == 140000  # never past the cap


def test_report_prints_cpu_columns_rounds_and_info(capsys: pytest.CaptureFixture[str]) -> None:
    bare = [_result(f"bare_verify_allow#{i}", 4000.0 + i, 20.0, 150.0, 40000) for i in (1, 2)]
    gw = [_result(f"verify_allow#{i}", 2000.0 + i, 40.0, 400.0, 20000) for i in (1, 2)]
    results = {"noop": bench.parse_wrk("noop", WRK_OUT),
               "bare_verify_allow": bench.median_result("bare_verify_allow", bare),
               "verify_allow": bench.median_result("verify_allow", gw)}
    results["noop"].server_cpu_us_per_req = 123.4
    report = {"workers": 2, "connections": 64, "duration_s": 1, "wrk_threads": 1,
              "loadavg_before": 0.5, "machine": {"cpus": 2, "cpu": "x"},
              "results": {k: asdict(v) for k, v in results.items()},
              "rounds": {"bare_verify_allow": [asdict(x) for x in bare],
                         "verify_allow": [asdict(x) for x in gw]},
              "targets": [asdict(bench.Target("verify / bare", 0.5, ">= 0.8", False))],
              "info": [{"name": "per-request CPU ratio bare / gateway", "value": 0.375}]}
    bench.print_report(report)
    lines = capsys.readouterr().out.splitlines()
    hdr = next(x for x in lines if x.startswith("scenario"))
    assert hdr.index("srv us/req") < hdr.index("redis us/req") < hdr.index("notes")
    noop = next(x for x in lines if x.startswith("noop"))
    assert re.search(r" 123 +- ", noop)  # server us/req measured, Redis not: "-"
    med = next(x for x in lines if x.startswith("verify_allow "))
    assert "median of 2 rounds" in med and " 400 " in med and " 20 " in med
    # the rounds, one line each, in the order they ran: bare, gateway, bare, gateway
    names = [x.split()[0] for x in lines if x and "#" in x.split()[0]]
    assert names == ["bare_verify_allow#1", "verify_allow#1", "bare_verify_allow#2",
                     "verify_allow#2"]
    assert "MISS  verify / bare: 0.5" in "\n".join(lines)
    assert "  per-request CPU ratio bare / gateway: 0.375" in lines


def test_proc_stat_parses_odd_command_names() -> None:
    fields = " ".join(["S", "4242"] + ["0"] * 9 + ["100", "50", "7", "3"] + ["0"] * 30)
    assert bench.parse_proc_stat(f"99 (a) b (c)) {fields}\n".encode()) == (4242, 160)
    assert bench.parse_proc_stat(b"99 (x) S 1") is None


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_proc_cpu_of_this_process_matches_os_times() -> None:
    _burn(0.1)
    t = os.times()
    ppid, ticks = bench.read_proc_stat(os.getpid()) or (0, 0)
    assert ppid == os.getppid()
    own = t.user + t.system + t.children_user + t.children_system
    assert abs(ticks / bench.CLK_TCK - own) < 0.1
    before = bench.tree_cpu_s(os.getpid())
    _burn(0.3)
    after = bench.tree_cpu_s(os.getpid())
    assert before is not None and after is not None and after - before >= 0.25
    assert bench.read_proc_stat(2**22 + 1) is None        # beyond pid_max: no such process
    assert bench.tree_cpu_s(2**22 + 1) is None and bench.tree_cpu_s(None) is None


def test_tree_cpu_counts_live_descendants_and_reaped_children() -> None:
    """A parent (idle) with a child burning CPU: the tree's time is the child's; once the child
    exits and is reaped, its time stays in the sum (the parent's cutime)."""
    burner = ("import time\nend = time.process_time() + 1.0\n"
              "while time.process_time() < end: pass\n")
    parent = ("import subprocess, sys\n"
              f"p = subprocess.Popen([sys.executable, '-c', {burner!r}])\n"
              "print(p.pid, flush=True)\nsys.stdin.readline()\np.wait()\n"
              "print('reaped', flush=True)\nsys.stdin.readline()\n")
    proc = subprocess.Popen([sys.executable, "-c", parent], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        child = int(proc.stdout.readline())
        start = bench.tree_cpu_s(proc.pid)
        tree = bench.process_tree(proc.pid)
        assert set(tree) == {proc.pid, child}   # the root and its live child, nothing else
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "reaped"
        assert set(bench.process_tree(proc.pid)) == {proc.pid}  # the child is gone
        end = bench.tree_cpu_s(proc.pid)
        assert start is not None and end is not None
        assert end - start >= 0.3                 # the burner's time, though it has vanished
        assert bench.cpu_us_per_request(start, end, 1000) == round((end - start) * 1e3, 1)
    finally:
        proc.stdin.write("\n")
        proc.stdin.flush()
        proc.wait(timeout=10)
    assert bench.tree_cpu_s(proc.pid) is None      # root gone (reaped): nothing to measure
    assert bench.cpu_us_per_request(1.0, 1.5, 1000) == 500.0
    assert bench.cpu_us_per_request(None, 1.5, 1000) is None
    assert bench.cpu_us_per_request(1.0, 1.5, 0) is None


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
            threads=1, connections=2, duration_s=1, server_pid=os.getpid()))
    finally:
        await client.close()
    assert r.requests > 0 and r.expected == r.requests and r.status["2xx"] == r.requests
    assert len({b["request_id"] for b in seen}) == len(seen)   # never an idempotent retry
    assert len({b["code"] for b in seen}) == len(seen)         # each code once
    assert {b["scene"] for b in seen} == {"bus"}
    # the server here is this process: its CPU per request is measured; no Redis pid given
    assert r.server_cpu_us_per_req is not None and r.server_cpu_us_per_req > 0
    assert r.redis_cpu_us_per_req is None


async def test_wrk_lua_scripts_share_the_line_split_and_the_headers(tmp_path: Path) -> None:
    """bodies.lua over two threads sends each prepared body once (thread i of n takes lines
    i, i+n, …: common.my_lines); bodies, post and oauth all send WRK_AUTH and their
    Content-Type (common.headers)."""
    import asyncio

    from aiohttp import web

    seen: list[tuple[str, str, str, bytes]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.path, request.headers.get("Authorization", ""),
                     request.headers.get("Content-Type", ""), await request.read()))
        return web.Response(text='{"access_token":"a.b.c","token_type":"Bearer"}',
                            content_type="application/json")

    app = web.Application()
    app.router.add_post("/{tail:.*}", record)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    url = str(client.make_url("")).rstrip("/")
    wrk = bench.ensure_wrk()
    loop = asyncio.get_running_loop()
    try:
        bodies = seed.write_lines(tmp_path / "bodies.txt", [f'{{"n":{i}}}' for i in range(100000)])
        r = await loop.run_in_executor(None, lambda: bench.run_wrk(
            wrk, "b", url, "bodies.lua",
            {"WRK_PATH": "/bodies", "WRK_AUTH": "Bearer B", "WRK_BODIES": str(bodies),
             "WRK_EXPECT": "Bearer"}, threads=2, connections=2, duration_s=1))
        for script, path, extra in (("post.lua", "/post", {"WRK_CTYPE": "text/plain"}),
                                    ("oauth.lua", "/oauth", {"WRK_CHECK": "token"})):
            env = {"WRK_PATH": path, "WRK_AUTH": "Basic P", "WRK_BODY": "x=1",
                   "WRK_EXPECT": "Bearer", **extra}
            r2 = await loop.run_in_executor(None, functools.partial(
                bench.run_wrk, wrk, "p", url, script, env, threads=1, connections=1,
                duration_s=1))
            assert r2.requests > 0 and r2.expected == r2.requests
    finally:
        await client.close()
    sent = [s for s in seen if s[0] == "/bodies"]
    assert r.requests > 0 and r.expected == r.requests
    assert len({s[3] for s in sent}) == len(sent)               # each body once, across threads
    assert {(s[1], s[2]) for s in sent} == {("Bearer B", "application/json")}
    assert {(s[1], s[2], s[3]) for s in seen if s[0] == "/post"} == {
        ("Basic P", "text/plain", b"x=1")}
    assert {(s[1], s[2], s[3]) for s in seen if s[0] == "/oauth"} == {
        ("Basic P", "application/x-www-form-urlencoded", b"x=1")}


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
            "l.ConsentUser, l.PhoneUser) if issubclass(c, l.FastHttpUser)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=False, cwd=Path(bench.ROOT))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "['ConsentUser', 'GateUser', 'LoginUser', 'PhoneUser', 'ResidentUser']" in r.stdout


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
    out = capsys.readouterr().out
    assert "--workers" in out and "--rounds" in out


def test_stats_target_divides_the_medians_and_misses_below_095() -> None:
    on = _result("verify_allow", 1900.0, 20.0, 400.0, 19000)
    off = _result("verify_allow_stats_off", 2000.0, 20.0, 380.0, 20000)
    t = bench.stats_target(on, off)
    assert t.value == 0.95 and t.passed and t.goal == ">= 0.95"
    slow = _result("verify_allow", 1899.0, 20.0, 400.0, 18990)
    assert not bench.stats_target(slow, off).passed
    assert not bench.stats_target(on, _result("off", 0.0, 0.0, 0.0, 0)).passed  # no answers


def test_ab_prepares_each_revision_its_own_keys_and_environment(tmp_path: Path) -> None:
    """loadtests.ab runs a revision's own prepare_keys / gateway_env in its tree (here: this
    one) into that revision's key dir: the keys load, the environment points at them."""
    from loadtests import ab

    env = ab.revision_env(bench.ROOT, "redis://127.0.0.1:1/0", tmp_path / "k", 4321, 2)
    assert env["GATEWAY_KEYS_DIR"] == str(tmp_path / "k")
    assert env["GATEWAY_PORT"] == "4321" and env["GATEWAY_REDIS_URL"] == "redis://127.0.0.1:1/0"
    keys = seed.GatewayKeys.load(tmp_path / "k")
    pid = seed.new_person_id()
    code = seed.issue_codes(keys, 1, pid)[0]
    assert verify_code(code, _trust(keys).lookup, time.time()).nonce
    with pytest.raises(RuntimeError, match="preparing its keys failed"):
        ab.revision_env(tmp_path, "redis://127.0.0.1:1/0", tmp_path / "k2", 1, 1)  # no tree
