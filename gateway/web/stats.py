"""Statistics API (operators): usage, application depth, the half-yearly report.

`GET /admin/v1/stats/usage?from&to&group_by[&district][&scene]` — totals from the daily
roll-ups grouped by day, district, scene, venue and/or face; `GET /admin/v1/stats/depth?period`
— application depth per scene × district (73号 一级/二级/三级) with the target beside it;
`GET /admin/v1/stats/report?period=2026-H1&format=csv|json` — the half-yearly report (seed
001: 每半年报) as a file; an export, so it needs the auditor or admin role and is audited.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp import web

from gateway.errors import InvalidRequest, Unavailable
from gateway.services.ports import LiveCounters
from gateway.services.stats import (
    GROUP_KEYS,
    LIVE_MAX_MINUTES,
    Period,
    Statistics,
    live_view,
    parse_period,
)
from gateway.services.venues import DISTRICTS
from gateway.web.admin import CLIENT_STORE, NOW, VENUE_INDEX, VENUES, audit, operator

STATS: web.AppKey[Statistics] = web.AppKey("statistics")
#: brings the roll-ups up to date with the records before a question (the sandbox's
#: in-process follower; None where the exporter keeps them)
STATS_CATCH_UP: web.AppKey[Callable[[], Awaitable[Any]]] = web.AppKey("stats_catch_up")
#: the live view's counters (absent when GATEWAY_STATS_LIVE=false or records are off)
LIVE: web.AppKey[LiveCounters] = web.AppKey("stats_live")
MAX_RANGE_DAYS = 3660


def today(request: web.Request) -> date:
    return datetime.fromtimestamp(request.app[NOW](), UTC).date()


def _date(request: web.Request, name: str, default: date) -> date:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be an ISO date (YYYY-MM-DD)") from None


def _filters(request: web.Request) -> tuple[str | None, str | None]:
    district = request.query.get("district") or None
    scene = request.query.get("scene") or None
    if district is not None and district not in DISTRICTS:
        raise InvalidRequest("district must be one of Chongqing's 38 区县 codes")
    if scene is not None and scene not in request.app[STATS].scenes:
        raise InvalidRequest("scene is not in the catalogue")
    return district, scene


async def _catch_up(request: web.Request) -> None:
    hook = request.app.get(STATS_CATCH_UP)
    if hook is not None:
        await hook()


async def usage_data(request: web.Request) -> dict[str, Any]:
    t = today(request)
    first = _date(request, "from", t - timedelta(days=29))
    last = _date(request, "to", t)
    if last < first or (last - first).days > MAX_RANGE_DAYS:
        raise InvalidRequest("from must not be after to, and the range at most ten years")
    raw_group = request.query.get("group_by", "day")
    group_by = [g for g in raw_group.split(",") if g]
    if not group_by or any(g not in GROUP_KEYS for g in group_by) or \
            len(set(group_by)) != len(group_by):
        raise InvalidRequest(f"group_by is a comma list of {', '.join(GROUP_KEYS)}")
    district, scene = _filters(request)
    await _catch_up(request)
    return await request.app[STATS].usage(first, last, group_by, district, scene)


async def depth_data(request: web.Request, period_text: str | None = None) -> dict[str, Any]:
    try:
        period: Period = parse_period(period_text or request.query.get("period", "30d"),
                                      today(request))
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    district, scene = _filters(request)
    await _catch_up(request)
    registry = request.app[VENUES]
    clients = await request.app[CLIENT_STORE].list()
    active = {c.client_id for c in clients if c.kind == "gate" and not c.disabled}
    return await request.app[STATS].depth(period, await registry.list(),
                                          await registry.store.gate_venues(), active,
                                          district, scene)


async def live_data(request: web.Request) -> dict[str, Any] | None:
    """Today (UTC) and the last `minutes` (1–120, default 15) from the live counters; None
    when they are switched off."""
    counters = request.app.get(LIVE)
    raw = request.query.get("minutes", "15")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= LIVE_MAX_MINUTES:
        raise InvalidRequest(f"minutes is an integer from 1 to {LIVE_MAX_MINUTES}")
    district, scene = _filters(request)
    if counters is None:
        return None
    counts = await counters.read(request.app[NOW](), int(raw))
    return live_view(counts, request.app[VENUE_INDEX].gates, district, scene)


async def live(request: web.Request) -> web.Response:
    await operator(request, "read")
    data = await live_data(request)
    if data is None:
        raise Unavailable("The live view is switched off (GATEWAY_STATS_LIVE=false)")
    return _json(data)


def _json(data: Any) -> web.Response:
    return web.json_response(data, dumps=lambda o: json.dumps(o, ensure_ascii=False),
                             headers={"Cache-Control": "no-store"})


async def usage(request: web.Request) -> web.Response:
    await operator(request, "read")
    return _json(await usage_data(request))


async def depth(request: web.Request) -> web.Response:
    await operator(request, "read")
    return _json(await depth_data(request))


REPORT_COLUMNS = ("period", "district", "district_name", "scene", "scene_name",
                  "active_venues", "verified_venues", "share", "level", "target",
                  "scans", "allows", "denies", "distinct_residents")


async def report(request: web.Request) -> web.StreamResponse:
    """The half-yearly report: depth and usage per district × scene for `period`."""
    op = await operator(request, "export")
    period_text = request.query.get("period")
    if not period_text:
        t = today(request)
        period_text = f"{t.year}-H{1 if t.month <= 6 else 2}"
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise InvalidRequest("format is json or csv")
    deep = await depth_data(request, period_text)
    first, last = date.fromisoformat(deep["period"]["from"]), date.fromisoformat(
        deep["period"]["to"])
    district, scene = _filters(request)
    use = await request.app[STATS].usage(first, last, ["district", "scene"], district, scene)
    by_cell = {(g["district"], g["scene"]): g for g in use["groups"]}
    rows = []
    for cell in deep["cells"]:
        u = by_cell.get((cell["district"], cell["scene"]), {})
        rows.append({"period": deep["period"]["label"], **{k: cell.get(k) for k in (
            "district", "district_name", "scene", "scene_name", "active_venues",
            "verified_venues", "share", "level", "target")},
            "scans": u.get("scans", 0), "allows": u.get("allows", 0),
            "denies": u.get("denies", 0), "distinct_residents": u.get("distinct_residents", 0)})
    await audit(request, op, "stats.exported", f"report:{deep['period']['label']}",
                format=fmt, rows=len(rows))
    name = f"depth-report-{deep['period']['label']}.{fmt}".replace("/", "_")
    headers = {"Cache-Control": "no-store",
               "Content-Disposition": f'attachment; filename="{name}"'}
    if fmt == "json":
        body = {"period": deep["period"], "levels": deep["levels"], "rows": rows,
                "districts": deep["districts"], "scenes": deep["scenes"]}
        return web.Response(text=json.dumps(body, ensure_ascii=False),
                            content_type="application/json", headers=headers)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=REPORT_COLUMNS, lineterminator="\r\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r[k] is None else r[k]) for k in REPORT_COLUMNS})
    # a BOM so spreadsheet programs read the UTF-8 (区县 names) as such
    return web.Response(body=("\ufeff" + buf.getvalue()).encode("utf-8"),
                        content_type="text/csv", charset="utf-8", headers=headers)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/v1/stats/usage", usage)
    app.router.add_get("/admin/v1/stats/depth", depth)
    app.router.add_get("/admin/v1/stats/report", report)
    app.router.add_get("/admin/v1/stats/live", live)
