"""The perf harness's tests reuse the web tests' real-app fixtures (real Redis, sandbox data)."""

from tests.web.conftest import gw, make_gateway  # noqa: F401 - pytest fixtures
