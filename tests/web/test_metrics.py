"""/metrics: the hot-path counters (gateway/web/http.py `Metrics`) in Prometheus text format,
read back with prometheus-client's own parser."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.web.http import Metrics


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_requests_latency_and_decisions_are_exported() -> None:
    reg = CollectorRegistry()
    m = Metrics(reg)
    for seconds in (0.0004, 0.001, 0.003, 0.2, 7.0):
        m.observe("/v1/codes/verify", "POST", 200, seconds)
    m.observe("/v1/codes/verify", "POST", 429, 0.0001)
    m.decision("ykm", "allow", "ok")
    m.decision("ykm", "allow", "ok")
    m.decision("none", "deny", "malformed")
    got = _samples(reg)
    route = ("route", "/v1/codes/verify")
    assert got[("gateway_http_requests_total",
                (("method", "POST"), route, ("status", "200")))] == 5
    assert got[("gateway_http_requests_total",
                (("method", "POST"), route, ("status", "429")))] == 1
    # le is inclusive; one histogram per route, whatever the status
    assert got[("gateway_http_request_seconds_bucket", (("le", "0.001"), route))] == 3
    assert got[("gateway_http_request_seconds_bucket", (("le", "0.005"), route))] == 4
    assert got[("gateway_http_request_seconds_bucket", (("le", "2.5"), route))] == 5
    assert got[("gateway_http_request_seconds_bucket", (("le", "+Inf"), route))] == 6
    assert got[("gateway_http_request_seconds_count", (route,))] == 6
    assert abs(got[("gateway_http_request_seconds_sum", (route,))] - 7.2045) < 1e-9
    assert got[("gateway_verify_decisions_total",
                (("decision", "allow"), ("face", "ykm"), ("reason", "ok")))] == 2
    assert got[("gateway_verify_decisions_total",
                (("decision", "deny"), ("face", "none"), ("reason", "malformed")))] == 1


def test_unknown_methods_share_one_label() -> None:
    reg = CollectorRegistry()
    m = Metrics(reg)
    for i in range(50):
        m.observe("unmatched", f"X{i}", 405, 0.001)
    got = _samples(reg)
    methods = {dict(k[1]).get("method") for k in got if k[0] == "gateway_http_requests_total"}
    assert methods == {"other"}
    assert got[("gateway_http_requests_total",
                (("method", "other"), ("route", "unmatched"), ("status", "405")))] == 50


async def test_the_worker_parameter_takes_self_only(tmp_path: Path) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from gateway.app import build_app
    from gateway.settings import Settings

    app = build_app(Settings(env="sandbox", keys_dir=tmp_path / "keys"))
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/metrics?worker=self")).status == 200
        for bad in ("worker=x", "worker=self&worker=self"):
            r = await client.get(f"/metrics?{bad}")
            assert r.status == 400 and (await r.json())["code"] == "invalid_request"
