"""Operator-view tests: the real app (tests/web/conftest.py) on real Redis, named operators."""

from __future__ import annotations

from typing import Any

from gateway.web import admin
from tests.web.conftest import Gateway, gw, make_gateway  # noqa: F401 - fixtures


def bootstrap(g: Gateway) -> dict[str, str]:
    token = (g.settings.keys_dir / "sandbox" / "admin-token").read_text().strip()
    return {"Authorization": f"Bearer {token}"}


async def new_operator(g: Gateway, name: str, role: str) -> dict[str, str]:
    """An operator as `gateway operators create` makes one, on this app's store."""
    _, token = await g.app[admin.OPERATORS].create(name, role)
    return {"Authorization": f"Bearer {token}"}


async def scene(g: Gateway, scene_id: str, headers: dict[str, str]) -> tuple[Any, str]:
    r = await g.client.get(f"/admin/v1/scenes/{scene_id}", headers=headers)
    assert r.status == 200, await r.text()
    return await r.json(), r.headers["ETag"]
