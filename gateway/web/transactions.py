"""Transaction records for operators (CONTRACT "Offline gates and transaction records"):
``GET /admin/v1/transactions?after=CURSOR&limit=N`` answers NDJSON, one record a line, each
with its own ``cursor``; the ``X-Next-Cursor`` header (and a ``Link: rel="next"``) says where
the next page starts — the same cursor when nothing new has arrived. Also the records'
metrics (outbox length and bound, exported, dropped, export failures).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from gateway.errors import InvalidRequest
from gateway.services.records import RecordStore
from gateway.web import admin
from gateway.web.server_metrics import peer_counters

__all__ = ["RECORD_METRICS", "RECORD_STORE", "RecordMetrics", "add_routes"]

RECORD_STORE: Final = web.AppKey("record_store", RecordStore)
DEFAULT_LIMIT: Final = 1000
MAX_LIMIT: Final = 10_000


class RecordMetrics(Collector):
    """Plain integers bumped by the outbox and the exporter, exported at scrape time. With a
    metrics directory (`gateway serve --workers N`) the counters are the whole server's: this
    process's own plus every other process's latest `counters-<pid>.json` (the workers drop
    records when the outbox is full; the exporter process exports them)."""

    def __init__(self, registry: CollectorRegistry | None = None,
                 directory: Path | None = None) -> None:
        self.exported_total = 0
        self.dropped_total = 0
        self.failures_total = 0
        self.length = 0
        self.bound = 0
        self._dir = directory
        if registry is not None:
            registry.register(self)

    def counters(self) -> dict[str, int]:
        """This process's share, as written to the metrics directory."""
        return {"transactions_exported": self.exported_total,
                "transactions_dropped": self.dropped_total,
                "transactions_export_failures": self.failures_total}

    def exported(self, n: int) -> None:
        self.exported_total += n

    def dropped(self) -> None:
        self.dropped_total += 1

    def export_failed(self) -> None:
        self.failures_total += 1

    def outbox_length(self, n: int, bound: int) -> None:
        self.length, self.bound = n, bound

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        total = self.counters()
        if self._dir is not None:
            for k, v in peer_counters(self._dir, os.getpid()).items():
                if k in total:
                    total[k] += v
        yield GaugeMetricFamily("gateway_transactions_outbox_length",
                                "Records waiting in the outbox (as last seen by the exporter)",
                                value=self.length)
        yield GaugeMetricFamily("gateway_transactions_outbox_bound",
                                "Records the outbox holds at most", value=self.bound)
        yield CounterMetricFamily("gateway_transactions_exported",
                                  "Records written to the record store (every process)",
                                  value=total["transactions_exported"])
        yield CounterMetricFamily("gateway_transactions_dropped",
                                  "Decisions whose record was dropped: the outbox was full",
                                  value=total["transactions_dropped"])
        yield CounterMetricFamily("gateway_transactions_export_failures",
                                  "Exporter steps that failed (record store or outbox down)",
                                  value=total["transactions_export_failures"])


RECORD_METRICS: Final = web.AppKey("record_metrics", RecordMetrics)


async def list_transactions(request: web.Request) -> web.Response:
    op = await admin.operator(request, "export")  # an export: auditor or admin, audited
    store = request.app[RECORD_STORE]
    after = request.query.get("after")
    if after is not None and not store.valid_cursor(after):
        raise InvalidRequest("after must be a cursor from an earlier answer")
    raw_limit = request.query.get("limit")
    limit = DEFAULT_LIMIT
    if raw_limit is not None:
        if not (raw_limit.isascii() and raw_limit.isdigit()) or \
                not 1 <= int(raw_limit) <= MAX_LIMIT:
            raise InvalidRequest(f"limit must be an integer from 1 to {MAX_LIMIT}")
        limit = int(raw_limit)
    page = await store.page(after, limit)
    await admin.audit(request, op, "transactions.exported", "transactions",
                      after=after, records=len(page.records))
    body = "".join(json.dumps(r.to_json(c), ensure_ascii=False) + "\n"
                   for c, r in page.records)
    nxt = f"/admin/v1/transactions?after={page.next_cursor}&limit={limit}"
    return web.Response(body=body.encode(), content_type="application/x-ndjson", headers={
        "X-Next-Cursor": page.next_cursor, "Link": f'<{nxt}>; rel="next"',
        "Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/v1/transactions", list_transactions)
