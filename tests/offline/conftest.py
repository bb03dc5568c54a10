"""Offline-gate tests: the real gateway (in-process on a real loopback port, real Redis) and
the gate SDK (gateway_gate, from sdk/) talking to it over real HTTP."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.identity.conftest import Api, api  # noqa: F401
from tests.web.conftest import Gateway, GatewayFactory, gw, make_gateway  # noqa: F401

SDK_DIR = Path(__file__).resolve().parents[2] / "sdk"
if str(SDK_DIR) not in sys.path:  # the SDK is its own distribution (sdk/pyproject.toml)
    sys.path.insert(0, str(SDK_DIR))
