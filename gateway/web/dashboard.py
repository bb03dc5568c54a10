"""The operators' dashboard, `GET /admin/dashboard` (HTML, server-rendered, no script).

Sign-in with an operator token (`POST /admin/dashboard/session`) sets an HttpOnly,
SameSite=Strict session cookie (Secure over https) signed by the gateway; every page re-reads
the operator, so disabling one ends its sessions. Charts are inline SVG drawn here — no CDN, no
JavaScript; the Content-Security-Policy allows nothing but this page's own nonce'd style.
Filters (period, district, scene) are a plain GET form.
"""

from __future__ import annotations

import html
import secrets
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

from aiohttp import web

from gateway.errors import GatewayError, InvalidRequest, Unauthorized, UnsupportedMediaType
from gateway.services.operators import Operator
from gateway.services.venues import DISTRICTS
from gateway.web.admin import ADMIN_SCENES, OPERATORS, operator
from gateway.web.http import read_form
from gateway.web.stats import depth_data, live_data, usage_data

SESSION_KEY: web.AppKey[bytes] = web.AppKey("dashboard_session_key")
COOKIE = "gw_admin"
SESSION_TTL_S = 8 * 3600
LEVEL_COLOURS = {"none": "#d9d9d9", "一级": "#fde68a", "二级": "#86efac", "三级": "#16a34a"}
FORM_NAMES = {"ykm": "渝快码", "essc": "电子社保卡 code", "ssc_card": "实体卡 tap"}
PERIODS = (("7d", "last 7 days"), ("30d", "last 30 days"), ("90d", "last 90 days"),
           ("today", "today"))


def _csp(nonce: str) -> str:
    return (f"default-src 'none'; style-src 'nonce-{nonce}'; img-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def _page(title: str, body: str, status: int = 200) -> web.Response:
    nonce = secrets.token_urlsafe(16)
    doc = f"""<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style nonce="{nonce}">{_STYLE}</style></head>
<body>{body}</body></html>"""
    return web.Response(text=doc, status=status, content_type="text/html",
                        headers={"Content-Security-Policy": _csp(nonce),
                                 "Cache-Control": "no-store"})


_STYLE = """
body{font-family:system-ui,'Noto Sans CJK SC',sans-serif;margin:0;color:#1f2937;background:#f8fafc}
header{background:#0f4c81;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1rem;align-items:center}
header h1{font-size:1.1rem;margin:0;flex:1}
main{padding:1rem 1.2rem;display:grid;gap:1rem;
 grid-template-columns:repeat(auto-fit,minmax(460px,1fr))}
section{background:#fff;border:1px solid #e5e7eb;border-radius:6px;padding:.8rem}
section h2{font-size:1rem;margin:.1rem 0 .6rem}
table{border-collapse:collapse;width:100%;font-size:.85rem}
td,th{border-bottom:1px solid #eee;padding:.25rem .4rem;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.lvl{display:inline-block;min-width:3.2em;text-align:center;border-radius:3px;padding:0 .3em}
.lvl-none{background:#d9d9d9}.lvl-1{background:#fde68a}.lvl-2{background:#86efac}
.lvl-3{background:#16a34a;color:#fff}
form.filters{grid-column:1/-1;display:flex;gap:.8rem;flex-wrap:wrap;align-items:end}
label{font-size:.8rem;display:flex;flex-direction:column}
.signin{max-width:28rem;margin:4rem auto;background:#fff;padding:1.5rem;border:1px solid #ddd}
.error{color:#b91c1c}.kpi{font-size:1.6rem;font-weight:600}.muted{color:#6b7280;font-size:.8rem}
"""


def _lvl_class(level: str) -> str:
    return {"一级": "lvl-1", "二级": "lvl-2", "三级": "lvl-3"}.get(level, "lvl-none")


def sign_in_page(message: str | None = None, status: int = 200) -> web.Response:
    err = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    body = f"""<div class="signin"><h1>渝快码 ⇄ 电子社保卡 · 运营看板</h1>
<p>Sign in with your operator token (<code>gateway operators create</code>).</p>{err}
<form method="post" action="/admin/dashboard/session">
<label>Operator token <input type="password" name="token" autocomplete="off" required
 size="50"></label><p><button type="submit">Sign in</button></p></form></div>"""
    return _page("Sign in · gateway dashboard", body, status)


async def _session_operator(request: web.Request) -> Operator | None:
    cookie = request.cookies.get(COOKIE)
    if not cookie or len(cookie) > 1024:
        return None
    try:
        op = await request.app[OPERATORS].from_session(cookie, request.app[SESSION_KEY])
    except (Unauthorized, ValueError, KeyError, TypeError):
        return None
    return op if op.may("read") else None


async def sign_in(request: web.Request) -> web.Response:
    if request.content_type != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("Send the sign-in form as application/x-www-form-urlencoded")
    form = await read_form(request, 4096)
    if set(form) - {"token"}:
        raise InvalidRequest("The sign-in form takes one field: token")
    token = form.get("token", "").strip()
    if not token:
        raise InvalidRequest("token is required")
    try:
        op = await operator(request, "read", token=token)
    except GatewayError:
        return sign_in_page("That is not an active operator's token.")
    cookie = request.app[OPERATORS].open_session(op, token, request.app[SESSION_KEY],
                                                 SESSION_TTL_S)
    resp = web.Response(status=303, headers={"Location": "/admin/dashboard"})
    resp.set_cookie(COOKIE, cookie, max_age=SESSION_TTL_S, path="/admin/dashboard",
                    httponly=True, samesite="Strict", secure=request.secure)
    resp.headers["Cache-Control"] = "no-store"
    return resp


async def sign_out(request: web.Request) -> web.Response:
    resp = web.Response(status=303, headers={"Location": "/admin/dashboard"})
    resp.del_cookie(COOKIE, path="/admin/dashboard")
    return resp


# ------------------------------------------------------------------ charts (inline SVG)
def usage_chart(groups: Sequence[dict[str, Any]], width: int = 640, height: int = 220) -> str:
    """Bars of scans per day, allows in the darker part; axis labels at the ends."""
    if not groups:
        return '<p class="muted" id="usage-empty">No verifications in this period.</p>'
    top = max(g["scans"] for g in groups) or 1
    n = len(groups)
    left, bottom = 40, 30
    plot_w, plot_h = width - left - 10, height - bottom - 10
    bar = plot_w / n
    parts = [f'<svg id="usage-chart" role="img" aria-label="verifications per day" '
             f'viewBox="0 0 {width} {height}" width="100%" xmlns="http://www.w3.org/2000/svg">',
             f'<line x1="{left}" y1="{10 + plot_h}" x2="{width - 10}" y2="{10 + plot_h}" '
             f'stroke="#9ca3af"/>',
             f'<text x="{left - 4}" y="16" font-size="10" text-anchor="end">{top}</text>',
             f'<text x="{left - 4}" y="{10 + plot_h}" font-size="10" text-anchor="end">0</text>']
    for i, g in enumerate(groups):
        x = left + i * bar
        h_all = plot_h * g["scans"] / top
        h_ok = plot_h * g["allows"] / top
        parts.append(f'<rect class="bar" data-day="{g["day"]}" data-scans="{g["scans"]}" '
                     f'data-allows="{g["allows"]}" x="{x + 1:.1f}" y="{10 + plot_h - h_all:.1f}" '
                     f'width="{max(bar - 2, 1):.1f}" height="{h_all:.1f}" fill="#fca5a5">'
                     f'<title>{g["day"]}: {g["scans"]} scans, {g["allows"]} allowed</title></rect>')
        parts.append(f'<rect x="{x + 1:.1f}" y="{10 + plot_h - h_ok:.1f}" '
                     f'width="{max(bar - 2, 1):.1f}" height="{h_ok:.1f}" fill="#0f4c81"/>')
    parts.append(f'<text x="{left}" y="{height - 8}" font-size="10">{groups[0]["day"]}</text>')
    parts.append(f'<text x="{width - 10}" y="{height - 8}" font-size="10" text-anchor="end">'
                 f'{groups[-1]["day"]}</text>')
    parts.append(f'<rect x="{width - 160}" y="{4}" width="10" height="10" fill="#0f4c81"/>'
                 )
    parts.append(f'<text x="{width - 146}" y="13" font-size="10">allowed</text>')
    parts.append(f'<rect x="{width - 96}" y="4" width="10" height="10" fill="#fca5a5"/>')
    parts.append(f'<text x="{width - 82}" y="13" font-size="10">denied</text>')
    parts.append("</svg>")
    return "".join(parts)


def depth_bars(rows: Sequence[dict[str, Any]], key: str, label_key: str, svg_id: str) -> str:
    """Horizontal bars of depth share, coloured by level, the 50/70/90 % marks drawn."""
    if not rows:
        return f'<p class="muted" id="{svg_id}-empty">No active venues of identity scenes.</p>'
    width, row_h, left = 560, 18, 150
    height = row_h * len(rows) + 24
    plot = width - left - 50
    parts = [f'<svg id="{svg_id}" role="img" viewBox="0 0 {width} {height}" width="100%" '
             f'xmlns="http://www.w3.org/2000/svg">']
    for mark in (0.5, 0.7, 0.9):
        x = left + plot * mark
        parts.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 20}" '
                     f'stroke="#9ca3af" stroke-dasharray="3,3"/>'
                     f'<text x="{x:.1f}" y="{height - 6}" font-size="9" text-anchor="middle">'
                     f'{int(mark * 100)}%</text>')
    for i, r in enumerate(rows):
        y = i * row_h + 2
        share = r["share"] or 0.0
        colour = LEVEL_COLOURS.get(r["level"], LEVEL_COLOURS["none"])
        parts.append(f'<text x="{left - 6}" y="{y + 12}" font-size="11" text-anchor="end">'
                     f'{html.escape(str(r[label_key]))}</text>'
                     f'<rect class="depth" data-{key}="{html.escape(str(r[key]))}" '
                     f'data-level="{r["level"]}" data-share="{share}" x="{left}" y="{y}" '
                     f'width="{max(plot * share, 1):.1f}" height="{row_h - 4}" fill="{colour}">'
                     f'<title>{html.escape(str(r[label_key]))}: {share:.0%} ({r["level"]})'
                     f'</title></rect><text x="{left + plot * share + 4:.1f}" y="{y + 12}" '
                     f'font-size="10">{share:.0%} {r["level"]}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _options(values: Sequence[tuple[str, str]], selected: str | None, any_label: str) -> str:
    out = [f'<option value="">{html.escape(any_label)}</option>'] if any_label else []
    for v, label in values:
        sel = " selected" if v == selected else ""
        out.append(f'<option value="{html.escape(v)}"{sel}>{html.escape(label)}</option>')
    return "".join(out)


def _depth_table(rows: Sequence[dict[str, Any]], first: str, first_label: str,
                 table_id: str) -> str:
    body = []
    for r in rows:
        share = "—" if r["share"] is None else f"{r['share']:.0%}"
        target = r.get("target") or ""
        body.append(f'<tr data-{first}="{html.escape(str(r[first]))}"><td>'
                    f'{html.escape(str(r.get(first + "_name") or r[first]))}</td>'
                    f'<td class="n">{r["verified_venues"]}/{r["active_venues"]}</td>'
                    f'<td class="n">{share}</td><td><span class="lvl {_lvl_class(r["level"])}">'
                    f'{r["level"]}</span></td><td>{html.escape(str(target))}</td></tr>')
    return (f'<table id="{table_id}"><thead><tr><th>{first_label}</th><th>verified / active '
            f'venues</th><th>share</th><th>level</th><th>73号 target</th></tr></thead><tbody>'
            + "".join(body) + "</tbody></table>")


def live_chart(minutes: Sequence[dict[str, Any]], width: int = 420, height: int = 90) -> str:
    """The last minutes' decisions as bars (allowed over denied), inline SVG."""
    n = max(1, len(minutes))
    top = max([m["scans"] for m in minutes] + [1])
    bw = width / n
    bars = []
    for i, m in enumerate(minutes):
        x = i * bw
        h_all = m["scans"] / top * (height - 14)
        h_ok = m["allows"] / top * (height - 14)
        label = html.escape(m["minute"][11:16])
        bars.append(
            f'<g data-minute="{html.escape(m["minute"])}" data-scans="{m["scans"]}">'
            f'<rect x="{x + 1:.1f}" y="{height - 12 - h_all:.1f}" width="{bw - 2:.1f}" '
            f'height="{h_all - h_ok:.1f}" fill="#f87171"/>'
            f'<rect x="{x + 1:.1f}" y="{height - 12 - h_ok:.1f}" width="{bw - 2:.1f}" '
            f'height="{h_ok:.1f}" fill="#0f4c81"/>'
            + (f'<text x="{x:.1f}" y="{height - 1}" font-size="9">{label}</text>'
               if i % 5 == 0 else "") + "</g>")
    return (f'<svg id="live-chart" role="img" aria-label="decisions per minute" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
            + "".join(bars) + "</svg>")


def _live_section(live: dict[str, Any] | None) -> str:
    if live is None:
        return ('<section id="live"><h2>Live</h2><p class="muted">The live counters are '
                'switched off (GATEWAY_STATS_LIVE=false).</p></section>')
    t = live["today"]
    rows = "".join(
        f'<tr data-district="{html.escape(d["district"])}"><td>'
        f'{html.escape(d["district_name"])}</td><td class="n">{d["scans"]}</td>'
        f'<td class="n">{d["allows"]}</td><td class="n">{d["denies"]}</td></tr>'
        for d in sorted(live["districts"], key=lambda d: -d["scans"])[:10]) or \
        '<tr><td colspan="4" class="muted">No decisions today yet.</td></tr>'
    return f"""<section id="live"><h2>Live · today {html.escape(live["day"])} (UTC)</h2>
<p><span class="kpi" id="live-scans">{t["scans"]}</span> decisions ·
<span class="kpi" id="live-allows">{t["allows"]}</span> allowed ·
<span class="kpi" id="live-denies">{t["denies"]}</span> denied — counted as answered, before
the records are exported</p>{live_chart(live["minutes"])}
<table id="live-districts"><thead><tr><th>区县 today</th><th>decisions</th><th>allowed</th>
<th>denied</th></tr></thead><tbody>{rows}</tbody></table></section>"""


async def dashboard(request: web.Request) -> web.StreamResponse:
    op = await _session_operator(request)
    if op is None:
        return sign_in_page()
    q = request.query
    period = q.get("period") or "30d"
    district = q.get("district") or None
    scene = q.get("scene") or None
    try:
        deep = await depth_data(request, period)
        live = await live_data(request)
    except GatewayError as exc:
        return _page("Dashboard", f'<p class="error" role="alert">{html.escape(exc.detail)}'
                     '</p><p><a href="/admin/dashboard">Back</a></p>')
    first, last = deep["period"]["from"], deep["period"]["to"]
    rq = request.clone(rel_url=request.rel_url.with_query(
        {k: v for k, v in {"from": first, "to": last, "group_by": "day",
                           "district": district or "", "scene": scene or ""}.items()}))
    held = {g["day"]: g for g in (await usage_data(rq))["groups"]}
    day, end = date.fromisoformat(first), date.fromisoformat(last)
    by_day: list[dict[str, Any]] = []
    while day <= end and len(by_day) < 400:  # every day of the period, empty ones too
        by_day.append(held.get(day.isoformat()) or {"day": day.isoformat(), "scans": 0,
                                                    "allows": 0, "deny_reasons": {}})
        day += timedelta(days=1)
    rq_face = request.clone(rel_url=request.rel_url.with_query(
        {"from": first, "to": last, "group_by": "face", "district": district or "",
         "scene": scene or ""}))
    by_face = (await usage_data(rq_face))["groups"]
    scans = sum(g["scans"] for g in by_day)
    allows = sum(g["allows"] for g in by_day)
    reasons: dict[str, int] = {}
    for g in by_day:
        for r, n in g["deny_reasons"].items():
            reasons[r] = reasons.get(r, 0) + n
    top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:8]
    scenes = request.app[ADMIN_SCENES]
    scene_opts = [(s.id, f"{s.name_zh} ({s.id})") for s in scenes.all()]
    district_opts = [(code, f"{name} {code}") for code, name in DISTRICTS.items()]
    period_opts = list(PERIODS)
    if period not in {p for p, _ in period_opts}:
        period_opts.append((period, period))
    for y in (int(last[:4]), int(last[:4]) - 1):
        for h in ("H1", "H2"):
            if f"{y}-{h}" not in {p for p, _ in period_opts}:
                period_opts.append((f"{y}-{h}", f"{y} {h} (half-yearly report)"))
    face_rows = "".join(
        f'<tr data-face="{g["face"]}"><td>{FORM_NAMES.get(g["face"], g["face"])}</td>'
        f'<td class="n">{g["scans"]}</td><td class="n">{g["allows"]}</td>'
        f'<td class="n">{g["distinct_residents"]}</td></tr>' for g in by_face)
    reason_rows = "".join(
        f'<tr data-reason="{html.escape(r)}"><td>{html.escape(r)}</td>'
        f'<td class="n">{n}</td></tr>' for r, n in top) or \
        '<tr><td colspan="2" class="muted">No denials.</td></tr>'
    live_section = _live_section(live)
    body = f"""<header><h1>渝快码 ⇄ 电子社保卡 · 运营看板 (operator dashboard)</h1>
<span id="who">{html.escape(op.name)} · {op.role}</span>
<form method="post" action="/admin/dashboard/logout"><button type="submit">Sign out</button>
</form></header><main>
<form class="filters" method="get" action="/admin/dashboard">
<label>Period <select name="period">{_options(period_opts, period, "")}</select></label>
<label>District 区县 <select name="district">{_options(district_opts, district, "all 38")}
</select></label>
<label>Scene 场景 <select name="scene">{_options(scene_opts, scene, "all scenes")}</select>
</label><button type="submit">Apply</button>
<span class="muted" id="period">{first} … {last}</span></form>
{live_section}
<section id="usage"><h2>Usage over time</h2>
<p><span class="kpi" id="kpi-scans">{scans}</span> scans ·
<span class="kpi" id="kpi-allows">{allows}</span> allowed</p>{usage_chart(by_day)}
<table id="forms"><thead><tr><th>credential form</th><th>scans</th><th>allowed</th>
<th>distinct residents</th></tr></thead><tbody>{face_rows}</tbody></table></section>
<section id="deny-reasons"><h2>Top deny reasons</h2><table><tbody>{reason_rows}</tbody>
</table></section>
<section id="depth-districts"><h2>Application depth by district (应用深度)</h2>
{depth_bars(deep["districts"], "district", "district_name", "depth-district-chart")}
{_depth_table(deep["districts"], "district", "区县", "depth-district-table")}</section>
<section id="depth-scenes"><h2>Application depth by scene</h2>
{depth_bars(deep["scenes"], "scene", "scene_name", "depth-scene-chart")}
{_depth_table(deep["scenes"], "scene", "scene", "depth-scene-table")}</section>
</main>"""
    return _page("Gateway dashboard", body)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/dashboard", dashboard)
    app.router.add_post("/admin/dashboard/session", sign_in)
    app.router.add_post("/admin/dashboard/logout", sign_out)
