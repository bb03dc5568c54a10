"""Route parity: every route the real app registers is in docs/openapi.yaml and every
operation there is registered. This is how the spec stays true.

HEAD (added by aiohttp beside every GET) and the sandbox upstream platform sub-apps under
/sandbox/upstreams/ (they play 渝快办/e-SSC/证照库, they are not this gateway's API) are left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.web_urldispatcher import PrefixedSubAppResource

from gateway.app import build_app
from gateway.settings import Settings
from tests.api.conftest import HTTP_METHODS

UPSTREAM_PREFIX = "/sandbox/upstreams/"


def registered_routes(app: web.Application, prefix: str = "") -> set[tuple[str, str]]:
    routes: set[tuple[str, str]] = set()
    for resource in app.router.resources():
        if isinstance(resource, PrefixedSubAppResource):
            sub_prefix = prefix + resource.canonical
            if (sub_prefix + "/").startswith(UPSTREAM_PREFIX):
                continue
            routes |= registered_routes(resource._app, sub_prefix)
            continue
        for route in resource:
            method = route.method.upper()
            assert method != "*", f"{resource.canonical}: a catch-all method route"
            if method == "HEAD":
                continue
            routes.add((method, prefix + resource.canonical))
    return routes


def documented_routes(spec: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), path) for path, item in spec["paths"].items()
            for m in item if m in HTTP_METHODS and m != "head"}


def test_routes_and_spec_agree(tmp_path: Path, spec: dict[str, Any]) -> None:
    """The sandbox app as `make_gateway` builds it (every route is added in `build_app`;
    aiohttp freezes the router before start-up, so nothing can be added later)."""
    app = build_app(Settings(env="sandbox", keys_dir=tmp_path / "keys"))
    registered = registered_routes(app)
    documented = documented_routes(spec)
    assert len(registered) > 10, "the app registers (almost) no route?"
    undocumented = sorted(registered - documented)
    unregistered = sorted(documented - registered)
    assert not undocumented and not unregistered, (
        f"registered but not in docs/openapi.yaml: {undocumented}; "
        f"in docs/openapi.yaml but not registered: {unregistered}")


def test_production_registers_no_sandbox_route(tmp_path: Path) -> None:
    """CONTRACT "Sandbox": in production the sandbox endpoints answer 404."""
    app = build_app(Settings(env="production", keys_dir=tmp_path / "keys",
                             redis_url="redis://127.0.0.1:1/0"))
    assert not [r for r in registered_routes(app) if r[1].startswith("/sandbox/")]
