"""The records counters on /metrics are the whole server's (gateway/web/transactions.py
`RecordMetrics`): this process's own live values plus every other process's latest
`counters-<pid>.json` in the metrics directory — the workers drop records when the outbox is
full, the exporter process exports them, and whichever worker is scraped sums them."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from gateway.web.server_metrics import clear_snapshots, write_counters
from gateway.web.transactions import RecordMetrics


def _value(registry: CollectorRegistry, name: str) -> float:
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def test_counters_are_summed_over_every_process_of_the_server(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    here = RecordMetrics(registry, tmp_path)
    here.dropped()
    here.exported(5)
    # another worker dropped two; the exporter process exported 1,000 and failed once; an
    # exporter that died earlier had exported 300 (its file stays: counters never go back)
    write_counters({"transactions_exported": 0, "transactions_dropped": 2,
                    "transactions_export_failures": 0}, tmp_path, pid=os.getpid() + 1)
    write_counters({"transactions_exported": 1000, "transactions_dropped": 0,
                    "transactions_export_failures": 1}, tmp_path, pid=os.getpid() + 2)
    write_counters({"transactions_exported": 300, "transactions_dropped": 0,
                    "transactions_export_failures": 0}, tmp_path, pid=os.getpid() + 3)
    # this process's own file is stale: its live values count, not the file
    write_counters({"transactions_exported": 999_999, "transactions_dropped": 999_999,
                    "transactions_export_failures": 999_999}, tmp_path, pid=os.getpid())
    (tmp_path / "counters-7.json").write_text("{not json")  # a torn file is skipped
    assert _value(registry, "gateway_transactions_exported_total") == 1305
    assert _value(registry, "gateway_transactions_dropped_total") == 3
    assert _value(registry, "gateway_transactions_export_failures_total") == 1
    clear_snapshots(tmp_path)  # a new `gateway serve` starts from zero
    assert not list(tmp_path.glob("counters-*"))
    assert _value(registry, "gateway_transactions_exported_total") == 5


def test_without_a_metrics_directory_the_counters_are_this_process_alone() -> None:
    registry = CollectorRegistry()
    here = RecordMetrics(registry)
    here.exported(7)
    assert _value(registry, "gateway_transactions_exported_total") == 7
    assert here.counters() == {"transactions_exported": 7, "transactions_dropped": 0,
                               "transactions_export_failures": 0}
