"""/metrics for the whole server: one scrape sums every worker (docs/metrics.md).

Each worker keeps its counters as plain integers (gateway/web/http.py `Metrics`: nothing but
a dict increment on the gate path) and writes them, every `metrics_flush_ms`, as one JSON
snapshot `worker-<pid>.json` in the run's metrics directory (atomic rename). The worker that
takes a scrape sums its own live counters with the other workers' latest snapshots, so a
scrape is at most one flush interval behind for the others and exact for itself. Files of
workers that died stay: counters never go backwards.

This is prometheus-client's multiprocess idea without its per-increment mmap write and lock
(~10 µs per request on the gate path with its Counter/Histogram, measured for issue 7).
`/metrics?worker=self` answers this worker alone (what issue 7's per-worker tests read).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.errors import Unauthorized
from gateway.tasks import background
from gateway.web.http import METRICS, Metrics, families, merge_states

log = structlog.get_logger("gateway.metrics")

SERVER_REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("server_metrics_registry")
METRICS_TOKEN: web.AppKey[str] = web.AppKey("metrics_token")
SNAPSHOT_PREFIX = "worker-"
#: counters kept by any process of the server, the exporter process included (records
#: exported, dropped, export failures): one `counters-<pid>.json` per process, summed per scrape
COUNTERS_PREFIX = "counters-"


def _write_json(directory: Path, prefix: str, pid: int | None, value: Any) -> None:
    """`<prefix><pid>.json`, replaced atomically (a reader sees the old file or the new)."""
    path = directory / f"{prefix}{pid or os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, separators=(",", ":")), "utf-8")
    os.replace(tmp, path)


def _read_others(directory: Path, prefix: str, own_pid: int) -> list[Any]:
    """Every other process's latest `<prefix><pid>.json` (a file being replaced is read whole
    or skipped)."""
    out = []
    for p in directory.glob(f"{prefix}*.json"):
        if p.name == f"{prefix}{own_pid}.json":
            continue
        try:
            out.append(json.loads(p.read_text("utf-8")))
        except (OSError, ValueError):
            continue
    return out


def write_snapshot(metrics: Metrics, directory: Path, pid: int | None = None) -> None:
    _write_json(directory, SNAPSHOT_PREFIX, pid, metrics.state())


def read_peers(directory: Path, own_pid: int) -> list[dict[str, Any]]:
    """The other workers' latest snapshots."""
    return _read_others(directory, SNAPSHOT_PREFIX, own_pid)


def write_counters(counters: dict[str, int], directory: Path, pid: int | None = None) -> None:
    _write_json(directory, COUNTERS_PREFIX, pid, counters)


def peer_counters(directory: Path, own_pid: int) -> dict[str, int]:
    """The other processes' latest counters, summed name by name (a process that died keeps
    its file: counters never go backwards)."""
    out: dict[str, int] = {}
    for got in _read_others(directory, COUNTERS_PREFIX, own_pid):
        if isinstance(got, dict):
            for k, v in got.items():
                if isinstance(v, int):
                    out[k] = out.get(k, 0) + v
    return out


def clear_snapshots(directory: Path) -> None:
    """A new run starts from zero (`gateway serve`, before forking the workers)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for prefix in (SNAPSHOT_PREFIX, COUNTERS_PREFIX):
        for p in directory.glob(f"{prefix}*"):
            with contextlib.suppress(OSError):
                p.unlink()


class ServerCollector(Collector):
    """The request and decision counters summed over every worker, then the answering
    worker's own other families (store epoch, records exporter, worker info: each kept by
    the worker that does the work), so one scrape still shows every family."""

    def __init__(self, metrics: Metrics, directory: Path | None,
                 pid: Callable[[], int] = os.getpid,
                 worker: CollectorRegistry | None = None) -> None:
        self._metrics = metrics
        self._dir = directory
        self._pid = pid
        self._worker = worker

    def collect(self) -> Iterator[Metric]:
        peers = read_peers(self._dir, self._pid()) if self._dir is not None else []
        summed = list(families(merge_states([self._metrics.state(), *peers]),
                               self._metrics.district_of))
        yield from summed
        workers = GaugeMetricFamily("gateway_server_workers",
                                    "Workers whose counters this answer sums")
        workers.add_metric([], 1 + len(peers))
        yield workers
        if self._worker is not None:
            names = {m.name for m in summed} | {"gateway_server_workers"}
            for family in self._worker.collect():
                if family.name not in names:
                    yield family


def install(app: web.Application, directory: Path | None, flush_ms: int,
            token: str | None, worker: CollectorRegistry | None = None,
            counters: Callable[[], dict[str, int]] | None = None,
            serves_http: bool = True) -> None:
    """Register the whole-server registry and the snapshot writer (a cleanup_ctx);
    `worker` is this process's own registry (its families beyond the summed ones);
    `counters` this process's share of the server-wide counters (`counters-<pid>.json`);
    a process that answers no HTTP (the exporter process) writes no request snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServerCollector(app[METRICS], directory, worker=worker))
    app[SERVER_REGISTRY] = registry
    if token:
        app[METRICS_TOKEN] = token
    if directory is None:
        return

    async def writer(app: web.Application) -> AsyncIterator[None]:
        metrics = app[METRICS]
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

        def flush() -> None:
            if serves_http:
                write_snapshot(metrics, directory)
            if counters is not None:
                write_counters(counters(), directory)

        async def loop() -> None:
            while True:
                await asyncio.sleep(flush_ms / 1000)
                try:
                    flush()
                except OSError as exc:
                    log.warning("metrics.snapshot_failed", error=type(exc).__name__)

        try:
            async with background(loop()):
                yield
        finally:
            with contextlib.suppress(OSError):
                flush()  # the last counts of a draining worker

    app.cleanup_ctx.append(writer)


def check_token(request: web.Request) -> None:
    """/metrics with GATEWAY_METRICS_TOKEN set: `Authorization: Bearer <token>` or 401."""
    expected = request.app.get(METRICS_TOKEN)
    if not expected:
        return
    header = request.headers.get("Authorization", "")
    presented = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise Unauthorized("The metrics token is required",
                           headers={"WWW-Authenticate": 'Bearer realm="gateway-metrics"'})
