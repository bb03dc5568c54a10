"""Done-when of issue 14: the export lists every scan exactly once, also after PostgreSQL was
stopped and restarted during the run — a real PostgreSQL server this test owns, the real app
on real Redis with its outbox and background exporter."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from gateway.app import RECORDS
from gateway.settings import config_from_env
from tests.postgres_server import PostgresServer
from tests.records.conftest import (
    METRO_GATE,
    Gateway,
    demo_person,
    export_page,
    issue,
    resident_token,
    verify,
)


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    # durable: the exporter deletes from the outbox what PostgreSQL said it committed; with
    # synchronous_commit off a crash forgets the last commits (the test saw exactly that)
    server = PostgresServer(durable=True).start()
    try:
        yield server
    finally:
        server.remove()


async def outbox_empty(g: Gateway, timeout_s: float = 30.0) -> None:
    records = g.app[RECORDS]
    assert records is not None and records.outbox is not None
    deadline = time.monotonic() + timeout_s
    while await records.outbox.length() > 0:
        assert time.monotonic() < deadline, "the exporter did not drain the outbox"
        await asyncio.sleep(0.1)


async def exported(g: Gateway) -> list[str]:
    ids: list[str] = []
    after: str | None = None
    while True:
        status, page, after = await export_page(g, after, 500)
        assert status == 200
        if not page:
            return ids
        ids.extend(r["request_id"] for r in page)


@pytest.mark.slow
async def test_every_scan_is_exported_once_across_a_postgres_restart(
        make_gateway, own_postgres: PostgresServer,  # type: ignore[no-untyped-def]
        monkeypatch: pytest.MonkeyPatch) -> None:
    # one resident issues all the codes of the run: lift its issuance limit out of the way
    limits = config_from_env({"GATEWAY_RATELIMIT_APP_ISSUE": "1000/1/1000",
                              "GATEWAY_RATELIMIT_GATE": "1000/1/1000"})
    g = await make_gateway(database_url=own_postgres.url, rate_limits=limits)
    gate = await g.client_token(METRO_GATE)
    token = resident_token(g, await demo_person(g))

    async def scans(prefix: str, n: int) -> list[str]:
        sent = []
        for i in range(n):
            r = await issue(g, token)
            code = str((await r.json())["code"])
            rid = f"{prefix}-{i}"
            status, d = await verify(g, gate, code, "metro", rid)
            assert (status, d["decision"]) == (200, "allow")  # gates never wait on PostgreSQL
            sent.append(rid)
            if i % 10 == 0:  # and a deny now and then: every decision is a record
                status, d = await verify(g, gate, code, "metro", f"{rid}-replay")
                assert d["reason"] == "replayed"
                sent.append(f"{rid}-replay")
        return sent

    sent = await scans("before", 40)
    await outbox_empty(g)
    own_postgres.stop("immediate")  # a crash: no checkpoint, recovery at the next start
    t0 = time.monotonic()
    sent += await scans("during", 60)
    assert time.monotonic() - t0 < 30
    status, _, _ = await export_page(g)
    assert status == 503  # the export says so; the gates did not notice
    await asyncio.sleep(1.0)  # the exporter fails and backs off meanwhile
    records = g.app[RECORDS]
    assert records is not None and records.outbox is not None
    assert await records.outbox.length() >= 60
    await asyncio.to_thread(own_postgres.start)
    sent += await scans("after", 20)
    await outbox_empty(g)
    ids = await exported(g)
    counts = Counter(ids)
    assert sorted(counts) == sorted(sent)
    assert set(counts.values()) == {1}
