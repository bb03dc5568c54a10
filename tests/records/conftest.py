"""Helpers for the transaction-record tests: the real app (tests/web/conftest.py) on real
Redis (outbox + exporter) or in memory, records read back through the operator's export."""

from __future__ import annotations

import json
from typing import Any

from gateway.app import EXPORTER
from gateway.web import admin
from tests.codes.conftest import (  # noqa: F401 - fixtures and helpers for the tests
    METRO_GATE,
    METRO_GATE_2,
    Gateway,
    demo_person,
    extra_gate,
    gw,
    issue,
    make_gateway,
    resident_token,
    verify,
)

SECOND_GATE = "gate-metro-test-2"


async def second_gate(g: Gateway) -> str:
    """A token of a second metro gate (same sector), registered for the test."""
    return await extra_gate(g, SECOND_GATE, "metro", "cq-transit")


async def fresh_code(g: Gateway, person_id: str | None = None) -> str:
    r = await issue(g, resident_token(g, person_id or await demo_person(g)))
    return str((await r.json())["code"])


async def export_page(g: Gateway, after: str | None = None,
                      limit: int | None = None) -> tuple[int, list[dict[str, Any]], str | None]:
    params: dict[str, str] = {}
    if after is not None:
        params["after"] = after
    if limit is not None:
        params["limit"] = str(limit)
    r = await g.client.get("/admin/v1/transactions", params=params,
                           headers={"Authorization": f"Bearer {g.app[admin.ADMIN_TOKEN]}"})
    body = await r.text()
    if r.status != 200:
        return r.status, [], None
    assert r.content_type == "application/x-ndjson"
    return r.status, [json.loads(line) for line in body.splitlines()], \
        r.headers["X-Next-Cursor"]


async def all_records(g: Gateway) -> list[dict[str, Any]]:
    """Everything recorded so far: the outbox drained first (when there is one)."""
    exporter = g.app.get(EXPORTER)
    if exporter is not None:
        await exporter.drain()
    out: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        status, page, after = await export_page(g, after, 1000)
        assert status == 200
        if not page:
            return out
        out.extend(page)
