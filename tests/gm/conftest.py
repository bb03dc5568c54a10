"""The 国密 suite's tests use the real app (tests/web/conftest.py) on real Redis, and the gate
SDK from sdk/ (its own distribution, imported from the checkout as tests/offline does)."""

import sys
from pathlib import Path

from tests.web.conftest import gw, make_gateway  # noqa: F401 - fixtures

SDK_DIR = Path(__file__).resolve().parents[2] / "sdk"
if str(SDK_DIR) not in sys.path:
    sys.path.insert(0, str(SDK_DIR))
