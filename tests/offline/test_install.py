"""The SDK installs on a gate without the server's dependencies: a clean venv, `pip install
sdk/`, no aiohttp, no redis, nothing of the server but the code format package - the same
files as the gateway's own gateway/codec."""

from __future__ import annotations

import filecmp
import subprocess
from pathlib import Path

import pytest

from tests.offline.conftest import _clean_env

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_clean_install_has_no_server_dependencies(sdk_venv: Path) -> None:
    py = str(sdk_venv / "bin" / "python")
    listed = subprocess.run([py, "-m", "pip", "list", "--format=freeze"], capture_output=True,
                            text=True, env=_clean_env(), check=True).stdout.lower()
    names = {line.split("==")[0] for line in listed.splitlines()}
    assert "cq-gateway-gate" in names
    assert not names & {"aiohttp", "redis", "hiredis", "uvloop", "structlog", "asyncpg",
                        "cq-one-code-gateway", "pyjwt", "prometheus-client"}
    probe = ("import importlib.util as u, gateway, gateway.codec, gateway_gate\n"
             "print(gateway.codec.__file__)\n"
             "print(u.find_spec('gateway.app') is None, u.find_spec('gateway.services') is None)\n"
             "print(u.find_spec('aiohttp') is None, u.find_spec('redis') is None)\n")
    out = subprocess.run([py, "-c", probe], capture_output=True, text=True, env=_clean_env(),
                         cwd="/", check=True).stdout.splitlines()
    assert out[1:] == ["True True", "True True"]
    installed = Path(out[0]).parent
    # the very files of the repository's codec, not a copy that could drift
    ours = sorted(p.name for p in (REPO / "gateway" / "codec").glob("*.py"))
    assert sorted(p.name for p in installed.glob("*.py")) == ours
    _, mismatch, errors = filecmp.cmpfiles(REPO / "gateway" / "codec", installed, ours,
                                           shallow=False)
    assert not mismatch and not errors
    r = subprocess.run([str(sdk_venv / "bin" / "gateway-gate"), "--help"], capture_output=True,
                       text=True, env=_clean_env(), cwd="/")
    assert r.returncode == 0 and "provision" in r.stdout and "upload" in r.stdout
    r = subprocess.run([str(sdk_venv / "bin" / "gateway-gate"), "--state", "/nonexistent",
                        "status"], capture_output=True, text=True, env=_clean_env(), cwd="/")
    assert r.returncode == 1 and '"error": "not_provisioned"' in r.stdout
