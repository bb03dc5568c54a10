"""The 国密 suite's tests use the real app (tests/web/conftest.py) on real Redis."""

from tests.web.conftest import gw, make_gateway  # noqa: F401 - fixtures
