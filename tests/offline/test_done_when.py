"""Issue 14's "Done when", the gate's side, tried as a new user would, through real processes:
a gateway (`python -m gateway serve`, sandbox, real Redis) and the gate SDK's command line
installed in a clean venv (`pip install sdk/`).

The SDK syncs; the gateway is stopped; the SDK lets 100 fresh codes through offline and
denies a replay and a lost card; the gateway comes back; the upload confirms the 100; the same
codes uploaded by a second gate come back `double_use`.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.offline.conftest import _clean_env
from tests.redis_server import free_port

GATE_A, GATE_B = "gate-metro-l1-xiaoshizi", "gate-bus-route-111"  # metro and bus: both ykm
LOST_CARD = "CQ100000249"  # lost in the sandbox's demo residents


def _http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
          form: bool = False) -> Any:
    data = None
    h = dict(headers or {})
    if body is not None:
        if form:
            data = "&".join(f"{k}={v}" for k, v in body.items()).encode()
            h["Content-Type"] = "application/x-www-form-urlencoded"
        else:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


class Server:
    def __init__(self, tmp: Path, redis_url: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        self.env.update(GATEWAY_KEYS_DIR=str(tmp / "keys"), GATEWAY_REDIS_URL=redis_url,
                        GATEWAY_PORT=str(self.port), GATEWAY_REDIS_PREFIX="done14:",
                        GATEWAY_CODE_TTL_S="60", GATEWAY_SHUTDOWN_TIMEOUT_S="2",
                        GATEWAY_RATELIMIT_APP_ISSUE="10000/1/10000",
                        GATEWAY_RATELIMIT_RESIDENT="10000/1/10000")
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        log = self.tmp / f"serve-{self.starts}.log"
        self.starts += 1
        with open(log, "w") as sink:
            self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve"],
                                         env=self.env, cwd=self.tmp, stdout=sink,
                                         stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                _http("GET", self.base + "/readyz")
                return
            except OSError:
                assert self.proc.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.2)

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)
        self.proc = None

    def keys_cli(self, *args: str) -> str:
        r = subprocess.run([sys.executable, "-m", "gateway", "keys", *args], env=self.env,
                           cwd=self.tmp, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout


class GateCli:
    def __init__(self, venv: Path, state: Path) -> None:
        self.exe = str(venv / "bin" / "gateway-gate")
        self.state = str(state)

    def __call__(self, *args: str, stdin: str | None = None,
                 expect: int = 0) -> list[dict[str, Any]]:
        r = subprocess.run([self.exe, "--state", self.state, *args], input=stdin,
                           capture_output=True, text=True, env=_clean_env(), cwd="/",
                           timeout=120)
        assert r.returncode == expect, (r.returncode, r.stdout[-1500:], r.stderr[-1500:])
        return [json.loads(line) for line in r.stdout.splitlines()]


@pytest.mark.slow
def test_offline_gate_done_when(tmp_path: Path, redis_url: str, sdk_venv: Path) -> None:
    server = Server(tmp_path, redis_url)
    server.start()
    try:
        demo = {g["client_id"]: g for g in _http("GET", server.base + "/sandbox/v1/demo")["gates"]}
        anchor = tmp_path / "trust-anchor.jwk"
        anchor.write_text(server.keys_cli("trust-anchor"))  # carried to the gates out of band
        gates = {}
        for gate_id in (GATE_A, GATE_B):
            cli = GateCli(sdk_venv, tmp_path / gate_id)
            cli("provision", "--url", server.base, "--gate-id", gate_id,
                "--secret", demo[gate_id]["client_secret"], "--scene", demo[gate_id]["scene"],
                "--trust-anchor", str(anchor))
            [synced] = cli("sync")
            assert synced["deny_list_entries"] >= 2 and synced["trust_list_version"] > 0
            gates[gate_id] = cli
        a, b = gates[GATE_A], gates[GATE_B]

        # 100 fresh codes, as a resident app gets them
        assertion = _http("POST", server.base + "/sandbox/v1/upstream-assertions",
                          {"resident": "r-zhang-wei", "platform": "ykb"})["assertion"]
        app = next(c for c in _http("GET", server.base + "/sandbox/v1/demo")["clients"]
                   if c["client_id"] == "app-ykb")
        basic = base64.b64encode(f"app-ykb:{app['client_secret']}".encode()).decode()
        token = _http("POST", server.base + "/oauth2/token", {
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": assertion,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt"},
            headers={"Authorization": f"Basic {basic}"}, form=True)["access_token"]
        codes = [_http("POST", server.base + "/v1/codes", {"face": "ykm"},
                       headers={"Authorization": f"Bearer {token}"})["code"]
                 for _ in range(100)]
        assert len(set(codes)) == 100

        # the terminal's PSAM attests the lost card's tap (the sandbox plays the PSAM)
        tap_rid, tap_at = "tap-lost-1", datetime.now(UTC).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
        mac = _http("POST", server.base + "/sandbox/v1/card-taps", {
            "card_no": LOST_CARD, "gate_client_id": GATE_A, "request_id": tap_rid,
            "scanned_at": tap_at})["terminal_mac"]

        server.stop()  # ---------------------------------------------------- offline
        with pytest.raises(OSError):
            _http("GET", server.base + "/healthz")
        results = a("verify", "-", stdin="".join(c + "\r\n" for c in codes))
        assert [r["decision"] for r in results] == ["allow"] * 100
        [replay] = a("verify", codes[17])
        assert (replay["decision"], replay["reason"]) == ("deny", "replayed")
        [lost] = a("tap", LOST_CARD, "--region", "CQ", "--mac", mac, "--request-id", tap_rid,
                   "--scanned-at", tap_at)
        assert (lost["decision"], lost["reason"]) == ("deny", "revoked")
        # the second gate lets the same codes through too: its own replay cache is empty
        results_b = b("verify", "-", stdin="\n".join(codes) + "\n")
        assert [r["decision"] for r in results_b] == ["allow"] * 100
        [offline] = a("upload", expect=3)  # nobody to upload to
        assert offline["error"] == "offline"

        server.start()  # --------------------------------------------------- back online
        [up_a] = a("upload")
        assert up_a["uploaded"] == 102 and up_a["remaining"] == 0
        answers = [json.loads(line[9:]) for line in
                   (tmp_path / GATE_A / "uploads.log").read_text().splitlines()]
        by_rid = {x["request_id"]: x for x in answers}
        assert [by_rid[r["request_id"]]["status"] for r in results] == ["confirmed"] * 100
        assert by_rid[replay["request_id"]]["status"] == "double_use"
        assert by_rid[replay["request_id"]]["first_use"]["gate"] == GATE_A
        assert (by_rid[tap_rid]["status"], by_rid[tap_rid]["reason"]) == ("invalid", "revoked")
        [again] = a("upload")
        assert again["uploaded"] == 0  # resumed where it stopped: nothing twice

        [up_b] = b("upload")
        assert up_b["uploaded"] == 100
        answers_b = [json.loads(line[9:]) for line in
                     (tmp_path / GATE_B / "uploads.log").read_text().splitlines()]
        assert [x["status"] for x in answers_b] == ["double_use"] * 100
        assert {x["first_use"]["gate"] for x in answers_b} == {GATE_A}

        # the export lists every scan exactly once (docs/records.md): both gates' uploads,
        # through the outbox and the exporter (the sandbox's store; PostgreSQL's restart
        # during a run: tests/records/test_postgres_outage.py)
        admin = (tmp_path / "keys" / "sandbox" / "admin-token").read_text().strip()
        expected = {(GATE_A, r["request_id"]) for r in results} | \
            {(GATE_A, replay["request_id"]), (GATE_A, tap_rid)} | \
            {(GATE_B, r["request_id"]) for r in results_b}
        deadline = time.monotonic() + 30
        while True:
            exported: list[tuple[str, str]] = []
            after = ""
            while True:
                req = urllib.request.Request(
                    f"{server.base}/admin/v1/transactions?limit=1000" +
                    (f"&after={after}" if after else ""),
                    headers={"Authorization": f"Bearer {admin}"})
                with urllib.request.urlopen(req, timeout=10) as r:
                    lines = r.read().decode().splitlines()
                    after = r.headers["X-Next-Cursor"]
                if not lines:
                    break
                exported += [(x["gate"], x["request_id"]) for x in map(json.loads, lines)]
            if len(exported) >= len(expected) or time.monotonic() > deadline:
                break
            time.sleep(0.5)  # the exporter drains the outbox in the background
        assert sorted(exported) == sorted(expected)  # each once, nothing else
    finally:
        if server.proc is not None:
            server.stop()
