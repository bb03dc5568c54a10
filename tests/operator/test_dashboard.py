"""The dashboard in real Chromium (Debian's chromium through Playwright): sign in with an
operator token, the session cookie is HttpOnly, the page renders under its CSP with no script,
usage, depth by district and scene with levels coloured, top deny reasons, filters. The
screenshot lands in test-output/dashboard.png (looked at)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from playwright.async_api import async_playwright

from tests.oidc.test_browser import CHROMIUM_ARGS, chromium
from tests.operator.conftest import new_operator
from tests.operator.test_stats import demo_traffic, feed
from tests.web.conftest import Gateway

OUTPUT = Path(__file__).resolve().parents[2] / "test-output"


def _cjk_font() -> None:
    out = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True,
                         check=False).stdout
    assert out.strip(), "a CJK font is needed for the screenshot: apt-get install " \
                        "fonts-wqy-zenhei (script/test does it)"


async def _decide(gw: Gateway) -> None:
    """Two allows and a deny at 渝中区's metro gate, through the real gate path."""
    from tests.codes.conftest import METRO_GATE, demo_person, issue, resident_token, verify

    token = resident_token(gw, await demo_person(gw))
    gate = await gw.client_token(METRO_GATE)
    for i in range(2):
        code = (await (await issue(gw, token)).json())["code"]
        _, ans = await verify(gw, gate, code, "metro", request_id=f"dash-{i}")
        assert ans["decision"] == "allow"
    _, ans = await verify(gw, gate, "not-a-code", "metro", request_id="dash-bad")
    assert ans["decision"] == "deny"


async def test_dashboard_in_chromium(gw: Gateway) -> None:
    _cjk_font()
    await feed(gw, demo_traffic())
    token = (await new_operator(gw, "vera", "viewer"))["Authorization"][7:]
    OUTPUT.mkdir(exist_ok=True)
    csp_errors: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1400, "height": 1100})
            page = await context.new_page()
            page.on("console", lambda m: csp_errors.append(m.text)
                    if "Content Security Policy" in m.text else None)
            await page.goto(gw.base + "/admin/dashboard")
            await page.fill("input[name=token]", "gwop_not-a-token")
            await page.click("button[type=submit]")
            assert "not an active operator" in (await page.text_content("[role=alert]") or "")
            await page.fill("input[name=token]", token)
            await page.click("button[type=submit]")
            await page.wait_for_selector("#usage-chart")
            assert "vera · viewer" in (await page.text_content("#who") or "")
            cookies = {c["name"]: c for c in await context.cookies()}
            assert cookies["gw_admin"]["httpOnly"] and cookies["gw_admin"]["sameSite"] == "Strict"
            assert token not in cookies["gw_admin"]["value"]
            assert await page.text_content("#kpi-scans") == "14"
            assert await page.text_content("#kpi-allows") == "9"
            # levels coloured: 渝中区 has 2 of its 4 active identity venues verified (50 % →
            # 一级) …
            yz = page.locator('#depth-district-table tr[data-district="500103"]')
            assert "2/4" in (await yz.text_content() or "")
            assert "一级" in (await yz.text_content() or "")
            bar = page.locator('#depth-district-chart rect[data-district="500103"]')
            assert await bar.get_attribute("data-level") == "一级"
            assert await bar.get_attribute("fill") == "#fde68a"
            # … and 江北区's library saw nothing: none, grey
            jb = page.locator('#depth-district-chart rect[data-district="500105"]')
            assert await jb.get_attribute("data-level") == "none"
            assert await jb.get_attribute("fill") == "#d9d9d9"
            reasons = await page.locator("#deny-reasons tr").all_text_contents()
            assert reasons[0].startswith("replayed") and "3" in reasons[0]
            assert await page.locator("script").count() == 0
            assert await page.text_content("#live-scans") == "0"  # fed roll-ups, no decision
            # real decisions at a gate: in the live section at the next page, before export
            await _decide(gw)
            await page.reload()
            await page.wait_for_selector("#live-chart")
            assert await page.text_content("#live-scans") == "3"
            assert await page.text_content("#live-allows") == "2"
            assert await page.text_content("#live-denies") == "1"
            live_row = page.locator('#live-districts tr[data-district="500103"]')
            assert "3" in (await live_row.text_content() or "")
            assert await page.locator("#live-chart g[data-scans='3']").count() in (0, 1)
            await page.screenshot(path=str(OUTPUT / "dashboard.png"), full_page=True)
            # filters: one district
            await page.select_option("select[name=district]", "500106")
            await page.click("form.filters button[type=submit]")
            await page.wait_for_selector("#usage-chart")
            assert await page.text_content("#kpi-scans") == "3"
            rows = page.locator("#depth-district-table tbody tr")
            assert await rows.count() == 1
            await page.screenshot(path=str(OUTPUT / "dashboard-shapingba.png"), full_page=True)
            # sign out: the page asks for a token again
            await page.click("header button[type=submit]")
            await page.wait_for_selector("input[name=token]")
        finally:
            await browser.close()
    assert not csp_errors, csp_errors
