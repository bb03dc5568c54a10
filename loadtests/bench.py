"""The peak-traffic benchmark (issue 7), in ONE run, against a private real redis-server and the
same worker count for every server:

  (a) aiohttp POST no-op                         — the baseline of every ratio
  (b) bare "decode + verify + SET NX" handler    — the reference of the verify target
  (c) gateway POST /v1/codes/verify: allow (fresh pre-issued codes, each used once),
      deny replayed / malformed (junk) / bad_signature
  (d) gateway POST /v1/codes (issuance)
  (e) gateway POST /oauth2/token (client_credentials) and POST /oauth2/introspect

Load: wrk (Debian package `wrk`, installed with apt-get if missing), Lua scripts in
loadtests/wrk/ feeding one code per request. Prints rps, p50/p99 and the ratio to the
baseline, then the targets with PASS/MISS; writes loadtests/out/bench-<time>.json (and
bench-latest.json).

    script/bench                      # = python -m loadtests.bench (2 workers, 64 conns, 10 s)
    script/bench --workers 2 --connections 64 --duration 10 --wrk-threads 1

Limits: the gateway runs with GATEWAY_RATELIMIT_GATE / _APP_ISSUE raised to 10^6/s so that
one gate token and one resident can drive the whole load: the limiter still runs on every
request (same Redis script, same cost); only its threshold is out of the way. See
docs/performance.md for the method and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WRK_DIR = ROOT / "loadtests" / "wrk"
OUT_DIR = ROOT / "loadtests" / "out"
PY = sys.executable

TARGET_VERIFY_RPS = 8000.0
TARGET_VERIFY_P99_MS = 20.0
TARGET_VERIFY_VS_BARE = 0.8
TARGET_TOKEN_RPS = 2000.0
UNLIMITED = "1000000/1/1000000"


# ---------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_wrk() -> str:
    """wrk from Debian's packages; installed when missing (root), else a clear error."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("bench: installing wrk (apt-get install -y wrk) …", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        r = subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
            subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], env=env,
                           stdout=subprocess.DEVNULL, check=False)
        found = shutil.which("wrk")
        if found:
            return found
    raise SystemExit("bench: wrk is not installed: apt-get install wrk (Debian/Ubuntu)")


def wait_http(url: str, timeout_s: float = 30.0, method: str = "GET") -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url, method=method, data=b"{}" if method == "POST"
                                         else None, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError as exc:
            last = exc
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up: {last}")


@contextmanager
def process(args: list[str], env: dict[str, str] | None = None,
            log: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A child process in its own session, stopped (SIGTERM, then SIGKILL) on exit."""
    out = open(log, "wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                            start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]


@contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench: redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="gw-bench-redis-")
    with process([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                  "--appendonly", "no", "--dir", workdir, "--loglevel", "warning"]):
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"


# ---------------------------------------------------------------- wrk

@dataclass
class Result:
    name: str
    requests: int = 0
    duration_s: float = 0.0
    rps: float = 0.0
    expected_rps: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    expected: int = 0
    other: int = 0
    wrapped: int = 0
    status: dict[str, int] = field(default_factory=dict)
    socket_errors: dict[str, int] = field(default_factory=dict)
    wrk_cpu_pct: float = 0.0
    ratio_to_baseline: float | None = None
    note: str = ""


def parse_wrk(name: str, stdout: str) -> Result:
    m = re.search(r"^WRKJSON (\{.*\})$", stdout, re.M)
    if m is None:
        raise RuntimeError(f"{name}: wrk printed no result:\n{stdout[-2000:]}")
    d = json.loads(m.group(1))
    dur = d["duration_us"] / 1e6
    return Result(
        name=name, requests=d["requests"], duration_s=round(dur, 2),
        rps=round(d["requests"] / dur, 1) if dur else 0.0,
        expected_rps=round(d["expected"] / dur, 1) if dur else 0.0,
        p50_ms=d["p50_us"] / 1000, p90_ms=d["p90_us"] / 1000, p99_ms=d["p99_us"] / 1000,
        max_ms=d["max_us"] / 1000, expected=d["expected"], other=d["other"],
        wrapped=d["wrapped"],
        status={"2xx": d["s2"], "4xx": d["s4"], "429": d["s429"], "5xx": d["s5"]},
        socket_errors={k[4:]: d[k] for k in d if k.startswith("err_") and d[k]})


def run_wrk(wrk: str, name: str, url: str, script: str, env: dict[str, str], *,
            threads: int, connections: int, duration_s: int) -> Result:
    full_env = {**os.environ, "WRK_LUA_DIR": str(WRK_DIR), "WRK_THREADS": str(threads),
                "WRK_RUN": f"{name}-{time.monotonic_ns()}", **env}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    r = subprocess.run([wrk, "-t", str(threads), "-c", str(connections), "-d", f"{duration_s}s",
                        "--latency", "--timeout", "5s", "-s", str(WRK_DIR / script), url],
                       env=full_env, capture_output=True, text=True, check=False, cwd=ROOT)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"{name}: wrk failed ({r.returncode}): {r.stderr[-2000:]}")
    res = parse_wrk(name, r.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    res.wrk_cpu_pct = round(100 * cpu / wall, 1) if wall else 0.0
    res.note = f"loadavg {os.getloadavg()[0]:.1f}"
    return res


# ---------------------------------------------------------------- seeding (library)

def gateway_env(redis_url: str, keys_dir: Path, port: int, workers: int) -> dict[str, str]:
    return {**os.environ, "GATEWAY_ENV": "sandbox", "GATEWAY_REDIS_URL": redis_url,
            "GATEWAY_KEYS_DIR": str(keys_dir), "GATEWAY_PORT": str(port),
            "GATEWAY_HOST": "127.0.0.1", "GATEWAY_WORKERS": str(workers),
            "GATEWAY_LOG_FORMAT": "json", "GATEWAY_LOG_LEVEL": "info",
            "GATEWAY_CODE_TTL_S": "60",
            "GATEWAY_RATELIMIT_GATE": UNLIMITED, "GATEWAY_RATELIMIT_APP_ISSUE": UNLIMITED,
            "GATEWAY_RATELIMIT_RESIDENT": UNLIMITED, "GATEWAY_RATELIMIT_RP": UNLIMITED}


def sealed_attributes(base: str, keys: Any, resident_token: str) -> dict[str, Any] | None:
    """What POST /v1/codes seals in this resident's codes (read back from one real code), so
    the pre-issued codes are the ones the gateway itself would issue."""
    from gateway.codec import decode
    from gateway.services.codes import SEALABLE, HolderCipher, open_attributes
    from loadtests import seed

    status, body = seed.http_json("POST", f"{base}/v1/codes", body={"face": "ykm"},
                                  headers={"Authorization": f"Bearer {resident_token}"})
    if status != 201 or not isinstance(body, dict):
        return None
    claims = decode(str(body["code"])).claims
    _, flags = HolderCipher(keys.data_keys.code_holder_key).open(claims.holder, claims.nonce,
                                                                 claims.flags)
    return open_attributes(flags, tuple(sorted(SEALABLE)))


def prepare_keys(keys_dir: Path) -> None:
    """The gateway's sandbox keys (code, token, data, demo secrets), made as `serve` would."""
    from gateway.app import ensure_keys
    from gateway.clock import SystemClock
    from gateway.settings import Settings

    ensure_keys(Settings(env="sandbox", keys_dir=keys_dir), SystemClock())


def demo_secret(keys_dir: Path, client_id: str) -> str:
    from gateway.adapters.keyfiles import read_private_pem

    creds = json.loads(read_private_pem(keys_dir / "sandbox" / "demo-secrets.json"))
    return str(creds[client_id]["client_secret"])


def resident_person(base: str, keys_dir: Path) -> tuple[str, str, str]:
    """(resident token, person id, source): a demo resident through the sandbox's HTTP flow
    (assertion + token exchange) when available, else a library-minted token for a new id."""
    from loadtests import seed

    keys = seed.GatewayKeys.load(keys_dir)
    status, d = seed.http_json("GET", f"{base}/sandbox/v1/demo")
    if status == 200 and isinstance(d, dict):
        app = next((c for c in d.get("clients", []) if c.get("client_id") == seed.DEFAULT_APP),
                   None)
        residents = d.get("residents") or []
        if app is not None and residents:
            r0 = residents[0]
            rid = r0.get("id") if isinstance(r0, dict) else r0
            token = seed.resident_token_http(base, str(rid), seed.DEFAULT_APP,
                                             str(app.get("client_secret")))
            if token is not None:
                from gateway.authz.tokens import AccessTokens, JwtSigner

                ring = keys.token_ring
                claims = AccessTokens(JwtSigner(lambda: ring, time.time), base,
                                      time.time).verify(token)
                if claims.sealed_person:
                    pid = keys.data_keys.open_person_id(claims.sealed_person, claims.client_id)
                    return token, pid, "http"
    pid = seed.new_person_id()
    return seed.mint_resident_token(keys, base, pid), pid, "library"


# ---------------------------------------------------------------- the run

@dataclass
class Target:
    name: str
    value: float
    goal: str
    passed: bool


def run(args: argparse.Namespace) -> dict[str, Any]:
    from loadtests import seed

    wrk = ensure_wrk()
    loadavg_before = round(os.getloadavg()[0], 2)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    work = OUT_DIR / f"run-{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    keys_dir = work / "keys"
    prepare_keys(keys_dir)
    keys = seed.GatewayKeys.load(keys_dir)
    w, c, d, t = args.workers, args.connections, args.duration, args.wrk_threads
    wopts = {"threads": t, "connections": c, "duration_s": d}
    results: dict[str, Result] = {}
    codes_per_run = args.codes_per_second * d
    junk_file = seed.write_lines(work / "junk.txt", seed.junk_codes(5000))

    def say(msg: str) -> None:
        print(f"bench: {msg}", file=sys.stderr, flush=True)

    with redis_server() as redis_url:
        # (a) baseline
        port = free_port()
        with process([PY, "-m", "loadtests.servers", "noop", "--port", str(port),
                      "--workers", str(w)]):
            wait_http(f"http://127.0.0.1:{port}/noop", method="POST")
            env = {"WRK_PATH": "/noop", "WRK_BODY": '{"code":"YK1:X","scene":"metro"}',
                   "WRK_EXPECT": '"ok"'}
            url = f"http://127.0.0.1:{port}"
            say("warm-up noop")
            run_wrk(wrk, "warmup", url, "post.lua", env, threads=t, connections=c,
                    duration_s=2)
            say("(a) aiohttp POST no-op")
            results["noop"] = run_wrk(wrk, "noop", url, "post.lua", env, **wopts)

        # (b) bare decode + verify + SET NX
        port = free_port()
        with process([PY, "-m", "loadtests.servers", "bare", "--port", str(port),
                      "--workers", str(w), "--keys-dir", str(keys_dir), "--redis", redis_url]):
            wait_http(f"http://127.0.0.1:{port}/verify", method="POST")
            url = f"http://127.0.0.1:{port}"
            base_env = {"WRK_PATH": "/verify", "WRK_SCENE": "metro"}
            say("warm-up bare (junk)")
            run_wrk(wrk, "warmup", url, "verify.lua",
                    {**base_env, "WRK_CODES": str(junk_file), "WRK_EXPECT": "malformed"},
                    threads=t, connections=c, duration_s=2)
            say(f"(b) bare handler: issuing {codes_per_run} codes")
            codes = seed.write_lines(work / "bare-codes.txt",
                                     seed.issue_codes(keys, codes_per_run, seed.new_person_id()))
            results["bare_verify_allow"] = run_wrk(
                wrk, "bare_verify_allow", url, "verify.lua",
                {**base_env, "WRK_CODES": str(codes), "WRK_EXPECT": '"allow"'}, **wopts)

        # (c)-(e) the gateway
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        genv = gateway_env(redis_url, keys_dir, port, w)
        with process([PY, "-m", "gateway", "serve", "--workers", str(w), "--port", str(port)],
                     env=genv, log=work / "gateway.log"):
            wait_http(f"{base}/healthz", timeout_s=60)
            time.sleep(1.0)  # both workers listening
            gate_id = args.gate
            gate_secret = demo_secret(keys_dir, gate_id)
            gate_basic = seed.basic(gate_id, gate_secret)
            gate_token = seed.client_token(base, gate_id, gate_secret)
            scene = args.scene
            resident_token, person_id, source = resident_person(base, keys_dir)
            say(f"resident for codes: {source}")
            venv = {"WRK_PATH": "/v1/codes/verify", "WRK_SCENE": scene,
                    "WRK_AUTH": f"Bearer {gate_token}"}
            say("warm-up gateway verify (junk)")
            run_wrk(wrk, "warmup", base, "verify.lua",
                    {**venv, "WRK_CODES": str(junk_file), "WRK_EXPECT": "malformed"},
                    threads=t, connections=c, duration_s=2)

            say(f"(c) verify allow: issuing {codes_per_run} codes")
            allow_codes = seed.issue_codes(keys, codes_per_run, person_id,
                                           attributes=sealed_attributes(base, keys,
                                                                        resident_token))
            f_allow = seed.write_lines(work / "gw-codes.txt", allow_codes)
            results["verify_allow"] = run_wrk(
                wrk, "verify_allow", base, "verify.lua",
                {**venv, "WRK_CODES": str(f_allow), "WRK_EXPECT": '"allow"'}, **wopts)

            say("(c) verify deny: replayed")
            f_replay = seed.write_lines(work / "replay.txt", allow_codes[:1])
            results["verify_deny_replayed"] = run_wrk(
                wrk, "verify_deny_replayed", base, "verify.lua",
                {**venv, "WRK_CODES": str(f_replay), "WRK_EXPECT": '"replayed"'}, **wopts)
            say("(c) verify deny: junk")
            results["verify_deny_junk"] = run_wrk(
                wrk, "verify_deny_junk", base, "verify.lua",
                {**venv, "WRK_CODES": str(junk_file), "WRK_EXPECT": '"malformed"'}, **wopts)
            say("(c) verify deny: bad signature")
            f_bad = seed.write_lines(work / "badsig.txt",
                                     seed.bad_signature_codes(keys, 2000, person_id))
            results["verify_deny_bad_signature"] = run_wrk(
                wrk, "verify_deny_bad_signature", base, "verify.lua",
                {**venv, "WRK_CODES": str(f_bad), "WRK_EXPECT": '"bad_signature"'}, **wopts)

            say("(d) code issuance")
            results["issue_code"] = run_wrk(
                wrk, "issue_code", base, "post.lua",
                {"WRK_PATH": "/v1/codes", "WRK_BODY": '{"face":"ykm"}',
                 "WRK_AUTH": f"Bearer {resident_token}", "WRK_EXPECT": '"code"'}, **wopts)

            say("(e) token endpoint client_credentials")
            results["token_client_credentials"] = run_wrk(
                wrk, "token_client_credentials", base, "post.lua",
                {"WRK_PATH": "/oauth2/token", "WRK_BODY": "grant_type=client_credentials",
                 "WRK_CTYPE": "application/x-www-form-urlencoded", "WRK_AUTH": gate_basic,
                 "WRK_EXPECT": "access_token"}, **wopts)
            say("(e) introspection")
            results["introspect"] = run_wrk(
                wrk, "introspect", base, "post.lua",
                {"WRK_PATH": "/oauth2/introspect", "WRK_BODY": f"token={gate_token}",
                 "WRK_CTYPE": "application/x-www-form-urlencoded", "WRK_AUTH": gate_basic,
                 "WRK_EXPECT": '"active": true'}, **wopts)

    baseline = results["noop"].rps
    for r in results.values():
        r.ratio_to_baseline = round(r.expected_rps / baseline, 3) if baseline else None
    va, bare, tok = results["verify_allow"], results["bare_verify_allow"], \
        results["token_client_credentials"]
    targets = [
        Target(f"verify allows/s with {w} workers", va.expected_rps,
               f">= {TARGET_VERIFY_RPS:.0f}", va.expected_rps >= TARGET_VERIFY_RPS),
        Target(f"verify p99 at {c} connections (ms)", va.p99_ms,
               f"<= {TARGET_VERIFY_P99_MS:.0f}", va.p99_ms <= TARGET_VERIFY_P99_MS),
        Target("verify / bare decode+verify+SET NX", round(va.expected_rps / bare.expected_rps, 3)
               if bare.expected_rps else 0.0, f">= {TARGET_VERIFY_VS_BARE}",
               bare.expected_rps > 0
               and va.expected_rps >= TARGET_VERIFY_VS_BARE * bare.expected_rps),
        Target("token client_credentials /s", tok.expected_rps, f">= {TARGET_TOKEN_RPS:.0f}",
               tok.expected_rps >= TARGET_TOKEN_RPS),
    ]
    if w != 2 or c != 64:
        targets[0].goal += " (target defined for 2 workers, 64 connections)"
    report = {
        "when": stamp, "workers": w, "connections": c, "duration_s": d, "wrk_threads": t,
        "loadavg_before": loadavg_before,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "cpu": _cpu_model()},
        "results": {k: asdict(v) for k, v in results.items()},
        "targets": [asdict(x) for x in targets],
    }
    (work / "keys").exists() and shutil.rmtree(work / "keys")
    for f in work.glob("*.txt"):
        f.unlink()
    out = OUT_DIR / f"bench-{stamp}.json"
    out.write_text(json.dumps(report, indent=1), "utf-8")
    (OUT_DIR / "bench-latest.json").write_text(json.dumps(report, indent=1), "utf-8")
    print_report(report)
    print(f"\nresults: {out}")
    return report


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def print_report(report: dict[str, Any]) -> None:
    print(f"\nworkers={report['workers']} connections={report['connections']} "
          f"duration={report['duration_s']}s wrk_threads={report['wrk_threads']} "
          f"cpus={report['machine']['cpus']} ({report['machine']['cpu']}) "
          f"loadavg before={report['loadavg_before']} (other processes share these CPUs)")
    hdr = (f"{'scenario':28} {'rps':>9} {'expected/s':>10} {'p50 ms':>7} {'p99 ms':>7} "
           f"{'x base':>7} {'wrk cpu':>7}  notes")
    print(hdr)
    print("-" * len(hdr))
    for name, r in report["results"].items():
        notes = []
        bad = {k: v for k, v in r["status"].items() if v and k != "2xx"}
        if bad:
            notes.append("status " + ",".join(f"{k}={v}" for k, v in bad.items()))
        if r["other"] and r["expected"]:
            notes.append(f"unexpected answers={r['other']}")
        if r["wrapped"]:
            notes.append(f"codes reused={r['wrapped']}")
        if r.get("note"):
            notes.append(r["note"])
        if r["socket_errors"]:
            notes.append("socket " + ",".join(f"{k}={v}" for k, v in r["socket_errors"].items()))
        ratio = r["ratio_to_baseline"]
        print(f"{name:28} {r['rps']:9.0f} {r['expected_rps']:10.0f} {r['p50_ms']:7.2f} "
              f"{r['p99_ms']:7.2f} {ratio if ratio is not None else 0:7.3f} "
              f"{r['wrk_cpu_pct']:6.0f}%  {'; '.join(notes)}")
    print("\ntargets:")
    for t in report["targets"]:
        verdict = "PASS" if t["passed"] else "MISS"
        print(f"  {verdict}  {t['name']}: {t['value']} (goal {t['goal']})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="script/bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--duration", type=int, default=10, help="seconds per scenario")
    p.add_argument("--wrk-threads", type=int, default=1,
                   help="wrk threads (default 1: on a 2-core box wrk shares the CPUs)")
    p.add_argument("--codes-per-second", type=int, default=14000,
                   help="fresh codes pre-issued per second of the allow run")
    p.add_argument("--gate", default="gate-metro-l1-xiaoshizi")
    p.add_argument("--scene", default="metro")
    run(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
