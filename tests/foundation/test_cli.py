"""The `gateway` command as an operator runs it: real processes, real Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis

from tests.redis_server import free_port

PY = sys.executable


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "gateway", *args], env=env, cwd=cwd, text=True,
                          capture_output=True, timeout=60)


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update({"GATEWAY_KEYS_DIR": str(tmp_path / "keys"), **extra})
    return env


def test_help_lists_operator_commands(tmp_path: Path) -> None:
    out = run(["--help"], base_env(tmp_path), tmp_path).stdout
    for cmd in ("serve", "keys", "clients", "gates", "audit"):
        assert cmd in out


def test_keys_generate_rotate_list(tmp_path: Path) -> None:
    env = base_env(tmp_path)
    assert run(["keys", "generate"], env, tmp_path).returncode == 0
    before = run(["keys", "list"], env, tmp_path).stdout
    assert before.count("current") == 3 and "PRIVATE" not in before  # token, code, trust
    r = run(["keys", "rotate", "--purpose", "token"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    after = run(["keys", "list"], env, tmp_path).stdout
    assert "retired" in after and "verifies until" in after


def test_clients_register_list_disable(tmp_path: Path, redis_url: str) -> None:
    env = base_env(tmp_path, GATEWAY_REDIS_URL=redis_url, GATEWAY_REDIS_PREFIX="clitest:")
    redis.Redis.from_url(redis_url).delete("clitest:{ops}:venues", "clitest:{ops}:gates")
    venues = tmp_path / "venues.csv"
    venues.write_text("id,name,scene,district,operator,status,address\n", "utf-8")
    r = run(["venues", "import", str(venues)], env, tmp_path)  # changes are audited: the
    assert r.returncode == 2 and "key" in r.stderr.lower()       # chain key must be at hand
    assert run(["keys", "generate"], env, tmp_path).returncode == 0
    venues.write_text("id,name,scene,district,operator,status,address\n"
                      "v-rail-1,小什字站,metro,500103,Rail,active,\n", "utf-8")
    assert run(["venues", "import", str(venues)], env, tmp_path).returncode == 0
    r = run(["gates", "register", "gate-x", "--name", "Gate X", "--scene", "metro",
             "--operator", "Rail", "--venue", "v-rail-1"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out["client_secret"]) >= 40
    stored = redis.Redis.from_url(redis_url).get("clitest:client:gate-x")
    assert stored is not None and out["client_secret"].encode() not in stored
    listed = run(["gates", "list"], env, tmp_path).stdout
    assert "gate-x" in listed and "secret_hash" not in listed
    assert out["client_secret"] not in listed
    assert run(["gates", "disable", "gate-x"], env, tmp_path).returncode == 0
    assert '"disabled": true' in run(["gates", "list"], env, tmp_path).stdout
    assert run(["gates", "register", "gate-x", "--name", "x", "--scene", "metro",
                "--operator", "y", "--venue", "v-rail-1"], env, tmp_path).returncode == 1
    # a venue of another scene is refused before anything is written
    assert run(["gates", "register", "gate-y", "--name", "y", "--scene", "bus",
                "--operator", "y", "--venue", "v-rail-1"], env, tmp_path).returncode == 1
    assert "gate-y" not in run(["gates", "list"], env, tmp_path).stdout


def test_clients_need_redis(tmp_path: Path) -> None:
    r = run(["clients", "list"], base_env(tmp_path), tmp_path)
    assert r.returncode == 2 and "GATEWAY_REDIS_URL" in r.stderr


def test_production_refuses_to_start_without_redis_or_keys(tmp_path: Path) -> None:
    r = run(["serve"], base_env(tmp_path, GATEWAY_ENV="production"), tmp_path)
    assert r.returncode == 2 and "GATEWAY_REDIS_URL" in r.stderr
    r = run(["serve"], base_env(tmp_path, GATEWAY_ENV="production",
                                GATEWAY_REDIS_URL="redis://127.0.0.1:1/0",
                                GATEWAY_METRICS_TOKEN="a" * 40,
                                GATEWAY_ISSUER="https://gw.example",
                                GATEWAY_YKB_URL="https://ykb.example",
                                GATEWAY_ESSC_URL="https://essc.example",
                                GATEWAY_CERTLIB_URL="https://certlib.example",
                                GATEWAY_PSAM_GATE_KEYS=str(tmp_path / "psam.json"),
                                GATEWAY_DATABASE_URL="postgresql://127.0.0.1:1/gw"), tmp_path)
    assert r.returncode == 2 and "key" in r.stderr.lower()
    assert not (tmp_path / "keys" / "token").exists()


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read()


@pytest.mark.slow
def test_serve_two_workers_share_the_port_and_drain_on_sigterm(tmp_path: Path,
                                                               redis_url: str) -> None:
    port = free_port()
    env = base_env(tmp_path, GATEWAY_REDIS_URL=redis_url, GATEWAY_PORT=str(port),
                   GATEWAY_REDIS_PREFIX="servetest:", GATEWAY_SHUTDOWN_TIMEOUT_S="5")
    log = tmp_path / "serve.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen([PY, "-m", "gateway", "serve", "--workers", "2"], env=env,
                                cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while log.read_text().count("server.started") < 2:
            assert time.monotonic() < deadline, "workers did not come up"
            time.sleep(0.2)
        status, body = _get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200 and json.loads(body)["checks"]["redis"] == "ok"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = log.read_text()
    assert proc.returncode == 0
    assert out.count("server.started") == 2 and out.count("server.stopped") == 2
    for secret_word in ("client_secret", "PRIVATE KEY"):
        assert secret_word not in out


def test_identity_sync_is_idempotent(tmp_path: Path, redis_url: str) -> None:
    residents = Path(__file__).resolve().parents[2] / "gateway" / "data" / "residents.json"
    env = base_env(tmp_path, GATEWAY_REDIS_URL=redis_url, GATEWAY_REDIS_PREFIX="synctest:")
    assert run(["keys", "generate"], env, tmp_path).returncode == 0
    first = run(["identity", "sync", str(residents)], env, tmp_path)
    assert first.returncode == 0, first.stderr
    keys_after_first = sorted(redis.Redis.from_url(redis_url).keys("synctest:*"))
    second = run(["identity", "sync", str(residents)], env, tmp_path)
    assert second.returncode == 0 and second.stdout == first.stdout == \
        "identity: 6 persons upserted\n"
    assert "created=6" in first.stderr
    assert "created=0 linked=0 persons=6 updated=0" in second.stderr
    assert sorted(redis.Redis.from_url(redis_url).keys("synctest:*")) == keys_after_first
    dump = b"".join(redis.Redis.from_url(redis_url).dump(k) or b"" for k in keys_after_first)
    assert b"500106195803129997" not in dump  # the citizen ID is never stored in clear
    assert run(["identity", "sync", str(residents)], base_env(tmp_path),
               tmp_path).returncode == 2
