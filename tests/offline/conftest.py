"""Offline-gate tests: the real gateway (in-process on a real loopback port, real Redis) and
the gate SDK (gateway_gate, from sdk/) talking to it over real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.identity.conftest import Api, api  # noqa: F401
from tests.web.conftest import Gateway, GatewayFactory, gw, make_gateway  # noqa: F401

SDK_DIR = Path(__file__).resolve().parents[2] / "sdk"
if str(SDK_DIR) not in sys.path:  # the SDK is its own distribution (sdk/pyproject.toml)
    sys.path.insert(0, str(SDK_DIR))


@pytest.fixture(scope="session")
def sdk_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clean virtual environment with nothing but the SDK distribution installed from
    sdk/ (pip, as a gate vendor would): its python and its `gateway-gate` live in bin/."""
    venv = tmp_path_factory.mktemp("sdk-venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                   env=_clean_env())
    r = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                        str(SDK_DIR)], capture_output=True, text=True, env=_clean_env(),
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return venv


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH, no virtual environment of ours leaking into the gate's."""
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
